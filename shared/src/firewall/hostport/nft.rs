//! Host ports with nftables: `table inet cni_hostport`, tagged map elements (layout and reasons
//! in the module doc of [`super`]). Element changes go to the kernel as one nfnetlink batch per
//! call ([`nftelem`](crate::firewall::nftelem)), ownership is read with single-key kernel lookups ([`nftset::get`](crate::firewall::nftset::get)); the
//! table, maps and chains are made through [`Nft`] only when the kernel reports them missing.
//! DEL, CHECK, GC and STATUS run no nft script: they ask the kernel.

use std::collections::HashSet;
use std::net::IpAddr;

use super::nft_found::{
    claims_where, commit, get, hairpins_where, hinted, owned, remove, remove_orphan_chains, Found,
    Steps,
};
use super::nft_script::{
    create_ops, decode_gid, decode_target, delete_hairpin, group_chains, group_id, hairpin_map,
    setup_script, Claim, TABLE, TABLE_NAME,
};
use super::{in_use, DelHint, Flush, Forward, HostPorts, Options, Published};
use crate::error::{CniError, Result};
use crate::firewall::nftelem::Op;
use crate::firewall::nftexec::Nft;
use crate::firewall::nftrule;
use crate::firewall::nftset::{key, INET};
use crate::firewall::Tag;
use crate::nfnl::Nfnl;

/// The nftables host port driver.
#[derive(Debug, Clone)]
pub struct NftHostPorts {
    opts: Options,
}

impl NftHostPorts {
    pub fn new(opts: Options) -> NftHostPorts {
        NftHostPorts { opts }
    }
}

fn nft() -> Result<&'static Nft> {
    Nft::get().map_err(|e| e.context("backend nftables"))
}

fn socket() -> Result<Nfnl> {
    Nfnl::open_backend("backend nftables")
}

impl NftHostPorts {
    /// Create the table, maps and chains an ADD's elements refer to: DNAT maps with element
    /// counters, or as they are when an earlier version made them without.
    fn setup(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        let (nft, what) = (nft()?, "creating table inet cni_hostport");
        match nft.run(&setup_script(tag, fwds, &self.opts, true)) {
            Ok(_) => Ok(()),
            Err(e) if e.is_exists() => nft.apply(&setup_script(tag, fwds, &self.opts, false), what),
            Err(e) => Err(e.cni(what)),
        }
    }

    /// Refuse a hostIP mapping whose port another attachment publishes on every address.
    fn check_wildcards(&self, nl: &mut Nfnl, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        for f in fwds {
            for m in f.mappings.iter().filter(|m| m.host_ip.is_some()) {
                let any = Claim::of(
                    f.v6(),
                    &super::Mapping {
                        host_ip: None,
                        ..*m
                    },
                );
                if let Some(e) = get(nl, &any.claims_map(), &any.key_bytes())? {
                    let owner = e.comment.unwrap_or_default();
                    if owner != tag.as_str() {
                        return Err(in_use(&any.mapping(m.container_port), &owner));
                    }
                }
            }
        }
        Ok(())
    }

