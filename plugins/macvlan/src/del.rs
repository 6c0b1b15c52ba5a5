//! DEL and GC. DEL is best-effort and idempotent: it goes on after a failure, and a missing
//! namespace, link or lease is success. It needs neither the master nor a valid `mtu`, so a
//! network whose master has gone can still be torn down.

use cni_shared::netlink::{attachment_temp_name, Link, Netlink};
use cni_shared::netns::NetNs;
use cni_shared::skel::{Command, Request};
use cni_shared::{detach, invoke};
use cni_shared::{CniError, Result};

use crate::add::user;
use crate::config::Teardown;
use crate::vlan;

/// Keep the first error, log the others.
fn note(first: &mut Option<CniError>, r: Result<()>) {
    if let Err(e) = r {
        tracing::warn!("DEL: {e}");
        first.get_or_insert(e);
    }
}

pub fn del(req: &Request) -> Result<()> {
    let conf = Teardown::load(req)?;
    let mut first = None;
    note(&mut first, delete_link(req, &conf));
    if let Some(ipam) = &conf.ipam {
        note(&mut first, invoke::delegate(ipam, Command::Del, req));
    }
    if !conf.link_in_container && conf.data_dir.is_dir() {
        note(
            &mut first,
            Netlink::current().and_then(|nl| vlan::release_host(&nl, &conf.data_dir, &user(req))),
        );
    }
    first.map_or(Ok(()), Err)
}

/// Delete the macvlan an ADD killed before its rename left under the attachment's temporary
/// name (see [`attachment_temp_name`]); the deleted link, if there was one.
pub fn delete_temp_link(cnl: &Netlink, tmp: &str) -> Result<Option<Link>> {
    match cnl.link(tmp)? {
        Some(l) if l.is_kind("macvlan") => {
            tracing::info!(link = tmp, "removing the macvlan of an interrupted ADD");
            cnl.delete_link(l.index)?;
            Ok(Some(l))
        }
        _ => Ok(None),
    }
}

/// Delete CNI_IFNAME in the container when it is a macvlan, and a leftover under the
/// attachment's temporary name; with `linkInContainer`, then the vlan sub-interface they sat on
/// when that is ours and unused.
fn delete_link(req: &Request, conf: &Teardown) -> Result<()> {
    let Some(path) = req.netns.as_deref() else {
        return Ok(());
    };
    let Some(ns) = NetNs::open_if_exists(path)? else {
        return Ok(());
    };
    let cnl = Netlink::open_in(&ns)?;
    let tmp = attachment_temp_name(&req.container_id, &req.ifname);
    let mut deleted: Vec<Link> = delete_temp_link(&cnl, &tmp)?.into_iter().collect();
    match cnl.link(req.ifname.as_str())? {
        None => {}
        Some(link) if !link.is_kind("macvlan") => tracing::warn!(
            "DEL: {} in the container is a {}, not a macvlan: left alone",
            req.ifname,
            link.kind.as_deref().unwrap_or("device")
        ),
        Some(link) => {
            // Returns once the link is gone; the kernel's final wait is a child's.
            detach::delete_link(&ns, link.index)?;
            deleted.push(link);
        }
    }
    if !conf.link_in_container {
        return Ok(());
    }
    let mut parents: Vec<u32> = deleted
        .iter()
        .filter(|l| l.link_netnsid.is_none())
        .filter_map(|l| l.parent)
        .collect();
    parents.dedup();
    for parent in parents {
        vlan::release_in_ns(&cnl, parent)?;
    }
    Ok(())
}

/// GC: the IPAM's, and the vlan records of attachments that are no longer valid.
pub fn gc(req: &Request) -> Result<()> {
    let conf = Teardown::load(req)?;
    let valid = req.gc_valid_attachments()?;
    let mut first = None;
    if let Some(ipam) = &conf.ipam {
        note(&mut first, invoke::delegate(ipam, Command::Gc, req));
    }
    if conf.data_dir.is_dir() {
        note(
            &mut first,
            Netlink::current()
                .and_then(|nl| vlan::gc_host(&nl, &conf.data_dir, &req.conf.name, &valid)),
        );
    }
    first.map_or(Ok(()), Err)
}
