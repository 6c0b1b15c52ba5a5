//! `cnitool` end to end, run as a process inside a sandbox host namespace, with host-local and
//! with fake plugins that record exactly what they were given.

use base64::Engine;
use cni_tests::cnitool_kit::{mode, sequence, Fake, World};
use serde_json::{json, Value};

fn ip_result(addr: &str) -> Value {
    json!({"cniVersion": "1.1.0",
           "interfaces": [{"name": "eth0", "mac": "0a:58:0a:00:00:05", "sandbox": "/x"}],
           "ips": [{"interface": 0, "address": addr, "gateway": "10.99.0.1"}],
           "routes": [{"dst": "0.0.0.0/0"}]})
}

fn s(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn host_local_chain_add_check_del() {
    let w = World::new("ct-hl");
    let data = w.cache.path().join("leases");
    w.fake("rec-pass", Fake::Pass);
    w.conf(
        "10-hl.conflist",
        &json!({"cniVersion": "1.1.0", "name": "hlchain", "plugins": [
        {"type": "host-local", "ipam": {"type": "host-local", "dataDir": data,
                                        "ranges": [[{"subnet": "10.77.0.0/24"}]]}},
        {"type": "rec-pass"}]}),
    );
    let added = w.cnitool(&["add", "hlchain", w.netns()], &[]).ok().json();
    assert_eq!(added["cniVersion"], "1.1.0");
    let addr = added["ips"][0]["address"].as_str().unwrap().to_string();
    assert!(addr.starts_with("10.77.0."), "{added}");
    let ip = addr.trim_end_matches("/24");
    let lease = std::fs::read_to_string(data.join("hlchain").join(ip)).unwrap();
    let (cid, ifname) = lease.split_once("\r\n").unwrap();
    assert_eq!(ifname, "eth0");
    assert!(
        cid.starts_with("cnitool-") && cid.len() == 28,
        "derived container ID {cid}"
    );
    assert!(w.cache_file("hlchain", cid, "eth0").is_file());
    let calls = w.take_calls();
    assert_eq!(
        calls[0].stdin["prevResult"], added,
        "host-local's result was chained"
    );

    w.cnitool(&["check", "hlchain", w.netns()], &[]).ok();
    assert_eq!(w.take_calls()[0].stdin["prevResult"], added);
    w.cnitool(&["del", "hlchain", w.netns()], &[]).ok();
    assert!(!data.join("hlchain").join(ip).exists(), "lease released");
    assert!(
        !w.cache_file("hlchain", cid, "eth0").exists(),
        "cache entry removed"
    );
    let e = w.cnitool(&["check", "hlchain", w.netns()], &[]).err();
    assert_eq!(e["code"], 3, "nothing cached after DEL: {e}");
    // DEL again (the runtime retries): idempotent.
    w.cnitool(&["del", "hlchain", w.netns()], &[]).ok();
}

#[test]
fn chain_gets_name_version_prev_result_and_only_declared_capabilities() {
    let w = World::new("ct-chain");
    w.fake("main", Fake::Result(ip_result("10.99.0.5/24")));
    w.fake("nocaps", Fake::Pass);
    w.fake("bw", Fake::Pass);
    let conflist = json!({"cniVersion": "1.0.0", "cniVersions": ["0.4.0", "1.1.0", "1.2.0"],
        "name": "capnet", "plugins": [
            {"type": "main", "extra": {"k": 1},
             "capabilities": {"portMappings": true, "bandwidth": false}},
            {"type": "nocaps"},
            {"type": "bw", "capabilities": {"bandwidth": true}}]});
    w.conf("10-capnet.conflist", &conflist);
    let caps = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                      "bandwidth": {"ingressRate": 1000}, "mac": "aa:bb:cc:dd:ee:ff"});
    let env = [
        ("CAP_ARGS", caps.to_string()),
        ("CNI_ARGS", "IgnoreUnknown=1;FOO=bar".to_string()),
        ("CNI_IFNAME", "net1".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let args = ["add", "capnet", w.netns(), "--container-id", "c-caps"];
    let out = w.cnitool(&args, &env).ok().json();
    assert_eq!(out["cniVersion"], "1.1.0", "highest version we implement");
    assert_eq!(out["ips"][0]["address"], "10.99.0.5/24");

    let calls = w.take_calls();
    assert_eq!(
        sequence(&calls),
        s(&[("main", "ADD"), ("nocaps", "ADD"), ("bw", "ADD")])
    );
    for c in &calls {
        assert_eq!(c.stdin["name"], "capnet");
        assert_eq!(c.stdin["cniVersion"], "1.1.0");
        assert_eq!(c.env["CNI_CONTAINERID"], "c-caps");
        assert_eq!(c.env["CNI_IFNAME"], "net1");
        assert_eq!(c.env["CNI_NETNS"], w.netns());
        assert_eq!(c.env["CNI_ARGS"], "IgnoreUnknown=1;FOO=bar");
        assert!(c.env["CNI_PATH"].starts_with(w.plugins.path().to_str().unwrap()));
        assert!(
            c.stdin.get("capabilities").is_none(),
            "the runtime removes capabilities: {}",
            c.stdin
        );
    }
    assert_eq!(
        calls[0].stdin["runtimeConfig"],
        json!({"portMappings": caps["portMappings"]})
    );
    assert_eq!(calls[0].stdin["extra"], json!({"k": 1}));
    assert!(calls[0].stdin.get("prevResult").is_none());
    assert!(
        calls[1].stdin.get("runtimeConfig").is_none(),
        "{}",
        calls[1].stdin
    );
    assert_eq!(
        calls[2].stdin["runtimeConfig"],
        json!({"bandwidth": caps["bandwidth"]})
    );
    assert_eq!(calls[1].stdin["prevResult"], out);
    assert_eq!(calls[2].stdin["prevResult"], out);

    // The cache entry, in libcni's format, 0600 in a 0700 directory.
    let file = w.cache_file("capnet", "c-caps", "net1");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let entry: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(entry["kind"], "cniCacheV1");
    assert_eq!(entry["containerId"], "c-caps");
    assert_eq!(entry["ifName"], "net1");
    assert_eq!(entry["networkName"], "capnet");
    assert_eq!(entry["netns"], w.netns());
    assert_eq!(
        entry["cniArgs"],
        json!([["IgnoreUnknown", "1"], ["FOO", "bar"]])
    );
    assert_eq!(entry["capabilityArgs"], caps);
    assert_eq!(entry["result"], out);
    let config = base64::engine::general_purpose::STANDARD
        .decode(entry["config"].as_str().unwrap())
        .unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&config).unwrap(), conflist);

    // A new process (a restarted runtime) reads the cache back: DEL in reverse order, each
    // plugin with the cached result and its own runtimeConfig; the entry is then removed.
    w.cnitool(
        &["del", "capnet", w.netns(), "--container-id", "c-caps"],
        &env,
    )
    .ok();
    let calls = w.take_calls();
    assert_eq!(
        sequence(&calls),
        s(&[("bw", "DEL"), ("nocaps", "DEL"), ("main", "DEL")])
    );
    for c in &calls {
        assert_eq!(c.stdin["prevResult"], out, "{}", c.plugin);
        assert!(c.stdin.get("capabilities").is_none(), "{}", c.stdin);
    }
    assert_eq!(
        calls[2].stdin["runtimeConfig"],
        json!({"portMappings": caps["portMappings"]})
    );
    assert!(!file.exists());
}

