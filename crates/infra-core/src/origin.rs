//! The public origin of an application that a proxy keeps in front of it
//! and asks Infra about (forward-auth): `https://host[:port]`, nothing
//! more. Built only by [`AppOrigin::parse`], so a stored origin never
//! carries a path, credentials or a scheme a browser would not keep the
//! token cookie for.

use std::fmt;

/// `https://<host>[:<port>]`, the host in lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AppOrigin {
    host: String,
    port: u16,
}

/// Why an origin was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppOriginError {
    #[error(
        "the URL must start with https:// (the browser keeps Infra's cookie only for HTTPS, and only for the exact host)"
    )]
    NotHttps,
    #[error("the URL must be an origin only, https://host[:port], with no path, query or user name")]
    NotAnOrigin,
    #[error("the host must be a DNS name or an IPv4 address (letters, digits, '-' and '.')")]
    BadHost,
    #[error("the port must be a number from 1 to 65535")]
    BadPort,
}

impl AppOrigin {
    /// Parses `https://host[:port]` (a trailing `/` is allowed).
    pub fn parse(s: &str) -> Result<Self, AppOriginError> {
        let rest = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("https://"))
            .map(|_| &s[8..])
            .ok_or(AppOriginError::NotHttps)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', '\\']) || rest.is_empty() {
            return Err(AppOriginError::NotAnOrigin);
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or(AppOriginError::BadPort)?;
                (h, port)
            }
            None => (rest, 443),
        };
        let host = host.to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.len() > 253 || !host.split('.').all(label_ok) {
            return Err(AppOriginError::BadHost);
        }
        Ok(Self { host, port })
    }

    /// The host name, in lower case.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether a `Host` (or `X-Forwarded-Host`) value names this origin's
    /// host. The port, when the value has one, must match too; proxies
    /// often send the host alone.
    pub fn matches_host(&self, value: &str) -> bool {
        let value = value.trim();
        match value.rsplit_once(':') {
            Some((h, p)) => p.parse::<u16>().is_ok_and(|port| port == self.port) && h.eq_ignore_ascii_case(&self.host),
            None => value.eq_ignore_ascii_case(&self.host),
        }
    }
}

impl fmt::Display for AppOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            443 => write!(f, "https://{}", self.host),
            p => write!(f, "https://{}:{p}", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_https_host_and_port_only() {
        let o = AppOrigin::parse("https://App.Example.com").unwrap();
        assert_eq!(o.to_string(), "https://app.example.com");
        assert_eq!(o.port(), 443);
        let o = AppOrigin::parse("https://app.localhost:8443/").unwrap();
        assert_eq!(o.to_string(), "https://app.localhost:8443");
        for (bad, why) in [
            ("http://app.example.com", AppOriginError::NotHttps),
            ("app.example.com", AppOriginError::NotHttps),
            ("https://app.example.com/path", AppOriginError::NotAnOrigin),
            ("https://user@app.example.com", AppOriginError::NotAnOrigin),
            ("https://app.example.com?x=1", AppOriginError::NotAnOrigin),
            ("https://", AppOriginError::NotAnOrigin),
            ("https://app.example.com:0", AppOriginError::BadPort),
            ("https://app.example.com:99999", AppOriginError::BadPort),
            ("https://app_x.example.com", AppOriginError::BadHost),
            ("https://-app.example.com", AppOriginError::BadHost),
            ("https://app..example.com", AppOriginError::BadHost),
        ] {
            assert_eq!(AppOrigin::parse(bad), Err(why), "{bad}");
        }
    }

    #[test]
    fn a_host_header_matches_by_name_and_by_port_when_it_has_one() {
        let o = AppOrigin::parse("https://app.localhost:8443").unwrap();
        assert!(o.matches_host("app.localhost"));
        assert!(o.matches_host("APP.localhost:8443"));
        assert!(!o.matches_host("app.localhost:443"));
        assert!(!o.matches_host("other.localhost"));
        assert!(!o.matches_host("app.localhost.evil"));
        assert!(!o.matches_host("app.localhost:x"));
    }
}
