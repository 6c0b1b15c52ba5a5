//! Deleting conntrack entries through ctnetlink, without the `conntrack` binary.
//!
//! One [`Filter`] selects entries by protocol and original destination port (optionally the
//! original destination address), and then by what the entry was NATed to. The kernel is asked
//! for a dump filtered on the original tuple (`CTA_FILTER`, Linux 5.8+; older kernels ignore the
//! attribute and dump everything, so the filter is applied here again), then every match is
//! deleted by its original tuple (`IPCTNL_MSG_CT_DELETE`). An entry that vanished in between is
//! not an error.
//!
//! A dump walks the kernel's whole connection table (one hash table for all namespaces), so
//! [`delete`] makes at most one per address family, in parallel, and none when the namespace
//! has no entries at all.

use std::net::IpAddr;

use crate::error::Result;
use crate::nfnl::{
    attr, attrs, Attrs, Nfnl, NlErr, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, SUBSYS_CTNETLINK,
};

const MSG_GET: u16 = 1;
const MSG_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const FILTER_IP_DST: u32 = 1 << 1;
const FILTER_PROTO_NUM: u32 = 1 << 3;
const FILTER_PROTO_DST_PORT: u32 = 1 << 5;

/// One direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry: both directions and its zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub zone: u16,
}

impl Entry {
    /// Whether the entry was destination-NATed (its reply comes from another address or port
    /// than the original destination).
    pub fn is_dnat(&self) -> bool {
        self.reply.src != self.orig.dst || self.reply.sport != self.orig.dport
    }
}

/// Which entries to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub v6: bool,
    /// IP protocol number (6 tcp, 17 udp, 132 sctp).
    pub proto: u8,
    /// The original destination port (the host port).
    pub dport: u16,
    /// The original destination address (a host IP), when the mapping has one.
    pub dst: Option<IpAddr>,
    pub select: Select,
}

/// The second criterion of a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Entries NATed to this address and port (the connections of a mapping being removed).
    NatedTo(IpAddr, u16),
    /// Entries NATed anywhere (a mapping whose target is no longer known, on a host port that
    /// is still claimed by the attachment being removed, so no one else's).
    Nated,
    /// Entries not NATed at all, or NATed somewhere other than this address and port (stale
    /// state that would keep new packets of a flow away from a new mapping). With
    /// `any_unnated: false`, un-NATed entries are kept (a TCP connection to a host service).
    StaleFor {
        target: (IpAddr, u16),
        any_unnated: bool,
    },
}

impl Filter {
    pub fn matches(&self, e: &Entry) -> bool {
        let o = &e.orig;
        if o.proto != self.proto || o.dport != self.dport || o.dst.is_ipv6() != self.v6 {
            return false;
        }
        if self.dst.is_some_and(|d| d != o.dst) {
            return false;
        }
        match self.select {
            Select::NatedTo(ip, port) => e.reply.src == ip && e.reply.sport == port,
            Select::Nated => e.is_dnat(),
            Select::StaleFor {
                target,
                any_unnated,
            } => {
                let to_target = e.reply.src == target.0 && e.reply.sport == target.1;
                if e.is_dnat() {
                    !to_target
                } else {
                    any_unnated
                }
            }
        }
    }
}

fn family(v6: bool) -> u8 {
    if v6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    }
}

fn msg(t: u16) -> u16 {
    (SUBSYS_CTNETLINK << 8) | t
}

fn put_ip(a: &mut Attrs, src_kind: (u16, u16), ip: IpAddr, is_src: bool) {
    let (k4, k6) = src_kind;
    match ip {
        IpAddr::V4(v) => a.put(if is_src { k4 } else { k4 + 1 }, &v.octets()),
        IpAddr::V6(v) => a.put(if is_src { k6 } else { k6 + 1 }, &v.octets()),
    };
}

