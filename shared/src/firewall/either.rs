//! The backend when the config names none ([`Backend::Auto`]): nftables, or iptables on a host
//! where nftables cannot be used (neither libnftables nor the `nft` command; the iptables tools
//! alone are common on minimal and older nodes, where the reference plugins work with their
//! iptables default). nftables needs that engine only to create its tables and chains, so a
//! host whose tables exist keeps using them without it.
//!
//! - ADD: nftables; when it answers "not available" (code 50), iptables.
//! - CHECK and STATUS: nftables, else iptables (the entries are wherever ADD put them).
//! - DEL and GC: both, since the ADD may have been made with either (say, before `nft` was
//!   installed); a backend that is not available here cannot have entries to remove. (DEL uses
//!   this driver whatever the config names: entries may predate a change of the key.)
//!
//! [`Backend::Auto`]: super::Backend::Auto

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::hostport::{self, DelHint, Flush, Forward, HostPorts, Options, Published};
use super::masq_ipt::IptMasq;
use super::masq_nft::NftMasq;
use super::{Masquerade, Tag};
use crate::error::{code, CniError, Result};

fn unavailable(e: &CniError) -> bool {
    e.code == code::NOT_AVAILABLE
}

/// ADD: `nft`, or `ipt` when nftables is not available here.
fn add<T>(
    what: &str,
    nft: impl FnOnce() -> Result<T>,
    ipt: impl FnOnce() -> Result<T>,
) -> Result<T> {
    match nft() {
        Err(e) if unavailable(&e) => match ipt() {
            Err(i) if unavailable(&i) => Err(neither(&e, &i)),
            r => {
                tracing::info!("{what}: {e}; using iptables");
                r
            }
        },
        r => r,
    }
}

/// CHECK and STATUS: `nft`, else `ipt`. When both fail, the error says what each found (the
/// entries are in whichever backend ADD used), with nftables' code; a backend that is not
/// available here is left out of it.
fn either(nft: impl FnOnce() -> Result<()>, ipt: impl FnOnce() -> Result<()>) -> Result<()> {
    let Err(e) = nft() else {
        return Ok(());
    };
    match ipt() {
        Ok(()) => Ok(()),
        Err(i) if unavailable(&e) && unavailable(&i) => Err(neither(&e, &i)),
        Err(i) if unavailable(&e) => Err(i),
        Err(i) if unavailable(&i) => Err(e),
        Err(i) => Err(CniError {
            msg: format!("{} (nor with iptables: {})", e.msg, i.msg),
            ..e
        }),
    }
}

/// DEL and GC: both; the first error that is not "not available".
fn both<T>(nft: Result<T>, ipt: Result<T>, join: impl FnOnce(T, T) -> T, none: T) -> Result<T> {
    let keep = |r: Result<T>| match r {
        Err(e) if unavailable(&e) => {
            tracing::debug!("{e}");
            Ok(None)
        }
        r => r.map(Some),
    };
    match (keep(nft)?, keep(ipt)?) {
        (Some(a), Some(b)) => Ok(join(a, b)),
        (Some(a), None) | (None, Some(a)) => Ok(a),
        (None, None) => Ok(none),
    }
}

fn concat<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}

fn neither(nft: &CniError, ipt: &CniError) -> CniError {
    CniError::not_available(format!(
        "no firewall backend is usable here: {}; {}",
        nft.msg, ipt.msg
    ))
}

/// Masquerade with [`Backend::Auto`](super::Backend::Auto).
pub struct AutoMasq;

impl Masquerade for AutoMasq {
    fn add(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        add(
            "ipMasq",
            || NftMasq.add(tag, addrs),
            || IptMasq.add(tag, addrs),
        )
    }

    fn del(&self, tag: &Tag, hints: &[IpAddr]) -> Result<()> {
        // In turn, not at once: the first error is kept, both run.
        let nft = NftMasq.del(tag, hints);
        both(nft, IptMasq.del(tag, hints), |(), ()| (), ())
    }

    fn check(&self, tag: &Tag, addrs: &[IpNetwork]) -> Result<()> {
        either(|| NftMasq.check(tag, addrs), || IptMasq.check(tag, addrs))
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>) -> Result<()> {
        let nft = NftMasq.gc(network, keep);
        both(nft, IptMasq.gc(network, keep), |(), ()| (), ())
    }

