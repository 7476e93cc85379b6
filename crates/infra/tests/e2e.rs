#![allow(unreachable_pub, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! End-to-end tests: the real `infra` binary as server and CLI, on SQLite
//! and on a real PostgreSQL started by the testkit. One test binary, many
//! tests, so the large dependency graph links once.

mod e2e {
    pub mod admin;
    pub mod attacks;
    pub mod attacks_forward_auth;
    pub mod attacks_pg;
    pub mod attacks_web;
    pub mod audit;
    pub mod audit_export;
    pub mod audit_retention;
    pub mod bad_input;
    pub mod common;
    pub mod console;
    mod console_admin;
    pub mod deploy;
    pub mod direct;
    pub mod durability;
    pub mod forward_auth;
    pub mod gateway;
    pub mod identity;
    pub mod kube;
    pub mod lifecycle;
    pub mod login;
    pub mod metrics;
    pub mod postgres;
    pub mod replicas;
    pub mod requests;
    pub mod ssh;
    pub mod tokens;
}