fn tuple_attrs(a: &mut Attrs, t: &Tuple) {
    a.nest(CTA_TUPLE_IP, |ip| {
        put_ip(ip, (CTA_IP_V4_SRC, CTA_IP_V6_SRC), t.src, true);
        put_ip(ip, (CTA_IP_V4_SRC, CTA_IP_V6_SRC), t.dst, false);
    });
    a.nest(CTA_TUPLE_PROTO, |p| {
        p.put(CTA_PROTO_NUM, &[t.proto]);
        p.put(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
        p.put(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    });
}

/// The dump request's attributes: a kernel-side filter on the original tuple with what all
/// `filters` (of one family) have in common: the protocol, the port, the address.
fn dump_attrs(filters: &[Filter]) -> Vec<u8> {
    let Some(first) = filters.first() else {
        return Vec::new();
    };
    let same = |f: &dyn Fn(&Filter) -> bool| filters.iter().all(f);
    if !same(&|f| f.proto == first.proto) {
        return Vec::new();
    }
    let mut flags = FILTER_PROTO_NUM;
    let port = same(&|f| f.dport == first.dport).then_some(first.dport);
    if port.is_some() {
        flags |= FILTER_PROTO_DST_PORT;
    }
    let dst = first.dst.filter(|d| same(&|f| f.dst == Some(*d)));
    if dst.is_some() {
        flags |= FILTER_IP_DST;
    }
    let mut a = Attrs::new();
    a.nest(CTA_TUPLE_ORIG, |t| {
        if let Some(dst) = dst {
            t.nest(CTA_TUPLE_IP, |ip| {
                put_ip(ip, (CTA_IP_V4_SRC, CTA_IP_V6_SRC), dst, false);
            });
        }
        t.nest(CTA_TUPLE_PROTO, |p| {
            p.put(CTA_PROTO_NUM, &[first.proto]);
            if let Some(port) = port {
                p.put(CTA_PROTO_DST_PORT, &port.to_be_bytes());
            }
        });
    });
    a.nest(CTA_FILTER, |fl| {
        fl.put(CTA_FILTER_ORIG_FLAGS, &flags.to_ne_bytes());
    });
    a.0
}

fn ip_of(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => <[u8; 4]>::try_from(v).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(v).ok().map(IpAddr::from),
        _ => None,
    }
}

fn parse_tuple(buf: &[u8]) -> Option<Tuple> {
    let ip = attr(buf, CTA_TUPLE_IP)?;
    let proto = attr(buf, CTA_TUPLE_PROTO)?;
    let (mut src, mut dst) = (None, None);
    for (k, v) in attrs(ip) {
        match k {
            CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = ip_of(v),
            CTA_IP_V4_DST | CTA_IP_V6_DST => dst = ip_of(v),
            _ => {}
        }
    }
    let port = |k| {
        attr(proto, k)
            .and_then(|v| <[u8; 2]>::try_from(v).ok())
            .map_or(0, u16::from_be_bytes)
    };
    Some(Tuple {
        src: src?,
        dst: dst?,
        proto: *attr(proto, CTA_PROTO_NUM)?.first()?,
        sport: port(CTA_PROTO_SRC_PORT),
        dport: port(CTA_PROTO_DST_PORT),
    })
}

/// Decode one conntrack message's attributes.
pub fn parse_entry(buf: &[u8]) -> Option<Entry> {
    let zone = attr(buf, CTA_ZONE)
        .and_then(|v| <[u8; 2]>::try_from(v).ok())
        .map_or(0, u16::from_be_bytes);
    Some(Entry {
        orig: parse_tuple(attr(buf, CTA_TUPLE_ORIG)?)?,
        reply: parse_tuple(attr(buf, CTA_TUPLE_REPLY)?)?,
        zone,
    })
}

/// The entries of one family matching one of `filters`. One dump: the kernel walks its whole
/// connection table (shared by all namespaces) for it, about 14 ms for 262144 buckets on the
/// development VM, so callers merge their filters.
pub fn list(nl: &mut Nfnl, v6: bool, filters: &[Filter]) -> std::result::Result<Vec<Entry>, NlErr> {
    let replies = nl.request(
        msg(MSG_GET),
        NLM_F_REQUEST | NLM_F_DUMP,
        family(v6),
        &dump_attrs(filters),
    )?;
    Ok(replies
        .iter()
        .filter_map(|r| parse_entry(&r.attrs))
        .filter(|e| filters.iter().any(|f| f.v6 == v6 && f.matches(e)))
        .collect())
}

/// The number of entries of the calling thread's namespace; `None` when unknown.
fn count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn delete_family(v6: bool, filters: &[Filter]) -> Result<usize> {
    let mut nl = Nfnl::open().map_err(|e| e.cni("conntrack"))?;
    let entries = match list(&mut nl, v6, filters) {
        Ok(e) => e,
        // No conntrack support loaded: no entries to delete.
        Err(e) if e.errno == libc::EOPNOTSUPP || e.errno == libc::ENOENT => return Ok(0),
        Err(e) => return Err(e.cni("conntrack: listing entries")),
    };
    let mut n = 0;
    for e in entries {
        let mut a = Attrs::new();
        a.nest(CTA_TUPLE_ORIG, |t| tuple_attrs(t, &e.orig));
        if e.zone != 0 {
            a.put(CTA_ZONE, &e.zone.to_be_bytes());
        }
        match nl.request(msg(MSG_DELETE), NLM_F_REQUEST | NLM_F_ACK, family(v6), &a.0) {
            Ok(_) => n += 1,
            Err(err) if err.is_missing() => {}
            Err(err) => return Err(err.cni("conntrack: deleting an entry")),
        }
    }
    Ok(n)
}

/// Delete every entry matching one of `filters`; returns how many were deleted. At most one
/// dump per address family, the two families in parallel; none when the namespace tracks no
/// connection at all.
pub fn delete(filters: &[Filter]) -> Result<usize> {
    if filters.is_empty() || count() == Some(0) {
        return Ok(0);
    }
    let (v6, v4): (Vec<Filter>, Vec<Filter>) = filters.iter().cloned().partition(|f| f.v6);
    let results: Vec<Result<usize>> = std::thread::scope(|s| {
        let jobs: Vec<_> = [(false, &v4), (true, &v6)]
            .into_iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(is_v6, f)| s.spawn(move || delete_family(is_v6, f)))
            .collect();
        jobs.into_iter()
            .map(|j| {
                j.join().unwrap_or_else(|_| {
                    Err(crate::CniError::internal(
                        "conntrack: a worker thread panicked",
                    ))
                })
            })
            .collect()
    });
    let mut n = 0;
    for r in results {
        n += r?;
    }
    Ok(n)
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
