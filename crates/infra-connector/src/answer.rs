//! How a stream's request is described in its audit events, and the
//! error answers it gets: JSON, or a Kubernetes `Status` for clusters.

use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use infra_tunnel::Body;

use crate::route::{Route, Target};

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

/// A stream's request as its audit events and error answers describe it.
pub(crate) struct Call {
    pub(crate) started: Instant,
    /// `METHOD /path?query` and, for a cluster, what it is about.
    pub(crate) what: String,
    /// The path and query as sent, appended to the upstream URL.
    pub(crate) path: String,
    pub(crate) cluster: bool,
    /// For a cluster: what the request is about (an `exec` is recorded).
    pub(crate) info: Option<crate::kube::RequestInfo>,
    connector: String,
}

impl Call {
    pub(crate) fn new(req: &Request<Incoming>, route: &Route, connector: &str) -> Self {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let mut what = format!("{} {path}", req.method());
        let cluster = matches!(route.target, Target::Kube(_));
        let mut info = None;
        if cluster {
            let query = req.uri().query().unwrap_or("");
            let i = crate::kube::RequestInfo::parse(req.method(), req.uri().path(), query);
            what = format!("{what} {}", i.describe(query));
            info = Some(i);
        }
        Self {
            started: Instant::now(),
            what,
            path,
            cluster,
            info,
            connector: connector.to_owned(),
        }
    }

    /// An error answer in the destination's own shape: a Kubernetes
    /// `Status` for clusters (kubectl prints its message), JSON otherwise.
    pub(crate) fn error(&self, status: u16, message: &str) -> Response<Body> {
        if self.cluster {
            crate::kube::status(status, message)
        } else {
            json_error(status, message)
        }
    }

    /// The audit detail of an answer with `status` after `bytes`.
    pub(crate) fn detail(&self, status: u16, bytes: u64, reason: &str) -> String {
        let ms = self.started.elapsed().as_millis();
        let mut d = format!(
            "{} status={status} bytes={bytes} duration_ms={ms} connector={}",
            self.what, self.connector
        );
        if !reason.is_empty() {
            d.push_str(&format!(" reason={reason}"));
        }
        d
    }
}
