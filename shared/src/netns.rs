//! Network namespaces: open and validate a path, and run work inside one safely.
//!
//! `setns(2)` moves only the calling thread. So work for another namespace runs on a fresh thread
//! that enters it, does the work and ends: no thread ever returns from a namespace, and nothing
//! that runs later can inherit one by accident (DESIGN.md §4). Netlink sockets are opened that way
//! too (see `netlink::Netlink::open_in`) and then used from any thread.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use crate::error::{CniError, Result};

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

/// Why a namespace path could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Nothing at the path.
    Missing,
    /// Something at the path, but not a network namespace (e.g. an unmounted bind-mount target).
    NotANetns,
    /// Any other failure (permissions, ...).
    Other(String),
}

impl NetNs {
    /// Open `path` as a network namespace. Missing is code 3 (the container is gone); a path that
    /// is not a network namespace is code 4 (CNI_NETNS is wrong).
    pub fn open(path: &Path) -> Result<NetNs> {
        Self::try_open(path).map_err(|e| match e {
            OpenError::Missing => CniError::unknown_container(format!(
                "CNI_NETNS: network namespace {} does not exist",
                path.display()
            )),
            OpenError::NotANetns => CniError::invalid_env(format!(
                "CNI_NETNS: {} is not a network namespace",
                path.display()
            )),
            OpenError::Other(msg) => {
                CniError::invalid_env(format!("CNI_NETNS: opening {}: {msg}", path.display()))
            }
        })
    }

    /// For DEL: `None` when the namespace is gone (missing, or no longer a namespace).
    pub fn open_if_exists(path: &Path) -> Result<Option<NetNs>> {
        match Self::try_open(path) {
            Ok(ns) => Ok(Some(ns)),
            Err(OpenError::Missing | OpenError::NotANetns) => Ok(None),
            Err(OpenError::Other(msg)) => Err(CniError::invalid_env(format!(
                "CNI_NETNS: opening {}: {msg}",
                path.display()
            ))),
        }
    }

    /// Open and classify the failure.
    pub fn try_open(path: &Path) -> std::result::Result<NetNs, OpenError> {
        let file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => OpenError::Missing,
            _ => OpenError::Other(e.to_string()),
        })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd we own; on files that
        // are not namespaces it fails with ENOTTY.
        let ty = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty != libc::CLONE_NEWNET {
            return Err(OpenError::NotANetns);
        }
        Ok(NetNs {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace of the calling thread.
    pub fn current() -> Result<NetNs> {
        Self::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Identity of the namespace (device, inode): equal for two handles on the same namespace.
    pub fn id(&self) -> Result<(u64, u64)> {
        let m = self
            .file
            .metadata()
            .map_err(|e| CniError::io(format!("stat {}: {e}", self.path.display())))?;
        Ok((m.dev(), m.ino()))
    }

    /// Run `f` on a new thread inside this namespace and return its value. The thread ends with
    /// `f`, so the caller's thread never changes namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.file.as_fd();
        std::thread::scope(|s| {
            let worker = s.spawn(move || -> Result<T> {
                setns(fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    CniError::internal(format!(
                        "entering network namespace {}: {e}",
                        self.path.display()
                    ))
                })?;
                Ok(f())
            });
            worker.join().unwrap_or_else(|_| {
                Err(CniError::internal(format!(
                    "work inside network namespace {} panicked",
                    self.path.display()
                )))
            })
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_bad_paths() {
        assert_eq!(
            NetNs::try_open(Path::new("/nonexistent/ns")).unwrap_err(),
            OpenError::Missing
        );
        assert_eq!(
            NetNs::try_open(Path::new("/proc/self/status")).unwrap_err(),
            OpenError::NotANetns
        );
        assert_eq!(NetNs::open(Path::new("/nonexistent")).unwrap_err().code, 3);
        assert_eq!(
            NetNs::open(Path::new("/proc/self/status"))
                .unwrap_err()
                .code,
            4
        );
        assert!(NetNs::open_if_exists(Path::new("/proc/self/status"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn run_in_own_namespace_returns_the_value() {
        let me = NetNs::current().unwrap();
        let id = me.id().unwrap();
        let seen = me.run(|| NetNs::current().unwrap().id().unwrap()).unwrap();
        assert_eq!(seen, id);
    }
}
