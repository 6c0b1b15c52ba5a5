//! The portmap plugin's keys, their defaults and validation (code 7 naming the key).

use cni_shared::firewall::hostport::{self, Mapping, Mark, Options, Proto};
use cni_shared::firewall::Backend;
use cni_shared::skel::Request;
use cni_shared::{CniError, Result};
use serde::Deserialize;

/// The default mark bit of the iptables backend (the reference's; Kubernetes uses 14 and 15).
pub const DEFAULT_MARK_BIT: u8 = 13;

/// The plugin's own keys as written (the common keys are decoded by the skel).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapConf {
    pub snat: Option<bool>,
    #[serde(default)]
    pub masq_all: bool,
    pub backend: Option<String>,
    pub mark_masq_bit: Option<i64>,
    pub external_set_mark_chain: Option<String>,
    pub conditions_v4: Option<Vec<String>>,
    pub conditions_v6: Option<Vec<String>>,
}

/// One `runtimeConfig.portMappings` entry as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapEntry {
    pub host_port: i64,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub backend: Backend,
    pub opts: Options,
    /// `None` when the runtime sent no `portMappings` (DEL then searches by tag).
    pub mappings: Option<Vec<Mapping>>,
}

fn bad(msg: String) -> CniError {
    CniError::invalid_config(msg)
}

fn port(key: &str, v: i64) -> Result<u16> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad(format!("{key}: {v} is not a port number (1 to 65535)")))
}

/// Validate the mappings: ports, protocol (default tcp), hostIP, and no key twice.
pub fn mappings(entries: &[PortMapEntry]) -> Result<Vec<Mapping>> {
    let mut out: Vec<Mapping> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let key = |k: &str| format!("runtimeConfig.portMappings[{i}].{k}");
        let proto = if e.protocol.is_empty() {
            Proto::Tcp
        } else {
            Proto::parse(&e.protocol).ok_or_else(|| {
                bad(format!(
                    "{}: unknown protocol {:?} (expected tcp, udp or sctp)",
                    key("protocol"),
                    e.protocol
                ))
            })?
        };
        let host_ip = if e.host_ip.is_empty() {
            None
        } else {
            Some(e.host_ip.parse().map_err(|_| {
                bad(format!(
                    "{}: {:?} is not an IP address",
                    key("hostIP"),
                    e.host_ip
                ))
            })?)
        };
        let m = Mapping {
            host_ip,
            host_port: port(&key("hostPort"), e.host_port)?,
            container_port: port(&key("containerPort"), e.container_port)?,
            proto,
        };
        for v6 in [false, true] {
            let Some(mine) = m.for_family(v6) else {
                continue;
            };
            let twin = out.iter().position(|o| {
                o.for_family(v6).is_some_and(|o| {
                    (o.host_ip, o.host_port, o.proto) == (mine.host_ip, mine.host_port, mine.proto)
                })
            });
            if let Some(j) = twin {
                return Err(bad(format!(
                    "runtimeConfig.portMappings[{i}]: publishes host port {} like \
                     runtimeConfig.portMappings[{j}]",
                    mine.describe_host()
                )));
            }
        }
        out.push(m);
    }
    Ok(out)
}

fn conditions(key: &str, c: Option<Vec<String>>, backend: Backend) -> Result<Vec<String>> {
    let c = c.unwrap_or_default();
    hostport::validate_conditions(key, &c, backend)?;
    Ok(c)
}

/// Decode, default and validate the request's configuration.
pub fn load(req: &Request) -> Result<Config> {
    let c: PortMapConf = req.config()?;
    let entries: Option<Vec<PortMapEntry>> = req.conf.runtime_config_field("portMappings")?;
    from_conf(c, entries)
}

/// For DEL, which must clean up after any ADD, also a refused one: a configuration that does not
/// validate still yields default options and no mappings (DEL then finds the attachment's
/// entries by tag, in both backends whatever the config names).
pub fn load_for_del(req: &Request) -> Config {
    match load(req) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("DEL with an invalid configuration ({e}); removing by tag");
            Config {
                backend: Backend::Auto,
                opts: Options::default(),
                mappings: None,
            }
        }
    }
}

/// Whether the config uses what only the iptables backend understands: a mark key, or a
/// condition written as iptables arguments (an option such as `-s`, or a lone `!`; an nft
/// expression never starts with `-`).
fn iptables_only(c: &PortMapConf) -> bool {
    let ipt_args = |conds: &Option<Vec<String>>| {
        conds.iter().flatten().any(|a| {
            let a = a.trim_start();
            a.starts_with('-') || a == "!"
        })
    };
    c.mark_masq_bit.is_some()
        || c.external_set_mark_chain.is_some()
        || ipt_args(&c.conditions_v4)
        || ipt_args(&c.conditions_v6)
}

/// Validation proper (no request needed: unit-tested).
pub fn from_conf(c: PortMapConf, entries: Option<Vec<PortMapEntry>>) -> Result<Config> {
    let backend = match Backend::parse("backend", c.backend.as_deref())? {
        // Without the key, a config written for the reference plugin's iptables default
        // (marks, or conditions as iptables arguments) keeps iptables.
        Backend::Auto if iptables_only(&c) => Backend::Iptables,
        b => b,
    };
    if backend == Backend::Nftables {
        let mut foreign = Vec::new();
        if c.mark_masq_bit.is_some() {
            foreign.push("markMasqBit");
        }
        if c.external_set_mark_chain.is_some() {
            foreign.push("externalSetMarkChain");
        }
        if !foreign.is_empty() {
            return Err(bad(format!(
                "{}: only used by the iptables backend, but backend is nftables (the nftables \
                 backend masquerades without marks)",
                foreign.join(", ")
            )));
        }
    }
    let mark = match (c.mark_masq_bit, c.external_set_mark_chain) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "markMasqBit, externalSetMarkChain: give one or the other, not both".to_string(),
            ))
        }
        (_, Some(chain)) => {
            let ok = !chain.is_empty()
                && chain.len() <= 28
                && chain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !ok {
                return Err(bad(format!(
                    "externalSetMarkChain: {chain:?} is not an iptables chain name (1 to 28 \
                     letters, digits, '_', '-', '.')"
                )));
            }
            Mark::External(chain)
        }
        (Some(bit), None) => Mark::Bit(
            u8::try_from(bit)
                .ok()
                .filter(|b| *b <= 31)
                .ok_or_else(|| bad(format!("markMasqBit: {bit} is not between 0 and 31")))?,
        ),
        (None, None) => Mark::Bit(DEFAULT_MARK_BIT),
    };
    let opts = Options {
        snat: c.snat.unwrap_or(true),
        masq_all: c.masq_all,
        conditions_v4: conditions("conditionsV4", c.conditions_v4, backend)?,
        conditions_v6: conditions("conditionsV6", c.conditions_v6, backend)?,
        mark,
    };
    let mappings = entries.as_deref().map(mappings).transpose()?;
    Ok(Config {
        backend,
        opts,
        mappings,
    })
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
