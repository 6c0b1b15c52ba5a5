//! Attaching a container to a Linux bridge: the core of the `bridge` plugin, shared with `vxlan`
//! (which bridges its VXLAN device to the same kind of per-container veth).
//!
//! A plugin fills an [`AttachConfig`] from its own keys and hands each verb to [`add`], [`del`],
//! [`check`], [`status`] and [`gc`]. ADD, in order:
//!
//! 1. refuse an existing `CNI_IFNAME` in the container; [`ensure_bridge`] (create when missing,
//!    up, VLAN filtering when asked, promiscuous when asked);
//! 2. a veth pair, the container end born in the container namespace as `CNI_IFNAME`, the host
//!    end `veth` + 8 hex digits attached to the bridge and up; port flags (hairpin, isolated);
//!    port VLANs;
//! 3. IPAM ADD — for host-local and static on a second thread while step 2 runs (both take
//!    milliseconds; dhcp needs the interface first, so it runs after); the gateway of each family
//!    on the bridge (or on `<bridge>.<vlan>`), forwarding on; the container's addresses and
//!    routes (`container::configure_iface`);
//! 4. masquerade (`firewall::Masquerade`) and the MAC spoof check, each one transaction;
//! 5. the result: interfaces `[bridge, host veth, container]`, every IP on interface 2.
//!
//! Every step after the veth is undone if a later one fails ([`crate::rollback::Rollback`]):
//! IPAM DEL, firewall entries, the veth. The bridge and gateway addresses stay (shared).
//!
//! # Races
//!
//! Concurrent ADDs that all find the bridge missing all try to create it; the losers get EEXIST
//! and use the winner's bridge. Gateway addresses are added with "already present is fine".
//! Firewall changes are transactions keyed by the attachment. So no lock is needed on this path.
//!
//! # For vxlan
//!
//! Call [`ensure_bridge`], create the VXLAN device and attach it to the bridge, then [`add`] with
//! the same config: `add` finds the bridge and reuses it. DEL, CHECK, STATUS and GC are the same.

mod add;
mod check;
mod del;
mod keys;

use crate::container::IfaceOpts;
use crate::error::{CniError, Result};
use crate::firewall::{Backend, Tag};
use crate::mac::Mac;
use crate::netlink::{BridgeOpts, BridgeVlan, Link, Netlink};
use crate::skel::Request;
use crate::sysctl;

pub use add::add;
pub use check::check;
pub use del::{del, gc, status};
pub use keys::{mtu, AttachKeys};

/// How to attach containers to the bridge (the plugin's config after defaults and validation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachConfig {
    /// The bridge's name (validated as a link name).
    pub bridge: String,
    /// MTU of a newly created bridge and of each veth; `None` keeps the kernel's default.
    pub mtu: Option<u32>,
    /// Put each family's gateway on the bridge and enable forwarding.
    pub is_gateway: bool,
    /// Also add a default route per family in the container (unless IPAM returned one).
    pub is_default_gateway: bool,
    /// Replace another address in the gateway's subnet on the bridge instead of failing.
    pub force_address: bool,
    pub ip_masq: bool,
    pub masq_backend: Backend,
    pub hairpin: bool,
    pub promisc: bool,
    /// Access VLAN of the container port (pvid, untagged).
    pub vlan: Option<u16>,
    /// Tagged VLANs of the container port.
    pub vlan_trunk: Vec<BridgeVlan>,
    pub preserve_default_vlan: bool,
    /// Run IPv6 duplicate address detection in the container.
    pub enable_dad: bool,
    pub macspoofchk: bool,
    /// No IPv6 link-local address on the container interface when IPAM gives it no IPv6 address.
    pub no_ipv6_link_local: bool,
    /// Leave the container interface down and unaddressed.
    pub disable_container_interface: bool,
    /// Isolated bridge port: no traffic to other isolated ports (containers).
    pub port_isolation: bool,
    /// The container interface's MAC.
    pub mac: Option<Mac>,
}

impl AttachConfig {
    /// Whether the bridge needs VLAN filtering.
    pub fn uses_vlans(&self) -> bool {
        self.vlan.is_some() || !self.vlan_trunk.is_empty()
    }

    /// The config key to blame for VLAN trouble.
    fn vlan_key(&self) -> &'static str {
        if self.vlan.is_some() {
            "vlan"
        } else {
            "vlanTrunk"
        }
    }

    /// How ADD configures the container interface, and what CHECK verifies of it.
    pub fn iface_opts(&self) -> IfaceOpts {
        IfaceOpts {
            enable_dad: self.enable_dad,
            notify_neighbours: false,
            no_ipv6_link_local: self.no_ipv6_link_local,
        }
    }

    /// The interface that carries the gateway: the bridge, or `<bridge>.<vlan>`.
    pub fn gateway_link_name(&self) -> String {
        match self.vlan {
            Some(v) => format!("{}.{v}", self.bridge),
            None => self.bridge.clone(),
        }
    }
}

