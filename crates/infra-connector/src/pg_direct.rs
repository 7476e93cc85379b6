//! Direct mode for a PostgreSQL destination: the connector's own listener,
//! for clients that can reach it. They speak plain PostgreSQL with TLS
//! (`sslmode=require` or stricter) and give their Infra token as the
//! password; the same checks then run as for a tunnelled session.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use infra_proto_pg::{MAX_STARTUP, Startup, auth_cleartext, error_response, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::PgConfig;
use crate::pg_session::{Session, read_startup};
use crate::state::{State, now_ms};

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
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tcp = tcp;
            let mut buf = BytesMut::with_capacity(1024);
            // The first packet: TLS is required (the password is a token).
            let first =
                tokio::time::timeout(std::time::Duration::from_secs(10), read_startup(&mut tcp, &mut buf)).await;
            match first {
                Ok(Ok(Some(Startup::Ssl))) => {
                    if tcp.write_all(b"S").await.is_err() {
                        return;
                    }
                    let Ok(Ok(tls)) =
                        tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    login(state, destination, cfg, tls, peer.ip().to_string(), started).await;
                }
                Ok(Ok(Some(Startup::Cancel { pid, secret }))) => {
                    // A cancel key is its own credential, as in PostgreSQL.
                    let _ = async {
                        let mut s = tokio::net::TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
                        s.write_all(&infra_proto_pg::cancel_request(pid, secret)).await
                    }
                    .await;
                }
                Ok(Ok(Some(_))) => {
                    let msg = "this Infra listener requires TLS: connect with sslmode=require and your Infra token as the password";
                    let _ = tcp.write_all(&error_response("FATAL", "28000", msg)).await;
                }
                Ok(Err(e)) => {
                    let _ = tcp.write_all(&error_response("FATAL", "08P01", &e)).await;
                }
                _ => {}
            }
        });
    }
}

/// After TLS: the startup, the token as password, the access decision,
/// then the session.
async fn login<S>(state: Arc<State>, destination: String, cfg: PgConfig, mut io: S, source: String, started: Instant)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(4096);
    let params = match read_startup(&mut io, &mut buf).await {
        Ok(Some(Startup::Startup { params })) => params,
        Ok(Some(_)) => {
            let _ = io
                .write_all(&error_response(
                    "FATAL",
                    "08P01",
                    "expected a startup message after TLS",
                ))
                .await;
            return;
        }
        Ok(None) => return,
        Err(e) => {
            let _ = io.write_all(&error_response("FATAL", "08P01", &e)).await;
            return;
        }
    };
    if io.write_all(&auth_cleartext()).await.is_err() {
        return;
    }
    let token = loop {
        match frame(&buf, MAX_STARTUP) {
            Ok(Some((b'p', n))) => {
                let m = buf.split_to(n);
                match infra_proto_pg::password(&m[5..]) {
                    Ok(t) => break t.to_owned(),
                    Err(e) => {
                        let _ = io.write_all(&error_response("FATAL", "08P01", &e.to_string())).await;
                        return;
                    }
                }
            }
            Ok(Some(_)) | Err(_) => {
                let _ = io
                    .write_all(&error_response("FATAL", "08P01", "expected a password message"))
                    .await;
                return;
            }
            Ok(None) => match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    };
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
                result: infra_tunnel::proto::Outcome::Denied,
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
