//! ADD: bridge, veth, IPAM, gateway, container side, firewall, result; undone on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::{
    delete_bridge_if_unused, ensure_bridge_created, is_unsupported, tag_of, vlan_unsupported,
    AttachConfig,
};
use crate::container::{configure_iface, interface_of};
use crate::error::{CniError, Result};
use crate::firewall::{self, macspoof};
use crate::invoke;
use crate::netlink::{
    AddrOpts, BridgePortFlags, BridgeVlan, Family, Link, Netlink, VethOpts, VlanOpts,
};
use crate::netns::NetNs;
use crate::rollback::Rollback;
use crate::skel::{Command, Request};
use crate::spec::{CniResult, Route};
use crate::sysctl;

/// Attach the container of `req` to the bridge of `cfg`. See the module doc for the steps.
pub fn add(req: &Request, cfg: &AttachConfig) -> Result<CniResult> {
    // Read before anything is changed: a bad one fails the ADD with nothing done.
    let prev = req.prev_result()?;
    let ns = NetNs::open(req.require_netns()?)?;
    let cnl = Netlink::open_in(&ns)?;
    if cnl.link(&req.ifname)?.is_some() {
        return Err(CniError::internal(format!(
            "CNI_IFNAME: interface {} already exists in {}",
            req.ifname,
            ns.path().display()
        )));
    }
    let hnl = Netlink::current()?;
    let (br, created) = ensure_bridge_created(&hnl, cfg)?;

    let mut rb = Rollback::new();
    if created {
        let (hnl_ref, index) = (&hnl, br.index);
        rb.push(
            format!("removing bridge {} made by this ADD", br.name),
            move || delete_bridge_if_unused(hnl_ref, index),
        );
    }
    let ipam = req.conf.ipam_type();
    // IPAM plugins that never look at the container interface run while the veth is created
    // (both take milliseconds); others (dhcp) need the interface first.
    let early = ipam.filter(|t| IPAM_WITHOUT_INTERFACE.contains(t));
    let (veth, early_result) = std::thread::scope(|s| {
        let span = tracing::Span::current();
        let job = early.map(|t| s.spawn(move || span.in_scope(|| invoke::delegate_add(t, req))));
        let veth = create_port(&hnl, cfg, req, &ns, &br);
        let result = job.map(|j| {
            j.join()
                .unwrap_or_else(|_| Err(CniError::internal("the IPAM thread panicked")))
        });
        (veth, result)
    });
    if let (Some(ipam), Some(Ok(_))) = (early, &early_result) {
        rb.push("IPAM DEL", move || {
            invoke::delegate(ipam, Command::Del, req)
        });
    }
    let veth = veth?;
    let host_index = veth.index;
    let hnl_ref = &hnl;
    rb.push(format!("deleting veth {}", veth.name), move || {
        hnl_ref.delete_link(host_index).map(drop)
    });
    let mut result = match (ipam, early_result) {
        (_, Some(r)) => r?,
        (Some(ipam), None) => {
            let r = invoke::delegate_add(ipam, req)?;
            rb.push("IPAM DEL", move || {
                invoke::delegate(ipam, Command::Del, req)
            });
            r
        }
        (None, None) => CniResult::default(),
    };
    if let Some(ipam) = ipam.filter(|_| result.ips.is_empty()) {
        return Err(CniError::internal(format!(
            "IPAM plugin {ipam:?} returned no IP configuration"
        )));
    }
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    let mut gateway_vlan = None;
    if cfg.is_gateway {
        for ip in &mut result.ips {
            if ip.gateway.is_none() {
                ip.gateway = first_host(&ip.address);
            }
        }
        if cfg.is_default_gateway {
            add_default_routes(&mut result);
        }
        gateway_vlan = setup_gateway(&hnl, cfg, &br, &result)?;
        enable_forwarding(&hnl, &result)?;
    }

    let clink = if cfg.disable_container_interface {
        cnl.link(&req.ifname)?.ok_or_else(|| {
            CniError::internal(format!("{} vanished from the container", req.ifname))
        })?
    } else {
        configure_iface(&ns, &cnl, &req.ifname, &result, 2, cfg.iface_opts())?
    };
    // The bridge's MAC may change when its first port is added (a bridge whose MAC nobody
    // set): report the one it has now that ours is added.
    let br_now = hnl.link(br.index)?.unwrap_or(br);
    // The host end comes up last. With both ends up the carrier comes on, and the kernel's
    // link-watch worker enables the bridge port: a walk over every port of the bridge under the
    // RTNL lock (~0.5 ms at 1000 ports). Done earlier, that walk held up our next request
    // (every rtnetlink request takes that lock); what follows now needs no RTNL (nf_tables,
    // the result) and runs meanwhile. The container's addresses and routes do not need the
    // carrier.
    hnl.set_up(veth.index)?;

    let tag = tag_of(req);
    let ips: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
    if cfg.ip_masq && !ips.is_empty() {
        let masq = firewall::masquerade(cfg.masq_backend);
        masq.add(&tag, &ips)?;
        let (tag, hints) = (tag.clone(), ips.iter().map(|i| i.ip()).collect::<Vec<_>>());
        rb.push("removing masquerade", move || masq.del(&tag, &hints));
    }
    if cfg.macspoofchk {
        let mac = clink.mac.ok_or_else(|| {
            CniError::internal(format!("macspoofchk: {} has no MAC address", req.ifname))
        })?;
        macspoof::add(&tag, &veth.name, mac)?;
        let (tag, port) = (tag.clone(), veth.name.clone());
        rb.push("removing macspoofchk entries", move || {
            macspoof::del(&tag, Some((&port, Some(mac))))
        });
    }

    result.interfaces = vec![
        interface_of(&br_now, None),
        interface_of(&veth, None),
        interface_of(&clink, Some(&ns)),
    ];
    result
        .interfaces
        .extend(gateway_vlan.map(|l| interface_of(&l, None)));
    if let Some(dns) = req.conf.dns.as_ref().filter(|d| !d.is_empty()) {
        result.dns = dns.clone();
    }
    rb.commit();
    let shown: Vec<String> = ips.iter().map(ToString::to_string).collect();
    tracing::info!(veth = veth.name, ips = ?shown, "attached");
    Ok(result.after(prev))
}

