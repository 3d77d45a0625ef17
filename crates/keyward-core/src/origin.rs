//! Browser origins and network ranges a key may be limited to.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::Code;
use crate::Error;

/// An allowed origin: exact (`https://app.example.com[:port]`) or a
/// subdomain wildcard (`*.example.com`, `https://*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    text: String,
    scheme: Option<String>,
    host: String,
    wildcard: bool,
    port: Option<u16>,
}

fn split_origin(s: &str) -> Option<(Option<&str>, &str, Option<u16>)> {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    };
    if let Some(sc) = scheme
        && sc != "http"
        && sc != "https"
    {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') || h.ends_with(']') => (h, Some(p.parse::<u16>().ok()?)),
        _ => (rest, None),
    };
    if host.is_empty()
        || host.len() > 253
        || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*' | b'[' | b']' | b':'))
    {
        return None;
    }
    Some((scheme, host, port))
}

impl OriginPattern {
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::invalid(
                Code::InvalidOrigin,
                "Invalid origin in allowedOrigins: use https://host[:port], http://localhost[:port] or https://*.example.com",
            )
        };
        let text = s.trim().to_ascii_lowercase();
        let (scheme, host, port) = split_origin(&text).ok_or_else(invalid)?;
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(h) => (true, h),
            None => (false, host),
        };
        if host.contains('*') || (scheme.is_none() && !wildcard) {
            return Err(invalid());
        }
        Ok(OriginPattern {
            scheme: scheme.map(str::to_owned),
            host: host.to_owned(),
            wildcard,
            port,
            text: text.clone(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether every origin `other` allows, this pattern allows too.
    pub fn covers(&self, other: &OriginPattern) -> bool {
        let scheme_ok = match (&self.scheme, &other.scheme) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(_), None) => false,
        };
        if !scheme_ok || self.port != other.port {
            return false;
        }
        let under = |host: &str| {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        };
        match (self.wildcard, other.wildcard) {
            (false, false) => self.host == other.host,
            (false, true) => false,
            (true, false) => under(&other.host),
            (true, true) => other.host == self.host || under(&other.host),
        }
    }

    /// Whether a request's `Origin` (or the origin of its `Referer`) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        let Some((Some(scheme), host, port)) = split_origin(&origin) else {
            return false;
        };
        if self.scheme.as_deref().is_some_and(|s| s != scheme) || self.port != port {
            return false;
        }
        if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

/// The origin part (`scheme://host[:port]`) of a URL such as a `Referer`.
pub fn origin_of_url(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).map_or(url.len(), |i| url.len() - rest.len() + i);
    Some(&url[..end])
}

pub fn parse_ip_range(s: &str) -> Result<IpNet, Error> {
    let s = s.trim();
    s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).map(|n| n.trunc()).map_err(|_| {
        Error::invalid(
            Code::InvalidIpRange,
            "Invalid IP range in allowedIps: use an address or CIDR such as 10.0.0.0/8 or 2001:db8::/32",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let exact = OriginPattern::parse("https://app.example.com").unwrap();
        assert!(exact.allows("https://app.example.com"));
        assert!(!exact.allows("http://app.example.com"));
        assert!(!exact.allows("https://app.example.com:8443"));
        assert!(!exact.allows("https://evil.com"));
        let wild = OriginPattern::parse("*.example.com").unwrap();
        assert!(wild.allows("https://a.example.com") && wild.allows("http://b.c.example.com"));
        assert!(!wild.allows("https://example.com"));
        assert!(!wild.allows("https://badexample.com"));
        let port = OriginPattern::parse("http://localhost:3000").unwrap();
        assert!(port.allows("http://localhost:3000") && !port.allows("http://localhost"));
        for bad in ["example.com", "ftp://x.com", "https://", "https://a b", "https://*x.com", "https://a.com:99999"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn referer_origins_and_ranges() {
        assert_eq!(origin_of_url("https://a.example.com/page?q=1"), Some("https://a.example.com"));
        assert_eq!(origin_of_url("https://a.example.com"), Some("https://a.example.com"));
        assert_eq!(origin_of_url("nonsense"), None);
        let v4 = parse_ip_range("10.1.2.3/8").unwrap();
        assert!(v4.contains(&"10.200.0.1".parse::<IpAddr>().unwrap()));
        let one = parse_ip_range("192.0.2.7").unwrap();
        assert!(one.contains(&"192.0.2.7".parse::<IpAddr>().unwrap()));
        let v6 = parse_ip_range("2001:db8::/32").unwrap();
        assert!(v6.contains(&"2001:db8::1".parse::<IpAddr>().unwrap()));
        assert!(parse_ip_range("10.0.0.0/33").is_err());
        assert!(parse_ip_range("not-an-ip").is_err());
    }
}
