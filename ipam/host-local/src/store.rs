//! The lease store, in the reference's on-disk layout so users can switch implementations both
//! ways without losing leases:
//!
//! ```text
//! <dataDir>/<network>/lock                    flock held during every change
//! <dataDir>/<network>/<ip>                    "<containerID>\r\n<ifname>" (older: "<containerID>")
//! <dataDir>/<network>/last_reserved_ip.<n>    round-robin cursor of range set n
//! <dataDir>/<network>/.attachments/<cid>@<if> ours: the attachment's addresses, one per line
//! ```
//!
//! The `.attachments` index lets ADD refuse a second allocation and DEL find the leases without
//! reading every lease file. Every entry is checked against the lease files it names. The index
//! is known complete when `.attachments/.stamp` holds the network directory's mtime as we left it;
//! any other writer (the reference plugin, a crash mid-call) changes that mtime, and the next call
//! rebuilds the index from a full scan once. Leases holding only a container ID (old reference
//! versions) are indexed under an empty ifname and match any interface.
//!
//! Leases are created atomically (temp file + link: a lease is complete or absent, also when
//! the writer is killed); the round-robin cursor, the index entries and the stamp are written
//! in place under the lock, which costs no temporary name in directories of tens of thousands
//! of entries. A kill or crash that tears one of those leaves the stamp stale (it is written
//! last), so the next call rebuilds the index; a torn cursor restarts the round-robin at the
//! start of the range. Nothing is fsynced, like the reference's files. A lease matters only while its container runs, and
//! no container outlives a crash of the machine, which is the only thing an fsync guards
//! against; each fsync costs a journal commit (milliseconds, on the ADD path of every pod). What
//! such a crash can leave: a lease that was never written (harmless: its container is gone), a
//! removed lease that reappears (a stale lease, as after a missed DEL: GC releases it), an index
//! entry out of step with the leases (entries are checked against the lease files they name; a
//! lost entry leaves a stale lease for GC), or an empty lease file (the link reached the disk,
//! the data did not): GC releases unreadable lease files written before the current boot.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cni_shared::fsutil::{self, Durability};
use cni_shared::lock::{FileLock, DEFAULT_LOCK_TIMEOUT};
use cni_shared::{validate, CniError, Result};

const LAST_PREFIX: &str = "last_reserved_ip.";
const INDEX_DIR: &str = ".attachments";
/// The reference's modes: leases and `last_reserved_ip.*` are written 0644 and directories
/// made 0755 (less the umask, as there). Our own files (the lock, the index and its stamp)
/// follow them: nothing in them is more private than a lease.
pub const FILE_MODE: u32 = 0o644;
pub const DIR_MODE: u32 = 0o755;

/// Who holds a lease, as read from its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Attachment {
        id: String,
        ifname: String,
    },
    /// Files from old reference versions hold only the container ID.
    LegacyId(String),
    /// Empty or unreadable content (a torn write, or garbage): reported, never matched.
    Garbage(String),
}

impl Owner {
    /// Only a valid container ID and interface name make an owner: anything else (binary
    /// junk, a torn write, a stray NUL) is garbage, which must never become a file name in the
    /// index or match a DEL.
    pub fn parse(content: &str) -> Owner {
        let t = content.trim();
        let lines: Vec<&str> = t.lines().map(str::trim).collect();
        let id_ok = |id: &str| validate::container_id(id).is_ok();
        match lines.as_slice() {
            [id, ifname] if id_ok(id) && validate::ifname(ifname).is_ok() => Owner::Attachment {
                id: id.to_string(),
                ifname: ifname.to_string(),
            },
            [id] if id_ok(id) => Owner::LegacyId(id.to_string()),
            _ => Owner::Garbage(t.chars().take(64).collect()),
        }
    }

    pub fn matches(&self, id: &str, ifname: &str) -> bool {
        match self {
            Owner::Attachment { id: i, ifname: f } => i == id && f == ifname,
            Owner::LegacyId(i) => i == id,
            Owner::Garbage(_) => false,
        }
    }

