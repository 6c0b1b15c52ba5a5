//! Host ports (the `portmap` plugin): DNAT from a host port to a container's port, masquerade
//! for hairpin and localhost-originated traffic, conflict detection between attachments, and
//! the conntrack flush that keeps old flows from reaching a removed or replaced container.
//!
//! A concern like [`super::Masquerade`]: the [`HostPorts`] trait with an nftables driver
//! ([`nft::NftHostPorts`], the default) and an iptables driver ([`ipt::IptHostPorts`]). Every
//! element or rule carries the attachment's [`Tag`]; each call is one transaction (one nft batch;
//! one `iptables-restore` per family).
//!
//! # nftables layout
//!
//! ```text
//! table inet cni_hostport {
//!     # Who publishes what: one element per mapping, comment = the owner's tag, value = the
//!     # mapping's condition group (0: none). `create element` fails on an existing key: that is
//!     # the conflict check, and a single-key lookup names the owner.
//!     map claims4   { type inet_proto . inet_service : mark }              # every address
//!     map claimsip4 { type ipv4_addr . inet_proto . inet_service : mark }  # one hostIP
//!     map claims6 ... claimsip6 ...
//!     # The DNAT targets, same keys, per condition group (suffix "" or "-<hash of conditions>").
//!     # Each element counts the connections it NATed: DEL walks the kernel's connection table
//!     # (~13 ms) only for elements that NATed some (maps made by an earlier version have no
//!     # counters: always).
//!     map dnat4   { type inet_proto . inet_service : ipv4_addr . inet_service; counter }
//!     map dnatip4 { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service; counter }
//!     chain pre4 { type nat hook prerouting priority -100; policy accept;    # dstnat
//!         <conditionsV4> dnat ip to ip daddr . meta l4proto . th dport map @dnatip4
//!         <conditionsV4> fib daddr type local dnat ip to meta l4proto . th dport map @dnat4 }
//!     chain out4 { type nat hook output priority dstnat; policy accept; (the same two rules) }
//!     ... dnat6, dnatip6, pre6, out6 (out6 skips ::1)
//!     # Masquerade (snat): container address -> its network's chain.
//!     map hairpin4 { type ipv4_addr : verdict }    map hairpin6 { type ipv6_addr : verdict }
//!     chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//!         ct status dnat ip daddr vmap @hairpin4
//!         ct status dnat ip6 daddr vmap @hairpin6 }
//!     chain hp-<hash(network, subnet, masqAll)> {
//!         ip saddr 10.22.0.0/16 masquerade        # hairpin: the container and its neighbours
//!         ip saddr 127.0.0.0/8 masquerade }       # localhost (IPv4); masqAll: `masquerade`
//! }
//! ```
//!
//! Why maps and no per-attachment chains: libnftables (1.0.6) lists every chain and set of the
//! namespace before each batch, so each chain makes every later call slower (about 1.3 µs per
//! chain measured), while map elements are not fetched for a `create element`. An ADD is one
//! batch of `create element`s, whatever number of mappings exists; the table, maps and chains
//! are created only when the kernel reports them missing. Ownership is read with
//! [`super::nftset::get`] (a kernel hash lookup; `nft get element` would fetch the whole set).
//!
//! # iptables layout
//!
//! ```text
//! -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT        # once, shared
//! -t nat -A OUTPUT     -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT        #   with the
//! -t nat -I POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" #   reference
//!        -j CNI-HOSTPORT-MASQ
//! -t nat -A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
//! -t nat -A CNI-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000  (bit 13; other bits
//!                                                          use CNI-HOSTPORT-SETMARK-<bit>)
//! # per mapping, in the shared chain, tagged:
//! -A CNI-HOSTPORT-DNAT [-d <hostIP>/32] -p tcp -m tcp --dport 8080 -m comment --comment "<tag>"
//!    <conditionsV4> -j CNI-HP-<hash(tag)>
//! # the attachment's own chain:
//! -A CNI-HP-<hash> [-d ..] -s 10.22.0.0/16 -p tcp --dport 8080 ... -j CNI-HOSTPORT-SETMARK
//! -A CNI-HP-<hash> [-d ..] -s 127.0.0.1 -p tcp --dport 8080 ... -j CNI-HOSTPORT-SETMARK
//! -A CNI-HP-<hash> [-d ..] -p tcp --dport 8080 ... -j DNAT --to-destination 10.22.0.5:80
//! ```
//!
//! iptables has no keyed lookups: ADD reads the shared chain once (`-S CNI-HOSTPORT-DNAT`) for
//! conflicts, so its cost grows slowly with the number of mappings.

