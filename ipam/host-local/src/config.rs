//! The `ipam` section of a host-local configuration, with defaults and validation, and the
//! addresses a runtime asked for.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::Deserialize;
use serde_json::Value;

use cni_shared::skel::Request;
use cni_shared::spec::{cidr::serde_cidr, decode_value, Route};
use cni_shared::{CniError, Result};

use crate::range::{Range, RangeSet, RangeSpec};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// A range as written: `{subnet, rangeStart, rangeEnd, gateway}`.
#[derive(Debug, Clone, Default, Deserialize)]
struct RangeJson {
    #[serde(default, with = "opt_cidr")]
    subnet: Option<IpNetwork>,
    #[serde(rename = "rangeStart", default)]
    range_start: Option<IpAddr>,
    #[serde(rename = "rangeEnd", default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

impl From<&RangeJson> for RangeSpec {
    fn from(r: &RangeJson) -> RangeSpec {
        RangeSpec {
            subnet: r.subnet,
            range_start: r.range_start,
            range_end: r.range_end,
            gateway: r.gateway,
        }
    }
}

/// A route of `ipam.routes`: `dst` and `gw`, and the route keys of CNI 1.1 (the reference's
/// host-local passes them on as well); the interface plugin applies them.
#[derive(Debug, Clone, Deserialize)]
struct RouteJson {
    #[serde(with = "serde_cidr")]
    dst: IpNetwork,
    #[serde(default)]
    gw: Option<IpAddr>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

impl From<&RouteJson> for Route {
    fn from(r: &RouteJson) -> Route {
        Route {
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
            ..Route::new(r.dst, r.gw)
        }
    }
}

/// The keys of the `ipam` section.
#[derive(Debug, Clone, Default, Deserialize)]
struct IpamJson {
    #[serde(default)]
    ranges: Vec<Vec<RangeJson>>,
    /// The legacy single range at the top of the section.
    #[serde(flatten)]
    legacy: RangeJson,
    #[serde(default)]
    routes: Vec<RouteJson>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<String>,
    #[serde(rename = "resolvConf", default)]
    resolv_conf: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
}

/// The validated host-local configuration.
#[derive(Debug, Clone)]
pub struct IpamConfig {
    pub network: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses and networks never handed out.
    pub exclude: Vec<IpNetwork>,
}

impl IpamConfig {
    pub fn from_request(req: &Request) -> Result<IpamConfig> {
        let section = req
            .raw
            .get("ipam")
            .ok_or_else(|| CniError::invalid_config("ipam: missing section"))?;
        let json: IpamJson = decode_value(section, "ipam")?;
        // The reference's order (LoadIPAMConfig): the legacy single range goes in front of
        // `ranges`, and the capability `ipRanges` in front of both. Each set is named by the
        // key it came from, so an error points at what the user or the runtime wrote.
        let capability: Option<Vec<Vec<RangeJson>>> = req.conf.runtime_config_field("ipRanges")?;
        let mut sets_json: Vec<(String, Vec<RangeJson>)> = Vec::new();
        for (i, set) in capability.unwrap_or_default().into_iter().enumerate() {
            sets_json.push((format!("runtimeConfig.ipRanges[{i}]"), set));
        }
        if json.legacy.subnet.is_some() {
            sets_json.push(("ipam".to_string(), vec![json.legacy.clone()]));
        }
        for (i, set) in json.ranges.iter().enumerate() {
            sets_json.push((format!("ipam.ranges[{i}]"), set.clone()));
        }
        if sets_json.is_empty() {
            return Err(CniError::invalid_config(
                "ipam.ranges: no IP ranges specified (give `ranges` or `subnet`)",
            ));
        }
        let mut range_sets: Vec<RangeSet> = Vec::new();
        for (at, set) in &sets_json {
            // The legacy range's keys sit in `ipam` itself (`ipam.subnet`).
            let range_at = |j: usize| {
                if at == "ipam" {
                    at.clone()
                } else {
                    format!("{at}[{j}]")
                }
            };
            let ranges = set
                .iter()
                .enumerate()
                .map(|(j, r)| Range::canonical(&r.into(), &range_at(j)))
                .collect::<Result<Vec<_>>>()?;
            let rs = RangeSet::new(ranges, at)?;
            if let Some(k) = range_sets.iter().position(|o| o.overlaps(&rs)) {
                return Err(CniError::invalid_config(format!(
                    "{at}: overlaps range set {k}, {} ({})",
                    sets_json[k].0,
                    range_sets[k].describe()
                )));
            }
            range_sets.push(rs);
        }
        let data_dir = match json.data_dir.as_deref().filter(|d| !d.is_empty()) {
            None => PathBuf::from(DEFAULT_DATA_DIR),
            Some(d) => safe_abs_path("ipam.dataDir", d)?,
        };
        let resolv_conf = json
            .resolv_conf
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(|p| safe_abs_path("ipam.resolvConf", p))
            .transpose()?;
        let exclude = json
            .exclude
            .iter()
            .enumerate()
            .map(|(i, s)| {
                parse_ip_or_cidr(s)
                    .map_err(|m| CniError::invalid_config(format!("ipam.exclude[{i}]: {m}")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(IpamConfig {
            network: req.conf.name.clone(),
            range_sets,
            routes: json.routes.iter().map(Route::from).collect(),
            data_dir,
            resolv_conf,
            exclude,
        })
    }

    pub fn is_excluded(&self, ip: IpAddr) -> bool {
        self.exclude
            .iter()
            .any(|n| n.contains(ip) && n.is_ipv4() == ip.is_ipv4())
    }

    /// The network's state directory.
    pub fn network_dir(&self) -> PathBuf {
        self.data_dir.join(&self.network)
    }
}

/// An absolute path without `..` components (config values become paths we write under).
fn safe_abs_path(key: &str, p: &str) -> Result<PathBuf> {
    let path = PathBuf::from(p);
    if !path.is_absolute() {
        return Err(CniError::invalid_config(format!(
            "{key}: {p:?} must be an absolute path"
        )));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(CniError::invalid_config(format!(
            "{key}: {p:?} must not contain '..'"
        )));
    }
    if p.contains('\0') {
        return Err(CniError::invalid_config(format!(
            "{key}: contains a NUL byte"
        )));
    }
    Ok(path)
}

/// `10.0.0.5` (a /32 or /128) or `10.0.0.64/28`.
pub fn parse_ip_or_cidr(s: &str) -> std::result::Result<IpNetwork, String> {
    if s.contains('/') {
        cni_shared::spec::parse_cidr(s)
    } else {
        let ip: IpAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address"))?;
        IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).map_err(|e| e.to_string())
    }
}

/// The addresses the runtime asked for, as the reference gathers them (LoadIPAMConfig): every
/// address of CNI_ARGS `IP=`, then of `args.cni.ips`, then of the capability `ips`
/// (`runtimeConfig.ips`), in that order, each address once. Each may carry a prefix, which is
/// ignored. CNI_ARGS is always read, so a key it does not know needs `IgnoreUnknown` (code 4),
/// as in the reference; unlike the reference's, its `IP` may list several addresses (`a,b`).
pub fn requested_ips(req: &Request) -> Result<Vec<IpAddr>> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut push = |ip: IpAddr| {
        if !out.contains(&ip) {
            out.push(ip);
        }
    };
    let args = req.cni_args()?;
    args.check_known(&[
        "IP",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    ])?;
    if let Some(v) = args.get("IP").filter(|v| !v.is_empty()) {
        for s in v.split(',') {
            let ip = parse_ip_or_cidr(s.trim())
                .map_err(|m| CniError::invalid_env(format!("CNI_ARGS IP: {m}")))?;
            push(ip.ip());
        }
    }
    let lists = [
        (
            "args.cni.ips",
            req.conf.args_cni_field::<Vec<String>>("ips")?,
        ),
        (
            "runtimeConfig.ips",
            req.conf.runtime_config_field::<Vec<String>>("ips")?,
        ),
    ];
    for (key, list) in lists {
        for (i, s) in list.unwrap_or_default().iter().enumerate() {
            let ip = parse_ip_or_cidr(s.trim())
                .map_err(|m| CniError::invalid_config(format!("{key}[{i}]: {m}")))?;
            push(ip.ip());
        }
    }
    Ok(out)
}

/// serde for an optional CIDR string.
mod opt_cidr {
    use super::*;
    use serde::Deserializer;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<IpNetwork>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => cni_shared::spec::parse_cidr(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!(
                "expected a CIDR string, got {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::skel::Command;
    use serde_json::json;

    fn req(conf: Value, args: &str) -> Request {
        cni_shared::testkit::request(Command::Add, &conf, args)
    }

    fn conf(ipam: Value, top: Value) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge", "ipam": ipam});
        for (k, v) in top.as_object().unwrap() {
            c[k] = v.clone();
        }
        c["ipam"]["type"] = json!("host-local");
        c
    }

    fn subnets(cfg: &IpamConfig) -> Vec<String> {
        cfg.range_sets
            .iter()
            .map(|s| s.ranges[0].subnet.to_string())
            .collect()
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ip_ranges_go_in_front_of_the_legacy_range_and_ranges() {
        // The reference: legacy in front of `ranges`, then `ipRanges` in front of both.
        let c = conf(
            json!({"subnet": "10.1.0.0/24", "ranges": [[{"subnet": "10.2.0.0/24"}]]}),
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}],
                                                  [{"subnet": "fd03::/64"}]]}}),
        );
        let cfg = IpamConfig::from_request(&req(c, "")).unwrap();
        assert_eq!(
            subnets(&cfg),
            ["10.3.0.0/24", "fd03::/64", "10.1.0.0/24", "10.2.0.0/24"]
        );
        // An empty capability changes nothing.
        let c = conf(
            json!({"ranges": [[{"subnet": "10.2.0.0/24"}]]}),
            json!({"runtimeConfig": {"ipRanges": []}}),
        );
        assert_eq!(
            subnets(&IpamConfig::from_request(&req(c, "")).unwrap()),
            ["10.2.0.0/24"]
        );
        // The capability alone is enough.
        let c = conf(
            json!({}),
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24"}]]}}),
        );
        assert_eq!(
            subnets(&IpamConfig::from_request(&req(c, "")).unwrap()),
            ["10.3.0.0/24"]
        );
    }

