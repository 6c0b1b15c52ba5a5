//! The network's shared VXLAN device: the defaults that depend on the host (underlay, local
//! address, MTU), creating or verifying `vxlan<vni>` on the bridge under a lock, and the flood
//! list (all-zero FDB entries, one per remote VTEP).

use std::net::IpAddr;
use std::path::PathBuf;

use cni_shared::bridged;
use cni_shared::lock::{FileLock, DEFAULT_LOCK_TIMEOUT};
use cni_shared::mac::Mac;
use cni_shared::netlink::{Family, Link, Netlink, VxlanOpts};
use cni_shared::{CniError, Result};

use crate::config::{Config, Flood};

/// Where the per-VNI lock files live.
pub const LOCK_DIR: &str = "/run/cni";

/// The lock serialising the ADDs that set up one VNI: `/run/cni/vxlan-<vni>.lock`.
pub fn lock_path(vni: u32) -> PathBuf {
    PathBuf::from(LOCK_DIR).join(format!("vxlan-{vni}.lock"))
}

/// Outer Ethernet, IP, UDP and VXLAN headers: what the tunnel adds to each frame's IP packet.
pub fn overhead(local: &IpAddr) -> u32 {
    if local.is_ipv4() {
        50
    } else {
        70
    }
}

/// The host-dependent settings, resolved.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub underlay: Link,
    pub local: IpAddr,
    /// MTU of the VXLAN device, the bridge and every veth.
    pub mtu: u32,
}

fn bad(msg: String) -> CniError {
    CniError::invalid_config(msg)
}

