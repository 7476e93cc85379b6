//! Why a recorder could not read a stream's framing, whichever of
//! Kubernetes' stream protocols carried it. Either way the stream ends: a
//! recorded session never goes on unread.

/// The framing a stream was read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    WebSocket,
    Spdy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// A message, frame or header block over its limit.
    TooLarge(Protocol),
    /// Bytes that are not the protocol, or a part of it this recorder
    /// does not read (a fragmented message, an unknown stream).
    Malformed(Protocol, &'static str),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(Protocol::WebSocket) => write!(f, "a WebSocket message over its size limit"),
            Self::TooLarge(Protocol::Spdy) => write!(f, "a SPDY frame or header block over its limit"),
            Self::Malformed(Protocol::WebSocket, what) => write!(f, "not the WebSocket protocol: {what}"),
            Self::Malformed(Protocol::Spdy, what) => write!(f, "not the SPDY/3.1 protocol: {what}"),
        }
    }
}

impl std::error::Error for StreamError {}