    #[test]
    fn range_errors_name_where_the_set_came_from() {
        let c = conf(
            json!({"ranges": [[{"subnet": "10.2.0.0/24"}]]}),
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.2.0.128/25"}]]}}),
        );
        let e = IpamConfig::from_request(&req(c, "")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(
            e.msg
                .starts_with("ipam.ranges[0]: overlaps range set 0, runtimeConfig.ipRanges[0]"),
            "{}",
            e.msg
        );
        let c = conf(
            json!({"ranges": [[{"subnet": "10.2.0.0/24"}]]}),
            json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.3.0.0/24",
                                                    "rangeStart": "10.4.0.1"}]]}}),
        );
        let e = IpamConfig::from_request(&req(c, "")).unwrap_err();
        assert!(
            e.msg
                .starts_with("runtimeConfig.ipRanges[0][0].rangeStart: 10.4.0.1"),
            "{}",
            e.msg
        );
        let c = conf(
            json!({"subnet": "10.5.0.0/24", "rangeEnd": "10.6.0.1"}),
            json!({}),
        );
        let e = IpamConfig::from_request(&req(c, "")).unwrap_err();
        assert!(e.msg.starts_with("ipam.rangeEnd: 10.6.0.1"), "{}", e.msg);
    }

    #[test]
    fn requested_addresses_are_the_union_of_every_source_in_the_reference_order() {
        let ipam = json!({"ranges": [[{"subnet": "10.2.0.0/24"}]]});
        let all = conf(
            ipam.clone(),
            json!({"args": {"cni": {"ips": ["10.2.0.8", "fd00::8/64"]}},
                   "runtimeConfig": {"ips": ["10.2.0.9/24", "10.2.0.7"]}}),
        );
        // CNI_ARGS first, then args.cni.ips, then runtimeConfig.ips; 10.2.0.7 only once.
        assert_eq!(
            requested_ips(&req(all.clone(), "IgnoreUnknown=1;IP=10.2.0.7,10.2.0.6")).unwrap(),
            ips(&["10.2.0.7", "10.2.0.6", "10.2.0.8", "fd00::8", "10.2.0.9"])
        );
        assert_eq!(
            requested_ips(&req(all.clone(), "")).unwrap(),
            ips(&["10.2.0.8", "fd00::8", "10.2.0.9", "10.2.0.7"])
        );
        assert_eq!(
            requested_ips(&req(conf(ipam.clone(), json!({})), "")).unwrap(),
            ips(&[])
        );
        // CNI_ARGS is read whatever else is given: unknown keys need IgnoreUnknown, and a bad
        // IP is code 4; a bad entry of a list is code 7 naming it.
        assert_eq!(
            requested_ips(&req(all.clone(), "FOO=1")).unwrap_err().code,
            4
        );
        assert_eq!(requested_ips(&req(all, "IP=nope")).unwrap_err().code, 4);
        let bad = conf(ipam, json!({"runtimeConfig": {"ips": ["10.2.0.9", "x"]}}));
        let e = requested_ips(&req(bad, "")).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("runtimeConfig.ips[1]"), "{}", e.msg);
    }
}
