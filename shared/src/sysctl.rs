//! Network sysctls (`/proc/sys/net/...`) of the **calling thread's** network namespace.
//!
//! The kernel resolves `/proc/sys/net` against the namespace of the thread that opens the file,
//! so for a container run the call inside [`crate::netns::NetNs::run`]:
//!
//! ```no_run
//! # fn f(ns: &cni_shared::netns::NetNs) -> cni_shared::Result<()> {
//! use cni_shared::sysctl;
//! let written = ns.run(|| sysctl::set(&["net", "ipv6", "conf", "eth0", "accept_dad"], "0"))??;
//! # Ok(()) }
//! ```
//!
//! Keys are given as path components, so interface names containing dots (`eth0.100`) need no
//! escaping. A component that is empty, `.` or `..`, or contains `/` or NUL is refused with code 7
//! naming the key; the first component must be `net`.
//!
//! A key that does not exist (IPv6 disabled, interface gone) is not an error: [`get`] returns
//! `Ok(None)` and [`set`] returns `Ok(false)`, as everywhere in this crate's kernel helpers.
//!
//! # In a container: [`set_in_container`]
//!
//! A lookup under `/proc/sys/net` from a thread in another namespace leaves that namespace's
//! directory entries in the host `/proc`'s cache, all under the one name `net`, and every
//! later lookup of a `/proc/sys/net` key there — the host's too, by anyone — walks them
//! (measured on the development VM next to 1000 namespaces looked up that way: 0.2–0.9 ms per
//! host lookup, 1.3 ms for the first one in a new namespace; ~20 µs on a host without them).
//! The entries stay as long as the namespace. So a container's keys are written through a
//! procfs instance of the process's own — a detached mount (`fsopen`/`fsmount`, never
//! attached to a directory, so nobody else sees it; released at exit) whose entries go with
//! it: ~0.1 ms per process whatever the host holds. Where the kernel or a seccomp filter
//! refuses that (before Linux 5.2), `/proc` is used.
//!
//! # On the host
//!
//! Others do look containers' keys up through the host `/proc` (the reference plugins set
//! `arp_notify` and `accept_dad` so, and so does the tuning plugin), and then every host lookup
//! pays the walk. So a host key read on every call goes through netlink where the kernel has a
//! message for it: forwarding ([`crate::netlink::Netlink::forwarding`]), a link's IPv4 keys
//! ([`crate::netlink::Link`], [`crate::netlink::Netlink::set_route_localnet`]). What netlink
//! cannot do stays here: a link's IPv6 keys (`disable_ipv6` of a new veth's host end) and the
//! rare write of `ip_forward`.

use std::io::{ErrorKind, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{CniError, Result};

const ROOT: &str = "/proc/sys";

/// The file of a sysctl key, after validating every component (code 7 on a bad key).
pub fn path(key: &[&str]) -> Result<PathBuf> {
    let dotted = key.join(".");
    let bad = |why: String| {
        Err(CniError::invalid_config(format!(
            "sysctl key {dotted:?}: {why}"
        )))
    };
    match key.first() {
        None => return bad("is empty".into()),
        Some(&"net") => {}
        Some(other) => return bad(format!("must start with \"net\", not {other:?}")),
    }
    if key.len() < 2 {
        return bad("names a directory, not a setting".into());
    }
    let mut p = PathBuf::from(ROOT);
    for c in key {
        if c.is_empty() || *c == "." || *c == ".." || c.contains('/') || c.contains('\0') {
            return bad(format!("component {c:?} is not a valid path component"));
        }
        p.push(c);
    }
    Ok(p)
}

/// Read a sysctl (trailing newline removed). `Ok(None)` when the key does not exist.
pub fn get(key: &[&str]) -> Result<Option<String>> {
    let p = path(key)?;
    match std::fs::read_to_string(&p) {
        Ok(s) => Ok(Some(s.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CniError::io(format!("reading {}: {e}", p.display()))),
    }
}

/// Write a sysctl. `Ok(true)` when written, `Ok(false)` when the key does not exist.
pub fn set(key: &[&str], value: &str) -> Result<bool> {
    write(&path(key)?, value, None)
}

/// [`set`] for a thread in a container's namespace: through this process's own procfs
/// instance (see the module doc), so the host's `/proc` keeps no entries of the container.
pub fn set_in_container(key: &[&str], value: &str) -> Result<bool> {
    write(&path(key)?, value, own_proc())
}

/// Whether [`set_in_container`] writes through a procfs instance of its own here (`false`: the
/// kernel or a seccomp filter refused one, and `/proc` is used).
pub fn has_own_proc() -> bool {
    own_proc().is_some()
}

/// Write `value` to `p` (under `/proc`), relative to `proc` when given.
fn write(p: &Path, value: &str, proc: Option<BorrowedFd<'static>>) -> Result<bool> {
    let opened = match proc {
        Some(root) => open_at(root, p),
        None => std::fs::OpenOptions::new().write(true).open(p),
    };
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CniError::io(format!("opening {}: {e}", p.display()))),
    };
    f.write_all(value.as_bytes())
        .map_err(|e| CniError::io(format!("writing {value:?} to {}: {e}", p.display())))?;
    Ok(true)
}

