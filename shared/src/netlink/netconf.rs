//! Forwarding of a whole namespace (`net.ipv4.ip_forward`, `net.ipv6.conf.all.forwarding`),
//! read with `RTM_GETNETCONF`, a message the rtnetlink crate has no type for.
//!
//! Not read under `/proc/sys`: a lookup there walks one directory entry per namespace whose keys
//! anyone looked up through the host's `/proc` (the reference plugins set their containers'
//! sysctls that way), ~0.9 ms in a new process next to 1000 such namespaces; this request costs
//! the same at any number.

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use super::{Family, Netlink, NlResultExt};
use crate::error::{CniError, Result};
use crate::nfnl::{attr, Attrs};

const RTM_GETNETCONF: u16 = 82;
const NETCONFA_IFINDEX: u16 = 1;
const NETCONFA_FORWARDING: u16 = 2;
/// `NETCONFA_IFINDEX_ALL`: the namespace's `all` configuration.
const IFINDEX_ALL: i32 = -1;
/// The message header, then `struct netconfmsg` (the family, padded to 4 bytes).
const BODY: usize = 16 + 4;

impl Netlink {
    /// Whether forwarding of `family` is on in the handle's namespace (`all`); `None` when the
    /// kernel has no configuration of that family (IPv6 disabled at boot).
    pub fn forwarding(&self, family: Family) -> Result<Option<bool>> {
        let (af, what) = match family {
            Family::V4 => (libc::AF_INET as u8, "net.ipv4.ip_forward"),
            Family::V6 => (libc::AF_INET6 as u8, "net.ipv6.conf.all.forwarding"),
        };
        let mut body = vec![af, 0, 0, 0];
        body.extend_from_slice(
            &Attrs::new()
                .put(NETCONFA_IFINDEX, &IFINDEX_ALL.to_ne_bytes())
                .0,
        );
        let replies = match self.request_raw(RTM_GETNETCONF, NLM_F_REQUEST | NLM_F_ACK, &body) {
            Err(e) if matches!(e.errno(), Some(libc::EAFNOSUPPORT | libc::EOPNOTSUPP)) => {
                return Ok(None)
            }
            r => r.or_nl(|| format!("reading {what}"))?,
        };
        let value = replies
            .iter()
            .find_map(|m| attr(m.get(BODY..)?, NETCONFA_FORWARDING))
            .and_then(|v| v.get(..4)?.try_into().ok())
            .map(i32::from_ne_bytes)
            .ok_or_else(|| {
                CniError::internal(format!("reading {what}: the kernel's answer has no value"))
            })?;
        Ok(Some(value != 0))
    }
}
