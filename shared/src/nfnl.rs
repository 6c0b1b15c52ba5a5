//! A minimal synchronous nfnetlink client (`NETLINK_NETFILTER`): build one request, read its
//! replies. Used where going through a tool would cost more than the work itself — conntrack
//! ([`crate::conntrack`]) and single nf_tables set-element lookups ([`crate::firewall::nftset`]),
//! which `nft get element` answers only after fetching every element of the set.
//!
//! The socket belongs to the network namespace of the thread that opens it (see `netns`).
//! Every read is bounded by a receive timeout.

use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::CniError;

pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
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

/// An nfnetlink socket.
pub struct Nfnl {
    sock: Socket,
    seq: u32,
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
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: the fd is the open socket owned by `sock`; `tv` is a valid timeval whose size
        // is passed alongside it, and the kernel only reads it during the call.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(local("setting a receive timeout on the netlink socket"));
        }
        Ok(Nfnl { sock, seq: 1 })
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
        for _ in 1..DUMP_TRIES {
            match self.request_once(msg_type, flags, family, attrs) {
                Err(e) if e.errno == libc::EINTR => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                r => return r,
            }
        }
        self.request_once(msg_type, flags, family, attrs)
    }

    fn request_once(
        &mut self,
        msg_type: u16,
        flags: u16,
        family: u8,
        attrs: &[u8],
    ) -> std::result::Result<Vec<Reply>, NlErr> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = HDR + NFGEN + attrs.len();
        let mut buf = Vec::with_capacity(len);
        buf.extend_from_slice(&(len as u32).to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[family, 0, 0, 0]);
        buf.extend_from_slice(attrs);
        self.sock
            .send(&buf, 0)
            .map_err(|e| local(format!("sending a netlink request: {e}")))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut interrupted = false;
        let mut rx: Vec<u8> = Vec::with_capacity(1 << 16);
        loop {
            rx.clear();
            self.sock
                .recv(&mut rx, 0)
                .map_err(|e| local(format!("reading a netlink reply: {e}")))?;
            let mut off = 0;
            while off + HDR <= rx.len() {
                let u32_at = |o: usize| {
                    rx.get(o..o + 4)
                        .and_then(|b| b.try_into().ok())
                        .map_or(0, u32::from_ne_bytes)
                };
                let mlen = u32_at(off) as usize;
                let mtype = u32_at(off + 4) as u16;
                let mflags = (u32_at(off + 4) >> 16) as u16;
                let mseq = u32_at(off + 8);
                if mlen < HDR || off + mlen > rx.len() {
                    return Err(local("malformed netlink reply"));
                }
                let body = &rx[off + HDR..off + mlen];
                off += align(mlen);
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
