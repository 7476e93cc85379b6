//! HTTP and Kubernetes destinations: check the caller, clean the request, add identity,
//! forward upstream, stream the answer back, audit it.
//!
//! *Architecture Invariant:* nothing the client sends about identity
//! reaches the upstream. The user's credential, every identity header in
//! any spelling (`infra_tunnel::hygiene`), hop-by-hop headers and any
//! header the client names in `Connection` are removed before the
//! connector sets its own; the only upgrades are those the destination's
//! protocol needs.

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
use infra_tunnel::hygiene::Upgrade;
// The one hygiene rule, shared with the gateway and direct mode; named
// here too for what reaches the connector's proxy (and its fuzz target).
pub(crate) use infra_tunnel::hygiene::strip_client_headers;
use infra_tunnel::proto::AccessEvent;
use infra_tunnel::{Body, BoxError, HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_UPGRADE};
use tokio_util::sync::WaitForCancellationFutureOwned;

use infra_core::ReturnPath;

use crate::config::Kind;
use crate::decide::{Denial, TOKEN_COOKIE, is_token_cookie, token_from};
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

/// Whether a destination of this kind speaks `u`: browsers' WebSockets
/// for HTTP services, kubectl's SPDY and WebSocket streams for clusters,
/// and raw streams only for databases and SSH hosts.
fn upgrade_allowed(kind: &Kind, u: Upgrade) -> bool {
    matches!(
        (kind, u),
        (Kind::Http, Upgrade::WebSocket)
            | (Kind::Kubernetes(_), Upgrade::WebSocket | Upgrade::Spdy31)
            | (Kind::Postgres(_) | Kind::Ssh(_), Upgrade::InfraTcp)
    )
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
            result: infra_tunnel::proto::Outcome::Denied,
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
    // The upstream URL is the destination's URL with this path appended: a
    // `..` (in any spelling) would let the upstream resolve it to a path
    // outside the destination's prefix. Clients send paths normalised.
    if infra_tunnel::path::has_dot_segments(req.uri().path()) {
        return refuse(
            "anonymous",
            Denial {
                status: 400,
                message: "the path has '.' or '..' segments; send it normalised".into(),
            },
        );
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
    if kube.is_none()
        && let Some(why) = cross_origin_cookie_use(req.headers(), &method)
    {
        return refuse(
            &ident.email,
            Denial {
                status: 403,
                message: format!("refused a request carrying the browser's Infra cookie: {why}"),
            },
        );
    }

    // What the client asked to upgrade to: `Some(None)` is an upgrade to a
    // protocol no destination speaks (`h2c`, anything unknown).
    let asked = req.headers().get(HDR_UPGRADE).map(|v| (Upgrade::parse(v), v.clone()));
    // SSH hosts and databases take only raw streams (`infra-tcp/1`); a
    // plain request is told which client to use.
    let tcp_stream = |how: &str| {
        asked
            .as_ref()
            .and_then(|(u, _)| *u)
            .filter(|u| upgrade_allowed(&dest.kind, *u))
            .map(Upgrade::header_value)
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
                    result: infra_tunnel::proto::Outcome::Failure,
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
    // HTTP services and clusters: an upgrade only to what they speak. `h2c`
    // in particular would hand the client an HTTP/2 connection straight to
    // the upstream, where every later request skips these checks.
    let upgrade = match &asked {
        None => None,
        Some((Some(u), _)) if upgrade_allowed(&dest.kind, *u) => Some(u.header_value()),
        Some((_, raw)) => {
            let raw = String::from_utf8_lossy(raw.as_bytes()).into_owned();
            let allowed = if kube.is_some() {
                "WebSocket or SPDY/3.1"
            } else {
                "WebSocket"
            };
            return refuse(
                &ident.email,
                Denial {
                    status: 400,
                    message: format!("{} does not accept an upgrade to '{raw}': only {allowed}", dest.name),
                },
            );
        }
    };
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
                result: infra_tunnel::proto::Outcome::Failure,
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
            // The upstream never speaks in the reserved namespace: only the
            // connector tells the gateway that an upgrade happened.
            infra_tunnel::hygiene::strip_reserved(head.headers_mut());
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
                    result: infra_tunnel::proto::Outcome::Success,
                    detail: detail(101, 0, "session started"),
                });
            }
            (infra_tunnel::boxed(rx), head)
        }
        _ => {
            let (parts, body) = resp.into_parts();
            let mut head = Response::from_parts(parts, Body::default());
            // An upstream's `X-Infra-Upgrade` would make the gateway switch
            // protocols on an upgrade the upstream refused.
            infra_tunnel::hygiene::strip_reserved(head.headers_mut());
            (infra_tunnel::boxed(body), head)
        }
    };
    for n in infra_tunnel::HOP_BY_HOP {
        out.headers_mut().remove(n);
    }
    strip_token_set_cookie(out.headers_mut());
    let event = AccessEvent {
        seq: 0,
        time_ms: now_ms(),
        user: ident.email.clone(),
        destination: dest.name.clone(),
        source,
        result: infra_tunnel::proto::Outcome::Success,
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

/// Whether a browser was made to use the token cookie by a page of another
/// origin: a state-changing method or an upgrade (a WebSocket, whose
/// messages such a page could read) that a browser marks as not from this
/// very origin. A sibling destination (`other.<gateway domain>`) is the
/// same *site*, so `SameSite=Lax` lets the cookie through; these checks
/// do not. Requests with `Authorization` are not a browser's ambient
/// credential and are not affected.
fn cross_origin_cookie_use(h: &HeaderMap, method: &http::Method) -> Option<String> {
    if h.contains_key(header::AUTHORIZATION) {
        return None;
    }
    let safe = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    );
    if safe && !h.contains_key(infra_tunnel::HDR_UPGRADE) && !h.contains_key(header::UPGRADE) {
        return None;
    }
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    // Fetch metadata: `same-origin`, or `none` for what the user did
    // (typed, bookmarked) are fine; `same-site` and `cross-site` are not.
    if let Some(site) = text("sec-fetch-site")
        && !site.eq_ignore_ascii_case("same-origin")
        && !site.eq_ignore_ascii_case("none")
    {
        return Some(format!("it came from another origin (Sec-Fetch-Site: {site})"));
    }
    let host = text(infra_tunnel::HDR_HOST).or_else(|| text(header::HOST.as_str()))?;
    match text(header::ORIGIN.as_str()) {
        Some(origin) if !origin.eq_ignore_ascii_case(&format!("https://{host}")) => {
            Some(format!("it came from another origin ({origin})"))
        }
        _ => None,
    }
}

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
    let back = format!("https://{host}{}", ReturnPath::or_root(path));
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
    let mut rd = ReturnPath::default();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "token" => token = Some(v.into_owned()),
            // Only a path on this host, never an open redirect: anything
            // else returns to the destination's root.
            "rd" => rd = ReturnPath::or_root(&v),
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
    // `__Host-` requires `Secure`, `Path=/` and no `Domain`: the cookie is
    // this host's alone. `SameSite=Lax` keeps it off cross-site requests
    // other than top-level navigations (see docs/security.md for what a
    // sibling destination, which is same-site, can still do).
    let cookie = format!("{TOKEN_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={max_age}");
    let mut r = Response::new(infra_tunnel::empty());
    *r.status_mut() = StatusCode::FOUND;
    if let (Some(loc), Some(c)) = (hv(rd.as_str()), hv(&cookie)) {
        r.headers_mut().insert(header::LOCATION, loc);
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// Removes the connector's token cookie in every spelling (other cookies
/// are the upstream's).
fn strip_token_cookie(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && !kv.split('=').next().is_some_and(is_token_cookie))
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Some(v) = hv(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

/// Drops an upstream's `Set-Cookie` for the token cookie: an upstream must
/// not fix a user's Infra credential (to its own account, say) in their
/// browser.
fn strip_token_set_cookie(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v.to_str().ok().and_then(|s| s.split(['=', ';']).next());
            !name.is_some_and(is_token_cookie)
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    /// Whether a request with these headers is refused as a cross-origin
    /// use of the token cookie.
    fn check(method: http::Method, pairs: &[(&'static str, &'static str)], refused: bool) {
        let h = headers(pairs);
        assert_eq!(
            cross_origin_cookie_use(&h, &method).is_some(),
            refused,
            "{method} {pairs:?}"
        );
    }

    #[test]
    fn cross_origin_cookie_uses() {
        use http::Method;
        let host = ("x-infra-host", "web.localhost:4443");
        for (method, pairs, refused) in [
            (
                Method::POST,
                vec![host, ("origin", "https://other.localhost:4443")],
                true,
            ),
            (Method::POST, vec![host, ("origin", "https://web.localhost")], true),
            (Method::POST, vec![host, ("origin", "null")], true),
            (Method::DELETE, vec![host, ("sec-fetch-site", "same-site")], true),
            (Method::PUT, vec![host, ("sec-fetch-site", "cross-site")], true),
            (
                Method::GET,
                vec![
                    host,
                    ("x-infra-upgrade", "websocket"),
                    ("origin", "https://other.localhost:4443"),
                ],
                true,
            ),
            (
                Method::POST,
                vec![host, ("origin", "https://web.localhost:4443")],
                false,
            ),
            (
                Method::POST,
                vec![
                    host,
                    ("origin", "https://WEB.localhost:4443"),
                    ("sec-fetch-site", "same-origin"),
                ],
                false,
            ),
            (Method::POST, vec![host, ("sec-fetch-site", "none")], false),
            (Method::POST, vec![host], false),
            (
                Method::GET,
                vec![
                    host,
                    ("origin", "https://other.localhost:4443"),
                    ("sec-fetch-site", "same-site"),
                ],
                false,
            ),
            (
                Method::POST,
                vec![
                    host,
                    ("authorization", "Bearer t"),
                    ("origin", "https://other.localhost:4443"),
                ],
                false,
            ),
            (
                Method::POST,
                vec![("host", "web.localhost:4443"), ("origin", "https://web.localhost:4443")],
                false,
            ),
        ] {
            check(method, &pairs, refused);
        }
    }

    #[test]
    fn upstream_cannot_set_the_token_cookie() {
        let mut h = headers(&[
            ("set-cookie", "__Host-infra_token=fixed; Path=/; Secure"),
            ("set-cookie", "infra_token=fixed; Domain=localhost"),
            ("set-cookie", "session=app; Path=/"),
            ("set-cookie", "theme=dark"),
        ]);
        strip_token_set_cookie(&mut h);
        let left: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        assert_eq!(left, ["session=app; Path=/", "theme=dark"]);
    }

    #[test]
    fn upgrades_per_kind() {
        use crate::config::Kind;
        assert!(upgrade_allowed(&Kind::Http, Upgrade::WebSocket));
        assert!(!upgrade_allowed(&Kind::Http, Upgrade::Spdy31));
        assert!(!upgrade_allowed(&Kind::Http, Upgrade::InfraTcp));
    }
}
