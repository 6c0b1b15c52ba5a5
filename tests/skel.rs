//! The skel as seen from a runtime, through a real plugin binary: panics end as CNI errors, logs
//! never reach stdout, the about line, VERSION, the optional CNI_PATH.

// Test code: a panic is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
        // Its cniVersion is the one asked for, even one newer than ours.
        let (code, out) = run_bare(
            plugin,
            &[("CNI_COMMAND", "VERSION")],
            r#"{"cniVersion":"1.2.0"}"#,
        );
        assert_eq!(code, 0, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.2.0", "{plugin}: {v}");
    }
}

/// Run `plugin` with only `env` (as `env -i` does) and `stdin`: its exit status and stdout.
fn run_bare(plugin: &str, env: &[(&str, &str)], stdin: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Process::new(plugin_path(plugin))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

fn error_of(plugin: &str, env: &[(&str, &str)], stdin: &str) -> Value {
    let (status, stdout) = run_bare(plugin, env, stdin);
    assert_eq!(status, 1, "{plugin} {env:?}: {stdout}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn status_and_gc_need_only_cni_command() {
    // Neither touches a network: loopback's STATUS and GC look at nothing.
    let status = json!({"cniVersion": "1.1.0", "name": "n", "type": "loopback"}).to_string();
    let (code, out) = run_bare("loopback", &[("CNI_COMMAND", "STATUS")], &status);
    assert_eq!((code, out.as_str()), (0, ""));
    let gc = json!({"cniVersion": "1.1.0", "name": "n", "type": "loopback",
                    "cni.dev/valid-attachments": []})
    .to_string();
    let (code, out) = run_bare("loopback", &[("CNI_COMMAND", "GC")], &gc);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn add_and_del_without_cni_path_when_nothing_is_delegated() {
    let host = Sandbox::new("skel-nopath");
    let ctr = Sandbox::new("skel-nopath-c");
    for command in [Command::Add, Command::Check, Command::Del] {
        let mut call =
            Call::new("loopback", command, lo_conf()).container("np1", "eth0", Some(ctr.path()));
        call.env.cni_path.clear();
        call.run_in(&host)
            .unwrap_or_else(|e| panic!("{command:?} without CNI_PATH: {e}"));
    }
}

#[test]
fn delegating_to_ipam_without_cni_path_is_code_4_and_leaves_nothing() {
    let host = Sandbox::new("skel-ipam-np");
    let ctr = Sandbox::new("skel-ipam-np-c");
    let data = TempDir::new("skel-ipam-np");
    let conf = json!({"cniVersion": "1.1.0", "name": "skel-np", "type": "bridge",
        "bridge": "br-np", "ipam": {"type": "host-local", "dataDir": data.path(),
                                    "ranges": [[{"subnet": "10.61.0.0/24"}]]}});
    // Unset, and set to no directory at all: the same clear error, never a silent in-process
    // host-local (which one runs is the runtime's choice, made through CNI_PATH).
    for path in [None, Some(""), Some(":")] {
        for command in [Command::Add, Command::Del, Command::Status] {
            let mut call = Call::new("bridge", command, conf.clone());
            if command != Command::Status {
                call = call.container("np2", "eth0", Some(ctr.path()));
            }
            call.env.cni_path.clear();
            if let Some(p) = path {
                call = call.env("CNI_PATH", p);
            }
            let e = call.run_in(&host).unwrap_err();
            assert_eq!(e.code, 4, "{command:?} {path:?}: {}", e.msg);
            assert!(
                e.msg.starts_with("CNI_PATH:") && e.msg.contains("IPAM plugin \"host-local\""),
                "{command:?} {path:?}: {}",
                e.msg
            );
            assert!(
                !host.has_link("br-np"),
                "{command:?} {path:?}: the ADD was undone"
            );
            assert!(!ctr.has_link("eth0"), "{command:?} {path:?}");
            let leases = std::fs::read_dir(data.path()).map_or(0, |d| d.count());
            assert_eq!(leases, 0, "{command:?} {path:?}: host-local never ran");
        }
    }
    // With CNI_PATH the same configuration works.
    let add =
        Call::new("bridge", Command::Add, conf.clone()).container("np2", "eth0", Some(ctr.path()));
    add.run_in(&host).unwrap();
    assert!(ctr.has_link("eth0"));
    let mut del = add.clone();
    del.command = Command::Del;
    del.run_in(&host).unwrap();
}

#[test]
fn errors_echo_the_config_version() {
    // Every run fails before touching a network.
    let attach = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "v1"),
        ("CNI_NETNS", "/nonexistent/netns"),
        ("CNI_IFNAME", "eth0"),
    ];
    let bad_name = json!({"cniVersion": "0.4.0", "name": "a/b", "type": "loopback"}).to_string();
    let e = error_of("loopback", &attach, &bad_name);
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(7), Some("0.4.0")),
        "{e}"
    );
    let mut check = attach;
    check[0].1 = "CHECK";
    let old = json!({"cniVersion": "0.3.1", "name": "n", "type": "loopback"}).to_string();
    let e = error_of("loopback", &check, &old);
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(1), Some("0.3.1")),
        "{e}"
    );
    let e = error_of("host-local", &attach[..3], &bad_name);
    assert!(e["msg"].as_str().unwrap().contains("CNI_IFNAME"), "{e}");
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(4), Some("0.4.0")),
        "{e}"
    );
    let unknown = json!({"cniVersion": "9.9.9", "name": "n", "type": "loopback"}).to_string();
    let e = error_of("loopback", &attach, &unknown);
    assert_eq!(
        (e["code"].as_u64(), e["cniVersion"].as_str()),
        (Some(1), Some("1.1.0")),
        "{e}"
    );
}
