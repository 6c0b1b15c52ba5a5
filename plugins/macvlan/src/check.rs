//! CHECK (the attachment is as ADD left it) and STATUS (the plugin can serve ADDs).

use cni_shared::container::check_iface;
use cni_shared::invoke;
use cni_shared::netlink::{Link, Netlink};
use cni_shared::netns::NetNs;
use cni_shared::skel::{Command, Request};
use cni_shared::{CniError, Result};

use crate::config::{vlan_link_name, Conf};
use crate::master;

fn fail(msg: String) -> CniError {
    CniError::internal(format!("CHECK: {msg}"))
}

pub fn check(req: &Request) -> Result<()> {
    let conf = Conf::load(req)?;
    let prev = req.require_prev_result()?;
    if let Some(ipam) = &conf.ipam {
        invoke::delegate(ipam, Command::Check, req)?;
    }
    let netns = req.require_netns()?;
    let sandbox = netns.display().to_string();
    let idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && i.sandbox == sandbox)
        .ok_or_else(|| {
            fail(format!(
                "prevResult has no interface {} with sandbox {sandbox}",
                req.ifname
            ))
        })?;
    let ns = NetNs::open(netns)?;
    let cnl = Netlink::open_in(&ns)?;
    let hnl_own;
    let mnl: &Netlink = if conf.link_in_container {
        &cnl
    } else {
        hnl_own = Netlink::current()?;
        &hnl_own
    };
    let master = master::resolve(mnl, &conf)?;
    let parent = expected_parent(mnl, &conf, &master)?;

    let link = cnl
        .link(req.ifname.as_str())?
        .ok_or_else(|| fail(format!("{} is missing in the container", req.ifname)))?;
    if !link.is_kind("macvlan") {
        return Err(fail(format!(
            "{} is a {}, not a macvlan",
            req.ifname,
            link.kind.as_deref().unwrap_or("device")
        )));
    }
    if link.macvlan_mode != Some(conf.mode) {
        return Err(fail(format!(
            "{} is in macvlan mode {:?}, the configuration says {:?}",
            req.ifname, link.macvlan_mode, conf.mode
        )));
    }
    // A master in another namespace shows as a parent index with a link-netnsid.
    let same_ns = link.link_netnsid.is_none();
    if link.parent != Some(parent.index) || same_ns != conf.link_in_container {
        return Err(fail(format!(
            "{} does not sit on {} in the {} namespace",
            req.ifname,
            parent.name,
            master::place(&conf)
        )));
    }
    let want_mac = &prev.interfaces[idx].mac;
    let have_mac = link.mac.map(|m| m.to_string()).unwrap_or_default();
    if !want_mac.is_empty() && !want_mac.eq_ignore_ascii_case(&have_mac) {
        return Err(fail(format!(
            "{} has MAC {have_mac}, prevResult says {want_mac}",
            req.ifname
        )));
    }
    if let Some(m) = conf.mtu {
        if link.mtu != m {
            return Err(fail(format!(
                "{} has MTU {}, the configuration says {m}",
                req.ifname, link.mtu
            )));
        }
    }
    check_iface(&cnl, &req.ifname, &prev, idx, conf.iface_opts())?;
    Ok(())
}

/// The link the macvlan should sit on: the master, or its vlan sub-interface.
fn expected_parent(nl: &Netlink, conf: &Conf, master: &Link) -> Result<Link> {
    let Some(id) = conf.vlan else {
        return Ok(master.clone());
    };
    let name = vlan_link_name(&master.name, id)?;
    nl.link(name.as_str())?
        .ok_or_else(|| fail(format!("the vlan sub-interface {name} is missing")))
}

/// STATUS: a named master exists in the host namespace (a master in the container cannot be
/// looked at without one), and the IPAM is ready.
pub fn status(req: &Request) -> Result<()> {
    let conf = Conf::load(req)?;
    if let (Some(name), false) = (&conf.master, conf.link_in_container) {
        if Netlink::current()?.link(name.as_str())?.is_none() {
            return Err(CniError::not_available(format!(
                "master: interface {name:?} does not exist in the host namespace"
            )));
        }
    }
    if let Some(ipam) = &conf.ipam {
        invoke::delegate(ipam, Command::Status, req)?;
    }
    Ok(())
}
