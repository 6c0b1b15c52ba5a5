//! The container side of an attachment, shared by the main plugins (bridge, macvlan, vxlan):
//! apply an IPAM result to the container's interface (addresses, routes, up, IPv6 DAD and
//! neighbour-notify settings, on request no IPv6 link-local address), verify it for CHECK, and
//! describe links as result interfaces.

use std::net::IpAddr;

use ipnetwork::{IpNetwork, Ipv6Network};

use crate::error::{CniError, Result};
use crate::netlink::{
    AddrGenMode, AddrOpts, Family, Link, Netlink, Route as NlRoute, RouteFilter, Scope,
};
use crate::netns::NetNs;
use crate::spec::{CniResult, Interface, Route};
use crate::sysctl;

/// How to bring the container interface up.
#[derive(Debug, Clone, Copy, Default)]
pub struct IfaceOpts {
    /// Run IPv6 duplicate address detection. Off by default in the plugins: DAD delays IPv6 by
    /// ~2 s (the reference's issue #680), and a hairpin bridge port echoes the probes. Off
    /// means every IPv6 address is added with `IFA_F_NODAD` — the link-local one too: before
    /// the link comes up we add the address the kernel would make (`fe80::` + EUI-64 of the
    /// MAC, its `addrgenmode eui64` default), and the kernel's own attempt then finds it there.
    /// So no `accept_dad=0` in the container's `/proc/sys`, whose first lookup in a new
    /// namespace costs ~1 ms per 1000 namespaces on the host (and each namespace looked up
    /// there makes every later IPv6 sysctl lookup on the host slower). A link in another
    /// `addrgenmode` (stable privacy, random) gets `accept_dad=0` as before.
    pub enable_dad: bool,
    /// Announce the interface's MAC at once (`arp_notify`, `ndisc_notify`), so neighbours learn a
    /// new MAC for a reused address (macvlan).
    pub notify_neighbours: bool,
    /// No IPv6 link-local address on the interface (`addrgenmode none`, set before it comes
    /// up) when the result gives it no IPv6 address, so none of the multicast a kernel sends
    /// for one (MLD reports, router solicitations that repeat with a backoff up to an hour),
    /// which a bridge floods to every port. Done through netlink, not `/proc/sys`: the first
    /// `/proc/sys/net` lookup in a new namespace costs ~1 ms per 1000 namespaces on the host.
    /// The config key `disableIPv6LinkLocal`, off by default (the reference keeps the address).
    pub no_ipv6_link_local: bool,
}

/// The addresses of `result` that belong to interface number `iface_idx` (or to no interface).
pub fn addresses_for(result: &CniResult, iface_idx: usize) -> Vec<IpNetwork> {
    result
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == iface_idx))
        .map(|ip| ip.address)
        .collect()
}

/// The gateway of the first address of the family of `dst` that has one.
fn default_gateway(result: &CniResult, v4: bool) -> Option<IpAddr> {
    result
        .ips
        .iter()
        .filter(|ip| ip.address.is_ipv4() == v4)
        .find_map(|ip| ip.gateway)
}

/// The kernel route for a result route on interface `oif`: a route without `gw` goes via the
/// gateway of its family's first address, as in the reference.
pub fn kernel_route(result: &CniResult, r: &Route, oif: u32) -> NlRoute {
    let mut k = NlRoute::to(r.dst).dev(oif);
    if let Some(gw) = r.gw.or_else(|| default_gateway(result, r.dst.is_ipv4())) {
        k = k.via(gw);
    }
    if let Some(m) = r.mtu {
        k = k.mtu(m);
    }
    if let Some(m) = r.advmss {
        k = k.advmss(m);
    }
    if let Some(p) = r.priority {
        k = k.metric(p);
    }
    if let Some(t) = r.table {
        k = k.table(t);
    }
    if let Some(s) = r.scope {
        k = k.scope(Scope::Other(s));
    }
    k
}

/// Configure interface `ifname` inside `ns` (reached through `nl`, a socket opened in `ns`) with
/// the addresses and routes of `result` meant for interface number `iface_idx`, and bring it up.
pub fn configure_iface(
    ns: &NetNs,
    nl: &Netlink,
    ifname: &str,
    result: &CniResult,
    iface_idx: usize,
    opts: IfaceOpts,
) -> Result<Link> {
    let link = nl.link(ifname)?.ok_or_else(|| {
        CniError::internal(format!("interface {ifname} vanished from the container"))
    })?;
    let addrs = addresses_for(result, iface_idx);
    let has_v6 = addrs.iter().any(|a| a.is_ipv6());
    let link_local = if has_v6 && !opts.enable_dad {
        nodad_link_local(&link, &addrs)
    } else {
        None
    };
    let no_dad_sysctl = has_v6 && !opts.enable_dad && link_local.is_none();
    if no_dad_sysctl || (has_v6 && opts.notify_neighbours) {
        // IPv6 device settings have no netlink setter: /proc/sys, in the container (through
        // a procfs instance of our own, which leaves no entries in the host's /proc).
        let name = ifname.to_string();
        ns.run(move || -> Result<()> {
            if no_dad_sysctl {
                sysctl::set_in_container(&["net", "ipv6", "conf", &name, "accept_dad"], "0")?;
            }
            if opts.notify_neighbours {
                sysctl::set_in_container(&["net", "ipv6", "conf", &name, "ndisc_notify"], "1")?;
            }
            Ok(())
        })??;
    }
    if opts.notify_neighbours {
        nl.set_arp_notify(link.index)?;
    }
    if opts.no_ipv6_link_local && !has_v6 {
        nl.set_ipv6_addr_gen_none(link.index)?;
    }
    let addr_opts = AddrOpts {
        nodad: !opts.enable_dad,
    };
    for a in link_local.iter().chain(&addrs) {
        nl.add_address(link.index, *a, &addr_opts)
            .map_err(|e| e.context(format!("adding {a} to {ifname}")))?;
    }
    nl.set_up(&link)?;
    for r in &result.routes {
        let k = kernel_route(result, r, link.index);
        nl.add_route(&k)
            .map_err(|e| e.context(format!("adding route {} to {ifname}", r.dst)))?;
    }
    Ok(link)
}

