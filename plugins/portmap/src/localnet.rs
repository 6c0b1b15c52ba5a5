//! `route_localnet`: lets the host reach a mapping at `127.0.0.1:hostPort`.
//!
//! A connection from the host to 127.0.0.1 is DNATed to the container in the output hook and
//! then has to leave through the interface that routes to the container with source 127.0.0.1
//! (masqueraded to the interface's address in postrouting); the replies come back to 127.0.0.1
//! through the same interface. The kernel drops both as martians unless
//! `net.ipv4.conf.<interface>.route_localnet` is 1. Like the reference, we set it on that one
//! interface (the bridge), never on `all`. IPv6 has no such switch: `::1` is not mapped.
//!
//! Read and written through netlink (`IFLA_INET_CONF`), not `/proc/sys`: a lookup there walks
//! one directory entry per namespace whose keys anyone looked up through the host's `/proc`
//! (the reference plugins set container sysctls that way), ~0.9 ms next to 1000 of them.

use std::net::IpAddr;

use cni_shared::netlink::{Family, Netlink, RouteFilter, MAIN_TABLE};
use cni_shared::spec::CniResult;
use cni_shared::Result;

/// The interface of the main table's most specific route to `ip`.
fn route_link(nl: &Netlink, ip: IpAddr) -> Result<Option<String>> {
    let filter = RouteFilter {
        family: Some(Family::V4),
        table: Some(MAIN_TABLE),
        oif: None,
    };
    let best = nl
        .routes(&filter)?
        .into_iter()
        .filter(|r| r.oif.is_some() && r.dst.contains(ip))
        .max_by_key(|r| r.dst.prefix());
    match best.and_then(|r| r.oif) {
        Some(oif) => Ok(nl.link(oif)?.map(|l| l.name)),
        None => Ok(None),
    }
}

/// Whether interface `name` exists and has route_localnet on.
fn is_on(nl: &Netlink, name: &str) -> Result<bool> {
    Ok(nl.link(name)?.is_some_and(|l| l.route_localnet))
}

/// Enable route_localnet for the container address `ip`. Cheap when done already: a host-side
/// interface of the prevResult (the bridge) that has it set is taken as the route's.
pub fn enable(prev: &CniResult, ip: IpAddr) -> Result<()> {
    let nl = Netlink::current()?;
    let hosts: Vec<&str> = prev
        .interfaces
        .iter()
        .filter(|i| i.sandbox.is_empty() && !i.name.is_empty())
        .map(|i| i.name.as_str())
        .collect();
    for h in &hosts {
        if is_on(&nl, h)? {
            return Ok(());
        }
    }
    let targets: Vec<String> = match route_link(&nl, ip) {
        Ok(Some(name)) => vec![name],
        Ok(None) => hosts.iter().map(|h| h.to_string()).collect(),
        Err(e) => {
            tracing::warn!("finding the interface that routes to {ip}: {e}");
            hosts.iter().map(|h| h.to_string()).collect()
        }
    };
    for t in &targets {
        if !is_on(&nl, t)? {
            tracing::debug!(interface = t, "route_localnet=1");
            nl.set_route_localnet(t.as_str())?;
        }
    }
    Ok(())
}
