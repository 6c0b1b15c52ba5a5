//! The `vlan` key: the macvlan sits on the 802.1q sub-interface `<master>.<vlan>`, created when
//! absent (like Docker's `parent: eth0.10`) and removed again when we created it and the last
//! macvlan on it is gone.
//!
//! "We created it" is written on the link itself: its alias is [`ALIAS`]. "Nobody uses it" is
//! known two ways. With `linkInContainer` the sub-interface and its macvlans share the container
//! namespace, so the kernel's link list says. In the host namespace the macvlans sit in other
//! namespaces, invisible from here, so `records` keeps the users.

use std::path::Path;

use cni_shared::netlink::{Link, Netlink, VlanOpts};
use cni_shared::spec::GcAttachment;
use cni_shared::{code, CniError, Result};

use crate::config::{vlan_link_name, Conf};
use crate::records::{Record, Store, User};

/// The alias that marks a sub-interface as created by this plugin.
pub const ALIAS: &str = "cni-macvlan";

/// The sub-interface `<master>.<id>`, created (up, alias [`ALIAS`]) when missing. An existing
/// link of that name must be vlan `id` on the master (code 7 otherwise).
fn ensure(nl: &Netlink, master: &Link, id: u16) -> Result<Link> {
    let name = vlan_link_name(&master.name, id)?;
    let existing = match nl.link(name.as_str())? {
        Some(l) => l,
        None => match nl.create_vlan(
            &name,
            &VlanOpts {
                parent: master.index,
                id,
                mtu: None,
                up: true,
            },
        ) {
            Ok(l) => {
                if let Err(e) = nl.set_alias(l.index, ALIAS) {
                    let _ = nl.delete_link(l.index);
                    return Err(e);
                }
                tracing::info!(link = %name, "created the vlan sub-interface");
                return Ok(l);
            }
            Err(e) if e.code == code::NOT_AVAILABLE => {
                return Err(CniError::invalid_config(format!("vlan: {}", e.msg)))
            }
            // Lost a race with another ADD: use theirs if it is right.
            Err(e) => nl.link(name.as_str())?.ok_or(e)?,
        },
    };
    if !existing.is_kind("vlan")
        || existing.vlan_id != Some(id)
        || existing.parent != Some(master.index)
    {
        return Err(CniError::invalid_config(format!(
            "vlan: link {name} exists but is not vlan {id} on {} (kind {}, id {:?})",
            master.name,
            existing.kind.as_deref().unwrap_or("none"),
            existing.vlan_id
        )));
    }
    if !existing.up {
        nl.set_up(existing.index)?;
    }
    Ok(existing)
}

/// Delete link `index` when it is a vlan we created (`name`, alias [`ALIAS`]) and no link of
/// its namespace sits on it. Whether it was deleted.
fn delete_if_unused(nl: &Netlink, name: &str, index: u32) -> Result<bool> {
    let Some(l) = nl.link(index)? else {
        return Ok(false);
    };
    if l.name != name || !l.is_kind("vlan") || l.alias.as_deref() != Some(ALIAS) {
        return Ok(false);
    }
    let used = nl
        .links()?
        .iter()
        .any(|u| u.index != index && u.parent == Some(index) && u.link_netnsid.is_none());
    if used {
        return Ok(false);
    }
    let deleted = nl.delete_link(index)?;
    if deleted {
        tracing::info!(link = %name, "deleted the vlan sub-interface: no macvlan uses it");
    }
    Ok(deleted)
}

/// ADD: the sub-interface to put the macvlan on, with `user` recorded as one of its users.
/// `nl` is a socket in the master's namespace.
pub fn acquire(nl: &Netlink, conf: &Conf, master: &Link, id: u16, user: &User) -> Result<Link> {
    if conf.link_in_container {
        return ensure(nl, master, id);
    }
    let store = Store::open(&conf.data_dir)?;
    let link = ensure(nl, master, id)?;
    let mut rec = match store.load(&link.name)? {
        Some(r) if r.ifindex == link.index => r,
        _ => Record {
            ifindex: link.index,
            users: Vec::new(),
        },
    };
    rec.add(user);
    store.save(&link.name, &rec)?;
    Ok(link)
}

/// DEL (host namespace): forget `user` in every record that names it, and delete the
/// sub-interfaces left without users.
pub fn release_host(nl: &Netlink, data_dir: &Path, user: &User) -> Result<()> {
    let Some(store) = Store::open_existing(data_dir)? else {
        return Ok(());
    };
    for name in store.links()? {
        let mut rec = match store.load(&name) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("skipping vlan record of {name}: {e}");
                continue;
            }
        };
        if rec.remove(user) {
            settle(nl, &store, &name, &rec)?;
        }
    }
    Ok(())
}

/// GC (host namespace): drop the users of network `network` that are not in `valid`, and
/// delete the sub-interfaces left without users.
pub fn gc_host(nl: &Netlink, data_dir: &Path, network: &str, valid: &[GcAttachment]) -> Result<()> {
    let Some(store) = Store::open_existing(data_dir)? else {
        return Ok(());
    };
    for name in store.links()? {
        let mut rec = match store.load(&name) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("skipping vlan record of {name}: {e}");
                continue;
            }
        };
        let before = rec.users.len();
        rec.users.retain(|u| {
            u.network != network
                || valid
                    .iter()
                    .any(|v| v.container_id == u.container_id && v.ifname == u.ifname)
        });
        if rec.users.len() != before {
            tracing::info!(link = %name, released = before - rec.users.len(), "GC");
            settle(nl, &store, &name, &rec)?;
        }
    }
    Ok(())
}

/// Save a changed record, or, without users, delete its link (when ours) and the record.
fn settle(nl: &Netlink, store: &Store, name: &str, rec: &Record) -> Result<()> {
    if !rec.users.is_empty() {
        return store.save(name, rec);
    }
    delete_if_unused(nl, name, rec.ifindex)?;
    store.remove(name)
}

/// DEL or rollback (master in the container): delete the macvlan's former parent `index` when
/// it is a sub-interface we created that nothing uses any more.
pub fn release_in_ns(nl: &Netlink, index: u32) -> Result<()> {
    let Some(l) = nl.link(index)? else {
        return Ok(());
    };
    delete_if_unused(nl, &l.name, index).map(drop)
}