pub mod ipt;
mod ipt_rules;
pub mod nft;
mod nft_found;
mod nft_script;

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Backend, Tag};
use crate::conntrack::{self, Filter, Select};
use crate::error::{CniError, Result};

/// The CNI error code of a host port already published by another attachment.
pub const PORT_IN_USE: u32 = 101;

/// A transport protocol of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Sctp]
            .into_iter()
            .find(|p| p.number() == n)
    }

    /// Parse a config value (case-insensitive); `None` for anything else.
    pub fn parse(s: &str) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Sctp]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

/// One published port: `hostIP:hostPort/proto` → container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mapping {
    /// `None`: every local address of the family.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl Mapping {
    /// This mapping as it applies to one family: `None` when its hostIP is of the other family;
    /// an unspecified hostIP (`0.0.0.0`, `::`) means every address of its family.
    pub fn for_family(&self, v6: bool) -> Option<Mapping> {
        match self.host_ip {
            None => Some(*self),
            Some(ip) if ip.is_ipv6() != v6 => None,
            Some(ip) if ip.is_unspecified() => Some(Mapping {
                host_ip: None,
                ..*self
            }),
            Some(_) => Some(*self),
        }
    }

    /// `tcp/8080 on every address` or `tcp/192.0.2.1:8080`, for messages.
    pub fn describe_host(&self) -> String {
        match self.host_ip {
            None => format!(
                "{}/{} on every address",
                self.proto.as_str(),
                self.host_port
            ),
            Some(IpAddr::V6(ip)) => format!("{}/[{ip}]:{}", self.proto.as_str(), self.host_port),
            Some(ip) => format!("{}/{ip}:{}", self.proto.as_str(), self.host_port),
        }
    }
}

/// The mappings of one family to one container address (its prefix is the container's subnet,
/// the source range of hairpin traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub container: IpNetwork,
    /// Already reduced to this family ([`Mapping::for_family`]).
    pub mappings: Vec<Mapping>,
}

impl Forward {
    pub fn v6(&self) -> bool {
        self.container.is_ipv6()
    }
}

/// How iptables marks connections for masquerade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// Our SETMARK chain sets this bit; our MASQ chain masquerades it.
    Bit(u8),
    /// Jump to this chain (kube-proxy's `KUBE-MARK-MASQ`); whoever owns it masquerades.
    External(String),
}

/// The plugin's options that shape the entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub snat: bool,
    pub masq_all: bool,
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
    pub mark: Mark,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snat: true,
            masq_all: false,
            conditions_v4: Vec::new(),
            conditions_v6: Vec::new(),
            mark: Mark::Bit(13),
        }
    }
}

impl Options {
    pub fn conditions(&self, v6: bool) -> &[String] {
        if v6 {
            &self.conditions_v6
        } else {
            &self.conditions_v4
        }
    }
}

/// A DNAT found in the kernel (removed by DEL or GC): what the conntrack flush needs. No
/// `target` when only the claim of the host port was left (a removal cut short after its
/// DNAT went): then every NATed entry of that host port is the attachment's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub mapping: Mapping,
    pub target: Option<IpAddr>,
    pub v6: bool,
}

/// What a removal calls once the DNAT is gone (see [`HostPorts::del`]).
pub type Flush<'a> = dyn FnMut(&[Published]) + 'a;

