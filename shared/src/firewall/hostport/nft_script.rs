//! The nft text and kernel keys of the host port layout (see the module doc of [`super`]).
//! Pure functions: everything here is unit-tested without a kernel.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{Forward, Mapping, Options, Proto};
use crate::firewall::nftelem::{Data, Op};
use crate::firewall::nftset::key;
use crate::firewall::subnet_of;
use crate::firewall::tag::{fnv1a, Tag};

pub const TABLE: &str = "inet cni_hostport";
pub const TABLE_NAME: &str = "cni_hostport";

fn fam(v6: bool) -> &'static str {
    if v6 {
        "6"
    } else {
        "4"
    }
}

fn ipx(v6: bool) -> &'static str {
    if v6 {
        "ip6"
    } else {
        "ip"
    }
}

/// The condition group of a family's conditions: 0 for none, else a hash of them.
pub fn group_id(conds: &[String]) -> u32 {
    if conds.is_empty() {
        return 0;
    }
    match fnv1a(conds.join("\n").as_bytes()) as u32 {
        0 => 1,
        g => g,
    }
}

fn sfx(gid: u32) -> String {
    if gid == 0 {
        String::new()
    } else {
        format!("-{gid:08x}")
    }
}

/// The key of one published port in one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Claim {
    pub v6: bool,
    pub host_ip: Option<IpAddr>,
    pub proto: Proto,
    pub port: u16,
}

impl Claim {
    /// `m` must already be reduced to the family.
    pub fn of(v6: bool, m: &Mapping) -> Claim {
        Claim {
            v6,
            host_ip: m.host_ip,
            proto: m.proto,
            port: m.host_port,
        }
    }

    fn ip_part(&self) -> &'static str {
        if self.host_ip.is_some() {
            "ip"
        } else {
            ""
        }
    }

    pub fn claims_map(&self) -> String {
        format!("claims{}{}", self.ip_part(), fam(self.v6))
    }

    pub fn dnat_map(&self, gid: u32) -> String {
        format!("dnat{}{}{}", self.ip_part(), fam(self.v6), sfx(gid))
    }

    pub fn key_text(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("{ip} . {} . {}", self.proto.as_str(), self.port),
            None => format!("{} . {}", self.proto.as_str(), self.port),
        }
    }

    pub fn key_bytes(&self) -> Vec<u8> {
        let ip = self.host_ip.as_ref().map(key::addr).unwrap_or_default();
        key::cat(&[&ip, &key::proto(self.proto.number()), &key::port(self.port)])
    }

    /// The claim of a key read from map `claims[ip]<4|6>`.
    pub fn decode(v6: bool, with_ip: bool, k: &[u8]) -> Option<Claim> {
        let alen = match (with_ip, v6) {
            (false, _) => 0,
            (true, false) => 4,
            (true, true) => 16,
        };
        if k.len() != alen + 8 {
            return None;
        }
        let host_ip = if with_ip {
            Some(addr_of(&k[..alen])?)
        } else {
            None
        };
        Some(Claim {
            v6,
            host_ip,
            proto: Proto::from_number(k[alen])?,
            port: u16::from_be_bytes([k[alen + 4], k[alen + 5]]),
        })
    }

    pub fn mapping(&self, container_port: u16) -> Mapping {
        Mapping {
            host_ip: self.host_ip,
            host_port: self.port,
            container_port,
            proto: self.proto,
        }
    }

    pub fn delete_claim(&self) -> Op {
        Op::delete(
            TABLE,
            &self.claims_map(),
            self.key_bytes(),
            &self.key_text(),
        )
    }

    pub fn delete_dnat(&self, gid: u32) -> Op {
        Op::delete(
            TABLE,
            &self.dnat_map(gid),
            self.key_bytes(),
            &self.key_text(),
        )
    }
}

/// Every claim map: (name, v6, keyed by a host IP).
pub const CLAIM_MAPS: [(&str, bool, bool); 4] = [
    ("claims4", false, false),
    ("claimsip4", false, true),
    ("claims6", true, false),
    ("claimsip6", true, true),
];

