//! CNI_ARGS: `K=V;K=V` pairs (CONVENTIONS "CNI_ARGS"). A plugin names the keys it understands;
//! others are an error unless `IgnoreUnknown` is `1`/`true`, as in libcni.

use crate::error::{CniError, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    /// Parse the raw CNI_ARGS value. Empty segments are skipped; a segment without `=` is code 4.
    pub fn parse(raw: &str) -> Result<CniArgs> {
        let mut pairs = Vec::new();
        for seg in raw.split(';').filter(|s| !s.is_empty()) {
            let (k, v) = seg.split_once('=').ok_or_else(|| {
                CniError::invalid_env(format!("CNI_ARGS: {seg:?} is not a KEY=VALUE pair"))
            })?;
            if k.is_empty() {
                return Err(CniError::invalid_env(format!(
                    "CNI_ARGS: {seg:?} has an empty key"
                )));
            }
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(CniArgs { pairs })
    }

    /// The value of `key` (the last one wins when repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn ignore_unknown(&self) -> bool {
        self.get("IgnoreUnknown")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false)
    }

    /// Refuse keys outside `known` unless IgnoreUnknown is set (code 4 naming the key).
    pub fn check_known(&self, known: &[&str]) -> Result<()> {
        if self.ignore_unknown() {
            return Ok(());
        }
        match self
            .pairs
            .iter()
            .find(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(CniError::invalid_env(format!(
                "CNI_ARGS: unknown key {k:?} (known: {}; set IgnoreUnknown=1 to allow others)",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5,fd00::5;").unwrap();
        assert_eq!(a.get("IP"), Some("10.0.0.5,fd00::5"));
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert!(a.ignore_unknown());
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
    }

    #[test]
    fn malformed_pairs_are_code_4() {
        assert_eq!(CniArgs::parse("FOO").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("=x").unwrap_err().code, 4);
    }

    #[test]
    fn unknown_keys_need_ignore_unknown() {
        let a = CniArgs::parse("IP=10.0.0.5;FOO=1").unwrap();
        let e = a.check_known(&["IP"]).unwrap_err();
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("\"FOO\""), "{}", e.msg);
        CniArgs::parse("IP=1;FOO=1;IgnoreUnknown=true")
            .unwrap()
            .check_known(&["IP"])
            .unwrap();
        CniArgs::parse("IP=1")
            .unwrap()
            .check_known(&["IP"])
            .unwrap();
    }
}
