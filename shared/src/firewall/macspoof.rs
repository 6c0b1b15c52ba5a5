//! `macspoofchk`: frames entering the bridge from a container's port must carry the container's
//! MAC, else they are dropped. nftables only, in `table bridge cni_macspoof` (layout in
//! [`super`]): one element per attachment in each of two sets, tagged like every entry.

use std::collections::HashSet;

use serde_json::Value;

use super::nftexec::Nft;
use super::nftjson::comment_in;
use super::tag::Tag;
use crate::error::{CniError, Result};
use crate::mac::Mac;

pub const TABLE: &str = "bridge cni_macspoof";

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

fn port_key(port: &str) -> Result<String> {
    if port.is_empty() || port.contains(['"', '\\']) || port.chars().any(char::is_control) {
        return Err(CniError::internal(format!(
            "macspoofchk: port name {port:?} cannot be quoted for nftables"
        )));
    }
    Ok(format!("\"{port}\""))
}

pub fn add_script(tag: &Tag, port: &str, mac: Mac) -> Result<String> {
    let p = port_key(port)?;
    Ok(format!(
        "create element {TABLE} ports {{ {p} comment \"{tag}\" }}\n\
         create element {TABLE} allowed {{ {p} . {mac} comment \"{tag}\" }}\n"
    ))
}

/// (set, key in nft syntax) of the attachment's elements found through the port name.
fn owned_by_port(nft: &Nft, tag: &Tag, port: &str, mac: Option<Mac>) -> Result<Vec<Entry>> {
    let p = port_key(port)?;
    let mut keys = vec![("ports", p.clone())];
    if let Some(mac) = mac {
        keys.push(("allowed", format!("{p} . {mac}")));
    }
    let mut out = Vec::new();
    for (set, key) in keys {
        match nft.run(&format!("get element {TABLE} {set} {{ {key} }}")) {
            Ok(text) if comment_in(&text).as_deref() == Some(tag.as_str()) => {
                out.push(Entry { set, key });
            }
            Ok(_) => {}
            Err(e) if e.is_missing() => {}
            Err(e) => return Err(e.cni("looking up a macspoofchk entry")),
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub set: &'static str,
    /// The element key in nft syntax: `"veth0"` or `"veth0" . 0a:58:00:00:00:01`.
    pub key: String,
}

/// Every tagged element of both sets: (entry, comment).
fn list_all(nft: &Nft) -> Result<Vec<(Entry, String)>> {
    let mut out = Vec::new();
    for set in ["ports", "allowed"] {
        match nft.run_json(&format!("list set {TABLE} {set}")) {
            Ok(v) => out.extend(
                elements_of(&v)
                    .into_iter()
                    .map(|(key, c)| (Entry { set, key }, c)),
            ),
            Err(e) if e.is_missing() => {}
            Err(e) => return Err(e.cni("listing macspoofchk entries")),
        }
    }
    Ok(out)
}

/// (key in nft syntax, comment) of the elements in a `list set` JSON document.
pub fn elements_of(v: &Value) -> Vec<(String, String)> {
    let quote = |s: &str| -> Option<String> {
        if s.contains(['"', '\\']) {
            None
        } else {
            Some(format!("\"{s}\""))
        }
    };
    let mut out = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let elems = item
            .get("set")
            .and_then(|s| s.get("elem"))
            .and_then(Value::as_array);
        for e in elems.into_iter().flatten() {
            let (val, comment) = match e.get("elem") {
                Some(inner) => (
                    inner.get("val").unwrap_or(&Value::Null),
                    inner.get("comment").and_then(Value::as_str).unwrap_or(""),
                ),
                None => (e, ""),
            };
            let key = match val {
                Value::String(port) => quote(port),
                _ => match val
                    .get("concat")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                {
                    Some([Value::String(port), Value::String(mac)]) => {
                        quote(port).map(|p| format!("{p} . {mac}"))
                    }
                    _ => None,
                },
            };
            if let Some(key) = key {
                out.push((key, comment.to_string()));
            }
        }
    }
    out
}

fn delete_script(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("delete element {TABLE} {} {{ {} }}\n", e.set, e.key))
        .collect()
}

