//! Workload identity: issuers whose JWTs (Kubernetes service-account
//! tokens, CI systems' OIDC tokens) a workload may exchange for a
//! short-lived Infra credential of the service account its claim maps to
//! (RFC 8693 token exchange).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Form, Path, State};
use infra_api::{TokenExchangeResponse, WebhookCaInfo, WorkloadIssuerCreate, WorkloadIssuerInfo};
use infra_core::workload::Mappings;
use infra_core::{DestinationKind, InfraRole};
use infra_store::providers::{self, WorkloadIssuerRow};
use infra_store::{AccessKeyRow, UserRow, connectors, identity, keys, now_ms};
use infra_tunnel::proto::{ClusterIssuer, Inventory};
use serde::Deserialize;
use serde_json::Value;

use crate::audit::{self, Event};
use crate::authn::{Caller, Source};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Query};
use crate::state::AppState;
use crate::wire::{ms, time};

/// The longest an exchanged credential lives (shorter if the workload's
/// own token expires sooner).
const EXCHANGED_MS: i64 = 3_600_000;
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn to_api(w: &WorkloadIssuerRow) -> WorkloadIssuerInfo {
    WorkloadIssuerInfo {
        name: w.name.clone(),
        issuer: w.issuer.clone(),
        jwks_url: w.jwks_url.clone(),
        audience: w.audience.clone(),
        claim: w.claim.clone(),
        mappings: serde_json::from_str(&w.mappings).unwrap_or_default(),
        cluster: w.cluster.clone(),
        created: time(w.created_at),
    }
}

/// What the connector of Kubernetes destination `cluster` last reported as
/// its service-account issuer and keys, if `connector` (the one trusted
/// for it) still serves it.
pub(crate) async fn cluster_issuer(
    c: &mut infra_store::Conn,
    cluster: &str,
    connector: &str,
) -> Result<Option<ClusterIssuer>, infra_store::StoreError> {
    let Some(row) = connectors::destination(c, cluster).await? else {
        return Ok(None);
    };
    if row.connector != connector || row.kind != DestinationKind::Kubernetes {
        return Ok(None);
    }
    Ok(connectors::inventory(c, cluster)
        .await?
        .and_then(|(_, inv)| inv)
        .and_then(|j| serde_json::from_str::<Inventory>(&j).ok())
        .and_then(|i| i.cluster_issuer)
        .filter(|i| serde_json::from_value::<jsonwebtoken::jwk::JwkSet>(i.jwks.clone()).is_ok()))
}

/// Where an issuer's tokens come from: (issuer, JWKS URL, JWKS, the
/// connector trusted for the cluster).
type KeySource = (String, Option<String>, Option<String>, Option<String>);

/// Where an issuer's tokens come from and its keys are: a cluster's
/// report, a URL, or a document.
async fn source(state: &AppState, req: &WorkloadIssuerCreate) -> ApiResult<KeySource> {
    if let Some(cluster) = &req.from_cluster {
        if !req.issuer.is_empty() || req.jwks_url.is_some() || req.jwks.is_some() {
            return Err(ApiError::bad_request(
                "fromCluster takes the issuer and keys from the cluster: give no issuer, jwksUrl or jwks",
            ));
        }
        let mut c = state.store.conn().await?;
        let connector = match connectors::destination(&mut c, cluster).await? {
            None => return Err(ApiError::bad_request(format!("no destination named {cluster}"))),
            Some(d) if d.kind != DestinationKind::Kubernetes => {
                return Err(ApiError::bad_request(format!(
                    "{cluster} is a {} destination, not a Kubernetes cluster",
                    d.kind
                )));
            }
            Some(d) => d.connector,
        };
        let Some(reported) = cluster_issuer(&mut c, cluster, &connector).await? else {
            return Err(ApiError::bad_request(format!(
                "the connector of {cluster} has not reported the cluster's service-account issuer yet: is it running, and may it read /.well-known/openid-configuration and /openid/v1/jwks (the system:service-account-issuer-discovery ClusterRole)?"
            )));
        };
        return Ok((reported.issuer, None, None, Some(connector)));
    }
    if req.issuer.is_empty() {
        return Err(ApiError::bad_request("issuer is required (or fromCluster)"));
    }
    match (&req.jwks_url, &req.jwks) {
        (Some(u), None) => Ok((req.issuer.clone(), Some(u.clone()), None, None)),
        (None, Some(j)) => {
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(j.clone())
                .map_err(|e| ApiError::bad_request(format!("jwks is not a JWKS document: {e}")))?;
            if set.keys.is_empty() {
                return Err(ApiError::bad_request("jwks has no keys"));
            }
            Ok((req.issuer.clone(), None, Some(j.to_string()), None))
        }
        _ => Err(ApiError::bad_request(
            "give jwksUrl or jwks (one of them), or fromCluster",
        )),
    }
}

