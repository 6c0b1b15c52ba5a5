//! What of an attachment the nftables host port driver finds in the kernel (claims with their
//! DNAT targets, hairpin elements), single-key lookups and map dumps through [`nftset`], and
//! removing it as one nfnetlink batch ([`nftelem`]) before the conntrack flush; GC of unused
//! hairpin chains ([`nftrule`]). No nft engine is needed here.

use std::net::IpAddr;

use super::nft_script::{
    decode_gid, decode_target, delete_hairpin, hairpin_map, Claim, CLAIM_MAPS, TABLE, TABLE_NAME,
};
use super::{DelHint, Flush, Published};
use crate::error::Result;
use crate::firewall::nftelem::{self, Op};
use crate::firewall::nftrule;
use crate::firewall::nftset::{self, Element, INET};
use crate::firewall::Tag;
use crate::nfnl::{Nfnl, NlErr};

/// Apply element changes to our table as one transaction.
pub(super) fn commit(nl: &mut Nfnl, ops: &[Op]) -> std::result::Result<(), NlErr> {
    nftelem::commit(nl, INET, TABLE_NAME, ops)
}

pub(super) fn get(nl: &mut Nfnl, map: &str, key: &[u8]) -> Result<Option<Element>> {
    nftset::get(nl, INET, TABLE_NAME, map, key)
        .map_err(|e| e.cni(&format!("looking up an element of {TABLE} {map}")))
}

fn dump(nl: &mut Nfnl, map: &str) -> Result<Vec<Element>> {
    nftset::dump(nl, INET, TABLE_NAME, map).map_err(|e| e.cni(&format!("listing {TABLE} {map}")))
}

pub(super) fn owned(e: &Option<Element>, tag: &Tag) -> bool {
    e.as_ref()
        .is_some_and(|e| e.comment.as_deref() == Some(tag.as_str()))
}

/// A claim found in the kernel: its group and (when its DNAT element exists) its target.
pub(super) struct Found {
    pub claim: Claim,
    pub gid: u32,
    pub target: Option<(IpAddr, u16)>,
    /// Whether connections may have been NATed through it: its DNAT element's counter is not
    /// zero, or it has none (a map made by an earlier version), or the element is gone. (A
    /// re-ADD that publishes the mapping as it was keeps the element and its count; one that
    /// changes the target replaces it, and the connections to the earlier target are then
    /// left to expire.)
    pub used: bool,
}

impl Found {
    pub fn read(nl: &mut Nfnl, claim: Claim, gid: u32) -> Result<Found> {
        let dnat = get(nl, &claim.dnat_map(gid), &claim.key_bytes())?;
        let target = dnat.as_ref().and_then(|d| decode_target(&d.data));
        let used = target.is_none() || dnat.is_some_and(|d| d.packets != Some(0));
        Ok(Found {
            claim,
            gid,
            target,
            used,
        })
    }

    pub fn delete_ops(&self) -> Vec<Op> {
        let mut ops = vec![self.claim.delete_claim()];
        ops.extend(self.dnat_op());
        ops
    }

    fn dnat_op(&self) -> Option<Op> {
        self.target.map(|_| self.claim.delete_dnat(self.gid))
    }

    pub fn published(&self) -> Published {
        Published {
            mapping: self.claim.mapping(self.target.map_or(0, |t| t.1)),
            target: self.target.map(|t| t.0),
            v6: self.claim.v6,
        }
    }
}

/// How [`remove`] orders its deletions around the conntrack flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Steps {
    /// DEL: every element in one transaction, then the flush (when a removed DNAT element
    /// NATed anything: see [`Found::used`]). A DEL killed before its flush is covered on its
    /// retry by [`hinted`]. (The kernel frees deleted elements after an RCU grace period, and
    /// closing a netfilter socket waits for that: `crate::detach::exit` keeps it off DEL.)
    One,
    /// GC, which has no hints for a retry: the DNAT and hairpin elements, the flush, then the
    /// claims, so that a GC killed half-way finds the claims and flushes on its next run.
    ClaimsLast,
}

