//! Host ports with iptables / ip6tables: tagged entries in the shared `CNI-HOSTPORT-DNAT` chain
//! (the reference's, so the two can coexist during a switch) and one chain per attachment.
//! Layout in the module doc of [`super`]; the rule text is built in `ipt_rules.rs`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::ipt_rules::{
    add_input, blocks, chain_name, mark_value, parse_rule, setmark_chain, Rule, DNAT_CHAIN,
    MASQ_CHAIN, MASQ_JUMP_COMMENT, SETMARK_COMMENT,
};
use super::{in_use, DelHint, Flush, Forward, HostPorts, Mark, Options, Published};
use crate::error::{CniError, Result};
use crate::firewall::ipt::{del_input, nat_chain_may_exist, nft_delete, Ipt};
use crate::firewall::Tag;
use crate::lock::FileLock;
use crate::nfnl::{Nfnl, NlErr};

const SETUP_LOCK: &str = "/run/cni/portmap-iptables.lock";

/// The iptables host port driver.
#[derive(Debug, Clone)]
pub struct IptHostPorts {
    opts: Options,
}

impl IptHostPorts {
    pub fn new(opts: Options) -> IptHostPorts {
        IptHostPorts { opts }
    }
}

fn tools(v6: bool) -> Result<Ipt> {
    Ipt::for_key("backend", v6)
}

/// Our tagged rules of a chain (empty when the chain does not exist).
fn rules(ipt: &Ipt, chain: &str) -> Result<Vec<Rule>> {
    Ok(ipt
        .list_chain("nat", chain)?
        .unwrap_or_default()
        .iter()
        .filter_map(|l| parse_rule(l))
        .collect())
}

/// `iptables -t nat -C <rule>`, else `<add> <rule>`.
fn ensure(ipt: &Ipt, add: &[&str], rule: &[&str]) -> Result<()> {
    let check: Vec<&str> = [&["-t", "nat", "-C"], &add[1..2], rule].concat();
    if ipt.run(&check)? {
        return Ok(());
    }
    let full: Vec<&str> = [&["-t", "nat"], add, rule].concat();
    if ipt.run(&full)? {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "backend iptables: cannot add the rule {}",
            full.join(" ")
        )))
    }
}

impl IptHostPorts {
    /// The shared chains and the jumps to them, once (under a lock, so two first ADDs do not
    /// both append a jump).
    fn setup(&self, ipt: &Ipt) -> Result<()> {
        if let Some(dir) = Path::new(SETUP_LOCK).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _lock = FileLock::exclusive(Path::new(SETUP_LOCK), Duration::from_secs(30))?;
        let _ = ipt.run(&["-t", "nat", "-N", DNAT_CHAIN])?;
        let local = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN];
        ensure(ipt, &["-A", "PREROUTING"], &local)?;
        ensure(ipt, &["-A", "OUTPUT"], &local)?;
        if let (true, Mark::Bit(bit)) = (self.opts.snat, &self.opts.mark) {
            let (setmark, mark) = (setmark_chain(*bit), mark_value(*bit));
            let _ = ipt.run(&["-t", "nat", "-N", &setmark])?;
            let set = ["-m", "comment", "--comment", SETMARK_COMMENT, "-j", "MARK"];
            let set: Vec<&str> = [&set[..], &["--set-xmark", &mark]].concat();
            ensure(ipt, &["-A", &setmark], &set)?;
            let _ = ipt.run(&["-t", "nat", "-N", MASQ_CHAIN])?;
            let jump = [
                "-m",
                "comment",
                "--comment",
                MASQ_JUMP_COMMENT,
                "-j",
                MASQ_CHAIN,
            ];
            ensure(ipt, &["-I", "POSTROUTING", "1"], &jump)?;
            ensure(
                ipt,
                &["-A", MASQ_CHAIN],
                &["-m", "mark", "--mark", &mark, "-j", "MASQUERADE"],
            )?;
        }
        Ok(())
    }

    fn add_family(&self, tag: &Tag, f: &Forward) -> Result<()> {
        let ipt = tools(f.v6())?;
        let entries = rules(&ipt, DNAT_CHAIN)?;
        let mut conflicts = Vec::new();
        for m in &f.mappings {
            if let Some(o) = entries
                .iter()
                .find(|e| e.tag != tag.as_str() && blocks(&e.mapping, m))
            {
                conflicts.push(in_use(m, &o.tag).msg);
            }
        }
        if !conflicts.is_empty() {
            return Err(CniError::new(super::PORT_IN_USE, conflicts.join("; ")));
        }
        let old: Vec<String> = entries
            .into_iter()
            .filter(|e| e.tag == tag.as_str())
            .map(|e| e.line)
            .collect();
        // A re-ADD: the chain's counts, so that unchanged DNAT rules keep theirs.
        let counted: Vec<Rule> = if old.is_empty() {
            Vec::new()
        } else {
            ipt.list_chain_counted("nat", &chain_name(tag))?
                .unwrap_or_default()
                .iter()
                .filter_map(|l| parse_rule(l))
                .collect()
        };
        let input = add_input(tag, f, &self.opts, &old, &counted);
        if ipt.restore(&input).is_ok() {
            return Ok(());
        }
        self.setup(&ipt)?;
        let Err(e) = ipt.restore(&input) else {
            return Ok(());
        };
        match &self.opts.mark {
            // Its owner (kube-proxy) may not have made it yet: a condition that passes.
            Mark::External(c) if ipt.list_chain("nat", c)?.is_none() => {
                Err(CniError::try_again(format!(
                    "externalSetMarkChain: {} has no chain {c} in its nat table (yet): {}",
                    ipt.name(),
                    e.trim()
                )))
            }
            _ => Err(ipt.error("adding host port rules", &e)),
        }
    }
}

