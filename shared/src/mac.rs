//! Ethernet MAC addresses: parse, format, and random locally administered unicast addresses.
//!
//! The text form is six two-digit hex octets separated by `:` (`-` is accepted when parsing),
//! formatted lower-case: `02:42:ac:11:00:02`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CniError, Result};

/// A 48-bit Ethernet hardware address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// All zeroes: the VXLAN "default destination" FDB key.
    pub const ZERO: Mac = Mac([0; 6]);

    /// Parse `value`; a bad value is an invalid-config error (code 7) naming `key`.
    pub fn parse(key: &str, value: &str) -> Result<Mac> {
        value.parse().map_err(|why: String| {
            CniError::invalid_config(format!("{key}: {value:?} is not a MAC address ({why})"))
        })
    }

    /// From a kernel attribute: exactly six bytes, else `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Mac> {
        <[u8; 6]>::try_from(bytes).ok().map(Mac)
    }

    /// A random unicast address with the locally administered bit set (`x2:`, `x6:`, `xa:`,
    /// `xe:` first octet), like the kernel's `eth_random_addr`.
    pub fn random_local() -> Result<Mac> {
        let mut b = [0u8; 6];
        random_bytes(&mut b)?;
        b[0] = (b[0] & 0xfe) | 0x02;
        Ok(Mac(b))
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The IPv6 link-local address the kernel makes from this MAC in `addrgenmode eui64` (the
    /// default): `fe80::` and the modified EUI-64 interface identifier (RFC 4291 appendix A:
    /// `ff:fe` in the middle, the universal/local bit flipped).
    pub fn ipv6_link_local(&self) -> std::net::Ipv6Addr {
        let b = self.0;
        let mut a = [0u8; 16];
        a[..2].copy_from_slice(&[0xfe, 0x80]);
        a[8..].copy_from_slice(&[b[0] ^ 0x02, b[1], b[2], 0xff, 0xfe, b[3], b[4], b[5]]);
        a.into()
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for Mac {
    /// Why the text is not a MAC address.
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Mac, String> {
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for (i, slot) in out.iter_mut().enumerate() {
            let part = parts
                .next()
                .ok_or_else(|| format!("expected 6 octets, found {i}"))?;
            if part.len() != 2 {
                return Err(format!("octet {part:?} is not two hex digits"));
            }
            *slot = u8::from_str_radix(part, 16)
                .map_err(|_| format!("octet {part:?} is not two hex digits"))?;
        }
        if parts.next().is_some() {
            return Err("more than 6 octets".into());
        }
        Ok(Mac(out))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|why| serde::de::Error::custom(format!("{s:?} is not a MAC address ({why})")))
    }
}

/// Fill `buf` from the kernel's random source (`getrandom(2)`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, a live, writable slice we own
        // exclusively for the duration of the call; getrandom writes at most `len` bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(CniError::io(format!("getrandom: {e}")));
        }
        filled += n.unsigned_abs();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_link_local_is_the_kernels_eui64() {
        // What `ip -6 addr` showed for a veth with this MAC in a fresh namespace.
        let m: Mac = "f6:63:e2:b7:d8:c7".parse().unwrap();
        assert_eq!(m.ipv6_link_local().to_string(), "fe80::f463:e2ff:feb7:d8c7");
        let u: Mac = "00:16:3e:00:00:01".parse().unwrap();
        assert_eq!(u.ipv6_link_local().to_string(), "fe80::216:3eff:fe00:1");
    }

    #[test]
    fn parses_and_formats() {
        let m = Mac::parse("mac", "02:42:AC:11:00:02").unwrap();
        assert_eq!(m.0, [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]);
        assert_eq!(m.to_string(), "02:42:ac:11:00:02");
        assert_eq!(Mac::parse("mac", "02-42-ac-11-00-02").unwrap(), m);
        assert_eq!(Mac::from_bytes(&m.0), Some(m));
        assert_eq!(Mac::from_bytes(&[1, 2, 3]), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        for bad in [
            "",
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "02:42:ac:11:00:0g",
            "2:42:ac:11:00:02",
            "02:42:ac:11:00:002",
            "02:42-ac:11:00:02",
        ] {
            let e = Mac::parse("args.MAC", bad).unwrap_err();
            assert_eq!(e.code, 7, "{bad}");
            assert!(e.msg.starts_with("args.MAC: "), "{}", e.msg);
        }
    }

    #[test]
    fn random_is_local_unicast() {
        let a = Mac::random_local().unwrap();
        let b = Mac::random_local().unwrap();
        assert_ne!(a, b);
        for m in [a, b] {
            assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
            assert!(!m.is_multicast());
        }
    }

    #[test]
    fn serde_roundtrip() {
        let m: Mac = serde_json::from_str("\"0a:00:00:00:00:01\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0a:00:00:00:00:01\"");
        assert!(serde_json::from_str::<Mac>("\"nope\"").is_err());
    }
}
