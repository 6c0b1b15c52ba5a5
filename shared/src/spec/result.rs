//! The CNI result, held in one canonical form (the 1.1.0 shape, a superset of every older one) and
//! converted to and from each version's JSON by the spec's rules.
//!
//! - 0.1.0/0.2.0 ("legacy"): `ip4`/`ip6` objects with their routes; converting down keeps the first
//!   IPv4 and the first IPv6 address and files each route under the family of its destination.
//! - 0.3.0/0.3.1/0.4.0: `interfaces`, `ips[]` carrying `version`, top-level `routes`.
//! - 1.0.0/1.1.0: `ips[]` without `version`; interface `mtu`/`socketPath`/`pciID`; route
//!   `mtu`/`advmss`/`priority`/`table`/`scope`.
//!
//! Keys this suite does not know are kept (`extra`) and passed on, so a chained plugin never drops
//! what an earlier one added.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::cidr::serde_cidr;
use super::version::{ResultShape, Version};
use crate::error::{CniError, Result};

/// A CNI result (ADD output, IPAM output, prevResult), version-independent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container interfaces; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces` of the interface this address is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    #[serde(with = "serde_cidr")]
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    #[serde(with = "serde_cidr")]
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl IpConfig {
    pub fn new(address: IpNetwork, gateway: Option<IpAddr>) -> Self {
        IpConfig {
            interface: None,
            address,
            gateway,
            extra: Map::new(),
        }
    }
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
            extra: Map::new(),
        }
    }
}

/// Top-level keys of every version's result layout.
const RESERVED_TOP_LEVEL_KEYS: [&str; 7] = [
    "cniVersion",
    "interfaces",
    "ips",
    "routes",
    "dns",
    "ip4",
    "ip6",
];

