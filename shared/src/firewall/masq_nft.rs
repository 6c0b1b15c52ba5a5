//! Masquerade with nftables: `table inet cni_masq`, one verdict-map element per container
//! address, tagged. Layout and reasons in the module doc of [`super`].

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::nftexec::{Nft, NftError};
pub use super::nftjson::{chains_of, comment_in, elements_of, Element};
use super::tag::{fnv1a, Tag};
use super::{subnet_of, Masquerade};
use crate::error::{CniError, Result};

pub const TABLE: &str = "inet cni_masq";

/// The nftables masquerade driver.
#[derive(Debug, Clone, Copy)]
pub struct NftMasq;

fn map_of(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "masq4"
    } else {
        "masq6"
    }
}

/// The table, the two maps and the base chain. Idempotent (the base chain's rules are flushed
/// and re-added in the same transaction).
pub fn base_script() -> String {
    format!(
        "add table {TABLE}\n\
         add map {TABLE} masq4 {{ type ipv4_addr : verdict; }}\n\
         add map {TABLE} masq6 {{ type ipv6_addr : verdict; }}\n\
         add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {TABLE} postrouting\n\
         add rule {TABLE} postrouting ip saddr vmap @masq4\n\
         add rule {TABLE} postrouting ip6 saddr vmap @masq6\n"
    )
}

/// The chain shared by the attachments of one network with addresses in one subnet.
pub fn net_chain_name(tag: &Tag, addr: &IpNetwork) -> String {
    let key = format!("{} {}", tag.network_label(), subnet_of(addr));
    format!("net-{:016x}", fnv1a(key.as_bytes()))
}

/// Create (or refresh) the network chains the addresses need. Idempotent.
pub fn net_chains_script(tag: &Tag, addrs: &[IpNetwork]) -> String {
    let mut s = String::new();
    let mut seen = HashSet::new();
    for a in addrs {
        let name = net_chain_name(tag, a);
        if !seen.insert(name.clone()) {
            continue;
        }
        let subnet = subnet_of(a);
        let (proto, mcast) = if a.is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        s.push_str(&format!(
            "add chain {TABLE} {name}\n\
             flush chain {TABLE} {name}\n\
             add rule {TABLE} {name} {proto} daddr != {subnet} {proto} daddr != {mcast} \
             masquerade comment \"{} {subnet}\"\n",
            tag.network_label()
        ));
    }
    s
}

/// One `create element` per address (fails with EEXIST when an address has an entry).
pub fn create_script(tag: &Tag, addrs: &[IpNetwork]) -> String {
    addrs
        .iter()
        .map(|a| {
            format!(
                "create element {TABLE} {} {{ {} comment \"{tag}\" : jump {} }}\n",
                map_of(&a.ip()),
                a.ip(),
                net_chain_name(tag, a)
            )
        })
        .collect()
}

pub fn delete_script(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(|ip| format!("delete element {TABLE} {} {{ {ip} }}\n", map_of(ip)))
        .collect()
}

/// The comment of the element for `ip`, from `get element` text output; `None` when there is
/// no element (or no table).
fn owner(nft: &Nft, ip: &IpAddr) -> Result<Option<String>> {
    match nft.run(&format!("get element {TABLE} {} {{ {ip} }}", map_of(ip))) {
        Ok(text) => Ok(Some(comment_in(&text).unwrap_or_default())),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e.cni(&format!("looking up the masquerade entry of {ip}"))),
    }
}

/// Every element of both maps.
fn list_all(nft: &Nft) -> Result<Vec<Element>> {
    let mut out = Vec::new();
    for map in ["masq4", "masq6"] {
        match nft.run_json(&format!("list map {TABLE} {map}")) {
            Ok(v) => out.extend(elements_of(&v)),
            Err(e) if e.is_missing() => {}
            Err(e) => return Err(e.cni(&format!("listing {TABLE} {map}"))),
        }
    }
    Ok(out)
}

fn run(nft: &Nft, script: &str, what: &str) -> Result<()> {
    nft.run(script).map(drop).map_err(|e| e.cni(what))
}

impl NftMasq {
    fn setup(nft: &Nft, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let chains = net_chains_script(tag, addrs);
        match nft.run(&chains) {
            Ok(_) => Ok(()),
            Err(e) if e.is_missing() => run(
                nft,
                &(base_script() + &chains),
                "creating table inet cni_masq",
            ),
            Err(e) => Err(e.cni("creating the network's masquerade chain")),
        }
    }

    /// Replace existing elements for these addresses (a stale attachment's, or our own from an
    /// earlier ADD) in one transaction.
    fn replace(nft: &Nft, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let mut existing = Vec::new();
        for a in addrs {
            if let Some(other) = owner(nft, &a.ip())? {
                tracing::info!(ip = %a.ip(), owner = other, "replacing a stale masquerade entry");
                existing.push(a.ip());
            }
        }
        let script = delete_script(&existing) + &create_script(tag, addrs);
        run(nft, &script, "replacing masquerade entries")
    }
}

