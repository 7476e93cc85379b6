//! An upstream response body, counted, cut when access is revoked, and
//! audited when it ends (or the client goes away).

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::Body as _;
use http_body::Frame;
use infra_tunnel::proto::Outcome;
use infra_tunnel::{Body, BoxError};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::admit::Admitted;

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
}

impl Metered {
    pub(crate) fn new(inner: Body, done: Done) -> Self {
        Self {
            inner,
            bytes: 0,
            cancelled: Box::pin(done.admitted.watch.token().clone().cancelled_owned()),
            done: Some(done),
        }
    }

    fn finish(&mut self, reason: &str) {
        // Dropping `Done` forgets the stream and ends its in-flight count.
        if let Some(d) = self.done.take() {
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
            d.admitted.audit.record(Outcome::Success, detail);
        }
    }
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.finish("access revoked");
            return Poll::Ready(Some(Err("access revoked".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.bytes += d.len() as u64;
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.finish("upstream error");
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.finish("");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        // hyper stops polling once the body says it has ended; that is a
        // complete response, not a client that left.
        let reason = if self.inner.is_end_stream() {
            ""
        } else {
            "client went away"
        };
        self.finish(reason);
    }
}
