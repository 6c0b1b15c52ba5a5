//! The IPAM plugin of a killed bridge runs on (the runtime kills only its direct child) and may
//! reserve its address after the runtime's DEL has come and gone. Its result cannot be
//! delivered any more, so it undoes its own ADD instead of leaking the lease until a GC.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use cni_shared::skel::Command;
use cni_tests::testkit::{bin_dir, plugin_path, wait_until, Call, Outcome, Sandbox, TempDir};
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
/// is left (before, the DEL coming first left one until a GC).
#[test]
fn a_killed_bridge_leaves_no_lease_whatever_the_order() {
    let host = Sandbox::new("or2-h");
    let data = TempDir::new("or2");
    let c = conf(&data);
    let ctr = Sandbox::new("or2-c");
    let lock = data.path().join("ornet/lock");
    let call = |cmd: Command, id: &str| {
        Call::new("bridge", cmd, c.clone())
            .container(id, "eth0", Some(ctr.path()))
            .env("CNI_LOG_LEVEL", "error")
    };
    // Make the network's directory and lock file exist.
    call(Command::Add, "warm").spawn_in(&host).wait().unwrap();
    call(Command::Del, "warm").spawn_in(&host).wait().unwrap();
    for round in 0..3 {
        let mut holder = hold(&lock);
        let add = call(Command::Add, "victim").spawn_in(&host);
        // The bridge is waiting for its host-local, which waits for the lock.
        assert!(wait_until(Duration::from_secs(10), || host.pids().len() >= 2));
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
}
