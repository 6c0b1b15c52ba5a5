//! The vxlan plugin's keys, their defaults and validation (code 7 naming the key). The defaults
//! that depend on the host (`underlay`, `local`, `mtu`) are resolved in `vxlan.rs`.

use std::collections::HashSet;
use std::net::IpAddr;

use cni_shared::bridged::{self, AttachConfig, AttachKeys};
use cni_shared::mac::Mac;
use cni_shared::netlink::Family;
use cni_shared::skel::Request;
use cni_shared::validate;
use cni_shared::{CniError, Result};
use serde::Deserialize;

/// The IANA VXLAN port (the kernel's own default, 8472, is Linux's pre-standard one).
pub const DEFAULT_PORT: u16 = 4789;
/// VNIs are 24 bits.
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The plugin's own keys as written (the common keys are decoded by the skel).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VxlanConf {
    pub vni: Option<i64>,
    pub port: Option<i64>,
    pub underlay: Option<String>,
    pub local: Option<String>,
    pub peers: Option<Vec<String>>,
    pub group: Option<String>,
    pub learning: Option<bool>,
    /// bridge, mtu, isGateway, isDefaultGateway, forceAddress, ipMasq, ipMasqBackend,
    /// enabledad, macspoofchk, disableIPv6LinkLocal: as in the bridge plugin.
    /// (Decoded on its own from the same JSON by [`decode`], so errors keep the key's name.)
    #[serde(skip)]
    pub attach: AttachKeys,
}

/// Where broadcast, unknown-unicast and multicast frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flood {
    /// Head-end replication to a static list of remote VTEPs (all-zero FDB entries).
    Peers(Vec<IpAddr>),
    /// A multicast group on the underlay.
    Group(IpAddr),
}

/// The configuration after validation; host-dependent defaults still open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub vni: u32,
    pub port: u16,
    /// `None`: the interface of the host's default route.
    pub underlay: Option<String>,
    /// `None`: the underlay's first address of the underlay family.
    pub local: Option<IpAddr>,
    pub flood: Flood,
    pub learning: bool,
    /// As configured; `None`: the underlay's MTU minus the VXLAN overhead.
    pub mtu: Option<u32>,
    /// The container side; `attach.mtu` is set once the MTU is resolved.
    pub attach: AttachConfig,
}

impl Config {
    /// The VXLAN device: `vxlan<vni>`.
    pub fn device(&self) -> String {
        format!("vxlan{}", self.vni)
    }

    /// The underlay family that `local`, `peers` or `group` imply, when any of them says.
    pub fn family(&self) -> Option<Family> {
        let from_flood = match &self.flood {
            Flood::Peers(p) => p.first().copied(),
            Flood::Group(g) => Some(*g),
        };
        self.local.or(from_flood).map(|ip| Family::of(&ip))
    }

    /// The remote VTEPs (empty in group mode).
    pub fn peers(&self) -> &[IpAddr] {
        match &self.flood {
            Flood::Peers(p) => p,
            Flood::Group(_) => &[],
        }
    }
}

fn bad(msg: String) -> CniError {
    CniError::invalid_config(msg)
}

