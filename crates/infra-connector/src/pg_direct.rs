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

use crate::admit::Entrance;
use crate::audit::Audit;
use crate::config::PgConfig;
use crate::pg_session::{Session, cancel_query};
use crate::state::State;
use infra_auth::decide::Denial;

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
        state.tasks.clone().spawn(connection(
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
    // A cancel key is its own credential, as in PostgreSQL: nobody is
    // known to have sent it.
    let anonymous = Audit::new(state.spool.clone(), "postgres", "anonymous", &destination, &source);
    let mut login = CleartextLogin::new(Transport::TlsRequired);
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    match drive(&mut plain, &mut login, deadline).await {
        Ok(Driven::TlsRequested) => {}
        Ok(Driven::Cancel(key)) => return cancel_query(&anonymous, &cfg, key).await,
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
        Ok(Driven::Cancel(key)) => return cancel_query(&anonymous, &cfg, key).await,
        Ok(Driven::TlsRequested | Driven::Refused(_)) | Err(_) => return,
    };
    let buf = BytesMut::from(&l.leftover[..]);
    let token = l.password.into_string();
    admit_and_run(state, &destination, io, l.params, buf, &source, started, &token).await;
}

/// After the login: admission, then the session.
#[allow(clippy::too_many_arguments)]
async fn admit_and_run<S>(
    state: Arc<State>,
    destination: &str,
    mut io: S,
    params: Vec<(String, String)>,
    buf: BytesMut,
    source: &str,
    started: Instant,
    token: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(entrance) = Entrance::new(&state, destination, source) else {
        let msg = format!("this connector does not serve database '{destination}'");
        let _ = io.write_all(&error_response("FATAL", "08006", &msg)).await;
        return;
    };
    let refused = |d: &Denial| format!("direct session refused: {}", d.message);
    let admitted = match entrance.admit(token, |_| None, refused) {
        Ok(a) => a,
        Err(d) => {
            // 57P03 (cannot connect now) tells the client to try again.
            let code = if d.status == 503 { "57P03" } else { "28000" };
            let _ = io.write_all(&error_response("FATAL", code, &d.message)).await;
            return;
        }
    };
    let Some(session) = Session::new(&admitted) else {
        return;
    };
    session.run(io, params, buf, started).await;
    // The watch and the in-flight count end with the session.
    drop(admitted);
}

#[cfg(test)]
mod tests;