/// Trust an issuer's tokens for exchange.
#[utoipa::path(post, path = "/api/workload-issuers", tag = "workload identity", request_body = WorkloadIssuerCreate,
    responses((status = 201, body = WorkloadIssuerInfo)), security(("accessKey" = [])))]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<WorkloadIssuerCreate>,
) -> ApiResult<(axum::http::StatusCode, Json<WorkloadIssuerInfo>)> {
    caller
        .require(&state, InfraRole::Admin, "add workload issuers", "workload-issuers")
        .await?;
    if req.name.is_empty()
        || !req
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(ApiError::bad_request("name: lower-case letters, digits and -"));
    }
    if req.audience.is_empty() {
        return Err(ApiError::bad_request("audience is required"));
    }
    let (issuer, jwks_url, jwks, cluster_connector) = source(&state, &req).await?;
    if req.mappings.is_empty() {
        return Err(ApiError::bad_request(
            "mappings is empty: map claim values to service accounts",
        ));
    }
    Mappings::new(req.mappings.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut c = state.store.conn().await?;
    // A pattern's service accounts are looked up at each exchange.
    for sa in req.mappings.values().filter(|v| !v.contains('*')) {
        match identity::user_by_email(&mut c, sa).await? {
            Some(u) if u.kind == "service" => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "{sa} is a person, not a service account"
                )));
            }
            None => {
                return Err(ApiError::bad_request(format!(
                    "no service account {sa}: add it with 'infra users add {sa} --service'"
                )));
            }
        }
    }
    drop(c);
    let row = WorkloadIssuerRow {
        name: req.name.clone(),
        issuer,
        jwks_url,
        jwks,
        audience: req.audience.clone(),
        claim: req.claim.clone().unwrap_or_else(|| "sub".into()),
        mappings: serde_json::to_string(&req.mappings).map_err(ApiError::internal)?,
        created_at: now_ms(),
        cluster: req.from_cluster.clone(),
        cluster_connector,
    };
    let mut tx = state.store.write().await?;
    if providers::workload_issuers(tx.conn())
        .await?
        .iter()
        .any(|w| w.name == row.name)
    {
        return Err(ApiError::conflict(format!(
            "workload issuer {} exists already",
            row.name
        )));
    }
    providers::insert_workload_issuer(tx.conn(), &row).await?;
    let ev = caller
        .event("workload-issuer.create", &row.name)
        .detail(format!("issuer={} audience={}", row.issuer, row.audience));
    audit::commit(&state, tx, ev).await?;
    Ok((axum::http::StatusCode::CREATED, Json(to_api(&row))))
}

#[utoipa::path(get, path = "/api/workload-issuers", tag = "workload identity",
    responses((status = 200, body = Vec<WorkloadIssuerInfo>)), security(("accessKey" = [])))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<WorkloadIssuerInfo>>> {
    caller
        .require(&state, InfraRole::View, "list workload issuers", "workload-issuers")
        .await?;
    let mut c = state.store.conn().await?;
    Ok(Json(
        providers::workload_issuers(&mut c).await?.iter().map(to_api).collect(),
    ))
}

#[utoipa::path(delete, path = "/api/workload-issuers/{name}", tag = "workload identity",
    responses((status = 204)), security(("accessKey" = [])))]
pub(crate) async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::http::StatusCode> {
    caller
        .require(&state, InfraRole::Admin, "remove workload issuers", "workload-issuers")
        .await?;
    let mut tx = state.store.write().await?;
    if !providers::delete_workload_issuer(tx.conn(), &name).await? {
        return Err(ApiError::not_found(format!("no workload issuer named {name}")));
    }
    audit::commit(&state, tx, caller.event("workload-issuer.delete", &name)).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookCaQuery {
    cluster: String,
}

/// The webhook CA of a cluster: what its API server trusts the connector's
/// admission webhook by.
#[utoipa::path(get, path = "/api/workloads/webhook-ca", tag = "workload identity",
    params(("cluster" = String, Query, description = "the Kubernetes destination")),
    responses((status = 200, body = WebhookCaInfo)), security(("accessKey" = [])))]
