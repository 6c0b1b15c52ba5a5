//! Bad configurations: CNI error code 7 naming the key, nothing created.

use cni_shared::skel::Command;
use cni_tests::testkit::{Sandbox, TempDir};
use serde_json::json;

use super::{call, conf, host_veths, leases};

#[test]
fn bad_input_is_code_7_naming_the_key_and_creates_nothing() {
    let host = Sandbox::new("br-bad");
    let ctr = Sandbox::new("br-bad-c");
    let data = TempDir::new("br-bad");
    host.ip(&[
        "link",
        "add",
        "notabridge",
        "type",
        "veth",
        "peer",
        "name",
        "nab-peer",
    ]);
    let cases = [
        (
            json!({"ipMasq": true, "ipMasqBackend": "pf"}),
            "ipMasqBackend",
        ),
        (
            json!({"hairpinMode": true, "promiscMode": true}),
            "hairpinMode",
        ),
        (json!({"vlan": 5000}), "vlan"),
        (json!({"mtu": 60}), "mtu"),
        (json!({"bridge": "bridge-name-16ch"}), "bridge"),
        (json!({"bridge": "notabridge"}), "bridge"),
        (json!({"vlanTrunk": [{"minID": 10}]}), "vlanTrunk"),
        (json!({"isGateway": 3}), "isGateway"),
        (json!({"runtimeConfig": {"mac": "zz"}}), "runtimeConfig.mac"),
    ];
    for (extra, key) in cases {
        let mut c = conf(&data, "br-bad", &["10.60.0.0/24"], extra.clone());
        if extra.get("bridge").is_some() {
            c["bridge"] = extra["bridge"].clone();
        }
        let e = call(&host, Command::Add, &c, "bad", Some(&ctr)).unwrap_err();
        assert_eq!(e.code, 7, "{extra}: {}", e.msg);
        assert!(e.msg.starts_with(key), "{extra}: {}", e.msg);
        assert!(!host.has_link("br-bad"), "{extra}: bridge created");
        assert_eq!(host_veths(&host), ["nab-peer", "notabridge"], "{extra}");
        assert!(!ctr.has_link("eth0"), "{extra}");
        assert!(leases(&data).is_empty(), "{extra}");
    }
    let mut c = conf(
        &data,
        "br-bad",
        &["10.60.0.0/24"],
        json!({"disableContainerInterface": true}),
    );
    let e = call(&host, Command::Add, &c, "bad", Some(&ctr)).unwrap_err();
    assert!(e.msg.starts_with("disableContainerInterface"), "{}", e.msg);
    // Without ipam it is fine: the interface stays down. `"ipam": {}` (no type) is no IPAM
    // too, as in the reference (KubeVirt's network attachments carry it).
    for ipam in [None, Some(json!({}))] {
        match &ipam {
            None => drop(c.as_object_mut().unwrap().remove("ipam")),
            Some(v) => c["ipam"] = v.clone(),
        }
        let r = call(&host, Command::Add, &c, "down", Some(&ctr)).unwrap();
        assert!(r.get("ips").is_none(), "{ipam:?}: {r}");
        assert!(!ctr.ip(&["-o", "link", "show", "eth0"]).contains(",UP"));
        call(&host, Command::Del, &c, "down", Some(&ctr)).unwrap();
        assert!(!ctr.has_link("eth0"), "{ipam:?}");
    }
}