fn families(cfg: &Config) -> Vec<Family> {
    match cfg.family() {
        Some(f) => vec![f],
        None => vec![Family::V4, Family::V6],
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// `underlay`, or the interface of the host's default route (of the underlay family when the
/// config implies one). Code 7 naming `underlay` when there is none.
fn underlay(nl: &Netlink, cfg: &Config) -> Result<Link> {
    if let Some(name) = &cfg.underlay {
        return nl.link(name.as_str())?.ok_or_else(|| {
            bad(format!(
                "underlay: interface {name:?} does not exist in the host namespace"
            ))
        });
    }
    for f in families(cfg) {
        if let Some(index) = nl.default_route_link(f)? {
            let link = nl.link(index)?.ok_or_else(|| {
                CniError::internal(format!(
                    "underlay: the default route's interface #{index} vanished"
                ))
            })?;
            tracing::debug!(underlay = %link.name, "underlay from the default route");
            return Ok(link);
        }
    }
    Err(bad(
        "underlay: not set, and the host has no default route to take it from".to_string(),
    ))
}

/// `local` (which must be an address of this host), or the underlay's first address of the
/// underlay family.
fn local(nl: &Netlink, cfg: &Config, underlay: &Link) -> Result<IpAddr> {
    if let Some(ip) = cfg.local {
        let here = nl.addresses(None, Some(Family::of(&ip)))?;
        if here.iter().any(|a| a.net.ip() == ip) {
            return Ok(ip);
        }
        return Err(bad(format!("local: {ip} is not an address of this host")));
    }
    let link_local =
        |ip: &IpAddr| matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    let fams = families(cfg);
    for &f in &fams {
        let found = nl
            .addresses(Some(underlay.index), Some(f))?
            .into_iter()
            .find(|a| !a.dadfailed && !link_local(&a.net.ip()));
        if let Some(a) = found {
            return Ok(a.net.ip());
        }
    }
    let which = match fams.as_slice() {
        [f] => family_name(*f),
        _ => "IPv4 or IPv6",
    };
    Err(bad(format!(
        "local: not set, and underlay {} has no {which} address to take it from",
        underlay.name
    )))
}

/// Underlay, local address and MTU. Code 7 naming the key when one cannot be had, or when
/// `mtu` would make the tunnel fragment.
pub fn resolve(nl: &Netlink, cfg: &Config) -> Result<Resolved> {
    let underlay = underlay(nl, cfg)?;
    let local = local(nl, cfg, &underlay)?;
    let oh = overhead(&local);
    let max = underlay.mtu.saturating_sub(oh);
    if max < 68 {
        return Err(bad(format!(
            "underlay: {} has MTU {}, too small to carry VXLAN ({oh} bytes of headers)",
            underlay.name, underlay.mtu
        )));
    }
    let mtu = match cfg.mtu {
        Some(m) if m > max => {
            return Err(bad(format!(
                "mtu: {m} is larger than underlay {}'s MTU {} minus the VXLAN overhead of \
                 {oh} ({max}): the tunnel would fragment",
                underlay.name, underlay.mtu
            )))
        }
        Some(m) => m,
        None => max,
    };
    Ok(Resolved {
        underlay,
        local,
        mtu,
    })
}

fn opts(cfg: &Config, r: &Resolved) -> VxlanOpts {
    VxlanOpts {
        vni: cfg.vni,
        port: Some(cfg.port),
        local: Some(r.local),
        dev: Some(r.underlay.index),
        group: match cfg.flood {
            Flood::Group(g) => Some(g),
            Flood::Peers(_) => None,
        },
        learning: cfg.learning,
        mtu: Some(r.mtu),
        mac: None,
        up: true,
    }
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

/// The first setting of an existing device that differs from the config, as
/// `"<key>: existing <dev> has ..."`.
fn mismatch(cfg: &Config, r: &Resolved, dev: &Link, bridge: &Link) -> Option<String> {
    let name = &dev.name;
    let Some(v) = dev.vxlan.filter(|_| dev.is_kind("vxlan")) else {
        return Some(format!(
            "vni: link {name} already exists and is not a vxlan (kind {})",
            dev.kind.as_deref().unwrap_or("none")
        ));
    };
    let want = opts(cfg, r);
    let local = v.local.map(IpAddr::V4).or(v.local6.map(IpAddr::V6));
    let group = v.group.map(IpAddr::V4).or(v.group6.map(IpAddr::V6));
    let on_off = |b: bool| if b { "on" } else { "off" };
    let msg = if v.vni != cfg.vni {
        format!("vni: existing {name} has VNI {}", v.vni)
    } else if v.port != cfg.port {
        format!(
            "port: existing {name} uses UDP port {}, not {}",
            v.port, cfg.port
        )
    } else if local != want.local {
        format!(
            "local: existing {name} has local address {}, not {}",
            show(local),
            r.local
        )
    } else if v.dev != want.dev {
        format!(
            "underlay: existing {name} is on interface {}, not {} (#{})",
            show(v.dev.map(|i| format!("#{i}"))),
            r.underlay.name,
            r.underlay.index
        )
    } else if group != want.group {
        format!(
            "group: existing {name} has multicast group {}, not {}",
            show(group),
            show(want.group)
        )
    } else if v.learning != cfg.learning {
        format!(
            "learning: existing {name} has learning {}, not {}",
            on_off(v.learning),
            on_off(cfg.learning)
        )
    } else if dev.mtu != r.mtu {
        format!("mtu: existing {name} has MTU {}, not {}", dev.mtu, r.mtu)
    } else if dev.controller.is_some_and(|c| c != bridge.index) {
        format!(
            "bridge: existing {name} is a port of another link (#{}), not of {}",
            show(dev.controller),
            bridge.name
        )
    } else {
        return None;
    };
    Some(msg)
}

/// The remote VTEPs that get a flood entry: the peers, less this host's own address (so every
/// host can share one config listing all of them).
pub fn remote_peers(cfg: &Config, r: &Resolved) -> Vec<IpAddr> {
    cfg.peers()
        .iter()
        .copied()
        .filter(|p| *p != r.local)
        .collect()
}

/// The destinations of the device's all-zero (flood) entries.
fn flood_entries(nl: &Netlink, index: u32) -> Result<Vec<IpAddr>> {
    Ok(nl
        .fdb(index)?
        .into_iter()
        .filter(|e| e.mac.is_zero() && !e.master)
        .filter_map(|e| e.dst)
        .collect())
}

/// Make the flood entries exactly `want`: new ones first, then the stale ones go, so flooding
/// never stops while the list changes.
fn reconcile_flood(nl: &Netlink, dev: &Link, want: &[IpAddr]) -> Result<()> {
    let have = flood_entries(nl, dev.index)?;
    for p in want.iter().filter(|p| !have.contains(p)) {
        nl.append_fdb(dev.index, Mac::ZERO, *p)?;
        tracing::info!(dev = dev.name, peer = %p, "flood entry added");
    }
    for h in have.iter().filter(|h| !want.contains(h)) {
        nl.delete_fdb(dev.index, Mac::ZERO, Some(*h))?;
        tracing::info!(dev = dev.name, peer = %h, "stale flood entry removed");
    }
    Ok(())
}

/// The bridge and `vxlan<vni>` on it, up, with exactly the configured flood entries; created
/// when missing. Under the VNI's lock, so concurrent ADDs of a new network all succeed. An
/// existing device with other settings is code 7 naming the key.
pub fn ensure(nl: &Netlink, cfg: &Config, r: &Resolved) -> Result<Ensured> {
    let _lock = lock(cfg)?;
    let (br, bridge_created) = bridged::ensure_bridge_created(nl, &cfg.attach)?;
    let mut made = Ensured {
        bridge: bridge_created.then_some(br.index),
        device: None,
    };
    match ensure_device(nl, cfg, r, &br, &mut made) {
        Ok(()) => Ok(made),
        Err(e) => {
            made.undo_locked(nl);
            Err(e)
        }
    }
}

/// What an ADD created on the host (a bridge, a device), to remove again if the ADD fails.
#[derive(Debug, Default)]
pub struct Ensured {
    bridge: Option<u32>,
    device: Option<u32>,
}

impl Ensured {
    /// The ADD failed after [`ensure`]: remove what it created, unless a container joined the
    /// bridge since (a concurrent ADD).
    pub fn undo(&self, nl: &Netlink, cfg: &Config) {
        if self.bridge.is_none() && self.device.is_none() {
            return;
        }
        match lock(cfg) {
            Ok(_lock) => self.undo_locked(nl),
            Err(e) => tracing::warn!("not removing the devices of a failed ADD: {e}"),
        }
    }

    fn undo_locked(&self, nl: &Netlink) {
        if let Some(br) = self.bridge {
            let ports = nl.links().map(|links| {
                links
                    .iter()
                    .filter(|l| l.controller == Some(br) && Some(l.index) != self.device)
                    .count()
            });
            if ports.ok() != Some(0) {
                return;
            }
        }
        for index in [self.device, self.bridge].into_iter().flatten() {
            if let Err(e) = nl.delete_link(index) {
                tracing::warn!("removing link {index} made by a failed ADD: {e}");
            }
        }
    }
}

fn lock(cfg: &Config) -> Result<FileLock> {
    std::fs::create_dir_all(LOCK_DIR)
        .map_err(|e| CniError::io(format!("creating {LOCK_DIR}: {e}")))?;
    FileLock::exclusive(&lock_path(cfg.vni), DEFAULT_LOCK_TIMEOUT)
}

fn ensure_device(
    nl: &Netlink,
    cfg: &Config,
    r: &Resolved,
    br: &Link,
    made: &mut Ensured,
) -> Result<()> {
    let name = cfg.device();
    let mut dev = match nl.link(name.as_str())? {
        Some(l) => l,
        None => {
            let l = nl.create_vxlan(&name, &opts(cfg, r)).map_err(|e| {
                // The name is free, so another device holds this VNI on this port and address.
                if e.msg.contains("(os error 17)") {
                    bad(format!(
                        "vni: another VXLAN device already uses VNI {} on port {} ({})",
                        cfg.vni, cfg.port, e.msg
                    ))
                } else {
                    e
                }
            })?;
            tracing::info!(dev = name, vni = cfg.vni, local = %r.local,
                underlay = r.underlay.name, "vxlan device created");
            made.device = Some(l.index);
            l
        }
    };
    if let Some(m) = mismatch(cfg, r, &dev, br) {
        return Err(bad(m));
    }
    if dev.controller != Some(br.index) {
        nl.set_controller(dev.index, Some(br.index))?;
        dev.controller = Some(br.index);
    }
    if !dev.up {
        nl.set_up(dev.index)?;
        dev.up = true;
    }
    if let Flood::Peers(_) = cfg.flood {
        reconcile_flood(nl, &dev, &remote_peers(cfg, r))?;
    }
    Ok(())
}

fn fail(msg: String) -> CniError {
    CniError::internal(format!("CHECK: {msg}"))
}

/// CHECK of the host side: the device exists with the config's settings, is up, is a port of
/// the bridge, and its flood entries are exactly the remote peers.
pub fn check(nl: &Netlink, cfg: &Config, r: &Resolved) -> Result<()> {
    let name = cfg.device();
    let br = nl
        .link(cfg.attach.bridge.as_str())?
        .ok_or_else(|| fail(format!("bridge: {} is missing", cfg.attach.bridge)))?;
    let dev = nl
        .link(name.as_str())?
        .ok_or_else(|| fail(format!("vni: {name} is missing")))?;
    if let Some(m) = mismatch(cfg, r, &dev, &br) {
        return Err(fail(m));
    }
    if dev.controller != Some(br.index) {
        return Err(fail(format!("bridge: {name} is not a port of {}", br.name)));
    }
    if !dev.up {
        return Err(fail(format!("{name} is down")));
    }
    if let Flood::Peers(_) = cfg.flood {
        let want = remote_peers(cfg, r);
        let have = flood_entries(nl, dev.index)?;
        if let Some(p) = want.iter().find(|p| !have.contains(p)) {
            return Err(fail(format!("peers: {name} has no flood entry for {p}")));
        }
        if let Some(h) = have.iter().find(|h| !want.contains(h)) {
            return Err(fail(format!(
                "peers: {name} floods to {h}, which is not a configured peer"
            )));
        }
    }
    Ok(())
}
