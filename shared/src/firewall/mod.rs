//! Firewall rules owned by the plugins: masquerade (bridge, vxlan `ipMasq`), MAC spoof checks
//! (bridge `macspoofchk`), and — by the same pattern — host port forwards (portmap,
//! [`hostport`]).
//!
//! # One interface, two drivers
//!
//! A concern is a trait with one implementation per backend, chosen by a config key
//! ([`Backend::parse`], `ipMasqBackend`): [`Masquerade`] over [`masq_nft::NftMasq`] and
//! [`masq_ipt::IptMasq`]; without the key, [`either`] composes the two (nftables, or iptables
//! where nftables cannot be used; DEL and GC in both). Each call is **one transaction**: one nft batch (see [`nftexec`]), or one
//! `iptables-restore --noflush` per address family. Every entry of an attachment carries its
//! [`Tag`] (`cni:<network>/<containerID>/<ifname>`) as comment, which is how DEL, CHECK and GC
//! find exactly that attachment's entries — also when CNI_NETNS is gone.
//!
//! # nftables layout (`ipMasqBackend: nftables`; without the key, see [`either`])
//!
//! ```text
//! table inet cni_masq {
//!     map masq4 { type ipv4_addr : verdict }      # container address -> its network's chain
//!     map masq6 { type ipv6_addr : verdict }      #   element comment = the attachment's tag
//!     chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!         ip saddr vmap @masq4
//!         ip6 saddr vmap @masq6 }
//!     chain net-<hash(network, subnet)> {          # one per network and subnet, shared
//!         ip daddr != 10.22.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment "cni:<network>" }
//! }
//! ```
//!
//! One attachment is one map element per address: `10.22.0.5 comment "cni:net/ctr/eth0" : jump
//! net-…`. ADD is one `create element` batch (the table and the network's chain are set up only
//! when the kernel reports them missing); DEL verifies the element's comment (`get element`, a
//! targeted lookup) and deletes it; neither lists the ruleset. Each new connection costs one hash
//! lookup, however many containers there are. Only when DEL knows no address of the attachment
//! (namespace gone and no prevResult) does it list the two maps to find the tag. GC lists the
//! two maps, deletes the network's elements whose tag is not valid, then lists the table's
//! rules and deletes the network's chains no element jumps to any more. Only the creation of
//! the table and of a network's chain runs an nft script ([`nftexec`]); every other step is a
//! request to the kernel ([`nftelem`], [`nftset`], [`nftrule`]).
//!
//! # iptables layout (`ipMasqBackend: iptables`)
//!
//! ```text
//! -t nat -A POSTROUTING -m comment --comment "cni masquerade" -j CNI-MASQ     # once
//! -t nat -A CNI-MASQ -s 10.22.0.5/32 -m comment --comment "<tag>" -j CNI-M-<hash(tag)>
//! -t nat -A CNI-M-<hash(tag)> -s 10.22.0.5/32 -d 10.22.0.0/16 -m comment ... -j RETURN
//! -t nat -A CNI-M-<hash(tag)> -s 10.22.0.5/32 -d 224.0.0.0/4  -m comment ... -j RETURN
//! -t nat -A CNI-M-<hash(tag)> -s 10.22.0.5/32 -m comment ... -j MASQUERADE
//! ```
//!
//! (ip6tables alike with `ff00::/8`.) The per-attachment chain's name is a function of the tag, so
//! DEL lists just that chain — or, with iptables-nft, lists nothing: it deletes the jumps
//! (by their comment) and the chain straight through nf_tables ([`ipt::nft_delete`],
//! [`nftrule`]), no process. Only our chains are ever declared in a restore file (declaring a chain flushes
//! it), so kube-proxy's and Docker's chains are never touched.
//!
//! # MAC spoof check (nftables only, see [`macspoof`])
//!
//! ```text
//! table bridge cni_macspoof {
//!     set ports   { type ifname }                  # guarded bridge ports
//!     set allowed { type ifname . ether_addr }     # (port, the container's MAC)
//!     chain prerouting { type filter hook prerouting priority dstnat; policy accept;
//!         iifname . ether saddr @allowed accept
//!         iifname @ports drop }
//! }
//! ```
//!
//! # Host ports (portmap)
//!
//! [`hostport`]: the same pattern for DNAT of host ports — `table inet cni_hostport` with
//! claim and DNAT maps keyed by `proto . port` (and `hostIP . proto . port`) whose elements
//! carry the tag, so `create element` failing with EEXIST is the host-port conflict check and a
//! single-key lookup ([`nftset::get`], a raw `NFT_MSG_GETSETELEM`) names the owner; iptables
//! chains `CNI-HP-<hash(tag)>` behind the reference's `CNI-HOSTPORT-DNAT`. Its module doc has
//! the layout and why there is no chain per attachment in nftables.

