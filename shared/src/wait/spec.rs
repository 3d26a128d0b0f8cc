//! The text forms of wait settings: target specs, hosts, ports and durations.
//!
//! Every value a wait tool takes — from a flag or from the environment — goes through one of
//! these parsers, and a value they reject is a usage error that names it; nothing falls back to
//! a default silently (the originals' `${STACK_DEPS_TIMEOUT:-1500}` turned `15O0` into a bash
//! arithmetic error at the first comparison, half-way through the wait).
//!
//! A target spec is `SCHEME://HOST:PORT[/PATH] [status RULE]`:
//!
//! - `tcp://127.0.0.1:5432` — ready when a connection is accepted;
//! - `pg://[::1]:5432` (also `postgres://`) — ready when the server answers SSLRequest;
//! - `http://127.0.0.1:8123/ping` — ready on a status below 400, as `curl -f`;
//!   `http://127.0.0.1:8080/ status=401` — ready only on 401;
//!   `status=200,204` — on either; `status<300` — on anything below 300.
//!
//! HOST is an IPv4 address, an IPv6 address in brackets, or a name. The port is always
//! written out. Only plain HTTP is spoken: the emulator's services listen on the guest's
//! loopback.

use std::net::IpAddr;

use super::Target;
use super::probe::{Endpoint, Host, Probe, StatusRule};

/// A TCP port, 1–65535.
pub fn port(text: &str) -> Result<u16, String> {
    if text.starts_with('-') {
        return Err("must not be negative".into());
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 && text.chars().all(|c| c.is_ascii_digit()) => Ok(port),
        _ => Err("not a port number (1-65535)".into()),
    }
}

/// A host: an IP address (IPv6 with or without brackets) or a DNS name.
pub fn host(text: &str) -> Result<Host, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    if text.starts_with('[') {
        return Err("not an IPv6 address".into());
    }
    let name_ok = !text.is_empty()
        && text.len() <= 253
        && text.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if name_ok {
        Ok(Host::Name(text.to_string()))
    } else {
        Err("not an IP address or host name".into())
    }
}

/// `HOST:PORT`, with an IPv6 host in brackets (`[::1]:5432`).
pub fn endpoint(text: &str) -> Result<Endpoint, String> {
    let (host_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{text}': missing ']' after the IPv6 address"))?;
        let port_text = after
            .strip_prefix(':')
            .ok_or_else(|| format!("'{text}': missing :PORT"))?;
        (&text[..inside.len() + 2], port_text)
    } else {
        let (host_text, port_text) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("'{text}': missing :PORT"))?;
        if host_text.contains(':') {
            return Err(format!(
                "'{text}': an IPv6 address needs brackets, e.g. [::1]:5432"
            ));
        }
        (host_text, port_text)
    };
    let host = host(host_text).map_err(|why| format!("host '{host_text}': {why}"))?;
    let port = port(port_text).map_err(|why| format!("port '{port_text}': {why}"))?;
    Ok(Endpoint::new(host, port))
}

/// `status<N`, `status=N` or `status=N,M,…`, with 3-digit statuses.
pub fn status_rule(text: &str) -> Result<StatusRule, String> {
    let bad = || {
        format!(
            "bad status rule '{text}' (expected status<N, status=N or status=N,M,... with 3-digit N)"
        )
    };
    let code = |t: &str| -> Result<u16, String> {
        match t.parse::<u16>() {
            Ok(c) if (100..=999).contains(&c) && t.len() == 3 => Ok(c),
            _ => Err(bad()),
        }
    };
    if let Some(limit) = text.strip_prefix("status<") {
        Ok(StatusRule::Below(code(limit)?))
    } else if let Some(list) = text.strip_prefix("status=") {
        let codes = list.split(',').map(code).collect::<Result<Vec<_>, _>>()?;
        Ok(StatusRule::OneOf(codes))
    } else {
        Err(bad())
    }
}

