//! `infra server`: the control plane.
//!
//! The HTTP API (authentication, authorization of API calls, users, groups,
//! grants, keys, tokens, audit), the credential authority's published keys,
//! and the TLS listener. State lives in the store; this crate holds none
//! that another replica would need.

mod api;
mod audit;
mod audit_checkpoint;
mod audit_export;
mod audit_intake;
mod audit_out;
mod audit_retention;
mod authn;
mod bootstrap;
mod browser;
mod config;
mod console;
mod error;
mod extract;
mod forward_auth;
mod gateway;
mod gateway_names;
mod grants_snapshot;
mod hashing;
mod hub;
mod idp;
mod metrics;
mod oidc;
mod pg_gateway;
mod recordings;
mod request_events;
mod serve;
mod signing;
mod ssh;
mod state;
mod tasks;
mod tls;
mod tunnel_server;
mod web;
mod wire;
mod workloads;

pub use config::ServerArgs;

/// Entry points for the fuzz targets in `fuzz/`, which live outside the
/// crate: thin wrappers over crate-private parsers, no behaviour of their
/// own. Not an API; nothing else may use them.
#[doc(hidden)]
pub mod fuzzing {
    /// The destination a gateway request is for, from its Host (or SNI).
    pub fn destination_of(host: &str, gateway_domain: &str, own_host: &str) -> Option<String> {
        crate::gateway::destination_of(host, gateway_domain, own_host)
    }

    /// Whether a Host is an IP address (then the SNI names the destination).
    pub fn is_ip(host: &str) -> bool {
        crate::gateway::is_ip(host)
    }

    /// Whether a connector's advertised direct URL is plain enough to hand
    /// to clients.
    pub fn valid_direct_url(u: &str) -> bool {
        crate::tunnel_server::valid_direct_url(u)
    }
}

/// Runs the server until SIGTERM or SIGINT. `init_logs` sets up logging
/// (JSON lines when given `true`) once the configuration is read.
pub async fn run(args: ServerArgs, init_logs: fn(bool)) -> anyhow::Result<()> {
    serve::run(args, init_logs).await
}

/// The OpenAPI document, for `infra server --openapi` and tests.
pub fn openapi_json() -> String {
    api::openapi_json()
}

#[cfg(test)]
mod testing;
