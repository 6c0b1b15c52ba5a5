//! `resolvConf`: a resolv.conf-format file whose nameserver/domain/search/options become the
//! result's `dns`.

use std::path::Path;

use cni_shared::spec::Dns;
use cni_shared::{CniError, Result};

pub fn load(path: &Path) -> Result<Dns> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CniError::io(format!("ipam.resolvConf: reading {}: {e}", path.display())))?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key), rest) = (words.next(), words) else {
            continue;
        };
        let rest: Vec<String> = rest.map(str::to_owned).collect();
        match key {
            "nameserver" => dns.nameservers.extend(rest),
            "domain" => dns.domain = rest.into_iter().next(),
            "search" => dns.search = rest,
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resolv_conf() {
        let d = parse(
            "# comment\nnameserver 10.0.0.1\nnameserver fd00::1\ndomain example.org\n\
             search a.example b.example\noptions ndots:2 timeout:1\n; other\n",
        );
        assert_eq!(d.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(d.domain.as_deref(), Some("example.org"));
        assert_eq!(d.search, ["a.example", "b.example"]);
        assert_eq!(d.options, ["ndots:2", "timeout:1"]);
    }
}
