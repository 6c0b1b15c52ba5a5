//! Who uses the vlan sub-interfaces in the host namespace. A macvlan in a container namespace
//! is invisible from the host, so the kernel cannot tell us whether a sub-interface is still in
//! use; these records can. One JSON file per sub-interface, `<dataDir>/<link>.json`, changed
//! only under the lock `<dataDir>/lock`:
//!
//! ```json
//! {"ifindex": 7, "users": [{"network": "lan", "containerID": "c1", "ifname": "eth0"}]}
//! ```
//!
//! `ifindex` ties the record to one incarnation of the link: deleting a vlan link deletes every
//! macvlan on it, so a record whose link is gone, or was re-created under another index, has
//! no live users left.

use std::path::{Path, PathBuf};

use cni_shared::fsutil::{self, Durability};
use cni_shared::lock::{FileLock, DEFAULT_LOCK_TIMEOUT};
use cni_shared::{CniError, Result};
use serde::{Deserialize, Serialize};

const SUFFIX: &str = ".json";

/// One attachment: network name, container ID, interface name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The users of one sub-interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub ifindex: u32,
    pub users: Vec<User>,
}

impl Record {
    /// Add `u` unless present (an ADD retried after a failure).
    pub fn add(&mut self, u: &User) {
        if !self.users.contains(u) {
            self.users.push(u.clone());
        }
    }

    /// Remove `u`; whether it was there.
    pub fn remove(&mut self, u: &User) -> bool {
        let before = self.users.len();
        self.users.retain(|x| x != u);
        self.users.len() != before
    }
}

/// The record directory, locked for as long as this lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: FileLock,
}

impl Store {
    /// Create the directory if needed and take its lock.
    pub fn open(dir: &Path) -> Result<Store> {
        fsutil::ensure_dir(dir, 0o700)
            .map_err(|e| CniError::io(format!("dataDir: creating {}: {e}", dir.display())))?;
        Self::lock(dir)
    }

    /// Lock an existing directory; `None` when there is none (nothing was ever recorded).
    pub fn open_existing(dir: &Path) -> Result<Option<Store>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        Self::lock(dir).map(Some)
    }

    fn lock(dir: &Path) -> Result<Store> {
        let lock = FileLock::exclusive(&dir.join("lock"), DEFAULT_LOCK_TIMEOUT)?;
        // A writer killed between its temporary file and the rename left the file behind (a
        // few records: cheap to look).
        if let Ok(n @ 1..) = fsutil::remove_stale_temps(dir) {
            tracing::info!("removed {n} temporary files of killed writers");
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    fn path(&self, link: &str) -> PathBuf {
        self.dir.join(format!("{link}{SUFFIX}"))
    }

    /// The record of `link`; `None` when there is none.
    pub fn load(&self, link: &str) -> Result<Option<Record>> {
        let p = self.path(link);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CniError::decode(format!("vlan record {}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("reading {}: {e}", p.display()))),
        }
    }

    pub fn save(&self, link: &str, r: &Record) -> Result<()> {
        let p = self.path(link);
        let body = serde_json::to_vec(r)
            .map_err(|e| CniError::internal(format!("encoding {}: {e}", p.display())))?;
        fsutil::write_atomic(&p, &body, 0o600, Durability::Durable)
            .map_err(|e| CniError::io(format!("writing {}: {e}", p.display())))
    }

    pub fn remove(&self, link: &str) -> Result<()> {
        let p = self.path(link);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("removing {}: {e}", p.display()))),
        }
    }

    /// The links that have a record.
    pub fn links(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("reading {}: {e}", self.dir.display())))?;
        let mut out: Vec<String> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(SUFFIX)
                    .filter(|l| !l.is_empty() && !l.starts_with('.'))
                    .map(str::to_owned)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(c: &str) -> User {
        User {
            network: "lan".into(),
            container_id: c.into(),
            ifname: "eth0".into(),
        }
    }

    #[test]
    fn records_round_trip_under_the_lock() {
        let dir = std::env::temp_dir().join(format!("macvlan-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(Store::open_existing(&dir).unwrap().is_none());
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.load("eth0.10").unwrap(), None);
        let mut r = Record {
            ifindex: 7,
            users: Vec::new(),
        };
        r.add(&user("c1"));
        r.add(&user("c1"));
        r.add(&user("c2"));
        assert_eq!(r.users.len(), 2);
        s.save("eth0.10", &r).unwrap();
        s.save("eth1.20", &Record::default()).unwrap();
        assert_eq!(s.links().unwrap(), ["eth0.10", "eth1.20"]);
        assert_eq!(s.load("eth0.10").unwrap().as_ref(), Some(&r));
        let text = std::fs::read_to_string(dir.join("eth0.10.json")).unwrap();
        assert!(text.contains(r#""containerID":"c1""#), "{text}");
        assert!(r.remove(&user("c1")));
        assert!(!r.remove(&user("c1")));
        s.remove("eth1.20").unwrap();
        s.remove("eth1.20").unwrap();
        assert_eq!(s.links().unwrap(), ["eth0.10"]);
        std::fs::write(dir.join("bad.json"), b"{").unwrap();
        assert_eq!(s.load("bad").unwrap_err().code, 6);
        drop(s);
        // A save killed before its rename (a pid that cannot exist): gone at the next open.
        let torn = dir.join(".eth0.10.json.tmp-99999999-0");
        std::fs::write(&torn, b"{\"ifind").unwrap();
        assert!(Store::open_existing(&dir).unwrap().is_some());
        assert!(!torn.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