    pub fn container_id(&self) -> &str {
        match self {
            Owner::Attachment { id, .. } | Owner::LegacyId(id) => id,
            Owner::Garbage(_) => "<unreadable lease file>",
        }
    }
}

/// The store of one network, locked for as long as it lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Option<FileLock>,
    /// Set once the index is known complete in this call; the stamp is then renewed on drop.
    index_ready: std::cell::Cell<bool>,
}

impl Store {
    /// Create the network's directory if needed and take its lock.
    pub fn open_locked(dir: &Path) -> Result<Store> {
        if let Some(parent) = dir.parent() {
            fsutil::ensure_dir(parent, DIR_MODE)
                .map_err(|e| CniError::io(format!("creating {}: {e}", parent.display())))?;
        }
        fsutil::ensure_dir(dir, DIR_MODE)
            .map_err(|e| CniError::io(format!("creating {}: {e}", dir.display())))?;
        let lock =
            FileLock::exclusive_with_mode(&dir.join("lock"), DEFAULT_LOCK_TIMEOUT, FILE_MODE)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: Some(lock),
            index_ready: std::cell::Cell::new(false),
        })
    }

    /// Lock an existing network directory; `None` when it does not exist (nothing leased).
    pub fn open_existing_locked(dir: &Path) -> Result<Option<Store>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        Self::open_locked(dir).map(Some)
    }

    /// A read-only view without the lock and without creating anything (STATUS).
    pub fn open_unlocked(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
            _lock: None,
            index_ready: std::cell::Cell::new(false),
        }
    }

    /// Where a probe file may be made and removed to learn whether the network directory
    /// `dir` takes new files, without touching it: its index directory (same file system,
    /// ours, and not part of the stamp), else the nearest existing ancestor — `dir` itself
    /// when it has no index, which the next call rebuilds anyway.
    pub fn probe_dir(dir: &Path) -> PathBuf {
        let index = dir.join(INDEX_DIR);
        if index.is_dir() {
            return index;
        }
        dir.ancestors()
            .find(|p| p.exists())
            .unwrap_or_else(|| Path::new("/"))
            .to_path_buf()
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    /// Whether any file holds `ip` (cheap: one stat).
    pub fn is_taken(&self, ip: IpAddr) -> bool {
        std::fs::symlink_metadata(self.lease_path(ip)).is_ok()
    }

    /// The holder of `ip`, if any.
    pub fn owner(&self, ip: IpAddr) -> Result<Option<Owner>> {
        let p = self.lease_path(ip);
        match read_lease(&p) {
            Ok(b) => Ok(Some(Owner::parse(&String::from_utf8_lossy(&b)))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("reading lease {}: {e}", p.display()))),
        }
    }

    /// Take `ip` for the attachment; `false` when someone holds it. Atomic, not fsynced (see
    /// the module doc).
    pub fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool> {
        let p = self.lease_path(ip);
        fsutil::create_new_atomic(
            &p,
            format!("{id}\r\n{ifname}").as_bytes(),
            FILE_MODE,
            Durability::BestEffort,
        )
        .map_err(|e| CniError::io(format!("writing lease {}: {e}", p.display())))
    }

    /// Drop the lease on `ip` (gone already is fine).
    pub fn release(&self, ip: IpAddr) -> Result<()> {
        let p = self.lease_path(ip);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("removing lease {}: {e}", p.display()))),
        }
    }

    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        std::fs::read_to_string(self.dir.join(format!("{LAST_PREFIX}{set}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<()> {
        let p = self.dir.join(format!("{LAST_PREFIX}{set}"));
        fsutil::write_in_place(&p, ip.to_string().as_bytes(), FILE_MODE)
            .map_err(|e| CniError::io(format!("writing {}: {e}", p.display())))
    }

    fn index_path(&self, id: &str, ifname: &str) -> PathBuf {
        // Container IDs cannot contain '@' or start with '~', so names never collide.
        let plain = format!("{id}@{ifname}");
        let name = if plain.len() <= 240 {
            plain
        } else {
            format!("~{:016x}@{ifname}", fnv1a(id.as_bytes()))
        };
        self.dir.join(INDEX_DIR).join(name)
    }

    /// The attachment's addresses according to the index (`None`: no usable entry).
    pub fn index_get(&self, id: &str, ifname: &str) -> Option<Vec<IpAddr>> {
        let content = std::fs::read_to_string(self.index_path(id, ifname)).ok()?;
        let mut lines = content.lines();
        if lines.next() != Some(id) || lines.next() != Some(ifname) {
            return None;
        }
        lines.map(|l| l.parse().ok()).collect()
    }

    pub fn index_put(&self, id: &str, ifname: &str, ips: &[IpAddr]) -> Result<()> {
        self.ensure_index_dir()?;
        self.write_index_entry(id, ifname, ips)
    }

    fn ensure_index_dir(&self) -> Result<()> {
        let dir = self.dir.join(INDEX_DIR);
        fsutil::ensure_dir(&dir, DIR_MODE)
            .map_err(|e| CniError::io(format!("creating {}: {e}", dir.display())))
    }

    /// [`Store::index_put`] once the index directory exists.
    fn write_index_entry(&self, id: &str, ifname: &str, ips: &[IpAddr]) -> Result<()> {
        let mut body = format!("{id}\n{ifname}\n");
        for ip in ips {
            body.push_str(&format!("{ip}\n"));
        }
        let p = self.index_path(id, ifname);
        fsutil::write_in_place(&p, body.as_bytes(), FILE_MODE)
            .map_err(|e| CniError::io(format!("writing {}: {e}", p.display())))
    }

    pub fn index_remove(&self, id: &str, ifname: &str) -> Result<()> {
        let p = self.index_path(id, ifname);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("removing {}: {e}", p.display()))),
        }
    }

    fn dir_mtime(&self) -> Option<String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.dir).ok()?;
        Some(format!("{}.{:09}", m.mtime(), m.mtime_nsec()))
    }

    fn stamp_path(&self) -> PathBuf {
        self.dir.join(INDEX_DIR).join(".stamp")
    }

    /// Make the index complete: nothing to do when the stamp shows we were the last writer;
    /// otherwise rebuild it from a full scan (after a crash, or leases written by the reference).
    pub fn ensure_index(&self) -> Result<()> {
        if self.index_ready.get() {
            return Ok(());
        }
        let stamp = std::fs::read_to_string(self.stamp_path()).ok();
        if stamp.is_some() && stamp == self.dir_mtime() {
            self.index_ready.set(true);
            return Ok(());
        }
        let leases = self.scan()?;
        tracing::info!(leases = leases.len(), dir = %self.dir.display(), "rebuilding the attachment index");
        // Whoever changed the directory behind our back may have been killed mid-write.
        for dir in [self.dir.clone(), self.dir.join(INDEX_DIR)] {
            if let Ok(n @ 1..) = fsutil::remove_stale_temps(&dir) {
                tracing::warn!(dir = %dir.display(), "removed {n} temporary files of killed writers");
            }
        }
        for (path, _, _) in self.index_entries() {
            let _ = std::fs::remove_file(path);
        }
        let mut groups: std::collections::BTreeMap<(String, String), Vec<IpAddr>> =
            Default::default();
        for (ip, owner) in leases {
            match owner {
                Owner::Attachment { id, ifname } => {
                    groups.entry((id, ifname)).or_default().push(ip)
                }
                Owner::LegacyId(id) => groups.entry((id, String::new())).or_default().push(ip),
                Owner::Garbage(what) => {
                    tracing::warn!(%ip, "lease file is unreadable ({what:?}); skipped");
                }
            }
        }
        // One directory check for the whole rebuild, not one per entry (60,000 at the most
        // measured).
        self.ensure_index_dir()?;
        for ((id, ifname), ips) in groups {
            self.write_index_entry(&id, &ifname, &ips)?;
        }
        self.index_ready.set(true);
        Ok(())
    }

    /// Every index entry as (file path, container ID, ifname); unreadable entries are skipped.
    /// A plain name (`<cid>@<ifname>`) says whose entry it is without reading it; only hashed
    /// names of long IDs are read.
    pub fn index_entries(&self) -> Vec<(PathBuf, String, String)> {
        let Ok(rd) = std::fs::read_dir(self.dir.join(INDEX_DIR)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                if name.starts_with('.') {
                    return None;
                }
                if let Some((id, ifname)) = name.split_once('@').filter(|_| !name.starts_with('~'))
                {
                    return Some((e.path(), id.to_string(), ifname.to_string()));
                }
                let content = std::fs::read_to_string(e.path()).ok()?;
                let mut lines = content.lines();
                let id = lines.next()?.to_string();
                let ifname = lines.next()?.to_string();
                Some((e.path(), id, ifname))
            })
            .collect()
    }

    /// Every lease in the directory (a full scan: GC, and rebuilding the index). Torn or garbage
    /// files come back as [`Owner::Garbage`].
    pub fn scan(&self) -> Result<Vec<(IpAddr, Owner)>> {
        let rd = std::fs::read_dir(&self.dir)
            .map_err(|e| CniError::io(format!("reading {}: {e}", self.dir.display())))?;
        let mut out = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            match read_lease(&entry.path()) {
                Ok(b) => out.push((ip, Owner::parse(&String::from_utf8_lossy(&b)))),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => out.push((ip, Owner::Garbage(e.to_string()))),
            }
        }
        Ok(out)
    }

    /// Remember the directory's mtime as ours (see the module doc). Called when the lock is
    /// released; a failure only costs the next call a rebuild.
    fn record_stamp(&self) {
        if let Some(m) = self.dir_mtime() {
            let _ = fsutil::write_in_place(&self.stamp_path(), m.as_bytes(), FILE_MODE);
        }
    }

    /// Whether the lease file of `ip` was last written before the machine booted: left by a
    /// crash, so no running container can hold it.
    pub fn predates_boot(&self, ip: IpAddr) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(boot) = boot_time() else {
            return false;
        };
        std::fs::symlink_metadata(self.lease_path(ip)).is_ok_and(|m| m.mtime() < boot)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.index_ready.get() && self._lock.is_some() {
            self.record_stamp();
        }
    }
}

