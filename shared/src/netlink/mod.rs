//! Synchronous rtnetlink for the plugins: links (bridge, veth, macvlan, vxlan, vlan), bridge
//! ports and VLANs, addresses, routes, neighbours and the VXLAN FDB.
//!
//! # Namespaces
//!
//! A [`Netlink`] is a netlink socket; it acts on the network namespace it was **created** in, for
//! its whole life, whichever thread uses it (DESIGN.md §4). [`Netlink::open_in`] creates the socket
//! on a short-lived thread that entered the target namespace ([`NetNs::run`]) and hands it back;
//! no thread ever returns from a namespace. [`Netlink::current`] uses the calling thread's.
//!
//! # Transport
//!
//! The API is synchronous, and so is the transport: each request is written to the socket and
//! its replies are read back on the calling thread (messages built and parsed with
//! netlink-packet-route's types, the ones the rtnetlink crate uses). Several threads may share a
//! handle (e.g. a host handle on the main thread and a container handle inside a
//! [`NetNs::run`] closure): a handle serves one request at a time. Every request is bounded by
//! [`REQUEST_TIMEOUT`]. (No async runtime: starting one and driving each request through it
//! cost ~0.1 ms per process and ~40 µs per request, a tenth of a bridge ADD.)
//!
//! # Errors, "already exists" and "not found"
//!
//! Every function returns [`crate::Result`]. A kernel refusal is code 999 ([`CniError::internal`])
//! with a message naming the object and the errno text, plus the kernel's extended-ack text when
//! it gives one: `creating veth veth1a2b3c4d (peer eth0): File exists (os error 17)`.
//!
//! Callers never inspect an error to learn whether something exists. The one rule is: **absence
//! and presence that a plugin must tolerate are reported in the `Ok` value**:
//!
//! - lookups return `Option` (`None`: no such link/route);
//! - deletions return `bool`: `true` deleted, `false` it was already gone (the kernel said
//!   ENODEV/ENOENT/ESRCH/EADDRNOTAVAIL), so DEL stays idempotent;
//! - `create_*` / `add_*` fail on an existing object (EEXIST is an error), and where a plugin must
//!   reuse existing state there is an idempotent twin: [`Netlink::ensure_bridge`],
//!   [`Netlink::ensure_vxlan`] (reuse a matching link), [`Netlink::ensure_address`] (`bool`:
//!   added or already present), [`Netlink::replace_route`], [`Netlink::set_neighbour`],
//!   [`Netlink::append_fdb`] / [`Netlink::replace_fdb`];
//! - [`crate::sysctl`] follows the same rule (`get` → `Option`, `set` → `bool`).
//!
//! # Kernel and library notes
//!
//! - A kernel without 802.1q support refuses a vlan link as an unknown kind;
//!   [`Netlink::create_vlan`] reports that as code 50 (not available) so a caller can tell it
//!   from other failures. Kernels before 5.11 ignore a macvlan's broadcast queue length
//!   (`IFLA_MACVLAN_BC_QUEUE_LEN`) rather than refuse it: read it back to know.
//! - A veth peer cannot be brought up in the creating request (veth refuses to open a device
//!   whose pair is not joined yet: ENOTCONN), so [`VethOpts`] only has `host_up`.
//! - The vxlan driver acknowledges deleting a missing destination of an existing FDB MAC;
//!   [`Netlink::delete_fdb`] checks first so it can still report absence.
//! - Kernels without `CONFIG_BRIDGE_VLAN_FILTERING` refuse any `vlan_filtering` attribute,
//!   even "off"; bridges are therefore created without it unless it is asked to be on.
//!
//! # Cost
//!
//! Lookups are targeted (`RTM_GETLINK` by name or index; address, route, neighbour and FDB dumps
//! are filtered by the kernel: the socket enables `NETLINK_GET_STRICT_CHK`). Only [`Netlink::links`]
//! and [`Netlink::bridge_vlans`] walk every link. At log level `trace` every request logs its
//! message type (`rtm`, the RTM_* number) and how long the kernel took (`us`).

