//! CNI spec versions and the rules that depend on them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{CniError, Result};

/// A CNI spec version this suite speaks. Ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every version the plugins accept, oldest first (what VERSION reports).
    pub const ALL: [Version; 7] = [
        Version::V0_1_0,
        Version::V0_2_0,
        Version::V0_3_0,
        Version::V0_3_1,
        Version::V0_4_0,
        Version::V1_0_0,
        Version::V1_1_0,
    ];

    /// The newest version, used where no config names one (VERSION output, early errors).
    pub const LATEST: Version = Version::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1_0 => "0.1.0",
            Version::V0_2_0 => "0.2.0",
            Version::V0_3_0 => "0.3.0",
            Version::V0_3_1 => "0.3.1",
            Version::V0_4_0 => "0.4.0",
            Version::V1_0_0 => "1.0.0",
            Version::V1_1_0 => "1.1.0",
        }
    }

    /// The result shape of this version.
    pub fn result_shape(self) -> ResultShape {
        match self {
            Version::V0_1_0 | Version::V0_2_0 => ResultShape::Legacy,
            Version::V0_3_0 | Version::V0_3_1 | Version::V0_4_0 => ResultShape::Versioned,
            Version::V1_0_0 | Version::V1_1_0 => ResultShape::Current,
        }
    }

    /// Parse a `cniVersion` string. An absent or empty version means 0.1.0, as in libcni.
    pub fn parse_config_version(s: Option<&str>) -> Result<Version> {
        match s {
            None | Some("") => Ok(Version::V0_1_0),
            Some(s) => s.parse(),
        }
    }
}

/// The three result layouts the spec has had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// 0.1.0 and 0.2.0: `ip4`/`ip6` objects, routes inside them.
    Legacy,
    /// 0.3.0, 0.3.1, 0.4.0: `interfaces`, `ips` with `version`, top-level `routes`.
    Versioned,
    /// 1.0.0 and 1.1.0: `ips` without `version`; interface mtu/socketPath/pciID, rich routes.
    Current,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Version {
    type Err = CniError;

    fn from_str(s: &str) -> Result<Version> {
        Version::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::incompatible_version(format!(
                    "cniVersion: unsupported version {s:?} (supported: {})",
                    Version::ALL.map(Version::as_str).join(", ")
                ))
            })
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: CniError| serde::de::Error::custom(e.msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version() {
        for v in Version::ALL {
            assert_eq!(v.as_str().parse::<Version>().unwrap(), v);
        }
    }

    #[test]
    fn unknown_version_is_code_1() {
        let e = "0.5.0".parse::<Version>().unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.msg.contains("\"0.5.0\""), "{}", e.msg);
    }

    #[test]
    fn absent_version_is_0_1_0() {
        assert_eq!(
            Version::parse_config_version(None).unwrap(),
            Version::V0_1_0
        );
        assert_eq!(
            Version::parse_config_version(Some("")).unwrap(),
            Version::V0_1_0
        );
    }

    #[test]
    fn ordering_follows_release_order() {
        assert!(Version::V0_3_1 < Version::V0_4_0);
        assert!(Version::V0_4_0 < Version::V1_0_0);
        assert_eq!(Version::LATEST, Version::V1_1_0);
    }
}
