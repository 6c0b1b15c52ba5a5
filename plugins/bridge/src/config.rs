//! The bridge plugin's keys, their defaults and validation (code 7 naming the key).

use cni_shared::bridged::{self, AttachConfig, AttachKeys};
use cni_shared::mac::Mac;
use cni_shared::netlink::BridgeVlan;
use cni_shared::skel::Request;
use cni_shared::{CniError, Result};
use serde::Deserialize;

pub const DEFAULT_BRIDGE: &str = "cni0";

/// The plugin's own keys as written (the common keys are decoded by the skel).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    /// bridge, mtu, isGateway, isDefaultGateway, forceAddress, ipMasq, ipMasqBackend,
    /// enabledad, macspoofchk, disableIPv6LinkLocal: shared with vxlan.
    /// (Decoded on its own from the same JSON by [`decode`], so errors keep the key's name.)
    #[serde(skip)]
    pub attach: AttachKeys,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    pub vlan: Option<i64>,
    pub vlan_trunk: Option<Vec<Trunk>>,
    pub preserve_default_vlan: Option<bool>,
    #[serde(default)]
    pub disable_container_interface: bool,
    #[serde(default)]
    pub port_isolation: bool,
}

/// One `vlanTrunk` entry: `{"id": 10}`, `{"minID": 20, "maxID": 30}`, or both.
#[derive(Debug, Default, Deserialize)]
pub struct Trunk {
    pub id: Option<i64>,
    #[serde(rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(rename = "maxID")]
    pub max_id: Option<i64>,
}

fn bad(msg: String) -> CniError {
    CniError::invalid_config(msg)
}

fn vid(key: &str, v: i64, min: i64) -> Result<u16> {
    if !(min..=4094).contains(&v) {
        return Err(bad(format!(
            "{key}: invalid VLAN ID {v} (must be between {min} and 4094)"
        )));
    }
    u16::try_from(v).map_err(|_| bad(format!("{key}: invalid VLAN ID {v}")))
}

/// The VLANs of `vlanTrunk`, as the reference reads them: an entry may give a range
/// (`minID` and `maxID` together), an `id`, both, or neither (adds nothing).
fn trunk(entries: &[Trunk]) -> Result<Vec<BridgeVlan>> {
    let mut out = Vec::new();
    for (i, t) in entries.iter().enumerate() {
        let key = |k: &str| format!("vlanTrunk[{i}].{k}");
        match (t.min_id, t.max_id) {
            (Some(lo), Some(hi)) => {
                let (lo, hi) = (vid(&key("minID"), lo, 1)?, vid(&key("maxID"), hi, 1)?);
                if lo > hi {
                    return Err(bad(format!(
                        "vlanTrunk[{i}]: minID {lo} is greater than maxID {hi}"
                    )));
                }
                out.push(BridgeVlan::range(lo, hi));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad(format!(
                    "vlanTrunk[{i}]: minID and maxID go together ({} is missing)",
                    if t.min_id.is_none() { "minID" } else { "maxID" }
                )))
            }
            (None, None) => {}
        }
        if let Some(id) = t.id {
            out.push(BridgeVlan::one(vid(&key("id"), id, 1)?));
        }
    }
    Ok(out)
}

/// The plugin's keys and the shared bridged keys, from the configuration JSON.
pub fn decode(raw: &serde_json::Value) -> Result<BridgeConf> {
    let mut c: BridgeConf = cni_shared::spec::decode_config(raw)?;
    c.attach = cni_shared::spec::decode_config(raw)?;
    Ok(c)
}

/// Decode, default and validate the request's configuration.
pub fn load(req: &Request) -> Result<AttachConfig> {
    let c = decode(&req.raw)?;
    from_conf(
        c,
        req.conf.ipam_type().is_some(),
        bridged::container_mac(req)?,
    )
}