/// The container interface's MAC as the runtime asks for it: `runtimeConfig.mac` (capability
/// `mac`), else `args.cni.mac`, else CNI_ARGS `MAC=`; code 7 naming the source when malformed.
pub fn container_mac(req: &Request) -> Result<Option<Mac>> {
    if let Some(m) = req.conf.runtime_config_field::<String>("mac")? {
        return Mac::parse("runtimeConfig.mac", &m).map(Some);
    }
    if let Some(m) = req.conf.args_cni_field::<String>("mac")? {
        return Mac::parse("args.cni.mac", &m).map(Some);
    }
    match req.cni_args()?.get("MAC") {
        Some(m) if !m.is_empty() => Mac::parse("CNI_ARGS MAC", m).map(Some),
        _ => Ok(None),
    }
}

/// The attachment's firewall tag.
pub fn tag_of(req: &Request) -> Tag {
    Tag::new(&req.conf.name, &req.container_id, &req.ifname)
}

/// Whether a kernel error means "this kernel has no bridge VLAN filtering" (EOPNOTSUPP).
fn is_unsupported(e: &CniError) -> bool {
    e.msg.contains("(os error 95)")
}

fn vlan_unsupported(cfg: &AttachConfig, e: &CniError) -> CniError {
    CniError::invalid_config(format!(
        "{}: this kernel lacks bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING), so VLANs \
         cannot be used on bridge {}: {}",
        cfg.vlan_key(),
        cfg.bridge,
        e.msg
    ))
}

/// The bridge, created when missing and brought up. Code 7 naming `bridge` when a link of that
/// name is not a bridge; code 7 naming `vlan`/`vlanTrunk` when VLANs are asked for on a kernel
/// without bridge VLAN filtering.
pub fn ensure_bridge(nl: &Netlink, cfg: &AttachConfig) -> Result<Link> {
    ensure_bridge_created(nl, cfg).map(|(br, _)| br)
}

/// [`ensure_bridge`], also telling whether this call created the bridge (a failed ADD then
/// removes it again, so bad input leaves the host as it was).
pub fn ensure_bridge_created(nl: &Netlink, cfg: &AttachConfig) -> Result<(Link, bool)> {
    let opts = BridgeOpts {
        mtu: cfg.mtu,
        // A MAC of its own: otherwise the kernel gives the bridge its lowest port's MAC, which
        // changes as containers come and go (stale gateway entries in the containers' ARP
        // caches) and costs a walk over every port on every port added or removed.
        mac: Some(Mac::random_local()?),
        vlan_filtering: cfg.uses_vlans().then_some(true),
        up: true,
    };
    let existing = nl.link(&cfg.bridge)?;
    let mut created = false;
    let mut br = match existing {
        Some(l) => l,
        None => match nl.create_bridge(&cfg.bridge, &opts) {
            Ok(l) => {
                created = true;
                l
            }
            Err(e) if cfg.uses_vlans() && is_unsupported(&e) => {
                return Err(vlan_unsupported(cfg, &e))
            }
            // Lost a race with a concurrent ADD: use the bridge it made.
            Err(e) => nl.link(&cfg.bridge)?.ok_or(e)?,
        },
    };
    let configured = configure_bridge(nl, cfg, &mut br);
    match configured {
        Ok(()) => Ok((br, created)),
        Err(e) => {
            if created {
                let _ = nl.delete_link(br.index);
            }
            Err(e)
        }
    }
}

/// Kind check, no IPv6 router advertisements, VLAN filtering, up, promiscuous mode.
fn configure_bridge(nl: &Netlink, cfg: &AttachConfig, br: &mut Link) -> Result<()> {
    if !br.is_kind("bridge") {
        return Err(CniError::invalid_config(format!(
            "bridge: link {} already exists and is not a bridge (kind {})",
            cfg.bridge,
            br.kind.as_deref().unwrap_or("none")
        )));
    }
    // The plugin owns the bridge's routes: a container must not be able to give the host an
    // address or a default route on it by sending a router advertisement (the kernel heeds
    // them while the bridge does not forward IPv6). Checked on every ADD as the reference
    // does, but read from the link we have (netlink), so that only a change costs a write.
    // A failed write (a read-only /proc/sys) is only logged, as the reference ignores it.
    if br.ipv6_accept_ra.is_some_and(|v| v != 0) {
        match sysctl::set(&["net", "ipv6", "conf", &cfg.bridge, "accept_ra"], "0") {
            Ok(_) => br.ipv6_accept_ra = Some(0),
            Err(e) => tracing::warn!(bridge = cfg.bridge, "accept_ra stays on: {e}"),
        }
    }
    if cfg.uses_vlans() && !br.bridge.is_some_and(|b| b.vlan_filtering) {
        nl.set_vlan_filtering(br.index, true).map_err(|e| {
            if is_unsupported(&e) {
                vlan_unsupported(cfg, &e)
            } else {
                e
            }
        })?;
    }
    if !br.up {
        nl.set_up(br.index)?;
        br.up = true;
    }
    if cfg.promisc {
        nl.set_promisc(br.index, true)?;
    }
    Ok(())
}

/// Rollback of a failed ADD that created the bridge: remove it unless some port joined it since
/// (a concurrent ADD of another container).
pub(crate) fn delete_bridge_if_unused(nl: &Netlink, index: u32) -> Result<()> {
    if nl.links()?.iter().any(|l| l.controller == Some(index)) {
        return Ok(());
    }
    nl.delete_link(index).map(drop)
}