fn family_name(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn parse_ip(key: &str, s: &str) -> Result<IpAddr> {
    s.parse()
        .map_err(|_| bad(format!("{key}: {s:?} is not an IP address")))
}

fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// A unicast address usable as a VTEP (`local`, `peers[i]`).
fn vtep(key: &str, s: &str) -> Result<IpAddr> {
    let ip = parse_ip(key, s)?;
    let why = if ip.is_unspecified() {
        "is unspecified"
    } else if ip.is_multicast() || ip == IpAddr::from([255, 255, 255, 255]) {
        "is not a unicast address (a multicast group goes in \"group\")"
    } else if ip.is_loopback() {
        "is a loopback address"
    } else if is_link_local(&ip) {
        "is link-local; use a global or unique-local address"
    } else {
        return Ok(ip);
    };
    Err(bad(format!("{key}: {ip} {why}")))
}

fn same_family(key: &str, ip: IpAddr, other_key: &str, other: IpAddr) -> Result<()> {
    if ip.is_ipv4() == other.is_ipv4() {
        return Ok(());
    }
    Err(bad(format!(
        "{key}: {ip} is {} but {other_key} {other} is {}; the underlay has one family",
        family_name(&ip),
        family_name(&other)
    )))
}

fn flood(c: &VxlanConf, local: Option<IpAddr>) -> Result<Flood> {
    match (&c.peers, &c.group) {
        (Some(_), Some(_)) => Err(bad(
            "peers and group are alternatives: give a static peer list or a multicast group, \
             not both"
                .to_string(),
        )),
        (None, None) => Err(bad(
            "peers: required (the remote hosts' VTEP addresses) unless group is set".to_string(),
        )),
        (None, Some(g)) => {
            let ip = parse_ip("group", g)?;
            if !ip.is_multicast() {
                return Err(bad(format!("group: {ip} is not a multicast address")));
            }
            if let Some(l) = local {
                same_family("group", ip, "local", l)?;
            }
            Ok(Flood::Group(ip))
        }
        (Some(list), None) => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(list.len());
            for (i, s) in list.iter().enumerate() {
                let key = format!("peers[{i}]");
                let ip = vtep(&key, s)?;
                if !seen.insert(ip) {
                    return Err(bad(format!("{key}: {ip} is listed twice")));
                }
                match (local, out.first()) {
                    (Some(l), _) => same_family(&key, ip, "local", l)?,
                    (None, Some(&p0)) => same_family(&key, ip, "peers[0]", p0)?,
                    (None, None) => {}
                }
                out.push(ip);
            }
            Ok(Flood::Peers(out))
        }
    }
}

/// The plugin's keys and the shared bridged keys, from the configuration JSON.
pub fn decode(raw: &serde_json::Value) -> Result<VxlanConf> {
    let mut c: VxlanConf = cni_shared::spec::decode_config(raw)?;
    c.attach = cni_shared::spec::decode_config(raw)?;
    Ok(c)
}

/// Decode, default and validate the request's configuration.
pub fn load(req: &Request) -> Result<Config> {
    let c = decode(&req.raw)?;
    from_conf(c, bridged::container_mac(req)?)
}

