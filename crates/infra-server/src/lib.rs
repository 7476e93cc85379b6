//! `infra server`: the control plane.
//!
//! The HTTP API (authentication, authorization of API calls, users, groups,
//! grants, keys, tokens, audit), the credential authority's published keys,
//! and the TLS listener. State lives in the store; this crate holds none
//! that another replica would need.

mod api;
mod audit;
mod authn;
mod bootstrap;
mod config;
mod error;
mod gateway;
mod hub;
mod oidc;
mod pg_gateway;
mod serve;
mod signing;
mod ssh;
mod state;
mod tls;
mod tunnel_server;
mod web;

pub use config::ServerArgs;

/// Runs the server until SIGTERM or SIGINT.
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    serve::run(args).await
}

/// The OpenAPI document, for `infra server --openapi` and tests.
pub fn openapi_json() -> String {
    api::openapi_json()
}
