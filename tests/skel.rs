//! The skel as seen from a runtime, through a real plugin binary: panics end as CNI errors, logs
//! never reach stdout, the about line, VERSION.

use std::process::{Command as Process, Stdio};

use cni_shared::skel::Command;
use cni_tests::testkit::{plugin_path, Call, Sandbox, TempDir};
use serde_json::{json, Value};

fn lo_conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "n", "type": "loopback"})
}

#[test]
fn a_panic_is_a_cni_error_on_stdout() {
    // CNI_TEST_PANIC is compiled into debug builds only; the test script also runs this suite
    // against the shipped release build.
    if plugin_path("loopback")
        .parent()
        .and_then(|d| d.file_name())
        .is_some_and(|n| n == "release")
    {
        eprintln!(
            "SKIPPED: a_panic_is_a_cni_error_on_stdout: a release build has no fault injection"
        );
        return;
    }
    let host = Sandbox::new("skel-panic");
    let ctr = Sandbox::new("skel-panic-c");
    let e = Call::new("loopback", Command::Add, lo_conf())
        .container("p1", "eth0", Some(ctr.path()))
        .env("CNI_TEST_PANIC", "1")
        .run_in(&host)
        .unwrap_err();
    assert_eq!(e.code, 999);
    assert!(
        e.msg.contains("internal error") && e.msg.contains("CNI_TEST_PANIC"),
        "{}",
        e.msg
    );
}

#[test]
fn logs_go_to_the_log_file_never_stdout() {
    let host = Sandbox::new("skel-log");
    let ctr = Sandbox::new("skel-log-c");
    let dir = TempDir::new("skel-log");
    let log = dir.path().join("plugin.log");
    let mut conf = lo_conf();
    conf["logLevel"] = json!("debug");
    conf["logFile"] = json!(log);
    let out = Call::new("loopback", Command::Add, conf)
        .container("l1", "eth0", Some(ctr.path()))
        .run_in(&host)
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).expect("stdout is only the result");
    assert_eq!(v["interfaces"][0]["name"], "lo");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("DEBUG") && text.contains("cmd=\"ADD\""),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn without_cni_command_the_about_line_goes_to_stderr() {
    let out = Process::new(plugin_path("host-local"))
        .env_remove("CNI_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("CNI host-local plugin v"), "{err}");
    assert!(err.contains("1.1.0"), "{err}");
}

#[test]
fn version_reports_all_seven_versions() {
    for plugin in ["host-local", "loopback"] {
        let versions = cni_shared::invoke::plugin_versions(&plugin_path(plugin)).unwrap();
        assert_eq!(versions.len(), 7, "{plugin}");
    }
}
