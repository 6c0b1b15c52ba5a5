//! Loading, version negotiation and CNI_ARGS/CAP_ARGS parsing (no root).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::spec::Version;

/// A temporary directory removed on drop.
pub(super) struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(label: &str) -> Tmp {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cni-libcni-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }

    pub fn write(&self, name: &str, v: &Value) -> PathBuf {
        let p = self.0.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn load(dir: &Path, name: &str) -> NetworkConfigList {
    load_network_conf(dir, name).unwrap()
}

#[test]
fn conflist_is_found_by_name_and_keeps_its_bytes() {
    let d = Tmp::new("by-name");
    d.write(
        "10-a.conflist",
        &json!({"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}]}),
    );
    let b = json!({"cniVersion": "0.4.0", "name": "b", "disableCheck": "TRUE",
        "plugins": [{"type": "bridge", "bridge": "br0"}, {"type": "portmap",
                     "capabilities": {"portMappings": true}}]});
    let path = d.write("20-b.conflist", &b);
    let list = load(&d.0, "b");
    assert_eq!(list.name, "b");
    assert_eq!(list.cni_version, Version::V0_4_0);
    assert!(list.disable_check && !list.disable_gc);
    assert_eq!(list.plugins.len(), 2);
    assert_eq!(list.plugins[0].plugin_type, "bridge");
    assert_eq!(list.plugins[0].raw["bridge"], "br0");
    assert_eq!(
        list.plugins[1].capabilities().collect::<Vec<_>>(),
        ["portMappings"]
    );
    assert_eq!(list.bytes, std::fs::read(path).unwrap());
    let e = load_network_conf(&d.0, "c").unwrap_err();
    assert_eq!(e.code, 7);
    assert!(e.msg.contains("\"c\""), "{}", e.msg);
}

#[test]
fn first_file_by_name_wins_and_conflists_come_before_confs() {
    let d = Tmp::new("order");
    d.write(
        "00-net.conf",
        &json!({"cniVersion": "1.0.0", "name": "net", "type": "single"}),
    );
    d.write(
        "20-net.conflist",
        &json!({"name": "net", "cniVersion": "1.0.0",
        "plugins": [{"type": "second"}]}),
    );
    d.write(
        "10-net.conflist",
        &json!({"name": "net", "cniVersion": "1.0.0",
        "plugins": [{"type": "first"}]}),
    );
    assert_eq!(load(&d.0, "net").plugins[0].plugin_type, "first");
}

#[test]
fn single_plugin_conf_becomes_a_one_element_list() {
    let d = Tmp::new("single");
    d.write("a.txt", &json!({"name": "net", "type": "ignored"}));
    d.write(
        "10-net.json",
        &json!({"cniVersion": "0.3.1", "name": "net", "type": "bridge",
        "ipam": {"type": "host-local"}}),
    );
    let list = load(&d.0, "net");
    assert_eq!(list.cni_version, Version::V0_3_1);
    assert_eq!(list.plugins.len(), 1);
    assert_eq!(list.plugins[0].raw["ipam"]["type"], "host-local");
    let cached: Value = serde_json::from_slice(&list.bytes).unwrap();
    assert_eq!(cached["name"], "net");
    assert_eq!(cached["cniVersion"], "0.3.1");
    assert_eq!(cached["plugins"][0]["type"], "bridge");
}

#[test]
fn a_broken_file_is_skipped_and_named_but_not_fatal() {
    let d = Tmp::new("broken");
    std::fs::write(d.0.join("00-bad.conflist"), b"{not json").unwrap();
    d.write("05-noname.conflist", &json!({"plugins": [{"type": "x"}]}));
    d.write(
        "10-ok.conflist",
        &json!({"name": "ok", "cniVersion": "1.1.0",
        "plugins": [{"type": "x"}]}),
    );
    assert_eq!(load(&d.0, "ok").plugins[0].plugin_type, "x");
    let e = load_network_conf(&d.0, "other").unwrap_err();
    assert!(e.msg.contains("00-bad.conflist"), "{}", e.msg);
    assert!(e.msg.contains("05-noname.conflist"), "{}", e.msg);
}

#[test]
fn errors_in_the_matching_file_are_returned() {
    let d = Tmp::new("bad-match");
    d.write(
        "10-n.conflist",
        &json!({"name": "n", "cniVersion": "1.0.0", "plugins": []}),
    );
    d.write(
        "20-m.conflist",
        &json!({"name": "m", "cniVersion": "1.0.0",
        "plugins": [{"bridge": "no type"}]}),
    );
    d.write(
        "30-o.conflist",
        &json!({"name": "o", "cniVersion": "1.0.0",
        "plugins": [{"type": "x", "capabilities": {"portMappings": "yes"}}]}),
    );
    d.write(
        "40-v.conflist",
        &json!({"name": "v", "cniVersion": "2.0.0",
        "plugins": [{"type": "x"}]}),
    );
    assert!(load_network_conf(&d.0, "n")
        .unwrap_err()
        .msg
        .contains("no plugins"));
    let e = load_network_conf(&d.0, "m").unwrap_err();
    assert!(e.msg.contains("plugins[0]: type"), "{}", e.msg);
    let e = load_network_conf(&d.0, "o").unwrap_err();
    assert!(e.msg.contains("capabilities.portMappings"), "{}", e.msg);
    assert_eq!(load_network_conf(&d.0, "v").unwrap_err().code, 1);
}

#[test]
fn missing_or_empty_dir_has_no_configurations() {
    let d = Tmp::new("empty");
    let e = load_network_conf(&d.0.join("nope"), "x").unwrap_err();
    assert!(e.msg.contains("no net configurations found"), "{}", e.msg);
    assert!(load_network_conf(&d.0, "x").is_err());
}

#[test]
fn plugin_drop_ins_are_appended_unless_only_inlined() {
    let d = Tmp::new("dropins");
    d.write(
        "10-net.conflist",
        &json!({"name": "net", "cniVersion": "1.1.0",
        "plugins": [{"type": "main"}]}),
    );
    d.write("net/20-b.conf", &json!({"type": "dropin-b"}));
    d.write("net/10-a.conf", &json!({"type": "dropin-a"}));
    d.write("net/ignored.json", &json!({"type": "nope"}));
    let types: Vec<String> = load(&d.0, "net")
        .plugins
        .into_iter()
        .map(|p| p.plugin_type)
        .collect();
    assert_eq!(types, ["main", "dropin-a", "dropin-b"]);

    d.write(
        "10-net.conflist",
        &json!({"name": "net", "cniVersion": "1.1.0",
        "loadOnlyInlinedPlugins": true, "plugins": [{"type": "main"}]}),
    );
    assert_eq!(load(&d.0, "net").plugins.len(), 1);
    d.write(
        "10-net.conflist",
        &json!({"name": "net", "cniVersion": "1.1.0"}),
    );
    assert_eq!(
        load(&d.0, "net").plugins.len(),
        2,
        "plugins only from drop-ins"
    );
}

#[test]
fn version_negotiation_picks_the_highest_we_implement() {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let pick =
        |one: Option<&str>, many: Option<&[&str]>| negotiate_version(one, many.map(s).as_deref());
    assert_eq!(pick(Some("1.0.0"), None).unwrap(), Version::V1_0_0);
    assert_eq!(pick(None, None).unwrap(), Version::V0_1_0);
    assert_eq!(pick(Some(""), None).unwrap(), Version::V0_1_0);
    assert_eq!(pick(Some("1.2.0"), None).unwrap_err().code, 1);
    let many = ["0.4.0", "1.1.0", "1.0.0", "9.9.9", "1.2.0"];
    assert_eq!(pick(Some("0.3.1"), Some(&many)).unwrap(), Version::V1_1_0);
    assert_eq!(
        pick(Some("1.0.0"), Some(&["0.4.0"])).unwrap(),
        Version::V1_0_0
    );
    assert_eq!(
        pick(Some("7.0.0"), Some(&["0.4.0"])).unwrap(),
        Version::V0_4_0
    );
    assert_eq!(
        pick(None, Some(&["2.0.0", "0.3.1"])).unwrap(),
        Version::V0_3_1
    );
    assert_eq!(pick(None, Some(&["2.0.0"])).unwrap_err().code, 1);
    assert_eq!(pick(None, Some(&[])).unwrap_err().code, 1);
    assert_eq!(pick(None, Some(&["1.0"])).unwrap_err().code, 7);

    let list = NetworkConfigList::from_bytes(
        br#"{"name":"n","cniVersion":"0.4.0","cniVersions":["1.0.0","1.1.0","1.3.0"],
             "plugins":[{"type":"x"}]}"#,
    )
    .unwrap();
    assert_eq!(list.cni_version, Version::V1_1_0);
    let e = NetworkConfigList::from_bytes(
        br#"{"name":"n","cniVersions":"1.1.0","plugins":[{"type":"x"}]}"#,
    )
    .unwrap_err();
    assert!(e.msg.starts_with("cniVersions"), "{}", e.msg);
}

#[test]
fn cni_args_parse_like_the_reference_cnitool() {
    assert!(parse_cni_args("").unwrap().is_empty());
    let a = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web").unwrap();
    assert_eq!(
        a,
        [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web"]].map(|p| p.map(String::from))
    );
    let rt = RuntimeConf {
        args: a,
        ..RuntimeConf::default()
    };
    assert_eq!(rt.args_string(), "IgnoreUnknown=1;K8S_POD_NAME=web");
    for bad in ["a", "a=", "=b", "a=b=c", "a=b;", ";a=b"] {
        assert_eq!(parse_cni_args(bad).unwrap_err().code, 4, "{bad}");
    }
}

#[test]
fn capability_args_must_be_an_object() {
    assert!(parse_capability_args("").unwrap().is_empty());
    let m = parse_capability_args(r#"{"portMappings":[]}"#).unwrap();
    assert!(m.contains_key("portMappings"));
    assert_eq!(parse_capability_args("[1]").unwrap_err().code, 4);
    assert_eq!(parse_capability_args("{").unwrap_err().code, 4);
}
