//! The runtime side of CNI, behaving like the reference `libcni`: load a network configuration
//! list, negotiate its spec version, run its plugin chain for ADD, CHECK, DEL, GC and STATUS, and
//! keep the result cache in libcni's format so this crate and a libcni runtime can take over each
//! other's attachments. `cnitool` is a thin CLI over it; tests and the demo use it directly.
//!
//! ```text
//! let list = load_network_conf(Path::new("/etc/cni/net.d"), "mynet")?;
//! let cni = CniConfig::new(vec!["/opt/cni/bin".into()], DEFAULT_CACHE_DIR);
//! let rt = RuntimeConf { container_id: "c1".into(), netns: "/run/netns/c1".into(),
//!                        ifname: "eth0".into(), ..RuntimeConf::default() };
//! let result = cni.add_network_list(&list, &rt)?;   // JSON in list.cni_version
//! cni.del_network_list(&list, &rt)?;
//! ```

mod api;
pub mod cache;
#[cfg(test)]
mod cache_tests;
pub mod conf;
#[cfg(test)]
mod conf_tests;
pub mod inject;

pub use api::CniConfig;
pub use cache::{CachedAttachment, ResultCache, CACHE_KIND_V1, DEFAULT_CACHE_DIR};
pub use conf::{load_network_conf, negotiate_version, NetworkConfigList, PluginConfig};
pub use inject::{build_plugin_config, runtime_config_for};

use serde_json::{Map, Value};

use crate::error::{CniError, Result};

/// The runtime's side of one attachment (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeConf {
    pub container_id: String,
    /// The network namespace path (CNI_NETNS); empty for none.
    pub netns: String,
    pub ifname: String,
    /// CNI_ARGS as key/value pairs.
    pub args: Vec<[String; 2]>,
    /// Capability arguments (`portMappings`, `ips`, `mac`, ...); each plugin sees only the keys
    /// it declares in `capabilities`, inside `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    /// CNI_ARGS as plugins receive it: `K1=V1;K2=V2`.
    pub fn args_string(&self) -> String {
        self.args
            .iter()
            .map(|[k, v]| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// Parse CNI_ARGS as the reference cnitool does: `;`-separated `KEY=VALUE` pairs, each with
/// exactly one `=` and both sides non-empty. An empty string is no arguments.
pub fn parse_cni_args(s: &str) -> Result<Vec<[String; 2]>> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(';')
        .map(|pair| {
            let mut kv = pair.split('=');
            match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() && !v.is_empty() => {
                    Ok([k.to_string(), v.to_string()])
                }
                _ => Err(CniError::invalid_env(format!(
                    "CNI_ARGS: invalid pair {pair:?} (want KEY=VALUE;KEY=VALUE)"
                ))),
            }
        })
        .collect()
}

/// Parse capability arguments (CAP_ARGS): a JSON object; empty means none.
pub fn parse_capability_args(s: &str) -> Result<Map<String, Value>> {
    if s.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CniError::invalid_env(format!(
            "CAP_ARGS: must be a JSON object, got {other}"
        ))),
        Err(e) => Err(CniError::invalid_env(format!(
            "CAP_ARGS: malformed JSON: {e}"
        ))),
    }
}
