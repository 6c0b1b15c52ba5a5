//! The testkit's own connectivity checks between two sandboxes joined by a veth.

use std::time::Duration;

use cni_tests::testkit::{ping, tcp_roundtrip, udp_roundtrip, Sandbox};

#[test]
fn ping_tcp_and_udp_between_sandboxes() {
    let a = Sandbox::new("tk-a");
    let b = Sandbox::new("tk-b");
    a.link_to("va", &b, "vb");
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", "va"]);
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", "vb"]);
    a.ip(&["-6", "addr", "add", "fd99::1/64", "dev", "va", "nodad"]);
    b.ip(&["-6", "addr", "add", "fd99::2/64", "dev", "vb", "nodad"]);
    let t = Duration::from_secs(5);
    assert!(ping(&a, "10.99.0.2".parse().unwrap(), t));
    assert!(ping(&b, "fd99::1".parse().unwrap(), t));
    assert!(
        !ping(&a, "10.99.0.77".parse().unwrap(), Duration::from_secs(1)),
        "no answer from nobody"
    );
    let srv = "10.99.0.2:8080".parse().unwrap();
    assert_eq!(tcp_roundtrip(&b, srv, &a, srv, t).unwrap(), b"cni-test-tcp");
    assert_eq!(udp_roundtrip(&b, srv, &a, srv, t).unwrap(), b"cni-test-udp");
    let srv6 = "[fd99::1]:9090".parse().unwrap();
    assert_eq!(
        tcp_roundtrip(&a, srv6, &b, srv6, t).unwrap(),
        b"cni-test-tcp"
    );
    // A closed port fails within the bound instead of hanging.
    let closed = "10.99.0.2:1".parse().unwrap();
    let listen_elsewhere = "10.99.0.2:2".parse().unwrap();
    assert!(tcp_roundtrip(&b, listen_elsewhere, &a, closed, Duration::from_secs(1)).is_err());
}
