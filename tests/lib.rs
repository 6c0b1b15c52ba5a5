//! Helpers shared by the integration tests in this folder (one file per plugin or concern).
//! Each test file is a `[[test]]` target in `Cargo.toml`.

pub mod cnitool_kit;

pub use cni_shared::testkit;