mod addr;
mod bridge;
mod create;
mod link;
mod neigh;
mod netconf;
mod route;

use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_MULTIPART,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{CniError, Result};
use crate::netns::NetNs;

pub use addr::{AddrOpts, Address};
pub use bridge::{BridgePortFlags, BridgeVlan};
pub use create::{
    attachment_temp_name, random_veth_name, BridgeOpts, MacvlanOpts, VethOpts, VlanOpts, VxlanOpts,
};
pub use link::{AddrGenMode, BridgeInfo, BridgePortInfo, Link, LinkRef, MacvlanMode, VxlanInfo};
pub use neigh::{FdbEntry, Neighbour};
pub use route::{Route, RouteFilter, Scope, MAIN_TABLE};

/// The longest one netlink request may take before it is reported as failed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &std::net::IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    fn af(self) -> netlink_packet_route::AddressFamily {
        match self {
            Family::V4 => netlink_packet_route::AddressFamily::Inet,
            Family::V6 => netlink_packet_route::AddressFamily::Inet6,
        }
    }
}

/// A route-netlink socket bound for life to one network namespace.
pub struct Netlink {
    inner: Mutex<Inner>,
}

/// The socket, the sequence number of its last request, and the receive buffer.
struct Inner {
    sock: Socket,
    seq: u32,
    rx: Vec<u8>,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink").finish_non_exhaustive()
    }
}

/// The receive buffer: the kernel fills a dump's datagrams up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;

