//! Where a browser may be sent back to after logging in: a path on the same
//! origin, and nothing that a browser (or an upstream that decodes it once
//! more) could read as another site.
//!
//! Browsers strip tab and newline from URLs and treat `\` as `/`, so
//! `/\evil.example` and `/<TAB>/evil.example` both become
//! `//evil.example`, a network-path reference to another host. Upstream
//! applications often percent-decode a path again before they redirect, so
//! `/%2F%2Fevil.example` and `/%5Cevil.example` are refused as well.

use std::fmt;

/// A same-origin path (with an optional query and fragment) that is safe to
/// put in a `Location` header. Built only by [`ReturnPath::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReturnPath(String);

/// Why a return path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReturnPathError {
    #[error("the address to return to must be a path that starts with '/'")]
    NotAPath,
    #[error("the address to return to names another host ('//' or '/\\')")]
    OtherHost,
    #[error("the address to return to contains a control character, a space or a backslash")]
    BadCharacter,
    #[error("the address to return to contains characters outside ASCII")]
    NotAscii,
    #[error("the address to return to is longer than {MAX_LEN} characters")]
    TooLong,
}

/// Longer paths are refused; no login round trip needs more.
const MAX_LEN: usize = 4096;

/// How many rounds of percent-decoding are checked: enough for an upstream
/// that decodes twice, bounded so input cannot make us loop.
const DECODE_ROUNDS: usize = 3;

impl ReturnPath {
    /// Checks `s` (already taken out of its query string, so decoded once).
    pub fn parse(s: &str) -> Result<Self, ReturnPathError> {
        if s.len() > MAX_LEN {
            return Err(ReturnPathError::TooLong);
        }
        if !s.is_ascii() {
            return Err(ReturnPathError::NotAscii);
        }
        let mut bytes = s.as_bytes().to_vec();
        for round in 0..=DECODE_ROUNDS {
            check(&bytes, round == 0)?;
            let next = percent_decode(&bytes);
            if next == bytes {
                break;
            }
            bytes = next;
        }
        Ok(Self(s.to_owned()))
    }

    /// `s` if it is a safe return path, `/` otherwise.
    pub fn or_root(s: &str) -> Self {
        Self::parse(s).unwrap_or_default()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReturnPath {
    fn default() -> Self {
        Self("/".to_owned())
    }
}

impl fmt::Display for ReturnPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One form of the path (as given, or decoded `n` times). Only the form as
/// given must start with `/`: a decoded `%2F` is still a path character.
fn check(b: &[u8], as_given: bool) -> Result<(), ReturnPathError> {
    if b.iter().any(|c| c.is_ascii_control() || *c == b' ' || *c == b'\\') {
        return Err(ReturnPathError::BadCharacter);
    }
    match b {
        [b'/', b'/', ..] => Err(ReturnPathError::OtherHost),
        [b'/', ..] => Ok(()),
        _ if as_given => Err(ReturnPathError::NotAPath),
        _ => Ok(()),
    }
}

/// `%XX` → byte; anything else (including a malformed `%`) is kept.
fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits make at most 0xFF.
                out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{ReturnPath, ReturnPathError as E};

    fn check(input: &str, expected: Result<&str, E>) {
        assert_eq!(
            ReturnPath::parse(input).as_ref().map(ReturnPath::as_str),
            expected.as_ref().map(|s| *s),
            "{input:?}"
        );
    }

    #[test]
    fn same_origin_paths_pass() {
        for ok in [
            "/",
            "/echo/page?x=1",
            "/a/b#frag",
            "/search?q=a%2Fb",
            "/caf%C3%A9",
            "/a//b",
            "/https://evil.example",
            "/%",
            "/%zz",
        ] {
            check(ok, Ok(ok));
        }
    }

    #[test]
    fn anything_a_browser_could_read_as_another_host_is_refused() {
        for (input, why) in [
            ("", E::NotAPath),
            ("evil.example", E::NotAPath),
            ("https://evil.example/", E::NotAPath),
            ("http://web.localhost:1/", E::NotAPath),
            ("javascript:alert(1)", E::NotAPath),
            ("//evil.example", E::OtherHost),
            ("///evil.example", E::OtherHost),
            ("/\\evil.example", E::BadCharacter),
            ("/a\\b", E::BadCharacter),
            ("/\t/evil.example", E::BadCharacter),
            ("/\n/evil.example", E::BadCharacter),
            ("/\r\nSet-Cookie:x=1", E::BadCharacter),
            ("/ /evil.example", E::BadCharacter),
            ("/%09/evil.example", E::BadCharacter),
            ("/%0a/evil.example", E::BadCharacter),
            ("/%0D%0ALocation:x", E::BadCharacter),
            ("/%5Cevil.example", E::BadCharacter),
            ("/%5cevil.example", E::BadCharacter),
            ("/%2F%2Fevil.example", E::OtherHost),
            ("/%2f/evil.example", E::OtherHost),
            ("/%252F%252Fevil.example", E::OtherHost),
            ("/%25%30%39/evil.example", E::BadCharacter),
            ("%2F%2Fevil.example", E::NotAPath),
            ("/q?x=%00", E::BadCharacter),
            ("/caf\u{e9}", E::NotAscii),
            ("/\u{3000}/evil.example", E::NotAscii),
        ] {
            check(input, Err(why));
        }
        assert_eq!(ReturnPath::parse(&format!("/{}", "a".repeat(5000))), Err(E::TooLong));
    }

    #[test]
    fn refused_paths_fall_back_to_the_root() {
        assert_eq!(ReturnPath::or_root("//evil.example").as_str(), "/");
        assert_eq!(ReturnPath::or_root("/ok").as_str(), "/ok");
    }
}
