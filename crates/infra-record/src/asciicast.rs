//! asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>): a
//! JSON header line, then one line per event.

use serde::Serialize;

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    pub version: u8,
    pub width: u16,
    pub height: u16,
    /// Unix seconds at the start.
    pub timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Header {
    pub fn new(width: u16, height: u16, timestamp: i64) -> Self {
        Self {
            version: 2,
            width,
            height,
            timestamp,
            title: None,
            env: Default::default(),
        }
    }

    pub fn line(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What an event is: output, input, a terminal resize, or a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Output,
    Input,
    Resize,
    Marker,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Output => "o",
            Code::Input => "i",
            Code::Resize => "r",
            Code::Marker => "m",
        }
    }
}

/// One event: seconds since the start, its code, its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub code: Code,
    pub data: String,
}

impl Event {
    /// The event's line: `[1.234567, "o", "text"]`.
    pub fn line(&self) -> String {
        // Microseconds, as asciinema writes them.
        let t = (self.time * 1e6).round() / 1e6;
        serde_json::to_string(&(t, self.code.as_str(), &self.data)).unwrap_or_default()
    }
}

/// Bytes of one stream as text: a character split across two chunks is
/// kept until its end arrives; bytes that are no UTF-8 become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text `bytes` completes (possibly empty).
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Checked valid just above.
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        // An incomplete character at the end: wait for more.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{fffd}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_players_read() {
        let h = Header::new(80, 24, 1_796_650_000);
        assert_eq!(
            h.line(),
            r#"{"version":2,"width":80,"height":24,"timestamp":1796650000}"#
        );
        let e = Event {
            time: 1.2345678,
            code: Code::Output,
            data: "ls\r\n\u{1b}[0m\"x\"".into(),
        };
        assert_eq!(e.line(), r#"[1.234568,"o","ls\r\n\u001b[0m\"x\""]"#);
    }

    #[test]
    fn a_character_split_across_chunks_stays_whole() {
        let mut s = Utf8Stream::default();
        let text = "héllo ✓";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.push(std::slice::from_ref(b)));
        }
        assert_eq!(out, text);
        assert_eq!(s.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(s.push(&[0xe2, 0x9c]), "");
        assert_eq!(s.finish(), "\u{fffd}");
    }
}