fn new_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    // Kernel-side filtering of dumps (and rejection of malformed requests) ...
    s.set_netlink_get_strict_chk(true)?;
    // ... and the kernel's explanation on errors, without echoing our request back.
    s.set_ext_ack(true)?;
    s.set_cap_ack(true)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    // Each read waits at most this long; [`Netlink::request`] bounds the whole request.
    let tv = libc::timeval {
        tv_sec: REQUEST_TIMEOUT.as_secs().try_into().unwrap_or(10),
        tv_usec: 0,
    };
    crate::nfnl::set_opt(&s, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)?;
    Ok(s)
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn current() -> Result<Netlink> {
        let s = new_socket().map_err(|e| open_error("the current network namespace", e))?;
        Ok(Netlink::from_socket(s))
    }

    /// A socket in `ns`, created by a thread that entered it. Usable from any thread afterwards.
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        let s = ns
            .run(new_socket)?
            .map_err(|e| open_error(&ns.path().display().to_string(), e))?;
        Ok(Netlink::from_socket(s))
    }

    fn from_socket(sock: Socket) -> Netlink {
        Netlink {
            inner: Mutex::new(Inner {
                sock,
                seq: 0,
                rx: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A thread that panicked mid-request left stray replies at worst, which the sequence
        // numbers tell apart.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send one request and collect every reply message; kernel errors become [`NlError`].
    fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> std::result::Result<Vec<RouteNetlinkMessage>, NlError> {
        let kind = msg.message_type();
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        let mut out = Vec::new();
        for raw in self.exchange(kind, buf)? {
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw)
                .map_err(|e| NlError::Transport(format!("parsing the reply: {e}")))?;
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                out.push(inner);
            }
        }
        Ok(out)
    }

    /// A request the rtnetlink crate has no type for: header, then `body` (the family header
    /// and attributes). Every reply message whole, header included.
    fn request_raw(
        &self,
        msg_type: u16,
        flags: u16,
        body: &[u8],
    ) -> std::result::Result<Vec<Vec<u8>>, NlError> {
        let mut buf = Vec::with_capacity(16 + body.len());
        buf.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&[0; 8]); // sequence number (set by `exchange`), port
        buf.extend_from_slice(body);
        self.exchange(msg_type, buf)
    }

    /// Send the serialized request `buf` (its sequence number is set here) and read until its
    /// last reply: an acknowledgement or error, the end of a dump, or — when no
    /// acknowledgement was asked for — a reply that is not part of a multipart answer. Returns
    /// the other replies whole. Replies to earlier requests (an acknowledgement that came after
    /// the answer) are skipped by their sequence number.
    fn exchange(&self, kind: u16, mut buf: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, NlError> {
        let started = Instant::now();
        let mut inner = self.lock();
        let Inner { sock, seq, rx } = &mut *inner;
        *seq = seq.wrapping_add(1);
        let seq = *seq;
        let flags = match buf.get_mut(4..12) {
            Some(h) => {
                h[4..8].copy_from_slice(&seq.to_ne_bytes());
                u16::from_ne_bytes([h[2], h[3]])
            }
            None => return Err(NlError::Transport("a request without a header".into())),
        };
        let outcome = sock
            .send(&buf, 0)
            .map_err(|e| NlError::Transport(format!("sending the request: {e}")))
            .and_then(|_| read_replies(sock, rx, seq, flags & NLM_F_ACK != 0, started));
        tracing::trace!(
            rtm = kind,
            us = started.elapsed().as_micros(),
            ok = outcome.is_ok(),
            "netlink request"
        );
        outcome
    }
}

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// The replies to request `seq` (see [`Netlink::exchange`]), read into `rx`.
fn read_replies(
    sock: &Socket,
    rx: &mut Vec<u8>,
    seq: u32,
    expecting_ack: bool,
    started: Instant,
) -> std::result::Result<Vec<Vec<u8>>, NlError> {
    let deadline = started + REQUEST_TIMEOUT;
    rx.clear();
    rx.reserve(RECV_BUF);
    let mut out = Vec::new();
    loop {
        if Instant::now() >= deadline {
            return Err(timed_out());
        }
        rx.clear();
        let len = match sock.recv(rx, libc::MSG_TRUNC) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(timed_out()),
            Err(e) => return Err(NlError::Transport(format!("reading the reply: {e}"))),
        };
        if len > rx.len() {
            return Err(NlError::Transport(format!(
                "a reply of {len} bytes does not fit the {RECV_BUF}-byte buffer"
            )));
        }
        let msgs = crate::nfnl::messages(rx)
            .map_err(|e| NlError::Transport(format!("parsing the reply: {}", e.what)))?;
        for m in msgs.into_iter().filter(|m| m.seq == seq) {
            // An error or done message has the (negative) errno first, then the echoed request
            // and the kernel's explanation (error) or the explanation (done).
            let code = m
                .body
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, i32::from_ne_bytes);
            let rest = m.body.get(4..).unwrap_or_default();
            match m.kind {
                NLMSG_ERROR if code != 0 => {
                    return Err(NlError::Kernel(code.abs(), ext_ack_msg(m.flags, rest)))
                }
                NLMSG_ERROR => return Ok(out),
                NLMSG_DONE if code < 0 => return Err(NlError::Kernel(code.abs(), tlv_msg(rest))),
                NLMSG_DONE => return Ok(out),
                NLMSG_OVERRUN => return Err(NlError::Transport("receive buffer overrun".into())),
                _ => {
                    out.push(m.whole.to_vec());
                    if m.flags & NLM_F_MULTIPART == 0 && !expecting_ack {
                        return Ok(out);
                    }
                }
            }
        }
    }
}

fn timed_out() -> NlError {
    NlError::Transport(format!(
        "no complete reply from the kernel within {}s",
        REQUEST_TIMEOUT.as_secs()
    ))
}

fn open_error(where_: &str, e: io::Error) -> CniError {
    CniError::internal(format!("opening a netlink socket in {where_}: {e}"))
}

/// A failed request, before it is given a message.
#[derive(Debug)]
pub(crate) enum NlError {
    /// errno (positive) and the kernel's extended-ack text.
    Kernel(i32, Option<String>),
    /// The request never got an answer.
    Transport(String),
}

