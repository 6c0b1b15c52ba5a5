//! The demo's sections, one per example network.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use cni_shared::testkit::{ping, tcp_roundtrip, Sandbox};

use crate::world::{built, Net};

pub enum Outcome {
    Done(String),
    Skipped(String),
}

type Section = fn() -> Result<Outcome>;

pub const ALL: [(&str, Section); 3] = [
    (
        "bridge (+ portmap): two containers on cni0, NAT, a published port",
        bridge,
    ),
    ("macvlan: two containers directly on a LAN", macvlan),
    ("vxlan: two hosts, one overlay", vxlan),
];

const T: Duration = Duration::from_secs(10);

fn show(name: &str, addrs: &[std::net::IpAddr]) {
    let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    println!("   {name:<10} {}", list.join("  "));
}

fn talk(from: &Sandbox, from_name: &str, to: std::net::IpAddr, to_name: &str) -> Result<()> {
    ensure!(
        ping(from, to, T),
        "{from_name} cannot reach {to_name} ({to})"
    );
    println!("   {from_name} -> {to_name} ({to}): ping ok");
    Ok(())
}

fn teardown(net: &Net, ctrs: &[&Sandbox]) -> Result<()> {
    for c in ctrs {
        net.check(c)?;
    }
    println!("   CHECK ok for {} containers", ctrs.len());
    for c in ctrs {
        net.del(c)?;
    }
    let left = net.leftovers();
    if !left.is_empty() {
        bail!("left after DEL: {}", left.join(", "));
    }
    println!("   DEL ok; nothing left (leases, cache entries, host veths)");
    Ok(())
}

fn bridge() -> Result<Outcome> {
    if !built("bridge") {
        return Ok(Outcome::Skipped(
            "the bridge plugin is not built yet".into(),
        ));
    }
    let with_portmap = built("portmap");
    let (file, name) = if with_portmap {
        ("40-bridge-portmap.conflist", "bridge-portmap-net")
    } else {
        ("10-bridge.conflist", "bridge-net")
    };
    let net = Net::new(file, name, Sandbox::new("demo-br"))?;
    // An "outside" host next to the sandbox host, with no route back to the containers: only
    // masquerade lets them reach it.
    let ext = Sandbox::new("demo-br-ext");
    net.host.link_to("ext0", &ext, "ext1");
    net.host
        .ip(&["addr", "add", "203.0.113.1/24", "dev", "ext0"]);
    ext.ip(&["addr", "add", "203.0.113.2/24", "dev", "ext1"]);
    let c1 = Sandbox::new("demo-br-c1");
    let c2 = Sandbox::new("demo-br-c2");
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
    let env: &[(&str, &str)] = if with_portmap {
        &[("CAP_ARGS", caps)]
    } else {
        &[]
    };
    let a1 = net.add(&c1, env)?;
    let a2 = net.add(&c2, &[])?;
    show("c1", &a1);
    show("c2", &a2);
    let (Some(&ip1), Some(&ip2)) = (a1.first(), a2.first()) else {
        bail!("no address in the results");
    };
    talk(&c1, "c1", ip2, "c2")?;
    talk(&c2, "c2", ip1, "c1")?;
    let gw = "10.22.0.1".parse()?;
    talk(&c1, "c1", gw, "gateway")?;
    talk(&c1, "c1", "203.0.113.2".parse()?, "outside host (NAT)")?;
    let mut line = format!("c1 {ip1} and c2 {ip2} talk through cni0 and reach outside via NAT");
    if with_portmap {
        // The outside host fetches from the host's published port 8080, served by c1 on 80.
        let published = std::net::SocketAddr::new("203.0.113.1".parse()?, 8080);
        let got = tcp_roundtrip(&c1, std::net::SocketAddr::new(ip1, 80), &ext, published, T)
            .map_err(|e| anyhow::anyhow!("published port: {e}"))?;
        println!(
            "   outside host -> {published} (published) -> c1:80: {:?}",
            String::from_utf8_lossy(&got)
        );
        line.push_str("; host port 8080 reaches c1:80");
    } else {
        println!("   portmap: not built yet, no published port");
    }
    teardown(&net, &[&c1, &c2])?;
    Ok(Outcome::Done(line))
}

