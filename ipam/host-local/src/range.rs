//! Address ranges and range sets: validation (the reference's rules) and the order addresses are
//! handed out in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use cni_shared::spec::cidr::network_of;
use cni_shared::{CniError, Result};

/// An address as a number, both families in one type.
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` in the family of `like`.
pub fn from_u128(n: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// One `{subnet, rangeStart, rangeEnd, gateway}` after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, host bits clear.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

/// A range as written in the config.
#[derive(Debug, Clone, Default)]
pub struct RangeSpec {
    pub subnet: Option<IpNetwork>,
    pub range_start: Option<IpAddr>,
    pub range_end: Option<IpAddr>,
    pub gateway: Option<IpAddr>,
}

impl Range {
    /// Apply defaults and validate; `at` names the config key (`ipam.ranges[0][1]`).
    pub fn canonical(spec: &RangeSpec, at: &str) -> Result<Range> {
        let bad = |msg: String| Err(CniError::invalid_config(format!("{at}.{msg}")));
        let Some(subnet) = spec.subnet else {
            return bad("subnet: missing".into());
        };
        let bits = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > bits - 2 {
            return bad(format!("subnet: {subnet} is too small to allocate from"));
        }
        if subnet.ip() != subnet.network() {
            return bad(format!(
                "subnet: {subnet} has host bits set (the network address is {})",
                network_of(&subnet)
            ));
        }
        let net = to_u128(subnet.network());
        let last = to_u128(subnet.broadcast());
        let in_subnet = |ip: IpAddr| subnet.contains(ip) && ip.is_ipv4() == subnet.is_ipv4();
        // Defaults as in the reference: start at .1; end before the v4 broadcast, at the last v6.
        let start = spec.range_start.unwrap_or(from_u128(net + 1, subnet.ip()));
        let end = spec.range_end.unwrap_or(if subnet.is_ipv4() {
            from_u128(last - 1, subnet.ip())
        } else {
            from_u128(last, subnet.ip())
        });
        let gateway = spec.gateway.unwrap_or(from_u128(net + 1, subnet.ip()));
        for (key, ip) in [("rangeStart", start), ("rangeEnd", end)] {
            if !in_subnet(ip) {
                return bad(format!("{key}: {ip} is outside subnet {subnet}"));
            }
        }
        // The reference (Canonicalize) takes a gateway outside the subnet as it is: it is
        // returned in the result, and never handed out only because no candidate equals it.
        // One of the other family cannot be a next hop for this subnet at all: refused.
        if gateway.is_ipv4() != subnet.is_ipv4() {
            return bad(format!(
                "gateway: {gateway} is not of the family of subnet {subnet}"
            ));
        }
        if !in_subnet(gateway) {
            tracing::warn!(
                key = %format!("{at}.gateway"),
                %gateway,
                %subnet,
                "the gateway is outside the range's subnet; accepted as the reference does"
            );
        }
        let gateway = Some(gateway);
        if to_u128(start) > to_u128(end) {
            return bad(format!("rangeStart: {start} is after rangeEnd {end}"));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    pub fn is_ipv4(&self) -> bool {
        self.subnet.is_ipv4()
    }

    /// Whether `ip` is between start and end.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.is_ipv4()
            && to_u128(ip) >= to_u128(self.start)
            && to_u128(ip) <= to_u128(self.end)
    }

    /// Whether `ip` can never be a lease: the gateway (when it lies in the subnet: one outside
    /// it is no address of the range), or the network/broadcast address (v4).
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        let in_subnet = self.subnet.contains(ip) && ip.is_ipv4() == self.is_ipv4();
        if in_subnet && Some(ip) == self.gateway {
            return true;
        }
        self.is_ipv4() && (ip == self.subnet.network() || ip == self.subnet.broadcast())
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.is_ipv4() == other.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    pub fn describe(&self) -> String {
        format!("{} ({}-{})", self.subnet, self.start, self.end)
    }
}

/// A set of ranges of one family; each ADD takes one address from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    pub fn new(ranges: Vec<Range>, at: &str) -> Result<RangeSet> {
        let Some(first) = ranges.first() else {
            return Err(CniError::invalid_config(format!("{at}: empty range set")));
        };
        for (i, r) in ranges.iter().enumerate() {
            if r.is_ipv4() != first.is_ipv4() {
                return Err(CniError::invalid_config(format!(
                    "{at}[{i}]: mixes IPv4 and IPv6 ranges in one set (use one set per family)"
                )));
            }
            for (j, o) in ranges.iter().enumerate().skip(i + 1) {
                if r.overlaps(o) {
                    return Err(CniError::invalid_config(format!(
                        "{at}[{j}]: range {} overlaps range {}",
                        o.describe(),
                        r.describe()
                    )));
                }
            }
        }
        Ok(RangeSet { ranges })
    }

    /// The range holding `ip`, if any.
    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    pub fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Candidate addresses in round-robin order: after `last` (when it is in the set), through
    /// the end of every range, wrapping around, ending with `last` itself. Reserved addresses are
    /// skipped. Lazy: a /64 is never enumerated beyond what is asked for.
    pub fn candidates(&self, last: Option<IpAddr>) -> impl Iterator<Item = (usize, IpAddr)> + '_ {
        let (start_range, start_at) = last
            .and_then(|ip| {
                self.ranges
                    .iter()
                    .position(|r| r.contains(ip))
                    .map(|i| (i, to_u128(ip).saturating_add(1)))
            })
            .unwrap_or((
                0,
                self.ranges.first().map(|r| to_u128(r.start)).unwrap_or(0),
            ));
        let n = self.ranges.len();
        // Walk the ranges starting from `start_range`, and come back to its head at the end.
        (0..=n).flat_map(move |k| {
            let i = (start_range + k) % n.max(1);
            let r = &self.ranges[i];
            let (lo, hi) = match k {
                0 => (start_at, to_u128(r.end)),
                _ if k == n => (to_u128(r.start), start_at.saturating_sub(1)),
                _ => (to_u128(r.start), to_u128(r.end)),
            };
            let lo = lo.max(to_u128(r.start));
            let hi = hi.min(to_u128(r.end));
            let count = if lo > hi { 0 } else { hi - lo + 1 };
            (0..count)
                .map(move |off| (i, from_u128(lo + off, r.start)))
                .filter(move |(_, ip)| !r.is_reserved(*ip))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::spec::parse_cidr;

    fn spec(subnet: &str) -> RangeSpec {
        RangeSpec {
            subnet: Some(parse_cidr(subnet).unwrap()),
            ..RangeSpec::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_follow_the_reference() {
        let r = Range::canonical(&spec("10.0.0.0/24"), "r").unwrap();
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.0.0.1"), ip("10.0.0.254"), Some(ip("10.0.0.1")))
        );
        let r6 = Range::canonical(&spec("fd00::/120"), "r").unwrap();
        assert_eq!((r6.start, r6.end), (ip("fd00::1"), ip("fd00::ff")));
    }

    #[test]
    fn invalid_ranges_name_the_key() {
        let mut s = spec("10.0.0.0/24");
        s.range_start = Some(ip("10.0.1.5"));
        let e = Range::canonical(&s, "ipam.ranges[0][0]").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.starts_with("ipam.ranges[0][0].rangeStart: 10.0.1.5"),
            "{}",
            e.msg
        );
        assert!(Range::canonical(&spec("10.0.0.5/24"), "r")
            .unwrap_err()
            .msg
            .contains("host bits"));
        assert!(Range::canonical(&spec("10.0.0.0/31"), "r").is_err());
        let mut s = spec("10.0.0.0/24");
        s.range_start = Some(ip("10.0.0.50"));
        s.range_end = Some(ip("10.0.0.40"));
        assert!(Range::canonical(&s, "r").is_err());
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some(ip("fd00::1"));
        let e = Range::canonical(&s, "ipam.ranges[0][0]").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg.starts_with("ipam.ranges[0][0].gateway: fd00::1"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn a_gateway_outside_the_subnet_is_accepted_and_reserves_nothing() {
        // As the reference's Canonicalize: kept as written, no containment check.
        let mut s = spec("10.0.0.0/29");
        s.gateway = Some(ip("10.9.9.9"));
        let r = Range::canonical(&s, "r").unwrap();
        assert_eq!(r.gateway, Some(ip("10.9.9.9")));
        assert!(!r.is_reserved(ip("10.9.9.9")));
        // Every host address of the subnet is handed out, .1 included (no gateway in it).
        let set = RangeSet::new(vec![r], "s").unwrap();
        let all: Vec<String> = set.candidates(None).map(|(_, i)| i.to_string()).collect();
        assert_eq!(
            all,
            ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
        // The subnet's own broadcast and network addresses as gateways: inside the subnet
        // but outside the range; still fine. And v6.
        let mut s = spec("10.0.0.0/29");
        s.gateway = Some(ip("10.0.0.7"));
        assert_eq!(
            Range::canonical(&s, "r").unwrap().gateway,
            Some(ip("10.0.0.7"))
        );
        let mut s6 = spec("fd00::/120");
        s6.gateway = Some(ip("fd01::1"));
        let r6 = Range::canonical(&s6, "r").unwrap();
        assert_eq!(r6.gateway, Some(ip("fd01::1")));
        assert_eq!(
            RangeSet::new(vec![r6], "s")
                .unwrap()
                .candidates(None)
                .next(),
            Some((0, ip("fd00::1")))
        );
    }

    #[test]
    fn sets_refuse_mixed_families_and_overlaps() {
        let a = Range::canonical(&spec("10.0.0.0/24"), "r").unwrap();
        let b = Range::canonical(&spec("fd00::/64"), "r").unwrap();
        assert!(RangeSet::new(vec![a.clone(), b], "s").is_err());
        assert!(RangeSet::new(vec![a.clone(), a.clone()], "s").is_err());
        assert!(RangeSet::new(vec![], "s").is_err());
    }

    #[test]
    fn candidates_round_robin_and_skip_reserved() {
        let mut s1 = spec("10.0.0.0/29");
        s1.gateway = Some(ip("10.0.0.3"));
        let r1 = Range::canonical(&s1, "r").unwrap();
        let r2 = Range::canonical(&spec("10.0.1.0/30"), "r").unwrap();
        let set = RangeSet::new(vec![r1, r2], "s").unwrap();
        let all: Vec<String> = set.candidates(None).map(|(_, i)| i.to_string()).collect();
        assert_eq!(
            all,
            ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.2"]
        );
        let after: Vec<String> = set
            .candidates(Some(ip("10.0.0.5")))
            .map(|(_, i)| i.to_string())
            .collect();
        assert_eq!(
            after,
            ["10.0.0.6", "10.0.1.2", "10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5"]
        );
        // A last address outside the set starts from the beginning.
        assert_eq!(set.candidates(Some(ip("192.168.0.1"))).count(), 6);
    }

    #[test]
    fn huge_v6_ranges_are_lazy() {
        let set = RangeSet::new(
            vec![Range::canonical(&spec("fd00::/64"), "r").unwrap()],
            "s",
        )
        .unwrap();
        let first: Vec<String> = set
            .candidates(None)
            .take(2)
            .map(|(_, i)| i.to_string())
            .collect();
        assert_eq!(first, ["fd00::2", "fd00::3"]);
    }
}
