//! Session recording, the pure part: what a recorder sees of an
//! interactive session (the bytes each way, with their times) turned into
//! an asciicast v2 recording, which standard players play.
//!
//! - [`asciicast`]: the format: a header line, then one JSON array per
//!   event (`[seconds, "o" | "i" | "r" | "m", data]`), text kept whole
//!   across chunk boundaries; reading it back; when to show what on
//!   playback.
//! - [`k8s_ws`]: the frames of Kubernetes' WebSocket stream protocol
//!   (`v5.channel.k8s.io` and its predecessors), read incrementally from
//!   each direction: which channel (stdin, stdout, stderr, error, resize)
//!   carried which bytes.
//! - [`spdy`]: the same channels over SPDY/3.1, the older protocol.
//! - [`framing`]: why either could not be read.
//! - [`exec`]: the two together: a `kubectl exec`/`attach` session as
//!   asciicast events.
//! - [`ssh`]: an SSH connection, as a recorder that terminates it sees it
//!   (terminal channels as text, file transfers and forwardings as
//!   markers).
//! - [`retention`]: which stored recordings to delete, by age and then
//!   by total size, oldest first, never one being written.
//!
//! No I/O and no clock: callers hand in bytes and times, so every rule
//! here is tested alone and a recorder cannot block the data path.

pub mod asciicast;
pub mod exec;
pub mod framing;
pub mod k8s_ws;
pub mod retention;
pub mod spdy;
pub mod ssh;
