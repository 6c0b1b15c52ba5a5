//! loopback: brings `lo` up in the container (ADD), checks it (CHECK), takes it down best-effort
//! (DEL). Runtimes call it for every container; CNI_IFNAME is ignored, as in the reference.

use cni_shared::netlink::Netlink;
use cni_shared::netns::NetNs;
use cni_shared::skel::{self, About, Plugin, Request};
use cni_shared::spec::{CniResult, Interface, IpConfig};
use cni_shared::{CniError, Result};

const LO: &str = "lo";

const ABOUT: About = About {
    name: "loopback",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() {
    skel::run(&Loopback, ABOUT)
}

struct Loopback;

impl Plugin for Loopback {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let ns = NetNs::open(req.require_netns()?)?;
        let nl = Netlink::open_in(&ns)?;
        let lo = nl
            .link(LO)?
            .ok_or_else(|| CniError::internal("the container namespace has no lo interface"))?;
        nl.set_up(&lo)?;
        // A chained loopback passes the previous result through, as the reference does.
        if let Some(prev) = req.prev_result()? {
            return Ok(prev);
        }
        let mut result = CniResult {
            interfaces: vec![Interface {
                name: LO.into(),
                mac: "00:00:00:00:00:00".into(),
                sandbox: ns.path().display().to_string(),
                ..Interface::default()
            }],
            ..CniResult::default()
        };
        // The first address of each family, all of which must be loopback addresses.
        let addrs = nl.addresses(Some(lo.index), None)?;
        if let Some(bad) = addrs.iter().find(|a| !a.net.ip().is_loopback()) {
            return Err(CniError::internal(format!(
                "lo carries a non-loopback address {}",
                bad.net
            )));
        }
        for v4 in [true, false] {
            if let Some(a) = addrs.iter().find(|a| a.net.is_ipv4() == v4) {
                let mut ip = IpConfig::new(a.net, None);
                ip.interface = Some(0);
                result.ips.push(ip);
            }
        }
        Ok(result)
    }

    fn del(&self, req: &Request) -> Result<()> {
        let Some(path) = req.netns.as_deref() else {
            return Ok(());
        };
        let Some(ns) = NetNs::open_if_exists(path)? else {
            return Ok(());
        };
        let nl = Netlink::open_in(&ns)?;
        if let Some(lo) = nl.link(LO)? {
            // Best effort: the namespace is usually about to be destroyed anyway.
            if let Err(e) = nl.set_down(&lo) {
                tracing::warn!("taking lo down: {e}");
            }
        }
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let ns = NetNs::open(req.require_netns()?)?;
        let nl = Netlink::open_in(&ns)?;
        match nl.link(LO)? {
            Some(lo) if lo.up => Ok(()),
            Some(_) => Err(CniError::internal("lo is down in the container")),
            None => Err(CniError::internal(
                "the container namespace has no lo interface",
            )),
        }
    }

    fn status(&self, _req: &Request) -> Result<()> {
        // Needs nothing but the kernel's loopback device.
        Ok(())
    }

    fn gc(&self, _req: &Request) -> Result<()> {
        // Keeps no state outside the container's namespace.
        Ok(())
    }
}