fn run(nft: &Nft, script: &str, what: &str) -> Result<()> {
    nft.run(script).map(drop).map_err(|e| e.cni(what))
}

fn nft() -> Result<&'static Nft> {
    Nft::get().map_err(|e| e.context("macspoofchk"))
}

/// Guard bridge port `port`: only frames from `mac` may enter through it.
pub fn add(tag: &Tag, port: &str, mac: Mac) -> Result<()> {
    let nft = nft()?;
    let script = add_script(tag, port, mac)?;
    match nft.run(&script) {
        Ok(_) => Ok(()),
        Err(e) if e.is_missing() => run(
            nft,
            &(base_script() + &script),
            "creating table bridge cni_macspoof",
        ),
        Err(e) if e.is_exists() => {
            // A port name reused after a leak: replace whatever is there for it.
            let key = port_key(port)?;
            let with_mac = format!("{key} .");
            let stale: Vec<Entry> = list_all(nft)?
                .into_iter()
                .map(|(e, _)| e)
                .filter(|e| e.key == key || e.key.starts_with(&with_mac))
                .collect();
            run(
                nft,
                &(delete_script(&stale) + &script),
                "replacing macspoofchk entries",
            )
        }
        Err(e) => Err(e.cni("adding macspoofchk entries")),
    }
}

/// Remove the attachment's entries. `hint`: its port and MAC when known; else (or when they
/// do not match) the sets are searched by tag. Absent is success.
pub fn del(tag: &Tag, hint: Option<(&str, Option<Mac>)>) -> Result<()> {
    let nft = nft()?;
    let mut ours = match hint {
        Some((port, mac)) => owned_by_port(nft, tag, port, mac)?,
        None => Vec::new(),
    };
    if ours.len() < 2 {
        ours = list_all(nft)?
            .into_iter()
            .filter(|(_, c)| c == tag.as_str())
            .map(|(e, _)| e)
            .collect();
    }
    if ours.is_empty() {
        return Ok(());
    }
    run(nft, &delete_script(&ours), "deleting macspoofchk entries")
}

/// Fail unless the port is guarded for `mac` with this tag.
pub fn check(tag: &Tag, port: &str, mac: Mac) -> Result<()> {
    let found = owned_by_port(nft()?, tag, port, Some(mac))?;
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
    let nft = nft()?;
    let keep: HashSet<&str> = keep.iter().map(Tag::as_str).collect();
    let stale: Vec<Entry> = list_all(nft)?
        .into_iter()
        .filter(|(_, c)| Tag::in_network(c, network) && !keep.contains(c.as_str()))
        .map(|(e, _)| e)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    run(nft, &delete_script(&stale), "GC of macspoofchk entries")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scripts_and_listings() {
        let tag = Tag::new("n", "c", "eth0");
        let mac: Mac = "0a:58:0a:00:00:05".parse().unwrap();
        assert_eq!(
            add_script(&tag, "veth01020304", mac).unwrap(),
            "create element bridge cni_macspoof ports { \"veth01020304\" comment \"cni:n/c/eth0\" }\n\
             create element bridge cni_macspoof allowed { \"veth01020304\" . 0a:58:0a:00:00:05 comment \"cni:n/c/eth0\" }\n"
        );
        assert!(add_script(&tag, "a\"b", mac).is_err());
        assert!(base_script().contains("iifname @ports drop"));
        let v = json!({"nftables": [{"metainfo": {}}, {"set": {"elem": [
            {"elem": {"val": {"concat": ["veth1", "0a:58:0a:00:00:05"]}, "comment": "cni:n/c/eth0"}},
            {"elem": {"val": "veth2", "comment": "x"}},
            "veth3"
        ]}}]});
        assert_eq!(
            elements_of(&v),
            vec![
                (
                    "\"veth1\" . 0a:58:0a:00:00:05".to_string(),
                    "cni:n/c/eth0".to_string()
                ),
                ("\"veth2\"".to_string(), "x".to_string()),
                ("\"veth3\"".to_string(), String::new()),
            ]
        );
        let entries = [Entry {
            set: "ports",
            key: "\"veth1\"".into(),
        }];
        assert_eq!(
            delete_script(&entries),
            "delete element bridge cni_macspoof ports { \"veth1\" }\n"
        );
    }
}
