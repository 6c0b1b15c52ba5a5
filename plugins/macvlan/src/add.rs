//! ADD: a macvlan child of the master, born inside the container namespace under a temporary
//! name, renamed to CNI_IFNAME, given the IPAM's addresses and routes. Every step is undone when
//! a later one fails.

use cni_shared::container::{configure_iface, interface_of};
use cni_shared::invoke;
use cni_shared::netlink::{attachment_temp_name, MacvlanMode, MacvlanOpts, Netlink};
use cni_shared::netns::NetNs;
use cni_shared::rollback::Rollback;
use cni_shared::skel::{Command, Request};
use cni_shared::spec::CniResult;
use cni_shared::{CniError, Result};

use crate::config::{requested_mac, Conf};
use crate::records::User;
use crate::{master, vlan};

/// The attachment, as the vlan records name it.
pub fn user(req: &Request) -> User {
    User {
        network: req.conf.name.clone(),
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
    }
}

pub fn add(req: &Request) -> Result<CniResult> {
    let conf = Conf::load(req)?;
    // Read before anything is changed: a bad one fails the ADD with nothing done.
    let prev = req.prev_result()?;
    let mac = requested_mac(req, &conf)?;
    let ns = NetNs::open(req.require_netns()?)?;
    let cnl = Netlink::open_in(&ns)?;
    // The master's namespace: the host's (this process's) or, with linkInContainer, the
    // container's.
    let hnl_own;
    let mnl: &Netlink = if conf.link_in_container {
        &cnl
    } else {
        hnl_own = Netlink::current()?;
        &hnl_own
    };
    let master = master::resolve(mnl, &conf)?;
    master::check_mtu(&conf, &master)?;
    if cnl.link(req.ifname.as_str())?.is_some() {
        return Err(CniError::internal(format!(
            "CNI_IFNAME: the container already has an interface {}",
            req.ifname
        )));
    }

    let mut rb = Rollback::new();
    let parent = match conf.vlan {
        None => master.clone(),
        Some(id) => {
            let me = user(req);
            let link = vlan::acquire(mnl, &conf, &master, id, &me)?;
            let (index, data_dir) = (link.index, conf.data_dir.clone());
            if conf.link_in_container {
                rb.push(format!("release {}", link.name), move || {
                    vlan::release_in_ns(mnl, index)
                });
            } else {
                rb.push(format!("release {}", link.name), move || {
                    vlan::release_host(mnl, &data_dir, &me)
                });
            }
            link
        }
    };

    // A temporary name first: CNI_IFNAME may exist in the master's namespace (the kernel looks
    // the new name up there; the reference works around the same behaviour). The name is the
    // attachment's own, so an earlier ADD killed before its rename left nothing DEL cannot
    // find; such a leftover is replaced here.
    let tmp = attachment_temp_name(&req.container_id, &req.ifname);
    crate::del::delete_temp_link(&cnl, &tmp)?;
    let opts = MacvlanOpts {
        master: parent.index,
        mode: conf.mode,
        mtu: conf.mtu,
        mac,
        bc_queue_len: conf.bc_queue_len,
        up: false,
    };
    let target = (!conf.link_in_container).then_some(&ns);
    mnl.create_macvlan(&tmp, &opts, target).map_err(|e| {
        let e = e.context(format!("master {}", parent.name));
        if conf.mode == MacvlanMode::Passthru {
            CniError::new(
                e.code,
                format!(
                    "{} (passthru mode needs the master to itself: no other macvlan may use it)",
                    e.msg
                ),
            )
        } else {
            e
        }
    })?;
    let link = cnl
        .link(tmp.as_str())?
        .ok_or_else(|| CniError::internal(format!("macvlan {tmp} vanished from the container")))?;
    let index = link.index;
    rb.push(format!("delete macvlan #{index}"), {
        let cnl = &cnl;
        move || cnl.delete_link(index).map(drop)
    });
    if conf.bc_queue_len.is_some() && link.macvlan_bc_queue_len.is_none() {
        return Err(CniError::invalid_config(
            "bcqueuelen: this kernel does not support a macvlan broadcast queue length \
             (IFLA_MACVLAN_BC_QUEUE_LEN, Linux 5.11 and later)",
        ));
    }
    cnl.rename(index, &req.ifname)?;

    let mut result = CniResult::default();
    if let Some(ipam) = &conf.ipam {
        let r = invoke::delegate_add(ipam, req)?;
        rb.push(format!("IPAM DEL ({ipam})"), move || {
            invoke::delegate(ipam, Command::Del, req)
        });
        if r.ips.is_empty() {
            return Err(CniError::internal(format!(
                "ipam: plugin {ipam:?} returned no IP addresses"
            )));
        }
        result.ips = r.ips;
        result.routes = r.routes;
        result.dns = r.dns;
        for ip in &mut result.ips {
            ip.interface = Some(0);
        }
    }
    let link = configure_iface(&ns, &cnl, &req.ifname, &result, 0, conf.iface_opts())?;
    result.interfaces = vec![interface_of(&link, Some(&ns))];
    if let Some(dns) = &conf.dns {
        result.dns = dns.clone();
    }
    rb.commit();
    tracing::info!(master = %parent.name, mode = ?conf.mode, "macvlan attached");
    Ok(result.after(prev))
}
