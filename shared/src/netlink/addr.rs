//! Addresses: `ip addr add|del|show`.

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::link::LinkRef;
use super::{Family, Netlink, NlError, NlResultExt};
use crate::error::{CniError, Result};

/// Options of an added address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrOpts {
    /// IPv6: skip duplicate address detection (`IFA_F_NODAD`), usable at once.
    pub nodad: bool,
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The link index.
    pub index: u32,
    /// Address and prefix length (host bits kept).
    pub net: IpNetwork,
    pub nodad: bool,
    /// IPv6 DAD still running.
    pub tentative: bool,
    pub dadfailed: bool,
    /// Configured (not from autoconfiguration).
    pub permanent: bool,
}

fn message(index: u32, net: &IpNetwork) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = net.prefix();
    m.header.family = Family::of(&net.ip()).af();
    match net.ip() {
        IpAddr::V4(a) => {
            m.attributes.push(AddressAttribute::Local(a.into()));
            m.attributes.push(AddressAttribute::Address(a.into()));
        }
        IpAddr::V6(a) => m.attributes.push(AddressAttribute::Address(a.into())),
    }
    m
}

impl Netlink {
    fn newaddr(
        &self,
        index: u32,
        net: &IpNetwork,
        o: &AddrOpts,
    ) -> std::result::Result<(), NlError> {
        let mut m = message(index, net);
        if let IpAddr::V4(a) = net.ip() {
            if net.prefix() < 31 {
                let brd = u32::from(a) | (u32::MAX >> net.prefix());
                m.attributes
                    .push(AddressAttribute::Broadcast(Ipv4Addr::from(brd)));
            }
        }
        if o.nodad {
            m.header.flags |= AddressHeaderFlags::Nodad;
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// `ip addr add <net> dev <index>`. An existing address is an error (EEXIST); see
    /// [`Netlink::ensure_address`].
    pub fn add_address(&self, index: u32, net: IpNetwork, o: &AddrOpts) -> Result<()> {
        self.newaddr(index, &net, o)
            .or_nl(|| format!("adding address {net} to {}", LinkRef::Index(index)))
    }

    /// Like [`Netlink::add_address`], but an identical address already present is fine:
    /// `Ok(true)` added, `Ok(false)` it was there.
    pub fn ensure_address(&self, index: u32, net: IpNetwork, o: &AddrOpts) -> Result<bool> {
        match self.newaddr(index, &net, o) {
            Ok(()) => Ok(true),
            Err(e) if e.is_exists() => Ok(false),
            Err(e) => Err(e.cni(format!("adding address {net} to {}", LinkRef::Index(index)))),
        }
    }

    /// `ip addr del <net> dev <index>`. `Ok(false)` when the address (or the link) is not there.
    pub fn delete_address(&self, index: u32, net: IpNetwork) -> Result<bool> {
        match self.request(
            RouteNetlinkMessage::DelAddress(message(index, &net)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e.cni(format!(
                "deleting address {net} from {}",
                LinkRef::Index(index)
            ))),
        }
    }

    /// Addresses, filtered by the kernel on link index and family when given.
    pub fn addresses(&self, index: Option<u32>, family: Option<Family>) -> Result<Vec<Address>> {
        let mut m = AddressMessage::default();
        if let Some(f) = family {
            m.header.family = f.af();
        }
        m.header.index = index.unwrap_or(0);
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(m),
                NLM_F_REQUEST | NLM_F_DUMP,
            )
            .or_nl(|| match index {
                Some(i) => format!("listing addresses of {}", LinkRef::Index(i)),
                None => "listing addresses".into(),
            })?;
        let mut out = Vec::new();
        for r in replies {
            if let RouteNetlinkMessage::NewAddress(a) = r {
                // The kernel filters; check anyway in case it did not (old kernels).
                if index.is_some_and(|i| i != a.header.index) {
                    continue;
                }
                if let Some(addr) = decode(&a)? {
                    out.push(addr);
                }
            }
        }
        Ok(out)
    }
}

fn decode(m: &AddressMessage) -> Result<Option<Address>> {
    let mut local = None;
    let mut address = None;
    let mut flags = AddressFlags::from_bits_retain(u32::from(m.header.flags.bits()));
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = *f,
            _ => {}
        }
    }
    let Some(ip) = local.or(address) else {
        return Ok(None);
    };
    let net = IpNetwork::new(ip, m.header.prefix_len).map_err(|e| {
        CniError::internal(format!(
            "kernel reported address {ip}/{}: {e}",
            m.header.prefix_len
        ))
    })?;
    Ok(Some(Address {
        index: m.header.index,
        net,
        nodad: flags.contains(AddressFlags::Nodad),
        tentative: flags.contains(AddressFlags::Tentative),
        dadfailed: flags.contains(AddressFlags::Dadfailed),
        permanent: flags.contains(AddressFlags::Permanent),
    }))
}
