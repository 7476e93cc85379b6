//! HTTP services and Kubernetes clusters, once admitted: clean the request,
//! add who the user is, forward it upstream, stream the answer back,
//! audit it.
//!
//! *Architecture Invariant:* nothing the client sends about identity
//! reaches the upstream. The user's credential, every identity header in
//! any spelling (`infra_tunnel::hygiene`), hop-by-hop headers and any
//! header the client names in `Connection` are removed before the
//! connector sets its own; the only upgrades are those the destination's
//! protocol needs.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
// The one hygiene rule, shared with the gateway and direct mode; named
// here too for what reaches the connector's proxy (and its fuzz target).
pub(crate) use infra_tunnel::hygiene::strip_client_headers;
use infra_tunnel::proto::Outcome;
use infra_tunnel::{Body, HDR_UPGRADE};

use crate::admit::Admitted;
use crate::answer::Call;
use crate::browser::{strip_token_cookie, strip_token_set_cookie};
use crate::metered::{Done, Metered};
use crate::route::Target;

fn hv(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// Forwards an admitted request; `upgrade` is the protocol it switches to,
/// already checked against what the destination speaks.
pub(crate) async fn forward(
    a: Admitted,
    call: Call,
    req: Request<Incoming>,
    upgrade: Option<HeaderValue>,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    if let Err(message) = identify(&a, &mut parts.headers) {
        return call.error(400, message);
    }
    parts.uri = match format!("{}{}", a.route.url, call.path).parse() {
        Ok(u) => u,
        Err(_) => return call.error(400, "request path is not valid"),
    };
    parts.version = http::Version::HTTP_11;
    let recording = match crate::recording::tap::plan(&a, &call, upgrade.as_ref()) {
        Ok(r) => r,
        Err((status, message)) => {
            a.audit.record(Outcome::Denied, call.detail(status, 0, &message));
            return call.error(status, &message);
        }
    };
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
    let sent = match &a.route.target {
        Target::Kube(k) => k.client.request(upstream_req).await,
        _ => a.state.client.request(upstream_req).await,
    };
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(destination = %a.route.name, error = %e, "upstream request failed");
            a.audit
                .record(Outcome::Failure, call.detail(502, 0, "upstream unreachable"));
            let message = format!("destination {} is unreachable from its connector: {e}", a.route.name);
            return call.error(502, &message);
        }
    };
    let status = resp.status().as_u16();
    let (upstream_body, mut out) = match (client_bytes, upgrade) {
        (Some(client_bytes), Some(proto)) if status == 101 => {
            match switch(&a, &call, resp, client_bytes, proto, recording).await {
                Ok(switched) => switched,
                Err(e) => return call.error(502, &e),
            }
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
    let done = Done {
        admitted: a,
        started: call.started,
        what: call.what,
        status,
    };
    *out.body_mut() = infra_tunnel::boxed(Metered::new(upstream_body, done));
    out
}

/// Replaces what the client said about identity with what Infra knows.
fn identify(a: &Admitted, h: &mut HeaderMap) -> Result<(), &'static str> {
    let original_host = h.get(header::HOST).cloned();
    strip_client_headers(h);
    strip_token_cookie(h);
    let ident = &a.ident;
    if let Target::Kube(k) = &a.route.target {
        // The cluster sees the connector's service account acting as the
        // user: RBAC (and the API server's audit log) judge the person.
        if let Some(auth) = k.authorization() {
            h.insert(header::AUTHORIZATION, auth);
        }
        let user = hv(&ident.email).ok_or("your user name cannot be sent to Kubernetes")?;
        h.insert(HeaderName::from_static("impersonate-user"), user);
        for g in ident.current_groups.iter().filter_map(|g| hv(g)) {
            h.append(HeaderName::from_static("impersonate-group"), g);
        }
    } else {
        let said = infra_tunnel::hygiene::identity_headers(&ident.email, &ident.groups, &ident.roles);
        let about = [
            (HeaderName::from_static("x-forwarded-for"), a.source.clone()),
            (HeaderName::from_static("x-forwarded-proto"), "https".into()),
        ];
        for (name, value) in said.into_iter().chain(about) {
            if let Some(v) = hv(&value) {
                h.insert(name, v);
            }
        }
        if let Some(host) = original_host {
            h.insert(HeaderName::from_static("x-forwarded-host"), host);
        }
        if let Some(v) = a.state.assertion(ident, &a.route.name).and_then(|s| hv(&s)) {
            h.insert(HeaderName::from_static("x-infra-assertion"), v);
        }
    }
    if let Some(auth) = a.route.upstream_authorization.as_deref().and_then(hv) {
        h.insert(header::AUTHORIZATION, auth);
    }
    if let Some(v) = hv(&a.route.authority) {
        h.insert(header::HOST, v);
    }
    Ok(())
}

/// The upstream agreed to switch protocols: relay the raw bytes both ways
/// from here on.
async fn switch(
    a: &Admitted,
    call: &Call,
    resp: Response<Incoming>,
    client_bytes: Incoming,
    proto: HeaderValue,
    recording: Option<crate::recording::tap::Plan>,
) -> Result<(Body, Response<Body>), String> {
    let mut head = Response::new(Body::default());
    *head.headers_mut() = resp.headers().clone();
    // The upstream never speaks in the reserved namespace: only the
    // connector tells the gateway that an upgrade happened.
    infra_tunnel::hygiene::strip_reserved(head.headers_mut());
    let io = hyper_util::rt::TokioIo::new(
        hyper::upgrade::on(resp)
            .await
            .map_err(|e| format!("upstream upgrade failed: {e}"))?,
    );
    let (rd, wr) = tokio::io::split(io);
    let (tx, rx) = infra_tunnel::body::bytes_channel(16);
    let mut started = "session started".to_owned();
    match recording {
        Some(plan) => {
            // Recorded: the recording exists before a byte passes.
            let title = crate::recording::tap::title(&plan.meta);
            let out = a.state.recordings.start(plan.meta.clone(), title).map_err(|e| {
                tracing::error!(error = %format!("{e:#}"), "cannot start a session recording");
                format!("the session cannot be recorded, so it is refused: {e:#}")
            })?;
            started = format!("session started recording={}", out.id());
            let tap = crate::recording::tap::Tap::new(out, &plan);
            let tasks = &a.state.tasks;
            tasks.spawn(crate::recording::tap::from_client(client_bytes, wr, tap.clone()));
            tasks.spawn(crate::recording::tap::from_server(rd, tx, tap));
        }
        None => {
            let tasks = &a.state.tasks;
            tasks.spawn(infra_tunnel::body::body_to_writer(client_bytes, wr));
            tasks.spawn(infra_tunnel::body::reader_to_channel(rd, tx));
        }
    }
    head.headers_mut().insert(HDR_UPGRADE, proto);
    if matches!(a.route.target, Target::Kube(_)) {
        // exec, attach, port-forward: the start is an event of its own;
        // the end (with bytes and duration) follows.
        a.audit.record(Outcome::Success, call.detail(101, 0, &started));
    }
    Ok((infra_tunnel::boxed(rx), head))
}
