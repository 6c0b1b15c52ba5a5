//! Addresses with a prefix length (`10.1.2.3/24`), as the spec writes them: the host bits are kept.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Deserializer, Serializer};

/// Parse `addr/prefix` strictly: both parts required, prefix within the family's length.
pub fn parse_cidr(s: &str) -> std::result::Result<IpNetwork, String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/prefix)"))?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| format!("{s:?}: {prefix:?} is not a prefix length"))?;
    IpNetwork::new(ip, prefix).map_err(|_| format!("{s:?}: prefix /{prefix} is too long"))
}

/// The network address of a CIDR (host bits cleared), as a network.
pub fn network_of(net: &IpNetwork) -> IpNetwork {
    // The prefix comes from a valid IpNetwork, so `new` cannot fail; fall back to the input.
    IpNetwork::new(net.network(), net.prefix()).unwrap_or(*net)
}

/// serde for `IpNetwork` as a CIDR string.
pub mod serde_cidr {
    use super::*;

    pub fn serialize<S: Serializer>(net: &IpNetwork, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}/{}", net.ip(), net.prefix()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IpNetwork, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_host_bits() {
        let n = parse_cidr("10.1.2.3/24").unwrap();
        assert_eq!(n.ip().to_string(), "10.1.2.3");
        assert_eq!(n.prefix(), 24);
        assert_eq!(network_of(&n).to_string(), "10.1.2.0/24");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "10.1.2.3",
            "10.1.2.3/33",
            "x/24",
            "10.1.2.3/",
            "::1/129",
            "",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
        assert!(parse_cidr("fd00::5/64").is_ok());
    }
}
