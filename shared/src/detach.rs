//! Kernel waits a plugin does not sit through.
//!
//! Two clean-ups make the process that triggers them wait for RCU grace periods (10–25 ms on
//! the development VM) *after* the state a runtime can observe has already changed:
//!
//! - **Deleting a link.** The kernel unlists the device, removes its addresses and routes, and
//!   announces `RTM_DELLINK`; then, after releasing the RTNL lock, it waits for the device's
//!   last references (`netdev_run_todo`: `rcu_barrier`) before it acknowledges the request.
//! - **Closing a netfilter socket.** Its release (Linux 6.x) flushes the namespace's nf_tables
//!   destroy work, which frees what transactions deleted one grace period after their commit —
//!   whoever committed them — and holds the namespace's nf_tables commit lock meanwhile, so
//!   every transaction there waits too.
//!
//! Neither wait changes what the plugin reports, so the plugins hand both to short-lived child
//! processes and return without them: [`delete_link`] returns once the kernel has announced
//! the link's removal from its namespace (a child sent the request and sits through the rest),
//! and [`exit`] gives the process's netfilter sockets to a child that closes them after the
//! plugin has exited, at a quiet moment (`wait_for_quiet`), so that the close waits for
//! nothing and holds up no one. The children inherit no other descriptor (none of stdin,
//! stdout, stderr: a runtime reads a plugin's stdout until every writer has closed it; none of
//! the lock files), run in sessions of their own (a runtime's kill of the plugin does not cut
//! a deletion short), make only raw system calls (each is the child of a multi-threaded
//! process) and end by themselves: the link's within a few grace periods, the sockets' within
//! two seconds.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::{CniError, Result};
use crate::firewall::nftset::SUBSYS_NFTABLES;
use crate::netns::NetNs;
use crate::nfnl::{attr, set_opt};

const RTM_DELLINK: u16 = 17;
const NLMSG_ERROR: u16 = 2;
const RTMGRP_LINK: u32 = 1;
/// How long [`delete_link`] waits for the kernel (it answers in milliseconds).
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a child waits for a quiet moment to close netfilter sockets in.
const QUIET_WAIT_SECS: u8 = 2;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
/// Above every Linux errno; what the deleting child's exit status can carry.
const MAX_ERRNO: i32 = 150;

/// Close every descriptor but `keep`, in the child right after `fork` (raw calls only).
fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut from: libc::c_uint = 0;
    for &fd in keep.iter() {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
    close_range(from, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range only closes descriptors; the child owns no Rust object that uses them.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if r != 0 {
        // Kernels before 5.9: one by one, up to a bound no plugin comes near.
        for fd in first..=last.min(4095) {
            // SAFETY: as above.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

/// Fork a child that keeps only `keep`, runs `child` and exits with its value. The parent gets
/// the child's pid.
///
/// # Safety
/// `child` runs in the copy of a multi-threaded process: it may only make raw system calls
/// (no allocation, no locks, no logging) on memory prepared before the fork.
unsafe fn spawn(keep: &[RawFd], child: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
    // Room for every lingering netfilter socket (nfnl's LINGER_MAX) and a pipe.
    let mut keep_buf = [0 as RawFd; 32];
    let n = keep.len().min(keep_buf.len());
    keep_buf[..n].copy_from_slice(&keep[..n]);
    // SAFETY: fork has no preconditions; what the child may do is the caller's contract.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            // A session of its own: the runtime's signals to the plugin's group miss it.
            // SAFETY: setsid and _exit are raw system calls.
            unsafe { libc::setsid() };
            close_all_but(&mut keep_buf[..n]);
            let code = child();
            // SAFETY: as above; _exit skips the parent's atexit handlers and buffers.
            unsafe { libc::_exit(code) }
        }
        pid => Ok(pid),
    }
}

/// The RTM_DELLINK request for link `index` (an nlmsghdr and an ifinfomsg).
fn dellink_message(index: u32) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(&32u32.to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_DELLINK.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family, pad, type (u16), index (i32), flags, change.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    m
}

/// The netlink messages in `buf`: (type, header and body). Allocation-free, so the children
/// can use it (`nfnl`'s reader collects into a vector); stops at the first malformed one.
fn nlmsgs(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?) as usize;
        let msg = buf.get(at..at + len).filter(|_| len >= 16)?;
        at += (len + 3) & !3;
        Some((u16::from_ne_bytes([msg[4], msg[5]]), msg))
    })
}

/// The errno of the first NLMSG_ERROR in `buf` (0: acknowledged); `None` when there is none.
fn ack_errno(buf: &[u8]) -> Option<i32> {
    let (_, m) = nlmsgs(buf).find(|(kind, _)| *kind == NLMSG_ERROR)?;
    Some(-i32::from_ne_bytes(m.get(16..20)?.try_into().ok()?))
}