/// A probe from its spec (see the module's documentation).
pub fn probe(text: &str) -> Result<Probe, String> {
    let mut words = text.split_whitespace();
    let url = words.next().ok_or("empty target spec")?;
    let options: Vec<&str> = words.collect();
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{url}': expected SCHEME://HOST:PORT (schemes: tcp, pg, http)"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!(
            "'{scheme}://...': user information (USER:PASSWORD@) is not supported in a target; \
             give HOST:PORT only (the URL is not repeated here: it may hold a password)"
        ));
    }
    let endpoint = endpoint(authority)?;
    let no_extras = |what: &str| -> Result<(), String> {
        if !path.is_empty() {
            return Err(format!("'{url}': a {what} target takes no path"));
        }
        if let Some(option) = options.first() {
            return Err(format!("'{option}': a {what} target takes no options"));
        }
        Ok(())
    };
    match scheme.to_ascii_lowercase().as_str() {
        "tcp" => no_extras("tcp").map(|()| Probe::Tcp(endpoint)),
        "pg" | "postgres" | "postgresql" => no_extras("pg").map(|()| Probe::Postgres(endpoint)),
        "http" => {
            let path = if path.is_empty() { "/" } else { path };
            if !is_request_target(path) {
                return Err(format!("'{url}': not a valid URL path"));
            }
            let rule = match options.as_slice() {
                [] => StatusRule::CURL_FAIL,
                [rule] => status_rule(rule)?,
                [_, extra, ..] => {
                    return Err(format!("'{extra}': only one status rule is allowed"));
                }
            };
            Ok(Probe::http(endpoint, path, rule))
        }
        "https" => Err(format!("'{url}': https is not supported (plain HTTP only)")),
        _ => Err(format!(
            "'{url}': unknown scheme '{scheme}' (use tcp, pg or http)"
        )),
    }
}

/// Whether `path` (starting with `/`, perhaps with a `?query`) can be sent as it is in a request
/// line. No control characters, spaces or fragment (`#`); no `<`, `>` or `` ` `` in the path
/// and no `<`, `>` or `"` in the query, which URLs carry only percent-encoded; any other
/// printable ASCII, and UTF-8 beyond ASCII, as lenient servers and clients accept it.
fn is_request_target(path: &str) -> bool {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let printable = |c: char| !c.is_ascii() || c.is_ascii_graphic();
    path.chars()
        .all(|c| printable(c) && !matches!(c, '#' | '<' | '>' | '`'))
        && query
            .chars()
            .all(|c| printable(c) && !matches!(c, '#' | '<' | '>' | '"'))
}

/// A target name: letters, digits, `-`, `_` and `.`.
pub fn name(text: &str) -> Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "bad target name '{text}' (letters, digits, '-', '_' and '.' only)"
        ))
    }
}

/// `NAME=SPEC`.
pub fn target(text: &str) -> Result<Target, String> {
    let (name_text, spec) = text
        .split_once('=')
        .ok_or("expected NAME=SPEC, e.g. postgres=pg://127.0.0.1:5432")?;
    Ok(Target::new(name(name_text)?, probe(spec)?))
}

