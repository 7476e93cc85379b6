//! `infra proxy` for an HTTP destination: a loopback HTTP/1.1 listener
//! whose requests go to the destination through the gateway with the
//! token added, so an HTTP client with no notion of Infra (curl, an app's
//! own client) reaches it by a plain `http://127.0.0.1:PORT` URL.
//!
//! Whoever reaches the port acts as the proxy's identity, as with the
//! database listener. A client's own `Authorization` and
//! `Proxy-Authorization` are dropped: the token is the only credential
//! that leaves. A browser on the machine is a client too: a web page could
//! make it send requests here, so a request must name this listener as
//! its host (a page reaching it through a DNS name of its own, DNS
//! rebinding, does not) and must not come from another site.

use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::BodyExt as _;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::{Route, Target};

type Upstream = SendRequest<hyper::body::Incoming>;

/// Connection-level headers, which a proxy never passes on.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
];

/// Whether `req` may use the listener on `port`: its `Host` is the
/// listener's own address, and a browser did not send it from another site.
fn local_request(h: &http::HeaderMap, port: u16) -> Result<(), &'static str> {
    let host = h
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let own = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ];
    if !own.iter().any(|o| o.eq_ignore_ascii_case(host)) {
        return Err("Infra: this local proxy answers only requests for its own address (http://127.0.0.1:PORT)");
    }
    let cross_site = h
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.eq_ignore_ascii_case("cross-site") || s.eq_ignore_ascii_case("same-site"));
    let foreign_origin = h
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| !own.iter().any(|own| o.eq_ignore_ascii_case(&format!("http://{own}"))));
    if cross_site || foreign_origin {
        return Err("Infra: requests from another site's pages are refused");
    }
    Ok(())
}

pub(super) async fn serve(t: Route, port: u16, who: &str) -> anyhow::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("listen on 127.0.0.1:{port} (choose another with --port)"))?;
    let port = l.local_addr()?.port();
    eprintln!(
        "Proxying http://127.0.0.1:{port} to {} as {who} (any local user can connect to this port); try:\n  curl http://127.0.0.1:{port}/",
        t.destination()
    );
    loop {
        let (c, _) = l.accept().await?;
        c.set_nodelay(true)?;
        let t = t.clone();
        tokio::spawn(async move {
            // One upstream connection per client connection, opened at its
            // first request and again if the gateway closed it.
            let upstream: Arc<tokio::sync::Mutex<Option<Upstream>>> = Arc::default();
            let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (t, upstream) = (t.clone(), upstream.clone());
                async move {
                    if let Err(why) = local_request(req.headers(), port) {
                        return Ok::<_, std::convert::Infallible>(plain(http::StatusCode::FORBIDDEN, why.into()));
                    }
                    Ok(forward(&t, &upstream, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(c), svc)
                .await;
        });
    }
}

fn plain(status: http::StatusCode, message: String) -> http::Response<infra_tunnel::Body> {
    let mut r = http::Response::new(infra_tunnel::full(format!("{message}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn forward(
    route: &Route,
    upstream: &tokio::sync::Mutex<Option<Upstream>>,
    mut req: http::Request<hyper::body::Incoming>,
) -> http::Response<infra_tunnel::Body> {
    let t = match route.target().await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: request refused: {e:#}", route.destination());
            return plain(http::StatusCode::FORBIDDEN, format!("Infra: {e:#}"));
        }
    };
    let t = &t;
    let token = match t.source.token(&t.destination).await {
        Ok(tok) => tok,
        Err(e) => {
            eprintln!("{}: request refused: {e:#}", t.destination);
            return plain(http::StatusCode::UNAUTHORIZED, format!("Infra: {e:#}"));
        }
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str)
        .to_owned();
    let Ok(uri) = path.parse() else {
        return plain(http::StatusCode::BAD_REQUEST, "Infra: a bad request path".into());
    };
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    // Headers the client's `Connection` names are its connection's too.
    let named: Vec<String> = h
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for n in HOP_BY_HOP.iter().map(|s| (*s).to_owned()).chain(named) {
        h.remove(n.as_str());
    }
    let (Ok(host), Ok(bearer)) = (
        http::HeaderValue::from_str(&t.name),
        http::HeaderValue::from_str(&format!("Bearer {token}")),
    ) else {
        return plain(http::StatusCode::BAD_GATEWAY, "Infra: a bad gateway name".into());
    };
    h.insert(http::header::HOST, host);
    h.insert(http::header::AUTHORIZATION, bearer);
    let mut guard = upstream.lock().await;
    let alive = match guard.as_mut() {
        Some(s) => s.ready().await.is_ok(),
        None => false,
    };
    if !alive {
        match connect(t).await {
            Ok(s) => *guard = Some(s),
            Err(e) => {
                eprintln!("{}: {e:#}", t.destination);
                return plain(http::StatusCode::BAD_GATEWAY, format!("Infra: {e:#}"));
            }
        }
    }
    let Some(sender) = guard.as_mut() else {
        return plain(
            http::StatusCode::BAD_GATEWAY,
            "Infra: no connection to the gateway".into(),
        );
    };
    match sender.send_request(req).await {
        Ok(resp) => {
            if resp.status() == http::StatusCode::UNAUTHORIZED || resp.status() == http::StatusCode::FORBIDDEN {
                eprintln!("{}: the request was refused ({})", t.destination, resp.status());
            }
            resp.map(|b| b.map_err(Into::into).boxed_unsync())
        }
        Err(e) => {
            *guard = None;
            plain(
                http::StatusCode::BAD_GATEWAY,
                format!("Infra: request to the gateway: {e}"),
            )
        }
    }
}

async fn connect(t: &Target) -> anyhow::Result<Upstream> {
    let tls = super::connect_gateway(t).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn only_requests_for_this_listener_from_no_other_site() {
        assert!(local_request(&headers(&[("host", "127.0.0.1:8080")]), 8080).is_ok());
        assert!(
            local_request(
                &headers(&[("host", "localhost:8080"), ("origin", "http://localhost:8080")]),
                8080
            )
            .is_ok()
        );
        // DNS rebinding: the page's own name, resolving to 127.0.0.1.
        assert!(local_request(&headers(&[("host", "evil.example:8080")]), 8080).is_err());
        assert!(local_request(&headers(&[("host", "127.0.0.1:9999")]), 8080).is_err());
        assert!(local_request(&headers(&[]), 8080).is_err());
        // A page elsewhere posting here.
        assert!(
            local_request(
                &headers(&[("host", "127.0.0.1:8080"), ("origin", "https://evil.example")]),
                8080
            )
            .is_err()
        );
        assert!(
            local_request(
                &headers(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]),
                8080
            )
            .is_err()
        );
    }
}
