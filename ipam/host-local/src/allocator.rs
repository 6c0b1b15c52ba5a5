//! Choosing, finding and releasing an attachment's addresses: one per range set, all or nothing.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use cni_shared::{CniError, Result};

use crate::config::IpamConfig;
use crate::range::Range;
use crate::store::{Owner, Store};

/// Host-local's own error codes (100 and above are plugin-specific in the spec).
pub mod codes {
    /// A range set has no free address left.
    pub const POOL_EXHAUSTED: u32 = 100;
    /// The address is held by someone else, or the attachment already holds one.
    pub const ADDRESS_IN_USE: u32 = 101;
    /// CHECK: the attachment holds no lease.
    pub const NO_RESERVATION: u32 = 102;
}

/// One address handed to an attachment.
#[derive(Debug, Clone)]
pub struct Allocation {
    pub address: IpNetwork,
    pub gateway: Option<IpAddr>,
}

fn allocation(ip: IpAddr, range: &Range) -> Result<Allocation> {
    let address = IpNetwork::new(ip, range.subnet.prefix())
        .map_err(|e| CniError::internal(format!("{ip}/{}: {e}", range.subnet.prefix())))?;
    Ok(Allocation {
        address,
        gateway: range.gateway,
    })
}

/// Allocate one address from every range set for `(id, ifname)`, honouring requested addresses.
/// On any failure nothing stays reserved.
pub fn allocate(
    cfg: &IpamConfig,
    store: &Store,
    id: &str,
    ifname: &str,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>> {
    store.ensure_index()?;
    if let Some(held) = held_by(store, id, ifname)?.first() {
        return Err(CniError::new(
            codes::ADDRESS_IN_USE,
            format!(
                "container {id} interface {ifname} already holds {held} in network {}; \
                 a second ADD without DEL is not allowed",
                cfg.network
            ),
        ));
    }
    let wanted = assign_requested(cfg, store, requested)?;
    let mut taken: Vec<IpAddr> = Vec::new();
    let result = reserve_all(cfg, store, id, ifname, &wanted, &mut taken)
        .and_then(|a| store.index_put(id, ifname, &taken).map(|()| a));
    if result.is_err() {
        for ip in &taken {
            let _ = store.release(*ip);
        }
        return result;
    }
    result
}

fn reserve_all(
    cfg: &IpamConfig,
    store: &Store,
    id: &str,
    ifname: &str,
    wanted: &[Option<IpAddr>],
    taken: &mut Vec<IpAddr>,
) -> Result<Vec<Allocation>> {
    let mut out = Vec::new();
    for (idx, set) in cfg.range_sets.iter().enumerate() {
        let ip = match wanted.get(idx).copied().flatten() {
            Some(ip) => {
                if !store.reserve(ip, id, ifname)? {
                    return Err(in_use(store, ip));
                }
                ip
            }
            None => {
                let last = store.last_reserved(idx);
                let mut got = None;
                for (_, ip) in set.candidates(last) {
                    if cfg.is_excluded(ip) || store.is_taken(ip) {
                        continue;
                    }
                    if store.reserve(ip, id, ifname)? {
                        got = Some(ip);
                        break;
                    }
                }
                got.ok_or_else(|| {
                    CniError::new(
                        codes::POOL_EXHAUSTED,
                        format!(
                            "no free IP address in range set {idx} of network {}: {}",
                            cfg.network,
                            set.describe()
                        ),
                    )
                })?
            }
        };
        taken.push(ip);
        store.set_last_reserved(idx, ip)?;
        let range = set
            .range_of(ip)
            .ok_or_else(|| CniError::internal(format!("{ip} left its range set")))?;
        out.push(allocation(ip, range)?);
    }
    Ok(out)
}

fn in_use(store: &Store, ip: IpAddr) -> CniError {
    let owner = store
        .owner(ip)
        .ok()
        .flatten()
        .map(|o| o.container_id().to_string())
        .unwrap_or_else(|| "another container".into());
    CniError::new(
        codes::ADDRESS_IN_USE,
        format!("requested IP {ip} is already in use by container {owner}"),
    )
}

/// Map requested addresses onto range sets, checking each is allocatable.
fn assign_requested(
    cfg: &IpamConfig,
    store: &Store,
    requested: &[IpAddr],
) -> Result<Vec<Option<IpAddr>>> {
    let mut wanted = vec![None; cfg.range_sets.len()];
    for ip in requested {
        let Some((idx, range)) = cfg
            .range_sets
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.range_of(*ip).map(|r| (i, r)))
        else {
            let sets: Vec<String> = cfg.range_sets.iter().map(|s| s.describe()).collect();
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is in no range of network {} ({})",
                cfg.network,
                sets.join("; ")
            )));
        };
        if range.is_reserved(*ip) {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is the gateway, network or broadcast address of {}",
                range.subnet
            )));
        }
        if cfg.is_excluded(*ip) {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip} is excluded by ipam.exclude"
            )));
        }
        if wanted[idx].is_some() {
            return Err(CniError::invalid_config(format!(
                "requested IP {ip}: two requested addresses fall in range set {idx}; one address \
                 per range set"
            )));
        }
        if store.is_taken(*ip) {
            return Err(in_use(store, *ip));
        }
        wanted[idx] = Some(*ip);
    }
    Ok(wanted)
}

