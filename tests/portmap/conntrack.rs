//! Conntrack: a UDP flow that outlives its mapping must not keep going to the old container
//! (the reference's issue #1190), and a flow that started before a mapping existed must reach
//! the new container.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cni_shared::skel::Command;
use cni_tests::testkit::Sandbox;
use serde_json::json;

use super::{sa, Env, EXT_HOST4};

/// A UDP echo server in a sandbox: answers every datagram on its port with its name until
/// dropped. It stops when told, not after an idle time: an ADD under a loaded test run can take
/// longer than any idle time would allow between the bind and the first datagram (that made
/// `dnat_maps_without_counters_still_work_and_flush` fail once in CI: the server had given up
/// before the client's first try).
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    /// Bind `port` in `sb` (before the container has an address: 0.0.0.0) and serve.
    fn start(sb: &Sandbox, port: u16, name: &'static str) -> Echo {
        let sock = sb
            .netns()
            .run(|| UdpSocket::bind(("0.0.0.0", port)))
            .unwrap()
            .unwrap();
        // How often the thread looks at `stop`: bounds the wait in `drop`.
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !seen.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(name.as_bytes(), from);
                }
            }
        });
        Echo {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Who answers a datagram from `client` to `dst` (a few tries); `None`: nobody.
fn who(client: &UdpSocket, dst: SocketAddr) -> Option<String> {
    for _ in 0..4 {
        client.send_to(b"hi", dst).ok()?;
        let mut buf = [0u8; 64];
        if let Ok((n, _)) = client.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// A UDP client in the outside namespace on 192.0.2.2:`port`, reads bounded by `wait`.
fn client(env: &Env, port: u16, wait: Duration) -> UdpSocket {
    let c = env
        .ext
        .netns()
        .run(|| UdpSocket::bind(("192.0.2.2", port)))
        .unwrap()
        .unwrap();
    c.set_read_timeout(Some(wait)).unwrap();
    c
}

fn entries(env: &Env, port: u16) -> String {
    let out = env.host.exec(
        "conntrack",
        &["-L", "-p", "udp", "--orig-port-dst", &port.to_string()],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn conntrack_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-ct-{}", &backend[..3]), backend, n);
    let (c1, c2) = (Sandbox::new("pm-ct-c1"), Sandbox::new("pm-ct-c2"));
    let client = client(&env, 40000, Duration::from_millis(400));
    let dst = sa(EXT_HOST4, 8053);

    // Connection tracking runs in the host, as it does on any host with a stateful firewall.
    let out = env.host.exec(
        "nft",
        &[
            "add table ip pmtest; add chain ip pmtest in { type filter hook input priority 0; }; \
           add rule ip pmtest in ct state new counter",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // A flow that starts before any mapping: the host answers "port unreachable", conntrack
    // keeps an un-NATed entry for as long as the client keeps sending.
    assert_eq!(who(&client, dst), None);
    assert!(
        entries(&env, 8053).contains("dport=8053"),
        "{}",
        entries(&env, 8053)
    );

    let maps = json!([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]);
    let _s1 = Echo::start(&c1, 53, "c1");
    let r1 = env.attach("c1", &c1, maps.clone()).unwrap();
    assert_eq!(
        who(&client, dst).as_deref(),
        Some("c1"),
        "ADD flushed the stale entry"
    );
    assert!(entries(&env, 8053).contains(&format!("src=10.80.{n}.")));
    // The DNAT element (nftables) or rule (iptables) counts what it NATed: DEL walks the
    // connection table for it (and skips the walk for one that NATed nothing).
    let counted = |env: &Env| {
        if backend == "nftables" {
            let dnat = dnat4(env);
            (
                dnat.contains("counter packets") && !dnat.contains("counter packets 0 "),
                dnat,
            )
        } else {
            let out = env.host.exec("iptables", &["-t", "nat", "-S", "-v"]);
            let rules = String::from_utf8_lossy(&out.stdout).into_owned();
            let dnat = rules
                .lines()
                .find(|l| l.starts_with("-A CNI-HP-") && l.contains("-j DNAT"))
                .unwrap_or_default()
                .to_string();
            (dnat.contains(" -c ") && !dnat.contains(" -c 0 "), rules)
        }
    };
    let (used, listing) = counted(&env);
    assert!(used, "{listing}");
    // A re-ADD of the same mapping keeps the count, so that the DEL below still flushes the
    // flow.
    let again = env.pm_conf(Some(maps.clone()), Some(&r1), json!({}));
    env.call("portmap", Command::Add, &again, "c1", Some(c1.path()))
        .unwrap();
    let (used, listing) = counted(&env);
    assert!(used, "a re-ADD kept the count: {listing}");
    assert_eq!(who(&client, dst).as_deref(), Some("c1"));

    env.detach("c1", Some(&c1), maps.clone(), &r1);
    assert!(
        !entries(&env, 8053).contains("dport=8053"),
        "DEL flushed the flow's entry: {}",
        entries(&env, 8053)
    );
    let _s2 = Echo::start(&c2, 53, "c2");
    let r2 = env.attach("c2", &c2, maps.clone()).unwrap();
    assert_eq!(
        who(&client, dst).as_deref(),
        Some("c2"),
        "the same flow reaches the new container"
    );
    env.detach("c2", Some(&c2), maps, &r2);
}

/// `nft list map inet cni_hostport dnat4`.
fn dnat4(env: &Env) -> String {
    let out = env
        .host
        .exec("nft", &["list", "map", "inet", "cni_hostport", "dnat4"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn conntrack_nftables() {
    conntrack_with("nftables", 5);
}

#[test]
fn conntrack_iptables() {
    conntrack_with("iptables", 6);
}

/// Leave the state of a DEL or GC killed before its conntrack flush. iptables (DEL and GC) and
/// nftables GC: the DNAT gone, the entries that name the attachment still there (the claim, or
/// its chain). nftables DEL: the IPv4 entries all gone (one transaction precedes its flush),
/// the IPv6 ones still there (the family whose elements a kill may not have reached).
fn cut_short(env: &Env, id: &str, ip: &str, verb: Command) {
    let script = if env.backend == "nftables" {
        let claim = if verb == Command::Del {
            " && nft delete element inet cni_hostport claims4 '{ udp . 8053 }'"
        } else {
            ""
        };
        format!(
            "nft delete element inet cni_hostport dnat4 '{{ udp . 8053 }}' && \
             nft delete element inet cni_hostport hairpin4 '{{ {ip} }}'{claim}"
        )
    } else {
        let save = String::from_utf8_lossy(&env.host.exec("iptables-save", &["-t", "nat"]).stdout)
            .into_owned();
        let jump = save
            .lines()
            .find(|l| l.starts_with("-A CNI-HOSTPORT-DNAT") && l.contains(&format!("/{id}/")))
            .unwrap_or_else(|| panic!("no entry of {id}: {save}"))
            .replacen("-A ", "-D ", 1);
        format!("iptables -t nat {jump}")
    };
    let out = env.host.exec("sh", &["-c", &script]);
    assert!(out.status.success(), "{script}: {out:?}");
}

/// A DEL or GC killed after removing the DNAT but before the conntrack flush: the retried DEL
/// (with the runtime's mappings but no prevResult, as after a killed ADD), or a GC, still
/// flushes the flow's entry and removes the rest (before, the retry found nothing and the
/// entry kept the flow going to the old address; found by the kill storm).
fn cut_short_with(backend: &'static str, n: u8) {
    let env = Env::new(&format!("pm-cs-{}", &backend[..3]), backend, n);
    let c1 = Sandbox::new("pm-cs-c1");
    let maps = json!([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]);
    let dst = sa(EXT_HOST4, 8053);
    let client = client(&env, 40001, Duration::from_millis(200));
    for verb in [Command::Del, Command::Gc] {
        let r = env.attach("c1", &c1, maps.clone()).unwrap();
        let ip = r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .split('/')
            .next()
            .unwrap();
        let _ = who(&client, dst);
        assert!(
            entries(&env, 8053).contains(&format!("src={ip} ")),
            "{}",
            entries(&env, 8053)
        );
        cut_short(&env, "c1", ip, verb);
        let mut c = env.pm_conf(Some(maps.clone()), None, json!({}));
        if verb == Command::Gc {
            c["cni.dev/valid-attachments"] = json!([]);
            c.as_object_mut().unwrap().remove("runtimeConfig");
        }
        env.call("portmap", verb, &c, "c1", Some(c1.path()))
            .unwrap();
        assert!(
            !entries(&env, 8053).contains(&format!("src={ip} ")),
            "{}: the entry NATed to {ip} stays: {}",
            verb.as_str(),
            entries(&env, 8053)
        );
        assert!(!env.rules().contains("cni:pmnet/"), "{}", env.rules());
        env.call("bridge", Command::Del, &env.bridge, "c1", Some(c1.path()))
            .unwrap();
    }
}

#[test]
fn a_del_cut_short_still_flushes_nftables() {
    cut_short_with("nftables", 7);
}

#[test]
fn a_del_cut_short_still_flushes_iptables() {
    cut_short_with("iptables", 8);
}

/// A host whose table was made by an earlier version, with DNAT maps without element counters
/// (a map cannot be redefined with them): ADD sets up what is missing the old way, and DEL,
/// which cannot tell whether such an element NATed anything, flushes.
#[test]
fn dnat_maps_without_counters_still_work_and_flush() {
    let env = Env::new("pm-old", "nftables", 9);
    let c1 = Sandbox::new("pm-old-c1");
    let old = "add table inet cni_hostport; \
               add map inet cni_hostport dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }";
    let out = env.host.exec("nft", &[old]);
    assert!(out.status.success(), "{out:?}");
    let client = client(&env, 40002, Duration::from_millis(400));
    let maps = json!([{"hostPort": 8053, "containerPort": 53, "protocol": "udp"}]);
    let _s1 = Echo::start(&c1, 53, "c1");
    let r1 = env.attach("c1", &c1, maps.clone()).unwrap();
    assert!(env.rules().contains("map dnat6"), "{}", env.rules());
    assert!(!env.rules().contains("counter"), "{}", env.rules());
    assert_eq!(who(&client, sa(EXT_HOST4, 8053)).as_deref(), Some("c1"));
    assert!(entries(&env, 8053).contains("dport=8053"));
    env.detach("c1", Some(&c1), maps, &r1);
    assert!(
        !entries(&env, 8053).contains("dport=8053"),
        "DEL flushed: {}",
        entries(&env, 8053)
    );
}
