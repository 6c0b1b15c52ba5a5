//! The macvlan configuration: its keys, their defaults and the checks that need no kernel.
//! (The master's existence and MTU are checked against the kernel in `master.rs`.)

use std::path::PathBuf;

use cni_shared::container::IfaceOpts;
use cni_shared::mac::Mac;
use cni_shared::netlink::MacvlanMode;
use cni_shared::skel::Request;
use cni_shared::spec::Dns;
use cni_shared::{validate, CniError, Result};
use serde::Deserialize;

/// Where the users of the vlan sub-interfaces we created are recorded (key `dataDir`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/macvlan";

/// The smallest MTU the kernel gives a macvlan (ETH_MIN_MTU).
pub const MIN_MTU: u32 = 68;

/// CNI_ARGS keys accepted without IgnoreUnknown: ours and the IPAM's (host-local `IP`) and the
/// ones Kubernetes runtimes always send.
const KNOWN_ARGS: &[&str] = &[
    "MAC",
    "IP",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

/// The plugin's own keys, as written.
#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    mac: Option<String>,
    #[serde(rename = "linkInContainer", default)]
    link_in_container: bool,
    #[serde(default)]
    bcqueuelen: Option<u32>,
    #[serde(default)]
    vlan: Option<u32>,
    #[serde(rename = "dataDir", default)]
    data_dir: Option<PathBuf>,
    #[serde(rename = "disableIPv6LinkLocal", default)]
    no_ipv6_link_local: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Conf {
    /// `None`: the interface of the default route (host, or container with `linkInContainer`).
    pub master: Option<String>,
    pub mode: MacvlanMode,
    /// `None` (absent or 0): the kernel's choice, which is the master's MTU.
    pub mtu: Option<u32>,
    /// The config key `mac`; see [`requested_mac`] for the runtime's overrides.
    pub mac: Option<Mac>,
    pub link_in_container: bool,
    /// `None` (absent or 0): the driver default (1000).
    pub bc_queue_len: Option<u32>,
    /// Put the macvlan on the 802.1q sub-interface `<master>.<vlan>`.
    pub vlan: Option<u16>,
    pub data_dir: PathBuf,
    /// No IPv6 link-local address on the container interface when IPAM gives it no IPv6 address.
    pub no_ipv6_link_local: bool,
    /// The IPAM plugin type; `None` gives an interface without addresses.
    pub ipam: Option<String>,
    /// The `dns` key, which replaces the IPAM's when present.
    pub dns: Option<Dns>,
}

/// What DEL and GC need. Only the types of the keys are checked, so a configuration that
/// never worked (a bad `mode`, a master gone) can still be torn down.
#[derive(Debug, Clone)]
pub struct Teardown {
    pub link_in_container: bool,
    pub data_dir: PathBuf,
    pub ipam: Option<String>,
}

impl Teardown {
    pub fn load(req: &Request) -> Result<Teardown> {
        let raw: Raw = req.config()?;
        Ok(Teardown {
            link_in_container: raw.link_in_container,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            ipam: req.conf.ipam_type().map(str::to_owned),
        })
    }
}

impl Conf {
    /// How ADD configures the container interface, and what CHECK verifies of it: no DAD, a
    /// gratuitous ARP/NA when it comes up (its MAC is new for a possibly reused address).
    pub fn iface_opts(&self) -> IfaceOpts {
        IfaceOpts {
            enable_dad: false,
            notify_neighbours: true,
            no_ipv6_link_local: self.no_ipv6_link_local,
        }
    }

    pub fn load(req: &Request) -> Result<Conf> {
        let raw: Raw = req.config()?;
        let master = raw.master.filter(|m| !m.is_empty());
        if let Some(m) = &master {
            validate::link_name("master", m)?;
        }
        let mode = match raw.mode.as_deref() {
            None | Some("") => MacvlanMode::Bridge,
            Some("source") => {
                return Err(CniError::invalid_config(
                    "mode: \"source\" is not supported (expected bridge, private, vepa or \
                     passthru)",
                ))
            }
            Some(m) => MacvlanMode::parse("mode", m)?,
        };
        let mtu = raw.mtu.filter(|m| *m != 0);
        if let Some(m) = mtu {
            if m < MIN_MTU {
                return Err(CniError::invalid_config(format!(
                    "mtu: {m} is below the minimum MTU of a macvlan ({MIN_MTU})"
                )));
            }
        }
        let mac = raw
            .mac
            .as_deref()
            .map(|m| parse_mac("mac", m))
            .transpose()?;
        let vlan = match raw.vlan {
            None => None,
            Some(v @ 1..=4094) => Some(v as u16),
            Some(v) => {
                return Err(CniError::invalid_config(format!(
                    "vlan: {v} is not a VLAN ID (1 to 4094)"
                )))
            }
        };
        if let (Some(v), Some(m)) = (vlan, &master) {
            vlan_link_name(m, v)?;
        }
        let ipam = req.conf.ipam_type().map(str::to_owned);
        Ok(Conf {
            master,
            mode,
            mtu,
            mac,
            link_in_container: raw.link_in_container,
            bc_queue_len: raw.bcqueuelen.filter(|n| *n != 0),
            vlan,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            no_ipv6_link_local: raw.no_ipv6_link_local,
            ipam,
            dns: req.conf.dns.clone().filter(|d| !d.is_empty()),
        })
    }
}

/// The name of the 802.1q sub-interface of `master` for `vlan` (code 7 when it does not fit
/// the kernel's 15 bytes).
pub fn vlan_link_name(master: &str, vlan: u16) -> Result<String> {
    let name = format!("{master}.{vlan}");
    if name.len() > 15 {
        return Err(CniError::invalid_config(format!(
            "vlan: the sub-interface name {name:?} is longer than the kernel's 15 bytes \
             (shorten master)"
        )));
    }
    Ok(name)
}

/// A MAC for a macvlan: a unicast address other than all zeroes (code 7 naming `key`).
fn parse_mac(key: &str, value: &str) -> Result<Mac> {
    let m = Mac::parse(key, value)?;
    if m.is_zero() || m.is_multicast() {
        return Err(CniError::invalid_config(format!(
            "{key}: {value:?} is not a unicast MAC address"
        )));
    }
    Ok(m)
}

/// The MAC to give the interface, by precedence: `runtimeConfig.mac`, CNI_ARGS `MAC=`, the
/// config key `mac`. Refused in passthru mode, where the kernel gives the interface the
/// master's own address (and changing it would change the master's).
pub fn requested_mac(req: &Request, conf: &Conf) -> Result<Option<Mac>> {
    let args = req.cni_args()?;
    args.check_known(KNOWN_ARGS)?;
    let runtime = req
        .conf
        .runtime_config_field::<String>("mac")?
        .filter(|m| !m.is_empty());
    let (key, mac) = if let Some(m) = runtime {
        (
            "runtimeConfig.mac",
            Some(parse_mac("runtimeConfig.mac", &m)?),
        )
    } else if let Some(m) = args.get("MAC").filter(|m| !m.is_empty()) {
        let m = parse_mac("CNI_ARGS MAC", m).map_err(|e| CniError::invalid_env(e.msg))?;
        ("CNI_ARGS MAC", Some(m))
    } else {
        ("mac", conf.mac)
    };
    if mac.is_some() && conf.mode == MacvlanMode::Passthru {
        return Err(CniError::invalid_config(format!(
            "{key}: passthru mode gives the interface the master's own MAC address; a MAC \
             cannot be chosen (use another mode, or set the master's address)"
        )));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni_shared::skel::Command;
    use serde_json::{json, Value};

    fn req(conf: Value, args: &str) -> Request {
        cni_shared::testkit::request(Command::Add, &conf, args)
    }

    fn conf(extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.1.0", "name": "mv", "type": "macvlan"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    }

    fn err(extra: Value) -> CniError {
        Conf::load(&req(conf(extra), "")).unwrap_err()
    }

    #[test]
    fn defaults() {
        let c = Conf::load(&req(conf(json!({"mtu": 0, "master": ""})), "")).unwrap();
        assert_eq!(c.master, None);
        assert_eq!(c.mode, MacvlanMode::Bridge);
        assert_eq!(
            c.mtu, None,
            "0 means the kernel's choice, as in the reference"
        );
        assert_eq!(c.bc_queue_len, None);
        assert_eq!(c.vlan, None);
        assert_eq!(c.ipam, None);
        assert!(!c.link_in_container);
        assert!(
            !c.no_ipv6_link_local,
            "the reference keeps the link-local address"
        );
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let c = Conf::load(&req(conf(json!({"disableIPv6LinkLocal": true})), "")).unwrap();
        assert!(c.no_ipv6_link_local);
    }

    #[test]
    fn teardown_needs_only_types() {
        let r = req(
            conf(json!({"mode": "loud", "mtu": 5, "ipam": {"type": "host-local"}})),
            "",
        );
        let t = Teardown::load(&r).unwrap();
        assert_eq!(t.ipam.as_deref(), Some("host-local"));
        let r = req(conf(json!({"linkInContainer": "yes"})), "");
        assert_eq!(Teardown::load(&r).unwrap_err().code, 7);
    }

    #[test]
    fn bad_values_are_code_7_naming_the_key() {
        for (extra, key) in [
            (json!({"mode": "loud"}), "mode"),
            (json!({"mode": "source"}), "mode"),
            (json!({"mtu": 40}), "mtu"),
            (json!({"mtu": -1}), "mtu"),
            (json!({"mac": "zz"}), "mac"),
            (json!({"mac": "01:00:5e:00:00:01"}), "mac"),
            (json!({"master": "a/b"}), "master"),
            (json!({"vlan": 0}), "vlan"),
            (json!({"vlan": 4095}), "vlan"),
            (json!({"master": "enp0s31f6xyz", "vlan": 100}), "vlan"),
            (json!({"bcqueuelen": "x"}), "bcqueuelen"),
            (
                json!({"disableIPv6LinkLocal": "yes"}),
                "disableIPv6LinkLocal",
            ),
        ] {
            let e = err(extra.clone());
            assert_eq!(e.code, 7, "{extra}: {}", e.msg);
            assert!(e.msg.starts_with(key), "{extra}: {}", e.msg);
        }
    }

    #[test]
    fn mac_precedence_runtime_then_args_then_config() {
        let c = conf(json!({"mac": "02:00:00:00:00:01",
                            "runtimeConfig": {"mac": "02:00:00:00:00:03"}}));
        let r = req(c, "MAC=02:00:00:00:00:02");
        let m = requested_mac(&r, &Conf::load(&r).unwrap()).unwrap();
        assert_eq!(m.unwrap().to_string(), "02:00:00:00:00:03");

        let r = req(
            conf(json!({"mac": "02:00:00:00:00:01"})),
            "IgnoreUnknown=1;MAC=02:00:00:00:00:02;FOO=1",
        );
        let m = requested_mac(&r, &Conf::load(&r).unwrap()).unwrap();
        assert_eq!(m.unwrap().to_string(), "02:00:00:00:00:02");

        let r = req(conf(json!({"mac": "02:00:00:00:00:01"})), "IP=10.0.0.2");
        let m = requested_mac(&r, &Conf::load(&r).unwrap()).unwrap();
        assert_eq!(m.unwrap().to_string(), "02:00:00:00:00:01");

        let r = req(conf(json!({})), "MAC=nope");
        let e = requested_mac(&r, &Conf::load(&r).unwrap()).unwrap_err();
        assert_eq!(e.code, 4, "{}", e.msg);
        assert!(e.msg.contains("CNI_ARGS MAC"), "{}", e.msg);

        let r = req(conf(json!({})), "FOO=1");
        assert_eq!(
            requested_mac(&r, &Conf::load(&r).unwrap())
                .unwrap_err()
                .code,
            4
        );
    }

    #[test]
    fn passthru_refuses_a_mac() {
        let r = req(conf(json!({"mode": "passthru"})), "MAC=02:00:00:00:00:02");
        let e = requested_mac(&r, &Conf::load(&r).unwrap()).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.msg.starts_with("CNI_ARGS MAC: passthru"), "{}", e.msg);
        let r = req(conf(json!({"mode": "passthru"})), "");
        assert_eq!(requested_mac(&r, &Conf::load(&r).unwrap()).unwrap(), None);
    }

    #[test]
    fn vlan_names() {
        assert_eq!(vlan_link_name("eth0", 10).unwrap(), "eth0.10");
        assert_eq!(vlan_link_name("enp0s31f6", 4094).unwrap(), "enp0s31f6.4094");
        assert_eq!(
            vlan_link_name("enp0s31f6x", 4094).unwrap(),
            "enp0s31f6x.4094"
        );
        assert_eq!(vlan_link_name("enp0s31f6xy", 4094).unwrap_err().code, 7);
    }
}