/// The IPv6 link-local address the kernel will make for `link` when it comes up (`fe80::/64`,
/// as the kernel adds it, with its prefix route), if we can add it first (without DAD): the
/// link is down, its `addrgenmode` is `eui64` and it has a MAC. `None` as well when IPAM hands
/// out that very address (it is added as IPAM's then).
fn nodad_link_local(link: &Link, addrs: &[IpNetwork]) -> Option<IpNetwork> {
    let eui64 = link.ipv6_addr_gen == Some(AddrGenMode::Eui64);
    let ll = link.mac?.ipv6_link_local();
    let from_ipam = addrs.iter().any(|a| a.ip() == IpAddr::V6(ll));
    if !eui64 || link.up || from_ipam {
        return None;
    }
    Ipv6Network::new(ll, 64).ok().map(IpNetwork::V6)
}

/// CHECK: interface `ifname` exists, is up, and carries the addresses and routes of `result`
/// meant for interface number `iface_idx` (a later plugin in the chain may add more), and the
/// settings of `opts` that can be read back (`arp_notify`, `addrgenmode none`).
pub fn check_iface(
    nl: &Netlink,
    ifname: &str,
    result: &CniResult,
    iface_idx: usize,
    opts: IfaceOpts,
) -> Result<Link> {
    let link = nl.link(ifname)?.ok_or_else(|| {
        CniError::internal(format!("CHECK: {ifname} is missing in the container"))
    })?;
    if !link.up {
        return Err(CniError::internal(format!("CHECK: {ifname} is down")));
    }
    let addrs = addresses_for(result, iface_idx);
    if opts.notify_neighbours && !link.arp_notify {
        return Err(CniError::internal(format!(
            "CHECK: {ifname} has arp_notify off"
        )));
    }
    if opts.no_ipv6_link_local
        && !addrs.iter().any(|a| a.is_ipv6())
        && link.ipv6_addr_gen.is_some_and(|m| m != AddrGenMode::None)
    {
        return Err(CniError::internal(format!(
            "CHECK: {ifname} makes an IPv6 link-local address (addrgenmode is not none) \
             although disableIPv6LinkLocal is set"
        )));
    }
    let present = nl.addresses(Some(link.index), None)?;
    for want in addrs {
        if !present
            .iter()
            .any(|a| a.net.ip() == want.ip() && a.net.prefix() == want.prefix())
        {
            return Err(CniError::internal(format!(
                "CHECK: {ifname} lacks address {want}"
            )));
        }
    }
    if result.routes.is_empty() {
        return Ok(link);
    }
    let mut routes = Vec::new();
    for family in [Family::V4, Family::V6] {
        routes.extend(nl.routes(&RouteFilter {
            family: Some(family),
            ..RouteFilter::default()
        })?);
    }
    for r in &result.routes {
        let want = kernel_route(result, r, link.index);
        // On this interface as ADD adds it (the gateway defaulted); or on another interface,
        // as the reference checks a route (destination, and gateway when the result names
        // one): a route of an earlier plugin of the chain, whose result this one passed on.
        let found = routes.iter().any(|have| {
            let gateway_ok = if have.oif == Some(link.index) {
                have.gateway == want.gateway
            } else {
                r.gw.is_none_or(|g| have.gateway == Some(g))
            };
            have.dst.network() == want.dst.network()
                && have.dst.prefix() == want.dst.prefix()
                && gateway_ok
                && (want.table.is_none() || have.table == want.table)
        });
        if !found {
            return Err(CniError::internal(format!(
                "CHECK: {ifname} lacks route {}{}",
                r.dst,
                want.gateway
                    .map(|g| format!(" via {g}"))
                    .unwrap_or_default()
            )));
        }
    }
    Ok(link)
}

/// A result interface entry for a link; `sandbox` is the netns path for container interfaces.
pub fn interface_of(link: &Link, sandbox: Option<&NetNs>) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: Some(link.mtu).filter(|m| *m > 0),
        sandbox: sandbox
            .map(|ns| ns.path().display().to_string())
            .unwrap_or_default(),
        ..Interface::default()
    }
}