/// What DEL knows besides the tag: the mappings (runtimeConfig, when the runtime sends it) and
/// addresses the attachment probably had (prevResult).
#[derive(Debug, Clone, Copy, Default)]
pub struct DelHint<'a> {
    pub mappings: Option<&'a [Mapping]>,
    pub addrs: &'a [IpAddr],
}

/// Host port forwards of attachments.
pub trait HostPorts {
    /// Publish every mapping of `fwds` in one transaction. Code [`PORT_IN_USE`] naming the
    /// owner's container ID when another attachment publishes one of them; an earlier ADD of the
    /// same attachment is replaced.
    fn add(&self, tag: &Tag, fwds: &[Forward]) -> Result<()>;
    /// Remove the attachment's entries (found by tag); what was removed. Absent is success.
    /// `flush` is called with what the removed DNAT forwarded (to delete the conntrack entries
    /// of those connections) once nothing new is NATed through it. nftables removes every
    /// element in one transaction, then flushes; iptables removes the shared chain's entries,
    /// flushes, then the attachment's chain. A DEL killed before its flush is covered on its
    /// retry: by what is left (iptables), or by the mappings and addresses the runtime passes
    /// again (nftables; see `nft_found::Steps`).
    fn del(&self, tag: &Tag, hint: &DelHint, flush: &mut Flush) -> Result<Vec<Published>>;
    /// Fail unless every mapping of `fwds` is published for this attachment.
    fn check(&self, tag: &Tag, fwds: &[Forward]) -> Result<()>;
    /// Remove the entries of `network` whose tag is not in `keep`, flushing as
    /// [`HostPorts::del`] does, but with the entries that name an attachment removed after the
    /// flush (a GC killed half-way finds them on its next run); what was removed.
    fn gc(&self, network: &str, keep: &HashSet<Tag>, flush: &mut Flush) -> Result<Vec<Published>>;
    /// Code 50 naming the backend when it cannot be used on this host.
    fn status(&self) -> Result<()>;
}

/// The host port driver of a backend.
pub fn driver(backend: Backend, opts: Options) -> Box<dyn HostPorts> {
    match backend {
        Backend::Auto => Box::new(super::either::AutoHostPorts::new(opts)),
        Backend::Nftables => Box::new(nft::NftHostPorts::new(opts)),
        Backend::Iptables => Box::new(ipt::IptHostPorts::new(opts)),
    }
}

/// Validate `conditionsV4`/`conditionsV6` for the backend they will be pasted into (code 7
/// naming `key`): no control characters anywhere; for nftables no `;` or `#` (they would end
/// the rule or comment out the rest of it); for iptables no quotes or backslashes (the entries
/// are joined into one `iptables-restore` line). Whether the text is valid nft or iptables
/// syntax is for the backend to say at ADD.
pub fn validate_conditions(key: &str, conds: &[String], backend: Backend) -> Result<()> {
    // Conditions without a backend are nft's (portmap's config picks iptables for conditions
    // written as iptables arguments).
    let ipt = backend == Backend::Iptables;
    for (i, c) in conds.iter().enumerate() {
        let bad = if ipt {
            c.chars()
                .find(|ch| ch.is_control() || matches!(ch, '"' | '\\' | '\''))
        } else {
            c.chars()
                .find(|ch| ch.is_control() || matches!(ch, ';' | '#'))
        };
        if let Some(ch) = bad {
            return Err(CniError::invalid_config(format!(
                "{key}[{i}]: {c:?} contains {ch:?}, which cannot be used in a {} condition",
                if ipt { "iptables" } else { "nftables" }
            )));
        }
        if c.trim().is_empty() {
            return Err(CniError::invalid_config(format!("{key}[{i}]: is empty")));
        }
    }
    Ok(())
}

/// The conflict error: `what` is published by the attachment tagged `owner`.
pub fn in_use(m: &Mapping, owner: &str) -> CniError {
    let mut parts = owner.trim_start_matches("cni:").splitn(3, '/');
    let (net, cid, ifname) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    CniError::new(
        PORT_IN_USE,
        format!(
            "runtimeConfig.portMappings: host port {} is already published by container {cid} \
             (network {net}, interface {ifname})",
            m.describe_host()
        ),
    )
}

