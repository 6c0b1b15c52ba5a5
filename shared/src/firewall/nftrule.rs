//! Rules of an nf_tables table straight from the kernel: list them (`NFT_MSG_GETRULE`, one
//! dump) with each rule's chain, handle and comment, and delete rules by handle and whole
//! chains (`NFT_MSG_DELRULE`, `NFT_MSG_DELCHAIN`) in one transaction — no process, no ruleset
//! cache. The comment is nft's (the rule's user data) or, in a rule iptables-nft made, its
//! `-m comment` (an xt `comment` match).
//!
//! Used for what others made: the reference plugins' nftables rules
//! ([`super::reference`]), and iptables-nft's `nat` table where our iptables backends delete
//! an attachment's rules ([`super::ipt::nft_delete`]); and for our own tables' GC of a
//! network's shared chains ([`remove_unused_chains`]), CHECK of a chain ([`exists`]) and
//! STATUS ([`answers`]), which so need neither libnftables nor the `nft` binary.

use crate::firewall::nftset::{
    comment_of, NFTA_EXPR_DATA, NFTA_EXPR_NAME, NFTA_LIST_ELEM, SUBSYS_NFTABLES,
};
use crate::nfnl::{attr, attrs, str_of, Attrs, Nfnl, NlErr, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFTA_TABLE_NAME: u16 = 1;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_MATCH_NAME: u16 = 1;
const NFTA_MATCH_INFO: u16 = 3;

/// One rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub handle: u64,
    pub comment: Option<String>,
}

