//! What the reference plugins' nftables backend (containernetworking/plugins ≥ 1.5: bridge's
//! `ipMasqBackend: "nftables"`, portmap's `backend: "nftables"`, and either's choice on a host
//! without iptables) left for an attachment: one rule per mapping, found by its comment.
//!
//! - bridge `ipMasq`: `table inet cni_plugins_masquerade`, chain `masq_checks`, one rule per
//!   container address commented `"<h(network)>-<h(ifname:containerID)>, net: …, if: …, id: …"`
//!   (`h`: the sha512 in hex, cut to 16 characters).
//! - portmap: `table ip cni_hostport` and `table ip6 cni_hostport` (ours is `inet`), chains
//!   `hostports`, `hostip_hostports` and `masquerading`, each rule commented with the container
//!   ID alone.
//! - bridge `macspoofchk`: `table bridge nat` (before 1.6) or `bridge cni_spoofcheck`, chains
//!   `cni-br-iface-<containerID>-<ifname>` and its `-mac` chain, and the base chain's rule
//!   jumping to the first, all commented `macspoofchk-<containerID>-<ifname>`: DEL only.
//!
//! DEL lists the table's rules straight from the kernel (one `NFT_MSG_GETRULE` dump per table,
//! empty when the table is not there: no process; ~0.05 ms for portmap's two) and deletes the
//! attachment's rules by handle in one transaction. Portmap's rules name no network: like the reference's own DEL,
//! ours removes the container's rules of every network, and GC leaves them (it could not tell
//! another network's container from a stale one). GC removes the masquerade rules of this
//! network whose attachment is not valid. The tables and their base chains stay, as the
//! reference leaves them.

use std::collections::HashSet;

use sha2::{Digest, Sha512};

use super::Leftover;
use crate::error::Result;
use crate::firewall::nftrule::{self, Listing, Rule};
use crate::firewall::nftset::{INET, IPV4, IPV6};
use crate::nfnl::Nfnl;
use crate::skel::Request;
use crate::spec::config::GcAttachment;

const MASQ_TABLE: &str = "cni_plugins_masquerade";
const MASQ_CHAIN: &str = "masq_checks";
const HOSTPORT_TABLE: &str = "cni_hostport";
const HOSTPORT_CHAINS: [&str; 3] = ["hostports", "hostip_hostports", "masquerading"];

/// The reference's `hashForNetwork` / the halves of its `hashForInstance`.
fn h16(s: &str) -> String {
    let mut out = String::with_capacity(16);
    for b in &Sha512::digest(s.as_bytes())[..8] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The start of the comment of the reference's masquerade rules of one attachment.
fn masq_instance(network: &str, ifname: &str, container_id: &str) -> String {
    format!(
        "{}-{}",
        h16(network),
        h16(&format!("{ifname}:{container_id}"))
    )
}

/// The bridge family (`NFPROTO_BRIDGE`): the reference's `macspoofchk` tables.
const BRIDGE: u8 = 7;
/// The reference bridge's `macspoofchk` layouts, (table, base chain): `bridge nat` before its
/// move to knftables (1.6), `bridge cni_spoofcheck` since; the attachment's two chains and
/// their comment are named alike in both.
const MACSPOOF_LAYOUTS: [(&str, &str); 2] =
    [("nat", "PREROUTING"), ("cni_spoofcheck", "prerouting")];

fn family_name(family: u8) -> &'static str {
    match family {
        INET => "inet",
        IPV4 => "ip",
        BRIDGE => "bridge",
        _ => "ip6",
    }
}

/// Delete the rules of `table` that `pick` chooses among those `listing` lists, then `chains`
/// ([`nftrule::delete_where`]). What was removed, one "nftables <family> <table> <chain>
/// <comment>" per rule and one "nftables <family> <table> chain <name>" per chain.
fn remove_where(
    nl: &mut Nfnl,
    family: u8,
    table: &str,
    listing: Listing,
    pick: impl Fn(&Rule) -> bool,
    chains: &[&str],
) -> Result<Vec<String>> {
    let deleted = nftrule::delete_where(nl, family, table, listing, pick, chains)
        .map_err(|e| e.cni(&format!("removing the reference plugin's rules in {table}")))?;
    let f = family_name(family);
    let removed: Vec<String> = deleted
        .iter()
        .map(|r| {
            let comment = r.comment.as_deref().unwrap_or_default();
            format!("nftables {f} {table} {} {comment}", r.chain)
        })
        .chain(
            chains
                .iter()
                .map(|c| format!("nftables {f} {table} chain {c}")),
        )
        .collect();
    if !removed.is_empty() {
        tracing::info!(?removed, "removed rules of the reference plugin");
    }
    Ok(removed)
}

/// Where the reference's rules of one attachment live, and which rules of that table they are.
struct AttachmentRules<'a> {
    families: &'static [u8],
    table: &'static str,
    pick: Box<dyn Fn(&Rule) -> bool + 'a>,
}