/// Remove what was found, calling `flush` once the DNAT is gone (see [`Steps`]) with what it
/// forwarded and `also` (see [`hinted`]). What was removed.
pub(super) fn remove(
    nl: &mut Nfnl,
    found: &[Found],
    hairpins: &[IpAddr],
    steps: Steps,
    also: Vec<Published>,
    flush: &mut Flush,
    what: &str,
) -> Result<Vec<Published>> {
    let claims_now = steps == Steps::One;
    let first: Vec<Op> = found
        .iter()
        .flat_map(|f| {
            let claim = claims_now.then(|| f.claim.delete_claim());
            f.dnat_op().into_iter().chain(claim)
        })
        .chain(hairpins.iter().map(delete_hairpin))
        .collect();
    delete_all(nl, &first, what)?;
    let published: Vec<Published> = found.iter().map(Found::published).collect();
    // A DNAT element that NATed no connection left no conntrack entry: no walk of the
    // kernel's connection table (~13 ms) for it.
    let flushed: Vec<Published> = found
        .iter()
        .filter(|f| f.used)
        .map(Found::published)
        .chain(also)
        .collect();
    if !flushed.is_empty() {
        flush(&flushed);
    }
    if !claims_now {
        let claims: Vec<Op> = found.iter().map(|f| f.claim.delete_claim()).collect();
        delete_all(nl, &claims, what)?;
    }
    Ok(published)
}

/// For DEL: what the runtime's mappings forwarded that DEL did not find — a repeated DEL, or
/// the retry of one killed between its transaction and its flush (one family's entries may be
/// gone while the other's are found). Its connections are flushed all the same: the entries
/// NATed to the attachment's addresses (prevResult) when they are known, else every NATed
/// entry of a host port that no attachment claims now (so no one's live flow). Each flushed
/// family costs a walk of the kernel's connection table (~13 ms), so families the prevResult
/// has no address of are skipped.
pub(super) fn hinted(nl: &mut Nfnl, hint: &DelHint, found: &[Found]) -> Result<Vec<Published>> {
    let mut out = Vec::new();
    for m in hint.mappings.unwrap_or_default() {
        for v6 in [false, true] {
            let Some(m) = m.for_family(v6) else { continue };
            let c = Claim::of(v6, &m);
            if found.iter().any(|f| f.claim == c) {
                continue;
            }
            let target = |t| Published {
                mapping: m,
                target: t,
                v6,
            };
            let addrs: Vec<IpAddr> = hint
                .addrs
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .copied()
                .collect();
            if !hint.addrs.is_empty() {
                // A family the container has no address of forwarded nothing.
                out.extend(addrs.into_iter().map(|a| target(Some(a))));
            } else if get(nl, &c.claims_map(), &c.key_bytes())?.is_none() {
                out.push(target(None));
            }
        }
    }
    Ok(out)
}

/// The claims of the maps whose element comments satisfy `want`.
pub(super) fn claims_where(nl: &mut Nfnl, want: impl Fn(&str) -> bool) -> Result<Vec<Found>> {
    let mut out = Vec::new();
    for (map, v6, with_ip) in CLAIM_MAPS {
        for e in dump(nl, map)? {
            if !want(e.comment.as_deref().unwrap_or_default()) {
                continue;
            }
            if let Some(c) = Claim::decode(v6, with_ip, &e.key) {
                out.push(Found::read(nl, c, decode_gid(&e.data))?);
            }
        }
    }
    Ok(out)
}

/// The hairpin elements (by address) whose comments satisfy `want`.
pub(super) fn hairpins_where(nl: &mut Nfnl, want: impl Fn(&str) -> bool) -> Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for v6 in [false, true] {
        for e in dump(nl, &hairpin_map(v6))? {
            if want(e.comment.as_deref().unwrap_or_default()) {
                if let Some((ip, _)) = decode_target(&[e.key.as_slice(), &[0; 4]].concat()) {
                    out.push(ip);
                }
            }
        }
    }
    Ok(out)
}

/// Delete in one transaction (what vanished meanwhile is skipped).
fn delete_all(nl: &mut Nfnl, ops: &[Op], what: &str) -> Result<()> {
    nftelem::delete_all(nl, INET, TABLE_NAME, ops).map_err(|e| e.cni(what))
}

/// GC: remove the network's masquerade chains (`hp-…`) that no hairpin element jumps to any
/// more, as the masquerade GC does with its network chains ([`nftrule::remove_unused_chains`]).
/// Failures only leave a chain for the next GC.
pub(super) fn remove_orphan_chains(nl: &mut Nfnl, network: &str) {
    let mut live = Vec::new();
    for v6 in [false, true] {
        match dump(nl, &hairpin_map(v6)) {
            Ok(elems) => live.extend(elems.into_iter().filter_map(|e| e.chain)),
            Err(e) => {
                tracing::warn!("GC: {}", e.msg);
                return;
            }
        }
    }
    let live: Vec<&str> = live.iter().map(String::as_str).collect();
    let label = crate::firewall::tag::network_label(network);
    match nftrule::remove_unused_chains(nl, INET, TABLE_NAME, "hp-", &label, &live) {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "GC: removed unused masquerade chains")
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("GC: listing the chains of {TABLE}: {}", e.what),
    }
}
