//! Validation of the names that become file names, link names, chain names and rule comments.

use crate::error::{CniError, Result};

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: the spec's rule for container IDs and libcni's for network
/// names. Such a name is safe in a path component, an nftables comment and a chain name.
pub fn is_safe_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// CNI_CONTAINERID (code 4 when invalid).
pub fn container_id(id: &str) -> Result<()> {
    if is_safe_name(id) {
        Ok(())
    } else {
        Err(CniError::invalid_env(format!(
            "CNI_CONTAINERID: {id:?} must start with a letter or digit and contain only letters, \
             digits, '_', '.' and '-'"
        )))
    }
}

/// CNI_IFNAME (code 4 when invalid): 1 to 15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub fn ifname(name: &str) -> Result<()> {
    let bad = |why: &str| Err(CniError::invalid_env(format!("CNI_IFNAME: {name:?} {why}")));
    if name.is_empty() {
        return bad("is empty");
    }
    if name.len() > 15 {
        return bad("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("is not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return bad("must not contain '/', ':', whitespace or control characters");
    }
    Ok(())
}

/// The network `name` (code 7 when invalid): it becomes a directory and a rule comment.
pub fn network_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(CniError::invalid_config("name: missing network name"));
    }
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(CniError::invalid_config(format!(
            "name: {name:?} must start with a letter or digit and contain only letters, digits, \
             '_', '.' and '-'"
        )))
    }
}

/// A link name chosen in a config (`bridge`, `master`, ...), code 7 naming `key` when invalid.
pub fn link_name(key: &str, name: &str) -> Result<()> {
    ifname(name).map_err(|e| CniError::invalid_config(e.msg.replacen("CNI_IFNAME", key, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        for ok in ["a", "ABC123", "3f6940ab5ab4", "pod_1.x-y", "Z"] {
            container_id(ok).unwrap();
        }
        for bad in ["", "-a", ".a", "_a", "a/b", "a b", "a:b", "../x", "é"] {
            assert_eq!(container_id(bad).unwrap_err().code, 4, "{bad}");
        }
    }

    #[test]
    fn ifnames() {
        for ok in ["eth0", "net1", "a", "123456789012345", "veth@x"] {
            ifname(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "1234567890123456",
        ] {
            assert_eq!(ifname(bad).unwrap_err().code, 4, "{bad:?}");
        }
    }

    #[test]
    fn network_names() {
        network_name("my-net_1.0").unwrap();
        for bad in ["", "a/b", "..", "../etc", ".hidden", "a b"] {
            assert_eq!(network_name(bad).unwrap_err().code, 7, "{bad}");
        }
    }

    #[test]
    fn link_names_name_the_key() {
        let e = link_name("bridge", "a-very-long-bridge-name").unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("bridge: "), "{}", e.msg);
    }
}