/// What the DNAT rules among `rules` (of one family's chains, as listed) forward, and the
/// part of it whose connections need flushing: a DNAT rule listed with a zero count NATed no
/// connection, so it left no conntrack entry (no walk of the connection table, ~11 ms, for it).
fn forwarded<'a>(
    v6: bool,
    rules: impl Iterator<Item = &'a Rule>,
) -> (Vec<Published>, Vec<Published>) {
    let mut published = Vec::new();
    let mut flushed = Vec::new();
    for r in rules {
        if let Some((ip, port)) = r.to {
            let p = Published {
                mapping: super::Mapping {
                    container_port: port,
                    ..r.mapping
                },
                target: Some(ip),
                v6,
            };
            if r.packets != Some(0) {
                flushed.push(p);
            }
            published.push(p);
        }
    }
    (published, flushed)
}

/// Remove the given entries and chains of one family in the two steps of [`HostPorts::del`]:
/// the entries of the shared chain, `flush` with what the chains forwarded ([`forwarded`]), the
/// chains — in one step when there is nothing to flush — through `iptables-restore`. Each chain
/// comes with its rules as listed. What the chains forwarded.
fn remove(
    ipt: &Ipt,
    entries: &[Rule],
    chains: &[(String, Vec<Rule>)],
    flush: &mut Flush,
) -> Result<Vec<Published>> {
    let (published, flushed) = forwarded(ipt.v6, chains.iter().flat_map(|(_, rules)| rules));
    let lines: Vec<String> = entries.iter().map(|e| e.line.clone()).collect();
    let names: Vec<String> = chains.iter().map(|(c, _)| c.clone()).collect();
    // Nothing to flush between the steps: one transaction. (Each iptables-nft process that
    // deleted something exits only after an RCU grace period, 10–20 ms here.)
    if flushed.is_empty() && ipt.restore(&del_input(&lines, &names)).is_ok() {
        return Ok(published);
    }
    if !lines.is_empty() && ipt.restore(&del_input(&lines, &[])).is_err() {
        // Something vanished meanwhile (so the transaction failed): go step by step.
        for l in &lines {
            let _ = ipt.restore(&del_input(std::slice::from_ref(l), &[]));
        }
    }
    if !flushed.is_empty() {
        flush(&flushed);
    }
    if names.is_empty() || ipt.restore(&del_input(&[], &names)).is_ok() {
        return Ok(published);
    }
    for c in &names {
        if ipt.list_chain("nat", c)?.is_some()
            && ipt
                .restore(&del_input(&[], std::slice::from_ref(c)))
                .is_err()
        {
            return Err(CniError::internal(format!(
                "backend iptables: cannot delete chain {c} (still referenced?)"
            )));
        }
    }
    Ok(published)
}

/// [`remove`] for one attachment (its entries, found by tag, and its chain `chain`, whose rules
/// are `own`) in iptables-nft's table, straight through nf_tables: no process.
fn remove_nft(
    nl: &mut Nfnl,
    v6: bool,
    tag: &Tag,
    chain: &str,
    own: &[Rule],
    flush: &mut Flush,
) -> Result<Vec<Published>> {
    let (published, flushed) = forwarded(v6, own.iter());
    let what = |e: NlErr| {
        e.cni(&format!(
            "backend iptables: removing {chain} and its entries"
        ))
    };
    if flushed.is_empty() {
        nft_delete(nl, v6, DNAT_CHAIN, tag.as_str(), &[chain]).map_err(what)?;
    } else {
        nft_delete(nl, v6, DNAT_CHAIN, tag.as_str(), &[]).map_err(what)?;
        flush(&flushed);
        nft_delete(nl, v6, "", "", &[chain]).map_err(what)?;
    }
    Ok(published)
}

impl HostPorts for IptHostPorts {
    fn add(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        for f in fwds.iter().filter(|f| !f.mappings.is_empty()) {
            self.add_family(tag, f)?;
        }
        Ok(())
    }

