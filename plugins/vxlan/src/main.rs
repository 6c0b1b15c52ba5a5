//! vxlan: containers on different hosts on one L2 segment over a VXLAN tunnel, like Docker's
//! overlay driver. Each host has one VXLAN device per network (`vxlan<vni>`) on a bridge; each
//! container gets a veth on that bridge. The container side is `cni_shared::bridged` (shared
//! with the bridge plugin); this crate adds the device and its flood list. See README.md.

mod config;
mod vxlan;

use cni_shared::bridged;
use cni_shared::netlink::Netlink;
use cni_shared::skel::{self, About, Plugin, Request};
use cni_shared::spec::CniResult;
use cni_shared::{CniError, Result};

use config::Config;
use vxlan::Resolved;

const ABOUT: About = About {
    name: "vxlan",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() {
    // host-local runs in-process when the one in CNI_PATH is the same build.
    cni_shared::invoke::set_builtin(&host_local::BUILTIN);
    skel::run(&Vxlan, ABOUT)
}

struct Vxlan;

/// The config with its host-dependent defaults resolved, and a host socket.
fn resolved(req: &Request) -> Result<(Config, Resolved, Netlink)> {
    let mut cfg = config::load(req)?;
    let nl = Netlink::current()?;
    let r = vxlan::resolve(&nl, &cfg)?;
    cfg.attach.mtu = Some(r.mtu);
    Ok((cfg, r, nl))
}

impl Plugin for Vxlan {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let (cfg, r, nl) = resolved(req)?;
        let made = vxlan::ensure(&nl, &cfg, &r)?;
        bridged::add(req, &cfg.attach).inspect_err(|_| made.undo(&nl, &cfg))
    }

    /// The container's veth and IPAM; the shared device and bridge stay.
    fn del(&self, req: &Request) -> Result<()> {
        bridged::del(req, &config::load(req)?.attach)
    }

    fn check(&self, req: &Request) -> Result<()> {
        let (cfg, r, nl) = resolved(req)?;
        vxlan::check(&nl, &cfg, &r)?;
        bridged::check(req, &cfg.attach)
    }

    /// The underlay (and local address) are there; IPAM and the firewall backend are usable.
    fn status(&self, req: &Request) -> Result<()> {
        let cfg = config::load(req)?;
        let nl = Netlink::current()?;
        vxlan::resolve(&nl, &cfg).map_err(|e| CniError::not_available(e.msg))?;
        bridged::status(req, &cfg.attach)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        bridged::gc(req, &config::load(req)?.attach)
    }
}