/// Validation proper (no request needed: unit-tested).
pub fn from_conf(c: VxlanConf, mac: Option<Mac>) -> Result<Config> {
    let vni = match c.vni {
        None => {
            return Err(bad(format!(
                "vni: required (the VXLAN network identifier, 1 to {MAX_VNI})"
            )))
        }
        Some(v) => u32::try_from(v)
            .ok()
            .filter(|v| (1..=MAX_VNI).contains(v))
            .ok_or_else(|| bad(format!("vni: {v} is out of range (1 to {MAX_VNI})")))?,
    };
    let port = match c.port {
        None | Some(0) => DEFAULT_PORT,
        Some(p) => {
            u16::try_from(p).map_err(|_| bad(format!("port: {p} is out of range (1 to 65535)")))?
        }
    };
    if let Some(u) = &c.underlay {
        validate::link_name("underlay", u)?;
    }
    let local = c.local.as_deref().map(|s| vtep("local", s)).transpose()?;
    let flood = flood(&c, local)?;
    let attach = c.attach.attach_config(&format!("vxbr{vni}"), mac)?;
    let mtu = attach.mtu;
    Ok(Config {
        vni,
        port,
        underlay: c.underlay,
        local,
        flood,
        learning: c.learning.unwrap_or(true),
        mtu,
        attach,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::firewall::Backend;
    use serde_json::json;

    fn conf(v: serde_json::Value) -> Result<Config> {
        let c = decode(&v)?;
        from_conf(c, None)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults() {
        let c = conf(json!({"vni": 42, "peers": ["192.0.2.2"], "group": null})).unwrap();
        assert_eq!(
            (c.vni, c.port, c.device()),
            (42, 4789, "vxlan42".to_string())
        );
        assert_eq!(c.attach.bridge, "vxbr42");
        assert_eq!(c.flood, Flood::Peers(vec![ip("192.0.2.2")]));
        assert!(c.learning && c.underlay.is_none() && c.local.is_none() && c.mtu.is_none());
        assert!(!c.attach.is_gateway && !c.attach.ip_masq);
        assert_eq!(c.family(), Some(Family::V4));
        let c = conf(json!({"vni": 7, "peers": []})).unwrap();
        assert_eq!(
            c.family(),
            None,
            "no peer yet: the family comes from the host"
        );
    }

    #[test]
    fn every_key() {
        let c = conf(json!({
            "vni": 16777215, "port": 8472, "underlay": "ul0", "local": "2001:db8::1",
            "peers": ["2001:db8::2", "fd00::3"], "learning": false, "bridge": "ovl",
            "mtu": 1400, "isDefaultGateway": true, "forceAddress": true, "ipMasq": true,
            "ipMasqBackend": "iptables", "enabledad": true, "macspoofchk": true,
            "disableIPv6LinkLocal": true}))
        .unwrap();
        assert_eq!((c.vni, c.port), (MAX_VNI, 8472));
        assert_eq!(c.device(), "vxlan16777215");
        assert_eq!(c.underlay.as_deref(), Some("ul0"));
        assert_eq!(c.local, Some(ip("2001:db8::1")));
        assert_eq!(c.peers(), &[ip("2001:db8::2"), ip("fd00::3")]);
        assert_eq!(c.family(), Some(Family::V6));
        assert!(!c.learning);
        assert_eq!((c.mtu, c.attach.bridge.as_str()), (Some(1400), "ovl"));
        let a = &c.attach;
        assert!(a.is_gateway && a.is_default_gateway && a.force_address && a.ip_masq);
        assert!(a.enable_dad && a.macspoofchk && a.no_ipv6_link_local);
        assert_eq!(a.masq_backend, Backend::Iptables);
        let g = conf(json!({"vni": 1, "group": "239.1.1.1"})).unwrap();
        assert_eq!(g.flood, Flood::Group(ip("239.1.1.1")));
        assert!(g.peers().is_empty());
    }

    #[test]
    fn bad_input_names_the_key() {
        let p = json!(["192.0.2.2"]);
        let cases = [
            (json!({"peers": p}), "vni"),
            (json!({"vni": 0, "peers": p}), "vni"),
            (json!({"vni": 16777216, "peers": p}), "vni"),
            (json!({"vni": -1, "peers": p}), "vni"),
            (json!({"vni": "42", "peers": p}), "vni"),
            (json!({"vni": 1, "peers": p, "port": 65536}), "port"),
            (json!({"vni": 1}), "peers"),
            (
                json!({"vni": 1, "peers": p, "group": "239.1.1.1"}),
                "peers and group",
            ),
            (json!({"vni": 1, "peers": ["192.0.2.300"]}), "peers[0]"),
            (
                json!({"vni": 1, "peers": ["192.0.2.2", "192.0.2.2"]}),
                "peers[1]",
            ),
            (
                json!({"vni": 1, "peers": ["192.0.2.2", "2001:db8::2"]}),
                "peers[1]",
            ),
            (json!({"vni": 1, "peers": ["239.1.1.1"]}), "peers[0]"),
            (json!({"vni": 1, "peers": ["fe80::1"]}), "peers[0]"),
            (json!({"vni": 1, "peers": "192.0.2.2"}), "peers"),
            (
                json!({"vni": 1, "peers": p, "local": "2001:db8::1"}),
                "peers[0]",
            ),
            (json!({"vni": 1, "peers": p, "local": "0.0.0.0"}), "local"),
            (json!({"vni": 1, "group": "192.0.2.9"}), "group"),
            (
                json!({"vni": 1, "group": "ff05::1", "local": "192.0.2.1"}),
                "group",
            ),
            (
                json!({"vni": 1, "peers": p, "underlay": "a-name-far-too-long"}),
                "underlay",
            ),
            (json!({"vni": 1, "peers": p, "bridge": "a/b"}), "bridge"),
            (json!({"vni": 1, "peers": p, "mtu": 67}), "mtu"),
            (json!({"vni": 1, "peers": p, "learning": "no"}), "learning"),
            (
                json!({"vni": 1, "peers": p, "ipMasqBackend": "pf"}),
                "ipMasqBackend",
            ),
            (json!({"vni": 1, "peers": p, "isGateway": 1}), "isGateway"),
        ];
        for (v, key) in cases {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code, 7, "{v}: {}", e.msg);
            assert!(e.msg.starts_with(key), "{v}: {}", e.msg);
        }
    }
}
