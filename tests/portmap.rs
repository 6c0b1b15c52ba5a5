//! portmap chained after bridge, as real processes: each test makes its own sandbox host, an
//! "ext" namespace behind a veth that plays an outside client, and container sandboxes. Real
//! TCP and UDP round trips through the mappings, with both backends.
//!
//! Test helpers may panic: that is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cni_shared::skel::Command;
use cni_shared::CniError;
use cni_tests::testkit::{tcp_roundtrip, udp_roundtrip, Call, Sandbox, TempDir};
use serde_json::{json, Value};

#[path = "portmap/conntrack.rs"]
mod conntrack;
#[path = "portmap/lifecycle.rs"]
mod lifecycle;
#[path = "portmap/switch.rs"]
mod switch;
#[path = "portmap/traffic.rs"]
mod traffic;

pub const WAIT: Duration = Duration::from_secs(5);
/// For connections that must fail: long enough for a SYN retry, short enough to keep tests fast.
pub const SHORT: Duration = Duration::from_millis(1500);
pub const EXT_HOST4: &str = "192.0.2.1";
pub const EXT_HOST6: &str = "2001:db8:70::1";

/// A sandbox host with a bridge network and an outside client.
pub struct Env {
    pub host: Sandbox,
    pub ext: Sandbox,
    pub data: TempDir,
    pub bridge: Value,
    pub backend: &'static str,
}

impl Env {
    /// Host `label` with `to-ext` (192.0.2.1/24 and .3, 2001:db8:70::1/64) to ext (.2, ::2),
    /// and a dual-stack bridge network `pmnet` (10.80.<n>.0/24, fd80:<n>::/64).
    pub fn new(label: &str, backend: &'static str, n: u8) -> Env {
        let host = Sandbox::new(label);
        let ext = Sandbox::new(&format!("{label}-x"));
        host.link_to("to-ext", &ext, "eth0");
        host.ip(&["addr", "add", "192.0.2.1/24", "dev", "to-ext"]);
        host.ip(&["addr", "add", "192.0.2.3/24", "dev", "to-ext"]);
        host.ip(&["addr", "add", "2001:db8:70::1/64", "dev", "to-ext", "nodad"]);
        ext.ip(&["addr", "add", "192.0.2.2/24", "dev", "eth0"]);
        ext.ip(&["addr", "add", "2001:db8:70::2/64", "dev", "eth0", "nodad"]);
        let data = TempDir::new(label);
        let bridge = json!({
            "cniVersion": "1.1.0", "name": "pmnet", "type": "bridge", "bridge": format!("pm-br{n}"),
            "isGateway": true, "isDefaultGateway": true,
            // A container reaching itself through the host port: with br_netfilter loaded the
            // DNATed frame is bridged back out of the port it came in on.
            "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": data.path(), "ranges": [
                [{"subnet": format!("10.80.{n}.0/24")}], [{"subnet": format!("fd80:{n}::/64")}]
            ]}
        });
        Env {
            host,
            ext,
            data,
            bridge,
            backend,
        }
    }

    /// The portmap config: `extra` merged in, `maps` as runtimeConfig.portMappings (absent
    /// when `None`), `prev` as prevResult.
    pub fn pm_conf(&self, maps: Option<Value>, prev: Option<&Value>, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "pmnet", "type": "portmap",
                           "backend": self.backend});
        if let Some(m) = maps {
            c["runtimeConfig"] = json!({ "portMappings": m });
        }
        if let Some(p) = prev {
            c["prevResult"] = p.clone();
        }
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            c[k] = v;
        }
        c
    }

    pub fn call(
        &self,
        plugin: &str,
        cmd: Command,
        c: &Value,
        id: &str,
        netns: Option<&std::path::Path>,
    ) -> Result<Value, CniError> {
        Call::new(plugin, cmd, c.clone())
            .container(id, "eth0", netns)
            .run_in(&self.host)
            .map(|o| {
                if o.stdout.is_empty() {
                    Value::Null
                } else {
                    o.json()
                }
            })
    }

    /// bridge ADD, then portmap ADD with its result; portmap's output (== bridge's result).
    pub fn attach(&self, id: &str, ctr: &Sandbox, maps: Value) -> Result<Value, CniError> {
        self.attach_with(id, ctr, maps, json!({}))
    }

    /// [`Env::attach`] with `extra` keys in portmap's config.
    pub fn attach_with(
        &self,
        id: &str,
        ctr: &Sandbox,
        maps: Value,
        extra: Value,
    ) -> Result<Value, CniError> {
        let r = self
            .call("bridge", Command::Add, &self.bridge, id, Some(ctr.path()))
            .unwrap_or_else(|e| panic!("bridge ADD {id}: {e}"));
        let out = self.call(
            "portmap",
            Command::Add,
            &self.pm_conf(Some(maps), Some(&r), extra),
            id,
            Some(ctr.path()),
        )?;
        assert_eq!(out, r, "portmap passes the prevResult through unchanged");
        Ok(out)
    }

    /// portmap DEL (with the same runtimeConfig and prevResult), then bridge DEL.
    pub fn detach(&self, id: &str, ctr: Option<&Sandbox>, maps: Value, prev: &Value) {
        let netns = ctr.map(|c| c.path());
        self.call(
            "portmap",
            Command::Del,
            &self.pm_conf(Some(maps), Some(prev), json!({})),
            id,
            netns,
        )
        .unwrap_or_else(|e| panic!("portmap DEL {id}: {e}"));
        self.call("bridge", Command::Del, &self.bridge, id, netns)
            .unwrap_or_else(|e| panic!("bridge DEL {id}: {e}"));
    }

    /// Our entries in the host: the nft table, or the nat tables of both families.
    pub fn rules(&self) -> String {
        match self.backend {
            "nftables" => {
                let out = self
                    .host
                    .exec("nft", &["list", "table", "inet", "cni_hostport"]);
                String::from_utf8_lossy(&out.stdout).into_owned()
            }
            _ => {
                let mut s = String::new();
                for tool in ["iptables-save", "ip6tables-save"] {
                    let out = self.host.exec(tool, &["-t", "nat"]);
                    s.push_str(&String::from_utf8_lossy(&out.stdout));
                }
                s
            }
        }
    }
}

/// The address (without prefix) of `ips[i]` of a 1.x result.
pub fn ip_of(r: &Value, i: usize) -> IpAddr {
    let a = r["ips"][i]["address"].as_str().unwrap_or_default();
    a.split('/').next().unwrap().parse().unwrap()
}

pub fn sa(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// A TCP echo through a mapping: server in `server` on `listen`, client in `client` to `dst`.
pub fn tcp_ok(server: &Sandbox, listen: SocketAddr, client: &Sandbox, dst: SocketAddr) -> bool {
    match tcp_roundtrip(server, listen, client, dst, WAIT) {
        Ok(b) => b == b"cni-test-tcp",
        Err(e) => {
            eprintln!("tcp {dst}: {e}");
            false
        }
    }
}

/// A TCP connection that must not reach `server`.
pub fn tcp_fails(server: &Sandbox, listen: SocketAddr, client: &Sandbox, dst: SocketAddr) -> bool {
    tcp_roundtrip(server, listen, client, dst, SHORT).is_err()
}

pub fn udp_ok(server: &Sandbox, listen: SocketAddr, client: &Sandbox, dst: SocketAddr) -> bool {
    match udp_roundtrip(server, listen, client, dst, WAIT) {
        Ok(b) => b == b"cni-test-udp",
        Err(e) => {
            eprintln!("udp {dst}: {e}");
            false
        }
    }
}