#[test]
fn failing_plugin_mid_chain_then_del_reaches_every_plugin() {
    let w = World::new("ct-fail");
    w.fake("a", Fake::Result(ip_result("10.99.0.6/24")));
    w.fake(
        "boom",
        Fake::Fail {
            command: "ADD",
            code: 11,
            msg: "no capacity",
        },
    );
    w.fake("b", Fake::Pass);
    w.conf(
        "10-f.conflist",
        &json!({"cniVersion": "1.1.0", "name": "failnet",
        "plugins": [{"type": "a"}, {"type": "boom"}, {"type": "b"}]}),
    );
    let r = w.cnitool(&["add", "failnet", w.netns(), "--container-id", "c1"], &[]);
    assert!(
        r.stderr.contains("no capacity") && r.stderr.contains("CNI error 11"),
        "{r:?}"
    );
    let e = r.err();
    assert_eq!(e["code"], 11);
    assert_eq!(e["msg"], "plugin type=\"boom\" failed (add): no capacity");
    assert_eq!(e["details"], "from boom");
    assert_eq!(e["cniVersion"], "1.1.0");
    assert_eq!(
        sequence(&w.take_calls()),
        s(&[("a", "ADD"), ("boom", "ADD")])
    );
    assert!(
        !w.cache_file("failnet", "c1", "eth0").exists(),
        "a failed ADD is not cached"
    );

    // The runtime cleans up with DEL: every plugin, in reverse, without a prevResult.
    w.cnitool(&["del", "failnet", w.netns(), "--container-id", "c1"], &[])
        .ok();
    let calls = w.take_calls();
    assert_eq!(
        sequence(&calls),
        s(&[("b", "DEL"), ("boom", "DEL"), ("a", "DEL")])
    );
    assert!(calls.iter().all(|c| c.stdin.get("prevResult").is_none()));
}

