//! The attachment tag: the comment every rule or set element of one attachment carries, so DEL,
//! CHECK and GC find exactly that attachment's entries.
//!
//! Format: `cni:<network>/<containerID>/<ifname>`. Network names and container IDs are validated
//! (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), so they need no quoting; the interface name may hold any byte
//! but `/`, `:` and whitespace, so every byte outside `[A-Za-z0-9_.@+=-]` is percent-encoded
//! (`"` → `%22`). A tag therefore never contains a quote, a backslash or a space, and is safe
//! inside `"..."` in an nft script and in an iptables-restore line.
//!
//! nftables limits comments to 128 bytes (iptables to 255). A network name longer than 28 bytes
//! keeps its first 19 bytes followed by `~` and 8 hex digits of a hash of the whole name
//! (`cni:averyveryverylongnet~1a2b3c4d/...`), always, so every tag of a network starts alike;
//! when the tag is still longer than 128 bytes, the container ID is shortened the same way
//! (first 39 bytes, `~`, hash).
//! `~` is not a valid name byte, so a shortened name never equals a real one, and the tag stays a
//! pure function of the attachment: DEL and GC compute it and compare for equality.

use std::fmt;

/// Longest comment nftables accepts.
pub const MAX_COMMENT: usize = 128;
const PREFIX: &str = "cni:";
const NET_KEEP: usize = 19;
const CID_KEEP: usize = 39;

/// The tag of one attachment (network, container ID, interface).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    /// GC: the tags of every attachment the request lists as still valid.
    pub fn valid_set(req: &crate::skel::Request) -> crate::Result<std::collections::HashSet<Tag>> {
        let network = &req.conf.name;
        Ok(req
            .gc_valid_attachments()?
            .iter()
            .map(|a| Tag::new(network, &a.container_id, &a.ifname))
            .collect())
    }

    pub fn new(network: &str, container_id: &str, ifname: &str) -> Tag {
        let ifname = encode_ifname(ifname);
        let net = network_prefix(network);
        let full = format!("{net}{container_id}/{ifname}");
        if full.len() <= MAX_COMMENT {
            return Tag(full);
        }
        let cid = shorten(container_id, CID_KEEP);
        Tag(format!("{net}{cid}/{ifname}"))
    }

    /// The tag text (the comment).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `cni:<network>` as this tag starts (the network possibly shortened).
    pub fn network_label(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// Whether this tag belongs to `network` (its prefix is [`network_prefix`]).
    pub fn in_network(tag: &str, network: &str) -> bool {
        tag.starts_with(&network_prefix(network))
    }

    /// A 64-bit hash of the tag as 16 hex digits, for names derived from it (iptables chains).
    pub fn hash_hex(&self) -> String {
        format!("{:016x}", fnv1a(self.0.as_bytes()))
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `cni:<network>/` as it starts every tag of the network (the network possibly shortened: a
/// network's tags are either all full or, when the name is long, use the same shortened form).
pub fn network_prefix(network: &str) -> String {
    // Budget: "cni:" (4) + network (<= 28) + "/" + shortened container ID (<= 48) + "/" + a
    // fully encoded 15-byte ifname (<= 45) = 127 bytes.
    if network.len() <= NET_KEEP + 9 {
        format!("{PREFIX}{network}/")
    } else {
        format!("{PREFIX}{}/", shorten(network, NET_KEEP))
    }
}

/// The network's short label for shared objects (a per-network nft chain's rule comment).
pub fn network_label(network: &str) -> String {
    let p = network_prefix(network);
    p.trim_end_matches('/').to_string()
}

fn shorten(name: &str, keep: usize) -> String {
    if name.len() <= keep + 9 {
        return name.to_string();
    }
    // Names are ASCII (validated), so any byte index is a char boundary; be safe anyway.
    let mut cut = keep;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:08x}", &name[..cut], fnv1a(name.as_bytes()) as u32)
}

fn encode_ifname(ifname: &str) -> String {
    let mut out = String::with_capacity(ifname.len());
    for b in ifname.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'+' | b'=' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tags_are_readable() {
        let t = Tag::new("mynet", "3f6940ab5ab4", "eth0");
        assert_eq!(t.as_str(), "cni:mynet/3f6940ab5ab4/eth0");
        assert!(Tag::in_network(t.as_str(), "mynet"));
        assert!(!Tag::in_network(t.as_str(), "mynet2"));
        assert!(!Tag::in_network(t.as_str(), "my"));
        assert_eq!(network_label("mynet"), "cni:mynet");
        assert_eq!(t.network_label(), "cni:mynet");
    }

    #[test]
    fn ifnames_are_escaped() {
        let t = Tag::new("n", "c", "e\"t h%0\\");
        assert_eq!(t.as_str(), "cni:n/c/e%22t%20h%250%5C");
        let t = Tag::new("n", "c", "é");
        assert_eq!(t.as_str(), "cni:n/c/%C3%A9");
        for bad in ['"', ' ', '\\', '\''] {
            assert!(!t.as_str().contains(bad));
        }
    }

    #[test]
    fn long_ids_fit_and_stay_distinct() {
        let net = "n".repeat(200);
        let cid_a = format!("{}a", "c".repeat(300));
        let cid_b = format!("{}b", "c".repeat(300));
        let worst_if = "\"\"\"\"\"\"\"\"\"\"\"\"\"\"\"";
        let a = Tag::new(&net, &cid_a, worst_if);
        let b = Tag::new(&net, &cid_b, worst_if);
        assert!(
            a.as_str().len() <= MAX_COMMENT,
            "{} bytes",
            a.as_str().len()
        );
        assert_ne!(a, b);
        assert!(Tag::in_network(a.as_str(), &net));
        assert!(!Tag::in_network(a.as_str(), &"n".repeat(199)));
        assert_eq!(a, Tag::new(&net, &cid_a, worst_if), "a pure function");
        // A 64-hex container ID with a normal name keeps the readable form.
        let t = Tag::new("kubernetes-pod-network", &"f".repeat(64), "eth0");
        assert!(!t.as_str().contains('~'), "{t}");
        // Every network name length keeps the prefix rule consistent.
        for n in 1..80 {
            let net = "x".repeat(n);
            for cid_len in [1, 64, 200] {
                let t = Tag::new(&net, &"c".repeat(cid_len), worst_if);
                assert!(t.as_str().len() <= MAX_COMMENT, "{n}/{cid_len}: {t}");
                assert!(Tag::in_network(t.as_str(), &net), "{n}/{cid_len}: {t}");
            }
        }
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(Tag::new("n", "c", "eth0").hash_hex().len(), 16);
    }
}
