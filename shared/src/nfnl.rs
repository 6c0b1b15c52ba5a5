//! A minimal synchronous nfnetlink client (`NETLINK_NETFILTER`): build one request, read its
//! replies. Used where going through a tool would cost more than the work itself — conntrack
//! ([`crate::conntrack`]) and single nf_tables set-element lookups ([`crate::firewall::nftset`]),
//! which `nft get element` answers only after fetching every element of the set.
//!
//! The socket belongs to the network namespace of the thread that opens it (see `netns`).
//! Every read is bounded by a receive timeout.
//!
//! Closing a netfilter socket waits until the kernel has finished the nf_tables deletions
//! committed so far (it flushes its destroy work, which waits for an RCU grace period: 10-20 ms
//! here), whoever committed them. So a dropped socket is not closed at once: it stays open until
//! the process exits, when a child takes it over and closes it at a quiet moment
//! ([`crate::detach::exit`]): neither the plugin nor the next transaction waits.

use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::CniError;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLA_F_NESTED: u16 = 0x8000;
/// Set by the kernel on the messages of a dump that met a concurrent change (its answer may
/// miss or repeat entries).
const NLM_F_DUMP_INTR: u16 = 0x10;
/// How often a dump interrupted by concurrent changes is requested in all.
const DUMP_TRIES: usize = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const HDR: usize = 16;
const NFGEN: usize = 4;
/// How long one read may wait for the kernel.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The nfnetlink subsystems this crate talks to (the high byte of a message type).
pub const SUBSYS_CTNETLINK: u16 = 1;
pub const SUBSYS_NFTABLES: u16 = 10;
/// For each, a request any kernel that has the subsystem answers (`IPCTNL_MSG_CT_GET_STATS`,
/// `NFT_MSG_GETGEN`): see [`Nfnl::request`] on EINVAL.
const PROBES: [(u16, u16, &str); 2] = [
    (SUBSYS_CTNETLINK, 5, "connection tracking (ctnetlink)"),
    (SUBSYS_NFTABLES, 16, "nf_tables"),
];

/// The probe request (its full message type) of subsystem `subsys`, and the subsystem's name.
fn probe_of(subsys: u16) -> Option<(u16, &'static str)> {
    PROBES
        .iter()
        .find(|p| p.0 == subsys)
        .map(|&(_, msg, name)| ((subsys << 8) | msg, name))
}

/// An nfnetlink socket.
pub struct Nfnl {
    sock: ManuallyDrop<Socket>,
    seq: u32,
    /// Whether dropping keeps it open until exit (see the module doc); [`Nfnl::close_now`].
    linger: bool,
}

/// Sockets dropped but kept open until exit (see the module doc); beyond this many, a dropped
/// socket is closed at once.
const LINGER_MAX: usize = 16;
static LINGERING: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
/// The sockets dropped so far (for [`crate::detach::exit`]).
pub fn take_lingering() -> Vec<Socket> {
    LINGERING
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

impl Drop for Nfnl {
    fn drop(&mut self) {
        // SAFETY: `sock` is taken exactly once, here, and never used again.
        let sock = unsafe { ManuallyDrop::take(&mut self.sock) };
        if !self.linger {
            return;
        }
        if let Ok(mut l) = LINGERING.lock() {
            if l.len() < LINGER_MAX {
                l.push(sock);
            }
        }
    }
}

impl std::fmt::Debug for Nfnl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nfnl")
    }
}

/// A failed request: the kernel's errno (positive), or a local failure (errno 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlErr {
    pub errno: i32,
    pub what: String,
}

impl NlErr {
    pub fn is_missing(&self) -> bool {
        self.errno == libc::ENOENT
    }
    pub fn is_exists(&self) -> bool {
        self.errno == libc::EEXIST
    }
    pub fn cni(&self, what: &str) -> CniError {
        CniError::internal(format!("{what}: {}", self.what))
    }
}

fn local(what: impl Into<String>) -> NlErr {
    NlErr {
        errno: 0,
        what: what.into(),
    }
}

/// One reply message: its type (`subsys << 8 | msg`) and the attributes after the nfgenmsg.
#[derive(Debug, Clone)]
pub struct Reply {
    pub msg_type: u16,
    pub family: u8,
    pub attrs: Vec<u8>,
}

