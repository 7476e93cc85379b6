//! An upstream response body, counted, cut when access is revoked, and
//! audited when it ends (or the client goes away).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Frame;
use infra_tunnel::proto::Outcome;
use infra_tunnel::{Body, BoxError};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::admit::Admitted;
use crate::audit::Written;

/// What the end-of-response event says, besides the byte count.
pub(crate) struct Done {
    pub(crate) admitted: Admitted,
    pub(crate) started: Instant,
    /// `METHOD /path` and, for a cluster, what the request is about.
    pub(crate) what: String,
    pub(crate) status: u16,
}

pub(crate) struct Metered {
    inner: Body,
    bytes: u64,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: Option<Done>,
    /// The response's last frame (or its end, `None`), held back until
    /// its audit event is written.
    held: Option<Option<Frame<Bytes>>>,
    writing: Option<Written>,
    ended: bool,
}

impl Metered {
    pub(crate) fn new(inner: Body, done: Done) -> Self {
        Self {
            inner,
            bytes: 0,
            cancelled: Box::pin(done.admitted.watch.token().clone().cancelled_owned()),
            done: Some(done),
            held: None,
            writing: None,
            ended: false,
        }
    }

    /// Records the end-of-response event; `None` if it was recorded
    /// before, or is written already.
    fn finish(&mut self, reason: &str) -> Option<Written> {
        // Dropping `Done` forgets the stream and ends its in-flight count.
        let d = self.done.take()?;
        let mut detail = format!(
            "{} status={} bytes={} duration_ms={} connector={}",
            d.what,
            d.status,
            self.bytes,
            d.started.elapsed().as_millis(),
            d.admitted.state.settings.name
        );
        if !reason.is_empty() {
            detail.push_str(&format!(" ended={reason}"));
        }
        d.admitted.audit.record_written(Outcome::Success, detail)
    }

    /// The response is complete: its last frame (`None`: its end) goes out
    /// once the event is written.
    fn hold(
        &mut self,
        last: Option<Frame<Bytes>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.ended = true;
        self.writing = self.finish("");
        self.held = Some(last);
        self.release(cx)
    }

    fn release(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(w) = self.writing.as_mut() {
            if w.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.writing = None;
        }
        Poll::Ready(self.held.take().flatten().map(Ok))
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.ended {
            return self.release(cx);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.ended = true;
            self.finish("access revoked");
            return Poll::Ready(Some(Err("access revoked".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                if self.inner.is_end_stream() {
                    return self.hold(Some(f), cx);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.ended = true;
                self.finish("upstream error");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => self.hold(None, cx),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never before the event is written: hyper would end the response
        // without polling again.
        self.ended && self.writing.is_none() && self.held.is_none()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // A response that ended has recorded its event; one dropped before
        // its end lost its client.
        self.finish("client went away");
    }
}