pub(crate) async fn webhook_ca(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<WebhookCaQuery>,
) -> ApiResult<Json<WebhookCaInfo>> {
    use base64::Engine as _;
    caller
        .require(&state, InfraRole::View, "read the webhook CA", "workload-issuers")
        .await?;
    let mut c = state.store.conn().await?;
    match connectors::destination(&mut c, &q.cluster).await? {
        Some(d) if d.kind == DestinationKind::Kubernetes => {}
        Some(d) => {
            return Err(ApiError::bad_request(format!(
                "{} is a {} destination, not a Kubernetes cluster",
                q.cluster, d.kind
            )));
        }
        None => return Err(ApiError::not_found(format!("no destination named {}", q.cluster))),
    }
    drop(c);
    let ca = crate::workloads::webhook_ca(&state, &q.cluster).map_err(ApiError::internal)?;
    let pem = ca.cert_pem().to_owned();
    Ok(Json(WebhookCaInfo {
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(&pem),
        pem,
    }))
}

/// RFC 8693 request (form-encoded).
#[derive(Debug, Deserialize)]
pub(crate) struct Exchange {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    requested_token_type: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// Exchange a workload's JWT for an Infra credential of the service account
/// it maps to: an access key (default), or with `resource` (or `audience`)
/// naming a destination, a token for it.
#[utoipa::path(post, path = "/api/tokens/exchange", tag = "workload identity",
    request_body(content_type = "application/x-www-form-urlencoded", content = String),
    responses((status = 200, body = TokenExchangeResponse), (status = 401, body = infra_api::ErrorBody)))]
pub(crate) async fn exchange(
    State(state): State<AppState>,
    Source(source): Source,
    Form(req): Form<Exchange>,
) -> ApiResult<Json<TokenExchangeResponse>> {
    let _ = (&req.requested_token_type, &req.scope);
    if req.grant_type != GRANT_TYPE {
        return Err(ApiError::bad_request(format!("grant_type must be {GRANT_TYPE}")));
    }
    if req.subject_token_type != JWT_TYPE && req.subject_token_type != ID_TOKEN_TYPE {
        return Err(ApiError::bad_request(format!("subject_token_type must be {JWT_TYPE}")));
    }
    let ex = Exchanger {
        state: &state,
        source: &source,
    };
    let (w, claims) = ex.verify(&req.subject_token).await?;
    let (user, value) = ex.service_account(&w, &claims).await?;
    let now = now_ms();
    // Never longer than the workload's own token.
    let token_exp = claims["exp"].as_i64().unwrap_or(0).saturating_mul(1000);
    let expires = (now + EXCHANGED_MS).min(token_exp);
    if expires <= now + 1000 {
        return ex
            .refuse(user.email.clone(), "subject_token expires within a second".into())
            .await;
    }
    let access_key = ex.issue_key(&w, &value, &user, now, expires).await?;
    // With a destination named: a token for it, as that service account.
    if let Some(dest) = req.resource.as_deref().or(req.audience.as_deref()) {
        let caller = Caller::from_key(&state, &access_key, source.clone(), false).await?;
        let t = super::tokens::mint(&state, &caller, Some(dest), Some(&value)).await?;
        return Ok(Json(TokenExchangeResponse {
            access_token: t.token,
            issued_token_type: JWT_TYPE.into(),
            token_type: "Bearer".into(),
            expires_in: ms(state.settings.token_ttl) / 1000,
        }));
    }
    Ok(Json(TokenExchangeResponse {
        access_token: access_key,
        issued_token_type: ACCESS_TOKEN_TYPE.into(),
        token_type: "Bearer".into(),
        expires_in: (expires - now) / 1000,
    }))
}

/// One token exchange; every refusal is audited.
struct Exchanger<'a> {
    state: &'a AppState,
    source: &'a str,
}