/// The rules of `table` (of `family`), of chain `chain` only when given; empty when the
/// table, the chain or nf_tables is not there.
pub fn list(
    nl: &mut Nfnl,
    family: u8,
    table: &str,
    chain: Option<&str>,
) -> Result<Vec<Rule>, NlErr> {
    let mut a = Attrs::new();
    a.put_str(NFTA_RULE_TABLE, table);
    if let Some(c) = chain {
        a.put_str(NFTA_RULE_CHAIN, c);
    }
    let msg = (SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE;
    let replies = match nl.request(msg, NLM_F_REQUEST | NLM_F_DUMP, family, &a.0) {
        Ok(r) => r,
        Err(e) if e.is_missing() || e.errno == libc::EOPNOTSUPP => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(replies.iter().filter_map(|r| parse(&r.attrs)).collect())
}

fn parse(buf: &[u8]) -> Option<Rule> {
    let handle = attr(buf, NFTA_RULE_HANDLE)?;
    let comment = attr(buf, NFTA_RULE_USERDATA)
        .and_then(comment_of)
        .or_else(|| attr(buf, NFTA_RULE_EXPRESSIONS).and_then(xt_comment));
    Some(Rule {
        chain: str_of(attr(buf, NFTA_RULE_CHAIN)?),
        handle: u64::from_be_bytes(handle.try_into().ok()?),
        comment,
    })
}

/// The text of an xt `comment` match among a rule's expressions (iptables-nft's
/// `-m comment --comment`; its info is the NUL-terminated text).
fn xt_comment(exprs: &[u8]) -> Option<String> {
    attrs(exprs)
        .filter(|(k, _)| *k == NFTA_LIST_ELEM)
        .filter(|(_, e)| attr(e, NFTA_EXPR_NAME).map(str_of).as_deref() == Some("match"))
        .filter_map(|(_, e)| attr(e, NFTA_EXPR_DATA))
        .find(|d| attr(d, NFTA_MATCH_NAME).map(str_of).as_deref() == Some("comment"))
        .and_then(|d| attr(d, NFTA_MATCH_INFO))
        .map(str_of)
}

/// Whether `table` (of `family`) exists — or, with `chain`, that chain in it — asked with one
/// request: `Some(true)`, `Some(false)` (also when nf_tables itself is not there), `None` when
/// it could not be asked.
pub fn exists(nl: &mut Nfnl, family: u8, table: &str, chain: Option<&str>) -> Option<bool> {
    let mut a = Attrs::new();
    let msg = match chain {
        Some(c) => {
            a.put_str(NFTA_CHAIN_TABLE, table)
                .put_str(NFTA_CHAIN_NAME, c);
            NFT_MSG_GETCHAIN
        }
        None => {
            a.put_str(NFTA_TABLE_NAME, table);
            NFT_MSG_GETTABLE
        }
    };
    let msg = (SUBSYS_NFTABLES << 8) | msg;
    match nl.request(msg, NLM_F_REQUEST | NLM_F_ACK, family, &a.0) {
        Ok(_) => Some(true),
        Err(e) if e.is_missing() || e.errno == libc::EOPNOTSUPP => Some(false),
        Err(e) => {
            tracing::debug!("looking up nf_tables {table} {chain:?}: {}", e.what);
            None
        }
    }
}

/// Whether the kernel answers nf_tables requests in this namespace: one dump of the tables of
/// `family` (their names, no rules or elements). STATUS's round trip.
pub fn answers(nl: &mut Nfnl, family: u8) -> Result<(), NlErr> {
    let msg = (SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE;
    nl.request(msg, NLM_F_REQUEST | NLM_F_DUMP, family, &[])
        .map(drop)
}

/// Which rules [`delete_where`] lists to pick from.
#[derive(Debug, Clone, Copy)]
pub enum Listing<'a> {
    /// The whole table's.
    Table,
    /// One chain's.
    Chain(&'a str),
    /// None: only chains are deleted.
    Nothing,
}

/// Rules per transaction in [`delete_where`]: when some vanished meanwhile, the kernel answers
/// each missing one with an error, and those answers must fit the socket's receive buffer.
const CHUNK: usize = 128;

/// List the rules of `table` that `pick` chooses and delete them, then `chains` (those still
/// there), `CHUNK` rules per transaction, the chains with the last. What is gone already is no
/// error: when ENOENT refused a transaction (something vanished meanwhile), the rules are listed
/// again, at most twice more. The rules deleted.
pub fn delete_where(
    nl: &mut Nfnl,
    family: u8,
    table: &str,
    listing: Listing,
    pick: impl Fn(&Rule) -> bool,
    chains: &[&str],
) -> Result<Vec<Rule>, NlErr> {
    let mut deleted = Vec::new();
    let mut tries = 0;
    loop {
        let picked: Vec<Rule> = match listing {
            Listing::Table => list(nl, family, table, None)?,
            Listing::Chain(c) => list(nl, family, table, Some(c))?,
            Listing::Nothing => Vec::new(),
        }
        .into_iter()
        .filter(|r| pick(r))
        .collect();
        let last = picked.len() <= CHUNK;
        let batch: Vec<Rule> = picked.into_iter().take(CHUNK).collect();
        let present: Vec<&str> = if last {
            chains
                .iter()
                .copied()
                .filter(|c| exists(nl, family, table, Some(c)) != Some(false))
                .collect()
        } else {
            Vec::new()
        };
        if batch.is_empty() && present.is_empty() {
            return Ok(deleted);
        }
        match delete(nl, family, table, &batch, &present) {
            Err(e) if e.is_missing() && tries < 2 => tries += 1,
            Err(e) => return Err(e),
            Ok(()) => {
                deleted.extend(batch);
                if last {
                    return Ok(deleted);
                }
            }
        }
    }
}

/// Delete `rules` (of `table`) by handle, then each of `chains` (its rules, then itself), in
/// one transaction: all or nothing. ENOENT when one of them is gone already.
pub fn delete(
    nl: &mut Nfnl,
    family: u8,
    table: &str,
    rules: &[Rule],
    chains: &[&str],
) -> Result<(), NlErr> {
    let mut msgs: Vec<(u16, u16, u8, Vec<u8>)> = Vec::new();
    for r in rules {
        let mut a = Attrs::new();
        a.put_str(NFTA_RULE_TABLE, table)
            .put_str(NFTA_RULE_CHAIN, &r.chain)
            .put(NFTA_RULE_HANDLE, &r.handle.to_be_bytes());
        msgs.push(((SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE, 0, family, a.0));
    }
    for c in chains {
        // A rule deletion without a handle empties the chain.
        let mut flush = Attrs::new();
        flush
            .put_str(NFTA_RULE_TABLE, table)
            .put_str(NFTA_RULE_CHAIN, c);
        msgs.push(((SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE, 0, family, flush.0));
        let mut del = Attrs::new();
        del.put_str(NFTA_CHAIN_TABLE, table)
            .put_str(NFTA_CHAIN_NAME, c);
        msgs.push(((SUBSYS_NFTABLES << 8) | NFT_MSG_DELCHAIN, 0, family, del.0));
    }
    nl.batch(SUBSYS_NFTABLES, &msgs)
}

/// The chains named `<chain_prefix>…` that belong to one network: those with a rule whose
/// comment is `"<network_label> …"` (the network's shared chains: `net-…` of the masquerade,
/// `hp-…` of portmap's hairpin), in the order listed.
pub fn network_chains(rules: &[Rule], chain_prefix: &str, network_label: &str) -> Vec<String> {
    let prefix = format!("{network_label} ");
    let mut out: Vec<String> = Vec::new();
    for r in rules {
        let ours = r.chain.starts_with(chain_prefix)
            && r.comment.as_deref().is_some_and(|c| c.starts_with(&prefix));
        if ours && !out.contains(&r.chain) {
            out.push(r.chain.clone());
        }
    }
    out
}

/// GC of a network's shared chains ([`network_chains`]) that no element jumps to any more
/// (`live`: the chains the maps' elements name), each in a transaction of its own; the chains
/// deleted. A concurrent ADD that needs one again either makes its deletion fail (EBUSY, the
/// kernel counts the chain's users: it stays, fine) or finds it missing and creates it anew;
/// a chain that could not be deleted is said in the log and left for the next GC.
pub fn remove_unused_chains(
    nl: &mut Nfnl,
    family: u8,
    table: &str,
    chain_prefix: &str,
    network_label: &str,
    live: &[&str],
) -> Result<Vec<String>, NlErr> {
    let rules = list(nl, family, table, None)?;
    let mut removed = Vec::new();
    for chain in network_chains(&rules, chain_prefix, network_label) {
        if live.contains(&chain.as_str()) {
            continue;
        }
        match delete(nl, family, table, &[], &[chain.as_str()]) {
            Ok(()) => removed.push(chain),
            Err(e) => tracing::info!("GC: chain {chain} of {table} stays: {}", e.what),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_networks_chains() {
        let rule = |chain: &str, comment: Option<&str>| Rule {
            chain: chain.into(),
            handle: 1,
            comment: comment.map(String::from),
        };
        let rules = [
            rule("net-1", Some("cni:n 10.0.0.0/24")),
            rule("net-2", Some("cni:n2 10.0.1.0/24")),
            rule("hp-3", Some("cni:n 10.0.0.0/24")),
            rule("hp-3", Some("cni:n 10.0.0.0/24")),
            rule("hp-4", Some("cni:n 10.0.2.0/24 all")),
            rule("hp-5", Some("cni:nx 10.0.3.0/24")),
            rule("postrouting", None),
        ];
        assert_eq!(network_chains(&rules, "net-", "cni:n"), ["net-1"]);
        assert_eq!(network_chains(&rules, "hp-", "cni:n"), ["hp-3", "hp-4"]);
        assert_eq!(
            network_chains(&rules, "hp-", "cni:n2"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn parses_a_rule_with_either_comment() {
        let mut udata = vec![0u8, 7];
        udata.extend_from_slice(b"Gone-1\0");
        let mut a = Attrs::new();
        a.put_str(NFTA_RULE_TABLE, "cni_hostport")
            .put_str(NFTA_RULE_CHAIN, "hostports")
            .put(NFTA_RULE_HANDLE, &9u64.to_be_bytes())
            .put(NFTA_RULE_USERDATA, &udata);
        assert_eq!(
            parse(&a.0),
            Some(Rule {
                chain: "hostports".into(),
                handle: 9,
                comment: Some("Gone-1".into())
            })
        );
        // iptables-nft: `-m comment` as an xt match, its info padded to 256 bytes.
        let mut info = b"cni:n/c/eth0".to_vec();
        info.resize(256, 0);
        let mut x = Attrs::new();
        x.put_str(NFTA_RULE_CHAIN, "CNI-HOSTPORT-DNAT")
            .put(NFTA_RULE_HANDLE, &4u64.to_be_bytes())
            .nest(NFTA_RULE_EXPRESSIONS, |l| {
                l.nest(NFTA_LIST_ELEM, |e| {
                    e.put_str(NFTA_EXPR_NAME, "counter");
                })
                .nest(NFTA_LIST_ELEM, |e| {
                    e.put_str(NFTA_EXPR_NAME, "match")
                        .nest(NFTA_EXPR_DATA, |d| {
                            d.put_str(NFTA_MATCH_NAME, "comment")
                                .put(NFTA_MATCH_INFO, &info);
                        });
                });
            });
        assert_eq!(
            parse(&x.0).and_then(|r| r.comment).as_deref(),
            Some("cni:n/c/eth0")
        );
        let mut bare = Attrs::new();
        bare.put_str(NFTA_RULE_CHAIN, "hostports");
        assert_eq!(parse(&bare.0), None, "no handle");
    }
}