    fn del(&self, tag: &Tag, _hint: &DelHint, flush: &mut Flush) -> Result<Vec<Published>> {
        let chain = chain_name(tag);
        let mut nl = Nfnl::open_optional();
        let mut deleted = false;
        let mut published = Vec::new();
        for v6 in [false, true] {
            // The entries jump to the chain (iptables keeps no jump to a missing chain): no
            // chain, nothing of this family to remove — asked without running a process.
            if !nat_chain_may_exist(nl.as_mut(), v6, &chain) {
                continue;
            }
            let ipt = match tools(v6) {
                Ok(i) => i,
                // No tools: there can be no rules of ours either.
                Err(e) => {
                    tracing::debug!("{e}");
                    continue;
                }
            };
            let Some(own) = ipt.list_chain_counted("nat", &chain)? else {
                continue;
            };
            let own: Vec<Rule> = own.iter().filter_map(|l| parse_rule(l)).collect();
            if let (true, Some(nl)) = (ipt.is_nft(), nl.as_mut()) {
                published.extend(remove_nft(nl, v6, tag, &chain, &own, flush)?);
                deleted = true;
                continue;
            }
            let entries: Vec<Rule> = rules(&ipt, DNAT_CHAIN)?
                .into_iter()
                .filter(|e| e.tag == tag.as_str())
                .collect();
            published.extend(remove(&ipt, &entries, &[(chain.clone(), own)], flush)?);
        }
        // Wait here for the kernel's destroy work of those deletions (a grace period), as an
        // `iptables-restore` would at its exit: left to the exit child, it would fall on the
        // next ADD's iptables processes, which wait for it when they close their sockets.
        if let (true, Some(nl)) = (deleted, nl) {
            nl.close_now();
        }
        Ok(published)
    }

    fn check(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        let chain = chain_name(tag);
        for f in fwds.iter().filter(|f| !f.mappings.is_empty()) {
            let ipt = tools(f.v6())?;
            let entries = rules(&ipt, DNAT_CHAIN)?;
            let dnats = rules(&ipt, &chain)?;
            for m in &f.mappings {
                let entry = entries.iter().any(|e| {
                    e.tag == tag.as_str() && e.jump == chain && blocks(&e.mapping, m) && {
                        e.mapping.host_ip == m.host_ip
                    }
                });
                let dnat = dnats.iter().any(|r| {
                    r.tag == tag.as_str()
                        && r.to == Some((f.container.ip(), m.container_port))
                        && (r.mapping.proto, r.mapping.host_port, r.mapping.host_ip)
                            == (m.proto, m.host_port, m.host_ip)
                });
                if !entry || !dnat {
                    return Err(CniError::internal(format!(
                        "CHECK: host port {} is not forwarded to {} port {} ({} rule missing \
                         in chain {})",
                        m.describe_host(),
                        f.container.ip(),
                        m.container_port,
                        if entry { "DNAT" } else { "entry" },
                        if entry { &chain } else { DNAT_CHAIN },
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>, flush: &mut Flush) -> Result<Vec<Published>> {
        let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
        let is_stale = |tag: &str| Tag::in_network(tag, network) && !keep.contains(tag);
        let mut published = Vec::new();
        let mut nl = Nfnl::open_optional();
        for v6 in [false, true] {
            // Never an ADD with iptables in this family (the first makes the shared chain, which
            // stays): nothing to list, no process.
            if !nat_chain_may_exist(nl.as_mut(), v6, DNAT_CHAIN) {
                continue;
            }
            let Ok(ipt) = tools(v6) else { continue };
            // One listing of the table: the shared chain's entries, and also the chains of
            // attachments whose entries went (a removal cut short after its first step).
            let all: Vec<Rule> = ipt
                .list_table("nat")?
                .iter()
                .filter_map(|l| parse_rule(l))
                .filter(|r| is_stale(&r.tag))
                .collect();
            let in_chain = |r: &&Rule, c: &str| r.line.starts_with(&format!("-A {c} "));
            let stale: Vec<Rule> = all
                .iter()
                .filter(|r| in_chain(r, DNAT_CHAIN))
                .cloned()
                .collect();
            let mut chains: Vec<(String, Vec<Rule>)> = Vec::new();
            for r in &all {
                let chain = r.line.split_whitespace().nth(1).unwrap_or_default();
                let owner = if chain.starts_with("CNI-HP-") {
                    chain
                } else {
                    r.jump.as_str()
                };
                if owner.starts_with("CNI-HP-") && !chains.iter().any(|(c, _)| c == owner) {
                    let own = all.iter().filter(|r| in_chain(r, owner)).cloned().collect();
                    chains.push((owner.to_string(), own));
                }
            }
            if stale.is_empty() && chains.is_empty() {
                continue;
            }
            let names: Vec<&str> = chains.iter().map(|(c, _)| c.as_str()).collect();
            tracing::info!(chains = ?names, "GC: removing host port chains");
            published.extend(remove(&ipt, &stale, &chains, flush)?);
        }
        Ok(published)
    }

    fn status(&self) -> Result<()> {
        tools(false).map(drop)
    }
}
