//! The reference plugins' iptables chains of an attachment (every version's default backend).
//!
//! The reference names an attachment's chains after sha512(network name + container ID):
//! bridge's `ipMasq` chain `CNI-<24 hex>`, jumped to from `POSTROUTING`, and portmap's
//! `CNI-DN-<21 hex>`, jumped to from `CNI-HOSTPORT-DNAT`.
//!
//! DEL asks nf_tables whether the chain exists in iptables-nft's tables (`ip nat`, `ip6 nat`):
//! one netlink request per family, no process. Only when it does is `iptables-nft` run, to
//! delete the jumps to the chain and then the chain. The legacy iptables (x_tables) has no such
//! lookup: when it has a `nat` table in the namespace (`/proc/thread-self/net/ip_tables_names`)
//! its chain names are read from the kernel ([`crate::firewall::xtables`], no process), and
//! `iptables-legacy` runs only when the chain is there.
//!
//! GC removes the reference's chains of this network whose container is not among the valid
//! attachments, found by the comment of the jumps to them (`name: "<network>" id: "<id>"`,
//! `dnat name: …` for portmap) and checked against the name the reference would give them:
//! also what the reference itself leaked (its portmap DEL without `runtimeConfig` removes
//! nothing; its bridge has no GC).

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha512};

use super::Leftover;
use crate::error::Result;
use crate::firewall::ipt::{
    del_input, legacy_nat_may_have, nft_nat_lookup, option_value, Ipt, Variant,
};
use crate::nfnl::Nfnl;
use crate::spec::config::GcAttachment;

impl Leftover {
    /// The reference's chain name for an attachment (its `FormatChainNameWithPrefix`: the
    /// prefix and the sha512 in hex, cut to 28 characters).
    pub fn chain(self, network: &str, container_id: &str) -> String {
        let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
        let prefix = match self {
            Leftover::Masquerade => "CNI-",
            Leftover::HostPorts => "CNI-DN-",
        };
        let mut name = String::from(prefix);
        for b in digest {
            name.push_str(&format!("{b:02x}"));
        }
        name.truncate(28);
        name
    }

    /// The chain that jumps to it.
    fn parent(self) -> &'static str {
        match self {
            Leftover::Masquerade => "POSTROUTING",
            Leftover::HostPorts => "CNI-HOSTPORT-DNAT",
        }
    }

    /// The container ID of a jump of the reference's (an `-S` line of the parent chain) to an
    /// attachment chain of network `network`, with that chain: `None` for any other rule.
    fn jump_of(self, line: &str, network: &str) -> Option<(String, String)> {
        let comment = option_value(line, "--comment")?;
        let lead = match self {
            Leftover::Masquerade => "",
            Leftover::HostPorts => "dnat ",
        };
        let id = comment
            .strip_prefix(&format!("{lead}name: \"{network}\" id: \""))?
            .strip_suffix('"')?;
        let chain = self.chain(network, id);
        (option_value(line, "-j")? == chain).then(|| (id.to_string(), chain))
    }
}

/// Whether `chain` (or, without one, the `nat` table) may exist in `variant`'s tables of the
/// current namespace: for nf_tables the kernel says (when it cannot be asked: no), for the
/// legacy tables their chain names do (when they cannot be read: yes, if they have `nat`).
fn may_exist(nl: Option<&mut Nfnl>, variant: Variant, v6: bool, chain: Option<&str>) -> bool {
    match variant {
        Variant::Nft => nft_nat_lookup(nl, v6, chain) == Some(true),
        Variant::Legacy => legacy_nat_may_have(v6, chain),
    }
}

/// The tools of `variant`, or a warning that what may be the reference's stays.
fn tools(v6: bool, variant: Variant, what: &str) -> Option<Ipt> {
    let ipt = Ipt::variant(v6, variant);
    if ipt.is_none() {
        tracing::warn!(
            "{what} may hold chains of the reference plugin ({variant:?} iptables) but its \
             iptables tools are not installed: left in place"
        );
    }
    ipt
}

/// Delete `jumps` (`-S` lines) and `chain` in one transaction.
fn delete(ipt: &Ipt, jumps: &[String], chain: &str, variant: Variant) -> Result<String> {
    ipt.restore(&del_input(jumps, &[chain.to_string()]))
        .map_err(|e| {
            ipt.error(
                &format!("removing the reference plugin's chain {chain}"),
                &e,
            )
        })?;
    tracing::info!(
        chain,
        jumps = jumps.len(),
        ?variant,
        v6 = ipt.v6,
        "removed a chain of the reference plugin"
    );
    Ok(format!("{variant:?} {chain}"))
}

