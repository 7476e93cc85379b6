//! Reading a request path the way the most lenient server behind us
//! would: percent-decoded (repeatedly), backslashes as slashes, dot
//! segments resolved. Infra's decisions about a path are made on this
//! reading, so no other spelling of the same path slips past them.

/// Percent-decoding, lossy (invalid UTF-8 becomes U+FFFD; a `%` not
/// followed by two hex digits stays as it is).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |c: Option<&u8>| c.and_then(|c| (*c as char).to_digit(16));
        match (c, hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes until nothing changes (a few rounds at most: `%255F` is `%5F`
/// is `_`).
fn fully_decoded(path: &str) -> String {
    let mut p = path.to_owned();
    for _ in 0..4 {
        let decoded = percent_decode(&p);
        if decoded == p {
            break;
        }
        p = decoded;
    }
    p.replace('\\', "/")
}

/// The path's segments, decoded, with empty and `.` segments dropped and
/// `..` resolved (never above the root).
pub fn segments(path: &str) -> Vec<String> {
    let p = fully_decoded(path);
    let mut out: Vec<String> = Vec::new();
    for s in p.split('/') {
        match s.trim() {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s.to_owned()),
        }
    }
    out
}

/// Whether the path has a `.` or `..` segment in any spelling (`%2e%2e`,
/// `..\`): a server behind a destination's URL prefix could resolve it to
/// a path outside that prefix.
pub fn has_dot_segments(path: &str) -> bool {
    // Every request passes here: most paths have neither, and need no copy.
    if !path.contains(['.', '%']) {
        return false;
    }
    fully_decoded(path).split('/').any(|s| matches!(s.trim(), "." | ".."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_and_segments() {
        assert_eq!(percent_decode("/%5Finfra%2fx%zz%4"), "/_infra/x%zz%4");
        assert_eq!(segments("//a/./b/../c/"), vec!["a", "c"]);
        assert_eq!(segments("/%252e%252e/%2e%2e/x"), vec!["x"]);
        assert_eq!(segments("\\a\\b"), vec!["a", "b"]);
        assert_eq!(segments("/../../"), Vec::<String>::new());
    }

    #[test]
    fn dot_segments_in_every_spelling() {
        for p in [
            "/a/../b",
            "/..",
            "/a/./b",
            "/%2e%2e/admin",
            "/%2E/x",
            "/a/..\\b",
            "/%252e%252e/x",
            "/a/ ../b",
        ] {
            assert!(has_dot_segments(p), "{p}");
        }
        for p in ["/", "/a/b", "/a..b/c", "/.well-known/x", "/a/...", "/%2e%2e%2e"] {
            assert!(!has_dot_segments(p), "{p}");
        }
    }
}
