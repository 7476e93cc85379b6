//! Admission: the one door of every user stream, tunnelled or direct.
//!
//! A stream names its destination; [`Entrance::new`] resolves it (one
//! lookup) and from then on every refusal is audited. [`Entrance::admit`]
//! verifies the token once, lets the protocol refuse the request's shape,
//! decides from the pushed grants, and registers the revocation watch.
//! What it hands back, [`Admitted`], is the only way a protocol module
//! (HTTP, Kubernetes, PostgreSQL, SSH) comes by an identity.
//!
//! *Architecture Invariant:* every user stream is admitted exactly once,
//! and the control stream never comes here (the tunnel tells it apart by
//! its secret before any stream reaches a protocol).

use std::sync::Arc;

use infra_auth::jwt::Claims;
use infra_tunnel::proto::Outcome;

use crate::audit::Audit;
use crate::clock::now_ms;
use crate::route::Route;
use crate::state::{Inflight, State, Watch};
use infra_auth::decide::{Denial, Identity, deny};

/// A stream at the door: which destination, from where.
pub(crate) struct Entrance {
    state: Arc<State>,
    route: Arc<Route>,
    /// Events before the caller is known are `anonymous`'s.
    audit: Audit,
    source: String,
    inflight: Inflight,
}

/// A stream let in: who, to what, watched for revocation, audited.
pub(crate) struct Admitted {
    pub(crate) state: Arc<State>,
    pub(crate) route: Arc<Route>,
    pub(crate) ident: Identity,
    /// Cancelled when access is revoked; the stream is forgotten when
    /// this is dropped.
    pub(crate) watch: Watch,
    pub(crate) audit: Audit,
    /// Where the stream came from (the client's address).
    pub(crate) source: String,
    /// Counts the stream for a graceful drain until dropped.
    _inflight: Inflight,
}

const ANONYMOUS: &str = "anonymous";
const NOT_READY: &str = "this connector has not received its grants from the server yet; try again shortly";
const AUDIT_BEHIND: &str = "this connector cannot write its audit log as fast as requests arrive; try again shortly";

impl Entrance {
    /// The door to `destination`, if this connector serves it.
    pub(crate) fn new(state: &Arc<State>, destination: &str, source: &str) -> Option<Self> {
        let route = state.routes.get(destination)?.clone();
        Some(Self {
            audit: Audit::new(state.spool.clone(), route.target.kind(), ANONYMOUS, &route.name, source),
            source: source.to_owned(),
            inflight: state.begin(),
            state: state.clone(),
            route,
        })
    }

    pub(crate) fn route(&self) -> &Arc<Route> {
        &self.route
    }

    /// Refuses the stream before its token is read; audited as
    /// `anonymous`, with the protocol's own `detail`.
    pub(crate) fn refuse(&self, d: Denial, detail: impl FnOnce(&Denial) -> String) -> Denial {
        self.audit.record(Outcome::Denied, detail(&d));
        d
    }

    /// Lets the holder of `token` in, or says why not (audited).
    ///
    /// `check` is the protocol's own refusal of the request's shape (an
    /// impersonation header, a plain request to a database): it runs once
    /// the caller is known, before their grants are read. `detail` words
    /// the audit event of a refusal.
    pub(crate) fn admit(
        self,
        token: &str,
        check: impl FnOnce(&Claims) -> Option<Denial>,
        detail: impl Fn(&Denial) -> String,
    ) -> Result<Admitted, Denial> {
        // The audit handle for a refusal is made only when one happens:
        // a request let in pays for one handle, its own.
        let refuse = |user: &str, d: Denial| {
            self.audit.as_user(user).record(Outcome::Denied, detail(&d));
            d
        };
        // Back-pressure: a request is let in only if its event can be
        // written; never an unaudited request, never a dropped event.
        if self.state.spool.overloaded() {
            return Err(refuse(ANONYMOUS, deny(503, AUDIT_BEHIND)));
        }
        let Some(decider) = self.state.decider() else {
            return Err(refuse(ANONYMOUS, deny(503, NOT_READY)));
        };
        let name = &self.route.name;
        // Timed until the decision is made, whichever way it goes.
        let timing = crate::metrics::decision_timer(self.route.target.kind());
        let claims = decider.verify(token, name).map_err(|d| refuse("unknown", d))?;
        if let Some(d) = check(&claims) {
            return Err(refuse(&claims.name, d));
        }
        let ident = decider
            .authorize(&claims, name, now_ms())
            .map_err(|d| refuse(&claims.name, d))?;
        drop(timing);
        drop(decider);
        let roles = if self.route.target.watches_roles() {
            ident.roles.clone()
        } else {
            Vec::new()
        };
        let watch = self.state.watch(&ident.claims, name, roles);
        Ok(Admitted {
            audit: self
                .audit
                .as_user_for(&ident.email, ident.claims.act.as_ref().map(|a| a.sub.as_str())),
            state: self.state,
            route: self.route,
            ident,
            watch,
            source: self.source,
            _inflight: self.inflight,
        })
    }
}
