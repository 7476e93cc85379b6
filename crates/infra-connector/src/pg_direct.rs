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

use crate::admit::Entrance;
use crate::config::PgConfig;
use crate::decide::Denial;
use crate::pg_session::{Session, read_startup};
use crate::state::State;

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
        state.tasks.clone().spawn(async move {
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
                    login(state, destination, tls, peer.ip().to_string(), started).await;
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
async fn login<S>(state: Arc<State>, destination: String, mut io: S, source: String, started: Instant)
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
    let Some(entrance) = Entrance::new(&state, &destination, &source) else {
        return;
    };
    let refused = |d: &Denial| format!("direct session refused: {}", d.message);
    let admitted = match entrance.admit(&token, |_| None, refused) {
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