/// Keys of the 1.x shape that older versions do not have.
const CURRENT_ONLY_INTERFACE_KEYS: [&str; 3] = ["mtu", "socketPath", "pciID"];
const CURRENT_ONLY_ROUTE_KEYS: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// This result placed after `prev`, for an interface plugin that was given a prevResult
    /// (the spec: it must pass it on, modified): prev's interfaces, IPs and routes first, then
    /// ours, our `ips[].interface` shifted past prev's interfaces; our DNS when we have one,
    /// else prev's; prev's other keys kept. Without a prevResult, this result as it is.
    pub fn after(self, prev: Option<CniResult>) -> CniResult {
        let Some(prev) = prev else { return self };
        let shift = prev.interfaces.len();
        let mut out = prev;
        out.interfaces.extend(self.interfaces);
        out.ips.extend(self.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + shift);
            ip
        }));
        out.routes.extend(self.routes);
        if !self.dns.is_empty() {
            out.dns = self.dns;
        }
        out.extra.extend(self.extra);
        out
    }

    /// Decode a result from its JSON. Its own `cniVersion` decides the shape; without one it takes
    /// `default_version` (a prevResult takes the config's). Returns the version it was written in.
    pub fn from_value(value: &Value, default_version: Version) -> Result<(Version, CniResult)> {
        let obj = value
            .as_object()
            .ok_or_else(|| CniError::decode("result: expected a JSON object"))?;
        let version = match obj.get("cniVersion") {
            None | Some(Value::Null) => default_version,
            Some(Value::String(s)) if s.is_empty() => default_version,
            Some(Value::String(s)) => s.parse()?,
            Some(other) => {
                return Err(CniError::decode(format!(
                    "result: cniVersion must be a string, got {other}"
                )))
            }
        };
        let mut result = match version.result_shape() {
            ResultShape::Legacy => decode::<Legacy>(value)?.into_current(),
            ResultShape::Versioned | ResultShape::Current => decode::<CniResult>(value)?,
        };
        // Keys that belong to some version's layout are never "unknown extras": kept, they would
        // collide with the layout of the version we convert to (a 0.2.0 result with an `ips` key).
        for k in RESERVED_TOP_LEVEL_KEYS {
            result.extra.remove(k);
        }
        if version.result_shape() == ResultShape::Versioned {
            for ip in &mut result.ips {
                ip.extra.remove("version");
            }
        }
        Ok((version, result))
    }

    /// Decode a result from bytes (a delegated plugin's stdout).
    pub fn from_slice(bytes: &[u8], default_version: Version) -> Result<(Version, CniResult)> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("result: malformed JSON: {e}")))?;
        Self::from_value(&value, default_version)
    }

    /// Encode in the given version's shape, with `cniVersion` set to it.
    pub fn to_value(&self, version: Version) -> Result<Value> {
        let mut out = match version.result_shape() {
            ResultShape::Legacy => self.to_legacy()?,
            ResultShape::Current => self.to_current_value()?,
            ResultShape::Versioned => {
                let mut v = self.to_current_value()?;
                self.downgrade_to_versioned(&mut v);
                v
            }
        };
        if let Some(obj) = out.as_object_mut() {
            obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
        }
        Ok(out)
    }

    fn to_current_value(&self) -> Result<Value> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| CniError::internal(format!("encoding result: {e}")))?;
        // Always print "dns", as libcni does, even when empty.
        if let Some(obj) = v.as_object_mut() {
            obj.entry("dns")
                .or_insert_with(|| Value::Object(Map::new()));
        }
        Ok(v)
    }

    fn downgrade_to_versioned(&self, v: &mut Value) {
        let Some(obj) = v.as_object_mut() else { return };
        if let Some(Value::Array(ifaces)) = obj.get_mut("interfaces") {
            for iface in ifaces.iter_mut().filter_map(Value::as_object_mut) {
                for k in CURRENT_ONLY_INTERFACE_KEYS {
                    iface.remove(k);
                }
            }
        }
        if let Some(Value::Array(routes)) = obj.get_mut("routes") {
            for route in routes.iter_mut().filter_map(Value::as_object_mut) {
                for k in CURRENT_ONLY_ROUTE_KEYS {
                    route.remove(k);
                }
            }
        }
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for (ip, cfg) in ips.iter_mut().zip(&self.ips) {
                if let Some(ip) = ip.as_object_mut() {
                    let family = if cfg.address.is_ipv4() { "4" } else { "6" };
                    ip.insert("version".into(), Value::String(family.into()));
                }
            }
        }
    }

    fn to_legacy(&self) -> Result<Value> {
        let first = |v4: bool| self.ips.iter().find(|ip| ip.address.is_ipv4() == v4);
        let legacy_ip = |ip: &IpConfig, v4: bool| LegacyIp {
            ip: ip.address,
            gateway: ip.gateway,
            routes: self
                .routes
                .iter()
                .filter(|r| r.dst.is_ipv4() == v4)
                .map(|r| LegacyRoute {
                    dst: r.dst,
                    gw: r.gw,
                })
                .collect(),
        };
        let legacy = Legacy {
            ip4: first(true).map(|ip| legacy_ip(ip, true)),
            ip6: first(false).map(|ip| legacy_ip(ip, false)),
            dns: self.dns.clone(),
            extra: self.extra.clone(),
        };
        if legacy.ip4.is_none() && legacy.ip6.is_none() {
            return Err(CniError::incompatible_version(
                "cannot express this result in cniVersion 0.1.0/0.2.0: it has no IP address",
            ));
        }
        serde_json::to_value(&legacy)
            .map_err(|e| CniError::internal(format!("encoding result: {e}")))
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        CniError::decode(format!("result: {path}: {}", e.inner()))
    })
}

/// The 0.1.0/0.2.0 result.
#[derive(Debug, Serialize, Deserialize)]
struct Legacy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<LegacyIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LegacyIp {
    #[serde(with = "serde_cidr")]
    ip: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Debug, Serialize, Deserialize)]
struct LegacyRoute {
    #[serde(with = "serde_cidr")]
    dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
}

impl Legacy {
    fn into_current(self) -> CniResult {
        let mut result = CniResult {
            dns: self.dns,
            extra: self.extra,
            ..CniResult::default()
        };
        for ip in [self.ip4, self.ip6].into_iter().flatten() {
            result.ips.push(IpConfig::new(ip.ip, ip.gateway));
            result
                .routes
                .extend(ip.routes.into_iter().map(|r| Route::new(r.dst, r.gw)));
        }
        result
    }
}
