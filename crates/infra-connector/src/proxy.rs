//! HTTP and Kubernetes destinations: check the caller, clean the request, add identity,
//! forward upstream, stream the answer back, audit it.
//!
//! *Architecture Invariant:* nothing the client sends about identity
//! reaches the upstream. The user's credential, `X-Forwarded-*`,
//! `X-Infra-*`, `Forwarded`, `Impersonate-*`, hop-by-hop headers and any
//! header the client names in `Connection` are removed before the
//! connector sets its own.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body::Frame;
use hyper::body::Incoming;
use infra_tunnel::proto::AccessEvent;
use infra_tunnel::{Body, BoxError, HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_UPGRADE};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::decide::{Denial, TOKEN_COOKIE, token_from};
use crate::state::{State, now_ms};

pub(crate) fn json_error(status: u16, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "code": status, "message": message }).to_string();
    let mut r = Response::new(infra_tunnel::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if status == 401 {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"infra\", charset=\"UTF-8\""),
        );
    }
    r
}

/// Removes every header the client must not control. Names are compared
/// with `_` read as `-`: CGI, WSGI, Rack and many frameworks give
/// `X_Infra_User` and `X-Infra-User` the same variable (`HTTP_X_INFRA_USER`),
/// so an underscore spelling would otherwise pass for the real header.
pub(crate) fn strip_client_headers(h: &mut HeaderMap) {
    infra_tunnel::strip_hop_by_hop(h);
    h.remove(header::FORWARDED);
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let s = k.as_str().replace('_', "-");
            s.starts_with("x-forwarded-")
                || s.starts_with("x-infra-")
                || s.starts_with("impersonate-")
                || s == "x-real-ip"
                || s == "authorization"
                || infra_tunnel::HOP_BY_HOP.contains(&s.as_str())
        })
        .cloned()
        .collect();
    for n in doomed {
        h.remove(n);
    }
}

