//! The master (parent) interface: named or taken from the default route, in the host namespace
//! or, with `linkInContainer`, in the container's; and the MTU rule against it.

use cni_shared::netlink::{Family, Link, Netlink};
use cni_shared::{CniError, Result};

use crate::config::Conf;

/// Which namespace the master lives in, for messages.
pub fn place(conf: &Conf) -> &'static str {
    if conf.link_in_container {
        "container"
    } else {
        "host"
    }
}

/// Find the master through `nl` (a socket in the namespace it lives in). Missing is code 7
/// naming it; so is a missing default route when `master` is not set.
pub fn resolve(nl: &Netlink, conf: &Conf) -> Result<Link> {
    let place = place(conf);
    let name = match &conf.master {
        Some(n) => n.clone(),
        None => {
            let index = match nl.default_route_link(Family::V4)? {
                Some(i) => Some(i),
                None => nl.default_route_link(Family::V6)?,
            };
            let index = index.ok_or_else(|| {
                CniError::invalid_config(format!(
                    "master: not set, and the {place} namespace has no default route to take \
                     it from"
                ))
            })?;
            let link = nl.link(index)?.ok_or_else(|| {
                CniError::internal(format!(
                    "master: the default route's interface #{index} vanished"
                ))
            })?;
            tracing::debug!(master = %link.name, "master from the default route");
            return Ok(link);
        }
    };
    nl.link(name.as_str())?.ok_or_else(|| {
        CniError::invalid_config(format!(
            "master: interface {name:?} does not exist in the {place} namespace"
        ))
    })
}

/// `mtu`, when set, must not exceed the master's (code 7 naming both).
pub fn check_mtu(conf: &Conf, master: &Link) -> Result<()> {
    match conf.mtu {
        Some(m) if m > master.mtu => Err(CniError::invalid_config(format!(
            "mtu: {m} is larger than the MTU of master {} ({})",
            master.name, master.mtu
        ))),
        _ => Ok(()),
    }
}
