//! Routes: `ip route add|replace|del|show`.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Family, Netlink, NlError, NlResultExt};
use crate::error::{CniError, Result};

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// Route scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Universe,
    Link,
    Host,
    Other(u8),
}

impl Scope {
    fn to_nl(self) -> RouteScope {
        match self {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(s) => RouteScope::from(s),
        }
    }

    fn from_nl(s: RouteScope) -> Scope {
        match s {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            other => Scope::Other(u8::from(other)),
        }
    }
}

/// A unicast route: what to add or delete, and what listing returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route. Host bits are ignored.
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// `None` when adding: `link` for an IPv4 route without gateway, else `universe`.
    pub scope: Option<Scope>,
    /// `None` when adding: the main table.
    pub table: Option<u32>,
    /// Priority (`metric`).
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// The gateway is reachable on `oif` even without a matching connected route.
    pub onlink: bool,
}

impl Route {
    /// A route to `dst`; add details with the builder methods.
    pub fn to(dst: IpNetwork) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            src: None,
            scope: None,
            table: None,
            metric: None,
            mtu: None,
            advmss: None,
            onlink: false,
        }
    }

    /// The default route of a family.
    pub fn default_for(family: Family) -> Route {
        let ip: IpAddr = match family {
            Family::V4 => std::net::Ipv4Addr::UNSPECIFIED.into(),
            Family::V6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
        };
        // Prefix 0 is valid for both families; the fallback is never taken.
        Route::to(IpNetwork::new(ip, 0).unwrap_or_else(|_| IpNetwork::from(ip)))
    }

    pub fn via(mut self, gw: IpAddr) -> Route {
        self.gateway = Some(gw);
        self
    }
    pub fn dev(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }
    pub fn src(mut self, src: IpAddr) -> Route {
        self.src = Some(src);
        self
    }
    pub fn scope(mut self, s: Scope) -> Route {
        self.scope = Some(s);
        self
    }
    pub fn table(mut self, t: u32) -> Route {
        self.table = Some(t);
        self
    }
    pub fn metric(mut self, m: u32) -> Route {
        self.metric = Some(m);
        self
    }
    pub fn mtu(mut self, m: u32) -> Route {
        self.mtu = Some(m);
        self
    }
    pub fn advmss(mut self, m: u32) -> Route {
        self.advmss = Some(m);
        self
    }
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn family(&self) -> Family {
        Family::of(&self.dst.ip())
    }

    pub fn is_default(&self) -> bool {
        self.dst.prefix() == 0
    }

    /// The request message. `for_delete` leaves protocol, type and (unless given) scope as
    /// wildcards, like `ip route del`.
    fn message(&self, for_delete: bool) -> RouteMessage {
        let mut m = RouteMessage::default();
        let h = &mut m.header;
        h.address_family = self.family().af();
        h.destination_prefix_length = self.dst.prefix();
        let table = self.table.unwrap_or(MAIN_TABLE);
        h.table = u8::try_from(table).unwrap_or(0);
        if for_delete {
            h.scope = self.scope.map_or(RouteScope::NoWhere, Scope::to_nl);
        } else {
            h.protocol = RouteProtocol::Boot;
            h.kind = RouteType::Unicast;
            let auto = if self.family() == Family::V4 && self.gateway.is_none() {
                Scope::Link
            } else {
                Scope::Universe
            };
            h.scope = self.scope.unwrap_or(auto).to_nl();
        }
        if self.onlink {
            h.flags |= RouteFlags::Onlink;
        }
        let a = &mut m.attributes;
        a.push(RouteAttribute::Table(table));
        if self.dst.prefix() > 0 {
            a.push(RouteAttribute::Destination(self.dst.network().into()));
        }
        if let Some(gw) = self.gateway {
            a.push(RouteAttribute::Gateway(gw.into()));
        }
        if let Some(oif) = self.oif {
            a.push(RouteAttribute::Oif(oif));
        }
        if let Some(src) = self.src {
            a.push(RouteAttribute::PrefSource(src.into()));
        }
        if let Some(p) = self.metric {
            a.push(RouteAttribute::Priority(p));
        }
        let mut metrics = Vec::new();
        if let Some(v) = self.mtu {
            metrics.push(RouteMetric::Mtu(v));
        }
        if let Some(v) = self.advmss {
            metrics.push(RouteMetric::Advmss(v));
        }
        if !metrics.is_empty() {
            a.push(RouteAttribute::Metrics(metrics));
        }
        m
    }
}

/// Which routes to list; every field narrows the kernel's dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// `None`: both families (two dumps).
    pub family: Option<Family>,
    /// `None`: every table (including `local`).
    pub table: Option<u32>,
    pub oif: Option<u32>,
}

impl Netlink {
    fn newroute(&self, r: &Route, flags: u16) -> std::result::Result<(), NlError> {
        self.request(RouteNetlinkMessage::NewRoute(r.message(false)), flags)
            .map(drop)
    }

