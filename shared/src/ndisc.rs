//! Unsolicited IPv6 neighbour advertisements (RFC 4861 section 7.2.6): what the kernel sends
//! for a link's addresses when `ndisc_notify` is on, sent once from here instead, so that the
//! container's `/proc/sys` stays untouched (its first lookup in a new namespace costs ~1 ms per
//! 1000 namespaces on the host). Neighbours that cached another MAC for a reused address
//! update it at once (the Override flag) rather than after their reachability probes fail.
//!
//! Call it from a thread in the link's namespace, after the link is up and its addresses are
//! usable (added `nodad`: a tentative address cannot be a source).

use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::mac::Mac;

const NEIGHBOUR_ADVERTISEMENT: u8 = 136;
const OVERRIDE: u8 = 0x20;
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// RFC 4861: neighbour discovery packets carry hop limit 255 (a receiver drops any other).
const HOP_LIMIT: libc::c_int = 255;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The ICMPv6 message announcing that `target` is at `mac` (checksum left to the kernel).
pub fn advertisement(target: &Ipv6Addr, mac: Mac) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = NEIGHBOUR_ADVERTISEMENT;
    p[4] = OVERRIDE;
    p[8..24].copy_from_slice(&target.octets());
    p[24] = TARGET_LINK_LAYER_ADDRESS;
    p[25] = 1; // option length in units of 8 bytes
    p[26..].copy_from_slice(&mac.octets());
    p
}

/// Send one advertisement per address of `addrs` to all nodes on link `ifindex`, each from the
/// address it announces.
pub fn announce(ifindex: u32, mac: Mac, addrs: &[Ipv6Addr]) -> io::Result<()> {
    for a in addrs {
        let sock = socket(ifindex)?;
        bind(&sock, a, ifindex)?;
        let to = sockaddr(&ALL_NODES, ifindex);
        let p = advertisement(a, mac);
        // SAFETY: `p` and `to` outlive the call; the lengths are theirs.
        let sent = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                p.as_ptr().cast(),
                p.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                socklen::<libc::sockaddr_in6>(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn socket(ifindex: u32) -> io::Result<OwnedFd> {
    // SAFETY: socket() with constant arguments; the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET6,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMPV6,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let index =
        libc::c_int::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    setsockopt(&sock, libc::IPV6_MULTICAST_HOPS, HOP_LIMIT)?;
    setsockopt(&sock, libc::IPV6_MULTICAST_IF, index)?;
    setsockopt(&sock, libc::IPV6_MULTICAST_LOOP, 0)?;
    Ok(sock)
}

fn setsockopt(sock: &OwnedFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` outlives the call; the length is its own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            opt,
            std::ptr::from_ref(&value).cast(),
            socklen::<libc::c_int>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind(sock: &OwnedFd, addr: &Ipv6Addr, ifindex: u32) -> io::Result<()> {
    let sa = sockaddr(addr, ifindex);
    // SAFETY: `sa` outlives the call; the length is its own.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            std::ptr::from_ref(&sa).cast(),
            socklen::<libc::sockaddr_in6>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A socket address on link `ifindex` (the scope of a link-local or multicast address; the
/// kernel ignores it for a global one).
fn sockaddr(addr: &Ipv6Addr, ifindex: u32) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sa.sin6_addr.s6_addr = addr.octets();
    let scoped = addr.is_multicast() || addr.segments()[0] & 0xffc0 == 0xfe80;
    if scoped {
        sa.sin6_scope_id = ifindex;
    }
    sa
}

fn socklen<T>() -> libc::socklen_t {
    // The structures passed are a few dozen bytes.
    std::mem::size_of::<T>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_layout() {
        let mac: Mac = "02:42:ac:11:00:02".parse().unwrap();
        let p = advertisement(&"fd00::5".parse().unwrap(), mac);
        assert_eq!(p[0], 136, "type");
        assert_eq!(p[1], 0, "code");
        assert_eq!(&p[2..4], &[0, 0], "checksum: the kernel's");
        assert_eq!(
            &p[4..8],
            &[0x20, 0, 0, 0],
            "Override only: not a router, unsolicited"
        );
        assert_eq!(&p[8..24], &"fd00::5".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(&p[24..26], &[2, 1], "target link-layer address, 8 bytes");
        assert_eq!(&p[26..], &[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
    }
}