/// IPAM plugins known not to need the container interface (they only hand out addresses).
const IPAM_WITHOUT_INTERFACE: [&str; 2] = ["host-local", "static"];

/// The veth pair, the container end born in the container as CNI_IFNAME, the host end on the
/// bridge with its port flags and VLANs, still down (see [`add`]). On a failure after creation
/// the pair is deleted.
///
/// The host end is created down and gets IPv6 off before it comes up: a bridge port needs no
/// address of its own, and every IPv6-enabled port would add a link-local address and three
/// routes to the host's table, which the kernel walks whole on every port event (1000
/// containers: 3000 routes, about 2 ms more per ADD and DEL here).
fn create_port(
    nl: &Netlink,
    cfg: &AttachConfig,
    req: &Request,
    ns: &NetNs,
    br: &Link,
) -> Result<Link> {
    let veth = nl.create_veth(
        None,
        &req.ifname,
        ns,
        &VethOpts {
            mtu: cfg.mtu,
            host_mac: None,
            peer_mac: cfg.mac,
            controller: Some(br.index),
            host_up: false,
        },
    )?;
    if let Err(e) = setup_port(nl, cfg, &veth) {
        let _ = nl.delete_link(veth.index);
        return Err(e);
    }
    Ok(veth)
}

/// IPv6 off, port flags and VLANs of the host end.
fn setup_port(nl: &Netlink, cfg: &AttachConfig, veth: &Link) -> Result<()> {
    // Missing key: a kernel without IPv6.
    sysctl::set(&["net", "ipv6", "conf", &veth.name, "disable_ipv6"], "1")?;
    configure_port(nl, cfg, veth)
}

