//! Links: lookup, listing and the `ip link set` family of changes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoBridge, InfoBridgePort,
    InfoData, InfoMacVlan, InfoPortData, InfoVlan, InfoVxlan, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode as NlMacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Netlink, NlError, NlResultExt};
use crate::error::{CniError, Result};
use crate::mac::Mac;
use crate::netns::NetNs;

/// A link, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND`: "bridge", "veth", "macvlan", "vxlan", ...; `None` for physical
    /// devices and `lo`.
    pub kind: Option<String>,
    /// `None` when the hardware address is not 6 bytes long (tunnels without one).
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// The controller (master) index, e.g. the bridge of a bridge port.
    pub controller: Option<u32>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_LINK`: the parent (macvlan, vxlan underlay) or the veth peer's index, which is an
    /// index in the namespace given by `link_netnsid` when that is set.
    pub parent: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer/parent lives in another namespace.
    pub link_netnsid: Option<i32>,
    /// Set on a macvlan.
    pub macvlan_mode: Option<MacvlanMode>,
    /// The broadcast queue length a macvlan asked for (`IFLA_MACVLAN_BC_QUEUE_LEN`); `None` on
    /// kernels before 5.11, which do not report (or honour) it.
    pub macvlan_bc_queue_len: Option<u32>,
    /// The 802.1q VLAN ID of a vlan link.
    pub vlan_id: Option<u16>,
    /// `IFLA_IFALIAS`, the free-text description (`ip link set <link> alias <text>`).
    pub alias: Option<String>,
    /// Set on a vxlan.
    pub vxlan: Option<VxlanInfo>,
    /// Set on a bridge.
    pub bridge: Option<BridgeInfo>,
    /// Set on a bridge port.
    pub bridge_port: Option<BridgePortInfo>,
    /// IPv4's `arp_notify` of the link (`IFLA_INET_CONF`); `false` when the link has no IPv4
    /// configuration.
    pub arp_notify: bool,
    /// IPv4's `route_localnet` of the link (`IFLA_INET_CONF`); `false` when the link has no
    /// IPv4 configuration.
    pub route_localnet: bool,
    /// How the kernel makes the link's IPv6 link-local address when it comes up
    /// (`addrgenmode`). `None` when the kernel reports no IPv6 configuration for it (a kernel
    /// without IPv6: no link-local address either way).
    pub ipv6_addr_gen: Option<AddrGenMode>,
    /// IPv6's `accept_ra` of the link (`IFLA_INET6_CONF`); `None` without IPv6 configuration.
    pub ipv6_accept_ra: Option<i32>,
}

impl Link {
    pub fn is_kind(&self, kind: &str) -> bool {
        self.kind.as_deref() == Some(kind)
    }
}

/// IPv6 `addrgenmode` of a link: how the kernel makes its link-local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrGenMode {
    /// From the MAC (EUI-64): a new namespace's default.
    Eui64,
    /// No link-local address at all.
    None,
    /// `stable_privacy` or `random` (or a mode this code does not know).
    Other,
}

/// Bridge settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgeInfo {
    pub vlan_filtering: bool,
}

/// Settings of a port as seen through its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BridgePortInfo {
    pub hairpin: bool,
    pub isolated: bool,
    pub learning: bool,
}

/// VXLAN settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    pub vni: u32,
    /// UDP destination port (4789 is the IANA port; the kernel's default is 8472).
    pub port: u16,
    pub local: Option<Ipv4Addr>,
    pub local6: Option<Ipv6Addr>,
    /// The underlay device index.
    pub dev: Option<u32>,
    pub group: Option<Ipv4Addr>,
    pub group6: Option<Ipv6Addr>,
    pub learning: bool,
}

/// The macvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
    Source,
}

impl MacvlanMode {
    /// Parse the config spelling (`bridge`, `private`, `vepa`, `passthru`, `source`); a bad
    /// value is code 7 naming `key`.
    pub fn parse(key: &str, value: &str) -> Result<MacvlanMode> {
        Ok(match value {
            "bridge" => MacvlanMode::Bridge,
            "private" => MacvlanMode::Private,
            "vepa" => MacvlanMode::Vepa,
            "passthru" => MacvlanMode::Passthru,
            "source" => MacvlanMode::Source,
            _ => {
                return Err(CniError::invalid_config(format!(
                    "{key}: unknown macvlan mode {value:?} \
                     (expected bridge, private, vepa, passthru or source)"
                )))
            }
        })
    }

    pub(crate) fn to_nl(self) -> NlMacVlanMode {
        match self {
            MacvlanMode::Private => NlMacVlanMode::Private,
            MacvlanMode::Vepa => NlMacVlanMode::Vepa,
            MacvlanMode::Bridge => NlMacVlanMode::Bridge,
            MacvlanMode::Passthru => NlMacVlanMode::Passthrough,
            MacvlanMode::Source => NlMacVlanMode::Source,
        }
    }

    fn from_nl(m: &NlMacVlanMode) -> Option<MacvlanMode> {
        Some(match m {
            NlMacVlanMode::Private => MacvlanMode::Private,
            NlMacVlanMode::Vepa => MacvlanMode::Vepa,
            NlMacVlanMode::Bridge => MacvlanMode::Bridge,
            NlMacVlanMode::Passthrough => MacvlanMode::Passthru,
            NlMacVlanMode::Source => MacvlanMode::Source,
            _ => return None,
        })
    }
}

/// Which link a call is about: an index, a name or a looked-up [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef<'a> {
    Index(u32),
    Name(&'a str),
}

impl From<u32> for LinkRef<'_> {
    fn from(i: u32) -> Self {
        LinkRef::Index(i)
    }
}
impl<'a> From<&'a str> for LinkRef<'a> {
    fn from(n: &'a str) -> Self {
        LinkRef::Name(n)
    }
}
impl<'a> From<&'a String> for LinkRef<'a> {
    fn from(n: &'a String) -> Self {
        LinkRef::Name(n)
    }
}
impl<'a> From<&'a Link> for LinkRef<'a> {
    fn from(l: &'a Link) -> Self {
        LinkRef::Index(l.index)
    }
}

impl fmt::Display for LinkRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Index(i) => write!(f, "link #{i}"),
            LinkRef::Name(n) => write!(f, "link {n}"),
        }
    }
}

/// A request message addressing `r`: the index in the header, or `IFLA_IFNAME` with index 0
/// (the kernel resolves names itself, saving a lookup).
pub(crate) fn addressed(r: LinkRef<'_>) -> LinkMessage {
    let mut m = LinkMessage::default();
    match r {
        LinkRef::Index(i) => m.header.index = i,
        LinkRef::Name(n) => m.attributes.push(LinkAttribute::IfName(n.to_string())),
    }
    m
}

impl Netlink {
    /// Look a link up by index or name (one round trip). `None` when there is no such link.
    pub fn link<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<Option<Link>> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST) {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(decode(&l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e.cni(format!("looking up {r}"))),
        }
    }

    /// Every link of the namespace (a full dump: not for hot paths).
    pub fn links(&self) -> Result<Vec<Link>> {
        let mut m = LinkMessage::default();
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_DUMP)
            .or_nl(|| "listing links".into())?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(decode(l)),
                _ => None,
            })
            .collect())
    }

    /// `RTM_SETLINK` with an ACK.
    pub(crate) fn setlink(&self, m: LinkMessage) -> std::result::Result<(), NlError> {
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
    }

    fn set_flag_up<'a>(&self, r: impl Into<LinkRef<'a>>, up: bool) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        let what = if up { "up" } else { "down" };
        self.setlink(m).or_nl(|| format!("setting {r} {what}"))
    }

    /// `ip link set <link> up`.
    pub fn set_up<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<()> {
        self.set_flag_up(r, true)
    }

    /// `ip link set <link> down`.
    pub fn set_down<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<()> {
        self.set_flag_up(r, false)
    }

    /// `ip link set <link> promisc on|off`.
    pub fn set_promisc<'a>(&self, r: impl Into<LinkRef<'a>>, on: bool) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.header.change_mask = LinkFlags::Promisc;
        if on {
            m.header.flags = LinkFlags::Promisc;
        }
        self.setlink(m)
            .or_nl(|| format!("setting promisc {} on {r}", if on { "on" } else { "off" }))
    }

    /// `ip link set <link> mtu <mtu>`.
    pub fn set_mtu<'a>(&self, r: impl Into<LinkRef<'a>>, mtu: u32) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes.push(LinkAttribute::Mtu(mtu));
        self.setlink(m)
            .or_nl(|| format!("setting mtu {mtu} on {r}"))
    }

    /// `ip link set <link> addrgenmode none`: when the link comes up, the kernel makes no IPv6
    /// link-local address for it, and so sends none of the multicast that goes with one (MLD
    /// reports, the DAD probe, router solicitations). Set it while the link is down. `false`
    /// when the kernel has no IPv6 (it refuses the attribute with EAFNOSUPPORT): no link-local
    /// address either way.
    pub fn set_ipv6_addr_gen_none<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<bool> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        match self.setlink(m) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EAFNOSUPPORT) => Ok(false),
            Err(e) => Err(e.cni(format!("setting IPv6 addrgenmode none on {r}"))),
        }
    }

    /// `sysctl net.ipv4.conf.<link>.arp_notify=1`, through netlink (`IFLA_INET_CONF`): the
    /// kernel sends a gratuitous ARP when the link comes up or its address changes.
    pub fn set_arp_notify<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        self.set_inet_conf(r.into(), conf, "arp_notify")
    }

    /// `sysctl net.ipv4.conf.<link>.route_localnet=1`, through netlink (`IFLA_INET_CONF`): the
    /// link may carry packets from or to 127.0.0.0/8.
    pub fn set_route_localnet<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.route_localnet = 1;
        self.set_inet_conf(r.into(), conf, "route_localnet")
    }

    /// Set the non-zero keys of `conf` (the request carries only those) on the link's IPv4
    /// configuration. Not through `/proc/sys`: a lookup there walks one directory entry per
    /// namespace whose keys were ever looked up through the same `/proc` (see
    /// [`crate::sysctl`]), ~0.9 ms in a new process next to 1000 such namespaces.
    fn set_inet_conf(&self, r: LinkRef<'_>, conf: InetDevConf, key: &str) -> Result<()> {
        let mut m = addressed(r);
        m.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        self.setlink(m).or_nl(|| format!("setting {key} on {r}"))
    }

    /// `ip link set <link> address <mac>`.
    pub fn set_mac<'a>(&self, r: impl Into<LinkRef<'a>>, mac: Mac) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        self.setlink(m)
            .or_nl(|| format!("setting address {mac} on {r}"))
    }

    /// `ip link set <link> alias <text>`; an empty text removes the alias. (The kernel ignores
    /// `IFLA_IFALIAS` in a creating request, so this is always a second step.)
    pub fn set_alias<'a>(&self, r: impl Into<LinkRef<'a>>, alias: &str) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes.push(LinkAttribute::IfAlias(alias.into()));
        self.setlink(m)
            .or_nl(|| format!("setting alias {alias:?} on {r}"))
    }

    /// `ip link set <link> master <controller>`, or `nomaster` with `None`.
    pub fn set_controller<'a>(&self, r: impl Into<LinkRef<'a>>, ctrl: Option<u32>) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes
            .push(LinkAttribute::Controller(ctrl.unwrap_or(0)));
        self.setlink(m).or_nl(|| match ctrl {
            Some(c) => format!("attaching {r} to controller #{c}"),
            None => format!("detaching {r} from its controller"),
        })
    }

    /// `ip link set <link> name <new_name>`. The link must be down. A name costs one lookup.
    pub fn rename<'a>(&self, r: impl Into<LinkRef<'a>>, new_name: &str) -> Result<()> {
        let r = r.into();
        let index = match r {
            LinkRef::Index(i) => i,
            LinkRef::Name(_) => match self.link(r)? {
                Some(l) => l.index,
                None => {
                    return Err(CniError::internal(format!(
                        "renaming {r} to {new_name}: no such link"
                    )))
                }
            },
        };
        let mut m = addressed(LinkRef::Index(index));
        m.attributes.push(LinkAttribute::IfName(new_name.into()));
        self.setlink(m)
            .or_nl(|| format!("renaming {r} to {new_name}"))
    }

    /// `ip link set <link> netns <ns>`: move the link into `ns`.
    pub fn move_to_netns<'a>(&self, r: impl Into<LinkRef<'a>>, ns: &NetNs) -> Result<()> {
        let r = r.into();
        let mut m = addressed(r);
        m.attributes
            .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        self.setlink(m)
            .or_nl(|| format!("moving {r} to {}", ns.path().display()))
    }

    /// `ip link del <link>`. `Ok(false)` when there was no such link.
    pub fn delete_link<'a>(&self, r: impl Into<LinkRef<'a>>) -> Result<bool> {
        let r = r.into();
        match self.request(
            RouteNetlinkMessage::DelLink(addressed(r)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
            Err(e) => Err(e.cni(format!("deleting {r}"))),
        }
    }
}

/// Decode a kernel link message into a [`Link`].
pub(crate) fn decode(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        controller: None,
        up: m.header.flags.contains(LinkFlags::Up),
        parent: None,
        link_netnsid: None,
        macvlan_mode: None,
        macvlan_bc_queue_len: None,
        vlan_id: None,
        alias: None,
        vxlan: None,
        bridge: None,
        bridge_port: None,
        arp_notify: false,
        route_localnet: false,
        ipv6_addr_gen: None,
        ipv6_accept_ra: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Address(b) => l.mac = Mac::from_bytes(b),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(c) if *c != 0 => l.controller = Some(*c),
            LinkAttribute::Link(p) if *p != 0 => l.parent = Some(*p),
            LinkAttribute::LinkNetNsId(id) => l.link_netnsid = Some(*id),
            LinkAttribute::IfAlias(a) if !a.is_empty() => l.alias = Some(a.clone()),
            LinkAttribute::LinkInfo(infos) => decode_info(infos, &mut l),
            LinkAttribute::AfSpecUnspec(afs) => decode_af_spec(afs, &mut l),
            _ => {}
        }
    }
    l
}

fn decode_af_spec(afs: &[AfSpecUnspec], l: &mut Link) {
    for af in afs {
        match af {
            AfSpecUnspec::Inet(v4) => {
                for x in v4 {
                    if let AfSpecInet::DevConf(c) = x {
                        l.arp_notify = c.arp_notify != 0;
                        l.route_localnet = c.route_localnet != 0;
                    }
                }
            }
            AfSpecUnspec::Inet6(v6) => {
                for x in v6 {
                    match x {
                        AfSpecInet6::AddrGenMode(m) => {
                            l.ipv6_addr_gen = Some(match m {
                                In6AddrGenMode::Eui64 => AddrGenMode::Eui64,
                                In6AddrGenMode::None => AddrGenMode::None,
                                _ => AddrGenMode::Other,
                            });
                        }
                        AfSpecInet6::DevConf(c) => l.ipv6_accept_ra = Some(c.accept_ra),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn decode_info(infos: &[LinkInfo], l: &mut Link) {
    for i in infos {
        match i {
            LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::MacVlan(d)) => {
                for x in d {
                    match x {
                        InfoMacVlan::Mode(m) => l.macvlan_mode = MacvlanMode::from_nl(m),
                        InfoMacVlan::BcQueueLen(n) => l.macvlan_bc_queue_len = Some(*n),
                        _ => {}
                    }
                }
            }
            LinkInfo::Data(InfoData::Vlan(d)) => {
                l.vlan_id = d.iter().find_map(|x| match x {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                });
            }
            LinkInfo::Data(InfoData::Bridge(d)) => {
                let mut b = BridgeInfo::default();
                for x in d {
                    if let InfoBridge::VlanFiltering(v) = x {
                        b.vlan_filtering = *v;
                    }
                }
                l.bridge = Some(b);
            }
            LinkInfo::Data(InfoData::Vxlan(d)) => l.vxlan = Some(decode_vxlan(d)),
            LinkInfo::PortData(InfoPortData::BridgePort(d)) => {
                let mut p = BridgePortInfo::default();
                for x in d {
                    match x {
                        InfoBridgePort::HairpinMode(v) => p.hairpin = *v,
                        InfoBridgePort::Isolated(v) => p.isolated = *v,
                        InfoBridgePort::Learning(v) => p.learning = *v,
                        _ => {}
                    }
                }
                l.bridge_port = Some(p);
            }
            _ => {}
        }
    }
}

fn decode_vxlan(d: &[InfoVxlan]) -> VxlanInfo {
    let mut v = VxlanInfo::default();
    for x in d {
        match x {
            InfoVxlan::Id(id) => v.vni = *id,
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Local(a) => v.local = Some(*a),
            InfoVxlan::Local6(a) => v.local6 = Some(*a),
            InfoVxlan::Link(i) if *i != 0 => v.dev = Some(*i),
            InfoVxlan::Group(a) if !a.is_unspecified() => v.group = Some(*a),
            InfoVxlan::Group6(a) if !a.is_unspecified() => v.group6 = Some(*a),
            InfoVxlan::Learning(b) => v.learning = *b,
            _ => {}
        }
    }
    v
}
