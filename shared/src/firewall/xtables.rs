//! The chain names of the legacy iptables' (x_tables') `nat` table, read from the kernel with
//! `getsockopt` as `iptables-legacy -S` reads its tables, without running it (2–3 ms a
//! process): nf_tables answers such a question with one lookup ([`super::ipt::nft_nat_lookup`]),
//! the legacy tables only with the whole table. Asked only when the table already exists in the
//! namespace (`/proc/net/ip*_tables_names`): asking for a missing table would make the kernel
//! create it, with its hooks.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `IPT_SO_GET_INFO` / `IP6T_SO_GET_INFO` (`IPT_BASE_CTL`), and `..._GET_ENTRIES` after it.
const SO_GET_INFO: libc::c_int = 64;
const SO_GET_ENTRIES: libc::c_int = 65;
const TABLE_NAME_LEN: usize = 32;
/// `struct ipt_getinfo`: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size.
const GETINFO_LEN: usize = TABLE_NAME_LEN + 4 * 13;
const GETINFO_SIZE_AT: usize = GETINFO_LEN - 4;
/// `struct xt_entry_target`'s header (target_size, name[29], revision) before its data.
const TARGET_HEADER: usize = 32;
const TARGET_NAME_AT: usize = 2;
const TARGET_NAME_LEN: usize = 29;

/// Where `target_offset` and `next_offset` lie in an entry: `struct ipt_entry` after its
/// 84-byte `struct ipt_ip` and `nfcache`; `struct ip6t_entry` after the 136-byte (padded)
/// `struct ip6t_ip6`.
fn offsets_at(v6: bool) -> usize {
    if v6 {
        140
    } else {
        88
    }
}

/// The user-defined chains of the `nat` table of the family, `None` when they cannot be read
/// (no such table, no permission, a table that kept changing while being read).
pub fn nat_chains(v6: bool) -> Option<HashSet<String>> {
    let (domain, level) = if v6 {
        (libc::AF_INET6, libc::SOL_IPV6)
    } else {
        (libc::AF_INET, libc::SOL_IP)
    };
    // SAFETY: socket() with constant arguments; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_RAW,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // The table changes between the two calls: the kernel says EAGAIN, and we read again.
    for _ in 0..5 {
        let mut info = [0u8; GETINFO_LEN];
        info[..3].copy_from_slice(b"nat");
        getsockopt(&sock, level, SO_GET_INFO, &mut info)?;
        let size = u32::from_ne_bytes(info[GETINFO_SIZE_AT..GETINFO_LEN].try_into().ok()?);
        let start = entries_start();
        let mut buf = vec![0u8; start + usize::try_from(size).ok()?];
        buf[..3].copy_from_slice(b"nat");
        buf[TABLE_NAME_LEN..TABLE_NAME_LEN + 4].copy_from_slice(&size.to_ne_bytes());
        match getsockopt(&sock, level, SO_GET_ENTRIES, &mut buf) {
            Some(()) => return Some(chains_of(&buf[start..], v6)),
            None if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {}
            None => return None,
        }
    }
    None
}

/// Where `struct ipt_get_entries`' entries start: after the name and the size, aligned as
/// the entries' 64-bit counters are.
fn entries_start() -> usize {
    let a = std::mem::align_of::<u64>();
    (TABLE_NAME_LEN + 4).div_ceil(a) * a
}

fn getsockopt(sock: &OwnedFd, level: libc::c_int, opt: libc::c_int, buf: &mut [u8]) -> Option<()> {
    let mut len = libc::socklen_t::try_from(buf.len()).ok()?;
    // SAFETY: `buf` is writable for `len` bytes and outlives the call; `len` is updated by the
    // kernel to what it wrote.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0).then_some(())
}

/// The chain names in a table's entries: each user-defined chain starts with an entry whose
/// target is `ERROR` and whose data is the chain's name (the table ends with one named
/// `ERROR`).
fn chains_of(entries: &[u8], v6: bool) -> HashSet<String> {
    let at = offsets_at(v6);
    let mut chains = HashSet::new();
    let mut pos = 0;
    while let Some(entry) = entries.get(pos..) {
        let u16_at = |i: usize| {
            entry
                .get(i..i + 2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        };
        let (Some(target), Some(next)) = (u16_at(at), u16_at(at + 2)) else {
            break;
        };
        let (target, next) = (usize::from(target), usize::from(next));
        if next == 0 {
            break;
        }
        let name = entry
            .get(target + TARGET_NAME_AT..target + TARGET_NAME_AT + TARGET_NAME_LEN)
            .map(c_str);
        if name.as_deref() == Some("ERROR") {
            if let Some(chain) = entry.get(target + TARGET_HEADER..next).map(c_str) {
                if chain != "ERROR" && !chain.is_empty() {
                    chains.insert(chain);
                }
            }
        }
        pos += next;
    }
    chains
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of the family's layout with a target named `target` carrying `data`.
    fn entry(v6: bool, target: &str, data: &[u8]) -> Vec<u8> {
        let head = if v6 { 168 } else { 112 };
        let t_len = (TARGET_HEADER + data.len()).div_ceil(8) * 8;
        let mut e = vec![0u8; head + t_len];
        let at = offsets_at(v6);
        e[at..at + 2].copy_from_slice(&(head as u16).to_ne_bytes());
        e[at + 2..at + 4].copy_from_slice(&((head + t_len) as u16).to_ne_bytes());
        e[head..head + 2].copy_from_slice(&(t_len as u16).to_ne_bytes());
        e[head + 2..head + 2 + target.len()].copy_from_slice(target.as_bytes());
        e[head + TARGET_HEADER..head + TARGET_HEADER + data.len()].copy_from_slice(data);
        e
    }

    fn name(n: &str) -> Vec<u8> {
        let mut v = vec![0u8; 32];
        v[..n.len()].copy_from_slice(n.as_bytes());
        v
    }

    #[test]
    fn user_chains_are_the_error_targets_but_the_last() {
        for v6 in [false, true] {
            let mut t = entry(v6, "", &[0; 8]); // a built-in chain's policy (standard target)
            t.extend(entry(v6, "ERROR", &name("CNI-HP-0123456789abcdef")));
            t.extend(entry(v6, "MASQUERADE", &[0; 8]));
            t.extend(entry(v6, "ERROR", &name("CNI-MASQ")));
            t.extend(entry(v6, "ERROR", &name("ERROR")));
            let got = chains_of(&t, v6);
            let want: HashSet<String> = ["CNI-HP-0123456789abcdef", "CNI-MASQ"]
                .map(String::from)
                .into();
            assert_eq!(got, want, "v6 {v6}");
        }
    }

    #[test]
    fn truncated_or_looping_entries_end_the_walk() {
        let mut t = entry(false, "ERROR", &name("A"));
        t.truncate(50);
        assert!(chains_of(&t, false).is_empty());
        let mut z = entry(false, "ERROR", &name("B"));
        z[90..92].copy_from_slice(&0u16.to_ne_bytes()); // next_offset 0
        assert!(chains_of(&z, false).is_empty());
        assert!(chains_of(&[], true).is_empty());
    }
}
