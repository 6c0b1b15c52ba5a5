//! Forwarding of a whole namespace (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`),
//! read with `RTM_GETNETCONF` — a message the rtnetlink crate lacks, so it goes through the
//! small synchronous client in [`crate::nfnl`].
//!
//! Not read under `/proc/sys`: a lookup there walks one directory entry per namespace whose keys
//! anyone looked up through the host's `/proc` (the reference plugins set their containers'
//! sysctls that way), ~0.9 ms in a new process next to 1000 such namespaces; this request costs
//! the same at any number.

use super::Family;
use crate::error::{CniError, Result};
use crate::nfnl::{self, Attrs, Nfnl};

const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// `NETCONFA_IFINDEX_ALL`: the namespace's `all` configuration.
const IFINDEX_ALL: i32 = -1;

/// Whether forwarding of `family` is on in the calling thread's namespace (`all`); `None` when
/// the kernel has no configuration of that family (IPv6 disabled at boot).
pub fn forwarding(family: Family) -> Result<Option<bool>> {
    let (af, what) = match family {
        Family::V4 => (libc::AF_INET as u8, "net.ipv4.ip_forward"),
        Family::V6 => (libc::AF_INET6 as u8, "net.ipv6.conf.all.forwarding"),
    };
    let fail = |e: nfnl::NlErr| CniError::internal(format!("reading {what}: {}", e.what));
    let mut sock = Nfnl::open_route().map_err(fail)?;
    let mut attrs = Attrs::new();
    attrs.put(NETCONFA_IFINDEX, &IFINDEX_ALL.to_ne_bytes());
    let replies = match sock.request(
        RTM_GETNETCONF,
        nfnl::NLM_F_REQUEST | nfnl::NLM_F_ACK,
        af,
        &attrs.0,
    ) {
        Ok(r) => r,
        // No such family in this kernel.
        Err(e) if e.errno == libc::EAFNOSUPPORT || e.errno == libc::EOPNOTSUPP => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let value = replies
        .iter()
        .find_map(|r| nfnl::attr(&r.attrs, NETCONFA_FORWARDING))
        .and_then(|v| v.get(..4)?.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| {
            CniError::internal(format!("reading {what}: the kernel's answer has no value"))
        })?;
    Ok(Some(value != 0))
}