/// Validation proper (no request needed: unit-tested).
pub fn from_conf(c: BridgeConf, has_ipam: bool, mac: Option<Mac>) -> Result<AttachConfig> {
    let base = c.attach.attach_config(DEFAULT_BRIDGE, mac)?;
    if c.hairpin_mode && c.promisc_mode {
        return Err(bad(
            "hairpinMode and promiscMode cannot both be set".to_string()
        ));
    }
    let vlan = match c.vlan {
        None | Some(0) => None,
        Some(v) => Some(vid("vlan", v, 0)?),
    };
    let vlan_trunk = trunk(c.vlan_trunk.as_deref().unwrap_or_default())?;
    if c.disable_container_interface && has_ipam {
        return Err(bad(
            "disableContainerInterface: cannot be set together with ipam (an interface that \
             stays down cannot carry addresses)"
                .to_string(),
        ));
    }
    Ok(AttachConfig {
        hairpin: c.hairpin_mode,
        promisc: c.promisc_mode,
        vlan,
        vlan_trunk,
        preserve_default_vlan: c.preserve_default_vlan.unwrap_or(true),
        disable_container_interface: c.disable_container_interface,
        port_isolation: c.port_isolation,
        ..base
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::firewall::Backend;
    use serde_json::json;

    fn conf(v: serde_json::Value) -> Result<AttachConfig> {
        let c = decode(&v)?;
        from_conf(c, false, None)
    }

    fn err(v: serde_json::Value) -> CniError {
        conf(v).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = conf(json!({})).unwrap();
        assert_eq!(c.bridge, "cni0");
        assert_eq!(c.masq_backend, Backend::Auto);
        assert!(c.preserve_default_vlan && !c.is_gateway && c.mtu.is_none() && c.vlan.is_none());
        let c = conf(json!({"isDefaultGateway": true, "mtu": 0, "vlan": 0})).unwrap();
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert!(c.mtu.is_none() && c.vlan.is_none());
    }

    #[test]
    fn every_key() {
        let c = conf(
            json!({"bridge": "br-x", "ipMasq": true, "ipMasqBackend": "iptables",
            "mtu": 1400, "hairpinMode": true, "vlan": 100,
            "vlanTrunk": [{"id": 200}, {"minID": 300, "maxID": 310}],
            "preserveDefaultVlan": false, "enabledad": true, "macspoofchk": true,
            "disableIPv6LinkLocal": true,
            "portIsolation": true, "forceAddress": true}),
        )
        .unwrap();
        assert_eq!(c.bridge, "br-x");
        assert_eq!(c.masq_backend, Backend::Iptables);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.vlan, Some(100));
        assert_eq!(
            c.vlan_trunk,
            vec![BridgeVlan::one(200), BridgeVlan::range(300, 310)]
        );
        assert!(c.hairpin && c.enable_dad && c.macspoofchk && c.port_isolation);
        assert!(c.no_ipv6_link_local);
        assert!(!c.preserve_default_vlan && c.force_address && c.ip_masq);
        // As the reference: an entry may give a range and an id; an empty one adds nothing.
        let c = conf(json!({"vlanTrunk": [{"minID": 3, "maxID": 5, "id": 9}, {}]})).unwrap();
        assert_eq!(
            c.vlan_trunk,
            vec![BridgeVlan::range(3, 5), BridgeVlan::one(9)]
        );
    }

    #[test]
    fn bad_input_names_the_key() {
        let cases = [
            (json!({"ipMasqBackend": "pf"}), "ipMasqBackend"),
            (
                json!({"hairpinMode": true, "promiscMode": true}),
                "hairpinMode",
            ),
            (json!({"vlan": 5000}), "vlan"),
            (json!({"vlan": -1}), "vlan"),
            (json!({"mtu": 67}), "mtu"),
            (json!({"mtu": 70000}), "mtu"),
            (json!({"bridge": "a-bridge-name-too-long"}), "bridge"),
            (json!({"vlanTrunk": [{"id": 0}]}), "vlanTrunk[0].id"),
            (
                json!({"vlanTrunk": [{"minID": 9, "maxID": 5}]}),
                "vlanTrunk[0]",
            ),
            (json!({"vlanTrunk": [{"minID": 9}]}), "vlanTrunk[0]"),
            (
                json!({"vlanTrunk": [{"id": 4, "maxID": 9}]}),
                "vlanTrunk[0]",
            ),
            (
                json!({"vlanTrunk": [{"minID": 2, "maxID": 3, "id": 4095}]}),
                "vlanTrunk[0].id",
            ),
            (json!({"isGateway": "yes"}), "isGateway"),
        ];
        for (v, key) in cases {
            let e = err(v.clone());
            assert_eq!(e.code, 7, "{v}: {}", e.msg);
            assert!(e.msg.starts_with(key), "{v}: {}", e.msg);
        }
        let c: BridgeConf = cni_shared::spec::decode_config(&json!({
            "disableContainerInterface": true}))
        .unwrap();
        let e = from_conf(c, true, None).unwrap_err();
        assert!(e.msg.starts_with("disableContainerInterface"), "{}", e.msg);
    }
}