#[test]
fn del_stops_at_the_first_failure_and_keeps_the_cache_entry() {
    let w = World::new("ct-delfail");
    w.fake("a", Fake::Result(ip_result("10.99.0.7/24")));
    w.fake(
        "stuck",
        Fake::Fail {
            command: "DEL",
            code: 5,
            msg: "cannot release",
        },
    );
    w.fake("b", Fake::Pass);
    w.conf(
        "10-d.conflist",
        &json!({"cniVersion": "1.1.0", "name": "delnet",
        "plugins": [{"type": "a"}, {"type": "stuck"}, {"type": "b"}]}),
    );
    let args = ["add", "delnet", w.netns(), "--container-id", "c1"];
    w.cnitool(&args, &[]).ok();
    w.take_calls();
    let e = w
        .cnitool(&["del", "delnet", w.netns(), "--container-id", "c1"], &[])
        .err();
    assert_eq!(e["code"], 5);
    assert_eq!(
        sequence(&w.take_calls()),
        s(&[("b", "DEL"), ("stuck", "DEL")])
    );
    assert!(
        w.cache_file("delnet", "c1", "eth0").exists(),
        "kept for the retry"
    );
}

#[test]
fn gc_deletes_stale_attachments_and_sends_gc_with_the_valid_list() {
    let w = World::new("ct-gc");
    w.fake("main", Fake::Result(ip_result("10.99.0.8/24")));
    w.fake("meta", Fake::Pass);
    w.conf(
        "10-gc.conflist",
        &json!({"cniVersion": "1.1.0", "name": "gcnet",
        "plugins": [{"type": "main"},
                    {"type": "meta", "capabilities": {"portMappings": true}}]}),
    );
    w.conf(
        "20-other.conflist",
        &json!({"cniVersion": "1.1.0", "name": "other",
        "plugins": [{"type": "main"}]}),
    );
    w.conf(
        "30-nogc.conflist",
        &json!({"cniVersion": "1.1.0", "name": "nogc",
        "disableGC": true, "plugins": [{"type": "main"}]}),
    );
    for (net, cid) in [
        ("gcnet", "c1"),
        ("gcnet", "c2"),
        ("other", "c3"),
        ("nogc", "c4"),
    ] {
        w.cnitool(&["add", net, w.netns(), "--container-id", cid], &[])
            .ok();
    }
    w.take_calls();

    w.cnitool(&["gc", "gcnet", "--valid", "c1/eth0"], &[]).ok();
    let calls = w.take_calls();
    assert_eq!(
        sequence(&calls),
        s(&[
            ("meta", "DEL"),
            ("main", "DEL"),
            ("main", "GC"),
            ("meta", "GC")
        ])
    );
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "c2");
    assert_eq!(
        calls[0].env["CNI_NETNS"],
        w.netns(),
        "netns from the cache entry"
    );
    assert_eq!(
        calls[1].stdin["prevResult"]["ips"][0]["address"],
        "10.99.0.8/24"
    );
    let valid = json!([{"containerID": "c1", "ifname": "eth0"}]);
    for gc in &calls[2..] {
        assert_eq!(gc.stdin["cni.dev/valid-attachments"], valid);
        assert_eq!(gc.stdin["cni.dev/attachments"], valid);
        assert_eq!(gc.stdin["name"], "gcnet");
        assert!(gc.stdin.get("capabilities").is_none(), "{}", gc.stdin);
        for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            assert!(!gc.env.contains_key(k), "{k} in GC env: {:?}", gc.env);
        }
    }
    assert!(w.cache_file("gcnet", "c1", "eth0").exists());
    assert!(!w.cache_file("gcnet", "c2", "eth0").exists());
    assert!(
        w.cache_file("other", "c3", "eth0").exists(),
        "other networks untouched"
    );

    // The valid list from the environment; an empty list means nothing is in use.
    w.cnitool(&["gc", "gcnet"], &[("CNI_VALID_ATTACHMENTS", "c1/eth0")])
        .ok();
    assert_eq!(w.take_calls().len(), 2, "only the two GC calls");
    w.cnitool(&["gc", "gcnet"], &[]).ok();
    let calls = w.take_calls();
    assert_eq!(calls[0].env["CNI_CONTAINERID"], "c1");
    assert_eq!(calls[2].stdin["cni.dev/valid-attachments"], json!([]));
    assert!(!w.cache_file("gcnet", "c1", "eth0").exists());

    w.cnitool(&["gc", "nogc"], &[]).ok();
    assert!(w.take_calls().is_empty(), "disableGC");
    assert!(w.cache_file("nogc", "c4", "eth0").exists());
}