fn hv(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Handles one proxied request for destination `dest_name`.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let inflight = state.begin();
    let started = Instant::now();
    let dest_name = req
        .headers()
        .get(HDR_DESTINATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let source = req
        .headers()
        .get(HDR_CLIENT_ADDR)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let kube = state.kube.get(&dest_name).cloned();
    // For a cluster, what the request is about: verb, resource, namespace.
    let about = match &kube {
        Some(_) => {
            let info = crate::kube::RequestInfo::parse(&method, req.uri().path(), req.uri().query().unwrap_or(""));
            format!(" {}", info.describe(req.uri().query().unwrap_or("")))
        }
        None => String::new(),
    };
    let error = |status: u16, message: &str| match &kube {
        Some(_) => crate::kube::status(status, message),
        None => json_error(status, message),
    };
    let detail = |status: u16, bytes: u64, reason: &str| {
        let ms = started.elapsed().as_millis();
        let mut d = format!(
            "{method} {path}{about} status={status} bytes={bytes} duration_ms={ms} connector={}",
            state.settings.name
        );
        if !reason.is_empty() {
            d.push_str(&format!(" reason={reason}"));
        }
        d
    };
    let Some(dest) = state
        .settings
        .destinations
        .iter()
        .find(|d| d.name == dest_name)
        .cloned()
    else {
        return json_error(404, &format!("this connector does not serve destination '{dest_name}'"));
    };
    let refuse = |user: &str, d: Denial| {
        state.spool.record(AccessEvent {
            seq: 0,
            time_ms: now_ms(),
            user: user.to_owned(),
            destination: dest.name.clone(),
            source: source.clone(),
            result: "denied".into(),
            detail: detail(d.status, 0, &d.message),
        });
        // A browser is sent to log in instead of shown a 401.
        if d.status == 401
            && kube.is_none()
            && wants_html(req.headers(), &method)
            && let Some(r) = login_redirect(&state, req.headers(), &path)
        {
            return r;
        }
        error(d.status, &d.message)
    };
    if kube.is_none() && req.uri().path() == CALLBACK_PATH {
        return callback(&state, &dest.name, req.uri().query().unwrap_or_default());
    }
    let Some(token) = token_from(req.headers()) else {
        return refuse(
            "anonymous",
            Denial {
                status: 401,
                message: format!(
                    "log in: send 'Authorization: Bearer TOKEN' (get one with 'infra tokens --destination {} --quiet')",
                    dest.name
                ),
            },
        );
    };
    let Some(decider) = state.decider() else {
        return error(
            503,
            "this connector has not received its grants from the server yet; try again shortly",
        );
    };
    if kube.is_some()
        && let Some(h) = crate::kube::impersonation_attempt(req.headers())
    {
        // kubectl --as: refused out loud, never quietly replaced.
        let who = decider
            .claims(&token, &dest.name)
            .map(|c| c.name)
            .unwrap_or_else(|| "unknown".into());
        return refuse(
            &who,
            Denial {
                status: 403,
                message: format!(
                    "impersonation is not allowed through Infra (the request has an {h} header, as kubectl --as/--as-group sends): you act as yourself, with your grants; ask an admin for a grant instead"
                ),
            },
        );
    }
    let ident = match decider.decide(&token, &dest.name, now_ms()) {
        Ok(i) => i,
        Err(d) => {
            let who = decider
                .claims(&token, &dest.name)
                .map(|c| c.name)
                .unwrap_or_else(|| "unknown".into());
            return refuse(&who, d);
        }
    };
    let claims = decider.claims(&token, &dest.name);
    drop(decider);

    let upgrade = req.headers().get(HDR_UPGRADE).cloned();
    // SSH hosts and databases take only raw streams (`infra-tcp/1`); a
    // plain request is told which client to use.
    let tcp_stream = |how: &str| {
        upgrade
            .clone()
            .filter(|u| u.as_bytes() == infra_tunnel::TCP_UPGRADE.as_bytes())
            .ok_or_else(|| {
                Box::new(refuse(
                    &ident.email,
                    Denial {
                        status: 400,
                        message: format!("{} is {how}", dest.name),
                    },
                ))
            })
    };
    if let crate::config::Kind::Ssh(cfg) = &dest.kind {
        let proto = match tcp_stream(&format!(
            "an SSH host: connect with 'infra ssh {0}' (or plain ssh after 'infra login')",
            dest.name
        )) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let watch = state.watch_roles(claims, &dest.name, ident.roles.clone());
        let st = state.clone();
        let email = ident.email.clone();
        return match crate::ssh_host::session(st, dest.name.clone(), cfg.clone(), ident, source.clone(), watch, req)
            .await
        {
            Ok(mut r) => {
                r.headers_mut().insert(HDR_UPGRADE, proto);
                drop(inflight);
                r
            }
            Err((status, message)) => {
                state.spool.record(AccessEvent {
                    seq: 0,
                    time_ms: now_ms(),
                    user: email,
                    destination: dest.name.clone(),
                    source: source.clone(),
                    result: "failure".into(),
                    detail: format!("session refused: {message}"),
                });
                json_error(status, &message)
            }
        };
    }
    if let (Some(roles), crate::config::Kind::Postgres(cfg)) = (state.pg.get(&dest.name).cloned(), &dest.kind) {
        let proto = match tcp_stream(&format!(
            "a PostgreSQL database: connect with 'infra psql {0}' or through 'infra proxy {0}'",
            dest.name
        )) {
            Ok(p) => p,
            Err(r) => return *r,
        };
        let (cancel, active_id) = state.watch(claims, &dest.name);
        // The client's bytes arrive as the request body and leave as the
        // response body; the session sees one duplex stream.
        let (client_side, session_side) = tokio::io::duplex(64 * 1024);
        let (rd, wr) = tokio::io::split(client_side);
        tokio::spawn(infra_tunnel::body::body_to_writer(req.into_body(), wr));
        let (tx, rx) = infra_tunnel::body::bytes_channel(16);
        tokio::spawn(infra_tunnel::body::reader_to_channel(rd, tx));
        let session = crate::pg_session::Session {
            state: state.clone(),
            destination: dest.name.clone(),
            cfg: cfg.clone(),
            roles,
            ident,
            source,
            cancel,
        };
        let st = state.clone();
        tokio::spawn(async move {
            session.serve(session_side).await;
            if let Some(id) = active_id {
                st.untrack(id);
            }
            drop(inflight);
        });
        let mut r = Response::new(infra_tunnel::boxed(rx));
        r.headers_mut().insert(HDR_UPGRADE, proto);
        return r;
    }
    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_client_headers(&mut parts.headers);
    strip_token_cookie(&mut parts.headers);
    let h = &mut parts.headers;
    if let Some(k) = &kube {
        // The cluster sees the connector's service account acting as the
        // user: RBAC (and the API server's audit log) judge the person.
        if let Some(auth) = k.authorization() {
            h.insert(header::AUTHORIZATION, auth);
        }
        match hv(&ident.email) {
            Some(v) => {
                h.insert(HeaderName::from_static("impersonate-user"), v);
            }
            None => return error(400, "your user name cannot be sent to Kubernetes"),
        }
        for g in &ident.current_groups {
            if let Some(v) = hv(g) {
                h.append(HeaderName::from_static("impersonate-group"), v);
            }
        }
    }
    for (name, value) in [
        ("x-forwarded-user", ident.email.clone()),
        ("x-forwarded-email", ident.email.clone()),
        ("x-forwarded-groups", ident.groups.join(",")),
        ("x-forwarded-role", ident.roles.join(",")),
        ("x-forwarded-for", source.clone()),
        ("x-forwarded-proto", "https".into()),
    ]
    .into_iter()
    .filter(|_| kube.is_none())
    {
        if let Some(v) = hv(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    if kube.is_none() {
        if let Some(host) = original_host {
            h.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Some(a) = state.assertion(&ident, &dest.name).and_then(|a| hv(&a)) {
            h.insert(HeaderName::from_static("x-infra-assertion"), a);
        }
    }
    if let Some(auth) = dest.upstream_authorization.as_deref().and_then(hv) {
        h.insert(header::AUTHORIZATION, auth);
    }
    if let Some(v) = hv(&dest.authority) {
        h.insert(header::HOST, v);
    }
    let uri = format!("{}{path}", dest.url);
    parts.uri = match uri.parse() {
        Ok(u) => u,
        Err(_) => return error(400, "request path is not valid"),
    };
    parts.version = http::Version::HTTP_11;
    let (upstream_req, client_bytes) = match &upgrade {
        // An upgrade: the GET goes upstream without a body; the client's
        // bytes (the tunnel request body) follow once the upstream agrees.
        Some(proto) => {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
            (Request::from_parts(parts, infra_tunnel::empty()), Some(body))
        }
        None => (Request::from_parts(parts, infra_tunnel::boxed(body)), None),
    };

    let (cancel, active_id) = state.watch(claims, &dest.name);
    let sent = match &kube {
        Some(k) => k.client.request(upstream_req).await,
        None => state.client.request(upstream_req).await,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            if let Some(id) = active_id {
                state.untrack(id);
            }
            tracing::warn!(destination = %dest.name, error = %e, "upstream request failed");
            let status = 502;
            state.spool.record(AccessEvent {
                seq: 0,
                time_ms: now_ms(),
                user: ident.email.clone(),
                destination: dest.name.clone(),
                source: source.clone(),
                result: "failure".into(),
                detail: detail(status, 0, "upstream unreachable"),
            });
            return error(
                status,
                &format!("destination {} is unreachable from its connector: {e}", dest.name),
            );
        }
    };
    let status = resp.status().as_u16();
    let (upstream_body, mut out) = match (client_bytes, upgrade) {
        (Some(client_bytes), Some(proto)) if status == 101 => {
            let mut head = Response::new(Body::default());
            *head.headers_mut() = resp.headers().clone();
            let io = match hyper::upgrade::on(resp).await {
                Ok(io) => hyper_util::rt::TokioIo::new(io),
                Err(e) => return error(502, &format!("upstream upgrade failed: {e}")),
            };
            let (rd, wr) = tokio::io::split(io);
            tokio::spawn(infra_tunnel::body::body_to_writer(client_bytes, wr));
            let (tx, rx) = infra_tunnel::body::bytes_channel(16);
            tokio::spawn(infra_tunnel::body::reader_to_channel(rd, tx));
            head.headers_mut().insert(HDR_UPGRADE, proto);
            if kube.is_some() {
                // exec, attach, port-forward: the start is an event of its
                // own; the end (with bytes and duration) follows.
                state.spool.record(AccessEvent {
                    seq: 0,
                    time_ms: now_ms(),
                    user: ident.email.clone(),
                    destination: dest.name.clone(),
                    source: source.clone(),
                    result: "success".into(),
                    detail: detail(101, 0, "session started"),
                });
            }
            (infra_tunnel::boxed(rx), head)
        }
        _ => {
            let (parts, body) = resp.into_parts();
            (infra_tunnel::boxed(body), Response::from_parts(parts, Body::default()))
        }
    };
    for n in infra_tunnel::HOP_BY_HOP {
        out.headers_mut().remove(n);
    }
    let event = AccessEvent {
        seq: 0,
        time_ms: now_ms(),
        user: ident.email.clone(),
        destination: dest.name.clone(),
        source,
        result: "success".into(),
        detail: String::new(),
    };
    let metered = Metered {
        inner: upstream_body,
        bytes: 0,
        cancelled: Box::pin(cancel.cancelled_owned()),
        done: Some(Done {
            _inflight: inflight,
            state: state.clone(),
            event,
            active_id,
            started,
            method: method.to_string(),
            path: format!("{path}{about}"),
            status,
        }),
    };
    *out.body_mut() = infra_tunnel::boxed(metered);
    out
}

struct Done {
    _inflight: crate::state::Inflight,
    state: Arc<State>,
    event: AccessEvent,
    active_id: Option<u64>,
    started: Instant,
    method: String,
    path: String,
    status: u16,
}

/// The upstream response body, counted, cut when access is revoked, and
/// audited when it ends (or the client goes away).
struct Metered {
    inner: Body,
    bytes: u64,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    done: Option<Done>,
}

impl Metered {
    fn finish(&mut self, reason: &str) {
        if let Some(d) = self.done.take() {
            if let Some(id) = d.active_id {
                d.state.untrack(id);
            }
            let mut ev = d.event;
            ev.detail = format!(
                "{} {} status={} bytes={} duration_ms={} connector={}",
                d.method,
                d.path,
                d.status,
                self.bytes,
                d.started.elapsed().as_millis(),
                d.state.settings.name
            );
            if !reason.is_empty() {
                ev.detail.push_str(&format!(" ended={reason}"));
            }
            d.state.spool.record(ev);
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

use std::future::Future as _;

/// Where the server sends a browser back with a token.
const CALLBACK_PATH: &str = "/.infra/callback";

fn wants_html(h: &HeaderMap, method: &http::Method) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// 302 to the server's `/authorize`, which comes back to this URL.
fn login_redirect(state: &State, h: &HeaderMap, path: &str) -> Option<Response<Body>> {
    let host = h
        .get(infra_tunnel::HDR_HOST)
        .or_else(|| h.get(header::HOST))?
        .to_str()
        .ok()?;
    let issuer = state.issuer();
    if issuer.is_empty() {
        return None;
    }
    let back = format!("https://{host}{path}");
    let mut r = Response::new(infra_tunnel::empty());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut()
        .insert(header::LOCATION, hv(&format!("{issuer}/authorize?rd={}", enc(&back)))?);
    Some(r)
}

/// `/.infra/callback?token=…&rd=/path`: keep the token as a cookie for this
/// host only, and go back to the page. The token is checked first, so a
/// forged link cannot plant a cookie that would let anyone in.
fn callback(state: &State, dest: &str, query: &str) -> Response<Body> {
    let mut token = None;
    let mut rd = "/".to_owned();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            // Only a path on this host: never an open redirect.
            "rd" if v.starts_with('/') && !v.starts_with("//") && !v.starts_with("/\\") => rd = v.into_owned(),
            _ => {}
        }
    }
    let Some(token) = token else {
        return json_error(400, "missing token");
    };
    let Some(decider) = state.decider() else {
        return json_error(
            503,
            "this connector has not received its grants from the server yet; try again shortly",
        );
    };
    let claims = match decider.claims(&token, dest) {
        Some(c) => c,
        None => {
            return json_error(
                401,
                "the token in this link is invalid or expired; open the destination again",
            );
        }
    };
    if let Err(d) = decider.authorize(&claims, dest, now_ms()) {
        return json_error(d.status, &d.message);
    }
    let max_age = (claims.exp - now_ms() / 1000).max(0);
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    let mut r = Response::new(infra_tunnel::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let (Some(loc), Some(c)) = (hv(&rd), hv(&cookie)) {
        r.headers_mut().insert(header::LOCATION, loc);
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Removes the connector's token cookie (other cookies are the upstream's).
fn strip_token_cookie(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(TOKEN_COOKIE))
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Some(v) = hv(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `fuzz_headers` target: `x_infra_` (and any header
    /// spelled with underscores) passed the hygiene, and upstreams that
    /// read `_` as `-` would have taken it for Infra's own.
    #[test]
    fn underscore_spellings_are_stripped() {
        let mut h = HeaderMap::new();
        for name in [
            "x_infra_",
            "x_infra_user",
            "X_Forwarded_For",
            "impersonate_user",
            "Impersonate-Group",
            "x_real_ip",
            "transfer_encoding",
            "authorization",
            "x-kept",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        strip_client_headers(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