/// Port flags and VLANs of the host end.
fn configure_port(nl: &Netlink, cfg: &AttachConfig, veth: &Link) -> Result<()> {
    let flags = BridgePortFlags {
        hairpin: cfg.hairpin.then_some(true),
        isolated: cfg.port_isolation.then_some(true),
        learning: None,
    };
    nl.set_bridge_port(veth.index, &flags)?;
    if !cfg.uses_vlans() {
        return Ok(());
    }
    let mut vlans: Vec<BridgeVlan> = cfg
        .vlan
        .map(|v| BridgeVlan::one(v).pvid().untagged())
        .into_iter()
        .collect();
    vlans.extend(cfg.vlan_trunk.iter().copied());
    let unsupported = |e: CniError| {
        if is_unsupported(&e) {
            vlan_unsupported(cfg, &e)
        } else {
            e
        }
    };
    nl.add_bridge_vlans(veth.index, &vlans, false)
        .map_err(unsupported)?;
    let carries_1 = vlans.iter().any(|v| v.vid <= 1 && 1 <= v.last);
    if !cfg.preserve_default_vlan && !carries_1 {
        nl.del_bridge_vlans(veth.index, &[BridgeVlan::one(1)], false)
            .map_err(unsupported)?;
    }
    Ok(())
}

/// The first host address of a subnet (the reference's default gateway).
fn first_host(net: &IpNetwork) -> Option<IpAddr> {
    match net.network() {
        IpAddr::V4(a) => Some(IpAddr::V4(Ipv4Addr::from(u32::from(a).checked_add(1)?))),
        IpAddr::V6(a) => Some(IpAddr::V6(Ipv6Addr::from(u128::from(a).checked_add(1)?))),
    }
}

/// isDefaultGateway: a default route via the gateway for each family that has none.
fn add_default_routes(result: &mut CniResult) {
    for v4 in [true, false] {
        let has_default = result
            .routes
            .iter()
            .any(|r| r.dst.is_ipv4() == v4 && r.dst.prefix() == 0);
        let gw = result
            .ips
            .iter()
            .filter(|i| i.address.is_ipv4() == v4)
            .find_map(|i| i.gateway);
        let dst = if v4 {
            IpNetwork::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
        } else {
            IpNetwork::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
        };
        if let (false, Some(gw), Ok(dst)) = (has_default, gw, dst) {
            result.routes.push(Route::new(dst, Some(gw)));
        }
    }
}

/// Each family's gateway on the bridge (or its VLAN interface), once. The VLAN interface when
/// it carries a gateway: the result lists it after the container's, as the reference's does.
fn setup_gateway(
    nl: &Netlink,
    cfg: &AttachConfig,
    br: &Link,
    result: &CniResult,
) -> Result<Option<Link>> {
    let link = match cfg.vlan {
        Some(vid) => ensure_vlan_iface(nl, cfg, br, vid)?,
        None => br.clone(),
    };
    let gateways = result
        .ips
        .iter()
        .filter_map(|ip| {
            let gw = ip.gateway?;
            Some(IpNetwork::new(gw, ip.address.prefix()).map_err(|e| {
                CniError::internal(format!("gateway {gw}/{}: {e}", ip.address.prefix()))
            }))
        })
        .collect::<Result<Vec<_>>>()?;
    for gw in &gateways {
        ensure_gateway_address(nl, cfg, &link, *gw, &gateways)?;
    }
    Ok((!gateways.is_empty() && cfg.vlan.is_some()).then_some(link))
}

