//! portmap: publishes container ports on the host, chained after a main plugin — `docker run
//! -p 8080:80` as a CNI meta plugin. A drop-in for the reference `portmap` with conflict
//! detection, conntrack cleanup on DEL, GC and STATUS. The entries are made by
//! `cni_shared::firewall::hostport`; see README.md for every key and the layout.

mod config;
mod localnet;

use std::net::IpAddr;

use cni_shared::firewall::hostport::{self, DelHint, Forward, HostPorts, Mapping, Published};
use cni_shared::firewall::reference::{self, Leftover};
use cni_shared::firewall::{Backend, Tag};
use cni_shared::skel::{self, About, Plugin, Request};
use cni_shared::spec::CniResult;
use cni_shared::Result;
use ipnetwork::IpNetwork;

use config::Config;

const ABOUT: About = About {
    name: "portmap",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() {
    skel::run(&PortMap, ABOUT)
}

struct PortMap;

fn tag_of(req: &Request) -> Tag {
    Tag::new(&req.conf.name, &req.container_id, &req.ifname)
}

fn driver(cfg: &Config) -> Box<dyn HostPorts> {
    hostport::driver(cfg.backend, cfg.opts.clone())
}

/// The container's addresses on CNI_IFNAME, the first of each family (like the reference: an
/// address on another or a host-side interface is skipped; one without an interface index is
/// taken).
pub fn container_addrs(prev: &CniResult, ifname: &str) -> Vec<IpNetwork> {
    let mut out: Vec<IpNetwork> = Vec::new();
    for ip in &prev.ips {
        let on_ours = ip.interface.is_none_or(|i| {
            prev.interfaces
                .get(i)
                .is_none_or(|itf| itf.name == ifname && !itf.sandbox.is_empty())
        });
        if on_ours && !out.iter().any(|a| a.is_ipv6() == ip.address.is_ipv6()) {
            out.push(ip.address);
        }
    }
    out
}

/// The mappings per container address; hostIPs of the other family are skipped.
pub fn forwards(addrs: &[IpNetwork], mappings: &[Mapping]) -> Vec<Forward> {
    addrs
        .iter()
        .map(|a| Forward {
            container: *a,
            mappings: mappings
                .iter()
                .filter_map(|m| m.for_family(a.is_ipv6()))
                .collect(),
        })
        .filter(|f| !f.mappings.is_empty())
        .collect()
}

/// During a removal: the conntrack entries NATed through the removed mappings go (failures
/// are reported, not fatal: the entries expire on their own).
fn flush_conntrack(removed: &[Published]) {
    match hostport::flush_conntrack_del(removed) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "deleted conntrack entries of removed mappings"),
        Err(e) => tracing::warn!("deleting conntrack entries: {e}"),
    }
}

impl Plugin for PortMap {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let cfg = config::load(req)?;
        let prev = req.require_prev_result()?;
        let mappings = cfg.mappings.clone().unwrap_or_default();
        let fwds = forwards(&container_addrs(&prev, &req.ifname), &mappings);
        if fwds.is_empty() {
            return Ok(prev);
        }
        if cfg.opts.snat {
            for f in fwds.iter().filter(|f| !f.v6()) {
                localnet::enable(&prev, f.container.ip())?;
            }
        }
        driver(&cfg).add(&tag_of(req), &fwds)?;
        // New flows must meet the new entries: failures here are reported, not fatal.
        match hostport::flush_conntrack_add(&fwds) {
            Ok(0) => {}
            Ok(n) => tracing::info!(entries = n, "deleted stale conntrack entries"),
            Err(e) => tracing::warn!("deleting stale conntrack entries: {e}"),
        }
        Ok(prev)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let cfg = config::load_for_del(req);
        // A prevResult that does not decode must not keep DEL from cleaning up.
        let addrs: Vec<IpAddr> = match req.prev_result() {
            Ok(Some(prev)) => container_addrs(&prev, &req.ifname)
                .iter()
                .map(IpNetwork::ip)
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!("{e}");
                Vec::new()
            }
        };
        let hint = DelHint {
            mappings: cfg.mappings.as_deref(),
            addrs: &addrs,
        };
        // In both backends, whichever the config names: the entries may be from before a change
        // of `backend` (or, without it, from before nftables was installed).
        let both = hostport::driver(Backend::Auto, cfg.opts.clone());
        let ours = both.del(&tag_of(req), &hint, &mut flush_conntrack);
        // An attachment the reference plugin added before the switch to ours: its DNAT chain or
        // rules would keep forwarding the host ports to this container's address.
        let theirs = reference::remove(Leftover::HostPorts, req);
        ours?;
        theirs?;
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let cfg = config::load(req)?;
        let prev = req.require_prev_result()?;
        let mappings = cfg.mappings.clone().unwrap_or_default();
        let fwds = forwards(&container_addrs(&prev, &req.ifname), &mappings);
        if fwds.is_empty() {
            return Ok(());
        }
        driver(&cfg).check(&tag_of(req), &fwds).or_else(|e| {
            // An attachment the reference added before the switch to ours: its entries count.
            if !reference::present(Leftover::HostPorts, req) {
                return Err(e);
            }
            tracing::info!("CHECK: the reference plugin's DNAT entries stand in ({e})");
            Ok(())
        })
    }

    fn status(&self, req: &Request) -> Result<()> {
        driver(&config::load(req)?).status()
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let cfg = config::load(req)?;
        let network = &req.conf.name;
        let keep = Tag::valid_set(req)?;
        // In both backends, as DEL: entries may predate a change of `backend`.
        let both = hostport::driver(Backend::Auto, cfg.opts.clone());
        let ours = both.gc(network, &keep, &mut flush_conntrack);
        let theirs = reference::gc(Leftover::HostPorts, req);
        ours?;
        theirs?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::spec::{Interface, IpConfig};

    #[test]
    fn picks_the_sandbox_addresses() {
        let itf = |name: &str, sandbox: &str| Interface {
            name: name.into(),
            sandbox: sandbox.into(),
            ..Interface::default()
        };
        let ip = |a: &str, i: Option<usize>| IpConfig {
            interface: i,
            ..IpConfig::new(a.parse().unwrap(), None)
        };
        let prev = CniResult {
            interfaces: vec![itf("cni0", ""), itf("veth1", ""), itf("eth0", "/ns")],
            ips: vec![
                ip("10.0.0.1/24", Some(0)),
                ip("10.22.0.5/16", Some(2)),
                ip("10.22.0.6/16", Some(2)),
                ip("fd00::5/64", None),
            ],
            ..CniResult::default()
        };
        let got = container_addrs(&prev, "eth0");
        assert_eq!(
            got,
            vec![
                "10.22.0.5/16".parse::<IpNetwork>().unwrap(),
                "fd00::5/64".parse().unwrap()
            ]
        );
        assert_eq!(container_addrs(&prev, "eth1").len(), 1, "only the v6 one");
        let maps = [Mapping {
            host_ip: Some("192.0.2.1".parse().unwrap()),
            host_port: 1,
            container_port: 1,
            proto: hostport::Proto::Tcp,
        }];
        let f = forwards(&got, &maps);
        assert_eq!(f.len(), 1, "the v4 hostIP is skipped for the v6 address");
        assert!(!f[0].v6());
    }
}
