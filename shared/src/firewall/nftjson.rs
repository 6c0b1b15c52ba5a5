//! Reading nft listings: the elements of verdict maps keyed by an address, and a network's
//! shared chains (found by the comment of their rules), from `list map` / `list table` JSON
//! documents; the comment of an element from `get element` text output.

use std::net::IpAddr;

use serde_json::Value;

/// The first `comment "..."` in nft text output.
pub fn comment_in(text: &str) -> Option<String> {
    let rest = &text[text.find("comment \"")? + 9..];
    Some(rest[..rest.find('"')?].to_string())
}

/// One element of a verdict map keyed by an address (masquerade, hairpin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub ip: IpAddr,
    pub comment: String,
    /// The chain it jumps to.
    pub target: String,
}

/// The elements of the maps in a `list map` or `list table` JSON document; keys that are not
/// addresses (concatenations, prefixes) are skipped.
pub fn elements_of(v: &Value) -> Vec<Element> {
    let mut out = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let elems = item
            .get("map")
            .and_then(|m| m.get("elem"))
            .and_then(Value::as_array);
        for pair in elems.into_iter().flatten() {
            let key = pair.get(0).unwrap_or(pair);
            let (val, comment) = match key.get("elem") {
                Some(e) => (
                    e.get("val").and_then(Value::as_str),
                    e.get("comment").and_then(Value::as_str).unwrap_or(""),
                ),
                None => (key.as_str(), ""),
            };
            let target = pair
                .get(1)
                .and_then(|v| v.get("jump"))
                .and_then(|j| j.get("target"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Some(ip) = val.and_then(|s| s.parse().ok()) {
                out.push(Element {
                    ip,
                    comment: comment.to_string(),
                    target: target.to_string(),
                });
            }
        }
    }
    out
}

/// The chains named `<chain_prefix>…` of one network in a `list table` JSON document, found by
/// their rules' comment `"<network label> <subnet>…"`.
pub fn chains_of(v: &Value, chain_prefix: &str, network_label: &str) -> Vec<String> {
    let prefix = format!("{network_label} ");
    let mut out: Vec<String> = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for rule in items.into_iter().flatten().filter_map(|i| i.get("rule")) {
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let comment = rule
            .get("comment")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if chain.starts_with(chain_prefix)
            && comment.starts_with(&prefix)
            && !out.iter().any(|c| c == chain)
        {
            out.push(chain.to_string());
        }
    }
    out
}

/// The chains of `chain_prefix` of one network that no element of the document's maps jumps to.
pub fn orphan_chains(v: &Value, chain_prefix: &str, network_label: &str) -> Vec<String> {
    let live = elements_of(v);
    chains_of(v, chain_prefix, network_label)
        .into_iter()
        .filter(|c| !live.iter().any(|e| &e.target == c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_listings() {
        let text = "table inet cni_masq {\n\tmap masq4 {\n\t\telements = { 10.0.0.5 comment \"cni:n/c/eth0\" : jump net-1 }\n\t}\n}\n";
        assert_eq!(comment_in(text).as_deref(), Some("cni:n/c/eth0"));
        assert_eq!(comment_in("elements = { 10.0.0.5 : jump x }"), None);
        let v = json!({"nftables": [{"metainfo": {}}, {"map": {"name": "masq4", "elem": [
            [{"elem": {"val": "10.0.0.5", "comment": "cni:n/c/eth0"}}, {"jump": {"target": "x"}}],
            ["10.0.0.6", {"jump": {"target": "x"}}],
            [{"elem": {"val": {"prefix": {}}}}, {"jump": {"target": "x"}}]
        ]}}]});
        let e = elements_of(&v);
        let ips: Vec<(String, &str, &str)> = e
            .iter()
            .map(|e| (e.ip.to_string(), e.comment.as_str(), e.target.as_str()))
            .collect();
        assert_eq!(
            ips,
            vec![
                ("10.0.0.5".to_string(), "cni:n/c/eth0", "x"),
                ("10.0.0.6".to_string(), "", "x")
            ]
        );
        assert!(elements_of(&json!({"garbage": 1})).is_empty());
    }

    #[test]
    fn finds_a_networks_chains_and_the_orphans() {
        let table = json!({"nftables": [
            {"chain": {"name": "net-1"}},
            {"rule": {"chain": "net-1", "comment": "cni:n 10.0.0.0/24"}},
            {"rule": {"chain": "net-2", "comment": "cni:n2 10.0.1.0/24"}},
            {"rule": {"chain": "hp-3", "comment": "cni:n 10.0.0.0/24"}},
            {"rule": {"chain": "hp-3", "comment": "cni:n 10.0.0.0/24"}},
            {"rule": {"chain": "hp-4", "comment": "cni:n 10.0.2.0/24 all"}},
            {"rule": {"chain": "postrouting"}},
            {"map": {"name": "hairpin4", "elem": [
                [{"elem": {"val": "10.0.2.5", "comment": "cni:n/c/eth0"}}, {"jump": {"target": "hp-4"}}]
            ]}}
        ]});
        assert_eq!(chains_of(&table, "net-", "cni:n"), ["net-1"]);
        assert_eq!(chains_of(&table, "hp-", "cni:n"), ["hp-3", "hp-4"]);
        assert_eq!(orphan_chains(&table, "hp-", "cni:n"), ["hp-3"]);
        assert!(chains_of(&table, "hp-", "cni:n2").is_empty());
    }
}
