//! Masquerade with nftables: `table inet cni_masq`, one verdict-map element per container
//! address, tagged. Layout and reasons in the module doc of [`super`]. Element changes and
//! lookups go straight to the kernel ([`nftelem`], [`nftset`]); the table and the network
//! chains are made through [`Nft`] only when the kernel reports them missing. DEL, CHECK and
//! GC need no engine: they ask the kernel (GC's chain listing and deletion: [`nftrule`]);
//! STATUS checks the engine is there, for ADD's sake, and asks the kernel.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::masq_nft_script::{
    base_script, create_ops, delete_ops, map_of, net_chains_script, TABLE, TABLE_NAME,
};
use super::nftelem::{self, Op};
use super::nftexec::Nft;
use super::nftrule;
use super::nftset::{self, key, INET};
use super::tag::Tag;
use super::Masquerade;
use crate::error::{CniError, Result};
use crate::nfnl::{Nfnl, NlErr};

/// The nftables masquerade driver.
#[derive(Debug, Clone, Copy)]
pub struct NftMasq;

fn socket() -> Result<Nfnl> {
    Nfnl::open_backend("ipMasqBackend nftables")
}

fn nft() -> Result<&'static Nft> {
    Nft::get().map_err(|e| e.context("ipMasqBackend nftables"))
}

fn commit(nl: &mut Nfnl, ops: &[Op]) -> std::result::Result<(), NlErr> {
    nftelem::commit(nl, INET, TABLE_NAME, ops)
}

/// The comment (owner tag) of the element for `ip`; `None` when there is no element (or no
/// table).
fn owner(nl: &mut Nfnl, ip: &IpAddr) -> Result<Option<String>> {
    nftset::get(nl, INET, TABLE_NAME, map_of(ip), &key::addr(ip))
        .map(|e| e.map(|e| e.comment.unwrap_or_default()))
        .map_err(|e| e.cni(&format!("looking up the masquerade entry of {ip}")))
}

/// One element of the masquerade maps.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    ip: IpAddr,
    /// The owner's tag.
    comment: String,
    /// The network chain it jumps to.
    target: String,
}

/// Every element of both maps (GC, and DEL that knows no address of the attachment).
fn list_all(nl: &mut Nfnl) -> Result<Vec<Element>> {
    let mut out = Vec::new();
    for map in ["masq4", "masq6"] {
        let elems = nftset::dump(nl, INET, TABLE_NAME, map)
            .map_err(|e| e.cni(&format!("listing {TABLE} {map}")))?;
        out.extend(elems.into_iter().filter_map(|e| {
            let ip = match e.key.len() {
                4 => <[u8; 4]>::try_from(e.key.as_slice()).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(e.key.as_slice())
                    .ok()
                    .map(IpAddr::from),
                _ => None,
            }?;
            Some(Element {
                ip,
                comment: e.comment.unwrap_or_default(),
                target: e.chain.unwrap_or_default(),
            })
        }));
    }
    Ok(out)
}

impl NftMasq {
    fn setup(tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let nft = nft()?;
        let chains = net_chains_script(tag, addrs);
        match nft.run(&chains) {
            Ok(_) => Ok(()),
            Err(e) if e.is_missing() => {
                nft.apply(&(base_script() + &chains), "creating table inet cni_masq")
            }
            Err(e) => Err(e.cni("creating the network's masquerade chain")),
        }
    }

    /// Replace existing elements for these addresses (a stale attachment's, or our own from an
    /// earlier ADD) in one transaction.
    fn replace(nl: &mut Nfnl, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let mut existing = Vec::new();
        for a in addrs {
            if let Some(other) = owner(nl, &a.ip())? {
                tracing::info!(ip = %a.ip(), owner = other, "replacing a stale masquerade entry");
                existing.push(a.ip());
            }
        }
        let mut ops = delete_ops(&existing);
        ops.extend(create_ops(tag, addrs));
        commit(nl, &ops).map_err(|e| e.cni("replacing masquerade entries"))
    }
}

impl Masquerade for NftMasq {
    fn add(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        if addrs.is_empty() {
            return Ok(());
        }
        let mut nl = socket()?;
        let ops = create_ops(tag, addrs);
        for _ in 0..3 {
            match commit(&mut nl, &ops) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_missing() => Self::setup(tag, addrs)?,
                Err(e) if e.is_exists() => return Self::replace(&mut nl, tag, addrs),
                Err(e) => return Err(e.cni("adding masquerade entries")),
            }
        }
        Err(CniError::try_again(
            "ipMasqBackend nftables: the table or chain vanished again right after setup",
        ))
    }

    fn del(&self, tag: &Tag, hints: &[IpAddr]) -> Result<()> {
        let mut nl = socket()?;
        let mut ours = Vec::new();
        for ip in hints {
            if !ours.contains(ip) && owner(&mut nl, ip)?.as_deref() == Some(tag.as_str()) {
                ours.push(*ip);
            }
        }
        if ours.is_empty() {
            ours = list_all(&mut nl)?
                .into_iter()
                .filter(|e| e.comment == tag.as_str())
                .map(|e| e.ip)
                .collect();
        }
        nftelem::delete_all(&mut nl, INET, TABLE_NAME, &delete_ops(&ours))
            .map_err(|e| e.cni("deleting masquerade entries"))
    }

    fn check(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let mut nl = socket()?;
        for a in addrs {
            match owner(&mut nl, &a.ip())? {
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
        let mut nl = socket()?;
        let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
        let (stale, live): (Vec<Element>, Vec<Element>) =
            list_all(&mut nl)?.into_iter().partition(|e| {
                Tag::in_network(&e.comment, network) && !keep.contains(e.comment.as_str())
            });
        if !stale.is_empty() {
            let ips: Vec<IpAddr> = stale.iter().map(|e| e.ip).collect();
            tracing::info!(?ips, "GC: removing masquerade entries");
            nftelem::delete_all(&mut nl, INET, TABLE_NAME, &delete_ops(&ips))
                .map_err(|e| e.cni("GC of masquerade entries"))?;
        }
        // The network's chains no element jumps to any more.
        let label = super::tag::network_label(network);
        let live: Vec<&str> = live.iter().map(|e| e.target.as_str()).collect();
        let removed =
            nftrule::remove_unused_chains(&mut nl, INET, TABLE_NAME, "net-", &label, &live)
                .map_err(|e| e.cni(&format!("GC: listing the chains of {TABLE}")))?;
        if !removed.is_empty() {
            tracing::info!(?removed, "GC: removed unused network chains");
        }
        Ok(())
    }

    fn status(&self) -> Result<()> {
        Nft::ready("ipMasqBackend nftables")
    }
}
