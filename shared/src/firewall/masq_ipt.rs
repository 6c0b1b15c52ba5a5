//! Masquerade with iptables / ip6tables: a dispatch chain `CNI-MASQ` jumped to from
//! POSTROUTING, and one chain `CNI-M-<hash(tag)>` per attachment. Layout in [`super`].

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ipnetwork::IpNetwork;

use super::ipt::{del_input, nat_chain_may_exist, nft_delete, option_value, Ipt};
use super::tag::Tag;
use super::{subnet_of, Masquerade};
use crate::error::{CniError, Result};
use crate::lock::FileLock;
use crate::nfnl::Nfnl;

pub const DISPATCH: &str = "CNI-MASQ";
const JUMP_COMMENT: &str = "cni masquerade";
const SETUP_LOCK: &str = "/run/cni/masq-iptables.lock";

/// The iptables masquerade driver.
#[derive(Debug, Clone, Copy)]
pub struct IptMasq;

/// The attachment's own chain (22 bytes; iptables allows 28).
pub fn chain_name(tag: &Tag) -> String {
    format!("CNI-M-{}", tag.hash_hex())
}

fn host(a: &IpNetwork) -> String {
    format!("{}/{}", a.ip(), if a.is_ipv4() { 32 } else { 128 })
}

fn jump_line(op: &str, tag: &Tag, chain: &str, source: &str) -> String {
    format!("{op} {DISPATCH} -s {source} -m comment --comment \"{tag}\" -j {chain}\n")
}

/// The restore input of ADD for the addresses of one family: (re)fill the attachment's chain
/// and jump to it; `old_sources` are the jumps of an earlier ADD to remove first.
pub fn add_input(tag: &Tag, addrs: &[IpNetwork], old_sources: &[String]) -> String {
    let chain = chain_name(tag);
    let mut s = format!("*nat\n:{chain} - [0:0]\n");
    for src in old_sources {
        s.push_str(&jump_line("-D", tag, &chain, src));
    }
    for a in addrs {
        let src = host(a);
        let mcast = if a.is_ipv4() {
            "224.0.0.0/4"
        } else {
            "ff00::/8"
        };
        let c = format!("-m comment --comment \"{tag}\"");
        s.push_str(&format!(
            "-A {chain} -s {src} -d {} {c} -j RETURN\n\
             -A {chain} -s {src} -d {mcast} {c} -j RETURN\n\
             -A {chain} -s {src} {c} -j MASQUERADE\n",
            subnet_of(a)
        ));
        s.push_str(&jump_line("-A", tag, &chain, &src));
    }
    s.push_str("COMMIT\n");
    s
}

