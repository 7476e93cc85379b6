//! Bodies for the control stream: a channel-fed body, and a reader that
//! splits a body into bounded JSON lines.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::BoxError;

/// Longest control message. A full grant snapshot is one line; 64 MiB
/// holds hundreds of thousands of grants.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A body fed through a bounded channel: back-pressure, not an unbounded
/// queue.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Sends JSON lines into a [`ChannelBody`].
#[derive(Clone)]
pub struct LineSender {
    tx: mpsc::Sender<Bytes>,
}

/// A pair: the sender and the body to hand to hyper.
pub fn channel(capacity: usize) -> (LineSender, ChannelBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (LineSender { tx }, ChannelBody { rx })
}

impl LineSender {
    /// Sends one message; `Err` when the stream is gone.
    pub async fn send<T: Serialize>(&self, msg: &T) -> Result<(), BoxError> {
        let mut v = serde_json::to_vec(msg)?;
        v.push(b'\n');
        self.tx
            .send(Bytes::from(v))
            .await
            .map_err(|_| "control stream closed".into())
    }

    /// Sends one message if there is room now; `false` when the stream is
    /// full or gone.
    pub fn try_send<T: Serialize>(&self, msg: &T) -> bool {
        let Ok(mut v) = serde_json::to_vec(msg) else {
            return false;
        };
        v.push(b'\n');
        self.tx.try_send(Bytes::from(v)).is_ok()
    }

    /// Sends lines already encoded (each ends in `\n`), as one frame.
    pub async fn send_encoded(&self, lines: Bytes) -> Result<(), BoxError> {
        self.tx.send(lines).await.map_err(|_| "control stream closed".into())
    }

    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Reads JSON lines from a body.
pub struct LineReader<B> {
    body: B,
    buf: BytesMut,
    /// How much of `buf` is known to hold no line feed: a long line that
    /// arrives in many frames is scanned once, not once per frame.
    scanned: usize,
}

impl<B> LineReader<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    pub fn new(body: B) -> Self {
        Self {
            body,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// The next message, `Ok(None)` at the end of the body.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, BoxError> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let i = self.scanned + i;
                self.scanned = 0;
                let line = self.buf.split_to(i + 1);
                return Ok(Some(serde_json::from_slice(&line[..i])?));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_MESSAGE {
                return Err("control message too long".into());
            }
            let frame = std::future::poll_fn(|cx| Pin::new(&mut self.body).poll_frame(cx)).await;
            match frame {
                None => {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err("control stream ended mid-message".into())
                    };
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// A raw byte channel body (for upgraded connections: WebSocket bytes
/// ride a request body one way and a response body the other).
pub fn bytes_channel(capacity: usize) -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelBody { rx })
}

/// Copies an HTTP body's data into `w` until it ends.
pub async fn body_to_writer<B, W>(body: B, w: W)
where
    B: http_body::Body<Data = Bytes> + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    body_to_writer_counted(body, w, |_| {}).await;
}

/// [`body_to_writer`], telling `count` the size of each chunk written.
pub async fn body_to_writer_counted<B, W>(mut body: B, mut w: W, count: impl Fn(usize))
where
    B: http_body::Body<Data = Bytes> + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if let Ok(d) = frame.into_data() {
            count(d.len());
            if w.write_all(&d).await.is_err() {
                return;
            }
        }
    }
    let _ = w.shutdown().await;
}

/// Copies `r` into a channel until EOF or the receiver goes away.
pub async fn reader_to_channel<R: tokio::io::AsyncRead + Unpin>(r: R, tx: mpsc::Sender<Bytes>) {
    reader_to_channel_counted(r, tx, |_| {}).await;
}

/// [`reader_to_channel`], telling `count` the size of each chunk read.
pub async fn reader_to_channel_counted<R: tokio::io::AsyncRead + Unpin>(
    mut r: R,
    tx: mpsc::Sender<Bytes>,
    count: impl Fn(usize),
) {
    use tokio::io::AsyncReadExt;
    // Read straight into the buffer that is sent: no copy per chunk (bulk
    // streams spend a fifth of their CPU in memmove otherwise).
    let mut buf = bytes::BytesMut::new();
    loop {
        buf.reserve(READ_CHUNK);
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                count(n);
                if tx.send(buf.split().freeze()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How much one read may take from a stream being relayed.
pub const READ_CHUNK: usize = 256 * 1024;
