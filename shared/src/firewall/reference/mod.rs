//! What the reference plugins (containernetworking/plugins) left for an attachment they added
//! and our DEL now removes: a node switched to our plugins while its containers run. Left
//! behind, portmap's entries keep sending the host port to the old container's address — also
//! after a new container publishes the same port (a DaemonSet's rolling update), as the two NAT
//! hooks run in no fixed order; bridge's masquerade entries name an address IPAM hands out
//! again.
//!
//! The reference has two backends, and an attachment may have been made with either (its
//! default is iptables; nftables from 1.5 on, by config or on hosts without iptables), so DEL
//! and GC look at both: `iptables` (chains per attachment, found by name) and `nftables`
//! (rules per mapping, found by comment). Each costs a netlink request or two when nothing of
//! the reference's is there.

mod iptables;
mod nftables;

use crate::error::Result;
use crate::nfnl::Nfnl;
use crate::skel::Request;

/// Which plugin's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// bridge `ipMasq`: iptables `CNI-<hash>` jumped to from `POSTROUTING`; nftables rules in
    /// `inet cni_plugins_masquerade`.
    Masquerade,
    /// portmap: iptables `CNI-DN-<hash>` jumped to from `CNI-HOSTPORT-DNAT`; nftables rules in
    /// `ip`/`ip6 cni_hostport`.
    HostPorts,
}

/// Both results, or the first error once both were tried.
fn both(a: Result<Vec<String>>, b: Result<Vec<String>>) -> Result<Vec<String>> {
    let mut removed = a?;
    removed.extend(b?);
    Ok(removed)
}

/// DEL: remove the reference's entries of kind `what` for the request's attachment, in both
/// backends, both families. What was removed, one line each (empty: nothing of the
/// reference's was there).
pub fn remove(what: Leftover, req: &Request) -> Result<Vec<String>> {
    let mut nl = Nfnl::open_optional();
    let ipt = iptables::remove(nl.as_mut(), what, &req.conf.name, &req.container_id);
    both(ipt, nftables::remove(nl.as_mut(), what, req))
}

/// CHECK: whether the reference left entries of kind `what` for the request's attachment, in
/// either backend: an attachment it added before the switch to ours, whose entries CHECK takes
/// in place of ours.
pub fn present(what: Leftover, req: &Request) -> bool {
    let mut nl = Nfnl::open_optional();
    iptables::present(nl.as_mut(), what, &req.conf.name, &req.container_id)
        || nftables::present(nl.as_mut(), what, req)
}

/// DEL: remove the reference bridge's `macspoofchk` entries of the request's attachment
/// (nftables only: the reference has no iptables variant). What was removed, as [`remove`].
pub fn remove_macspoof(req: &Request) -> Result<Vec<String>> {
    nftables::remove_macspoof(Nfnl::open_optional().as_mut(), req)
}

/// GC: remove the reference's entries of kind `what` of the request's network whose
/// attachment is not among its valid attachments.
pub fn gc(what: Leftover, req: &Request) -> Result<Vec<String>> {
    let valid = req.gc_valid_attachments()?;
    let mut nl = Nfnl::open_optional();
    let ipt = iptables::gc(nl.as_mut(), what, &req.conf.name, &valid);
    both(ipt, nftables::gc(nl.as_mut(), what, req, &valid))
}
