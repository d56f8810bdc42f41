//! `resolvConf`: the DNS settings of the result, read from a resolv.conf-style file the way
//! the reference plugin reads it.

use std::path::Path;

use shared::spec::result::Dns;

/// Blank lines and lines starting with `#` or `;` are skipped, as are lines with fewer than
/// two fields; `nameserver` and `search`/`options` accumulate, the last `domain` wins.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [key, first, ..] = fields[..] else {
            continue;
        };
        let all = || fields[1..].iter().map(|s| s.to_string());
        match key {
            "nameserver" => dns.nameservers.push(first.to_string()),
            "domain" => dns.domain = first.to_string(),
            "search" => dns.search.extend(all()),
            "options" => dns.options.extend(all()),
            _ => {}
        }
    }
    dns
}

pub fn read_resolv_conf(path: &Path) -> std::io::Result<Dns> {
    std::fs::read_to_string(path).map(|t| parse_resolv_conf(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_field_and_ignores_comments() {
        let dns = parse_resolv_conf(
            "# a comment\n; another\n\nnameserver 10.0.0.10\nnameserver  10.0.0.11 \n\
             domain a.example\ndomain cluster.local\nsearch default.svc.cluster.local svc.cluster.local\n\
             options ndots:5 timeout:1\nsortlist 10.0.0.0\nlonely\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "10.0.0.11"]);
        assert_eq!(dns.domain, "cluster.local");
        assert_eq!(
            dns.search,
            ["default.svc.cluster.local", "svc.cluster.local"]
        );
        assert_eq!(dns.options, ["ndots:5", "timeout:1"]);
    }

    #[test]
    fn an_empty_file_gives_no_dns() {
        assert!(parse_resolv_conf("").is_empty());
    }
}