/// After ADD: delete the UDP conntrack entries that would keep datagrams of a mapped port away
/// from the new target — un-NATed ones (a flow that started before the mapping existed) and
/// ones NATed somewhere else (a former owner). TCP and SCTP need none: their handshake starts a
/// new entry, and DEL already removed the entries NATed to a former owner. Returns how many.
pub fn flush_conntrack_add(fwds: &[Forward]) -> Result<usize> {
    let filters: Vec<Filter> = fwds
        .iter()
        .flat_map(|f| {
            f.mappings
                .iter()
                .filter(|m| m.proto == Proto::Udp)
                .map(|m| Filter {
                    v6: f.v6(),
                    proto: m.proto.number(),
                    dport: m.host_port,
                    dst: m.host_ip,
                    select: Select::StaleFor {
                        target: (f.container.ip(), m.container_port),
                        any_unnated: true,
                    },
                })
        })
        .collect();
    conntrack::delete(&filters)
}

/// During DEL or GC: delete the conntrack entries NATed through the removed mappings.
pub fn flush_conntrack_del(removed: &[Published]) -> Result<usize> {
    let filters: Vec<Filter> = removed
        .iter()
        .map(|p| Filter {
            v6: p.v6,
            proto: p.mapping.proto.number(),
            dport: p.mapping.host_port,
            dst: p.mapping.host_ip,
            select: match p.target {
                Some(t) => Select::NatedTo(t, p.mapping.container_port),
                None => Select::Nated,
            },
        })
        .collect();
    conntrack::delete(&filters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(host_ip: Option<&str>) -> Mapping {
        Mapping {
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port: 8080,
            container_port: 80,
            proto: Proto::Tcp,
        }
    }

    #[test]
    fn families() {
        assert_eq!(m(None).for_family(true), Some(m(None)));
        assert_eq!(m(Some("192.0.2.1")).for_family(true), None);
        assert_eq!(m(Some("0.0.0.0")).for_family(false), Some(m(None)));
        assert_eq!(m(Some("0.0.0.0")).for_family(true), None);
        assert_eq!(m(Some("::")).for_family(true), Some(m(None)));
        assert_eq!(
            m(Some("2001:db8::1")).describe_host(),
            "tcp/[2001:db8::1]:8080"
        );
    }

    #[test]
    fn protocols() {
        assert_eq!(Proto::parse("UDP"), Some(Proto::Udp));
        assert_eq!(Proto::parse("icmp"), None);
        assert_eq!(Proto::from_number(132), Some(Proto::Sctp));
    }

    #[test]
    fn conditions() {
        let ok = ["ip saddr { 10.0.0.0/8, 192.168.0.0/16 }".to_string()];
        validate_conditions("conditionsV4", &ok, Backend::Nftables).unwrap();
        let inject = ["tcp dport 1; flush ruleset".to_string()];
        let e = validate_conditions("conditionsV4", &inject, Backend::Nftables).unwrap_err();
        assert!(e.msg.starts_with("conditionsV4[0]: "), "{}", e.msg);
        let ipt = ["-d".to_string(), "10.0.0.0/8".to_string()];
        validate_conditions("conditionsV6", &ipt, Backend::Iptables).unwrap();
        let nl = ["-d 10.0.0.0/8\n-A X".to_string()];
        assert!(validate_conditions("conditionsV6", &nl, Backend::Iptables).is_err());
        let q = ["--comment \"x\"".to_string()];
        assert!(validate_conditions("conditionsV6", &q, Backend::Iptables).is_err());
    }

    #[test]
    fn conflicts_name_the_owner() {
        let e = in_use(&m(None), "cni:net1/ctr-a/eth0");
        assert_eq!(e.code, PORT_IN_USE);
        assert!(e.msg.contains("container ctr-a"), "{}", e.msg);
        assert!(e.msg.contains("tcp/8080 on every address"), "{}", e.msg);
    }
}
