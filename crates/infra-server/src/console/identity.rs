//! *Identity*: where users and workloads come from (identity providers,
//! workload issuers) and the SSH certificate authorities, through the
//! API's `/api/providers`, `/api/workload-issuers` and `/api/ssh/...`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use infra_api::{ProviderCreate, SshCaRotate};
use infra_auth::ssh_ca::CaKind;
use maud::{Markup, html};

use super::form::{FieldError, Posted, Signed, Viewer, button_form, enc, failed, field, given, then_to, token_input};
use super::people::Outcome;
use super::{Done, readable_time};
use crate::api::{providers, ssh_api, workload};
use crate::authn::Caller;
use crate::extract::Body;
use crate::state::AppState;

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AddProvider {
    #[serde(default)]
    name: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    groups_claim: String,
    #[serde(default)]
    allowed_domains: String,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct Shown {
    done: Option<Done>,
}

pub(super) async fn page(
    State(state): State<AppState>,
    Signed(caller): Signed,
    axum::extract::Query(q): axum::extract::Query<Shown>,
) -> Response {
    let notice = q.done.map(|d| html! { (d.message("entry")) });
    render(
        &state,
        caller,
        Outcome {
            notice,
            ..Default::default()
        },
    )
    .await
}

async fn render(state: &AppState, caller: Caller, out: Outcome<AddProvider>) -> Response {
    let v = Viewer::of(state, &caller);
    let (token, admin) = (v.token.clone(), v.admin);

    let issuers = match workload::list(State(state.clone()), caller).await {
        Ok(l) => l.0,
        Err(e) => return failed(&e),
    };
    let providers = match providers::list(State(state.clone())).await {
        Ok(p) => p.0,
        Err(e) => return failed(&e),
    };
    let mut cas = Vec::new();
    for kind in [CaKind::User, CaKind::Host] {
        match crate::ssh::published(state, kind).await {
            Ok(keys) => cas.push((kind, keys)),
            Err(e) => return failed(&e),
        }
    }
    let err = out.error.as_ref();
    let at = |f| FieldError::at(err, "provider", f);
    let sent = &out.sent;
    let body = html! {
        h1 { "Identity" }
        @if let Some(n) = &out.notice { p.notice role="status" { (n) } }
        h2 #providers { "Identity providers" }
        p.lead { "Users sign in with a password or through one of these (OpenID Connect). Groups come with them." }
        @if providers.is_empty() {
            div.empty { p { "No provider: users sign in with passwords." } }
        } @else {
            table {
                caption.visually-hidden { "Identity providers" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Issuer" } th scope="col" { "Client" } th scope="col" { "Groups claim" } th scope="col" { "Domains" }
                    @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for p in &providers {
                        tr {
                            td { (p.name) }
                            td data-label="Issuer" { code { (p.issuer) } }
                            td data-label="Client" { code { (p.client_id) } }
                            td data-label="Groups claim" { code { (p.groups_claim) } }
                            td data-label="Domains" { @if p.allowed_domains.is_empty() { "any" } @else { (p.allowed_domains.join(", ")) } }
                            @if admin { td { (button_form(&format!("/console/identity/providers/{}/remove", enc(&p.name)), &token, "Remove", &format!("Remove provider {}", p.name))) } }
                        }
                    }
                }
            }
        }
        @if admin {
            details.add open[err.is_some()] {
                summary { "Add a provider" }
                form.stack method="post" action="/console/identity/providers" {
                    (token_input(&token))
                    (field("p-name", "Name", "name", &sent.name, at("name"), ("text", "okta", true)))
                    (field("p-issuer", "Issuer URL", "issuer", &sent.issuer, at("issuer"), ("url", "https://example.okta.com", true)))
                    (field("p-client", "Client ID", "client_id", &sent.client_id, at("client_id"), ("text", "", true)))
                    (field("p-secret", "Client secret", "client_secret", "", at("client_secret"), ("password", "", true)))
                    (field("p-groups", "Groups claim (default groups)", "groups_claim", &sent.groups_claim, at("groups_claim"), ("text", "groups", false)))
                    (field("p-domains", "Allowed email domains, comma-separated (default any)", "allowed_domains", &sent.allowed_domains, at("allowed_domains"), ("text", "example.com", false)))
                    button.primary type="submit" { "Add provider" }
                }
            }
        }
        h2 #workload-issuers { "Workload issuers" }
        p.lead { "Issuers whose tokens workloads exchange for Infra credentials (Kubernetes service accounts, CI systems). Add one with " code { "infra workload-issuers add" } "." }
        @if issuers.is_empty() {
            div.empty { p { "No workload issuer." } }
        } @else {
            table {
                caption.visually-hidden { "Workload issuers" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Issuer" } th scope="col" { "Audience" } th scope="col" { "Mappings" } th scope="col" { "Added" }
                    @if admin { th scope="col" { span.visually-hidden { "Action" } } } } }
                tbody {
                    @for w in &issuers {
                        tr {
                            td { (w.name) }
                            td data-label="Issuer" {
                                @if let Some(c) = &w.cluster { "cluster " a href=(format!("/console/destinations/{}", enc(c))) { (c) } } @else { code { (w.issuer) } }
                            }
                            td data-label="Audience" { code { (w.audience) } }
                            td data-label="Mappings" {
                                @for (from, to) in &w.mappings { div { code { (from) } " → " (to) } }
                            }
                            td data-label="Added" { (readable_time(&w.created)) }
                            @if admin { td { (button_form(&format!("/console/identity/workload-issuers/{}/remove", enc(&w.name)), &token, "Remove", &format!("Remove workload issuer {}", w.name))) } }
                        }
                    }
                }
            }
        }
        h2 #ssh { "SSH certificate authorities" }
        p.lead { "Hosts trust the user CA; clients trust the host CA. After a rotation the old key stays trusted for a day." }
        @for (kind, keys) in &cas { (ca(*kind, keys, admin.then_some(token.as_str()))) }
    };
    let status = out.error.as_ref().map_or(StatusCode::OK, |e| e.status);
    v.page(status, "Identity", body)
}

