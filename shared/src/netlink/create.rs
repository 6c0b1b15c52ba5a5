//! Creating links: bridge, veth (peer born in another namespace), macvlan (born in the target
//! namespace), vxlan, 802.1q vlan; and the idempotent `ensure_*` twins for shared devices.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::link::{InfoData, InfoMacVlan, InfoVeth, LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{
    LinkBridge, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, LinkVxlan,
};

use super::link::{Link, LinkRef, MacvlanMode};
use super::{Netlink, NlError, NlResultExt};
use crate::error::{code, CniError, Result};
use crate::mac::{random_bytes, Mac};
use crate::netns::NetNs;

/// How to create a bridge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeOpts {
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// `None` keeps the kernel default (off).
    pub vlan_filtering: Option<bool>,
    /// Bring the bridge up.
    pub up: bool,
}

/// How to create a veth pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VethOpts {
    /// MTU of both ends.
    pub mtu: Option<u32>,
    pub host_mac: Option<Mac>,
    pub peer_mac: Option<Mac>,
    /// Attach the host end to this controller (bridge) at creation.
    pub controller: Option<u32>,
    /// Bring the host end up. (The peer cannot be brought up in the creating request: the
    /// kernel opens it before the pair is joined and veth refuses with ENOTCONN. Set it up
    /// with a socket of the peer's namespace.)
    pub host_up: bool,
}

/// How to create a macvlan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanOpts {
    /// The parent (master) device index, in the namespace of the creating socket.
    pub master: u32,
    pub mode: MacvlanMode,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    /// `IFLA_MACVLAN_BC_QUEUE_LEN` (Linux 5.11+; older kernels silently ignore it: compare
    /// [`Link::macvlan_bc_queue_len`] of the new link). `None` keeps the driver default (1000).
    pub bc_queue_len: Option<u32>,
    pub up: bool,
}

/// How to create an 802.1q vlan link (`ip link add link <parent> name <name> type vlan id <id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanOpts {
    /// The parent device index, in the namespace of the creating socket.
    pub parent: u32,
    /// VLAN ID, 1..=4094.
    pub id: u16,
    pub mtu: Option<u32>,
    pub up: bool,
}

/// How to create a vxlan device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VxlanOpts {
    pub vni: u32,
    /// UDP destination port; `None` keeps the kernel default (8472).
    pub port: Option<u16>,
    /// Source address of the encapsulated packets (v4 or v6).
    pub local: Option<IpAddr>,
    /// Underlay device index.
    pub dev: Option<u32>,
    /// Multicast group (v4 or v6) for BUM traffic.
    pub group: Option<IpAddr>,
    /// Learn remote MACs from received packets (off for a statically programmed FDB).
    pub learning: bool,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub up: bool,
}

const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

/// Up to this many random names are tried for a veth whose host name is left to us.
const VETH_NAME_TRIES: usize = 10;

/// A random host-side veth name: `veth` + 8 hex digits, like the reference plugins.
pub fn random_veth_name() -> Result<String> {
    let mut b = [0u8; 4];
    random_bytes(&mut b)?;
    Ok(format!(
        "veth{:02x}{:02x}{:02x}{:02x}",
        b[0], b[1], b[2], b[3]
    ))
}

/// The temporary name a device of the attachment `(container_id, ifname)` has between its
/// creation and its rename to CNI_IFNAME: `cni` + 12 hex digits of a hash of both. Stable, so
/// that a DEL (or a retried ADD) finds the device of an ADD killed before the rename; random
/// names left such a device in the container for ever.
pub fn attachment_temp_name(container_id: &str, ifname: &str) -> String {
    let h = crate::firewall::tag::fnv1a(format!("{container_id}/{ifname}").as_bytes());
    format!("cni{:012x}", h & 0xffff_ffff_ffff)
}

fn with_common<T>(
    mut b: LinkMessageBuilder<T>,
    mtu: Option<u32>,
    mac: Option<Mac>,
    up: bool,
) -> LinkMessageBuilder<T> {
    if let Some(mtu) = mtu {
        b = b.mtu(mtu);
    }
    if let Some(mac) = mac {
        b = b.address(mac.0.to_vec());
    }
    if up {
        b = b.up();
    }
    b
}

/// One TX and one RX queue, said in the request. A veth end uses one of each either way: without
/// the attributes the kernel allocates one per possible CPU, then, the device registered, trims
/// the used count to one, and the TX trim waits for an expedited RCU grace period under the RTNL
/// lock (once per end: 0.1–0.25 ms each here, longer on a busy host). What the attributes
/// change beyond that: `ethtool -L` cannot raise the channel count of our veths later.
fn one_queue<T>(b: LinkMessageBuilder<T>) -> LinkMessageBuilder<T> {
    b.append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
}

