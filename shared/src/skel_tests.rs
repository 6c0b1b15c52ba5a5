//! The skel's handling of environments, configurations and verbs, with a fake plugin.

use std::cell::RefCell;
use std::collections::HashMap;

use serde_json::{json, Value};

use crate::error::{CniError, Result};
use crate::skel::{run_with, About, Plugin, Request};
use crate::spec::{CniResult, IpConfig};

#[derive(Default)]
struct Fake {
    seen: RefCell<Vec<String>>,
    fail: Option<CniError>,
}

impl Fake {
    fn record(&self, req: &Request) -> Result<()> {
        self.seen.borrow_mut().push(format!(
            "{} {} {} {:?}",
            req.command.as_str(),
            req.container_id,
            req.ifname,
            req.netns
        ));
        match &self.fail {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

impl Plugin for Fake {
    fn add(&self, req: &Request) -> Result<CniResult> {
        self.record(req)?;
        let mut r = CniResult::default();
        r.ips.push(IpConfig::new(
            crate::spec::parse_cidr("10.0.0.2/24").unwrap(),
            None,
        ));
        Ok(r)
    }
    fn del(&self, req: &Request) -> Result<()> {
        self.record(req)
    }
    fn check(&self, req: &Request) -> Result<()> {
        self.record(req)
    }
    fn status(&self, req: &Request) -> Result<()> {
        self.record(req)
    }
    fn gc(&self, req: &Request) -> Result<()> {
        self.record(req)?;
        req.gc_valid_attachments().map(|_| ())
    }
}

const ABOUT: About = About {
    name: "fake",
    version: "9.9.9",
};

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", self.stdout))
    }
    fn code(&self) -> u64 {
        assert_eq!(self.status, 1, "expected failure, got {:?}", self.stdout);
        self.json()["code"].as_u64().unwrap()
    }
}

/// `run_with` over `env` and `stdin`, writing to `stdout`; its exit status.
fn run_status(
    plugin: &Fake,
    env: &[(&str, &str)],
    stdin: &str,
    stdout: &mut dyn std::io::Write,
    stderr: &mut dyn std::io::Write,
) -> i32 {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lookup = move |k: &str| env.get(k).cloned();
    run_with(
        plugin,
        ABOUT,
        &lookup,
        &mut stdin.as_bytes(),
        false,
        stdout,
        stderr,
    )
}

fn run(plugin: &Fake, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let status = run_status(plugin, env, stdin, &mut out, &mut err);
    Run {
        status,
        stdout: String::from_utf8(out).unwrap(),
        stderr: String::from_utf8(err).unwrap(),
    }
}

fn conf(version: &str) -> String {
    json!({"cniVersion": version, "name": "net1", "type": "fake"}).to_string()
}

const ADD: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "Abc-123"),
    ("CNI_NETNS", "/run/netns/x"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

fn with(
    base: &[(&'static str, &'static str)],
    k: &'static str,
    v: &'static str,
) -> Vec<(&'static str, &'static str)> {
    let mut e: Vec<_> = base.iter().copied().filter(|(kk, _)| *kk != k).collect();
    e.push((k, v));
    e
}

fn without(base: &[(&'static str, &'static str)], k: &str) -> Vec<(&'static str, &'static str)> {
    base.iter().copied().filter(|(kk, _)| *kk != k).collect()
}

#[test]
fn no_command_prints_the_about_line_on_stderr() {
    let r = run(&Fake::default(), &[], "");
    assert_eq!(r.status, 0);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.starts_with("CNI fake plugin v9.9.9\n"),
        "{}",
        r.stderr
    );
    assert!(r
        .stderr
        .contains("0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"));
}