/// The distinct `-s` values of a chain's rules.
fn sources_of(lines: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        if let Some(s) = option_value(l, "-s") {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// Create CNI-MASQ and the POSTROUTING jump to it, once (under a lock, so two first ADDs do
/// not both append the jump).
fn setup(ipt: &Ipt) -> Result<()> {
    if let Some(dir) = Path::new(SETUP_LOCK).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _lock = FileLock::exclusive(Path::new(SETUP_LOCK), Duration::from_secs(30))?;
    let _ = ipt.run(&["-t", "nat", "-N", DISPATCH])?;
    let jump = ["-m", "comment", "--comment", JUMP_COMMENT, "-j", DISPATCH];
    let check: Vec<&str> = ["-t", "nat", "-C", "POSTROUTING"]
        .into_iter()
        .chain(jump)
        .collect();
    if !ipt.run(&check)? {
        let add: Vec<&str> = ["-t", "nat", "-A", "POSTROUTING"]
            .into_iter()
            .chain(jump)
            .collect();
        if !ipt.run(&add)? {
            return Err(CniError::internal(format!(
                "ipMasqBackend iptables: cannot add the POSTROUTING jump to {DISPATCH}"
            )));
        }
    }
    Ok(())
}

fn by_family(addrs: &[IpNetwork]) -> BTreeMap<bool, Vec<IpNetwork>> {
    let mut m: BTreeMap<bool, Vec<IpNetwork>> = BTreeMap::new();
    for a in addrs {
        m.entry(a.is_ipv6()).or_default().push(*a);
    }
    m
}

fn remove_chain(ipt: &Ipt, tag: &Tag) -> Result<()> {
    let chain = chain_name(tag);
    let Some(lines) = ipt.list_chain("nat", &chain)? else {
        return Ok(());
    };
    let jumps: Vec<String> = sources_of(&lines)
        .iter()
        .map(|s| jump_line("-A", tag, &chain, s).trim_end().to_string())
        .collect();
    if ipt
        .restore(&del_input(&jumps, std::slice::from_ref(&chain)))
        .is_ok()
    {
        return Ok(());
    }
    // A jump was already gone (so the transaction failed): go step by step.
    for j in &jumps {
        let j = j.replacen("-A ", "-D ", 1);
        let args: Vec<&str> = j.split_whitespace().collect();
        let mut full = vec!["-t", "nat"];
        full.extend(args.iter().map(|a| a.trim_matches('"')));
        let _ = ipt.run(&full)?;
    }
    let _ = ipt.run(&["-t", "nat", "-F", &chain])?;
    if !ipt.run(&["-t", "nat", "-X", &chain])? {
        return Err(CniError::internal(format!(
            "ipMasqBackend iptables: cannot delete chain {chain} (still referenced?)"
        )));
    }
    Ok(())
}

impl Masquerade for IptMasq {
    fn add(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        for (v6, addrs) in by_family(addrs) {
            let ipt = Ipt::new(v6)?;
            let old = ipt
                .list_chain("nat", &chain_name(tag))?
                .map(|l| sources_of(&l))
                .unwrap_or_default();
            let input = add_input(tag, &addrs, &old);
            if ipt.restore(&input).is_err() {
                setup(&ipt)?;
                ipt.restore(&input)
                    .map_err(|e| ipt.error("adding masquerade rules", &e))?;
            }
        }
        Ok(())
    }

    fn del(&self, tag: &Tag, _hints: &[IpAddr]) -> Result<()> {
        let chain = chain_name(tag);
        let mut nl = Nfnl::open_optional();
        let mut deleted = false;
        let mut first_err = None;
        for v6 in [false, true] {
            // No chain of ours in this family: nothing to list (a process) or remove.
            if !nat_chain_may_exist(nl.as_mut(), v6, &chain) {
                continue;
            }
            let ipt = match Ipt::new(v6) {
                Ok(i) => i,
                // No ip6tables: there can be no v6 rules of ours either.
                Err(e) if v6 => {
                    tracing::debug!("{e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // iptables-nft: the jumps (found by tag) and the chain through nf_tables, no process.
            let removed = match nl.as_mut() {
                Some(nl) if ipt.is_nft() => {
                    deleted = true;
                    nft_delete(nl, v6, DISPATCH, tag.as_str(), &[&chain])
                        .map_err(|e| e.cni(&format!("ipMasqBackend iptables: removing {chain}")))
                }
                _ => remove_chain(&ipt, tag),
            };
            if let Err(e) = removed {
                first_err.get_or_insert(e);
            }
        }
        // The kernel's destroy work of those deletions is waited for here, as with
        // `iptables-restore` (see the host port driver's DEL).
        if let (true, Some(nl)) = (deleted, nl) {
            nl.close_now();
        }
        first_err.map_or(Ok(()), Err)
    }

    fn check(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        let chain = chain_name(tag);
        for (v6, addrs) in by_family(addrs) {
            let ipt = Ipt::new(v6)?;
            let lines = ipt.list_chain("nat", &chain)?.ok_or_else(|| {
                CniError::internal(format!("ipMasq: masquerade chain {chain} is missing"))
            })?;
            for a in &addrs {
                let src = host(a);
                let ok = lines.iter().any(|l| {
                    option_value(l, "-s").as_deref() == Some(src.as_str())
                        && option_value(l, "-j").as_deref() == Some("MASQUERADE")
                        && option_value(l, "--comment").as_deref() == Some(tag.as_str())
                });
                if !ok {
                    return Err(CniError::internal(format!(
                        "ipMasq: no masquerade rule for {src} in chain {chain}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>) -> Result<()> {
        let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
        let mut nl = Nfnl::open_optional();
        for v6 in [false, true] {
            // Never an ADD of ours in this family (it makes the dispatch chain, which stays):
            // nothing to list, no process.
            if !nat_chain_may_exist(nl.as_mut(), v6, DISPATCH) {
                continue;
            }
            let Ok(ipt) = Ipt::new(v6) else { continue };
            let Some(lines) = ipt.list_chain("nat", DISPATCH)? else {
                continue;
            };
            let mut jumps = Vec::new();
            let mut chains = Vec::new();
            for l in &lines {
                let (Some(c), Some(target)) = (option_value(l, "--comment"), option_value(l, "-j"))
                else {
                    continue;
                };
                if Tag::in_network(&c, network) && !keep.contains(c.as_str()) {
                    jumps.push(l.clone());
                    if !chains.contains(&target) {
                        chains.push(target);
                    }
                }
            }
            if chains.is_empty() {
                continue;
            }
            tracing::info!(?chains, "GC: removing masquerade chains");
            ipt.restore(&del_input(&jumps, &chains))
                .map_err(|e| ipt.error("GC of masquerade rules", &e))?;
        }
        Ok(())
    }

    fn status(&self) -> Result<()> {
        Ipt::new(false).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_inputs() {
        let tag = Tag::new("mynet", "ctr1", "eth0");
        let chain = chain_name(&tag);
        assert!(chain.len() <= 28 && chain.starts_with("CNI-M-"), "{chain}");
        let a: IpNetwork = "10.22.0.5/16".parse().unwrap();
        let input = add_input(&tag, &[a], &[]);
        let c = "-m comment --comment \"cni:mynet/ctr1/eth0\"";
        assert_eq!(
            input,
            format!(
                "*nat\n:{chain} - [0:0]\n\
                 -A {chain} -s 10.22.0.5/32 -d 10.22.0.0/16 {c} -j RETURN\n\
                 -A {chain} -s 10.22.0.5/32 -d 224.0.0.0/4 {c} -j RETURN\n\
                 -A {chain} -s 10.22.0.5/32 {c} -j MASQUERADE\n\
                 -A CNI-MASQ -s 10.22.0.5/32 {c} -j {chain}\n\
                 COMMIT\n"
            )
        );
        assert!(
            !input.contains(":CNI-MASQ"),
            "never declare (flush) the shared chain"
        );
        let v6: IpNetwork = "fd00::5/64".parse().unwrap();
        let input = add_input(&tag, &[v6], &["fd00::4/128".into()]);
        assert!(input.contains(&format!("-D CNI-MASQ -s fd00::4/128 {c} -j {chain}")));
        assert!(input.contains("-d ff00::/8"));
        let del = del_input(
            &["-A CNI-MASQ -s x -j y".into()],
            std::slice::from_ref(&chain),
        );
        assert_eq!(
            del,
            format!("*nat\n-D CNI-MASQ -s x -j y\n-F {chain}\n-X {chain}\nCOMMIT\n")
        );
    }

    #[test]
    fn sources() {
        let lines = vec![
            "-A C -s 10.0.0.5/32 -d 10.0.0.0/24 -j RETURN".to_string(),
            "-A C -s 10.0.0.5/32 -j MASQUERADE".to_string(),
            "-A C -s 10.0.0.6/32 -j MASQUERADE".to_string(),
        ];
        assert_eq!(sources_of(&lines), ["10.0.0.5/32", "10.0.0.6/32"]);
    }
}