impl Netlink {
    fn newlink(&self, m: LinkMessage) -> std::result::Result<(), NlError> {
        self.request(RouteNetlinkMessage::NewLink(m), CREATE)
            .map(drop)
    }

    /// Look up a link that was just created.
    fn created(&self, name: &str, what: &str) -> Result<Link> {
        self.link(name)?.ok_or_else(|| {
            CniError::internal(format!("{what} {name} vanished right after creation"))
        })
    }

    /// `ip link add <name> type bridge ...`. EEXIST is an error; see [`Netlink::ensure_bridge`].
    pub fn create_bridge(&self, name: &str, o: &BridgeOpts) -> Result<Link> {
        let mut b = with_common(
            LinkMessageBuilder::<LinkBridge>::new(name),
            o.mtu,
            o.mac,
            o.up,
        );
        // Off is the default: only ask for on, so kernels without VLAN filtering support
        // (CONFIG_BRIDGE_VLAN_FILTERING unset: EOPNOTSUPP) can still make plain bridges.
        if o.vlan_filtering == Some(true) {
            b = b.vlan_filtering(true);
        }
        self.newlink(b.build())
            .or_nl(|| format!("creating bridge {name}"))?;
        self.created(name, "bridge")
    }

    /// The bridge `name`, created when missing. An existing bridge is reused: it is brought up
    /// when `o.up` and its VLAN filtering set when `o.vlan_filtering` asks for a change; its MTU
    /// and address are left alone. A non-bridge link of that name is an error.
    pub fn ensure_bridge(&self, name: &str, o: &BridgeOpts) -> Result<Link> {
        let mut l = match self.link(name)? {
            Some(l) => l,
            None => match self.create_bridge(name, o) {
                Ok(l) => return Ok(l),
                // Lost a race with another plugin instance: use theirs.
                Err(e) => self.link(name)?.ok_or(e)?,
            },
        };
        if !l.is_kind("bridge") {
            return Err(CniError::internal(format!(
                "link {name} already exists and is not a bridge (kind {})",
                l.kind.as_deref().unwrap_or("none")
            )));
        }
        if let Some(v) = o.vlan_filtering {
            if l.bridge.map(|b| b.vlan_filtering) != Some(v) {
                self.set_vlan_filtering(l.index, v)?;
                l.bridge = Some(super::BridgeInfo { vlan_filtering: v });
            }
        }
        if o.up && !l.up {
            self.set_up(l.index)?;
            l.up = true;
        }
        Ok(l)
    }

    /// A veth pair: the host end here, the peer created directly inside `peer_ns` (never
    /// created here and moved). `host_name: None` picks a random free `vethXXXXXXXX` name.
    /// Returns the host end; its `parent` is the peer's index inside `peer_ns`.
    pub fn create_veth(
        &self,
        host_name: Option<&str>,
        peer_name: &str,
        peer_ns: &NetNs,
        o: &VethOpts,
    ) -> Result<Link> {
        let tries = if host_name.is_some() {
            1
        } else {
            VETH_NAME_TRIES
        };
        for _ in 0..tries {
            let name = match host_name {
                Some(n) => n.to_string(),
                None => random_veth_name()?,
            };
            let peer = one_queue(with_common(
                LinkUnspec::new_with_name(peer_name),
                o.mtu,
                o.peer_mac,
                false,
            ))
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .build();
            let mut b = one_queue(with_common(
                LinkVeth::new(&name, peer_name),
                o.mtu,
                o.host_mac,
                o.host_up,
            ))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
            if let Some(c) = o.controller {
                b = b.controller(c);
            }
            let what = || format!("creating veth {name} (peer {peer_name})");
            match self.newlink(b.build()) {
                Ok(()) => return self.created(&name, "veth"),
                Err(e) if e.is_exists() => {
                    let host_taken = self.link(name.as_str())?.is_some();
                    if host_taken && host_name.is_none() {
                        continue;
                    }
                    let culprit = if host_taken {
                        format!("{name} already exists")
                    } else {
                        format!("{peer_name} already exists in {}", peer_ns.path().display())
                    };
                    return Err(CniError::internal(format!("{}: {e}: {culprit}", what())));
                }
                Err(e) => {
                    return Err(match o.controller {
                        Some(c) if e.errno() == Some(libc::EXFULL) => {
                            self.controller_full(c, &what(), &e)
                        }
                        _ => e.cni(what()),
                    })
                }
            }
        }
        Err(CniError::internal(format!(
            "creating veth (peer {peer_name}): no free random host name after {VETH_NAME_TRIES} tries"
        )))
    }

