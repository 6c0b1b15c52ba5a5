//! The CNI verbs of host-local.

use std::path::Path;

use cni_shared::skel::{About, Plugin, Request};
use cni_shared::spec::{CniResult, IpConfig};
use cni_shared::{code, CniError, Result};

use crate::allocator::{self, codes};
use crate::config::{self, IpamConfig};
use crate::resolv;
use crate::store::Store;

/// The host-local plugin.
pub struct HostLocal;

/// STATUS looks at this many candidate addresses of a range set at most for a free one.
const STATUS_PROBES: usize = 4096;

pub const ABOUT: About = About {
    name: "host-local",
    version: env!("CARGO_PKG_VERSION"),
};

impl Plugin for HostLocal {
    fn add(&self, req: &Request) -> Result<CniResult> {
        let cfg = IpamConfig::from_request(req)?;
        let requested = config::requested_ips(req)?;
        let dns = match &cfg.resolv_conf {
            Some(p) => resolv::load(p)?,
            None => Default::default(),
        };
        let store = Store::open_locked(&cfg.network_dir())?;
        let allocations =
            allocator::allocate(&cfg, &store, &req.container_id, &req.ifname, &requested)?;
        tracing::info!(
            ips = ?allocations.iter().map(|a| a.address.to_string()).collect::<Vec<_>>(),
            "allocated"
        );
        Ok(CniResult {
            ips: allocations
                .into_iter()
                .map(|a| IpConfig::new(a.address, a.gateway))
                .collect(),
            routes: cfg.routes.clone(),
            dns,
            ..CniResult::default()
        })
    }

    fn del(&self, req: &Request) -> Result<()> {
        let cfg = IpamConfig::from_request(req)?;
        let Some(store) = Store::open_existing_locked(&cfg.network_dir())? else {
            return Ok(());
        };
        let released = allocator::release(&store, &req.container_id, &req.ifname)?;
        tracing::info!(?released, "released");
        Ok(())
    }

    fn check(&self, req: &Request) -> Result<()> {
        let cfg = IpamConfig::from_request(req)?;
        let missing = || {
            CniError::new(
                codes::NO_RESERVATION,
                format!(
                    "container {} interface {} holds no address in network {}",
                    req.container_id, req.ifname, cfg.network
                ),
            )
        };
        let store = Store::open_existing_locked(&cfg.network_dir())?.ok_or_else(missing)?;
        let held = allocator::held_by(&store, &req.container_id, &req.ifname)?;
        if held.is_empty() {
            return Err(missing());
        }
        // Every address of ours that the runtime believes the attachment has must be leased.
        if let Some(prev) = req.prev_result()? {
            for ip in prev.ips.iter().map(|i| i.address.ip()) {
                let ours = cfg.range_sets.iter().any(|s| s.range_of(ip).is_some());
                if ours && !held.contains(&ip) {
                    return Err(CniError::new(
                        codes::NO_RESERVATION,
                        format!(
                            "{ip} of container {} interface {} is not leased in network {}",
                            req.container_id, req.ifname, cfg.network
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// STATUS fails only when the data dir cannot take a new file (code 50). A range set with
    /// no free address is logged, not an error: runtimes turn a failed STATUS into
    /// NetworkReady=false (containerd 2.x through go-cni), kubelet then marks the node NotReady
    /// and Kubernetes evicts every pod on it — a full pool would evict the very pods that hold
    /// its addresses. ADD still fails with code 100 on a full set.
    fn status(&self, req: &Request) -> Result<()> {
        let cfg = IpamConfig::from_request(req)?;
        let dir = cfg.network_dir();
        writable(&dir)?;
        let store = Store::open_unlocked(&dir);
        for (idx, set) in cfg.range_sets.iter().enumerate() {
            // Cheap: the round-robin order puts the least recently handed out addresses first,
            // so a free one is usually the first or second; a full set costs at most
            // STATUS_PROBES stats, not one per address of a /16.
            let mut probed = 0usize;
            let free = set
                .candidates(store.last_reserved(idx))
                .take(STATUS_PROBES)
                .inspect(|_| probed += 1)
                .any(|(_, ip)| !cfg.is_excluded(ip) && !store.is_taken(ip));
            if !free {
                let what = if probed < STATUS_PROBES {
                    "has no free address left"
                } else {
                    "has no free address among the next candidates (it may be full)"
                };
                tracing::warn!(
                    network = %cfg.network,
                    range_set = idx,
                    ranges = %set.describe(),
                    probed,
                    "range set {idx} of network {} {what}; STATUS still succeeds (a failed \
                     STATUS would mark the node NotReady), ADD fails with code 100",
                    cfg.network
                );
            }
        }
        Ok(())
    }

    fn gc(&self, req: &Request) -> Result<()> {
        let cfg = IpamConfig::from_request(req)?;
        let valid: Vec<(String, String)> = req
            .gc_valid_attachments()?
            .into_iter()
            .map(|a| (a.container_id, a.ifname))
            .collect();
        let Some(store) = Store::open_existing_locked(&cfg.network_dir())? else {
            return Ok(());
        };
        let released = allocator::collect_garbage(&store, &valid)?;
        tracing::info!(?released, "garbage collected");
        Ok(())
    }
}

/// STATUS: the network dir (or the nearest existing parent, which ADD would create it under)
/// must take a new file: a probe file is created and removed at once — in the index directory
/// when there is one ([`Store::probe_dir`]: a file made and removed in the network directory
/// itself would change that directory's mtime, which tells the next ADD or GC that someone
/// else wrote there, and it would rebuild the index from every lease file).
fn writable(dir: &Path) -> Result<()> {
    let existing = Store::probe_dir(dir);
    let probe = existing.join(format!(".host-local-status-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match created {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(CniError::new(
            code::NOT_AVAILABLE,
            format!(
                "data dir {} is not writable ({} refuses new files: {e})",
                dir.display(),
                existing.display()
            ),
        )),
    }
}