/// Whether `buf` (messages from the link group) announces the removal of link `index`
/// (ifinfomsg's index at offset 4 of the body).
fn announces_removal(buf: &[u8], index: u32) -> bool {
    nlmsgs(buf).any(|(kind, m)| {
        kind == RTM_DELLINK && m.get(20..24) == Some(index.to_ne_bytes().as_slice())
    })
}

/// A raw rtnetlink socket: `groups` to listen to (0: a request socket).
fn route_socket(groups: u32) -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE)?;
    s.bind(&SocketAddr::new(0, groups))?;
    Ok(s)
}

/// `ip link del` of link `index` in `ns`, without waiting for the kernel's final release of
/// the device: `Ok(true)` once the kernel has announced the link's removal (its addresses and
/// routes are gone by then, and a veth's peer with it), `Ok(false)` when there was no such
/// link. A child process sends the request and sits through the rest.
pub fn delete_link(ns: &NetNs, index: u32) -> Result<bool> {
    let what = || format!("deleting link {index} in {}", ns.path().display());
    let socks = ns
        .run(|| Ok::<_, io::Error>((route_socket(RTMGRP_LINK)?, route_socket(0)?)))?
        .map_err(|e| CniError::internal(format!("{}: opening a netlink socket: {e}", what())))?;
    let (monitor, request) = socks;
    let (mon, req) = (monitor.as_raw_fd(), request.as_raw_fd());
    let tv = libc::timeval {
        tv_sec: 60,
        tv_usec: 0,
    };
    set_opt(&request, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
        .map_err(|e| CniError::internal(format!("{}: a receive timeout: {e}", what())))?;
    let msg = dellink_message(index);
    // SAFETY: the child sends a message built before the fork into a stack buffer, reads the
    // answer into another, and exits: raw system calls only.
    let child = unsafe {
        spawn(&[req], || {
            let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
            kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            let sent = libc::sendto(
                req,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            );
            if sent < 0 {
                return 200;
            }
            let mut buf = [0u8; 4096];
            let n = libc::recv(req, buf.as_mut_ptr().cast(), buf.len(), 0);
            if n < 0 {
                return 201;
            }
            // The exit status says how it went: 0 deleted, 1 no such link, 2 + errno.
            match ack_errno(&buf[..n as usize]) {
                Some(0) => 0,
                Some(e) if e == libc::ENODEV => 1,
                Some(e) => 2 + e.clamp(0, MAX_ERRNO),
                None => 202,
            }
        })
    }
    .map_err(|e| CniError::internal(format!("{}: fork: {e}", what())))?;
    drop(request);
    wait_removed(&monitor, mon, index, child)
        .map_err(|e| CniError::internal(format!("{}: {e}", what())))
}

/// Wait until `monitor` announces the removal of `index`, or the child ends.
fn wait_removed(
    monitor: &Socket,
    mon: RawFd,
    index: u32,
    child: libc::pid_t,
) -> std::result::Result<bool, String> {
    let deadline = Instant::now() + DELETE_TIMEOUT;
    let mut buf = vec![0u8; 1 << 16];
    // The child's exit is polled between announcements (a pidfd would need Linux 5.3).
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let reaped = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
        if reaped == child {
            return match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                Some(c) if (2..=2 + MAX_ERRNO).contains(&c) => {
                    Err(io::Error::from_raw_os_error(c - 2).to_string())
                }
                Some(c) => Err(format!("the helper process failed (status {c})")),
                None => Err("the helper process was killed".into()),
            };
        }
        if Instant::now() >= deadline {
            return Err(format!("no answer within {}s", DELETE_TIMEOUT.as_secs()));
        }
        let mut pfd = libc::pollfd {
            fd: mon,
            events: libc::POLLIN,
            revents: 0,
        };
        // Wake up now and then to look at the child.
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 2) };
        if ready > 0 {
            buf.clear();
            match monitor.recv(&mut buf, libc::MSG_DONTWAIT) {
                Ok(_) if announces_removal(&buf, index) => return Ok(true),
                Ok(_) => {}
                // Missed announcements (ENOBUFS): the child's exit tells.
                Err(_) => {}
            }
        }
    }
}

/// Exit the process with `code`, first handing its netfilter sockets to a child that closes
/// them once this process is gone, at a quiet moment (see the module doc).
pub fn exit(code: i32) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let socks = crate::nfnl::take_lingering();
    if !socks.is_empty() {
        hand_over(socks);
    }
    std::process::exit(code)
}

/// One RCU grace period (`MEMBARRIER_CMD_GLOBAL` is the kernel's `synchronize_rcu`; 20 ms of
/// sleep where it is missing). Raw calls only.
fn grace_period() {
    // SAFETY: raw system calls on values of our own.
    unsafe {
        if libc::syscall(
            libc::SYS_membarrier,
            1 as libc::c_int,
            0 as libc::c_uint,
            0 as libc::c_int,
        ) != 0
        {
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            libc::nanosleep(&pause, std::ptr::null_mut());
        }
    }
}