fn ca(kind: CaKind, keys: &[String], token: Option<&str>) -> Markup {
    let name = match kind {
        CaKind::User => "User CA",
        CaKind::Host => "Host CA",
    };
    html! {
        div.card {
            div.card-head {
                h3 { (name) }
                @if let Some(t) = token {
                    form.inline method="post" action="/console/identity/ssh-ca/rotate" {
                        (token_input(t))
                        input type="hidden" name="kind" value=(kind.as_str());
                        button type="submit" aria-label=(format!("Rotate the {name}")) { "Rotate" }
                    }
                }
            }
            @if keys.is_empty() { p.muted { "Made at first use." } }
            @for (i, k) in keys.iter().enumerate() {
                div.command {
                    code { (k) }
                    @if i == 0 { span.badge { "signing" } } @else { span.badge { "still trusted" } }
                }
            }
        }
    }
}

pub(super) async fn add_provider(State(state): State<AppState>, p: Posted<AddProvider>) -> Response {
    let Posted { caller, form } = p;
    let again = caller.clone();
    let req = ProviderCreate {
        name: form.name.trim().to_owned(),
        issuer: form.issuer.trim().to_owned(),
        client_id: form.client_id.trim().to_owned(),
        client_secret: form.client_secret.clone(),
        groups_claim: given(&form.groups_claim),
        scopes: Vec::new(),
        allowed_domains: form.allowed_domains.split(',').filter_map(given).collect(),
        allow_unverified_email: false,
    };
    match providers::create(State(state.clone()), caller, Body(req)).await {
        Ok((_, info)) => {
            let info = info.0;
            let notice = html! { "Added provider " (info.name) "." @if let Some(n) = &info.notice { " " (n) } };
            render(
                &state,
                again,
                Outcome {
                    notice: Some(notice),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) if super::form::about_the_form(&e) => {
            let m = e.message.to_ascii_lowercase();
            let field = [
                "client_secret",
                "client_id",
                "groups_claim",
                "allowed_domains",
                "issuer",
            ]
            .into_iter()
            .find(|f| m.contains(&f.replace('_', " ")) || m.contains(f))
            .unwrap_or("name");
            let out = Outcome {
                notice: None,
                error: Some(FieldError::new("provider", field, e)),
                sent: form,
            };
            render(&state, again, out).await
        }
        Err(e) => failed(&e),
    }
}

pub(super) async fn remove_provider(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        providers::remove(State(state), p.caller, Path(name)).await,
        &Done::Removed.after("/console/identity"),
    )
}

pub(super) async fn remove_issuer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    p: Posted<super::Nothing>,
) -> Response {
    then_to(
        workload::remove(State(state), p.caller, Path(name)).await,
        &Done::Removed.after("/console/identity"),
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct Rotate {
    #[serde(default)]
    kind: String,
}

pub(super) async fn rotate(State(state): State<AppState>, p: Posted<Rotate>) -> Response {
    let again = p.caller.clone();
    let req = SshCaRotate { kind: p.form.kind };
    match ssh_api::rotate(State(state.clone()), p.caller, Body(req)).await {
        Ok(info) => {
            let notice = html! { "Rotated the " (info.0.kind) " CA: a new key signs from now on." };
            render(
                &state,
                again,
                Outcome {
                    notice: Some(notice),
                    ..Default::default()
                },
            )
            .await
        }
        Err(e) => failed(&e),
    }
}