/// The reference's rules of kind `what` for the request's attachment.
fn attachment_rules(what: Leftover, req: &Request) -> AttachmentRules<'_> {
    match what {
        Leftover::Masquerade => {
            let prefix = masq_instance(&req.conf.name, &req.ifname, &req.container_id);
            let pick = move |r: &Rule| {
                r.chain == MASQ_CHAIN
                    && r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix))
            };
            AttachmentRules {
                families: &[INET],
                table: MASQ_TABLE,
                pick: Box::new(pick),
            }
        }
        Leftover::HostPorts => {
            let pick = |r: &Rule| {
                HOSTPORT_CHAINS.contains(&r.chain.as_str())
                    && r.comment.as_deref() == Some(req.container_id.as_str())
            };
            AttachmentRules {
                families: &[IPV4, IPV6],
                table: HOSTPORT_TABLE,
                pick: Box::new(pick),
            }
        }
    }
}

/// DEL: the attachment's rules of kind `what`.
pub(super) fn remove(nl: Option<&mut Nfnl>, what: Leftover, req: &Request) -> Result<Vec<String>> {
    let Some(nl) = nl else {
        return Ok(Vec::new());
    };
    let rules = attachment_rules(what, req);
    let mut removed = Vec::new();
    for &family in rules.families {
        removed.extend(remove_where(
            nl,
            family,
            rules.table,
            Listing::Table,
            &rules.pick,
            &[],
        )?);
    }
    Ok(removed)
}

/// CHECK: whether the attachment's rules of kind `what` are there (one rule dump per table).
pub(super) fn present(nl: Option<&mut Nfnl>, what: Leftover, req: &Request) -> bool {
    let Some(nl) = nl else {
        return false;
    };
    let rules = attachment_rules(what, req);
    rules.families.iter().any(|&family| {
        nftrule::list(nl, family, rules.table, None)
            .is_ok_and(|listed| listed.iter().any(&rules.pick))
    })
}

/// GC: the masquerade rules of the request's network whose attachment is not in `valid`.
/// Portmap's rules name no network: left to DEL.
pub(super) fn gc(
    nl: Option<&mut Nfnl>,
    what: Leftover,
    req: &Request,
    valid: &[GcAttachment],
) -> Result<Vec<String>> {
    if what != Leftover::Masquerade {
        return Ok(Vec::new());
    }
    let Some(nl) = nl else {
        return Ok(Vec::new());
    };
    let network = req.conf.name.as_str();
    let ours = format!("{}-", h16(network));
    // SHA-512s per valid attachment: computed only when the table holds a rule of this
    // network (on a node that never ran the reference, it holds none).
    let keep = std::cell::OnceCell::new();
    let keep = || -> &HashSet<String> {
        keep.get_or_init(|| {
            valid
                .iter()
                .map(|a| masq_instance(network, &a.ifname, &a.container_id))
                .collect()
        })
    };
    let pick = |r: &Rule| {
        let Some(c) = r.comment.as_deref() else {
            return false;
        };
        // "<16 hex>-<16 hex>, net: …"
        r.chain == MASQ_CHAIN
            && c.starts_with(&ours)
            && c.get(..33)
                .is_some_and(|instance| !keep().contains(instance))
    };
    remove_where(nl, INET, MASQ_TABLE, Listing::Table, pick, &[])
}

/// DEL: the reference bridge's `macspoofchk` entries of the attachment, in either layout: the
/// base chain's rule that sends the port's frames to `cni-br-iface-<containerID>-<ifname>`,
/// that chain and its `-mac` chain (which drops frames of another source MAC). Their names
/// name no network, as the reference's own teardown finds them. One lookup per layout when
/// there is nothing (or the lookup cannot be made).
pub(super) fn remove_macspoof(nl: Option<&mut Nfnl>, req: &Request) -> Result<Vec<String>> {
    let Some(nl) = nl else {
        return Ok(Vec::new());
    };
    let id = format!("{}-{}", req.container_id, req.ifname);
    let (iface_chain, comment) = (format!("cni-br-iface-{id}"), format!("macspoofchk-{id}"));
    let mac_chain = format!("{iface_chain}-mac");
    let mut removed = Vec::new();
    for (table, base) in MACSPOOF_LAYOUTS {
        // Only where the chain is there: one that cannot be asked about (a name over the
        // kernel's 255 bytes, from a long container ID) cannot have been made either.
        if nftrule::exists(nl, BRIDGE, table, Some(&iface_chain)) != Some(true) {
            continue;
        }
        removed.extend(remove_where(
            nl,
            BRIDGE,
            table,
            Listing::Chain(base),
            |r| r.comment.as_deref() == Some(comment.as_str()),
            &[&iface_chain, &mac_chain],
        )?);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_the_reference_plugins() {
        // `printf pmnet | sha512sum`, `printf eth0:Gone-1 | sha512sum`, cut to 16.
        assert_eq!(
            masq_instance("pmnet", "eth0", "Gone-1"),
            "283a4b7588489c88-96fbfd7b3328237e"
        );
        assert_eq!(h16("othernet"), "0e0993d3a5cba48c");
    }
}