    /// The ADD batch met existing keys: another attachment's keys are conflicts; everything of
    /// this attachment (an earlier ADD, whatever its mappings) and stale DNAT and hairpin
    /// elements for these keys are replaced in one transaction.
    fn replace(&self, nl: &mut Nfnl, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        let mut conflicts = Vec::new();
        for f in fwds {
            for m in &f.mappings {
                let c = Claim::of(f.v6(), m);
                if let Some(e) = get(nl, &c.claims_map(), &c.key_bytes())? {
                    let owner = e.comment.unwrap_or_default();
                    if owner != tag.as_str() {
                        conflicts.push(in_use(m, &owner).msg);
                    }
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(CniError::new(super::PORT_IN_USE, conflicts.join("; ")));
        }
        // This rare path may list our maps: a re-ADD must not leave an earlier ADD's mappings.
        let mine = claims_where(nl, |c| c == tag.as_str())?;
        let mut hairpins = hairpins_where(nl, |c| c == tag.as_str())?;
        // A mapping published again as it was keeps its elements: its DNAT element's counter
        // tells DEL whether connections went through it (a new element would say none).
        let unchanged = |x: &Found| {
            fwds.iter().any(|f| {
                let gid = group_id(self.opts.conditions(f.v6()));
                f.mappings.iter().any(|m| {
                    x.claim == Claim::of(f.v6(), m)
                        && x.gid == gid
                        && x.target == Some((f.container.ip(), m.container_port))
                })
            })
        };
        let (kept, replaced): (Vec<&Found>, Vec<&Found>) = mine.iter().partition(|x| unchanged(x));
        let mut pre: Vec<Op> = replaced.iter().flat_map(|x| x.delete_ops()).collect();
        for f in fwds {
            let gid = group_id(self.opts.conditions(f.v6()));
            for m in &f.mappings {
                let c = Claim::of(f.v6(), m);
                // A listed claim's DNAT element is deleted above with it, or kept.
                let listed = mine
                    .iter()
                    .any(|x| x.claim == c && x.gid == gid && x.target.is_some());
                if !listed && get(nl, &c.dnat_map(gid), &c.key_bytes())?.is_some() {
                    pre.push(c.delete_dnat(gid));
                }
            }
            let ip = f.container.ip();
            if self.opts.snat
                && !hairpins.contains(&ip)
                && get(nl, &hairpin_map(f.v6()), &key::addr(&ip))?.is_some()
            {
                hairpins.push(ip);
            }
        }
        pre.extend(hairpins.iter().map(delete_hairpin));
        tracing::info!(kept = kept.len(), "replacing earlier host port entries");
        let is_kept = |op: &Op| {
            kept.iter().any(|x| {
                op.key == x.claim.key_bytes()
                    && (op.set == x.claim.claims_map() || op.set == x.claim.dnat_map(x.gid))
            })
        };
        pre.extend(
            create_ops(tag, fwds, &self.opts)
                .into_iter()
                .filter(|op| !is_kept(op)),
        );
        match commit(nl, &pre) {
            Ok(()) => Ok(()),
            Err(e) if e.is_exists() => Err(CniError::try_again(
                "runtimeConfig.portMappings: a concurrent ADD published one of these host ports; \
                 try again",
            )),
            Err(e) => Err(e.cni("replacing host port entries")),
        }
    }
}

impl HostPorts for NftHostPorts {
    fn add(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        if fwds.iter().all(|f| f.mappings.is_empty()) {
            return Ok(());
        }
        let mut nl = socket()?;
        self.check_wildcards(&mut nl, tag, fwds)?;
        let ops = create_ops(tag, fwds, &self.opts);
        for _ in 0..3 {
            match commit(&mut nl, &ops) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_missing() => self.setup(tag, fwds)?,
                Err(e) if e.is_exists() => return self.replace(&mut nl, tag, fwds),
                Err(e) => return Err(e.cni("adding host port entries")),
            }
        }
        Err(CniError::try_again(
            "backend nftables: table inet cni_hostport vanished again right after its setup",
        ))
    }

    fn del(&self, tag: &Tag, hint: &DelHint, flush: &mut Flush) -> Result<Vec<Published>> {
        let mut nl = socket()?;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        for m in hint.mappings.unwrap_or_default() {
            for v6 in [false, true] {
                let Some(m) = m.for_family(v6) else { continue };
                let c = Claim::of(v6, &m);
                if !seen.insert(c) {
                    continue;
                }
                let e = get(&mut nl, &c.claims_map(), &c.key_bytes())?;
                if owned(&e, tag) {
                    let gid = e.map_or(0, |e| decode_gid(&e.data));
                    found.push(Found::read(&mut nl, c, gid)?);
                }
            }
        }
        let searched = found.is_empty();
        if searched {
            found = claims_where(&mut nl, |c| c == tag.as_str())?;
        }
        let mut ips: Vec<IpAddr> = hint.addrs.to_vec();
        ips.extend(found.iter().filter_map(|f| f.target.map(|t| t.0)));
        let mut hairpins = Vec::new();
        for ip in ips {
            if !hairpins.contains(&ip)
                && owned(
                    &get(&mut nl, &hairpin_map(ip.is_ipv6()), &key::addr(&ip))?,
                    tag,
                )
            {
                hairpins.push(ip);
            }
        }
        // Nothing known for sure (or a DNAT element gone): search the hairpin maps too.
        if searched || found.iter().any(|f| f.target.is_none()) {
            for ip in hairpins_where(&mut nl, |c| c == tag.as_str())? {
                if !hairpins.contains(&ip) {
                    hairpins.push(ip);
                }
            }
        }
        let also = hinted(&mut nl, hint, &found)?;
        let what = "deleting host port entries";
        remove(&mut nl, &found, &hairpins, Steps::One, also, flush, what)
    }

    fn check(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        let mut nl = socket()?;
        let mut chains = Vec::new();
        for f in fwds.iter().filter(|f| !f.mappings.is_empty()) {
            let (v6, ip) = (f.v6(), f.container.ip());
            chains.extend(group_chains(v6, group_id(self.opts.conditions(v6))));
            for m in &f.mappings {
                let c = Claim::of(v6, m);
                let e = get(&mut nl, &c.claims_map(), &c.key_bytes())?;
                let gid = match e {
                    Some(e) if e.comment.as_deref() == Some(tag.as_str()) => decode_gid(&e.data),
                    Some(e) => {
                        let owner = e.comment.unwrap_or_default();
                        return Err(in_use(m, &owner).context("CHECK"));
                    }
                    None => {
                        return Err(CniError::internal(format!(
                            "CHECK: host port {} is not published (no element in {TABLE} {})",
                            m.describe_host(),
                            c.claims_map()
                        )))
                    }
                };
                let target = get(&mut nl, &c.dnat_map(gid), &c.key_bytes())?
                    .and_then(|d| decode_target(&d.data));
                if target != Some((ip, m.container_port)) {
                    return Err(CniError::internal(format!(
                        "CHECK: host port {} does not forward to {ip} port {} (map {TABLE} {} \
                         has {target:?})",
                        m.describe_host(),
                        m.container_port,
                        c.dnat_map(gid)
                    )));
                }
            }
            if self.opts.snat && !owned(&get(&mut nl, &hairpin_map(v6), &key::addr(&ip))?, tag) {
                return Err(CniError::internal(format!(
                    "CHECK: no masquerade entry for {ip} in {TABLE} {}",
                    hairpin_map(v6)
                )));
            }
        }
        for chain in chains {
            match nftrule::exists(&mut nl, INET, TABLE_NAME, Some(&chain)) {
                Some(true) => {}
                Some(false) => {
                    return Err(CniError::internal(format!(
                        "CHECK: chain {chain} of {TABLE} is missing"
                    )))
                }
                None => {
                    return Err(CniError::internal(format!(
                        "CHECK: chain {chain} of {TABLE} could not be looked up"
                    )))
                }
            }
        }
        Ok(())
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>, flush: &mut Flush) -> Result<Vec<Published>> {
        let mut nl = socket()?;
        let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
        let stale = |c: &str| Tag::in_network(c, network) && !keep.contains(c);
        let found = claims_where(&mut nl, stale)?;
        let hairpins = hairpins_where(&mut nl, stale)?;
        if !found.is_empty() || !hairpins.is_empty() {
            tracing::info!(mappings = found.len(), "GC: removing host port entries");
        }
        let what = "GC of host port entries";
        let removed = remove(
            &mut nl,
            &found,
            &hairpins,
            Steps::ClaimsLast,
            Vec::new(),
            flush,
            what,
        )?;
        remove_orphan_chains(&mut nl, network);
        Ok(removed)
    }

    fn status(&self) -> Result<()> {
        Nft::ready("backend nftables")
    }
}
