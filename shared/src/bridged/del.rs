//! DEL (best-effort, idempotent), STATUS and GC.

use std::net::IpAddr;

use super::{tag_of, AttachConfig};
use crate::detach;
use crate::error::{code, CniError, Result};
use crate::firewall::reference::{self, Leftover};
use crate::firewall::{self, macspoof, nftexec::Nft, Backend, Tag};
use crate::invoke;
use crate::mac::Mac;
use crate::netlink::Netlink;
use crate::netns::NetNs;
use crate::skel::{Command, Request};

/// What DEL learns about the attachment before tearing it down.
#[derive(Debug, Default)]
struct Found {
    ips: Vec<IpAddr>,
    port: Option<String>,
    mac: Option<Mac>,
}

/// Addresses, host port and MAC from the prevResult (when the runtime sent one).
fn from_prev_result(req: &Request, found: &mut Found) {
    let Ok(Some(prev)) = req.prev_result() else {
        return;
    };
    let ctr = prev
        .interfaces
        .iter()
        .position(|i| i.name == req.ifname && !i.sandbox.is_empty());
    // The container interface's addresses (a chain may have put others' before ours), and
    // those naming no interface; all of them when the interface is not listed.
    found.ips.extend(
        prev.ips
            .iter()
            .filter(|i| ctr.is_none() || i.interface.is_none() || i.interface == ctr)
            .map(|i| i.address.ip()),
    );
    if let Some(c) = ctr {
        found.mac = prev.interfaces[c].mac.parse().ok();
        // The bridge plugin's shape: [bridge, host veth, container].
        if c >= 1 && prev.interfaces[c - 1].sandbox.is_empty() {
            found.port = Some(prev.interfaces[c - 1].name.clone());
        }
    }
}

/// The container interface, with what it tells about the attachment (addresses, MAC, host
/// end): the container namespace and the link's index. `None` when the namespace or the
/// interface is gone.
fn find_interface(req: &Request, hnl: &Netlink, found: &mut Found) -> Result<Option<(NetNs, u32)>> {
    let Some(path) = req.netns.as_deref() else {
        return Ok(None);
    };
    let Some(ns) = NetNs::open_if_exists(path)? else {
        return Ok(None);
    };
    let cnl = Netlink::open_in(&ns)?;
    let Some(link) = cnl.link(&req.ifname)? else {
        return Ok(None);
    };
    let link_local =
        |ip: &IpAddr| matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    found.ips.extend(
        cnl.addresses(Some(link.index), None)?
            .iter()
            .map(|a| a.net.ip())
            .filter(|ip| !link_local(ip)),
    );
    found.mac = link.mac.or(found.mac);
    if let Some(peer) = link.parent.filter(|_| link.is_kind("veth")) {
        if let Some(host) = hnl.link(peer)?.filter(|l| l.is_kind("veth")) {
            found.port = Some(host.name);
        }
    }
    Ok(Some((ns, link.index)))
}

/// Tear the attachment down: firewall entries, container interface (veth pair), IPAM. Keeps
/// going after a failure and returns the first; already gone is success. The bridge stays.
pub fn del(req: &Request, cfg: &AttachConfig) -> Result<()> {
    let hnl = Netlink::current()?;
    let tag = tag_of(req);
    let mut found = Found::default();
    from_prev_result(req, &mut found);
    let mut first: Option<CniError> = None;
    let mut note = |r: Result<()>, what: &str| match r {
        // A backend that is not usable now could not have made rules to remove either.
        Err(e) if e.code == code::NOT_AVAILABLE => tracing::warn!("DEL: {what}: {e}"),
        Err(e) => {
            tracing::warn!("DEL: {what}: {e}");
            first.get_or_insert(e);
        }
        Ok(()) => {}
    };
    let iface = match find_interface(req, &hnl, &mut found) {
        Ok(i) => i,
        Err(e) => {
            note(Err(e), "looking at the container interface");
            None
        }
    };
    // Firewall before IPAM: an address must not be handed out again while a rule still names it.
    if cfg.ip_masq {
        // In both backends, whichever the config names: the entries may be from before a
        // change of `ipMasqBackend` (or, without it, from before nftables was installed).
        let masq = firewall::masquerade(Backend::Auto);
        note(masq.del(&tag, &found.ips), "removing masquerade");
        // An attachment the reference bridge added before the switch to ours (the reference
        // has no vxlan).
        if req.conf.plugin_type == "bridge" {
            note(
                reference::remove(Leftover::Masquerade, req).map(drop),
                "removing the reference plugin's masquerade entries",
            );
        }
    }
    if cfg.macspoofchk {
        let hint = found.port.as_deref().map(|p| (p, found.mac));
        note(macspoof::del(&tag, hint), "removing macspoofchk entries");
        if req.conf.plugin_type == "bridge" {
            note(
                reference::remove_macspoof(req).map(drop),
                "removing the reference plugin's macspoofchk entries",
            );
        }
    }
    // IPAM DEL (a process, or our host-local in-process) runs on a second thread meanwhile.
    // The veth's deletion returns once the kernel has removed it; its final wait is a child's
    // (`detach`).
    let (deleted, released) = std::thread::scope(|s| {
        let span = tracing::Span::current();
        let ipam = req
            .conf
            .ipam_type()
            .map(|t| s.spawn(move || span.in_scope(|| invoke::delegate(t, Command::Del, req))));
        // Deleting one end deletes the pair.
        let deleted = iface.map(|(ns, index)| detach::delete_link(&ns, index).map(drop));
        let released = ipam.map(|j| {
            j.join()
                .unwrap_or_else(|_| Err(CniError::internal("the IPAM DEL thread panicked")))
        });
        (deleted, released)
    });
    if let Some(r) = deleted {
        note(r, "deleting the interface");
    }
    if let Some(r) = released {
        note(r, "IPAM DEL");
    }
    first.map_or(Ok(()), Err)
}

/// STATUS: IPAM's STATUS, and the firewall backends in use are usable (code 50 otherwise).
pub fn status(req: &Request, cfg: &AttachConfig) -> Result<()> {
    if cfg.ip_masq {
        firewall::masquerade(cfg.masq_backend).status()?;
    }
    if cfg.macspoofchk {
        Nft::ready("macspoofchk")?;
    }
    if let Some(ipam) = req.conf.ipam_type() {
        invoke::delegate(ipam, Command::Status, req)?;
    }
    Ok(())
}

/// GC: remove firewall entries of this network whose attachment is not in the valid list,
/// then IPAM's GC.
pub fn gc(req: &Request, cfg: &AttachConfig) -> Result<()> {
    let network = &req.conf.name;
    let keep = Tag::valid_set(req)?;
    let mut first: Option<CniError> = None;
    if cfg.ip_masq {
        // In both backends, as DEL: entries may predate a change of `ipMasqBackend`.
        if let Err(e) = firewall::masquerade(Backend::Auto).gc(network, &keep) {
            first.get_or_insert(e);
        }
        if req.conf.plugin_type == "bridge" {
            if let Err(e) = reference::gc(Leftover::Masquerade, req) {
                first.get_or_insert(e);
            }
        }
    }
    if cfg.macspoofchk {
        if let Err(e) = macspoof::gc(network, &keep) {
            first.get_or_insert(e);
        }
    }
    if let Some(ipam) = req.conf.ipam_type() {
        if let Err(e) = invoke::delegate(ipam, Command::Gc, req) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