impl Exchanger<'_> {
    /// Audits the refusal (as `who`, for `why`) and answers 401.
    async fn refuse<T>(&self, who: String, why: String) -> ApiResult<T> {
        let ev = Event::new(&who, "token.exchange", &who, self.source)
            .result("denied")
            .detail(why.clone());
        audit::record(self.state, ev).await?;
        Err(ApiError::unauthorized(why))
    }

    /// The workload issuer that vouches for `token`, and its verified
    /// claims. Several clusters may share an issuer name (kubeadm's
    /// default): each with that issuer is tried, with its own keys and
    /// audience.
    async fn verify(&self, token: &str) -> ApiResult<(WorkloadIssuerRow, Value)> {
        let iss = match infra_auth::oidc::unverified_issuer(token) {
            Ok(i) => i,
            Err(e) => return self.refuse("unknown".into(), format!("subject_token: {e}")).await,
        };
        let mut c = self.state.store.conn().await?;
        let mut candidates = Vec::new();
        for mut w in providers::workload_issuers(&mut c).await? {
            // A cluster's issuer and keys are what its connector reported
            // last: a rotation in the cluster takes effect by itself.
            if let Some(cluster) = &w.cluster {
                let connector = w.cluster_connector.clone().unwrap_or_default();
                let Some(reported) = cluster_issuer(&mut c, cluster, &connector).await? else {
                    continue;
                };
                w.issuer = reported.issuer;
                w.jwks = Some(reported.jwks.to_string());
            }
            if w.issuer == iss {
                candidates.push(w);
            }
        }
        drop(c);
        if candidates.is_empty() {
            return self
                .refuse(
                    format!("issuer:{iss}"),
                    format!(
                        "no workload issuer trusts tokens from {iss:?}; an admin adds one with 'infra workload-issuers add'"
                    ),
                )
                .await;
        }
        let kid = infra_auth::oidc::kid(token).ok().flatten();
        let mut last_error = String::new();
        for w in candidates {
            let keys = match (&w.jwks, &w.jwks_url) {
                (Some(j), _) => match serde_json::from_str(j) {
                    Ok(k) => k,
                    Err(e) => {
                        last_error = format!("workload issuer {}: its key set cannot be read: {e}", w.name);
                        continue;
                    }
                },
                (None, Some(url)) => match self.state.oidc.keys_at(url, kid.as_deref()).await {
                    Ok(k) => k,
                    Err(e) => {
                        last_error = e.describe(&format!("workload issuer {}", w.name));
                        continue;
                    }
                },
                (None, None) => continue,
            };
            match infra_auth::oidc::verify(token, &keys, &w.issuer, &w.audience, None) {
                Ok(claims) => return Ok((w, claims)),
                Err(e) => last_error = format!("subject_token refused: {e}"),
            }
        }
        self.refuse(format!("issuer:{iss}"), last_error).await
    }

    /// The service account the issuer maps the token's claim to, and the
    /// claim's value.
    async fn service_account(&self, w: &WorkloadIssuerRow, claims: &Value) -> ApiResult<(UserRow, String)> {
        let value = claims[&w.claim].as_str().unwrap_or_default().to_owned();
        let mappings: BTreeMap<String, String> = serde_json::from_str(&w.mappings).unwrap_or_default();
        let Some(sa) = Mappings::stored(mappings).resolve(&value) else {
            return self
                .refuse(
                    format!("issuer:{}", w.name),
                    format!(
                        "{}={value:?} is not mapped to a service account by workload issuer {}",
                        w.claim, w.name
                    ),
                )
                .await;
        };
        let mut c = self.state.store.conn().await?;
        let user = identity::user_by_email(&mut c, &sa)
            .await?
            .filter(|u| u.kind == "service");
        drop(c);
        match user {
            Some(u) => Ok((u, value)),
            None => {
                self.refuse(sa.clone(), format!("service account {sa} no longer exists"))
                    .await
            }
        }
    }

    /// A borrowed access key of `user` until `expires`, audited; returns
    /// the key.
    async fn issue_key(
        &self,
        w: &WorkloadIssuerRow,
        value: &str,
        user: &UserRow,
        now: i64,
        expires: i64,
    ) -> ApiResult<String> {
        let k = infra_auth::access_key::generate().map_err(ApiError::internal)?;
        let mut tx = self.state.store.write().await?;
        keys::insert_key(
            tx.conn(),
            &AccessKeyRow {
                id: k.id.clone(),
                name: format!("exchange-{}", &k.id[..6]),
                kind: infra_store::KeyKind::Exchange,
                user_id: Some(user.id.clone()),
                user_email: None,
                secret_hash: k.secret_hash.clone(),
                created_at: now,
                expires_at: Some(expires),
                inactivity_timeout_ms: None,
                last_used_at: now,
                lender_id: None,
            },
        )
        .await?;
        let ev = Event::new(&user.email, "token.exchange", &user.email, self.source)
            .detail(format!("issuer={} {}={value} key={}", w.name, w.claim, k.id));
        audit::commit(self.state, tx, ev).await?;
        Ok(k.full.expose().clone())
    }
}
