//! What the reference plugins (containernetworking/plugins) left in iptables for an attachment
//! they added and our DEL now removes: a node switched to our plugins while its containers run.
//!
//! The reference names an attachment's chains after sha512(network name + container ID):
//! bridge's `ipMasq` chain `CNI-<24 hex>`, jumped to from `POSTROUTING`, and portmap's
//! `CNI-DN-<21 hex>`, jumped to from `CNI-HOSTPORT-DNAT`. Left behind, portmap's chain keeps
//! sending the host port to the old container's address — also after a new container publishes
//! the same port (a DaemonSet's rolling update), as the two NAT hooks run in no fixed order.
//!
//! DEL asks nf_tables whether the chain exists in iptables-nft's tables (`ip nat`, `ip6 nat`):
//! one netlink request per family, no process. Only when it does is `iptables-nft` run, to
//! delete the jumps to the chain and then the chain. The legacy iptables (x_tables) has no such
//! lookup: it is asked (`iptables-legacy -S`) only when it has a `nat` table in the namespace
//! (`/proc/net/ip_tables_names`), so hosts that do not use it pay nothing.

use sha2::{Digest, Sha512};

use super::ipt::{del_input, option_value, Ipt, Variant};
use super::nftset::SUBSYS_NFTABLES;
use crate::error::Result;
use crate::nfnl::{Attrs, Nfnl, NLM_F_ACK, NLM_F_REQUEST};

const NFT_MSG_GETCHAIN: u16 = 4;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

/// Which plugin's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// bridge `ipMasq`: `CNI-<hash>`, jumped to from `POSTROUTING`.
    Masquerade,
    /// portmap: `CNI-DN-<hash>`, jumped to from `CNI-HOSTPORT-DNAT`.
    HostPorts,
}

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
}

/// Whether the chain may exist in `variant`'s tables of the current namespace: for nf_tables
/// the kernel says (any error counts as no), for the legacy tables whether they have `nat`.
fn may_exist(nl: Option<&mut Nfnl>, variant: Variant, v6: bool, chain: &str) -> bool {
    match variant {
        Variant::Nft => {
            let Some(nl) = nl else { return false };
            let mut a = Attrs::new();
            a.put_str(NFTA_CHAIN_TABLE, "nat")
                .put_str(NFTA_CHAIN_NAME, chain);
            let family = if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 };
            let msg = (SUBSYS_NFTABLES << 8) | NFT_MSG_GETCHAIN;
            match nl.request(msg, NLM_F_REQUEST | NLM_F_ACK, family, &a.0) {
                Ok(_) => true,
                Err(e) => {
                    if !e.is_missing() {
                        tracing::debug!("looking up nf_tables chain {chain}: {}", e.what);
                    }
                    false
                }
            }
        }
        Variant::Legacy => {
            let names = if v6 {
                "/proc/net/ip6_tables_names"
            } else {
                "/proc/net/ip_tables_names"
            };
            std::fs::read_to_string(names).is_ok_and(|s| s.lines().any(|l| l == "nat"))
        }
    }
}

/// Remove the reference's chain of kind `what` for the attachment (`network`, `container_id`),
/// with the jumps to it, in both families and both iptables variants. What was removed, as
/// "<tool> <chain>" (empty: nothing of the reference's was there).
pub fn remove(what: Leftover, network: &str, container_id: &str) -> Result<Vec<String>> {
    let chain = what.chain(network, container_id);
    let mut nl = Nfnl::open()
        .map_err(|e| tracing::debug!("no netfilter socket: {}", e.what))
        .ok();
    let mut removed = Vec::new();
    for v6 in [false, true] {
        for variant in [Variant::Nft, Variant::Legacy] {
            if !may_exist(nl.as_mut(), variant, v6, &chain) {
                continue;
            }
            let Some(ipt) = Ipt::variant(v6, variant) else {
                tracing::warn!(
                    "the reference plugin's chain {chain} may exist ({variant:?} iptables) but \
                     its iptables tools are not installed: left in place"
                );
                continue;
            };
            if ipt.list_chain("nat", &chain)?.is_none() {
                continue;
            }
            let jumps: Vec<String> = ipt
                .list_chain("nat", what.parent())?
                .unwrap_or_default()
                .into_iter()
                .filter(|l| option_value(l, "-j").as_deref() == Some(chain.as_str()))
                .collect();
            ipt.restore(&del_input(&jumps, std::slice::from_ref(&chain)))
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
                v6,
                "removed the reference plugin's chain of this attachment"
            );
            removed.push(format!("{variant:?} {chain}"));
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
}
