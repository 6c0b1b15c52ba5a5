//! The result cache: libcni's file format, both ways.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;

use serde_json::{json, Value};

use super::conf_tests::Tmp;
use super::*;
use crate::spec::{GcAttachment, Version};

const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"dbnet","plugins":[{"type":"bridge","bridge":"cni0","ipam":{"type":"host-local","subnet":"10.1.0.0/16"}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

/// What libcni (Go, `json.Marshal` of its `cachedInfo`) writes after an ADD of `CONFLIST`.
const LIBCNI_SAMPLE: &str = r#"{"kind":"cniCacheV1","containerId":"cnitool-20b4ff582526573bbe7d","config":"eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiZGJuZXQiLCJwbHVnaW5zIjpbeyJ0eXBlIjoiYnJpZGdlIiwiYnJpZGdlIjoiY25pMCIsImlwYW0iOnsidHlwZSI6Imhvc3QtbG9jYWwiLCJzdWJuZXQiOiIxMC4xLjAuMC8xNiJ9fSx7InR5cGUiOiJwb3J0bWFwIiwiY2FwYWJpbGl0aWVzIjp7InBvcnRNYXBwaW5ncyI6dHJ1ZX19XX0=","ifName":"eth0","networkName":"dbnet","netns":"/run/netns/c1","cniArgs":[["IgnoreUnknown","1"],["K8S_POD_NAME","web"]],"capabilityArgs":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},"result":{"cniVersion":"1.0.0","dns":{},"interfaces":[{"mac":"0a:58:0a:01:00:01","name":"cni0"},{"mac":"2e:1f:a0:11:22:33","name":"veth0a1b2c3d"},{"mac":"0a:58:0a:01:00:05","name":"eth0","sandbox":"/run/netns/c1"}],"ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1","interface":2}],"routes":[{"dst":"0.0.0.0/0"}]}}"#;

const CID: &str = "cnitool-20b4ff582526573bbe7d";

#[test]
fn reads_a_libcni_written_entry() {
    let d = Tmp::new("sample");
    std::fs::create_dir_all(d.0.join("results")).unwrap();
    std::fs::write(d.0.join(format!("results/dbnet-{CID}-eth0")), LIBCNI_SAMPLE).unwrap();
    let cache = ResultCache::new(&d.0);
    let e = cache.load("dbnet", CID, "eth0").unwrap().unwrap();
    assert_eq!(e.kind, CACHE_KIND_V1);
    assert_eq!(e.container_id, CID);
    assert_eq!(e.config, CONFLIST.as_bytes());
    assert_eq!(
        (e.ifname.as_str(), e.network_name.as_str()),
        ("eth0", "dbnet")
    );
    assert_eq!(e.netns, "/run/netns/c1");
    assert_eq!(
        e.cni_args[1],
        ["K8S_POD_NAME".to_string(), "web".to_string()]
    );
    assert_eq!(e.capability_args["portMappings"][0]["hostPort"], 8080);
    // The cached config is a loadable list.
    let list = NetworkConfigList::from_bytes(&e.config).unwrap();
    assert_eq!(list.plugins[1].plugin_type, "portmap");

    let r = cache
        .result("dbnet", CID, "eth0", Version::V1_0_0)
        .unwrap()
        .unwrap();
    assert_eq!(r["ips"][0]["address"], "10.1.0.5/16");
    assert_eq!(r["interfaces"][2]["sandbox"], "/run/netns/c1");
    // Converted to the version the list is used with now.
    let old = cache
        .result("dbnet", CID, "eth0", Version::V0_3_1)
        .unwrap()
        .unwrap();
    assert_eq!(old["cniVersion"], "0.3.1");
    assert_eq!(old["ips"][0]["version"], "4");

    let all = cache.attachments(None).unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].gc_attachment().container_id, CID);
    assert_eq!(cache.attachments(Some(CID)).unwrap().len(), 1);
    assert!(cache.attachments(Some("other")).unwrap().is_empty());
}

