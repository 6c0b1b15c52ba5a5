//! The network configuration a plugin receives on stdin: the keys every plugin shares. A plugin
//! decodes its own keys from the same JSON with [`decode_config`] into its own struct.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::result::Dns;
use crate::error::{CniError, Result};

/// The common keys of a network configuration (SPEC "Network configuration" and CONVENTIONS).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    /// Per-container arguments from the runtime, e.g. `{"cni": {"ips": [...], "mac": "..."}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(rename = "ipMasq", default)]
    pub ip_masq: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Capability arguments the runtime filled in (`portMappings`, `ips`, `mac`, ...).
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Map<String, Value>>,
    /// GC: the attachments that are still valid (CNI 1.1).
    #[serde(
        rename = "cni.dev/valid-attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Vec<GcAttachment>>,
    /// GC: the spelling of an earlier libcni, still sent beside the new one.
    #[serde(
        rename = "cni.dev/attachments",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_attachments: Option<Vec<GcAttachment>>,
    /// Log level for this plugin (`off`, `error`, `warn`, `info`, `debug`, `trace`).
    #[serde(rename = "logLevel", default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Append logs to this file instead of stderr (runtimes often discard stderr).
    #[serde(rename = "logFile", default, skip_serializing_if = "Option::is_none")]
    pub log_file: Option<String>,
}

/// The `ipam` section: its `type` names the IPAM plugin; the rest belongs to that plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub ipam_type: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One `(containerID, ifname)` pair of a GC request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
}

/// GC's attachment lists, both spellings: an entry per attachment of the node.
const GC_LISTS: [&str; 2] = ["cni.dev/valid-attachments", "cni.dev/attachments"];

impl NetConf {
    /// The IPAM plugin to delegate to: `ipam.type`; `None` without an `ipam` section or with
    /// an empty type (`"ipam": {}` means no IPAM, as in the reference plugins).
    pub fn ipam_type(&self) -> Option<&str> {
        self.ipam
            .as_ref()
            .map(|i| i.ipam_type.as_str())
            .filter(|t| !t.is_empty())
    }

    /// A capability argument from `runtimeConfig`, decoded; `None` when absent or null.
    pub fn runtime_config_field<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.runtime_config.as_ref().and_then(|m| m.get(key)) else {
            return Ok(None);
        };
        if v.is_null() {
            return Ok(None);
        }
        decode_value(v, &format!("runtimeConfig.{key}")).map(Some)
    }

    /// A field of `args.cni` (CONVENTIONS: `args.cni.ips`, `args.cni.mac`, ...).
    pub fn args_cni_field<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self
            .args
            .as_ref()
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get(key))
        else {
            return Ok(None);
        };
        if v.is_null() {
            return Ok(None);
        }
        decode_value(v, &format!("args.cni.{key}")).map(Some)
    }

    /// GC's list of valid attachments: both spellings, merged. Absent altogether is an error,
    /// because "nothing is valid" would release every attachment of the network.
    pub fn gc_valid_attachments(&self) -> Result<Vec<GcAttachment>> {
        match (&self.valid_attachments, &self.legacy_attachments) {
            (None, None) => Err(CniError::invalid_config(
                "cni.dev/valid-attachments: required for GC (an empty list releases everything)",
            )),
            (a, b) => {
                // Deduplicated through a set: a node's list has one entry per attachment
                // (thousands on a big node; `Vec::contains` made this quadratic).
                let mut seen = std::collections::HashSet::new();
                Ok(a.iter()
                    .chain(b.iter())
                    .flatten()
                    .filter(|att| seen.insert(*att))
                    .cloned()
                    .collect())
            }
        }
    }

    /// Decode the configuration a plugin got on stdin: its common keys, and the whole JSON
    /// object for the plugin's own keys ([`decode_config`]). GC's attachment lists (thousands
    /// of entries on a big node, twice) are decoded straight into [`NetConf`] and left out of
    /// the JSON tree: built as `Value`s first, they cost each plugin of a GC at 1000
    /// attachments ~3 ms of allocations.
    pub fn parse(bytes: &[u8]) -> Result<(NetConf, Value)> {
        let malformed = |e: serde_json::Error| {
            CniError::decode(format!("stdin: malformed JSON configuration: {e}"))
        };
        let top: BTreeMap<String, &RawValue> = match serde_json::from_slice(bytes) {
            Ok(top) => top,
            // Not JSON, or not an object: say which.
            Err(e) => {
                return Err(match serde_json::from_slice::<Value>(bytes) {
                    Err(e) => malformed(e),
                    Ok(v) if !v.is_object() => {
                        CniError::decode("stdin: the configuration must be a JSON object")
                    }
                    Ok(_) => malformed(e),
                })
            }
        };
        let mut lists: [Option<Vec<GcAttachment>>; 2] = [None, None];
        let mut raw = Map::new();
        for (key, value) in top {
            if let Some(i) = GC_LISTS.iter().position(|l| *l == key) {
                let mut de = serde_json::Deserializer::from_str(value.get());
                lists[i] =
                    serde_path_to_error::deserialize(&mut de).map_err(|e| at_key(&key, e))?;
            } else {
                raw.insert(key, serde_json::from_str(value.get()).map_err(malformed)?);
            }
        }
        let raw = Value::Object(raw);
        let mut conf: NetConf = decode_config(&raw)?;
        [conf.valid_attachments, conf.legacy_attachments] = lists;
        Ok((conf, raw))
    }
}