/// Replaces each default target by the override of the same name, in place, and appends the
/// overrides that name no default. Two overrides of one name are an error.
pub fn merge(defaults: Vec<Target>, overrides: Vec<Target>) -> Result<Vec<Target>, String> {
    let mut targets = defaults;
    let mut seen: Vec<&str> = Vec::new();
    for o in &overrides {
        if seen.contains(&o.name.as_str()) {
            return Err(format!("--target {}: given twice", o.name));
        }
        seen.push(&o.name);
    }
    for o in overrides {
        match targets.iter_mut().find(|t| t.name == o.name) {
            Some(t) => *t = o,
            None => targets.push(o),
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_hosts() {
        assert_eq!(port("5432"), Ok(5432));
        for bad in ["0", "65536", "-1", "+5", "x", ""] {
            assert!(port(bad).is_err(), "{bad:?}");
        }
        assert_eq!(host("::1"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(host("[::1]"), Ok(Host::Ip("::1".parse().unwrap())));
        assert_eq!(host("localhost"), Ok(Host::Name("localhost".into())));
        assert!(host("a b").is_err());
        assert!(host("[zz]").is_err());
    }

    #[test]
    fn specs_round_trip() {
        for spec in [
            "tcp://127.0.0.1:5432",
            "pg://[::1]:5432",
            "http://127.0.0.1:8080/ status=401",
            "http://127.0.0.1:8123/ping status<400",
            "http://[::1]:8102/health?db=1 status=200,204",
            "http://localhost:80/ status<400",
        ] {
            assert_eq!(probe(spec).unwrap().to_string(), spec);
        }
        assert_eq!(
            probe("http://127.0.0.1:1").unwrap().to_string(),
            "http://127.0.0.1:1/ status<400"
        );
        assert_eq!(
            probe("postgres://127.0.0.1:5432").unwrap().to_string(),
            "pg://127.0.0.1:5432"
        );
    }

    #[test]
    fn bad_specs_say_why() {
        let why = |s: &str| probe(s).unwrap_err();
        assert!(why("ftp://1.2.3.4:21").contains("unknown scheme 'ftp'"));
        assert!(why("https://1.2.3.4:443/").contains("https is not supported"));
        assert!(why("tcp://::1:5432").contains("needs brackets"));
        let userinfo = why("http://user:pw@127.0.0.1:41029/");
        assert!(userinfo.contains("user information (USER:PASSWORD@) is not supported"));
        assert!(!userinfo.contains("pw"), "{userinfo}");
        assert!(why("tcp://u@[::1]:1").contains("user information"));
        assert!(why("tcp://127.0.0.1").contains("missing :PORT"));
        assert!(why("tcp://127.0.0.1:0").contains("not a port number"));
        assert!(why("tcp://127.0.0.1:1/x").contains("takes no path"));
        assert!(why("pg://127.0.0.1:1 status=200").contains("takes no options"));
        assert!(why("http://127.0.0.1:1/ status=20").contains("bad status rule"));
        assert!(why("http://127.0.0.1:1/ status>400").contains("bad status rule"));
        assert!(why("http://127.0.0.1:1/ status=200 status=204").contains("only one"));
        for bad in [
            "/a#b", "/<", "/a>", "/`", "/?\"", "/?a#", "/\u{7f}", "/a\u{1}b",
        ] {
            assert!(
                why(&format!("http://127.0.0.1:1{bad}")).contains("not a valid URL path"),
                "{bad:?}"
            );
        }
        for good in ["/a\"{}|\\^[]~!$&'()*+,;=:@%20", "/?a=`{}|?/", "/caf\u{e9}"] {
            assert!(
                probe(&format!("http://127.0.0.1:1{good}")).is_ok(),
                "{good:?}"
            );
        }
        assert!(why("127.0.0.1:5432").contains("expected SCHEME://"));
        assert!(target("postgres").is_err());
        assert!(target("=tcp://1.2.3.4:5").is_err());
        assert!(target("a b=tcp://1.2.3.4:5").is_err());
    }

    #[test]
    fn merge_replaces_in_place_and_appends() {
        let t = |s: &str| target(s).unwrap();
        let merged = merge(
            vec![t("a=tcp://127.0.0.1:1"), t("b=tcp://127.0.0.1:2")],
            vec![t("c=tcp://127.0.0.1:3"), t("a=pg://127.0.0.1:4")],
        )
        .unwrap();
        let names: Vec<_> = merged.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            names,
            [
                "a=pg://127.0.0.1:4",
                "b=tcp://127.0.0.1:2",
                "c=tcp://127.0.0.1:3"
            ]
        );
        assert!(
            merge(
                vec![],
                vec![t("a=tcp://127.0.0.1:1"), t("a=tcp://127.0.0.1:2")]
            )
            .is_err()
        );
    }
}
