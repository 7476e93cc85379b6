//! The control stream, both directions: `body::LineReader` splitting an
//! HTTP/2 body into JSON lines, and each line parsed as the message the
//! reading end expects (`ControlMsg` on the connector, `ConnectorMsg` on
//! the server).
//!
//! Input: a mode byte (which message type; whether the body ends with
//! trailers or with an error), a chunk-size byte, then the body's bytes,
//! cut into data frames of that size.
//!
//! Asserts: no panic; no more messages than lines; every message read
//! round-trips through JSON; the stream ends cleanly (`None`) only after
//! a whole last line and no error, and a half line at the end is an error.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use infra_tunnel::body::LineReader;
use infra_tunnel::proto::{ConnectorMsg, ControlMsg};
use libfuzzer_sys::fuzz_target;

/// A body that yields `data` in frames of `chunk` bytes, then maybe
/// trailers or an error.
struct Frames<'a> {
    data: &'a [u8],
    chunk: usize,
    end: End,
}

#[derive(Clone, Copy, PartialEq)]
enum End {
    Clean,
    Trailers,
    Error,
}

impl http_body::Body for Frames<'_> {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if !self.data.is_empty() {
            let n = self.chunk.min(self.data.len());
            let (head, tail) = self.data.split_at(n);
            self.data = tail;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(head)))));
        }
        Poll::Ready(match std::mem::replace(&mut self.end, End::Clean) {
            End::Clean => None,
            End::Trailers => Some(Ok(Frame::trailers(http::HeaderMap::new()))),
            End::Error => Some(Err(std::io::Error::other("stream reset"))),
        })
    }
}

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(m: &T) {
    let a = serde_json::to_value(m).expect("serialise");
    let s = serde_json::to_string(m).expect("serialise");
    let back: T = serde_json::from_str(&s).expect("what we send we read");
    assert_eq!(serde_json::to_value(&back).expect("serialise"), a);
}

/// Reads every message; returns how many and how the stream ended.
async fn read_all<T: serde::Serialize + serde::de::DeserializeOwned>(body: Frames<'_>) -> (usize, Result<(), ()>) {
    let mut r = LineReader::new(body);
    let mut n = 0;
    loop {
        match r.next::<T>().await {
            Ok(Some(m)) => {
                round_trip(&m);
                n += 1;
            }
            Ok(None) => return (n, Ok(())),
            Err(_) => return (n, Err(())),
        }
    }
}

thread_local! {
    static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
}

fuzz_target!(|data: &[u8]| {
    let [mode, chunk, body @ ..] = data else {
        return;
    };
    let end = match (mode >> 1) % 3 {
        0 => End::Clean,
        1 => End::Trailers,
        _ => End::Error,
    };
    let frames = Frames {
        data: body,
        chunk: usize::from(*chunk) + 1,
        end,
    };
    let (n, ended) = RT.with(|rt| {
        rt.block_on(async {
            if mode & 1 == 0 {
                read_all::<ControlMsg>(frames).await
            } else {
                read_all::<ConnectorMsg>(frames).await
            }
        })
    });
    let lines = body.iter().filter(|b| **b == b'\n').count();
    assert!(n <= lines, "{n} messages from {lines} lines");
    if ended.is_ok() {
        assert!(end != End::Error, "a reset stream ended cleanly");
        assert!(
            body.is_empty() || body.ends_with(b"\n"),
            "a half line was dropped silently"
        );
        assert_eq!(n, lines, "a line was skipped");
    }
});
