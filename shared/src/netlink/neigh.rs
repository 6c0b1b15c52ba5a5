//! Neighbours (`ip neigh`) and the VXLAN forwarding database (`bridge fdb ... dev vxlanN`).

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::LinkRef;
use super::{Family, Netlink, NlError, NlResultExt};
use crate::error::Result;
use crate::mac::Mac;

/// An IP neighbour (ARP / NDP entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// A forwarding-database entry of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: Mac,
    /// The remote VTEP of a vxlan entry.
    pub dst: Option<IpAddr>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    /// Kept by the bridge the device is attached to (`master`), not by the device (`self`).
    pub master: bool,
    pub permanent: bool,
}

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

/// `NDA_DST` of AF_BRIDGE messages is decoded as raw bytes: 4 or 16 of them.
fn ip_of(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(b) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    }
}

fn neighbour_msg(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = Family::of(&ip).af();
    m.header.ifindex = index;
    m.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    m
}

/// A permanent `self` FDB entry of a device (vxlan): AF_BRIDGE, NTF_SELF, NUD_PERMANENT.
fn fdb_msg(index: u32, mac: Mac, dst: Option<IpAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(ip) = dst {
        m.attributes
            .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    }
    m
}

impl Netlink {
    fn ack(&self, m: RouteNetlinkMessage, flags: u16) -> std::result::Result<(), NlError> {
        self.request(m, NLM_F_REQUEST | NLM_F_ACK | flags).map(drop)
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <index> nud permanent`: create or overwrite.
    pub fn set_neighbour(&self, index: u32, ip: IpAddr, mac: Mac) -> Result<()> {
        let mut m = neighbour_msg(index, ip);
        m.header.state = NeighbourState::Permanent;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.ack(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .or_nl(|| {
            format!(
                "setting neighbour {ip} lladdr {mac} on {}",
                LinkRef::Index(index)
            )
        })
    }

    /// `ip neigh del <ip> dev <index>`. `Ok(false)` when there was no such entry.
    pub fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Result<bool> {
        match self.ack(
            RouteNetlinkMessage::DelNeighbour(neighbour_msg(index, ip)),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e.cni(format!(
                "deleting neighbour {ip} on {}",
                LinkRef::Index(index)
            ))),
        }
    }

    /// The neighbours of one link (filtered by the kernel), optionally of one family.
    pub fn neighbours(&self, index: u32, family: Option<Family>) -> Result<Vec<Neighbour>> {
        let mut m = NeighbourMessage::default();
        if let Some(f) = family {
            m.header.family = f.af();
        }
        m.attributes.push(NeighbourAttribute::IfIndex(index));
        let replies = self
            .request(
                RouteNetlinkMessage::GetNeighbour(m),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .or_nl(|| format!("listing neighbours of {}", LinkRef::Index(index)))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewNeighbour(n) = r else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(d) => ip = ip_of(d),
                    NeighbourAttribute::LinkLayerAddress(b) => mac = Mac::from_bytes(b),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    index,
                    ip,
                    mac,
                    permanent: n.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }

    /// `bridge fdb append <mac> dev <index> dst <dst> self permanent`. With the all-zero MAC
    /// (flooding list) several destinations coexist; appending one already there is a no-op.
    pub fn append_fdb(&self, index: u32, mac: Mac, dst: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(index, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_APPEND,
        )
        .or_nl(|| {
            format!(
                "appending fdb entry {mac} dst {dst} on {}",
                LinkRef::Index(index)
            )
        })
    }

    /// `bridge fdb replace <mac> dev <index> dst <dst> self permanent`: the one destination of a
    /// unicast MAC (a remote VTEP), created or overwritten.
    pub fn replace_fdb(&self, index: u32, mac: Mac, dst: IpAddr) -> Result<()> {
        self.ack(
            RouteNetlinkMessage::NewNeighbour(fdb_msg(index, mac, Some(dst))),
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .or_nl(|| {
            format!(
                "replacing fdb entry {mac} dst {dst} on {}",
                LinkRef::Index(index)
            )
        })
    }

    /// `bridge fdb del <mac> dev <index> [dst <dst>] self`: with `dst` only that destination
    /// goes, without it the whole entry. `Ok(false)` when nothing matched.
    ///
    /// The vxlan driver answers success when the MAC exists but the destination does not, so
    /// with `dst` one filtered dump comes first to tell absence apart.
    pub fn delete_fdb(&self, index: u32, mac: Mac, dst: Option<IpAddr>) -> Result<bool> {
        if let Some(d) = dst {
            let present = self
                .fdb(index)?
                .iter()
                .any(|e| e.mac == mac && e.dst == Some(d) && !e.master);
            if !present {
                return Ok(false);
            }
        }
        match self.ack(
            RouteNetlinkMessage::DelNeighbour(fdb_msg(index, mac, dst)),
            0,
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e.cni(format!(
                "deleting fdb entry {mac}{} on {}",
                dst.map(|d| format!(" dst {d}")).unwrap_or_default(),
                LinkRef::Index(index)
            ))),
        }
    }

    /// The FDB entries of one device (filtered by the kernel), one per destination.
    pub fn fdb(&self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        let replies = self
            .request(
                RouteNetlinkMessage::GetNeighbour(m),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .or_nl(|| format!("listing fdb of {}", LinkRef::Index(index)))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewNeighbour(n) = r else {
                continue;
            };
            if n.header.ifindex != index {
                continue;
            }
            let mut e = FdbEntry {
                mac: Mac::ZERO,
                dst: None,
                vni: None,
                port: None,
                master: n.header.flags.contains(NeighbourFlags::Controller),
                permanent: n.header.state == NeighbourState::Permanent,
            };
            let mut has_mac = false;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::LinkLayerAddress(b) => {
                        if let Some(mac) = Mac::from_bytes(b) {
                            e.mac = mac;
                            has_mac = true;
                        }
                    }
                    NeighbourAttribute::Destination(d) => e.dst = ip_of(d),
                    NeighbourAttribute::Vni(v) => e.vni = Some(*v),
                    NeighbourAttribute::Port(p) => e.port = Some(*p),
                    _ => {}
                }
            }
            if has_mac {
                out.push(e);
            }
        }
        Ok(out)
    }
}
