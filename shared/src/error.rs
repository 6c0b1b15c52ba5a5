//! The one error type of the suite: a CNI error code plus a message that names the key or value at
//! fault. Every fallible function on the spec path returns [`Result`]; `skel` prints the error as
//! `{"cniVersion","code","msg","details"}` on stdout and exits non-zero.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Well-known CNI error codes (SPEC.md "Well-known Error Codes"). 100 and above are ours.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables (CNI_COMMAND, CNI_CONTAINERID, ...).
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content (malformed JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later (a transient condition, e.g. a lock held too long).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available (no new ADDs should be sent).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing containers may be damaged.
    pub const NOT_AVAILABLE_DAMAGED: u32 = 51;
    /// A failure of the host (kernel, netlink, firewall) that fits no well-known code.
    /// Same number as the reference plugins' `ErrInternal`.
    pub const INTERNAL: u32 = 999;
}

/// A CNI error: code, message and optional details, exactly as the spec prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// The result type of the spec path.
pub type Result<T, E = CniError> = std::result::Result<T, E>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Prefix the message with what was being done: `"<ctx>: <msg>"`. The code is kept.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        Self::new(code::INCOMPATIBLE_VERSION, msg)
    }
    pub fn unsupported_field(msg: impl Into<String>) -> Self {
        Self::new(code::UNSUPPORTED_FIELD, msg)
    }
    pub fn unknown_container(msg: impl Into<String>) -> Self {
        Self::new(code::UNKNOWN_CONTAINER, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_ENVIRONMENT, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(code::IO, msg)
    }
    pub fn decode(msg: impl Into<String>) -> Self {
        Self::new(code::DECODE, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(code::INVALID_CONFIG, msg)
    }
    pub fn try_again(msg: impl Into<String>) -> Self {
        Self::new(code::TRY_AGAIN_LATER, msg)
    }
    pub fn not_available(msg: impl Into<String>) -> Self {
        Self::new(code::NOT_AVAILABLE, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(code::INTERNAL, msg)
    }

    /// The JSON object printed on stdout, in the given spec version.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "code": self.code,
            "msg": self.msg,
            "details": self.details,
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (CNI error {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// Attach a code and a message to a foreign error (`io::Error`, netlink, ...).
pub trait ResultExt<T> {
    /// On error, build a [`CniError`] with `code` and the message `"<what>: <error>"`.
    fn or_cni(self, code: u32, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> ResultExt<T> for std::result::Result<T, E> {
    fn or_cni(self, code: u32, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| CniError::new(code, format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_spec_shape() {
        let e = CniError::invalid_config("mtu: must be at least 68").with_details("got 10");
        let v = e.to_json("1.1.0");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "mtu: must be at least 68");
        assert_eq!(v["details"], "got 10");
    }

    #[test]
    fn context_keeps_the_code() {
        let e = CniError::io("disk full").context("writing lease 10.0.0.2");
        assert_eq!(e.code, code::IO);
        assert_eq!(e.msg, "writing lease 10.0.0.2: disk full");
    }

    #[test]
    fn or_cni_wraps_foreign_errors() {
        let r: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let e = r.or_cni(code::IO, || "opening /x".into()).unwrap_err();
        assert_eq!(e.code, code::IO);
        assert!(e.msg.starts_with("opening /x: "), "{}", e.msg);
    }
}