/// DEL: remove the reference's chain of kind `what` for the attachment (`network`,
/// `container_id`), with the jumps to it, in both families and both iptables variants. What
/// was removed, as "<variant> <chain>" (empty: nothing of the reference's was there).
pub(super) fn remove(
    mut nl: Option<&mut Nfnl>,
    what: Leftover,
    network: &str,
    container_id: &str,
) -> Result<Vec<String>> {
    let chain = what.chain(network, container_id);
    let mut removed = Vec::new();
    for v6 in [false, true] {
        for variant in [Variant::Nft, Variant::Legacy] {
            if !may_exist(nl.as_deref_mut(), variant, v6, Some(&chain)) {
                continue;
            }
            let Some(ipt) = tools(v6, variant, &chain) else {
                continue;
            };
            // nf_tables said the chain exists; the legacy tables only that `nat` does.
            if variant == Variant::Legacy && ipt.list_chain("nat", &chain)?.is_none() {
                continue;
            }
            let jumps: Vec<String> = ipt
                .list_chain("nat", what.parent())?
                .unwrap_or_default()
                .into_iter()
                .filter(|l| option_value(l, "-j").as_deref() == Some(chain.as_str()))
                .collect();
            removed.push(delete(&ipt, &jumps, &chain, variant)?);
        }
    }
    Ok(removed)
}

/// CHECK: whether the reference's chain of kind `what` for the attachment (`network`,
/// `container_id`) is there, in either family and variant (no process).
pub(super) fn present(
    mut nl: Option<&mut Nfnl>,
    what: Leftover,
    network: &str,
    container_id: &str,
) -> bool {
    let chain = what.chain(network, container_id);
    for v6 in [false, true] {
        for variant in [Variant::Nft, Variant::Legacy] {
            if may_exist(nl.as_deref_mut(), variant, v6, Some(&chain)) {
                return true;
            }
        }
    }
    false
}

/// GC: remove the reference's chains of kind `what` of `network` whose container is not among
/// the `valid` attachments, with the jumps to them. What was removed, as for [`remove`].
pub(super) fn gc(
    mut nl: Option<&mut Nfnl>,
    what: Leftover,
    network: &str,
    valid: &[GcAttachment],
) -> Result<Vec<String>> {
    let keep: HashSet<&str> = valid.iter().map(|a| a.container_id.as_str()).collect();
    let mut removed = Vec::new();
    for v6 in [false, true] {
        for variant in [Variant::Nft, Variant::Legacy] {
            if !may_exist(nl.as_deref_mut(), variant, v6, None) {
                continue;
            }
            let Some(ipt) = tools(v6, variant, "the nat table") else {
                continue;
            };
            let mut stale: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for line in ipt.list_chain("nat", what.parent())?.unwrap_or_default() {
                if let Some((id, chain)) = what.jump_of(&line, network) {
                    if !keep.contains(id.as_str()) {
                        stale.entry(chain).or_default().push(line);
                    }
                }
            }
            for (chain, jumps) in stale {
                removed.push(delete(&ipt, &jumps, &chain, variant)?);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_names_are_the_reference_plugins() {
        // Made by the reference plugins 1.1.1 (bridge ipMasq + portmap) for network "refnet"
        // and container "Ctr-1".
        assert_eq!(
            Leftover::Masquerade.chain("refnet", "Ctr-1"),
            "CNI-fff9cd26a431f51248afa6e5"
        );
        assert_eq!(
            Leftover::HostPorts.chain("refnet", "Ctr-1"),
            "CNI-DN-fff9cd26a431f51248afa"
        );
        assert_eq!(Leftover::HostPorts.parent(), "CNI-HOSTPORT-DNAT");
        assert_eq!(Leftover::Masquerade.parent(), "POSTROUTING");
    }

    #[test]
    fn jumps_are_recognised_by_comment_and_chain_name() {
        let masq = r#"-A POSTROUTING -s 10.231.0.2/32 -m comment --comment "name: \"refnet\" id: \"Ctr-1\"" -j CNI-fff9cd26a431f51248afa6e5"#;
        let dnat = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"refnet\" id: \"Ctr-1\"" -m multiport --dports 8080 -j CNI-DN-fff9cd26a431f51248afa"#;
        let want = |c: &str| Some(("Ctr-1".to_string(), c.to_string()));
        assert_eq!(
            Leftover::Masquerade.jump_of(masq, "refnet"),
            want("CNI-fff9cd26a431f51248afa6e5")
        );
        assert_eq!(
            Leftover::HostPorts.jump_of(dnat, "refnet"),
            want("CNI-DN-fff9cd26a431f51248afa")
        );
        // Another network, the other kind, a jump elsewhere, our own rules: not theirs.
        assert_eq!(Leftover::Masquerade.jump_of(masq, "other"), None);
        assert_eq!(Leftover::HostPorts.jump_of(masq, "refnet"), None);
        let elsewhere = masq.replace("-j CNI-fff9", "-j CNI-aaa9");
        assert_eq!(Leftover::Masquerade.jump_of(&elsewhere, "refnet"), None);
        let ours = r#"-A POSTROUTING -m comment --comment "cni:refnet/Ctr-1/eth0" -j CNI-MASQ"#;
        assert_eq!(Leftover::Masquerade.jump_of(ours, "refnet"), None);
    }
}
