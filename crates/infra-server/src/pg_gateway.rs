//! PostgreSQL clients straight to the gateway: on the server's one port, a
//! connection that starts with an SSLRequest is a database client. It gets
//! TLS (the certificate for the name it asked for), then the destination
//! comes from that name (`<db>.<gateway domain>`) and the password it sends
//! is its Infra token. The session then rides the tunnel like one from
//! `infra proxy`: the connector decides, the gateway only routes.

use bytes::Bytes;
use infra_proto_pg::drive::{Driven, LOGIN_TIMEOUT, drive};
use infra_proto_pg::login::{CleartextLogin, Login, Transport};
use infra_proto_pg::{Fatal, SqlState, startup_message};
use infra_tunnel::refusal::Refusal;
use infra_tunnel::{HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_UPGRADE, TCP_UPGRADE};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::gateway::send_to_tunnel;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::state::AppState;

/// `SSLRequest`: length 8, code 80877103.
pub(crate) const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// Serves one PostgreSQL client after TLS.
pub(crate) async fn serve<S>(state: AppState, mut io: S, sni: Option<String>, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let domain = &state.settings.gateway_domain;
    let own = &state.settings.public_host;
    let Some(dest) = sni
        .as_deref()
        .and_then(|n| crate::gateway::destination_of(n, domain, own))
    else {
        let msg = format!("connect with the database's name as host: <destination>.{domain} (sslmode=require)");
        refuse(&mut io, &Fatal::new(SqlState::RejectedConnection, msg)).await;
        return;
    };
    session(&state.hub, &state.tasks.clients, dest, io, peer).await;
}

/// The client's login, then its session through a tunnel for `dest`.
async fn session<S>(hub: &Hub, tasks: &TaskTracker, dest: String, mut io: S, peer: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut login = CleartextLogin::new(Transport::Tls);
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let login = match drive(&mut io, &mut login, deadline).await {
        Ok(Driven::Done(l)) => l,
        // A cancel carries no token, so no connector would take it; and
        // PostgreSQL never answers one. Refusals were written by `drive`.
        Ok(Driven::Cancel(_) | Driven::TlsRequested | Driven::Refused(_)) | Err(_) => return,
    };
    let Some((tx, req)) = stream_request(&dest, peer, &login) else {
        return;
    };
    drop(login);
    let started = std::time::Instant::now();
    // A name the client made up is not a label.
    let label = if hub.count(&dest) > 0 { dest.as_str() } else { "unknown" };
    let counted = |result: &str| crate::metrics::gateway(label, "postgres", result.to_owned(), started.elapsed());
    let resp = match send_to_tunnel(hub, &dest, req).await {
        Ok(r) => r,
        Err(f) => {
            counted("unavailable");
            refuse(&mut io, &Fatal::new(SqlState::ConnectionFailure, f.message(&dest))).await;
            return;
        }
    };
    if resp.headers().get(HDR_UPGRADE).is_none() {
        counted("refused");
        refuse(&mut io, &Refusal::read(resp).await.to_pg()).await;
        return;
    }
    counted("ok");
    let (rd, wr) = tokio::io::split(io);
    tasks.spawn(infra_tunnel::body::reader_to_channel(rd, tx));
    infra_tunnel::body::body_to_writer(resp.into_body(), wr).await;
}

/// The tunnel request for the session, as `infra proxy` would open it,
/// with the token from the password. Its body starts with the client's
/// startup message (the connector reads it again) and whatever the client
/// sent after its password; the sender carries the rest.
fn stream_request(
    dest: &str,
    peer: String,
    login: &Login,
) -> Option<(mpsc::Sender<Bytes>, http::Request<infra_tunnel::Body>)> {
    let pairs: Vec<(&str, &str)> = login.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut first = startup_message(&pairs);
    first.extend_from_slice(&login.leftover);
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    tx.try_send(Bytes::from(first)).ok()?;
    let mut req = http::Request::new(infra_tunnel::boxed(rx));
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = format!("http://{dest}/").parse().ok()?;
    let h = req.headers_mut();
    for (k, v) in [
        (HDR_DESTINATION, dest.to_owned()),
        (HDR_CLIENT_ADDR, peer),
        (HDR_UPGRADE, TCP_UPGRADE.to_owned()),
        ("authorization", format!("Bearer {}", login.password.expose())),
    ] {
        // A token that cannot be a header value is left out: the
        // connector then refuses the stream for want of one.
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    Some((tx, req))
}

/// Tells the client why it cannot go on; it is closed next.
async fn refuse<S: AsyncWrite + Unpin>(io: &mut S, f: &Fatal) {
    let _ = io.write_all(&f.encode()).await;
    let _ = io.flush().await;
}

#[cfg(test)]
mod tests;
