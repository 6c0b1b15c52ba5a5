//! Running iptables / ip6tables: `*-restore --noflush` for changes (one transaction per family
//! and call), `-S <chain>` to read one chain.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::{CniError, Result};
use crate::firewall::nftrule;
use crate::firewall::nftset::{IPV4, IPV6};
use crate::nfnl::Nfnl;

/// Which iptables: the one over nf_tables (`iptables-nft`, the default of current
/// distributions) or the legacy x_tables one (`iptables-legacy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Nft,
    Legacy,
}

/// The tools of one address family.
#[derive(Debug, Clone)]
pub struct Ipt {
    pub v6: bool,
    cmd: PathBuf,
    restore: PathBuf,
}

impl Ipt {
    /// The iptables (or ip6tables) tools; code 50 naming the backend when missing.
    pub fn new(v6: bool) -> Result<Ipt> {
        Ipt::for_key("ipMasqBackend", v6)
    }

    /// Like [`Ipt::new`], naming the config key `key` in the error.
    pub fn for_key(key: &str, v6: bool) -> Result<Ipt> {
        let (cmd, restore) = if v6 {
            ("ip6tables", "ip6tables-restore")
        } else {
            ("iptables", "iptables-restore")
        };
        let find = |name: &str| {
            super::find_tool(name).ok_or_else(|| {
                CniError::not_available(format!(
                    "{key} iptables: {name} not found in PATH, /usr/sbin or /sbin"
                ))
            })
        };
        Ok(Ipt {
            v6,
            cmd: find(cmd)?,
            restore: find(restore)?,
        })
    }

    /// The tools of one variant (`iptables-nft` and `iptables-nft-restore`, …), `None` when
    /// not installed. Without the suffixed names, plain `iptables` stands for the variant its
    /// `-V` names (`(nf_tables)`), or for legacy when no `iptables-nft` exists (an iptables
    /// older than the variants, 1.6, is legacy).
    pub fn variant(v6: bool, variant: Variant) -> Option<Ipt> {
        Ipt::variant_with(v6, variant, &super::find_tool)
    }