/// The `NFT_MSG_GETGEN` request: the ruleset generation, which every nf_tables commit bumps.
fn getgen_message() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, resource id 0.
    m
}

/// The generation in an `NFT_MSG_NEWGEN` answer (`NFTA_GEN_ID`, after the nfgenmsg).
fn genid_of(buf: &[u8]) -> Option<u32> {
    let (_, m) = nlmsgs(buf).find(|(kind, _)| *kind == (SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)?;
    let id = attr(m.get(20..)?, NFTA_GEN_ID)?;
    Some(u32::from_be_bytes(id.try_into().ok()?))
}

/// The current generation, asked on `fd`. Raw calls only.
fn generation(fd: RawFd, req: &[u8; 20]) -> Option<u32> {
    let mut buf = [0u8; 512];
    // SAFETY: send and receive on our own socket into a stack buffer.
    let n = unsafe {
        if libc::send(fd, req.as_ptr().cast(), req.len(), 0) < 0 {
            return None;
        }
        libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)
    };
    genid_of(buf.get(..usize::try_from(n).ok()?)?)
}

/// Wait for a moment when closing a netfilter socket of this namespace waits for nothing and
/// holds up no one. Its release waits for the namespace's nf_tables destroy work in flight
/// (one grace period after a commit that deleted something), holding the commit lock: closing
/// right away would only move the wait onto the next transaction (the next plugin's), and
/// closing two grace periods later still met the deletions of the next DEL in a busy
/// namespace. So: until no transaction at all was committed for two grace periods (the
/// generation stands still), at most `QUIET_WAIT_SECS`. Raw calls only.
fn wait_for_quiet(fd: RawFd) {
    let req = getgen_message();
    let mut deadline: libc::timespec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime into a local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut deadline) };
    deadline.tv_sec = deadline.tv_sec.saturating_add(QUIET_WAIT_SECS.into());
    loop {
        let before = generation(fd, &req);
        grace_period();
        grace_period();
        let after = generation(fd, &req);
        let mut now: libc::timespec = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let late = (now.tv_sec, now.tv_nsec) >= (deadline.tv_sec, deadline.tv_nsec);
        if before.is_none() || before == after || late {
            return;
        }
    }
}

/// Fork a child holding `socks` that closes them after this process has closed its copies, at
/// a quiet moment ([`wait_for_quiet`]); on failure the sockets are closed here.
fn hand_over(socks: Vec<Socket>) {
    let mut fds: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let Some(&first) = fds.first() else { return };
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe writes two descriptors into the array.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return;
    }
    fds.push(pipe[0]);
    let (rd, wr) = (pipe[0], pipe[1]);
    // SAFETY: the child reads from a pipe and closes descriptors: raw calls only.
    let _ = unsafe {
        spawn(&fds, move || {
            // End of file: the parent has closed its copies of the sockets.
            let mut b = [0u8; 1];
            while libc::read(rd, b.as_mut_ptr().cast(), 1) > 0 {}
            wait_for_quiet(first);
            0
        })
    };
    drop(socks);
    // SAFETY: our own pipe descriptors, closed once.
    unsafe {
        libc::close(wr);
        libc::close(rd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dellink_request_names_the_link() {
        let m = dellink_message(0x0102_0304);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_DELLINK);
        assert_eq!(
            u32::from_ne_bytes(m[20..24].try_into().unwrap()),
            0x0102_0304
        );
    }

    #[test]
    fn a_generation_is_asked_and_read() {
        let req = getgen_message();
        assert_eq!(u16::from_ne_bytes([req[4], req[5]]), (10 << 8) | 16);
        let mut newgen = vec![0u8; 20];
        newgen[4..6].copy_from_slice(&((10u16 << 8) | 15).to_ne_bytes());
        // NFTA_GEN_PROC_PID first, then NFTA_GEN_ID.
        newgen.extend_from_slice(&[8, 0, 2, 0, 0, 0, 0, 7]);
        newgen.extend_from_slice(&[8, 0, 1, 0, 0, 0, 1, 2]);
        newgen[0..4].copy_from_slice(&36u32.to_ne_bytes());
        assert_eq!(genid_of(&newgen), Some(0x102));
        assert_eq!(genid_of(&newgen[..30]), None, "truncated");
        newgen[4] = 2;
        assert_eq!(genid_of(&newgen), None, "another message");
        assert_eq!(genid_of(&[]), None);
    }

    #[test]
    fn acks_and_announcements_are_read() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(libc::ENODEV));
        assert_eq!(ack_errno(&ack[..10]), None);

        let del = dellink_message(7);
        assert!(announces_removal(&del, 7));
        assert!(!announces_removal(&del, 8));
        let mut two = dellink_message(3).to_vec();
        two[4..6].copy_from_slice(&16u16.to_ne_bytes()); // RTM_NEWLINK
        two.extend_from_slice(&del);
        assert!(announces_removal(&two, 7));
        assert!(!announces_removal(&two, 3));
        assert!(!announces_removal(&[0u8; 40], 0));
    }
}
