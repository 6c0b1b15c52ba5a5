//! A tokio netlink socket built from an already-open `netlink_sys::Socket`.
//!
//! netlink-sys' own `TokioSocket::from_raw_fd` unwraps the registration with the reactor; this
//! wrapper makes that step fallible, so opening a socket can never panic the plugin.

use std::io;
use std::task::{ready, Context, Poll};

use netlink_sys::{AsyncSocket, Socket, SocketAddr};
use tokio::io::unix::AsyncFd;

pub(crate) struct NlSocket(AsyncFd<Socket>);

impl NlSocket {
    /// Register `socket` with the reactor of the runtime the caller has entered.
    pub(crate) fn new(socket: Socket) -> io::Result<NlSocket> {
        socket.set_non_blocking(true)?;
        // SAFETY: `Socket` owns its file descriptor (it closes it on drop, and only then), and
        // `as_raw_fd` always returns that same descriptor; the `AsyncFd` takes ownership of the
        // socket, so the descriptor stays open and unchanged for the `AsyncFd`'s whole life.
        let fd = unsafe { AsyncFd::register(socket) }?;
        Ok(NlSocket(fd))
    }
}

impl AsyncSocket for NlSocket {
    fn socket_ref(&self) -> &Socket {
        self.0.get_ref()
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self.0.get_mut()
    }

    fn new(protocol: isize) -> io::Result<Self> {
        NlSocket::new(Socket::new(protocol)?)
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().send(buf, 0)) {
                return Poll::Ready(r);
            }
        }
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        addr: &SocketAddr,
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().send_to(buf, addr, 0)) {
                return Poll::Ready(r);
            }
        }
    }

    fn poll_recv<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<()>>
    where
        B: bytes::BufMut,
    {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().recv(buf, 0)) {
                return Poll::Ready(r.map(|_| ()));
            }
        }
    }

    fn poll_recv_from<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<SocketAddr>>
    where
        B: bytes::BufMut,
    {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().recv_from(buf, 0)) {
                return Poll::Ready(r.map(|(_, addr)| addr));
            }
        }
    }

    fn poll_recv_from_full(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Vec<u8>, SocketAddr)>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(r) = guard.try_io(|s| s.get_ref().recv_from_full()) {
                return Poll::Ready(r);
            }
        }
    }
}