/// Decode a plugin's own configuration struct from the stdin JSON. Type errors are code 7 and
/// name the key path (`"ranges[0][1].subnet: ..."`).
pub fn decode_config<T: DeserializeOwned>(raw: &Value) -> Result<T> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            CniError::invalid_config(format!("{inner}"))
        } else {
            CniError::invalid_config(format!("{path}: {inner}"))
        }
    })
}

/// Decode one JSON value, naming `what` (its key path) in the error.
pub fn decode_value<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    serde_path_to_error::deserialize(v).map_err(|e| at_key(what, e))
}

/// A decoding error of the value at key path `what` (code 7), naming the path within it.
fn at_key<E: std::fmt::Display>(what: &str, e: serde_path_to_error::Error<E>) -> CniError {
    let path = e.path().to_string();
    let at = if path == "." {
        what.to_string()
    } else if path.starts_with('[') {
        format!("{what}{path}")
    } else {
        format!("{what}.{path}")
    };
    CniError::invalid_config(format!("{at}: {}", e.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_common_keys_and_ignores_plugin_keys() {
        let raw = json!({
            "cniVersion": "1.1.0", "name": "net", "type": "bridge", "bridge": "cni0",
            "ipMasq": true, "ipam": {"type": "host-local", "subnet": "10.0.0.0/24"},
            "runtimeConfig": {"mac": "aa:bb:cc:dd:ee:ff"},
            "args": {"cni": {"ips": ["10.0.0.9"]}}
        });
        let c: NetConf = decode_config(&raw).unwrap();
        assert_eq!(c.name, "net");
        assert!(c.ip_masq);
        let ipam = c.ipam.as_ref().unwrap();
        assert_eq!(ipam.ipam_type, "host-local");
        assert_eq!(ipam.rest["subnet"], "10.0.0.0/24");
        assert_eq!(
            c.runtime_config_field::<String>("mac").unwrap().as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            c.args_cni_field::<Vec<String>>("ips").unwrap().unwrap(),
            ["10.0.0.9"]
        );
        assert_eq!(c.runtime_config_field::<String>("ips").unwrap(), None);
    }

    #[test]
    fn type_errors_name_the_key() {
        let e = decode_config::<NetConf>(&json!({"name": "n", "type": "t", "ipMasq": "yes"}))
            .unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("ipMasq: "), "{}", e.msg);
        let c: NetConf = decode_config(&json!({"runtimeConfig": {"mac": 5}})).unwrap();
        let e = c.runtime_config_field::<String>("mac").unwrap_err();
        assert!(e.msg.starts_with("runtimeConfig.mac: "), "{}", e.msg);
    }

    #[test]
    fn gc_reads_both_spellings() {
        let c: NetConf = decode_config(&json!({
            "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
            "cni.dev/attachments": [{"containerID": "a", "ifname": "eth0"},
                                    {"containerID": "b", "ifname": "eth1"}]
        }))
        .unwrap();
        let all = c.gc_valid_attachments().unwrap();
        assert_eq!(all.len(), 2);
        let old: NetConf =
            decode_config(&json!({"cni.dev/attachments": [{"containerID": "b", "ifname": "x"}]}))
                .unwrap();
        assert_eq!(old.gc_valid_attachments().unwrap()[0].container_id, "b");
        let none: NetConf = decode_config(&json!({})).unwrap();
        assert_eq!(none.gc_valid_attachments().unwrap_err().code, 7);
    }

    #[test]
    fn parse_keeps_gc_lists_out_of_the_json_tree() {
        let (c, raw) = NetConf::parse(
            br#"{"cniVersion": "1.1.0", "name": "n", "type": "bridge", "bridge": "br0",
                 "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
                 "cni.dev/attachments": [{"containerID": "b"}]}"#,
        )
        .unwrap();
        assert_eq!((c.name.as_str(), c.plugin_type.as_str()), ("n", "bridge"));
        assert_eq!(raw["bridge"], "br0");
        assert!(raw.get("cni.dev/valid-attachments").is_none());
        let all = c.gc_valid_attachments().unwrap();
        assert_eq!(
            all.iter()
                .map(|a| (a.container_id.as_str(), a.ifname.as_str()))
                .collect::<Vec<_>>(),
            [("a", "eth0"), ("b", "")]
        );
        let (c, _) = NetConf::parse(br#"{"cni.dev/valid-attachments": null}"#).unwrap();
        assert!(c.valid_attachments.is_none());

        let err = |b: &[u8]| {
            let e = NetConf::parse(b).unwrap_err();
            (e.code, e.msg)
        };
        let (code, msg) = err(
            br#"{"name": "n", "cni.dev/attachments": [{"containerID": "a"}, {"containerID": 5}]}"#,
        );
        assert_eq!(code, 7);
        assert!(
            msg.starts_with("cni.dev/attachments[1].containerID: invalid type"),
            "{msg}"
        );
        let (code, msg) = err(br#"{"cni.dev/valid-attachments": {}}"#);
        assert_eq!(code, 7);
        assert!(
            msg.starts_with("cni.dev/valid-attachments: invalid type"),
            "{msg}"
        );
        let (code, msg) = err(br#"{"name": "n", "ipMasq": "yes"}"#);
        assert_eq!(code, 7);
        assert!(msg.starts_with("ipMasq: "), "{msg}");
        let (code, msg) = err(b"[1]");
        assert_eq!(
            (code, msg.as_str()),
            (6, "stdin: the configuration must be a JSON object")
        );
        let (code, msg) = err(br#"{"name": "n""#);
        assert_eq!(code, 6);
        assert!(
            msg.starts_with("stdin: malformed JSON configuration: "),
            "{msg}"
        );
        let (code, _) = err(b"\xff");
        assert_eq!(code, 6);
    }
}