    /// `ip route add`. An existing route is an error (EEXIST); see [`Netlink::replace_route`].
    pub fn add_route(&self, r: &Route) -> Result<()> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        self.newroute(r, flags)
            .or_nl(|| format!("adding route {}", describe(r)))
    }

    /// `ip route replace`: create, or overwrite the route with the same destination, table,
    /// metric (and TOS). Idempotent.
    pub fn replace_route(&self, r: &Route) -> Result<()> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.newroute(r, flags)
            .or_nl(|| format!("replacing route {}", describe(r)))
    }

    /// `ip route del`: fields left `None` match anything. `Ok(false)` when no route matched.
    pub fn delete_route(&self, r: &Route) -> Result<bool> {
        match self.request(
            RouteNetlinkMessage::DelRoute(r.message(true)),
            NLM_F_REQUEST | NLM_F_ACK,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.is_gone() => Ok(false),
            Err(e) => Err(e.cni(format!("deleting route {}", describe(r)))),
        }
    }

    /// Unicast routes matching `f`.
    pub fn routes(&self, f: &RouteFilter) -> Result<Vec<Route>> {
        let families = match f.family {
            Some(fam) => vec![fam],
            None => vec![Family::V4, Family::V6],
        };
        let mut out = Vec::new();
        for fam in families {
            let mut m = RouteMessage::default();
            m.header.address_family = fam.af();
            if let Some(t) = f.table {
                m.header.table = u8::try_from(t).unwrap_or(0);
                m.attributes.push(RouteAttribute::Table(t));
            }
            if let Some(oif) = f.oif {
                m.attributes.push(RouteAttribute::Oif(oif));
            }
            let replies =
                match self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_REQUEST | NLM_F_DUMP) {
                    Ok(r) => r,
                    // The table or the interface does not exist: no routes.
                    Err(e) if e.is_gone() => continue,
                    Err(e) => return Err(e.cni(format!("listing {fam:?} routes"))),
                };
            for r in replies {
                let RouteNetlinkMessage::NewRoute(rm) = r else {
                    continue;
                };
                if let Some(route) = decode(&rm)? {
                    let keep = f.table.is_none_or(|t| route.table == Some(t))
                        && f.oif.is_none_or(|o| route.oif == Some(o));
                    if keep {
                        out.push(route);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The output interface of the main table's default route of `family` (lowest metric).
    pub fn default_route_link(&self, family: Family) -> Result<Option<u32>> {
        let f = RouteFilter {
            family: Some(family),
            table: Some(MAIN_TABLE),
            oif: None,
        };
        Ok(self
            .routes(&f)?
            .into_iter()
            .filter(|r| r.is_default() && r.oif.is_some())
            .min_by_key(|r| r.metric.unwrap_or(0))
            .and_then(|r| r.oif))
    }
}

fn describe(r: &Route) -> String {
    let mut s = if r.is_default() {
        "default".to_string()
    } else {
        r.dst.to_string()
    };
    if let Some(gw) = r.gateway {
        s += &format!(" via {gw}");
    }
    if let Some(oif) = r.oif {
        s += &format!(" dev #{oif}");
    }
    if let Some(t) = r.table {
        s += &format!(" table {t}");
    }
    if let Some(m) = r.metric {
        s += &format!(" metric {m}");
    }
    s
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn decode(m: &RouteMessage) -> Result<Option<Route>> {
    let h = &m.header;
    if h.kind != RouteType::Unicast {
        return Ok(None);
    }
    let unspecified = match h.address_family {
        netlink_packet_route::AddressFamily::Inet => IpAddr::from([0u8; 4]),
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return Ok(None),
    };
    let mut dst_ip = unspecified;
    let mut r = Route::to(IpNetwork::from(unspecified));
    r.table = Some(u32::from(h.table));
    r.scope = Some(Scope::from_nl(h.scope));
    r.onlink = h.flags.contains(RouteFlags::Onlink);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst_ip = ip_of(d).unwrap_or(unspecified),
            RouteAttribute::Gateway(g) => r.gateway = ip_of(g),
            RouteAttribute::Oif(o) => r.oif = Some(*o),
            RouteAttribute::PrefSource(s) => r.src = ip_of(s),
            RouteAttribute::Priority(p) => r.metric = Some(*p),
            RouteAttribute::Table(t) => r.table = Some(*t),
            RouteAttribute::Metrics(ms) => {
                for x in ms {
                    match x {
                        RouteMetric::Mtu(v) => r.mtu = Some(*v),
                        RouteMetric::Advmss(v) => r.advmss = Some(*v),
                        _ => {}
                    }
                }
            }
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    r.oif = r.oif.or(Some(hop.interface_index));
                    for ha in &hop.attributes {
                        if let RouteAttribute::Gateway(g) = ha {
                            r.gateway = r.gateway.or(ip_of(g));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    r.dst = IpNetwork::new(dst_ip, h.destination_prefix_length).map_err(|e| {
        CniError::internal(format!(
            "kernel reported route to {dst_ip}/{}: {e}",
            h.destination_prefix_length
        ))
    })?;
    Ok(Some(r))
}
