//! PostgreSQL clients straight to the gateway: on the server's one port, a
//! connection that starts with an SSLRequest is a database client. It gets
//! TLS (the certificate for the name it asked for), then the destination
//! comes from that name (`<db>.<gateway domain>`) and the password it sends
//! is its Infra token. The session then rides the tunnel like one from
//! `infra proxy`: the connector decides, the gateway only routes.

use bytes::Bytes;
use http_body_util::BodyExt;
use infra_proto_pg::{MAX_STARTUP, Startup, auth_cleartext, error_response, frame, parse_startup, startup_message};
use infra_tunnel::{HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_UPGRADE, TCP_UPGRADE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::state::AppState;

/// `SSLRequest`: length 8, code 80877103.
pub(crate) const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// How long a client has, after TLS, to send its startup packet and
/// password: a silent client must not hold a connection open for ever.
pub(crate) const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Reads more of the client's startup bytes into `buf`; `false` when the
/// client closed, failed, or ran past `deadline` (it is then told so).
async fn read_more<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    buf: &mut Vec<u8>,
    deadline: tokio::time::Instant,
) -> bool {
    let mut chunk = [0u8; 4096];
    match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
        Ok(Ok(0) | Err(_)) => false,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(_) => {
            let msg = format!(
                "no startup message and password within {}s of the TLS handshake",
                STARTUP_TIMEOUT.as_secs()
            );
            let _ = io.write_all(&error_response("FATAL", "08006", &msg)).await;
            false
        }
    }
}

/// Serves one PostgreSQL client after TLS.
pub(crate) async fn serve<S>(state: AppState, mut io: S, sni: Option<String>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let fail = |code: &str, msg: &str| error_response("FATAL", code, msg);
    let own = state.settings.public_host.clone();
    let Some(dest) = sni
        .as_deref()
        .and_then(|n| crate::gateway::destination_of(n, &state.settings.gateway_domain, &own))
    else {
        let msg = format!(
            "connect with the database's name as host: <destination>.{} (sslmode=require)",
            state.settings.gateway_domain
        );
        let _ = io.write_all(&fail("08004", &msg)).await;
        return;
    };
    let mut buf = Vec::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    // The startup packet, then the password the client sends when asked.
    let params = loop {
        match parse_startup(&buf) {
            Ok(Some((Startup::Startup { params }, n))) => {
                buf.drain(..n);
                break params;
            }
            Ok(Some(_)) => {
                let _ = io
                    .write_all(&fail("08P01", "expected a startup message after TLS"))
                    .await;
                return;
            }
            Err(e) => {
                let _ = io.write_all(&fail("08P01", &e.to_string())).await;
                return;
            }
            Ok(None) => {
                if !read_more(&mut io, &mut buf, deadline).await {
                    return;
                }
            }
        }
    };
    if io.write_all(&auth_cleartext()).await.is_err() {
        return;
    }
    let token = loop {
        match frame(&buf, MAX_STARTUP) {
            Ok(Some((b'p', n))) => {
                let t = infra_proto_pg::password(&buf[5..n]).map(str::to_owned);
                buf.drain(..n);
                match t {
                    Ok(t) => break t,
                    Err(e) => {
                        let _ = io.write_all(&fail("08P01", &e.to_string())).await;
                        return;
                    }
                }
            }
            Ok(Some(_)) | Err(_) => {
                let _ = io.write_all(&fail("08P01", "expected a password message")).await;
                return;
            }
            Ok(None) => {
                if !read_more(&mut io, &mut buf, deadline).await {
                    return;
                }
            }
        }
    };
    // The stream to the connector starts with the client's startup packet.
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut first = startup_message(&pairs);
    first.extend_from_slice(&buf);
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    if tx.send(Bytes::from(first)).await.is_err() {
        return;
    }
    let mut req = http::Request::new(infra_tunnel::boxed(rx));
    *req.method_mut() = http::Method::GET;
    *req.version_mut() = http::Version::HTTP_2;
    let uri = format!("http://{dest}/");
    let Ok(uri) = uri.parse() else { return };
    *req.uri_mut() = uri;
    let h = req.headers_mut();
    for (k, v) in [
        (HDR_DESTINATION, dest.clone()),
        (HDR_CLIENT_ADDR, peer),
        (HDR_UPGRADE, TCP_UPGRADE.to_owned()),
        ("authorization", format!("Bearer {token}")),
    ] {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    let Some(t) = state.hub.tunnels(&dest).into_iter().next() else {
        let msg = format!("no connector is serving destination '{dest}' right now; see 'infra destinations list'");
        let _ = io.write_all(&fail("08006", &msg)).await;
        return;
    };
    let mut send = t.send.clone();
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            let _ = io
                .write_all(&fail("08006", &format!("the connector went away: {e}")))
                .await;
            return;
        }
    };
    if resp.headers().get(HDR_UPGRADE).is_none() {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let msg = serde_json::from_slice::<infra_api::ErrorBody>(&body)
            .map(|e| e.message)
            .ok()
            .unwrap_or_else(|| format!("refused ({status})"));
        let _ = io.write_all(&fail("28000", &msg)).await;
        return;
    }
    let (rd, wr) = tokio::io::split(io);
    state.tasks.clients.spawn(infra_tunnel::body::reader_to_channel(rd, tx));
    infra_tunnel::body::body_to_writer(resp.into_body(), wr).await;
}