/// The addresses `(id, ifname)` holds, from the index (made complete first), each checked
/// against its lease file. Legacy leases (container ID only) count for every interface.
pub fn held_by(store: &Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
    store.ensure_index()?;
    let mut held = Vec::new();
    for key in [ifname, ""] {
        for ip in store.index_get(id, key).unwrap_or_default() {
            if !held.contains(&ip) && store.owner(ip)?.is_some_and(|o| o.matches(id, ifname)) {
                held.push(ip);
            }
        }
    }
    Ok(held)
}

/// Release everything `(id, ifname)` holds; returns the released addresses.
pub fn release(store: &Store, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
    let held = held_by(store, id, ifname)?;
    for ip in &held {
        store.release(*ip)?;
    }
    store.index_remove(id, ifname)?;
    if store.index_get(id, "").is_some() {
        store.index_remove(id, "")?;
    }
    Ok(held)
}

/// GC: release every lease whose attachment is not in `valid`. Unreadable lease files are
/// reported and left alone, unless they were written before the current boot (what a crash
/// leaves: see the store). Returns the released addresses.
pub fn collect_garbage(store: &Store, valid: &[(String, String)]) -> Result<Vec<IpAddr>> {
    store.ensure_index()?;
    // Sets: a node's list has an entry per attachment, as its store has a lease per address
    // (a scan of each list per lease was quadratic).
    let pairs: HashSet<(&str, &str)> = valid
        .iter()
        .map(|(i, f)| (i.as_str(), f.as_str()))
        .collect();
    let ids: HashSet<&str> = valid.iter().map(|(i, _)| i.as_str()).collect();
    let is_valid = |o: &Owner| match o {
        Owner::Attachment { id, ifname } => pairs.contains(&(id.as_str(), ifname.as_str())),
        Owner::LegacyId(id) => ids.contains(id.as_str()),
        Owner::Garbage(_) => false,
    };
    let mut released = Vec::new();
    for (ip, owner) in store.scan()? {
        match &owner {
            Owner::Garbage(what) if store.predates_boot(ip) => {
                tracing::warn!(%ip, "lease file is unreadable ({what:?}) and predates the boot; released");
                store.release(ip)?;
                released.push(ip);
            }
            Owner::Garbage(what) => {
                tracing::warn!(%ip, "lease file is unreadable ({what:?}); left in place");
            }
            _ if is_valid(&owner) => {}
            _ => {
                store.release(ip)?;
                released.push(ip);
            }
        }
    }
    for (path, id, ifname) in store.index_entries() {
        let legacy_valid = ifname.is_empty() && ids.contains(id.as_str());
        if !legacy_valid && !pairs.contains(&(id.as_str(), ifname.as_str())) {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(released)
}