fn macvlan() -> Result<Outcome> {
    if !built("macvlan") {
        return Ok(Outcome::Skipped(
            "the macvlan plugin is not built yet".into(),
        ));
    }
    let net = Net::new("30-macvlan.conflist", "lan-net", Sandbox::new("demo-mv"))?;
    // The host's NIC eth0 is a veth to a "LAN" namespace holding 192.168.100.1.
    let lan = Sandbox::new("demo-mv-lan");
    net.host.link_to("eth0", &lan, "lan0");
    lan.ip(&["addr", "add", "192.168.100.1/24", "dev", "lan0"]);
    let c1 = Sandbox::new("demo-mv-c1");
    let c2 = Sandbox::new("demo-mv-c2");
    let a1 = net.add(&c1, &[])?;
    let a2 = net.add(&c2, &[])?;
    show("c1", &a1);
    show("c2", &a2);
    let (Some(&ip1), Some(&ip2)) = (a1.first(), a2.first()) else {
        bail!("no address in the results");
    };
    talk(&c1, "c1", "192.168.100.1".parse()?, "LAN host")?;
    talk(&lan, "LAN host", ip2, "c2")?;
    talk(&c1, "c1", ip2, "c2")?;
    teardown(&net, &[&c1, &c2])?;
    Ok(Outcome::Done(format!(
        "c1 {ip1} and c2 {ip2} sit on the LAN with the LAN host"
    )))
}

fn vxlan() -> Result<Outcome> {
    if !built("vxlan") {
        return Ok(Outcome::Skipped("the vxlan plugin is not built yet".into()));
    }
    // Two sandbox "hosts" whose eth0 are joined by a veth: the underlay, 192.0.2.0/24.
    let h1 = Net::new(
        "50-vxlan-host1.conflist",
        "overlay",
        Sandbox::new("demo-vx1"),
    )?;
    let h2 = Net::new(
        "51-vxlan-host2.conflist",
        "overlay",
        Sandbox::new("demo-vx2"),
    )?;
    h1.host.link_to("eth0", &h2.host, "eth0");
    h1.host.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    h2.host.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
    let c1 = Sandbox::new("demo-vx1-c");
    let c2 = Sandbox::new("demo-vx2-c");
    let a1 = h1.add(&c1, &[])?;
    let a2 = h2.add(&c2, &[])?;
    show("host1/c", &a1);
    show("host2/c", &a2);
    let (Some(&ip1), Some(&ip2)) = (a1.first(), a2.first()) else {
        bail!("no address in the results");
    };
    talk(&c1, "host1/c", ip2, "host2/c")?;
    talk(&c2, "host2/c", ip1, "host1/c")?;
    // The tunnel never fragments: a full-size packet with DF set crosses.
    let mtu = c1.ip(&["-o", "link", "show", "eth0"]);
    let mtu: u32 = mtu
        .split_whitespace()
        .skip_while(|w| *w != "mtu")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(1450);
    let size = (mtu - 28).to_string();
    let ok = c1
        .exec(
            "ping",
            &[
                "-c",
                "1",
                "-W",
                "2",
                "-M",
                "do",
                "-s",
                &size,
                &ip2.to_string(),
            ],
        )
        .status
        .success();
    ensure!(
        ok,
        "a {mtu}-byte packet with DF set did not cross the overlay"
    );
    println!("   container MTU {mtu}: a full-size packet with DF set crosses unfragmented");
    teardown(&h1, &[&c1])?;
    teardown(&h2, &[&c2])?;
    Ok(Outcome::Done(format!(
        "{ip1} on host1 and {ip2} on host2 share one L2 segment over VNI 42"
    )))
}