    fn status(&self) -> Result<()> {
        either(|| NftMasq.status(), || IptMasq.status())
    }
}

/// Host ports with [`Backend::Auto`](super::Backend::Auto).
pub struct AutoHostPorts {
    nft: hostport::nft::NftHostPorts,
    ipt: hostport::ipt::IptHostPorts,
}

impl AutoHostPorts {
    pub fn new(opts: Options) -> AutoHostPorts {
        AutoHostPorts {
            nft: hostport::nft::NftHostPorts::new(opts.clone()),
            ipt: hostport::ipt::IptHostPorts::new(opts),
        }
    }
}

impl HostPorts for AutoHostPorts {
    fn add(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        add(
            "portMappings",
            || self.nft.add(tag, fwds),
            || self.ipt.add(tag, fwds),
        )
    }

    fn del(&self, tag: &Tag, hint: &DelHint, flush: &mut Flush) -> Result<Vec<Published>> {
        let nft = self.nft.del(tag, hint, flush);
        let ipt = self.ipt.del(tag, hint, flush);
        both(nft, ipt, concat, Vec::new())
    }

    fn check(&self, tag: &Tag, fwds: &[Forward]) -> Result<()> {
        either(|| self.nft.check(tag, fwds), || self.ipt.check(tag, fwds))
    }

    fn gc(&self, network: &str, keep: &HashSet<Tag>, flush: &mut Flush) -> Result<Vec<Published>> {
        let nft = self.nft.gc(network, keep, flush);
        let ipt = self.ipt.gc(network, keep, flush);
        both(nft, ipt, concat, Vec::new())
    }

    fn status(&self) -> Result<()> {
        either(|| self.nft.status(), || self.ipt.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn na(m: &str) -> Result<()> {
        Err(CniError::not_available(m))
    }

    fn bad(m: &str) -> Result<()> {
        Err(CniError::internal(m))
    }

    #[test]
    fn add_falls_back_only_when_nftables_is_not_available() {
        assert!(add("k", || Ok(()), || bad("never run")).is_ok());
        assert!(add("k", || na("no nft"), || Ok(())).is_ok());
        let e = add("k", || bad("nft failed"), || Ok(())).unwrap_err();
        assert_eq!(
            e.msg, "nft failed",
            "a real failure is not hidden by a fallback"
        );
        let e = add("k", || na("no nft"), || na("no iptables")).unwrap_err();
        assert_eq!(e.code, code::NOT_AVAILABLE);
        assert!(
            e.msg.contains("no nft") && e.msg.contains("no iptables"),
            "{}",
            e.msg
        );
        let e = add("k", || na("no nft"), || bad("restore failed")).unwrap_err();
        assert_eq!(e.msg, "restore failed");
    }

    #[test]
    fn check_passes_with_either_and_says_what_each_found() {
        assert!(either(|| Ok(()), || bad("x")).is_ok());
        assert!(either(|| bad("missing in nft"), || Ok(())).is_ok());
        let e = either(|| bad("missing in nft"), || bad("missing in ipt")).unwrap_err();
        assert_eq!(e.msg, "missing in nft (nor with iptables: missing in ipt)");
        let e = either(|| bad("missing in nft"), || na("no ipt")).unwrap_err();
        assert_eq!(e.msg, "missing in nft");
        let e = either(|| na("no nft"), || bad("missing in ipt")).unwrap_err();
        assert_eq!(e.msg, "missing in ipt");
        let e = either(|| na("no nft"), || na("no ipt")).unwrap_err();
        assert_eq!(e.code, code::NOT_AVAILABLE);
    }

    #[test]
    fn del_runs_both_and_ignores_a_missing_backend() {
        let v = |x: u8| -> Result<Vec<u8>> { Ok(vec![x]) };
        let join = concat::<u8>;
        assert_eq!(both(v(1), v(2), join, Vec::new()).unwrap(), [1, 2]);
        let na_v = || -> Result<Vec<u8>> { Err(CniError::not_available("none")) };
        assert_eq!(both(na_v(), v(2), join, Vec::new()).unwrap(), [2]);
        assert!(both(na_v(), na_v(), join, Vec::new()).unwrap().is_empty());
        let bad_v = || -> Result<Vec<u8>> { Err(CniError::internal("boom")) };
        assert_eq!(
            both(v(1), bad_v(), join, Vec::new()).unwrap_err().msg,
            "boom"
        );
    }
}