impl Masquerade for NftMasq {
    fn add(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let nft = Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))?;
        let script = create_script(tag, addrs);
        let mut last = NftError(String::new());
        for _ in 0..3 {
            match nft.run(&script) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_missing() => Self::setup(nft, tag, addrs)?,
                Err(e) if e.is_exists() => return Self::replace(nft, tag, addrs),
                Err(e) => return Err(e.cni("adding masquerade entries")),
            }
            last = NftError("the table or chain vanished again right after setup".into());
        }
        Err(last.cni("adding masquerade entries"))
    }

    fn del(&self, tag: &Tag, hints: &[IpAddr]) -> Result<()> {
        let nft = Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))?;
        let mut ours = Vec::new();
        for ip in hints {
            if !ours.contains(ip) && owner(nft, ip)?.as_deref() == Some(tag.as_str()) {
                ours.push(*ip);
            }
        }
        if ours.is_empty() {
            ours = list_all(nft)?
                .into_iter()
                .filter(|e| e.comment == tag.as_str())
                .map(|e| e.ip)
                .collect();
        }
        if ours.is_empty() {
            return Ok(());
        }
        run(nft, &delete_script(&ours), "deleting masquerade entries")
    }

    fn check(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let nft = Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))?;
        for a in addrs {
            match owner(nft, &a.ip())? {
                Some(c) if c == tag.as_str() => {}
                Some(c) => {
                    return Err(CniError::internal(format!(
                        "ipMasq: the masquerade entry of {} belongs to {c:?}, not {tag}",
                        a.ip()
                    )))
                }
                None => {
                    return Err(CniError::internal(format!(
                        "ipMasq: no masquerade entry for {} in table {TABLE}",
                        a.ip()
                    )))
                }
            }
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>) -> Result<()> {
        let nft = Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))?;
        let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
        // GC is rare: one listing of our own table serves both steps.
        let table = match nft.run_json(&format!("list table {TABLE}")) {
            Ok(v) => v,
            Err(e) if e.is_missing() => return Ok(()),
            Err(e) => return Err(e.cni("listing table inet cni_masq")),
        };
        let (stale, live): (Vec<Element>, Vec<Element>) =
            elements_of(&table).into_iter().partition(|e| {
                Tag::in_network(&e.comment, network) && !keep.contains(e.comment.as_str())
            });
        if !stale.is_empty() {
            let ips: Vec<IpAddr> = stale.iter().map(|e| e.ip).collect();
            tracing::info!(?ips, "GC: removing masquerade entries");
            run(nft, &delete_script(&ips), "GC of masquerade entries")?;
        }
        // The network's chains no element jumps to any more. A concurrent ADD that needs one
        // again either makes the deletion fail (EBUSY: the chain stays, fine) or finds it
        // missing and creates it anew.
        let label = super::tag::network_label(network);
        let orphans: Vec<String> = chains_of(&table, "net-", &label)
            .into_iter()
            .filter(|c| !live.iter().any(|e| &e.target == c))
            .collect();
        if !orphans.is_empty() {
            let script: String = orphans
                .iter()
                .map(|c| format!("delete chain {TABLE} {c}\n"))
                .collect();
            if let Err(e) = nft.run(&script) {
                tracing::info!("GC: network chains still in use: {}", e.0.trim());
            }
        }
        Ok(())
    }

    fn status(&self) -> Result<()> {
        let nft = Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))?;
        // A read-only round trip: the kernel must speak nf_tables too.
        nft.run("list tables").map(drop).map_err(|e| {
            CniError::not_available(format!(
                "ipMasqBackend nftables: the kernel refused a listing: {}",
                e.0.trim()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn scripts() {
        let tag = Tag::new("mynet", "ctr1", "eth0");
        let addrs = [net("10.22.0.5/16"), net("fd00::5/64")];
        let c4 = net_chain_name(&tag, &addrs[0]);
        let c6 = net_chain_name(&tag, &addrs[1]);
        assert_ne!(c4, c6);
        assert_eq!(
            c4,
            net_chain_name(&Tag::new("mynet", "other", "eth1"), &addrs[0])
        );
        assert_eq!(
            create_script(&tag, &addrs),
            format!(
                "create element inet cni_masq masq4 {{ 10.22.0.5 comment \"cni:mynet/ctr1/eth0\" : jump {c4} }}\n\
                 create element inet cni_masq masq6 {{ fd00::5 comment \"cni:mynet/ctr1/eth0\" : jump {c6} }}\n"
            )
        );
        let chains = net_chains_script(&tag, &[addrs[0], net("10.22.0.6/16"), addrs[1]]);
        assert_eq!(chains.matches("add chain").count(), 2, "{chains}");
        assert!(chains.contains(&format!(
            "add rule inet cni_masq {c4} ip daddr != 10.22.0.0/16 ip daddr != 224.0.0.0/4 \
             masquerade comment \"cni:mynet 10.22.0.0/16\""
        )));
        assert!(chains.contains("ip6 daddr != fd00::/64 ip6 daddr != ff00::/8 masquerade"));
        assert_eq!(
            delete_script(&[addrs[1].ip()]),
            "delete element inet cni_masq masq6 { fd00::5 }\n"
        );
        assert!(base_script().contains("ip saddr vmap @masq4"));
    }
}