    /// EXFULL from attaching a new link to `controller`: a Linux bridge numbers its ports in
    /// 10 bits (`BR_MAX_PORTS`), so it takes at most 1023; the kernel says only "Exchange
    /// full". Names the bridge and the limit.
    fn controller_full(&self, controller: u32, what: &str, e: &NlError) -> CniError {
        let name = self
            .link(controller)
            .ok()
            .flatten()
            .map_or_else(|| format!("with index {controller}"), |l| l.name);
        CniError::internal(format!(
            "{what}: {e}: bridge {name} has no free port (a Linux bridge takes at most 1023 \
             ports): attach the further containers to another bridge"
        ))
    }

    /// A macvlan on `o.master`, created directly inside `netns` (or here when `None`). Look
    /// the new link up with a socket of that namespace.
    pub fn create_macvlan(&self, name: &str, o: &MacvlanOpts, netns: Option<&NetNs>) -> Result<()> {
        let mut b = with_common(
            LinkMacVlan::new(name, o.master, o.mode.to_nl()),
            o.mtu,
            o.mac,
            o.up,
        );
        if let Some(n) = o.bc_queue_len {
            b = b.append_info_data(InfoMacVlan::BcQueueLen(n));
        }
        if let Some(ns) = netns {
            b = b.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        self.newlink(b.build()).or_nl(|| {
            let place = netns
                .map(|ns| format!(" in {}", ns.path().display()))
                .unwrap_or_default();
            format!(
                "creating macvlan {name} on {}{place}",
                LinkRef::Index(o.master)
            )
        })
    }

    /// `ip link add link <parent> name <name> type vlan id <id>`. EEXIST is an error. A kernel
    /// without 802.1q support (no `CONFIG_VLAN_8021Q`: "Unknown device type") is code 50
    /// ([`code::NOT_AVAILABLE`]) with a message that says so; other refusals are code 999.
    pub fn create_vlan(&self, name: &str, o: &VlanOpts) -> Result<Link> {
        let b = with_common(LinkVlan::new(name, o.parent, o.id), o.mtu, None, o.up);
        let what = || {
            format!(
                "creating vlan {name} (id {}) on {}",
                o.id,
                LinkRef::Index(o.parent)
            )
        };
        match self.newlink(b.build()) {
            Ok(()) => self.created(name, "vlan"),
            Err(e) if e.errno() == Some(libc::EOPNOTSUPP) => Err(CniError::new(
                code::NOT_AVAILABLE,
                format!(
                    "{}: {e}: the kernel has no 802.1q VLAN support \
                     (CONFIG_VLAN_8021Q, module 8021q)",
                    what()
                ),
            )),
            Err(e) => Err(e.cni(what())),
        }
    }

    /// `ip link add <name> type vxlan id <vni> ...`. EEXIST is an error; see
    /// [`Netlink::ensure_vxlan`].
    pub fn create_vxlan(&self, name: &str, o: &VxlanOpts) -> Result<Link> {
        let mut b = LinkVxlan::new(name, o.vni).learning(o.learning);
        if let Some(p) = o.port {
            b = b.port(p);
        }
        match o.local {
            Some(IpAddr::V4(a)) => b = b.local(a),
            Some(IpAddr::V6(a)) => b = b.local6(a),
            None => {}
        }
        match o.group {
            Some(IpAddr::V4(a)) => b = b.group(a),
            Some(IpAddr::V6(a)) => b = b.group6(a),
            None => {}
        }
        if let Some(d) = o.dev {
            b = b.dev(d);
        }
        let b = with_common(b, o.mtu, o.mac, o.up);
        self.newlink(b.build())
            .or_nl(|| format!("creating vxlan {name} (vni {})", o.vni))?;
        self.created(name, "vxlan")
    }

    /// The vxlan `name`, created when missing. An existing link is reused when it is a vxlan
    /// with the same VNI (and port, when given), and brought up when `o.up`; anything else of
    /// that name is an error.
    pub fn ensure_vxlan(&self, name: &str, o: &VxlanOpts) -> Result<Link> {
        let mut l = match self.link(name)? {
            Some(l) => l,
            None => match self.create_vxlan(name, o) {
                Ok(l) => return Ok(l),
                Err(e) => self.link(name)?.ok_or(e)?,
            },
        };
        let matches = l
            .vxlan
            .is_some_and(|v| v.vni == o.vni && o.port.is_none_or(|p| p == v.port));
        if !matches {
            return Err(CniError::internal(format!(
                "link {name} already exists and is not a vxlan with vni {}{} ({})",
                o.vni,
                o.port.map(|p| format!(" and port {p}")).unwrap_or_default(),
                match (&l.kind, &l.vxlan) {
                    (_, Some(v)) => format!("vni {}, port {}", v.vni, v.port),
                    (k, None) => format!("kind {}", k.as_deref().unwrap_or("none")),
                }
            )));
        }
        if o.up && !l.up {
            self.set_up(l.index)?;
            l.up = true;
        }
        Ok(l)
    }
}