pub mod either;
pub mod hostport;
pub mod ipt;
pub mod macspoof;
pub mod masq_ipt;
pub mod masq_nft;
pub mod masq_nft_script;
pub mod nftelem;
pub mod nftexec;
pub mod nftrule;
pub mod nftset;
pub mod reference;
pub mod tag;
pub mod xtables;

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;

use crate::error::{CniError, Result};
pub use tag::Tag;

/// The rule engine, from `ipMasqBackend` (portmap: `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The key is absent: nftables, or iptables where nftables cannot be used ([`either`]).
    #[default]
    Auto,
    Nftables,
    Iptables,
}

impl Backend {
    /// Parse the config value; absent or empty is [`Backend::Auto`]. Code 7 naming `key`
    /// otherwise.
    pub fn parse(key: &str, value: Option<&str>) -> Result<Backend> {
        match value {
            None | Some("") => Ok(Backend::Auto),
            Some("nftables") => Ok(Backend::Nftables),
            Some("iptables") => Ok(Backend::Iptables),
            Some(other) => Err(CniError::invalid_config(format!(
                "{key}: unknown firewall backend {other:?} (expected \"nftables\" or \"iptables\")"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }
}

/// Masquerade for the addresses of attachments.
pub trait Masquerade {
    /// Masquerade traffic from each address, except to its own subnet (the address's prefix)
    /// and to multicast. Replaces entries a stale attachment left for the same address.
    fn add(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()>;
    /// Remove the attachment's entries. `hints` are addresses it probably had (its
    /// prevResult, its interface); without a hit the driver searches by tag. Absent is success.
    fn del(&self, tag: &Tag, hints: &[IpAddr]) -> Result<()>;
    /// Fail unless every address has the attachment's entry.
    fn check(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()>;
    /// Remove every entry of `network` whose tag is not in `keep`.
    fn gc(&self, network: &str, keep: &HashSet<Tag>) -> Result<()>;
    /// Code 50 naming the backend when it cannot be used on this host.
    fn status(&self) -> Result<()>;
}

/// The masquerade driver of a backend.
pub fn masquerade(backend: Backend) -> Box<dyn Masquerade> {
    match backend {
        Backend::Auto => Box::new(either::AutoMasq),
        Backend::Nftables => Box::new(masq_nft::NftMasq),
        Backend::Iptables => Box::new(masq_ipt::IptMasq),
    }
}

/// Find an executable in PATH, then in the sbin directories runtimes often leave out of PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The network address of `a` with its prefix (`10.22.0.5/16` → `10.22.0.0/16`).
pub(crate) fn subnet_of(a: &IpNetwork) -> String {
    format!("{}/{}", a.network(), a.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_the_key() {
        assert_eq!(Backend::parse("k", None).unwrap(), Backend::Auto);
        assert_eq!(Backend::parse("k", Some("")).unwrap(), Backend::Auto);
        assert_eq!(
            Backend::parse("k", Some("nftables")).unwrap(),
            Backend::Nftables
        );
        assert_eq!(
            Backend::parse("k", Some("iptables")).unwrap(),
            Backend::Iptables
        );
        let e = Backend::parse("ipMasqBackend", Some("pf")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("ipMasqBackend: "), "{}", e.msg);
    }

    #[test]
    fn subnets() {
        let a: IpNetwork = "10.22.3.5/16".parse().unwrap();
        assert_eq!(subnet_of(&a), "10.22.0.0/16");
        let b: IpNetwork = "fd00::5/64".parse().unwrap();
        assert_eq!(subnet_of(&b), "fd00::/64");
    }
}