impl NlError {
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            NlError::Kernel(e, _) => Some(*e),
            NlError::Transport(_) => None,
        }
    }

    /// "Not there" for a deletion: the object or its device is gone.
    pub(crate) fn is_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
        )
    }

    pub(crate) fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The CNI error: code 999, `"<what>: <errno text>[: <kernel's text>]"`.
    pub(crate) fn cni(self, what: impl fmt::Display) -> CniError {
        CniError::internal(format!("{what}: {self}"))
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NlError::Kernel(errno, ext) => {
                write!(f, "{}", io::Error::from_raw_os_error(*errno))?;
                if let Some(ext) = ext {
                    write!(f, " ({ext})")?;
                }
                Ok(())
            }
            NlError::Transport(s) => write!(f, "netlink: {s}"),
        }
    }
}

/// Extension trait: attach a message to a request result.
pub(crate) trait NlResultExt<T> {
    fn or_nl(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> NlResultExt<T> for std::result::Result<T, NlError> {
    fn or_nl(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| e.cni(what()))
    }
}

/// The `NLMSGERR_ATTR_MSG` text of an error message, when the kernel attached one.
fn ext_ack_msg(outer_flags: u16, payload: &[u8]) -> Option<String> {
    if outer_flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // The payload echoes the request: only its 16-byte header when capped, else all of it.
    let orig_len = if outer_flags & NLM_F_CAPPED != 0 {
        16
    } else {
        let len = payload.get(0..4)?;
        u32::from_ne_bytes(len.try_into().ok()?) as usize
    };
    tlv_msg(payload.get(align4(orig_len)..)?)
}

/// Find attribute 1 (`NLMSGERR_ATTR_MSG`, a C string) in a run of netlink attributes.
fn tlv_msg(mut tlvs: &[u8]) -> Option<String> {
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let ty = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if ty == 1 {
            let raw = &tlvs[4..len];
            let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
            let s = String::from_utf8_lossy(&raw[..end]).trim().to_string();
            return (!s.is_empty()).then_some(s);
        }
        tlvs = tlvs.get(align4(len)..)?;
    }
    None
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_extended_ack_text() {
        let mut tlvs = Vec::new();
        // NLMSGERR_ATTR_OFFS (2), u32
        tlvs.extend_from_slice(&8u16.to_ne_bytes());
        tlvs.extend_from_slice(&2u16.to_ne_bytes());
        tlvs.extend_from_slice(&20u32.to_ne_bytes());
        // NLMSGERR_ATTR_MSG (1), "bad\0" padded
        tlvs.extend_from_slice(&8u16.to_ne_bytes());
        tlvs.extend_from_slice(&1u16.to_ne_bytes());
        tlvs.extend_from_slice(b"bad\0");
        assert_eq!(tlv_msg(&tlvs).as_deref(), Some("bad"));

        let mut payload = vec![0u8; 16];
        payload.extend_from_slice(&tlvs);
        let flags = NLM_F_ACK_TLVS | NLM_F_CAPPED;
        assert_eq!(ext_ack_msg(flags, &payload).as_deref(), Some("bad"));
        assert_eq!(ext_ack_msg(NLM_F_CAPPED, &payload), None);
        // Truncated or garbage input never panics.
        assert_eq!(tlv_msg(&[0xff, 0xff, 1, 0]), None);
        assert_eq!(ext_ack_msg(NLM_F_ACK_TLVS, &[1, 2]), None);
    }

    #[test]
    fn error_text_names_errno_and_kernel_reason() {
        let e = NlError::Kernel(libc::EEXIST, None).cni("creating bridge br0");
        assert_eq!(e.code, 999);
        assert_eq!(e.msg, "creating bridge br0: File exists (os error 17)");
        let e = NlError::Kernel(libc::EINVAL, Some("Unknown device type".into()));
        assert_eq!(
            e.to_string(),
            "Invalid argument (os error 22) (Unknown device type)"
        );
    }
}
