//! Atomic file writes: a temp file in the same directory, then rename (replace) or link (create
//! only if absent). A reader never sees a torn file. With [`Durability::Durable`] the file and its
//! directory are fsynced too, for state a crash must not lose (a lease); [`Durability::BestEffort`]
//! skips the fsyncs for state that can be rebuilt (an index, a round-robin cursor).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether a write must survive a crash of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory.
    Durable,
    /// Atomic, but not fsynced.
    BestEffort,
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?
        .to_string_lossy();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".{name}.tmp-{}-{n}", std::process::id())))
}

fn write_temp(path: &Path, data: &[u8], mode: u32, d: Durability) -> io::Result<PathBuf> {
    let tmp = temp_path(path)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    let written = f.write_all(data).and_then(|()| match d {
        Durability::Durable => f.sync_all(),
        Durability::BestEffort => Ok(()),
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// fsync a directory so a rename or link in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replace `path` with `data` atomically (mode applies to a new file).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32, d: Durability) -> io::Result<()> {
    let tmp = write_temp(path, data, mode, d)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(path, d)
}

fn sync_parent(path: &Path, d: Durability) -> io::Result<()> {
    match (d, path.parent()) {
        (Durability::Durable, Some(dir)) => sync_dir(dir),
        _ => Ok(()),
    }
}

/// Write `data` to `path` in place (created with `mode`, or truncated): a reader can see a torn
/// file, so only for state whose readers are excluded by a lock and that can be rebuilt when a
/// crash or a kill tears it. Cheaper than [`write_atomic`] in a large directory: no temporary
/// name is added to it and removed again.
pub fn write_in_place(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?
        .write_all(data)
}

/// Create `path` holding `data` only if it does not exist; `Ok(false)` when it already does.
/// The file appears complete or not at all.
pub fn create_new_atomic(path: &Path, data: &[u8], mode: u32, d: Durability) -> io::Result<bool> {
    let tmp = write_temp(path, data, mode, d)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_parent(path, d)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// The writer's pid when `name` is one of our temporary files (`.<name>.tmp-<pid>-<n>`).
fn temp_writer(name: &str) -> Option<i32> {
    if !name.starts_with('.') {
        return None;
    }
    let (_, rest) = name.rsplit_once(".tmp-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Remove the temporary files in `dir` whose writer is gone: a process killed between writing
/// its temporary file and the rename or link leaves it behind, and nothing else would ever
/// remove it. Files of live writers (and other names) are left alone. Returns how many went.
pub fn remove_stale_temps(dir: &Path) -> io::Result<usize> {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(temp_writer) else {
            continue;
        };
        // Signal 0 only asks whether the process exists (EPERM: it does, as someone else).
        if pid <= 0 || kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH) {
            continue;
        }
        if std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Create a directory and its parents; the directories created get `mode`.
pub fn ensure_dir(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_writes() {
        let dir = std::env::temp_dir().join(format!("cni-fsutil-{}", std::process::id()));
        ensure_dir(&dir, 0o700).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let f = dir.join("a");
        assert!(create_new_atomic(&f, b"one", 0o600, Durability::Durable).unwrap());
        assert!(!create_new_atomic(&f, b"two", 0o600, Durability::BestEffort).unwrap());
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        write_atomic(&f, b"three", 0o600, Durability::BestEffort).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_temp_files_of_dead_writers_go() {
        assert_eq!(temp_writer(".10.0.0.5.tmp-123-7"), Some(123));
        assert_eq!(temp_writer("10.0.0.5.tmp-123-7"), None);
        assert_eq!(temp_writer(".x.tmp-abc-1"), None);
        assert_eq!(temp_writer(".stamp"), None);
        let dir = std::env::temp_dir().join(format!("cni-fsutil-stale-{}", std::process::id()));
        ensure_dir(&dir, 0o700).unwrap();
        // A pid that cannot exist (above the kernel's pid_max of 2^22), ours, and a non-temp.
        let names = [
            ".a.tmp-99999999-0",
            &format!(".b.tmp-{}-0", std::process::id()),
            "c",
        ];
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(&dir).unwrap(), 1);
        assert!(!dir.join(names[0]).exists());
        assert!(dir.join(names[1]).exists() && dir.join(names[2]).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
