//! host-local's directory as a consistent snapshot (read under its own lock), and the checks
//! that it is not corrupt.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use cni_shared::lock::FileLock;

/// One network's lease directory.
#[derive(Debug, Default)]
pub struct StoreView {
    /// Lease file name (an address) → content.
    pub leases: BTreeMap<IpAddr, String>,
    /// Index entry `(containerID, ifname)` → its addresses.
    pub index: BTreeMap<(String, String), Vec<IpAddr>>,
    /// Files that look like a writer's temporary file.
    pub temps: Vec<String>,
}

fn is_temp(name: &str) -> bool {
    name.contains(".tmp-")
}

impl StoreView {
    /// Read `<data>/<network>` while holding its lock (nothing changes meanwhile). An absent
    /// directory is an empty store.
    pub fn read(data: &Path, network: &str) -> StoreView {
        let dir = data.join(network);
        let mut v = StoreView::default();
        if !dir.is_dir() {
            return v;
        }
        let _lock = FileLock::exclusive(&dir.join("lock"), Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("locking {}: {e}", dir.display()));
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_temp(&name) {
                v.temps.push(name);
            } else if let Ok(ip) = name.parse::<IpAddr>() {
                let content = std::fs::read(e.path()).unwrap_or_default();
                v.leases
                    .insert(ip, String::from_utf8_lossy(&content).into_owned());
            }
        }
        let Ok(rd) = std::fs::read_dir(dir.join(".attachments")) else {
            return v;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if is_temp(&name) {
                v.temps.push(format!(".attachments/{name}"));
                continue;
            }
            if name.starts_with('.') {
                continue;
            }
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            let mut lines = content.lines();
            let (id, ifname) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
            let ips = lines.map(|l| l.parse().unwrap()).collect();
            v.index.insert((id.to_string(), ifname.to_string()), ips);
        }
        v
    }

    /// The owners according to the lease files: `(containerID, ifname)` → addresses.
    pub fn owners(&self) -> BTreeMap<(String, String), Vec<IpAddr>> {
        let mut out: BTreeMap<(String, String), Vec<IpAddr>> = BTreeMap::new();
        for (ip, content) in &self.leases {
            let (id, ifname) = content.split_once("\r\n").unwrap_or((content, ""));
            out.entry((id.to_string(), ifname.to_string()))
                .or_default()
                .push(*ip);
        }
        out
    }

    /// The container IDs holding leases.
    pub fn holders(&self) -> BTreeSet<String> {
        self.owners().into_keys().map(|(id, _)| id).collect()
    }

    /// Not corrupt: every lease reads `<id>\r\n<ifname>`, no attachment holds more than
    /// `per_attachment` addresses, the index says exactly what the lease files say, and no
    /// temporary file is left.
    pub fn assert_consistent(&self, per_attachment: usize) {
        for (ip, content) in &self.leases {
            let ok = content
                .split_once("\r\n")
                .is_some_and(|(id, f)| !id.is_empty() && !f.is_empty() && !f.contains('\n'));
            assert!(ok, "lease {ip} is malformed: {content:?}");
        }
        let owners = self.owners();
        for (who, ips) in &owners {
            assert!(
                ips.len() <= per_attachment,
                "{who:?} holds {} addresses: {ips:?}",
                ips.len()
            );
        }
        let sorted = |m: &BTreeMap<(String, String), Vec<IpAddr>>| {
            m.iter()
                .map(|(k, v)| {
                    let mut v = v.clone();
                    v.sort();
                    (k.clone(), v)
                })
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            sorted(&self.index),
            sorted(&owners),
            "the index differs from the lease files"
        );
        assert!(
            self.temps.is_empty(),
            "temporary files left: {:?}",
            self.temps
        );
    }
}