/// A lease file's content: open, one read, close (`std::fs::read` also stats the file and
/// reads once more to see the end: five system calls instead of three, per lease in a GC's
/// full scan). A lease is a container ID and an ifname, so one buffer almost always holds it;
/// a read on a regular file that does not fill it has reached the end.
fn read_lease(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 512];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    if n == 512 {
        f.read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// The boot time (`btime` of /proc/stat), seconds since the epoch.
fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// FNV-1a, 64 bit: a stable short name for over-long container IDs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_parse_like_the_reference_writes_them() {
        assert_eq!(
            Owner::parse("abc\r\neth0"),
            Owner::Attachment {
                id: "abc".into(),
                ifname: "eth0".into()
            }
        );
        assert_eq!(Owner::parse("abc\n"), Owner::LegacyId("abc".into()));
        assert!(matches!(Owner::parse(""), Owner::Garbage(_)));
        assert!(matches!(Owner::parse("a\nb\nc"), Owner::Garbage(_)));
        // Binary junk and stray NULs never become an owner (its ID names an index file).
        let junk = String::from_utf8_lossy(&[0xff, 0xfe, 0, 1, 2]).into_owned();
        assert!(matches!(Owner::parse(&junk), Owner::Garbage(_)));
        assert!(matches!(Owner::parse("ctr\0\r\neth0"), Owner::Garbage(_)));
        assert!(matches!(Owner::parse("ctr\r\neth0 x/y"), Owner::Garbage(_)));
        assert!(matches!(Owner::parse("../x\r\neth0"), Owner::Garbage(_)));
        assert!(Owner::LegacyId("abc".into()).matches("abc", "net1"));
        assert!(!Owner::parse("abc\r\neth0").matches("abc", "eth1"));
    }
}
