//! The front door of the tunnel's user streams (and of HTTP direct mode):
//! read which destination and who, admit once, then hand the stream to its
//! protocol. See [`crate::admit`] for what admission guarantees.

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;
use infra_auth::jwt::Claims;
use infra_tunnel::hygiene::Upgrade;
use infra_tunnel::{Body, HDR_CLIENT_ADDR, HDR_DESTINATION, HDR_UPGRADE};

use crate::admit::Entrance;
use crate::answer::{Call, json_error};
use infra_tunnel::credential::{self, CALLBACK_PATH};

use crate::browser;
use crate::route::{Route, Target};
use crate::state::State;
use infra_auth::decide::{Denial, deny};

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Handles one user stream: a request for the destination the gateway (or
/// direct mode) named in `X-Infra-Destination`.
pub(crate) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let name = header(req.headers(), HDR_DESTINATION).unwrap_or_default();
    let source = header(req.headers(), HDR_CLIENT_ADDR).unwrap_or("unknown");
    let Some(entrance) = Entrance::new(&state, name, source) else {
        return json_error(404, &format!("this connector does not serve destination '{name}'"));
    };
    let route = entrance.route().clone();
    let call = Call::new(&req, &route, &state.settings.name);
    let detail = |d: &Denial| call.detail(d.status, 0, &d.message);
    if matches!(route.target, Target::Http) && req.uri().path() == CALLBACK_PATH {
        return browser::callback(&state, &route.name, req.uri().query().unwrap_or_default());
    }
    // The upstream URL is the destination's URL with this path appended: a
    // `..` (in any spelling) would let the upstream resolve it to a path
    // outside the destination's prefix. Clients send paths normalised.
    if infra_tunnel::path::has_dot_segments(req.uri().path()) {
        let d = deny(400, "the path has '.' or '..' segments; send it normalised");
        return refused(&state, &call, &req, entrance.refuse(d, detail));
    }
    let Some(token) = credential::token_from(req.headers()) else {
        let d = deny(
            401,
            format!(
                "log in: send 'Authorization: Bearer TOKEN' (get one with 'infra tokens --destination {} --quiet')",
                route.name
            ),
        );
        return refused(&state, &call, &req, entrance.refuse(d, detail));
    };
    let upgrade = negotiate(&route, req.headers());
    let check = |_: &Claims| shape_refusal(&route, req.headers(), req.method(), &upgrade);
    let admitted = match entrance.admit(&token, check, detail) {
        Ok(a) => a,
        Err(d) => return refused(&state, &call, &req, d),
    };
    match (&route.target, upgrade) {
        (Target::Http | Target::Kube(_), Ok(upgrade)) => crate::http_proxy::forward(admitted, call, req, upgrade).await,
        (Target::Pg { .. }, Ok(Some(proto))) => crate::streams::postgres(admitted, req, proto),
        (Target::Ssh(_), Ok(Some(proto))) => crate::streams::ssh(admitted, req, proto).await,
        // `shape_refusal` turned these away at the door.
        (_, Ok(None) | Err(_)) => call.error(400, "this request does not fit the destination"),
    }
}

/// The answer to a refused stream. A browser is sent to log in instead of
/// shown a 401.
fn refused(state: &State, call: &Call, req: &Request<Incoming>, d: Denial) -> Response<Body> {
    if d.status == 401
        && !call.cluster
        && credential::wants_html(req.headers(), req.method())
        && let Some(r) = browser::login_redirect(state, req.headers(), &call.path)
    {
        return r;
    }
    call.error(d.status, &d.message)
}

/// The upgrade the stream asked for, if the destination speaks it. SSH
/// hosts and databases take only raw streams (`infra-tcp/1`), and a plain
/// request is told which client to use. HTTP services and clusters get an
/// upgrade only to what they speak: `h2c` in particular would hand the
/// client an HTTP/2 connection straight to the upstream, where every later
/// request skips these checks.
fn negotiate(route: &Route, h: &HeaderMap) -> Result<Option<HeaderValue>, Denial> {
    let asked = h.get(HDR_UPGRADE).map(|v| (Upgrade::parse(v), v));
    let name = &route.name;
    let raw_stream = match &route.target {
        Target::Ssh(_) => Some(format!(
            "{name} is an SSH host: connect with 'infra ssh {name}' (or plain ssh after 'infra login')"
        )),
        Target::Pg { .. } => Some(format!(
            "{name} is a PostgreSQL database: connect with 'infra psql {name}' or through 'infra proxy {name}'"
        )),
        Target::Http | Target::Kube(_) => None,
    };
    match (asked, raw_stream) {
        (Some((Some(u), _)), _) if route.target.speaks(u) => Ok(Some(u.header_value())),
        (_, Some(how)) => Err(deny(400, how)),
        (None, None) => Ok(None),
        (Some((_, raw)), None) => {
            let raw = String::from_utf8_lossy(raw.as_bytes());
            let only = if matches!(route.target, Target::Kube(_)) {
                "WebSocket or SPDY/3.1"
            } else {
                "WebSocket"
            };
            Err(deny(
                400,
                format!("{name} does not accept an upgrade to '{raw}': only {only}"),
            ))
        }
    }
}

/// What the destination's protocol refuses about the request itself, once
/// the caller is known.
fn shape_refusal(
    route: &Route,
    h: &HeaderMap,
    method: &http::Method,
    upgrade: &Result<Option<HeaderValue>, Denial>,
) -> Option<Denial> {
    if matches!(route.target, Target::Kube(_))
        && let Some(name) = crate::kube::impersonation_attempt(h)
    {
        // kubectl --as: refused out loud, never quietly replaced.
        return Some(deny(
            403,
            format!(
                "impersonation is not allowed through Infra (the request has an {name} header, as kubectl --as/--as-group sends): you act as yourself, with your grants; ask an admin for a grant instead"
            ),
        ));
    }
    if matches!(route.target, Target::Http)
        && let Some(why) = credential::cross_origin_cookie_use(h, method, request_host(h))
    {
        return Some(deny(
            403,
            format!("refused a request carrying the browser's Infra cookie: {why}"),
        ));
    }
    upgrade.as_ref().err().cloned()
}

/// The host the client addressed: the gateway's copy of it in a tunnel,
/// `Host` in direct mode.
fn request_host(h: &http::HeaderMap) -> Option<&str> {
    h.get(infra_tunnel::HDR_HOST)
        .or_else(|| h.get(http::header::HOST))
        .and_then(|v| v.to_str().ok())
}