#[test]
fn version_lists_all_seven_versions() {
    let r = run(
        &Fake::default(),
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"0.4.0"}"#,
    );
    assert_eq!(r.status, 0);
    let v = r.json();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 7);
    let r = run(&Fake::default(), &[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(r.json()["cniVersion"], "1.1.0");
}

#[test]
fn version_echoes_the_input_cni_version_even_unknown() {
    // SPEC.md: the output's cniVersion is "the value of cniVersion specified on input".
    for (stdin, echoed) in [
        (r#"{"cniVersion":"1.2.0"}"#, "1.2.0"),
        (r#"{"cniVersion":"0.1.0"}"#, "0.1.0"),
        (r#"{"cniVersion":"x\"y"}"#, "x\"y"),
        // Nothing to echo: the latest.
        (r#"{"cniVersion":""}"#, "1.1.0"),
        (r#"{"cniVersion":2}"#, "1.1.0"),
        (r#"{}"#, "1.1.0"),
        ("not json", "1.1.0"),
    ] {
        let r = run(&Fake::default(), &[("CNI_COMMAND", "VERSION")], stdin);
        assert_eq!(r.status, 0);
        assert_eq!(r.json()["cniVersion"], echoed, "{stdin}");
        assert_eq!(r.json()["supportedVersions"].as_array().unwrap().len(), 7);
    }
}

#[test]
fn add_prints_the_result_in_the_config_version() {
    for (version, key) in [("0.2.0", "ip4"), ("0.4.0", "ips"), ("1.1.0", "ips")] {
        let p = Fake::default();
        let r = run(&p, &ADD, &conf(version));
        assert_eq!(r.status, 0, "{}", r.stdout);
        let v = r.json();
        assert_eq!(v["cniVersion"], version);
        assert!(v.get(key).is_some(), "{v}");
        assert_eq!(
            p.seen.borrow()[0],
            "ADD Abc-123 eth0 Some(\"/run/netns/x\")"
        );
    }
}

#[test]
fn plugin_errors_keep_their_code_and_the_config_version() {
    let p = Fake {
        fail: Some(CniError::try_again("busy")),
        ..Fake::default()
    };
    let r = run(&p, &ADD, &conf("0.4.0"));
    assert_eq!(r.code(), 11);
    assert_eq!(r.json()["cniVersion"], "0.4.0");
    assert_eq!(r.json()["msg"], "busy");
    assert!(r.json().get("details").is_some());
}

#[test]
fn bad_environment_is_code_4() {
    let p = Fake::default();
    assert_eq!(
        run(&p, &with(&ADD, "CNI_COMMAND", "ADDX"), &conf("1.1.0")).code(),
        4
    );
    assert_eq!(
        run(&p, &with(&ADD, "CNI_IFNAME", "a/b"), &conf("1.1.0")).code(),
        4
    );
    assert_eq!(
        run(
            &p,
            &with(&ADD, "CNI_IFNAME", "0123456789abcdef"),
            &conf("1.1.0")
        )
        .code(),
        4
    );
    assert_eq!(
        run(&p, &with(&ADD, "CNI_CONTAINERID", "-bad"), &conf("1.1.0")).code(),
        4
    );
    let r = run(&p, &without(&ADD, "CNI_NETNS"), &conf("1.1.0"));
    assert_eq!(r.code(), 4);
    assert!(r.json()["msg"].as_str().unwrap().contains("CNI_NETNS"));
    assert!(p.seen.borrow().is_empty(), "the plugin never ran");
}

#[test]
fn cni_path_is_optional_for_every_verb() {
    // SPEC.md: CNI_PATH is optional for ADD, DEL and CHECK; STATUS and GC need only CNI_COMMAND.
    let gc_conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "fake",
                         "cni.dev/valid-attachments": []})
    .to_string();
    for (verb, env, stdin) in [
        ("ADD", without(&ADD, "CNI_PATH"), conf("1.1.0")),
        (
            "CHECK",
            with(&without(&ADD, "CNI_PATH"), "CNI_COMMAND", "CHECK"),
            conf("1.1.0"),
        ),
        (
            "DEL",
            with(&without(&ADD, "CNI_PATH"), "CNI_COMMAND", "DEL"),
            conf("1.1.0"),
        ),
        (
            "DEL",
            with(&with(&ADD, "CNI_COMMAND", "DEL"), "CNI_PATH", ""),
            conf("1.1.0"),
        ),
        ("STATUS", vec![("CNI_COMMAND", "STATUS")], conf("1.1.0")),
        ("GC", vec![("CNI_COMMAND", "GC")], gc_conf),
    ] {
        let p = Fake::default();
        let r = run(&p, &env, &stdin);
        assert_eq!(r.status, 0, "{verb} {env:?}: {}", r.stdout);
        assert!(p.seen.borrow()[0].starts_with(verb), "{:?}", p.seen);
    }
}

#[test]
fn del_may_lack_netns() {
    let p = Fake::default();
    let env = with(&without(&ADD, "CNI_NETNS"), "CNI_COMMAND", "DEL");
    let r = run(&p, &env, &conf("1.0.0"));
    assert_eq!(r.status, 0, "{}", r.stdout);
    assert!(r.stdout.is_empty());
    assert_eq!(p.seen.borrow()[0], "DEL Abc-123 eth0 None");
}

#[test]
fn bad_configs_get_their_codes() {
    let p = Fake::default();
    assert_eq!(run(&p, &ADD, "{not json").code(), 6);
    assert_eq!(run(&p, &ADD, "").code(), 6);
    assert_eq!(
        run(&p, &ADD, r#"{"cniVersion":"1.1.0","name":"n"}"#).code(),
        7
    );
    assert_eq!(
        run(&p, &ADD, r#"{"cniVersion":"1.1.0","type":"fake"}"#).code(),
        7
    );
    assert_eq!(
        run(
            &p,
            &ADD,
            r#"{"cniVersion":"1.1.0","name":"a/b","type":"f"}"#
        )
        .code(),
        7
    );
    assert_eq!(
        run(&p, &ADD, r#"{"cniVersion":"1.1.0","name":"..","type":"f"}"#).code(),
        7
    );
    assert_eq!(
        run(
            &p,
            &ADD,
            r#"{"cniVersion":"1.1.0","name":"n","type":"f","ipMasq":1}"#
        )
        .code(),
        7
    );
    let r = run(&p, &ADD, &conf("0.9.0"));
    assert_eq!(r.code(), 1);
    assert_eq!(
        r.json()["cniVersion"],
        "1.1.0",
        "errors before the version is known use the latest"
    );
    assert!(p.seen.borrow().is_empty());
}

#[test]
fn errors_carry_the_config_version_once_it_is_read() {
    // SPEC.md, Error: cniVersion is "the same value as provided by the configuration".
    let p = Fake::default();
    let check = with(&ADD, "CNI_COMMAND", "CHECK");
    let status = [("CNI_COMMAND", "STATUS")];
    // What, environment, stdin, the error's code and its cniVersion.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u64, &'a str);
    let cases: [Case; 12] = [
        (
            "no type",
            &ADD,
            r#"{"cniVersion":"0.4.0","name":"n"}"#,
            7,
            "0.4.0",
        ),
        (
            "bad name",
            &ADD,
            r#"{"cniVersion":"1.0.0","name":"a/b","type":"f"}"#,
            7,
            "1.0.0",
        ),
        (
            "common key of the wrong type",
            &ADD,
            r#"{"cniVersion":"0.4.0","name":5,"type":"f"}"#,
            7,
            "0.4.0",
        ),
        ("CHECK before 0.4.0", &check, &conf("0.3.1"), 1, "0.3.1"),
        ("STATUS before 1.1.0", &status, &conf("0.4.0"), 1, "0.4.0"),
        (
            "missing variable",
            &without(&ADD, "CNI_IFNAME"),
            &conf("0.4.0"),
            4,
            "0.4.0",
        ),
        (
            "bad container ID",
            &with(&ADD, "CNI_CONTAINERID", "-x"),
            &conf("0.3.1"),
            4,
            "0.3.1",
        ),
        (
            "no cniVersion is 0.1.0",
            &ADD,
            r#"{"name":"n"}"#,
            7,
            "0.1.0",
        ),
        // Unreadable: the latest.
        ("unknown version", &ADD, &conf("0.9.0"), 1, "1.1.0"),
        (
            "cniVersion not a string",
            &ADD,
            r#"{"cniVersion":4,"name":"n","type":"f"}"#,
            7,
            "1.1.0",
        ),
        ("not JSON", &ADD, "{not json", 6, "1.1.0"),
        (
            "missing variable, not JSON",
            &without(&ADD, "CNI_IFNAME"),
            "[1",
            4,
            "1.1.0",
        ),
    ];
    for (what, env, stdin, code, version) in cases {
        let r = run(&p, env, stdin);
        assert_eq!(r.code(), code, "{what}: {}", r.stdout);
        assert_eq!(r.json()["cniVersion"], version, "{what}: {}", r.stdout);
    }
    assert!(p.seen.borrow().is_empty());
}

/// A terminal on stdin: records whether it was read.
#[derive(Default)]
struct Terminal {
    read: bool,
}

impl std::io::Read for Terminal {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        self.read = true;
        Ok(0)
    }
}

#[test]
fn an_environment_error_does_not_wait_for_a_terminal() {
    let env = without(&ADD, "CNI_NETNS");
    let lookup = |k: &str| {
        env.iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, v)| v.to_string())
    };
    let mut tty = Terminal::default();
    let mut out = Vec::new();
    let status = run_with(
        &Fake::default(),
        ABOUT,
        &lookup,
        &mut tty,
        true,
        &mut out,
        &mut Vec::new(),
    );
    assert_eq!(status, 1);
    assert!(!tty.read, "stdin was read");
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (v["code"].as_u64(), v["cniVersion"].as_str()),
        (Some(4), Some("1.1.0"))
    );
}

#[test]
fn verbs_need_their_minimum_version() {
    let p = Fake::default();
    let check = with(&ADD, "CNI_COMMAND", "CHECK");
    assert_eq!(run(&p, &check, &conf("0.3.1")).code(), 1);
    assert_eq!(run(&p, &check, &conf("0.4.0")).status, 0);
    let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")];
    assert_eq!(run(&p, &gc, &conf("1.0.0")).code(), 1);
    let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")];
    assert_eq!(run(&p, &status, &conf("1.0.0")).code(), 1);
    assert_eq!(run(&p, &status, &conf("1.1.0")).status, 0);
    let gc_conf = json!({"cniVersion": "1.1.0", "name": "n", "type": "fake",
                         "cni.dev/valid-attachments": []})
    .to_string();
    assert_eq!(run(&p, &gc, &gc_conf).status, 0);
    assert_eq!(
        run(&p, &gc, &conf("1.1.0")).code(),
        7,
        "GC without a valid list"
    );
}

#[test]
fn oversized_stdin_is_refused() {
    let big = format!(
        r#"{{"cniVersion":"1.1.0","name":"n","type":"f","pad":"{}"}}"#,
        "x".repeat((crate::skel::MAX_STDIN + 1) as usize)
    );
    assert_eq!(run(&Fake::default(), &ADD, &big).code(), 6);
}

/// A stdout whose reader is gone.
struct BrokenPipe;

impl std::io::Write for BrokenPipe {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::ErrorKind::BrokenPipe.into())
    }
}

#[test]
fn an_add_whose_result_cannot_be_delivered_is_undone() {
    let plugin = Fake::default();
    let conf = conf("1.1.0");
    let status = run_status(&plugin, &ADD, &conf, &mut BrokenPipe, &mut Vec::new());
    assert_eq!(status, 1);
    let seen = plugin.seen.borrow();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with("ADD Abc-123 eth0"), "{seen:?}");
    assert!(seen[1].starts_with("DEL Abc-123 eth0"), "{seen:?}");
    // A DEL whose (empty) output cannot be delivered is just a DEL.
    let plugin = Fake::default();
    let del = with(&ADD, "CNI_COMMAND", "DEL");
    let status = run_status(&plugin, &del, &conf, &mut BrokenPipe, &mut Vec::new());
    assert_eq!(status, 0);
    assert_eq!(plugin.seen.borrow().len(), 1);
}
