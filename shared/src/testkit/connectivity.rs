//! Connectivity checks between sandbox namespaces, every wait bounded.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::sandbox::Sandbox;

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `from` gets an echo reply from `to` within about `timeout` (several 1-packet tries,
/// so neighbour discovery and IPv6 DAD have time to settle).
pub fn ping(from: &Sandbox, to: IpAddr, timeout: Duration) -> bool {
    let target = to.to_string();
    wait_until(timeout, || {
        from.exec("ping", &["-c", "1", "-W", "1", "-n", "-q", &target])
            .status
            .success()
    })
}

/// Echo `payload` through a TCP server in `server` at `addr:port`, from a client in `client`
/// connecting to `dst:dst_port` (equal to addr:port unless a mapping sits between). Returns what
/// came back.
pub fn tcp_roundtrip(
    server: &Sandbox,
    listen: SocketAddr,
    client: &Sandbox,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let server_ns = server.netns();
    let client_ns = client.netns();
    // The previous round's server socket on the same port may not be gone yet (seen once in
    // ~30 runs: EADDRINUSE right after a round trip on that port): a few tries.
    let bind = || TcpListener::bind(listen);
    let mut tries = 0;
    let listener = loop {
        match server_ns.run(bind).map_err(|e| e.to_string())? {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            r => break r.map_err(|e| format!("bind {listen}: {e}"))?,
        }
    };
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let payload = b"cni-test-tcp".to_vec();
    std::thread::scope(|s| {
        let srv = s.spawn(|| -> Result<(), String> {
            let start = Instant::now();
            let (mut conn, _) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if start.elapsed() > timeout {
                            return Err("server: no connection".into());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(format!("accept: {e}")),
                }
            };
            conn.set_nonblocking(false).map_err(|e| e.to_string())?;
            conn.set_read_timeout(Some(timeout))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 64];
            let n = conn
                .read(&mut buf)
                .map_err(|e| format!("server read: {e}"))?;
            conn.write_all(&buf[..n])
                .map_err(|e| format!("server write: {e}"))?;
            Ok(())
        });
        let got = client_ns
            .run(|| -> Result<Vec<u8>, String> {
                let mut c = TcpStream::connect_timeout(&dst, timeout)
                    .map_err(|e| format!("connect {dst}: {e}"))?;
                c.set_read_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                c.write_all(&payload).map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 64];
                let n = c.read(&mut buf).map_err(|e| format!("client read: {e}"))?;
                buf.truncate(n);
                Ok(buf)
            })
            .map_err(|e| e.to_string())?;
        let served = srv
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        let got = got?;
        served?;
        Ok(got)
    })
}

/// Echo a datagram through a UDP server in `server` bound to `listen`, sent by a client in
/// `client` to `dst`. Returns the reply.
pub fn udp_roundtrip(
    server: &Sandbox,
    listen: SocketAddr,
    client: &Sandbox,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let server_ns = server.netns();
    let client_ns = client.netns();
    let sock = server_ns
        .run(|| UdpSocket::bind(listen))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("bind {listen}: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let unspecified: SocketAddr = if dst.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    std::thread::scope(|s| {
        let srv = s.spawn(|| -> Result<(), String> {
            let mut buf = [0u8; 64];
            let (n, from) = sock
                .recv_from(&mut buf)
                .map_err(|e| format!("server recv: {e}"))?;
            sock.send_to(&buf[..n], from)
                .map_err(|e| format!("server send: {e}"))?;
            Ok(())
        });
        let got = client_ns
            .run(|| -> Result<Vec<u8>, String> {
                let c = UdpSocket::bind(unspecified).map_err(|e| e.to_string())?;
                c.set_read_timeout(Some(timeout))
                    .map_err(|e| e.to_string())?;
                c.send_to(b"cni-test-udp", dst)
                    .map_err(|e| format!("send {dst}: {e}"))?;
                let mut buf = vec![0u8; 64];
                let (n, _) = c
                    .recv_from(&mut buf)
                    .map_err(|e| format!("client recv: {e}"))?;
                buf.truncate(n);
                Ok(buf)
            })
            .map_err(|e| e.to_string())?;
        let served = srv
            .join()
            .map_err(|_| "server thread panicked".to_string())?;
        let got = got?;
        served?;
        Ok(got)
    })
}
