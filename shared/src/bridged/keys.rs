//! The configuration keys every bridged plugin (bridge, vxlan) shares, with the reference bridge
//! plugin's names and defaults, decoded and validated one way.

use serde::Deserialize;

use super::AttachConfig;
use crate::error::{CniError, Result};
use crate::firewall::Backend;
use crate::mac::Mac;
use crate::validate;

/// The shared keys as written; a plugin's config struct embeds it with `#[serde(flatten)]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachKeys {
    pub bridge: Option<String>,
    pub mtu: Option<i64>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    pub ip_masq_backend: Option<String>,
    #[serde(default, rename = "enabledad")]
    pub enable_dad: bool,
    #[serde(default)]
    pub macspoofchk: bool,
    #[serde(default, rename = "disableIPv6LinkLocal")]
    pub no_ipv6_link_local: bool,
}

impl AttachKeys {
    /// Validate into an [`AttachConfig`] (bridge name defaulting to `default_bridge`); the
    /// plugin then fills in its own fields. Errors are code 7 naming the key.
    pub fn attach_config(&self, default_bridge: &str, mac: Option<Mac>) -> Result<AttachConfig> {
        let bridge = self
            .bridge
            .clone()
            .unwrap_or_else(|| default_bridge.to_string());
        validate::link_name("bridge", &bridge)?;
        Ok(AttachConfig {
            bridge,
            mtu: mtu("mtu", self.mtu)?,
            is_gateway: self.is_gateway || self.is_default_gateway,
            is_default_gateway: self.is_default_gateway,
            force_address: self.force_address,
            ip_masq: self.ip_masq,
            masq_backend: Backend::parse("ipMasqBackend", self.ip_masq_backend.as_deref())?,
            preserve_default_vlan: true,
            enable_dad: self.enable_dad,
            macspoofchk: self.macspoofchk,
            no_ipv6_link_local: self.no_ipv6_link_local,
            mac,
            ..AttachConfig::default()
        })
    }
}

/// An MTU key: absent or 0 means the default; otherwise 68 to 65535.
pub fn mtu(key: &str, v: Option<i64>) -> Result<Option<u32>> {
    match v {
        None | Some(0) => Ok(None),
        Some(m) if !(68..=65535).contains(&m) => Err(CniError::invalid_config(format!(
            "{key}: {m} is out of range (68 to 65535, or 0 for the default)"
        ))),
        Some(m) => Ok(u32::try_from(m).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::decode_config;
    use serde_json::json;

    #[test]
    fn defaults_and_validation() {
        let k: AttachKeys = decode_config(&json!({})).unwrap();
        let c = k.attach_config("cni0", None).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert!(!c.is_gateway && c.mtu.is_none() && c.preserve_default_vlan);
        assert_eq!(c.masq_backend, Backend::Auto);
        let k: AttachKeys =
            decode_config(&json!({"isDefaultGateway": true, "mtu": 1400, "bridge": "br9"}))
                .unwrap();
        let c = k.attach_config("cni0", None).unwrap();
        assert!(c.is_gateway && c.is_default_gateway);
        assert_eq!((c.mtu, c.bridge.as_str()), (Some(1400), "br9"));
        for bad in [
            json!({"mtu": 67}),
            json!({"mtu": 70000}),
            json!({"bridge": "a-very-long-bridge"}),
            json!({"ipMasqBackend": "pf"}),
        ] {
            let k: AttachKeys = decode_config(&bad).unwrap();
            assert_eq!(k.attach_config("cni0", None).unwrap_err().code, 7, "{bad}");
        }
    }
}