/// Put `gw` on `link`. Another address in its subnet is a conflict (code 7) unless
/// `forceAddress`, which replaces it — and every other IPv4 address but this ADD's `gateways`.
fn ensure_gateway_address(
    nl: &Netlink,
    cfg: &AttachConfig,
    link: &Link,
    gw: IpNetwork,
    gateways: &[IpNetwork],
) -> Result<()> {
    let present = nl.addresses(Some(link.index), Some(Family::of(&gw.ip())))?;
    if present.iter().any(|a| a.net == gw) {
        return Ok(());
    }
    let link_local =
        |n: &IpNetwork| matches!(n.ip(), IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80);
    // forceAddress replaces every other IPv4 address, as the reference does (after a subnet
    // change the old gateway goes); IPv6 addresses only in the gateway's subnet.
    let replace_all = cfg.force_address && gw.is_ipv4();
    for a in present
        .iter()
        .filter(|a| !link_local(&a.net) && !gateways.contains(&a.net))
    {
        let overlaps = a.net.contains(gw.ip()) || gw.contains(a.net.ip());
        if !overlaps && !replace_all {
            continue;
        }
        if !cfg.force_address {
            return Err(CniError::invalid_config(format!(
                "isGateway: {} already has address {} in the gateway's subnet, not {gw} \
                 (set forceAddress to replace it)",
                link.name, a.net
            )));
        }
        nl.delete_address(link.index, a.net)?;
    }
    nl.ensure_address(link.index, gw, &AddrOpts { nodad: true })?;
    Ok(())
}

/// `<bridge>.<vid>`: the 802.1q interface carrying the gateway of a VLAN network.
fn ensure_vlan_iface(nl: &Netlink, cfg: &AttachConfig, br: &Link, vid: u16) -> Result<Link> {
    let name = cfg.gateway_link_name();
    if name.len() > 15 {
        return Err(CniError::invalid_config(format!(
            "vlan: the gateway interface name {name} would be longer than 15 bytes; \
             use a shorter bridge name"
        )));
    }
    if let Some(l) = nl.link(&name)? {
        return Ok(l);
    }
    nl.add_bridge_vlans(br.index, &[BridgeVlan::one(vid)], true)
        .map_err(|e| {
            if is_unsupported(&e) {
                vlan_unsupported(cfg, &e)
            } else {
                e
            }
        })?;
    let opts = VlanOpts {
        parent: br.index,
        id: vid,
        mtu: None,
        up: true,
    };
    match nl.create_vlan(&name, &opts) {
        Ok(l) => Ok(l),
        Err(e) => nl.link(&name)?.ok_or(e),
    }
}

/// Forwarding on in the host namespace for each family the container has. Read through
/// netlink ([`Netlink::forwarding`]: no `/proc/sys` lookup on every ADD); written under
/// `/proc/sys` when off, which netlink cannot do.
fn enable_forwarding(hnl: &Netlink, result: &CniResult) -> Result<()> {
    let keys: [(Family, &[&str]); 2] = [
        (Family::V4, &["net", "ipv4", "ip_forward"]),
        (Family::V6, &["net", "ipv6", "conf", "all", "forwarding"]),
    ];
    for (family, key) in keys {
        let has = result
            .ips
            .iter()
            .any(|i| i.address.is_ipv4() == (family == Family::V4));
        if has && hnl.forwarding(family)? != Some(true) {
            sysctl::set(key, "1")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::IpConfig;

    #[test]
    fn gateways_and_default_routes() {
        let n: IpNetwork = "10.1.2.7/24".parse().unwrap();
        assert_eq!(first_host(&n), Some("10.1.2.1".parse().unwrap()));
        let n6: IpNetwork = "fd00::9/64".parse().unwrap();
        assert_eq!(first_host(&n6), Some("fd00::1".parse().unwrap()));
        let mut r = CniResult {
            ips: vec![
                IpConfig::new(n, Some("10.1.2.1".parse().unwrap())),
                IpConfig::new(n6, Some("fd00::1".parse().unwrap())),
            ],
            routes: vec![Route::new("::/0".parse().unwrap(), None)],
            ..CniResult::default()
        };
        add_default_routes(&mut r);
        assert_eq!(r.routes.len(), 2, "v6 already had one: {:?}", r.routes);
        assert_eq!(r.routes[1].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r.routes[1].gw, Some("10.1.2.1".parse().unwrap()));
    }
}
