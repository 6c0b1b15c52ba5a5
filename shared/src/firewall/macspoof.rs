//! `macspoofchk`: frames entering the bridge from a container's port must carry the container's
//! MAC, else they are dropped. nftables only, in `table bridge cni_macspoof` (layout in
//! [`super`]): one element per attachment in each of two sets, tagged like every entry.
//!
//! Element changes and lookups go straight to the kernel ([`nftelem`], [`nftset`]), as the
//! masquerade's do: an ADD is one nfnetlink batch, a DEL or CHECK two single-key lookups — no
//! `nft` process, and no cost that grows with the sets (`nft get element` fetches the whole
//! set first). The table is made through [`Nft`] only when the kernel reports it missing.

use std::collections::HashSet;

use super::nftelem::{self, Data, Op};
use super::nftexec::Nft;
use super::nftset;
use super::tag::Tag;
use crate::error::{CniError, Result};
use crate::mac::Mac;
use crate::nfnl::{Nfnl, NlErr};

pub const TABLE: &str = "bridge cni_macspoof";
const TABLE_NAME: &str = "cni_macspoof";
/// `NFPROTO_BRIDGE`.
const BRIDGE: u8 = 7;
/// nft's `ifname` type: `IFNAMSIZ` bytes, the name padded with NULs.
const IFNAMSIZ: usize = 16;

/// The table, sets and chain. Idempotent.
pub fn base_script() -> String {
    format!(
        "add table {TABLE}\n\
         add set {TABLE} ports {{ type ifname; }}\n\
         add set {TABLE} allowed {{ type ifname . ether_addr; }}\n\
         add chain {TABLE} prerouting {{ type filter hook prerouting priority dstnat; policy accept; }}\n\
         flush chain {TABLE} prerouting\n\
         add rule {TABLE} prerouting iifname . ether saddr @allowed accept\n\
         add rule {TABLE} prerouting iifname @ports drop\n"
    )
}

/// One element of ours: its set and key (register bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    set: &'static str,
    key: Vec<u8>,
}

/// The `ifname` key of a port.
fn port_key(port: &str) -> Result<Vec<u8>> {
    if port.is_empty() || port.len() >= IFNAMSIZ || port.contains('\0') {
        return Err(CniError::internal(format!(
            "macspoofchk: {port:?} is not an interface name"
        )));
    }
    let mut key = port.as_bytes().to_vec();
    key.resize(IFNAMSIZ, 0);
    Ok(key)
}

/// The `ifname . ether_addr` key (the address padded to a 4-byte register boundary).
fn allowed_key(port_key: &[u8], mac: Mac) -> Vec<u8> {
    let m = mac.octets();
    nftset::key::cat(&[port_key, &m, &[0, 0]])
}

/// A key in nft syntax, for the log: `"veth0"` or `"veth0" . 0a:58:00:00:00:01`.
fn key_text(key: &[u8]) -> String {
    let name = &key[..key.len().min(IFNAMSIZ)];
    let name = String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default());
    match key.get(IFNAMSIZ..IFNAMSIZ + 6).and_then(Mac::from_bytes) {
        Some(mac) => format!("\"{name}\" . {mac}"),
        None => format!("\"{name}\""),
    }
}

fn add_ops(tag: &Tag, port: &str, mac: Mac) -> Result<Vec<Op>> {
    let p = port_key(port)?;
    let create = |set: &str, key: Vec<u8>| {
        let text = key_text(&key);
        Op::create(TABLE, set, key, &text, Data::None, "", tag.as_str())
    };
    Ok(vec![
        create("ports", p.clone()),
        create("allowed", allowed_key(&p, mac)),
    ])
}

fn delete_ops(entries: &[Entry]) -> Vec<Op> {
    entries
        .iter()
        .map(|e| Op::delete(TABLE, e.set, e.key.clone(), &key_text(&e.key)))
        .collect()
}

fn socket() -> Result<Nfnl> {
    Nfnl::open_backend("macspoofchk")
}

fn commit(nl: &mut Nfnl, ops: &[Op]) -> std::result::Result<(), NlErr> {
    nftelem::commit(nl, BRIDGE, TABLE_NAME, ops)
}

