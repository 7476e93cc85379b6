//! A real HTTP/1.1 upstream for connector tests, in a thread of its own:
//!
//! - `/echo…` answers `{"method", "path", "headers"}` as JSON;
//! - `/sse` sends `data: N` events every 100 ms until the client leaves;
//! - `/bytes?n=N` streams N bytes;
//! - `/upload` reads the body and answers `{"bytes": N}`;
//! - `/slow?ms=N` answers after N milliseconds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::mpsc;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A running upstream; stops when dropped.
pub struct Upstream {
    pub port: u16,
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn full(s: String) -> Body {
    Full::new(Bytes::from(s)).boxed()
}

fn channel_body(rx: mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_like::ReceiverStream(rx);
    StreamBody::new(stream).boxed()
}

mod futures_like {
    //! A minimal `Stream` of frames over an mpsc receiver.
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;
    use tokio::sync::mpsc;

    pub(super) struct ReceiverStream(pub(super) mpsc::Receiver<Bytes>);

    impl futures_core::Stream for ReceiverStream {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let resp = if path.starts_with("/echo") {
        let headers: serde_json::Map<String, serde_json::Value> = req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    serde_json::Value::String(v.to_str().unwrap_or("?").to_owned()),
                )
            })
            .collect();
        let body = serde_json::json!({
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "headers": headers,
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body.to_string()))
    } else if path == "/sse" {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for n in 0u64.. {
                if tx.send(Bytes::from(format!("data: {n}\n\n"))).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(channel_body(rx))
    } else if path == "/bytes" {
        let n: u64 = query.strip_prefix("n=").and_then(|v| v.parse().ok()).unwrap_or(0);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut left = n;
            while left > 0 {
                let take = left.min(chunk.len() as u64);
                let piece = chunk.slice(..usize::try_from(take).unwrap_or(0));
                if tx.send(piece).await.is_err() {
                    return;
                }
                left -= take;
            }
        });
        Response::builder()
            .header("content-length", n.to_string())
            .body(channel_body(rx))
    } else if path == "/slow" {
        let ms: u64 = query.strip_prefix("ms=").and_then(|v| v.parse().ok()).unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::builder().body(full("slow done".into()))
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                n += d.len() as u64;
            }
        }
        Response::builder().body(full(serde_json::json!({ "bytes": n }).to_string()))
    } else {
        Response::builder().status(404).body(full("not found".into()))
    };
    Ok(resp.unwrap_or_else(|_| Response::new(full("error".into()))))
}

impl Upstream {
    pub fn start() -> anyhow::Result<Upstream> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr: SocketAddr = std_listener.local_addr()?;
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                    return;
                };
                loop {
                    let (tcp, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
                        _ = &mut stop_rx => return,
                    };
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), hyper::service::service_fn(handle))
                            .with_upgrades()
                            .await;
                    });
                }
            });
        });
        Ok(Upstream {
            port: addr.port(),
            url: format!("http://127.0.0.1:{}", addr.port()),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_echo() {
        let u = Upstream::start().unwrap();
        let out = std::process::Command::new("curl")
            .args(["-s", &format!("{}/echo?a=1", u.url)])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["path"], "/echo?a=1");
    }
}
