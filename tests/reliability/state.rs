//! State safety: lease and cache files keep their modes whatever the umask and are never seen
//! torn, a lock whose holder was killed never blocks the next call, and torn or garbage lease
//! files are reported and skipped instead of failing every later ADD.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cni_shared::skel::Command;
use cni_tests::testkit::{bin_dir, plugin_path, Call, Sandbox, TempDir};
use serde_json::{json, Value};

use super::hold;
use super::store_view::StoreView;

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every file and directory under `root`, with its mode.
fn modes(root: &Path) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.push((rel, mode(&p)));
        }
    }
    out.sort();
    out
}

/// `cnitool <verb> stnet <netns>` in `host` under umask 000 (a careless runtime).
fn cnitool(host: &Sandbox, root: &Path, verb: &str, id: &str, netns: Option<&Path>) {
    let out = host
        .command("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(plugin_path("cnitool"))
        .args([verb, "stnet"])
        .args(netns)
        .env("NETCONFPATH", root.join("conf"))
        .env("CNI_PATH", bin_dir())
        .env("CNI_CACHE_DIR", root.join("cache"))
        .env("CNI_CONTAINERID", id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "cnitool {verb} {id}: {out:?}");
}

#[test]
fn state_files_keep_their_modes_whatever_the_umask_and_are_never_seen_torn() {
    let host = Sandbox::new("st-h");
    let root = TempDir::new("st");
    std::fs::create_dir(root.path().join("conf")).unwrap();
    let list = json!({"cniVersion": "1.1.0", "name": "stnet", "plugins": [
        {"type": "bridge", "bridge": "st-br0", "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "dataDir": root.path().join("data/ipam"),
                  "ranges": [[{"subnet": "10.96.0.0/24"}]]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    std::fs::write(root.path().join("conf/10-st.conflist"), list.to_string()).unwrap();
    let ctrs: Vec<Sandbox> = (0..20).map(|_| Sandbox::new("st-c")).collect();

    // A reader that takes no lock: every lease and cache entry it finds must be whole.
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let (leases, cache) = (
                root.path().join("data/ipam/stnet"),
                root.path().join("cache/results"),
            );
            while !stop.load(Ordering::Relaxed) {
                for e in std::fs::read_dir(&leases).into_iter().flatten().flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.parse::<std::net::IpAddr>().is_err() {
                        continue;
                    }
                    if let Ok(b) = std::fs::read(e.path()) {
                        let t = String::from_utf8_lossy(&b);
                        let ok = t
                            .strip_suffix("\r\neth0")
                            .is_some_and(|id| id.starts_with("st"));
                        assert!(ok, "lease {name} read torn: {t:?}");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
                for e in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
                    if e.file_name().to_string_lossy().starts_with('.') {
                        continue;
                    }
                    if let Ok(b) = std::fs::read(e.path()) {
                        let v: Value = serde_json::from_slice(&b)
                            .unwrap_or_else(|err| panic!("cache entry read torn ({err}): {b:?}"));
                        assert_eq!(v["kind"], "cniCacheV1");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
        for (i, c) in ctrs.iter().enumerate() {
            cnitool(&host, root.path(), "add", &format!("st{i}"), Some(c.path()));
        }
        let all = modes(root.path());
        for (i, c) in ctrs.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            cnitool(&host, root.path(), "del", &format!("st{i}"), Some(c.path()));
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();

        // Created under umask 000, still: the cache's directories 0700 and files 0600, like
        // libcni's; host-local's directories 0755 and files 0644, like the reference's (which
        // gives them those modes less the umask, so the same under umask 000 and 022).
        let mut seen = BTreeSet::new();
        for (p, m) in &all {
            let is_dir = root.path().join(p).is_dir();
            let ipam = p == "data" || p.starts_with("data/");
            let want = match p.as_str() {
                "conf" | "conf/10-st.conflist" => continue,
                _ if ipam && is_dir => 0o755,
                _ if ipam => 0o644,
                _ if is_dir => 0o700,
                _ => 0o600,
            };
            assert_eq!(*m, want, "{p}: {m:o}");
            seen.insert(p.clone());
        }
        let expected = [
            "cache/results/stnet-st0-eth0",
            "data/ipam/stnet/10.96.0.2",
            "data/ipam/stnet/last_reserved_ip.0",
            "data/ipam/stnet/lock",
            "data/ipam/stnet/.attachments/st0@eth0",
            "data/ipam/stnet/.attachments/.stamp",
        ];
        for p in expected {
            assert!(seen.contains(p), "{p} not created: {seen:?}");
        }
    });
    assert!(
        reads.load(Ordering::Relaxed) > 20,
        "the reader read too little"
    );

    // A garbage cache entry costs the DEL nothing (libcni drops it too), and the GC skips one.
    let cache = |i: usize| root.path().join(format!("cache/results/stnet-st{i}-eth0"));
    std::fs::write(cache(1), b"{\"kind\": \"cniCacheV1\", \"resu").unwrap();
    std::fs::write(cache(3), [0xff, 0, 0x13]).unwrap();
    cnitool(&host, root.path(), "del", "st1", Some(ctrs[1].path()));
    assert!(!cache(1).exists());
    cnitool(&host, root.path(), "gc", "", None);
    let left = StoreView::read(&root.path().join("data/ipam"), "stnet");
    left.assert_consistent(1);
    assert!(
        left.leases.is_empty(),
        "GC with no valid attachment: {:?}",
        left.leases
    );
    eprintln!(
        "state: {} whole reads by a lock-free reader",
        reads.load(Ordering::Relaxed)
    );
}

#[test]
fn a_lock_whose_holder_was_killed_never_blocks_the_next_call() {
    let host = Sandbox::new("lk-h");
    let data = TempDir::new("lk");
    let conf = json!({"cniVersion": "1.1.0", "name": "lknet", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.98.0.0/24"}]]}});
    let hl = |cmd: Command, id: &str| {
        Call::new("host-local", cmd, conf.clone())
            .container(id, "eth0", Some(host.path()))
            .spawn_in(&host)
    };
    hl(Command::Add, "lk0").wait().unwrap();
    let lock = data.path().join("lknet/lock");

    // Killed while a call waits for it: the call goes on at once.
    let mut holder = hold(&lock);
    let t = Instant::now();
    let waiting = hl(Command::Add, "lk1");
    std::thread::sleep(Duration::from_millis(500));
    holder.kill().unwrap();
    holder.wait().unwrap();
    waiting.wait().unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "it did wait: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Killed before the call, the lock file left behind (with garbage in it): no wait at all.
    let mut holder = hold(&lock);
    holder.kill().unwrap();
    holder.wait().unwrap();
    std::fs::write(&lock, b"pid 4242 was here").unwrap();
    let t = Instant::now();
    hl(Command::Add, "lk2").wait().unwrap();
    let quick = t.elapsed();
    assert!(quick < Duration::from_secs(2), "{quick:?}");
    for id in ["lk0", "lk1", "lk2"] {
        hl(Command::Del, id).wait().unwrap();
    }
    assert!(StoreView::read(data.path(), "lknet").leases.is_empty());
    eprintln!("lock: the waiting ADD finished {:?} after its start (holder killed at 500 ms); after a killed holder an ADD took {quick:?}", waited);
}

#[test]
fn torn_and_garbage_lease_files_are_reported_and_skipped() {
    let host = Sandbox::new("gb-h");
    let data = TempDir::new("gb");
    let dir = data.path().join("gbnet");
    std::fs::create_dir_all(dir.join(".attachments")).unwrap();
    let garbage: [(&str, &[u8]); 4] = [
        ("10.97.0.2", b""),
        ("10.97.0.3", &[0xff, 0xfe, 0, 1, 2]),
        ("10.97.0.5", b"\r\n\r\n"),
        (".attachments/junk@eth0", &[0xff, 0xfe]),
    ];
    for (name, body) in garbage {
        std::fs::write(dir.join(name), body).unwrap();
    }
    // Half of "ctr-gone\r\neth0": reads as a lease of the reference's old format.
    std::fs::write(dir.join("10.97.0.4"), b"ctr-gone\r").unwrap();
    std::fs::create_dir(dir.join("10.97.0.6")).unwrap();
    std::fs::write(dir.join("last_reserved_ip.0"), b"10.97.0.9x").unwrap();
    std::fs::write(dir.join(".attachments/.stamp"), b"\0\0").unwrap();
    // Writers killed before their link or rename (a pid that cannot exist).
    let temps = [
        ".10.97.0.7.tmp-99999999-0",
        ".attachments/.g9@eth0.tmp-99999999-3",
    ];
    for t in temps {
        std::fs::write(dir.join(t), b"g9\r").unwrap();
    }
    let log = data.path().join("log");
    let conf = json!({"cniVersion": "1.1.0", "name": "gbnet", "type": "bridge",
        "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [[{
            "subnet": "10.97.0.0/24", "rangeStart": "10.97.0.2", "rangeEnd": "10.97.0.12"}]]}});
    let hl = |cmd: Command, c: &Value, id: &str| {
        Call::new("host-local", cmd, c.clone())
            .container(id, "eth0", Some(host.path()))
            .env("CNI_LOG_FILE", log.to_str().unwrap())
            .env("CNI_LOG_LEVEL", "info")
            .run_in(&host)
    };
    let bad: BTreeSet<&str> = [
        "10.97.0.2",
        "10.97.0.3",
        "10.97.0.4",
        "10.97.0.5",
        "10.97.0.6",
    ]
    .into();
    let mut results = Vec::new();
    for i in 1..=6 {
        let r = hl(Command::Add, &conf, &format!("g{i}"))
            .unwrap_or_else(|e| panic!("ADD g{i}: {e}"))
            .json();
        let ip = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(
            !bad.contains(ip.as_str()),
            "g{i} got {ip}, held by an unreadable file"
        );
        results.push(r);
    }
    let e = hl(Command::Add, &conf, "g7").unwrap_err();
    assert_eq!(e.code, 100, "the 6 good addresses are taken: {}", e.msg);
    let text = std::fs::read_to_string(&log).unwrap();
    for ip in ["10.97.0.2", "10.97.0.3", "10.97.0.5", "10.97.0.6"] {
        assert!(
            text.contains(ip) && text.contains("unreadable"),
            "no report of {ip}: {text}"
        );
    }
    assert!(text.contains("temporary files of killed writers"), "{text}");
    for t in temps {
        assert!(!dir.join(t).exists(), "{t} left");
    }
    let mut check = conf.clone();
    check["prevResult"] = results[0].clone();
    hl(Command::Check, &check, "g1").unwrap();
    hl(Command::Del, &conf, "g2").unwrap();
    hl(Command::Status, &conf, "").unwrap();
    // GC: the old-format lease of a container not in the list goes; garbage stays, reported.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = (1..=6)
        .filter(|i| *i != 2)
        .map(|i| json!({"containerID": format!("g{i}"), "ifname": "eth0"}))
        .collect();
    hl(Command::Gc, &gc, "").unwrap();
    let v = StoreView::read(data.path(), "gbnet");
    let holders: BTreeSet<String> = v
        .holders()
        .into_iter()
        .filter(|h| h.starts_with('g'))
        .collect();
    assert_eq!(
        holders,
        (1..=6)
            .filter(|i| *i != 2)
            .map(|i| format!("g{i}"))
            .collect()
    );
    assert!(
        !dir.join("10.97.0.4").exists(),
        "the stale old-format lease is collected"
    );
    for ip in ["10.97.0.2", "10.97.0.3", "10.97.0.5", "10.97.0.6"] {
        assert!(dir.join(ip).exists(), "garbage {ip} is left for a human");
    }
    for i in 1..=6 {
        hl(Command::Del, &conf, &format!("g{i}")).unwrap();
    }
}
