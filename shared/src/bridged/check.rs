//! CHECK: the attachment is as ADD left it.

use super::{tag_of, AttachConfig};
use crate::container::{addresses_for, check_iface};
use crate::error::{CniError, Result};
use crate::firewall::reference::{self, Leftover};
use crate::firewall::{self, macspoof};
use crate::invoke;
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::skel::{Command, Request};

fn fail(msg: String) -> CniError {
    CniError::internal(format!("CHECK: {msg}"))
}

/// The container interface exists, is a veth whose peer is a port of the bridge, carries the
/// prevResult's addresses and routes, has the configured MTU and the prevResult's MAC; the
/// firewall entries are there; IPAM CHECK passes.
pub fn check(req: &Request, cfg: &AttachConfig) -> Result<()> {
    let prev = req.require_prev_result()?;
    let ns = NetNs::open(req.require_netns()?)?;
    let cnl = Netlink::open_in(&ns)?;
    let hnl = Netlink::current()?;
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            fail(format!(
                "the prevResult has no interface {} in a sandbox",
                req.ifname
            ))
        })?;
    let link = if cfg.disable_container_interface {
        cnl.link(&req.ifname)?
            .ok_or_else(|| fail(format!("{} is missing in the container", req.ifname)))?
    } else {
        check_iface(&cnl, &req.ifname, &prev, idx, cfg.iface_opts())?
    };
    if !link.is_kind("veth") {
        return Err(fail(format!(
            "{} is a {}, not a veth",
            link.name,
            link.kind.as_deref().unwrap_or("device without kind")
        )));
    }
    let want_mac = &prev.interfaces[idx].mac;
    let have_mac = link.mac.map(|m| m.to_string()).unwrap_or_default();
    if !want_mac.is_empty() && !want_mac.eq_ignore_ascii_case(&have_mac) {
        return Err(fail(format!(
            "{} has MAC {have_mac}, the prevResult says {want_mac}",
            link.name
        )));
    }
    if let Some(mtu) = cfg.mtu.filter(|m| *m != link.mtu) {
        return Err(fail(format!(
            "{} has MTU {}, not {mtu}",
            link.name, link.mtu
        )));
    }
    let br = hnl
        .link(&cfg.bridge)?
        .filter(|l| l.is_kind("bridge"))
        .ok_or_else(|| fail(format!("bridge {} is missing", cfg.bridge)))?;
    let peer = link
        .parent
        .map(|p| hnl.link(p))
        .transpose()?
        .flatten()
        .filter(|p| p.is_kind("veth") && p.controller == Some(br.index))
        .ok_or_else(|| {
            fail(format!(
                "the host end of {} is not a port of bridge {}",
                link.name, cfg.bridge
            ))
        })?;
    let tag = tag_of(req);
    if cfg.ip_masq {
        if let Err(e) =
            firewall::masquerade(cfg.masq_backend).check(&tag, &addresses_for(&prev, idx))
        {
            // An attachment the reference bridge added before the switch to ours: its
            // masquerade entries count (the reference has no vxlan).
            if req.conf.plugin_type != "bridge" || !reference::present(Leftover::Masquerade, req) {
                return Err(e);
            }
            tracing::info!("CHECK: the reference plugin's masquerade entries stand in ({e})");
        }
    }
    if cfg.macspoofchk {
        let mac = link
            .mac
            .ok_or_else(|| fail(format!("{} has no MAC", link.name)))?;
        macspoof::check(&tag, &peer.name, mac)?;
    }
    if let Some(ipam) = req.conf.ipam_type() {
        invoke::delegate(ipam, Command::Check, req)?;
    }
    Ok(())
}