impl Nfnl {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> std::result::Result<Nfnl, NlErr> {
        let mut sock = Socket::new(NETLINK_NETFILTER)
            .map_err(|e| local(format!("opening a netfilter netlink socket: {e}")))?;
        sock.bind_auto()
            .map_err(|e| local(format!("binding the netfilter netlink socket: {e}")))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| local(format!("connecting the netfilter netlink socket: {e}")))?;
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs().try_into().unwrap_or(5),
            tv_usec: 0,
        };
        set_opt(&sock, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
            .map_err(|_| local("setting a receive timeout on the netlink socket"))?;
        // Acknowledgements and errors without a copy of the request: smaller replies.
        set_opt(
            &sock,
            libc::SOL_NETLINK,
            libc::NETLINK_CAP_ACK,
            &1 as &libc::c_int,
        )
        .map_err(|_| local("setting NETLINK_CAP_ACK on the netlink socket"))?;
        Ok(Nfnl {
            sock: ManuallyDrop::new(sock),
            seq: 1,
            linger: true,
        })
    }

    /// [`Nfnl::open`] for the nftables backend named `what`: without a netfilter netlink
    /// socket (a kernel built without it) that backend is not available here, code 50 — so a
    /// DEL or GC that looks in both backends goes on with the other.
    pub fn open_backend(what: &str) -> std::result::Result<Nfnl, CniError> {
        Nfnl::open().map_err(|e| CniError::not_available(format!("{what}: {}", e.what)))
    }

    /// [`Nfnl::open`] for work that can do without the socket: `None` (said in the debug log)
    /// when it cannot be had.
    pub fn open_optional() -> Option<Nfnl> {
        Nfnl::open()
            .map_err(|e| tracing::debug!("no netfilter socket: {}", e.what))
            .ok()
    }

    /// Close the socket now rather than at exit: after deletions, this waits for the kernel's
    /// nf_tables destroy work (an RCU grace period). For a caller whose next netfilter user is
    /// likely another process (an `iptables` run by the next ADD), which would otherwise wait
    /// for the same work when it exits.
    pub fn close_now(mut self) {
        self.linger = false;
    }

    /// Send one datagram.
    fn send(&self, buf: &[u8]) -> std::result::Result<(), NlErr> {
        self.sock
            .send(buf, 0)
            .map(drop)
            .map_err(|e| local(format!("sending a netlink message: {e}")))
    }

    /// One datagram into `rx` (cleared first).
    fn recv(&self, rx: &mut Vec<u8>) -> std::result::Result<(), NlErr> {
        rx.clear();
        self.sock
            .recv(rx, 0)
            .map(drop)
            .map_err(|e| local(format!("reading a netlink reply: {e}")))
    }

    /// Append one message to `buf`; its sequence number.
    fn encode(
        &mut self,
        buf: &mut Vec<u8>,
        msg_type: u16,
        flags: u16,
        family: u8,
        res_id: u16,
        attrs: &[u8],
    ) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let len = HDR + NFGEN + attrs.len();
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&self.seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(0);
        buf.extend_from_slice(&res_id.to_be_bytes());
        buf.extend_from_slice(attrs);
        buf.resize(align(buf.len()), 0);
        self.seq
    }

    /// Send `msgs` — `(type, flags, family, attributes)` of subsystem `subsys` — as one batch
    /// (one transaction: the kernel applies all or none). The first error the kernel reports
    /// ends it with that errno.
    ///
    /// Only the last message asks for an acknowledgement: the kernel reports every failed
    /// message anyway, and answers all of a batch at once after its last message, so that
    /// answer means done. (Acknowledging each message could overflow the receive buffer.)
    pub fn batch(
        &mut self,
        subsys: u16,
        msgs: &[(u16, u16, u8, Vec<u8>)],
    ) -> std::result::Result<(), NlErr> {
        if msgs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        let first = self.encode(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            subsys,
            &[],
        );
        let mut acked = first;
        for (i, (t, flags, family, attrs)) in msgs.iter().enumerate() {
            let ack = if i + 1 == msgs.len() { NLM_F_ACK } else { 0 };
            acked = self.encode(&mut buf, *t, flags | NLM_F_REQUEST | ack, *family, 0, attrs);
        }
        let last = self.encode(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, subsys, &[]);
        self.send(&buf)?;
        let mut rx: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            self.recv(&mut rx)?;
            for Message {
                kind: mtype,
                seq: mseq,
                body,
                ..
            } in messages(&rx)?
            {
                // Replies to an earlier request on this socket are not ours.
                let ours = mseq.wrapping_sub(first) <= last.wrapping_sub(first);
                if mtype != NLMSG_ERROR || !ours {
                    continue;
                }
                let code = body
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, i32::from_ne_bytes);
                // An error may also answer the batch's begin (the whole batch refused).
                if code != 0 {
                    let errno = -code;
                    return Err(NlErr {
                        errno,
                        what: std::io::Error::from_raw_os_error(errno).to_string(),
                    });
                }
                if mseq == acked {
                    return Ok(());
                }
            }
        }
    }

    /// Send one request and collect its replies until the ACK (or DONE for a dump). A kernel
    /// error ends the request with its errno. A dump the kernel marks as interrupted by a
    /// concurrent change is requested again (an inconsistent listing could hide the very entry
    /// a DEL looks for); EINTR when that keeps happening.
    pub fn request(
        &mut self,
        msg_type: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> std::result::Result<Vec<Reply>, NlErr> {
        let mut pause = Duration::from_millis(1);
        let mut r = self.request_once(msg_type, flags, family, attrs);
        for _ in 1..DUMP_TRIES {
            match r {
                Err(ref e) if e.errno == libc::EINTR => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                    r = self.request_once(msg_type, flags, family, attrs);
                }
                _ => break,
            }
        }
        match r {
            Err(e) if e.errno == libc::EINVAL => Err(self.why_invalid(msg_type >> 8, e)),
            r => r,
        }
    }

    /// An EINVAL answer to a request of subsystem `subsys`: the kernel gives it both for a
    /// request it cannot parse and for a subsystem it does not have (a kernel with netfilter
    /// netlink but built without nf_tables, or without conntrack's netlink interface) — where
    /// a batch gets EOPNOTSUPP. So ask the subsystem's probe: when that is refused with EINVAL
    /// too, the subsystem is missing, and the answer becomes EOPNOTSUPP, which callers read as
    /// "nothing of that kind here" (a DEL or GC then goes on with the other backend).
    fn why_invalid(&mut self, subsys: u16, e: NlErr) -> NlErr {
        let Some((probe, name)) = probe_of(subsys) else {
            return e;
        };
        match self.probe(probe) {
            Some(false) => NlErr {
                errno: libc::EOPNOTSUPP,
                what: format!("the kernel has no {name}: {}", e.what),
            },
            _ => e,
        }
    }

    /// Whether the kernel has nfnetlink subsystem `subsys` in this namespace: its probe
    /// request answered (`Some(true)`) or refused with EINVAL (`Some(false)`); `None` for a
    /// subsystem without a probe here, or another failure.
    pub fn has_subsystem(&mut self, subsys: u16) -> Option<bool> {
        let (probe, _) = probe_of(subsys)?;
        self.probe(probe)
    }

    /// Whether the kernel answers a request of `msg_type` without attributes (family
    /// unspecified): `Some(true)`, `Some(false)` when refused with EINVAL, `None` for another
    /// failure.
    pub fn probe(&mut self, msg_type: u16) -> Option<bool> {
        match self.request_once(msg_type, NLM_F_REQUEST | NLM_F_ACK, 0, &[]) {
            Ok(_) => Some(true),
            Err(e) if e.errno == libc::EINVAL => Some(false),
            Err(_) => None,
        }
    }

    fn request_once(
        &mut self,
        msg_type: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> std::result::Result<Vec<Reply>, NlErr> {
        let mut buf = Vec::new();
        let seq = self.encode(&mut buf, msg_type, flags, family, 0, attrs);
        self.send(&buf)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut rx: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            self.recv(&mut rx)?;
            for Message {
                kind: mtype,
                flags: mflags,
                seq: mseq,
                body,
                ..
            } in messages(&rx)?
            {
                if mseq != seq {
                    continue;
                }
                interrupted |= mflags & NLM_F_DUMP_INTR != 0;
                match mtype {
                    NLMSG_DONE if interrupted => {
                        return Err(NlErr {
                            errno: libc::EINTR,
                            what: "the dump met a concurrent change".into(),
                        })
                    }
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .and_then(|b| b.try_into().ok())
                            .map_or(0, i32::from_ne_bytes);
                        if code == 0 {
                            if !dump {
                                return Ok(out);
                            }
                            continue;
                        }
                        let errno = -code;
                        return Err(NlErr {
                            errno,
                            what: std::io::Error::from_raw_os_error(errno).to_string(),
                        });
                    }
                    _ => {
                        if body.len() >= NFGEN {
                            out.push(Reply {
                                msg_type: mtype,
                                family: body[0],
                                attrs: body[NFGEN..].to_vec(),
                            });
                        }
                    }
                }
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// `setsockopt` with a plain-data option value.
pub(crate) fn set_opt<T: Copy>(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: the fd is the open socket owned by `sock`; `value` points to a live `T` whose
    // size is passed alongside it, and the kernel only reads it during the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One message of a datagram.
pub(crate) struct Message<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    /// What follows the header.
    pub body: &'a [u8],
    /// The message with its header.
    pub whole: &'a [u8],
}

/// The messages in one datagram (any netlink protocol).
pub(crate) fn messages(rx: &[u8]) -> std::result::Result<Vec<Message<'_>>, NlErr> {
    let u32_at = |o: usize| {
        rx.get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let u16_at = |o: usize| {
        rx.get(o..o + 2)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_ne_bytes)
    };
    let mut out = Vec::new();
    let mut off = 0;
    while off + HDR <= rx.len() {
        let mlen = u32_at(off) as usize;
        if mlen < HDR || off + mlen > rx.len() {
            return Err(local("malformed netlink reply"));
        }
        out.push(Message {
            kind: u16_at(off + 4),
            flags: u16_at(off + 6),
            seq: u32_at(off + 8),
            body: &rx[off + HDR..off + mlen],
            whole: &rx[off..off + mlen],
        });
        off += align(mlen);
    }
    Ok(out)
}

/// Builds netlink attributes.
#[derive(Debug, Default, Clone)]
pub struct Attrs(pub Vec<u8>);

impl Attrs {
    pub fn new() -> Attrs {
        Attrs::default()
    }

    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Attrs {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align(self.0.len()), 0);
        self
    }

    /// A NUL-terminated string attribute.
    pub fn put_str(&mut self, kind: u16, value: &str) -> &mut Attrs {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    /// A nested attribute built by `f`.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Attrs {
        let mut inner = Attrs::new();
        f(&mut inner);
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

/// Iterate over the attributes in `buf`: (kind without flags, payload). Stops at the first
/// malformed one.
pub fn attrs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + 4)?;
        let len = u16::from_ne_bytes([hdr[0], hdr[1]]) as usize;
        let kind = u16::from_ne_bytes([hdr[2], hdr[3]]) & 0x3fff;
        if len < 4 {
            return None;
        }
        let payload = buf.get(off + 4..off + len)?;
        off += align(len);
        Some((kind, payload))
    })
}

/// The payload of the first attribute of `kind` in `buf`.
pub fn attr(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attrs(buf).find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// A NUL-terminated string payload.
pub fn str_of(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip() {
        let mut a = Attrs::new();
        a.put_str(1, "tbl").nest(3, |n| {
            n.put(1, &[1, 2, 3]);
        });
        let got: Vec<(u16, Vec<u8>)> = attrs(&a.0).map(|(k, v)| (k, v.to_vec())).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(str_of(&got[0].1), "tbl");
        assert_eq!(got[1].0, 3, "flags are masked off");
        assert_eq!(attr(&got[1].1, 1), Some(&[1u8, 2, 3][..]));
        assert_eq!(a.0.len() % 4, 0);
        // Truncated input stops the iteration instead of panicking.
        assert_eq!(attrs(&a.0[..6]).count(), 0);
    }
}
