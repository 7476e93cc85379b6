//! asciicast v2 (<https://docs.asciinema.org/manual/asciicast/v2/>): a
//! JSON header line, then one line per event.

use serde::{Deserialize, Serialize};

/// The first line of a recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u8,
    pub width: u16,
    pub height: u16,
    /// Unix seconds at the start.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
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
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "o" => Code::Output,
            "i" => Code::Input,
            "r" => Code::Resize,
            "m" => Code::Marker,
            _ => return None,
        })
    }

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
        let mut out = Vec::with_capacity(self.data.len() + 24);
        self.write_line(&mut out);
        out.pop();
        // serde_json writes UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// Appends the event's line and a line feed to `out`: no copy of its
    /// own, for recorders that write many.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        write_event(out, self.time, self.code, &self.data);
    }
}

/// Appends the line of an event at `time` of `code` with `data`, and a
/// line feed, to `out`.
pub fn write_event(out: &mut Vec<u8>, time: f64, code: Code, data: &str) {
    // Microseconds, as asciinema writes them.
    let t = (time * 1e6).round() / 1e6;
    // Writing numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &(t, code.as_str(), data));
    out.push(b'\n');
}

/// Why a text is not an asciicast v2 recording: the line (1-based) and
/// what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// Reads a recording back, checking what players rely on: a version 2
/// header with a size, then events whose times never go back.
pub fn parse(text: &str) -> Result<(Header, Vec<Event>), ParseError> {
    let bad = |line: usize, reason: &str| ParseError {
        line,
        reason: reason.to_owned(),
    };
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().ok_or_else(|| bad(1, "empty: no header"))?;
    let header: Header = serde_json::from_str(first).map_err(|e| bad(1, &format!("not a header: {e}")))?;
    if header.version != 2 {
        return Err(bad(1, "not version 2"));
    }
    if header.width == 0 || header.height == 0 {
        return Err(bad(1, "a terminal of size zero"));
    }
    let mut events = Vec::new();
    let mut last = 0.0_f64;
    for (i, l) in lines {
        let (time, code, data): (f64, String, String) =
            serde_json::from_str(l).map_err(|e| bad(i + 1, &format!("not an event: {e}")))?;
        let code = Code::parse(&code).ok_or_else(|| bad(i + 1, "an unknown event code"))?;
        if !time.is_finite() || time < last {
            return Err(bad(i + 1, "time goes back"));
        }
        last = time;
        events.push(Event { time, code, data });
    }
    Ok((header, events))
}

/// How to play events back: each output's text after how long a pause,
/// at `speed` times real time, with no pause longer than `idle_cap`
/// seconds (asciinema's `-i`).
pub fn schedule(events: &[Event], speed: f64, idle_cap: Option<f64>) -> Vec<(std::time::Duration, &str)> {
    let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
    let mut out = Vec::new();
    let mut last = 0.0_f64;
    for e in events.iter().filter(|e| e.code == Code::Output) {
        let mut pause = (e.time - last).max(0.0);
        if let Some(cap) = idle_cap {
            pause = pause.min(cap.max(0.0));
        }
        last = e.time;
        out.push((std::time::Duration::from_secs_f64(pause / speed), e.data.as_str()));
    }
    out
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
        // The usual case: nothing pending and whole characters.
        if self.pending.is_empty()
            && let Ok(s) = std::str::from_utf8(bytes)
        {
            return s.to_owned();
        }
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
    fn what_is_written_reads_back_and_what_is_broken_is_said() {
        let h = Header::new(100, 30, 7);
        let events = [
            Event {
                time: 0.5,
                code: Code::Input,
                data: "ls\r".into(),
            },
            Event {
                time: 0.75,
                code: Code::Output,
                data: "a b\r\n".into(),
            },
            Event {
                time: 9.0,
                code: Code::Output,
                data: "$ ".into(),
            },
        ];
        let text: String = std::iter::once(h.line())
            .chain(events.iter().map(Event::line))
            .map(|l| l + "\n")
            .collect();
        let (back, evs) = parse(&text).unwrap();
        assert_eq!((&back, evs.as_slice()), (&h, &events[..]));
        let plan = schedule(&evs, 2.0, Some(2.0));
        assert_eq!(
            plan,
            [
                (std::time::Duration::from_secs_f64(0.375), "a b\r\n"),
                (std::time::Duration::from_secs_f64(1.0), "$ ")
            ]
        );
        assert_eq!(parse("").unwrap_err().reason, "empty: no header");
        assert_eq!(
            parse(r#"{"version":1,"width":1,"height":1,"timestamp":0}"#)
                .unwrap_err()
                .reason,
            "not version 2"
        );
        let back_in_time = format!("{}\n[2.0,\"o\",\"x\"]\n[1.0,\"o\",\"y\"]\n", h.line());
        assert_eq!(
            parse(&back_in_time).unwrap_err(),
            ParseError {
                line: 3,
                reason: "time goes back".into()
            }
        );
        let unknown = format!("{}\n[1.0,\"z\",\"x\"]\n", h.line());
        assert_eq!(parse(&unknown).unwrap_err().line, 2);
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