#[test]
fn status_reaches_every_plugin_and_keeps_the_code() {
    let w = World::new("ct-status");
    w.fake("ok", Fake::Pass);
    w.fake(
        "down",
        Fake::Fail {
            command: "STATUS",
            code: 50,
            msg: "not ready",
        },
    );
    w.conf(
        "10-s.conflist",
        &json!({"cniVersion": "1.1.0", "name": "stnet",
        "plugins": [{"type": "ok", "k": "v", "capabilities": {"bandwidth": true}},
                    {"type": "down"}]}),
    );
    w.conf(
        "20-old.conflist",
        &json!({"cniVersion": "1.0.0", "name": "old",
        "plugins": [{"type": "down"}]}),
    );
    let e = w.cnitool(&["status", "stnet"], &[]).err();
    assert_eq!(e["code"], 50);
    let calls = w.take_calls();
    assert_eq!(sequence(&calls), s(&[("ok", "STATUS"), ("down", "STATUS")]));
    // Exactly this: `capabilities` removed, no runtimeConfig.
    assert_eq!(
        calls[0].stdin,
        json!({"type": "ok", "k": "v", "name": "stnet", "cniVersion": "1.1.0"})
    );
    assert!(!calls[0].env.contains_key("CNI_CONTAINERID"));
    w.cnitool(&["status", "old"], &[]).ok();
    assert!(w.take_calls().is_empty(), "STATUS needs spec 1.1.0");
}

#[test]
fn libcni_cache_entries_are_used_and_single_confs_load() {
    let w = World::new("ct-compat");
    w.fake("pass", Fake::Pass);
    w.conf(
        "10-single.conf",
        &json!({"cniVersion": "1.0.0", "name": "single", "type": "pass"}),
    );
    // An entry as a libcni runtime wrote it (older spec version in the result).
    let results = w.cache.path().join("results");
    std::fs::create_dir_all(&results).unwrap();
    let entry = json!({"kind": "cniCacheV1", "containerId": "ctr9", "config": null,
        "ifName": "eth0", "networkName": "single", "netns": "/run/netns/gone",
        "result": {"cniVersion": "0.4.0", "dns": {},
                   "ips": [{"version": "4", "address": "10.5.0.9/16"}]}});
    std::fs::write(results.join("single-ctr9-eth0"), entry.to_string()).unwrap();
    w.cnitool(
        &[
            "check",
            "single",
            "/run/netns/gone",
            "--container-id",
            "ctr9",
        ],
        &[],
    )
    .ok();
    let calls = w.take_calls();
    let prev = &calls[0].stdin["prevResult"];
    assert_eq!(
        prev["cniVersion"], "1.0.0",
        "converted to the config's version: {prev}"
    );
    assert_eq!(prev["ips"][0]["address"], "10.5.0.9/16");
    w.cnitool(
        &["del", "single", "/run/netns/gone", "--container-id", "ctr9"],
        &[],
    )
    .ok();
    assert!(!results.join("single-ctr9-eth0").exists());
    w.take_calls();

    w.conf(
        "20-nocheck.conflist",
        &json!({"cniVersion": "1.1.0", "name": "nocheck",
        "disableCheck": true, "plugins": [{"type": "pass"}]}),
    );
    w.cnitool(&["check", "nocheck", w.netns()], &[]).ok();
    assert!(w.take_calls().is_empty(), "disableCheck");
}

#[test]
fn bad_input_is_reported_with_codes() {
    let w = World::new("ct-bad");
    w.fake("pass", Fake::Pass);
    std::fs::write(w.conf.path().join("00-broken.conflist"), "{").unwrap();
    w.conf(
        "10-n.conflist",
        &json!({"cniVersion": "1.1.0", "name": "n",
        "plugins": [{"type": "pass"}, {"type": "missing-plugin"}]}),
    );
    let r = w.cnitool(&["add", "nope", w.netns()], &[]);
    assert!(r.stderr.contains("00-broken.conflist"), "{r:?}");
    assert_eq!(r.err()["code"], 7);
    let e = w
        .cnitool(&["add", "n", w.netns()], &[("CAP_ARGS", "[1]")])
        .err();
    assert_eq!(e["code"], 4);
    let e = w
        .cnitool(&["add", "n", w.netns()], &[("CNI_ARGS", "novalue")])
        .err();
    assert_eq!(e["code"], 4);
    let e = w
        .cnitool(&["add", "n", w.netns(), "--container-id", "../x"], &[])
        .err();
    assert_eq!(e["code"], 4);
    assert!(w.take_calls().is_empty(), "nothing ran");
    let usage = w.cnitool(&["add", "n"], &[]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(usage.stdout.is_empty() && usage.stderr.contains("usage:"));
}