#[test]
fn writes_what_libcni_writes_and_reads_it_back() {
    let d = Tmp::new("roundtrip");
    let cache = ResultCache::new(d.0.join("cache"));
    let sample: CachedAttachment = serde_json::from_str(LIBCNI_SAMPLE).unwrap();
    let path = cache.save(&sample).unwrap();
    assert_eq!(path, d.0.join(format!("cache/results/dbnet-{CID}-eth0")));
    let written = std::fs::read_to_string(&path).unwrap();
    // Same keys, same order, same encoding as Go's json.Marshal of cachedInfo.
    assert_eq!(written, LIBCNI_SAMPLE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let dir_mode = std::fs::metadata(cache.results_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert_eq!(cache.load("dbnet", CID, "eth0").unwrap().unwrap(), sample);

    cache.remove("dbnet", CID, "eth0").unwrap();
    cache.remove("dbnet", CID, "eth0").unwrap();
    assert!(cache.load("dbnet", CID, "eth0").unwrap().is_none());
    assert!(cache
        .result("dbnet", CID, "eth0", Version::V1_0_0)
        .unwrap()
        .is_none());
}

#[test]
fn optional_fields_are_omitted_like_go_omitempty() {
    let e = CachedAttachment {
        kind: CACHE_KIND_V1.into(),
        container_id: "c".into(),
        config: Vec::new(),
        ifname: "eth0".into(),
        network_name: "n".into(),
        netns: String::new(),
        cni_args: Vec::new(),
        capability_args: Default::default(),
        result: None,
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(
        v,
        json!({"kind": "cniCacheV1", "containerId": "c", "config": "", "ifName": "eth0",
               "networkName": "n"})
    );
    // Go writes a nil []byte as null.
    let back: CachedAttachment = serde_json::from_value(json!({"kind": "cniCacheV1",
        "containerId": "c", "config": null, "ifName": "eth0", "networkName": "n"}))
    .unwrap();
    assert!(back.config.is_empty());
}

#[test]
fn legacy_bare_results_and_bad_entries() {
    let d = Tmp::new("legacy");
    let cache = ResultCache::new(&d.0);
    let results = cache.results_dir();
    std::fs::create_dir_all(&results).unwrap();
    // Before cniCacheV1, libcni cached the bare result.
    std::fs::write(
        results.join("n-c1-eth0"),
        r#"{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}"#,
    )
    .unwrap();
    let r = cache
        .result("n", "c1", "eth0", Version::V1_0_0)
        .unwrap()
        .unwrap();
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["ips"][0]["address"], "10.0.0.2/24");
    assert!(
        cache.load("n", "c1", "eth0").is_err(),
        "not a cniCacheV1 entry"
    );
    std::fs::write(results.join("n-c2-eth0"), "garbage").unwrap();
    assert_eq!(
        cache
            .result("n", "c2", "eth0", Version::V1_0_0)
            .unwrap_err()
            .code,
        6
    );
    // Neither shows up as an attachment, nor do temp files.
    std::fs::write(results.join(".n-c3-eth0.tmp-1-0"), LIBCNI_SAMPLE).unwrap();
    assert!(cache.attachments(None).unwrap().is_empty());
    assert!(cache.path("", "c", "eth0").is_err());
}

#[test]
fn entry_without_a_result_is_an_error_for_prev_result() {
    let d = Tmp::new("noresult");
    let cache = ResultCache::new(&d.0);
    let mut v: Value = serde_json::from_str(LIBCNI_SAMPLE).unwrap();
    v.as_object_mut().unwrap().remove("result");
    let e: CachedAttachment = serde_json::from_value(v).unwrap();
    cache.save(&e).unwrap();
    assert!(cache.result("dbnet", CID, "eth0", Version::V1_0_0).is_err());
}

#[test]
fn gc_reads_only_the_entries_that_may_be_stale() {
    let d = Tmp::new("stale");
    let cache = ResultCache::new(&d.0);
    let entry = |net: &str, id: &str, ifname: &str| CachedAttachment {
        kind: CACHE_KIND_V1.into(),
        container_id: id.into(),
        config: Vec::new(),
        ifname: ifname.into(),
        network_name: net.into(),
        netns: format!("/run/netns/{id}"),
        cni_args: Vec::new(),
        capability_args: Default::default(),
        result: None,
    };
    for (net, id) in [
        ("n", "keep"),
        ("n", "gone"),
        ("n-x", "gone2"),
        ("m", "gone3"),
    ] {
        cache.save(&entry(net, id, "eth0")).unwrap();
    }
    cache.save(&entry("n", "keep", "net1")).unwrap();
    let results = cache.results_dir();
    // The valid attachment's file is not read: garbage there is not reported either.
    std::fs::write(results.join("n-keep-eth0"), "garbage").unwrap();
    // A file of another network is not read, even when it holds an entry of this one.
    std::fs::write(
        results.join("m-moved-eth0"),
        serde_json::to_vec(&entry("n", "moved", "eth0")).unwrap(),
    )
    .unwrap();
    let keep = GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    };
    let valid: HashSet<&GcAttachment> = [&keep].into_iter().collect();
    let stale = cache.stale_attachments("n", &valid).unwrap();
    let ids: Vec<(&str, &str)> = stale
        .iter()
        .map(|e| (e.container_id.as_str(), e.ifname.as_str()))
        .collect();
    // "n-x-gone2-eth0" starts like one of network n's, is read, and is network n-x's.
    assert_eq!(ids, [("gone", "eth0"), ("keep", "net1")]);
    assert_eq!(stale[0].netns, "/run/netns/gone");
    assert!(ResultCache::new(d.0.join("none"))
        .stale_attachments("n", &valid)
        .unwrap()
        .is_empty());
}
