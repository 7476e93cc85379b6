//! Direct mode for a PostgreSQL destination: the connector's own listener,
//! for clients that can reach it. They speak plain PostgreSQL with TLS
//! (`sslmode=require` or stricter) and give their Infra token as the
//! password; the same checks then run as for a tunnelled session.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use infra_proto_pg::drive::{Driven, LOGIN_TIMEOUT, drive};
use infra_proto_pg::error_response;
use infra_proto_pg::login::{CleartextLogin, Transport};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::PgConfig;
use crate::pg_session::{ANONYMOUS, Origin, Session, cancel_query};
use crate::state::{State, now_ms};

/// How long a client has for its TLS handshake.
const TLS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub(crate) async fn serve(
    state: Arc<State>,
    destination: String,
    cfg: PgConfig,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            () = shutdown.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        let (state, destination, cfg, acceptor) = (state.clone(), destination.clone(), cfg.clone(), acceptor.clone());
        tokio::spawn(connection(
            state,
            destination,
            cfg,
            acceptor,
            tcp,
            peer.ip().to_string(),
        ));
    }
}

/// One client: TLS first (the password is a token), then the startup and
/// the token as password, then the access decision and the session. A
/// CancelRequest, before TLS or inside it, is forwarded and audited.
async fn connection<S>(
    state: Arc<State>,
    destination: String,
    cfg: PgConfig,
    acceptor: tokio_rustls::TlsAcceptor,
    mut plain: S,
    source: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let started = Instant::now();
    let origin = Origin {
        state: &state,
        destination: &destination,
        user: ANONYMOUS,
        source: &source,
    };
    let mut login = CleartextLogin::new(Transport::TlsRequired);
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    match drive(&mut plain, &mut login, deadline).await {
        Ok(Driven::TlsRequested) => {}
        Ok(Driven::Cancel(key)) => return cancel_query(&origin, &cfg, key).await,
        // Refusals were written by `drive`; a login cannot end before TLS.
        Ok(Driven::Done(_) | Driven::Refused(_)) | Err(_) => return,
    }
    let Ok(Ok(mut io)) = tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(plain)).await else {
        return;
    };
    login.tls_established();
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let l = match drive(&mut io, &mut login, deadline).await {
        Ok(Driven::Done(l)) => l,
        Ok(Driven::Cancel(key)) => return cancel_query(&origin, &cfg, key).await,
        Ok(Driven::TlsRequested | Driven::Refused(_)) | Err(_) => return,
    };
    let buf = BytesMut::from(&l.leftover[..]);
    let token = l.password.into_string();
    admit_and_run(state, destination, cfg, io, l.params, buf, source, started, token).await;
}

/// After the login: the access decision, then the session.
#[allow(clippy::too_many_arguments)]
async fn admit_and_run<S>(
    state: Arc<State>,
    destination: String,
    cfg: PgConfig,
    mut io: S,
    params: Vec<(String, String)>,
    buf: BytesMut,
    source: String,
    started: Instant,
    token: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(decider) = state.decider() else {
        let msg = "this connector has not received its grants from the server yet; try again shortly";
        let _ = io.write_all(&error_response("FATAL", "57P03", msg)).await;
        return;
    };
    let ident = match decider.decide(&token, &destination, now_ms()) {
        Ok(i) => i,
        Err(d) => {
            let who = decider
                .claims(&token, &destination)
                .map(|c| c.name)
                .unwrap_or_else(|| "unknown".into());
            state.spool.record(infra_tunnel::proto::AccessEvent {
                seq: 0,
                time_ms: now_ms(),
                user: who,
                destination: destination.clone(),
                source: source.clone(),
                result: "denied".into(),
                detail: format!("direct session refused: {}", d.message),
            });
            let _ = io.write_all(&error_response("FATAL", "28000", &d.message)).await;
            return;
        }
    };
    let claims = decider.claims(&token, &destination);
    drop(decider);
    let Some(roles) = state.pg.get(&destination).cloned() else {
        return;
    };
    let (cancel, active_id) = state.watch(claims, &destination);
    let session = Session {
        state: state.clone(),
        destination,
        cfg,
        roles,
        ident,
        source,
        cancel,
    };
    session.run(io, params, buf, started).await;
    if let Some(id) = active_id {
        state.untrack(id);
    }
}

#[cfg(test)]
mod tests;