pub fn hairpin_map(v6: bool) -> String {
    format!("hairpin{}", fam(v6))
}

fn addr_of(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The (address, port) value of a DNAT map element.
pub fn decode_target(data: &[u8]) -> Option<(IpAddr, u16)> {
    if data.len() < 8 {
        return None;
    }
    let alen = data.len() - 4;
    Some((
        addr_of(&data[..alen])?,
        u16::from_be_bytes([data[alen], data[alen + 1]]),
    ))
}

/// The group id stored as a claim's value.
pub fn decode_gid(data: &[u8]) -> u32 {
    <[u8; 4]>::try_from(data).map_or(0, u32::from_ne_bytes)
}

/// The table, claim and hairpin maps, and the postrouting chain. Idempotent.
pub fn base_script() -> String {
    let mut s = format!("add table {TABLE}\n");
    for (name, v6, with_ip) in CLAIM_MAPS {
        let ip = if with_ip {
            format!("{}_addr . ", if v6 { "ipv6" } else { "ipv4" })
        } else {
            String::new()
        };
        s.push_str(&format!(
            "add map {TABLE} {name} {{ type {ip}inet_proto . inet_service : mark; }}\n"
        ));
    }
    s.push_str(&format!(
        "add map {TABLE} hairpin4 {{ type ipv4_addr : verdict; }}\n\
         add map {TABLE} hairpin6 {{ type ipv6_addr : verdict; }}\n\
         add chain {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
         flush chain {TABLE} postrouting\n\
         add rule {TABLE} postrouting ct status dnat ip daddr vmap @hairpin4\n\
         add rule {TABLE} postrouting ct status dnat ip6 daddr vmap @hairpin6\n"
    ));
    s
}

/// The prerouting and output chains of a family's condition group.
pub fn group_chains(v6: bool, gid: u32) -> [String; 2] {
    let (f, sx) = (fam(v6), sfx(gid));
    [format!("pre{f}{sx}"), format!("out{f}{sx}")]
}

/// The DNAT maps and the prerouting/output chains of one family's condition group. Idempotent.
/// With `counters`, each DNAT element counts the connections it NATed (DEL skips the conntrack
/// flush of a mapping that NATed none); a map created without them (by an earlier version)
/// cannot be redefined with them: the kernel says EEXIST, and the script without is used.
pub fn group_script(v6: bool, conds: &[String], counters: bool) -> String {
    let gid = group_id(conds);
    let (f, x, sx) = (fam(v6), ipx(v6), sfx(gid));
    let addr = if v6 { "ipv6_addr" } else { "ipv4_addr" };
    let counter = if counters { " counter;" } else { "" };
    let c = if conds.is_empty() {
        String::new()
    } else {
        format!("{} ", conds.join(" "))
    };
    let mut s = format!(
        "add map {TABLE} dnat{f}{sx} {{ type inet_proto . inet_service : {addr} . inet_service;{counter} }}\n\
         add map {TABLE} dnatip{f}{sx} {{ type {addr} . inet_proto . inet_service : {addr} . inet_service;{counter} }}\n"
    );
    for (chain, hook) in [("pre", "prerouting"), ("out", "output")] {
        // ::1 cannot be routed to a container (IPv6 has no route_localnet).
        let not_lo = if v6 && chain == "out" {
            "ip6 daddr != ::1 "
        } else {
            ""
        };
        s.push_str(&format!(
            "add chain {TABLE} {chain}{f}{sx} {{ type nat hook {hook} priority -100; policy accept; }}\n\
             flush chain {TABLE} {chain}{f}{sx}\n\
             add rule {TABLE} {chain}{f}{sx} {c}dnat {x} to {x} daddr . meta l4proto . th dport map @dnatip{f}{sx}\n\
             add rule {TABLE} {chain}{f}{sx} {c}{not_lo}fib daddr type local dnat {x} to meta l4proto . th dport map @dnat{f}{sx}\n"
        ));
    }
    s
}

/// The masquerade chain shared by a network's attachments in one subnet (and masqAll setting).
pub fn hp_chain_name(tag: &Tag, addr: &IpNetwork, masq_all: bool) -> String {
    let k = format!("{} {} {masq_all}", tag.network_label(), subnet_of(addr));
    format!("hp-{:016x}", fnv1a(k.as_bytes()))
}

/// Create (or refresh) the masquerade chain for `addr`. Idempotent.
pub fn hp_chain_script(tag: &Tag, addr: &IpNetwork, masq_all: bool) -> String {
    let name = hp_chain_name(tag, addr, masq_all);
    let (x, subnet) = (ipx(addr.is_ipv6()), subnet_of(addr));
    let label = tag.network_label();
    let mut s = format!("add chain {TABLE} {name}\nflush chain {TABLE} {name}\n");
    if masq_all {
        s.push_str(&format!(
            "add rule {TABLE} {name} masquerade comment \"{label} {subnet} all\"\n"
        ));
        return s;
    }
    s.push_str(&format!(
        "add rule {TABLE} {name} {x} saddr {subnet} masquerade comment \"{label} {subnet}\"\n"
    ));
    if addr.is_ipv4() {
        s.push_str(&format!(
            "add rule {TABLE} {name} ip saddr 127.0.0.0/8 masquerade comment \"{label} {subnet}\"\n"
        ));
    }
    s
}

/// Everything an ADD creates: claims, DNAT elements, hairpin elements (with snat). Each is a
/// `create element`, which fails when the key exists.
pub fn create_ops(tag: &Tag, fwds: &[Forward], opts: &Options) -> Vec<Op> {
    let mut ops = Vec::new();
    let t = tag.as_str();
    for f in fwds {
        let (v6, ip) = (f.v6(), f.container.ip());
        let gid = group_id(opts.conditions(v6));
        for m in &f.mappings {
            let c = Claim::of(v6, m);
            let (k, kt) = (c.key_bytes(), c.key_text());
            let gid_data = Data::Value(key::mark(gid).to_vec());
            ops.push(Op::create(
                TABLE,
                &c.claims_map(),
                k.clone(),
                &kt,
                gid_data,
                &format!("0x{gid:08x}"),
                t,
            ));
            let target = key::cat(&[&key::addr(&ip), &key::port(m.container_port)]);
            let target_text = format!("{ip} . {}", m.container_port);
            ops.push(Op::create(
                TABLE,
                &c.dnat_map(gid),
                k,
                &kt,
                Data::Value(target),
                &target_text,
                t,
            ));
        }
        if opts.snat && !f.mappings.is_empty() {
            let chain = hp_chain_name(tag, &f.container, opts.masq_all);
            let text = format!("jump {chain}");
            ops.push(Op::create(
                TABLE,
                &hairpin_map(v6),
                key::addr(&ip),
                &ip.to_string(),
                Data::Jump(chain),
                &text,
                t,
            ));
        }
    }
    ops
}

/// Every object an ADD's elements refer to (for the setup after ENOENT); `counters`: see
/// [`group_script`].
pub fn setup_script(tag: &Tag, fwds: &[Forward], opts: &Options, counters: bool) -> String {
    let mut s = base_script();
    for v6 in [false, true] {
        if fwds.iter().any(|f| f.v6() == v6) {
            s.push_str(&group_script(v6, opts.conditions(v6), counters));
        }
    }
    if opts.snat {
        for f in fwds {
            s.push_str(&hp_chain_script(tag, &f.container, opts.masq_all));
        }
    }
    s
}

pub fn delete_hairpin(ip: &IpAddr) -> Op {
    Op::delete(
        TABLE,
        &hairpin_map(ip.is_ipv6()),
        key::addr(ip),
        &ip.to_string(),
    )
}

#[cfg(test)]
#[path = "nft_script_tests.rs"]
mod tests;
