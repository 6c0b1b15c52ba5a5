//! The IPAM plugin of a killed bridge, when executed, runs on (the runtime kills only its direct
//! child) and may reserve its address after the runtime's DEL has come and gone. Its result
//! cannot be delivered any more, so it undoes its own ADD instead of leaking the lease until a
//! GC. (Our host-local in-process dies with the bridge; that case is tested here too.)

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use cni_shared::skel::Command;
use cni_tests::testkit::{
    bin_dir, plugin_path, wait_until, write_executable, Call, Outcome, Sandbox, TempDir,
};
use serde_json::{json, Value};

use super::hold;
use super::store_view::StoreView;

fn conf(data: &TempDir) -> Value {
    json!({"cniVersion": "1.1.0", "name": "ornet", "type": "bridge", "bridge": "or-br0",
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.99.0.0/24"}]]}})
}

#[test]
fn an_ipam_add_whose_caller_is_gone_leaves_no_lease() {
    let host = Sandbox::new("or-h");
    let data = TempDir::new("or");
    let mut child = host
        .command(&plugin_path("host-local").display().to_string())
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", "orphan")
        .env("CNI_NETNS", host.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The caller dies before the answer: nobody reads the result any more.
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(conf(&data).to_string().as_bytes()).unwrap();
    drop(stdin);
    assert!(wait_until(Duration::from_secs(30), || child
        .try_wait()
        .unwrap()
        .is_some()));
    assert!(!child.wait().unwrap().success());
    let v = StoreView::read(data.path(), "ornet");
    v.assert_consistent(1);
    assert!(
        v.leases.is_empty(),
        "the undelivered lease stayed: {:?}",
        v.leases
    );
}

/// The real sequence: host-local waits for its lock, the runtime's timeout kills the bridge,
/// the runtime's DEL comes; whichever of the two host-local calls gets the lock first, no lease
/// is left (before, the DEL coming first left one until a GC). Here host-local is executed: a
/// wrapper in CNI_PATH is not the bridge's own build, so its process outlives the bridge.
#[test]
fn a_killed_bridge_leaves_no_lease_whatever_the_order() {
    killed_bridge_rounds("or2", true);
}

/// The same with host-local in-process (the built one in CNI_PATH): it dies with the bridge.
#[test]
fn a_killed_bridge_with_host_local_in_process_leaves_no_lease() {
    killed_bridge_rounds("or3", false);
}

fn killed_bridge_rounds(label: &str, executed: bool) {
    let host = Sandbox::new(&format!("{label}-h"));
    let data = TempDir::new(label);
    let c = conf(&data);
    let ctr = Sandbox::new(&format!("{label}-c"));
    let lock = data.path().join("ornet/lock");
    let work = TempDir::new(&format!("{label}-bin"));
    let log = work.path().join("log");
    write_executable(
        &work.path().join("host-local"),
        format!("#!/bin/sh\nexec {}\n", plugin_path("host-local").display()),
    );
    let cni_path = if executed {
        work.path().to_path_buf()
    } else {
        bin_dir()
    };
    let call = |cmd: Command, id: &str| {
        let mut call = Call::new("bridge", cmd, c.clone())
            .container(id, "eth0", Some(ctr.path()))
            .env("CNI_LOG_LEVEL", "debug")
            .env("CNI_LOG_FILE", &log.display().to_string());
        call.env.cni_path = vec![cni_path.clone()];
        call
    };
    // Make the network's directory and lock file exist.
    call(Command::Add, "warm").spawn_in(&host).wait().unwrap();
    call(Command::Del, "warm").spawn_in(&host).wait().unwrap();
    for round in 0..3 {
        let _ = std::fs::remove_file(&log);
        let mut holder = hold(&lock);
        let add = call(Command::Add, "victim").spawn_in(&host);
        // The bridge is waiting for its host-local, which waits for the lock (executed: a
        // second process; in-process: the bridge said so before it takes the lock).
        assert!(wait_until(Duration::from_secs(10), || if executed {
            host.pids().len() >= 2
        } else {
            std::fs::read_to_string(&log)
                .is_ok_and(|l| l.contains("running the IPAM plugin in-process"))
        }));
        std::thread::sleep(Duration::from_millis(100));
        assert!(matches!(
            add.finish(Some(Duration::ZERO)),
            Outcome::Killed(_)
        ));
        let del = call(Command::Del, "victim").spawn_in(&host);
        std::thread::sleep(Duration::from_millis(200));
        holder.kill().unwrap();
        holder.wait().unwrap();
        del.wait().unwrap();
        assert!(wait_until(Duration::from_secs(30), || host
            .pids()
            .is_empty()));
        let v = StoreView::read(data.path(), "ornet");
        v.assert_consistent(1);
        assert!(v.leases.is_empty(), "round {round}: {:?}", v.leases);
        assert!(!ctr.has_link("eth0"));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        text.contains("running the IPAM plugin in-process"),
        !executed,
        "host-local ran {}:\n{text}",
        if executed {
            "in-process"
        } else {
            "as a process"
        }
    );
}
