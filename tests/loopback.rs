//! loopback as a real process: lo comes up in the container, CHECK sees it, DEL takes it down.

use std::time::Duration;

use cni_shared::skel::Command;
use cni_shared::spec::Version;
use cni_tests::testkit::{ping, Call, Sandbox};
use serde_json::{json, Value};

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "lo-net", "type": "loopback"})
}

fn lo_is_up(c: &Sandbox) -> bool {
    c.ip(&["-o", "link", "show", "lo"]).contains(",UP")
}

fn call(
    host: &Sandbox,
    cmd: Command,
    cfg: Value,
    ctr: Option<&Sandbox>,
) -> Result<Value, cni_shared::CniError> {
    Call::new("loopback", cmd, cfg)
        .container("lo-ctr", "eth0", ctr.map(Sandbox::path))
        .run_in(host)
        .map(|o| {
            if o.stdout.is_empty() {
                Value::Null
            } else {
                o.json()
            }
        })
}

#[test]
fn add_check_del() {
    let host = Sandbox::new("lo-host");
    let ctr = Sandbox::new("lo-ctr");
    ctr.ip(&["link", "set", "lo", "down"]);
    assert!(!lo_is_up(&ctr));
    let r = call(&host, Command::Add, conf("1.1.0"), Some(&ctr)).unwrap();
    assert!(lo_is_up(&ctr));
    assert!(ping(
        &ctr,
        "127.0.0.1".parse().unwrap(),
        Duration::from_secs(5)
    ));
    assert_eq!(r["interfaces"][0]["name"], "lo");
    assert_eq!(r["interfaces"][0]["mac"], "00:00:00:00:00:00");
    assert_eq!(
        r["interfaces"][0]["sandbox"],
        ctr.path().display().to_string()
    );
    assert_eq!(r["ips"][0]["address"], "127.0.0.1/8");
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][1]["address"], "::1/128");

    let mut check = conf("1.1.0");
    check["prevResult"] = r.clone();
    call(&host, Command::Check, check.clone(), Some(&ctr)).unwrap();
    ctr.ip(&["link", "set", "lo", "down"]);
    assert!(
        call(&host, Command::Check, check, Some(&ctr)).is_err(),
        "CHECK sees lo down"
    );
    ctr.ip(&["link", "set", "lo", "up"]);

    call(&host, Command::Del, conf("1.1.0"), Some(&ctr)).unwrap();
    assert!(!lo_is_up(&ctr));
    call(&host, Command::Del, conf("1.1.0"), Some(&ctr)).unwrap();
    call(&host, Command::Del, conf("1.1.0"), None).unwrap();
    let path = ctr.path().to_path_buf();
    ctr.delete();
    Call::new("loopback", Command::Del, conf("1.1.0"))
        .container("lo-ctr", "eth0", Some(&path))
        .run_in(&host)
        .expect("DEL after the namespace is gone succeeds");
}

#[test]
fn every_result_version_and_prev_result_passthrough() {
    let host = Sandbox::new("lo-vers");
    let ctr = Sandbox::new("lo-vers-c");
    for v in Version::ALL {
        let r = call(&host, Command::Add, conf(v.as_str()), Some(&ctr)).unwrap();
        assert_eq!(r["cniVersion"], v.as_str());
        if v < Version::V0_3_0 {
            assert_eq!(r["ip4"]["ip"], "127.0.0.1/8", "{r}");
        } else {
            assert_eq!(r["ips"][0]["address"], "127.0.0.1/8", "{r}");
        }
    }
    let mut chained = conf("1.0.0");
    chained["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.1/24"}],
                                   "x-extra": 1});
    let r = call(&host, Command::Add, chained, Some(&ctr)).unwrap();
    assert_eq!(r["ips"][0]["address"], "10.1.1.1/24");
    assert_eq!(
        r["x-extra"], 1,
        "unknown keys of a prevResult are passed on"
    );
}

#[test]
fn bad_namespaces() {
    let host = Sandbox::new("lo-bad");
    let e = Call::new("loopback", Command::Add, conf("1.1.0"))
        .container(
            "x",
            "eth0",
            Some(std::path::Path::new("/run/netns/cni-no-such-ns")),
        )
        .run_in(&host)
        .unwrap_err();
    assert_eq!(e.code, 3, "{}", e.msg);
    let e = Call::new("loopback", Command::Add, conf("1.1.0"))
        .container("x", "eth0", Some(std::path::Path::new("/etc/hostname")))
        .run_in(&host)
        .unwrap_err();
    assert_eq!(e.code, 4, "{}", e.msg);
    assert!(e.msg.contains("not a network namespace"), "{}", e.msg);
}

#[test]
fn status_and_gc_succeed() {
    let host = Sandbox::new("lo-sg");
    Call::new("loopback", Command::Status, conf("1.1.0"))
        .run_in(&host)
        .unwrap();
    let mut gc = conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([]);
    Call::new("loopback", Command::Gc, gc)
        .run_in(&host)
        .unwrap();
}