/// The attachment's elements found through the port name (and MAC): single-key lookups.
fn owned_by_port(nl: &mut Nfnl, tag: &Tag, port: &str, mac: Option<Mac>) -> Result<Vec<Entry>> {
    let p = port_key(port)?;
    let mut keys = vec![Entry {
        set: "ports",
        key: p.clone(),
    }];
    if let Some(mac) = mac {
        keys.push(Entry {
            set: "allowed",
            key: allowed_key(&p, mac),
        });
    }
    let mut out = Vec::new();
    for e in keys {
        let found = nftset::get(nl, BRIDGE, TABLE_NAME, e.set, &e.key)
            .map_err(|err| err.cni("looking up a macspoofchk entry"))?;
        if found.and_then(|f| f.comment).as_deref() == Some(tag.as_str()) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Every element of both sets: (entry, comment).
fn list_all(nl: &mut Nfnl) -> Result<Vec<(Entry, String)>> {
    let mut out = Vec::new();
    for set in ["ports", "allowed"] {
        let elems = nftset::dump(nl, BRIDGE, TABLE_NAME, set)
            .map_err(|e| e.cni("listing macspoofchk entries"))?;
        out.extend(elems.into_iter().map(|e| {
            let comment = e.comment.unwrap_or_default();
            (Entry { set, key: e.key }, comment)
        }));
    }
    Ok(out)
}

/// Guard bridge port `port`: only frames from `mac` may enter through it.
pub fn add(tag: &Tag, port: &str, mac: Mac) -> Result<()> {
    let ops = add_ops(tag, port, mac)?;
    let mut nl = socket()?;
    match commit(&mut nl, &ops) {
        Ok(()) => Ok(()),
        Err(e) if e.is_missing() => {
            let nft = Nft::get().map_err(|e| e.context("macspoofchk"))?;
            nft.apply(&base_script(), "creating table bridge cni_macspoof")?;
            commit(&mut nl, &ops).map_err(|e| e.cni("adding macspoofchk entries"))
        }
        Err(e) if e.is_exists() => {
            // A port name reused after a leak: replace whatever is there for it.
            let p = port_key(port)?;
            let stale: Vec<Entry> = list_all(&mut nl)?
                .into_iter()
                .map(|(e, _)| e)
                .filter(|e| e.key.starts_with(&p))
                .collect();
            let mut all = delete_ops(&stale);
            all.extend(ops);
            commit(&mut nl, &all).map_err(|e| e.cni("replacing macspoofchk entries"))
        }
        Err(e) => Err(e.cni("adding macspoofchk entries")),
    }
}

/// Remove the attachment's entries. `hint`: its port and MAC when known; else (or when they
/// do not match) the sets are searched by tag. Absent is success.
pub fn del(tag: &Tag, hint: Option<(&str, Option<Mac>)>) -> Result<()> {
    let mut nl = socket()?;
    let mut ours = match hint {
        Some((port, mac)) => owned_by_port(&mut nl, tag, port, mac)?,
        None => Vec::new(),
    };
    if ours.len() < 2 {
        ours = list_all(&mut nl)?
            .into_iter()
            .filter(|(_, c)| c == tag.as_str())
            .map(|(e, _)| e)
            .collect();
    }
    nftelem::delete_all(&mut nl, BRIDGE, TABLE_NAME, &delete_ops(&ours))
        .map_err(|e| e.cni("deleting macspoofchk entries"))
}

/// Fail unless the port is guarded for `mac` with this tag.
pub fn check(tag: &Tag, port: &str, mac: Mac) -> Result<()> {
    let found = owned_by_port(&mut socket()?, tag, port, Some(mac))?;
    if found.len() == 2 {
        Ok(())
    } else {
        Err(CniError::internal(format!(
            "macspoofchk: port {port} is not guarded for {mac} in table {TABLE}"
        )))
    }
}

/// Remove every entry of `network` whose tag is not in `keep`.
pub fn gc(network: &str, keep: &HashSet<Tag>) -> Result<()> {
    let mut nl = socket()?;
    let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
    let stale: Vec<Entry> = list_all(&mut nl)?
        .into_iter()
        .filter(|(_, c)| Tag::in_network(c, network) && !keep.contains(c.as_str()))
        .map(|(e, _)| e)
        .collect();
    if !stale.is_empty() {
        tracing::info!(entries = stale.len(), "GC: removing macspoofchk entries");
    }
    nftelem::delete_all(&mut nl, BRIDGE, TABLE_NAME, &delete_ops(&stale))
        .map_err(|e| e.cni("GC of macspoofchk entries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_ops() {
        let tag = Tag::new("n", "c", "eth0");
        let mac: Mac = "0a:58:0a:00:00:05".parse().unwrap();
        let ops = add_ops(&tag, "veth01020304", mac).unwrap();
        assert_eq!(
            nftelem::script(&ops),
            "create element bridge cni_macspoof ports { \"veth01020304\" comment \"cni:n/c/eth0\" }\n\
             create element bridge cni_macspoof allowed { \"veth01020304\" . 0a:58:0a:00:00:05 comment \"cni:n/c/eth0\" }\n"
        );
        // As nft encodes them (`nft --debug=netlink`): the name padded to 16 bytes, the MAC
        // to 8.
        let mut want = b"veth01020304".to_vec();
        want.resize(16, 0);
        assert_eq!(ops[0].key, want);
        want.extend_from_slice(&[0x0a, 0x58, 0x0a, 0, 0, 5, 0, 0]);
        assert_eq!(ops[1].key, want);
        assert!(add_ops(&tag, "", mac).is_err());
        assert!(add_ops(&tag, "sixteen-chars-xx", mac).is_err());
        assert!(add_ops(&tag, "a\0b", mac).is_err());
        assert!(base_script().contains("iifname @ports drop"));
        let entries = [Entry {
            set: "ports",
            key: port_key("veth1").unwrap(),
        }];
        assert_eq!(
            nftelem::script(&delete_ops(&entries)),
            "delete element bridge cni_macspoof ports { \"veth1\" }\n"
        );
        assert_eq!(key_text(&[]), "\"\"", "no panic on a short key");
    }
}
