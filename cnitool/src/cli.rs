//! Command line and environment: what to run, on which network, for which attachment.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use cni_shared::spec::GcAttachment;

pub const USAGE: &str = "\
usage:
  cnitool [options] add    <network-name> <netns-path>
  cnitool [options] check  <network-name> <netns-path>
  cnitool [options] del    <network-name> <netns-path>
  cnitool [options] gc     <network-name> [--valid <containerID>/<ifname>]...
  cnitool [options] status <network-name>

options:
  --container-id <id>   container ID (env CNI_CONTAINERID; default: derived from the netns path)
  -i, --ifname <name>   interface name (env CNI_IFNAME; default eth0)
  --cache-dir <dir>     result cache directory (env CNI_CACHE_DIR; default /var/lib/cni)
  --valid <cid>/<if>    gc: an attachment that is still in use (repeatable; env
                        CNI_VALID_ATTACHMENTS, comma- or space-separated)
  -h, --help            this help

environment: NETCONFPATH (default /etc/cni/net.d), CNI_PATH, CAP_ARGS (JSON object),
CNI_ARGS (K=V;K=V), CNI_LOG_LEVEL (default warn; logs go to stderr)";

/// The verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Check,
    Del,
    Gc,
    Status,
}

impl Verb {
    fn parse(s: &str) -> Option<Verb> {
        Some(match s {
            "add" => Verb::Add,
            "check" => Verb::Check,
            "del" => Verb::Del,
            "gc" => Verb::Gc,
            "status" => Verb::Status,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Check => "check",
            Verb::Del => "del",
            Verb::Gc => "gc",
            Verb::Status => "status",
        }
    }

    /// Whether the verb works on one attachment (and so needs a netns path).
    pub fn per_attachment(self) -> bool {
        matches!(self, Verb::Add | Verb::Check | Verb::Del)
    }
}

/// A parsed invocation; the environment's defaults are applied when it runs (`main.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub verb: Verb,
    pub network: String,
    pub netns: Option<PathBuf>,
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub valid: Vec<GcAttachment>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Help,
    Run(Invocation),
}

/// Parse the arguments (without the program name). Options may come before or after the verb.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed> {
    let mut positional = Vec::new();
    let mut container_id = None;
    let mut ifname = None;
    let mut cache_dir = None;
    let mut valid = Vec::new();
    let mut it = args.into_iter().map(|a| {
        a.into_string()
            .map_err(|a| anyhow!("argument {a:?} is not UTF-8"))
    });
    while let Some(arg) = it.next() {
        let arg = arg?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .transpose()?
                    .ok_or_else(|| anyhow!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "--container-id" => container_id = Some(value("--container-id")?),
            "-i" | "--ifname" => ifname = Some(value("--ifname")?),
            "--cache-dir" => cache_dir = Some(PathBuf::from(value("--cache-dir")?)),
            "--valid" => valid.push(parse_attachment(&value("--valid")?)?),
            "--" => {
                for rest in it.by_ref() {
                    positional.push(rest?);
                }
            }
            f if f.starts_with('-') && f.len() > 1 => bail!("unknown option {f}"),
            _ => positional.push(arg),
        }
    }
    let mut pos = positional.into_iter();
    let verb_s = pos.next().ok_or_else(|| anyhow!("missing command"))?;
    let verb = Verb::parse(&verb_s).ok_or_else(|| anyhow!("unknown command {verb_s:?}"))?;
    let network = pos
        .next()
        .ok_or_else(|| anyhow!("{}: missing network name", verb.as_str()))?;
    // The reference cnitool takes a netns for gc and status too: accepted and ignored.
    let netns = pos.next().map(PathBuf::from);
    if verb.per_attachment() && netns.is_none() {
        bail!("{}: missing netns path", verb.as_str());
    }
    if let Some(extra) = pos.next() {
        bail!("{}: unexpected argument {extra:?}", verb.as_str());
    }
    if !valid.is_empty() && verb != Verb::Gc {
        bail!("--valid is only for gc");
    }
    Ok(Parsed::Run(Invocation {
        verb,
        network,
        netns: netns.filter(|_| verb.per_attachment()),
        container_id,
        ifname,
        cache_dir,
        valid,
    }))
}

/// `<containerID>/<ifname>`.
pub fn parse_attachment(s: &str) -> Result<GcAttachment> {
    match s.split_once('/') {
        Some((cid, ifname)) if !cid.is_empty() && !ifname.is_empty() && !ifname.contains('/') => {
            Ok(GcAttachment {
                container_id: cid.to_string(),
                ifname: ifname.to_string(),
            })
        }
        _ => bail!("valid attachment {s:?}: want <containerID>/<ifname>"),
    }
}

/// `CNI_VALID_ATTACHMENTS`: attachments separated by commas or whitespace.
pub fn parse_attachment_list(s: &str) -> Result<Vec<GcAttachment>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| parse_attachment(p).context("CNI_VALID_ATTACHMENTS"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Invocation> {
        match parse(args.iter().map(OsString::from))? {
            Parsed::Run(i) => Ok(i),
            Parsed::Help => bail!("help"),
        }
    }

    #[test]
    fn verbs_and_positionals() {
        let i = run(&["add", "net", "/run/netns/x"]).unwrap();
        assert_eq!((i.verb, i.network.as_str()), (Verb::Add, "net"));
        assert_eq!(
            i.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/x"))
        );
        let i = run(&["status", "net"]).unwrap();
        assert_eq!((i.verb, i.netns), (Verb::Status, None));
        let i = run(&["gc", "net", "/ignored"]).unwrap();
        assert_eq!(
            i.netns, None,
            "gc ignores a netns like the reference accepts one"
        );
        assert!(run(&["add", "net"]).is_err());
        assert!(run(&["del"]).is_err());
        assert!(run(&["up", "net", "/x"]).is_err());
        assert!(run(&["add", "net", "/x", "extra"]).is_err());
        assert!(run(&[]).is_err());
        assert_eq!(parse([OsString::from("-h")]).unwrap(), Parsed::Help);
    }

    #[test]
    fn options_anywhere_in_both_spellings() {
        let i = run(&[
            "--cache-dir=/tmp/c",
            "del",
            "net",
            "--container-id",
            "abc",
            "/x",
            "-i",
            "net1",
        ])
        .unwrap();
        assert_eq!(i.cache_dir.as_deref(), Some(std::path::Path::new("/tmp/c")));
        assert_eq!(i.container_id.as_deref(), Some("abc"));
        assert_eq!(i.ifname.as_deref(), Some("net1"));
        assert!(run(&["add", "net", "/x", "--bogus"]).is_err());
        assert!(run(&["add", "net", "/x", "--ifname"]).is_err());
        assert!(run(&["add", "net", "/x", "--valid", "a/eth0"]).is_err());
    }

    #[test]
    fn valid_attachments() {
        let i = run(&["gc", "net", "--valid", "c1/eth0", "--valid=c2/net1"]).unwrap();
        assert_eq!(i.valid.len(), 2);
        assert_eq!(i.valid[1].container_id, "c2");
        assert_eq!(i.valid[1].ifname, "net1");
        for bad in ["c1", "/eth0", "c1/", "c1/a/b"] {
            assert!(parse_attachment(bad).is_err(), "{bad}");
        }
        let l = parse_attachment_list(" a/eth0, b/eth1\nc/eth2 ").unwrap();
        assert_eq!(l.len(), 3);
        assert!(parse_attachment_list("").unwrap().is_empty());
        assert!(parse_attachment_list("a").is_err());
    }
}