/// Open `/proc/…` path `p` for writing in the procfs instance whose root is `root`.
fn open_at(root: BorrowedFd, p: &Path) -> std::io::Result<std::fs::File> {
    let rel = p
        .strip_prefix("/proc")
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    let rel = std::ffi::CString::new(rel.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: `root` is an open directory fd, `rel` a NUL-terminated relative path; the result
    // is a new fd or -1.
    let fd = unsafe {
        libc::openat(
            root.as_raw_fd(),
            rel.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new file descriptor that nothing else owns.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The root of this process's own procfs instance, made on first use; `None` (said in the
/// debug log) where it cannot be had.
fn own_proc() -> Option<BorrowedFd<'static>> {
    static PROC: OnceLock<Option<OwnedFd>> = OnceLock::new();
    PROC.get_or_init(|| {
        mount_proc()
            .map_err(|e| tracing::debug!("no procfs instance of our own ({e}); using /proc"))
            .ok()
    })
    .as_ref()
    .map(|fd| fd.as_fd())
}

/// A detached procfs mount: `fsopen("proc")`, `fsconfig(CREATE)`, `fsmount`.
fn mount_proc() -> std::io::Result<OwnedFd> {
    let check = |rc: libc::c_long| -> std::io::Result<OwnedFd> {
        let fd = libc::c_int::try_from(rc).unwrap_or(-1);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new file descriptor the kernel just returned; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    // SAFETY: fsopen with a NUL-terminated file system name and a flag; returns a new fd or -1.
    let fs =
        check(unsafe { libc::syscall(libc::SYS_fsopen, c"proc".as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux (null, null, 0).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fsmount of the configured context; flags and attributes are plain bits.
    check(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, 0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_paths_from_components() {
        assert_eq!(
            path(&["net", "ipv4", "ip_forward"]).unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            path(&["net", "ipv6", "conf", "eth0.100", "accept_dad"]).unwrap(),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_dad")
        );
    }

    #[test]
    fn refuses_bad_components() {
        for bad in [
            &[][..],
            &["net"][..],
            &["kernel", "hostname"][..],
            &["net", "ipv4", "..", "..", "kernel"][..],
            &["net", "ipv6", "conf", "a/b", "x"][..],
            &["net", "", "x"][..],
            &["net", ".", "x"][..],
            &["net", "a\0b"][..],
        ] {
            let e = path(bad).unwrap_err();
            assert_eq!(e.code, 7, "{bad:?}");
            assert!(e.msg.starts_with("sysctl key "), "{}", e.msg);
        }
    }

    #[test]
    fn missing_keys_are_distinguishable() {
        let key = ["net", "ipv4", "conf", "no-such-if-xyz", "forwarding"];
        assert_eq!(get(&key).unwrap(), None);
        assert!(!set(&key, "1").unwrap());
    }
}
