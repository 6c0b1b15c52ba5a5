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

use std::io::{ErrorKind, Write};
use std::path::PathBuf;

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
    let p = path(key)?;
    let mut f = match std::fs::OpenOptions::new().write(true).open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CniError::io(format!("opening {}: {e}", p.display()))),
    };
    f.write_all(value.as_bytes())
        .map_err(|e| CniError::io(format!("writing {value:?} to {}: {e}", p.display())))?;
    Ok(true)
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