    /// [`Ipt::variant`] with the tools looked up by `find`.
    fn variant_with(
        v6: bool,
        variant: Variant,
        find: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Option<Ipt> {
        let base = if v6 { "ip6tables" } else { "iptables" };
        let tools = |suffix: &str| {
            Some(Ipt {
                v6,
                cmd: find(&format!("{base}{suffix}"))?,
                restore: find(&format!("{base}{suffix}-restore"))?,
            })
        };
        let plain_is_nft = || {
            let plain = tools("")?;
            let out = Command::new(&plain.cmd).arg("-V").output().ok()?;
            Some((
                plain,
                String::from_utf8_lossy(&out.stdout).contains("nf_tables"),
            ))
        };
        match variant {
            Variant::Nft => tools("-nft").or_else(|| match plain_is_nft() {
                Some((plain, true)) => Some(plain),
                _ => None,
            }),
            Variant::Legacy => tools("-legacy").or_else(|| {
                if find(&format!("{base}-nft")).is_some() {
                    return None;
                }
                match plain_is_nft() {
                    Some((plain, false)) => Some(plain),
                    _ => None,
                }
            }),
        }
    }

    /// Whether these tools are iptables-nft (their binary, links followed, is
    /// `xtables-nft-multi` or named `*-nft*`), so that their `nat` table is nf_tables'
    /// `ip`/`ip6 nat` and [`nft_delete`] can change it without a process. False when unsure
    /// (a wrapper script, say), which only means the slower way through the tools. Not `-V`,
    /// which [`Ipt::variant`] runs where a wrong guess would look in the wrong tables: a
    /// process costs 2–3 ms on DEL's path.
    pub fn is_nft(&self) -> bool {
        std::fs::canonicalize(&self.cmd)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().contains("nft")))
            .unwrap_or(false)
    }

    /// `iptables` or `ip6tables`, for messages.
    pub fn name(&self) -> &'static str {
        if self.v6 {
            "ip6tables"
        } else {
            "iptables"
        }
    }

    /// Apply a restore file without flushing anything not declared in it. The error is the
    /// tool's stderr.
    pub fn restore(&self, input: &str) -> std::result::Result<(), String> {
        tracing::debug!(input, "{}-restore", self.name());
        let mut child = Command::new(&self.restore)
            .args(["--noflush", "-w", "10"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("executing {}: {e}", self.restore.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {}: {e}", self.restore.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Run `iptables -w 10 <args>`: Ok(true) on success, Ok(false) when it exited non-zero.
    pub fn run(&self, args: &[&str]) -> Result<bool> {
        let out = Command::new(&self.cmd)
            .args(["-w", "10"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| CniError::internal(format!("executing {}: {e}", self.cmd.display())))?;
        if !out.status.success() {
            tracing::debug!(
                "{} {}: {}",
                self.name(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.status.success())
    }

    /// The rules of every chain of `table` (`-S` lines, `-A` only).
    pub fn list_table(&self, table: &str) -> Result<Vec<String>> {
        self.list_chain(table, "").map(Option::unwrap_or_default)
    }

    /// The rules of one chain (`-S` lines, `-A` only); `None` when the chain does not exist.
    /// An empty `chain` lists the whole table.
    pub fn list_chain(&self, table: &str, chain: &str) -> Result<Option<Vec<String>>> {
        self.list(table, chain, false)
    }

    /// [`Ipt::list_chain`] with each rule's counters (`-c <packets> <bytes>` in the line: not
    /// for restore input).
    pub fn list_chain_counted(&self, table: &str, chain: &str) -> Result<Option<Vec<String>>> {
        self.list(table, chain, true)
    }

    fn list(&self, table: &str, chain: &str, counters: bool) -> Result<Option<Vec<String>>> {
        let out = Command::new(&self.cmd)
            .args(["-w", "10", "-t", table, "-S"])
            .args((!chain.is_empty()).then_some(chain))
            .args(counters.then_some("-v"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| CniError::internal(format!("executing {}: {e}", self.cmd.display())))?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .map(str::to_string)
                .collect(),
        ))
    }

    pub fn error(&self, what: &str, stderr: &str) -> CniError {
        CniError::internal(format!("{}: {what}: {stderr}", self.name()))
    }
}

/// What nf_tables says of `chain` in iptables-nft's `nat` table of the family (of the table
/// itself when `chain` is `None`), in the current namespace, with one request and no process
/// ([`nftrule::exists`]); `None` without a socket.
pub fn nft_nat_lookup(nl: Option<&mut Nfnl>, v6: bool, chain: Option<&str>) -> Option<bool> {
    nftrule::exists(nl?, family(v6), "nat", chain)
}

fn family(v6: bool) -> u8 {
    if v6 {
        IPV6
    } else {
        IPV4
    }
}

/// Whether the legacy iptables (x_tables) has a `nat` table of the family in the current
/// namespace (it appears there once any rule or listing used it).
fn legacy_nat_loaded(v6: bool) -> bool {
    let names = if v6 {
        "/proc/thread-self/net/ip6_tables_names"
    } else {
        "/proc/thread-self/net/ip_tables_names"
    };
    std::fs::read_to_string(names).is_ok_and(|s| s.lines().any(|l| l == "nat"))
}

/// Whether `chain` (without one: the table) may be in the legacy tables' `nat` table of the
/// family: false when there is no such table or when its chains, read without a process
/// ([`super::xtables::nat_chains`]), do not include it; true when they cannot be read.
pub fn legacy_nat_may_have(v6: bool, chain: Option<&str>) -> bool {
    if !legacy_nat_loaded(v6) {
        return false;
    }
    let Some(c) = chain else {
        return true;
    };
    super::xtables::nat_chains(v6).is_none_or(|chains| chains.contains(c))
}

/// Whether `chain` may exist in the `nat` table of the family, whichever iptables variant the
/// host's `iptables` is: false only when nf_tables says it has no such chain and the legacy
/// tables do not have it either — then a DEL has nothing of that family to list (each listing
/// is a process, 2–4 ms).
pub fn nat_chain_may_exist(nl: Option<&mut Nfnl>, v6: bool, chain: &str) -> bool {
    nft_nat_lookup(nl, v6, Some(chain)) != Some(false) || legacy_nat_may_have(v6, Some(chain))
}

/// In iptables-nft's `nat` table of the family, straight through nf_tables in one transaction:
/// delete the rules of chain `parent` whose comment is `tag` (an attachment's entries or jumps;
/// none when `parent` is empty), then `chains` (their rules, then themselves); what is gone
/// already is no error ([`nftrule::delete_where`]).
///
/// No process: each iptables-nft process that deletes something exits only after an RCU grace
/// period (its netfilter socket's release waits for the kernel's destroy work, 10–20 ms on the
/// development VM). The caller decides who waits for that work: see [`Nfnl::close_now`].
pub fn nft_delete(
    nl: &mut Nfnl,
    v6: bool,
    parent: &str,
    tag: &str,
    chains: &[&str],
) -> std::result::Result<(), crate::nfnl::NlErr> {
    let listing = if parent.is_empty() {
        nftrule::Listing::Nothing
    } else {
        nftrule::Listing::Chain(parent)
    };
    let tagged = |r: &nftrule::Rule| r.comment.as_deref() == Some(tag);
    nftrule::delete_where(nl, family(v6), "nat", listing, tagged, chains).map(drop)
}

/// The restore input removing rules (`-S` lines, `-A …`) and chains of the `nat` table.
pub fn del_input(rules: &[String], chains: &[String]) -> String {
    let mut s = String::from("*nat\n");
    for l in rules {
        s.push_str(&l.replacen("-A ", "-D ", 1));
        s.push('\n');
    }
    for c in chains {
        s.push_str(&format!("-F {c}\n-X {c}\n"));
    }
    s.push_str("COMMIT\n");
    s
}

/// The value of option `opt` in an `-S` line (`-s`, `-j`, `--comment`), quotes removed.
pub fn option_value(line: &str, opt: &str) -> Option<String> {
    let mut words = split_words(line).into_iter();
    while let Some(w) = words.next() {
        if w == opt {
            return words.next();
        }
    }
    None
}

/// Split an `-S` line into words, honouring double quotes (iptables quotes comments).
fn split_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_options_of_rule_lines() {
        let l =
            r#"-A CNI-MASQ -s 10.0.0.5/32 -m comment --comment "cni:n/c/e%22th0" -j CNI-M-0123"#;
        assert_eq!(option_value(l, "-s").as_deref(), Some("10.0.0.5/32"));
        assert_eq!(
            option_value(l, "--comment").as_deref(),
            Some("cni:n/c/e%22th0")
        );
        assert_eq!(option_value(l, "-j").as_deref(), Some("CNI-M-0123"));
        assert_eq!(option_value(l, "-d"), None);
        let bare = "-A X -m comment --comment cni:a/b/c -j RETURN";
        assert_eq!(
            option_value(bare, "--comment").as_deref(),
            Some("cni:a/b/c")
        );
        let spaced = r#"-A POSTROUTING -m comment --comment "cni masquerade" -j CNI-MASQ"#;
        assert_eq!(
            option_value(spaced, "--comment").as_deref(),
            Some("cni masquerade")
        );
    }

    /// A directory of fake tools; `iptables -V` prints `version`.
    fn tools_dir(names: &[&str], version: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!(
            "cni-ipt-variant-{}-{}",
            std::process::id(),
            fnv(version, names)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for n in names {
            let p = dir.join(n);
            std::fs::write(&p, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        dir
    }

    fn fnv(version: &str, names: &[&str]) -> u64 {
        crate::firewall::tag::fnv1a(format!("{version}{names:?}").as_bytes())
    }

    fn keep(dirs: &mut Vec<std::path::PathBuf>, d: std::path::PathBuf) -> std::path::PathBuf {
        dirs.push(d.clone());
        d
    }

    fn pick(dir: &std::path::Path, variant: Variant) -> Option<String> {
        let find = |n: &str| Some(dir.join(n)).filter(|p| p.is_file());
        Ipt::variant_with(false, variant, &find)
            .map(|i| i.cmd.file_name().unwrap().to_string_lossy().into_owned())
    }

    #[test]
    fn variants_are_the_suffixed_tools_else_what_plain_iptables_is() {
        let all = [
            "iptables",
            "iptables-restore",
            "iptables-nft",
            "iptables-nft-restore",
            "iptables-legacy",
            "iptables-legacy-restore",
        ];
        let mut dirs = Vec::new();
        let d = keep(&mut dirs, tools_dir(&all, "iptables v1.8.9 (nf_tables)"));
        assert_eq!(pick(&d, Variant::Nft).as_deref(), Some("iptables-nft"));
        assert_eq!(
            pick(&d, Variant::Legacy).as_deref(),
            Some("iptables-legacy")
        );
        // Only plain tools: they stand for the variant `-V` names.
        let d = keep(
            &mut dirs,
            tools_dir(&all[..2], "iptables v1.8.9 (nf_tables)"),
        );
        assert_eq!(pick(&d, Variant::Nft).as_deref(), Some("iptables"));
        assert_eq!(pick(&d, Variant::Legacy), None);
        let d = keep(&mut dirs, tools_dir(&all[..2], "iptables v1.6.1"));
        assert_eq!(pick(&d, Variant::Nft), None);
        assert_eq!(pick(&d, Variant::Legacy).as_deref(), Some("iptables"));
        // Plain legacy next to iptables-nft: plain is not taken for legacy.
        let d = keep(&mut dirs, tools_dir(&all[..4], "iptables v1.8.9 (legacy)"));
        assert_eq!(pick(&d, Variant::Legacy), None);
        // A tool without its restore counterpart is not enough.
        let d = keep(
            &mut dirs,
            tools_dir(&["iptables-nft"], "iptables v1.8.9 (nf_tables)"),
        );
        assert_eq!(pick(&d, Variant::Nft), None);
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
