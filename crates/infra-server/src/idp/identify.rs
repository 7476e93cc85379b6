//! Who a provider's tokens say the user is.

use serde_json::Value;

use super::Provider;
use crate::oidc::Tokens;
use crate::state::AppState;

/// The user a provider's tokens describe.
pub(crate) struct Identity {
    /// The provider's subject: what a link to an Infra user is keyed by.
    pub(crate) sub: String,
    pub(crate) email: String,
    pub(crate) email_verified: bool,
    pub(crate) groups: Vec<String>,
}

/// Who the tokens say the user is: the verified ID token's email (checked
/// against the allowed domains) and groups (from the ID token, or from
/// userinfo when the ID token does not carry them).
pub(crate) async fn identify(
    state: &AppState,
    p: &Provider,
    t: &Tokens,
    nonce: Option<&str>,
) -> Result<Identity, String> {
    let id_token = t
        .id_token
        .as_deref()
        .ok_or("the provider sent no ID token (is the openid scope allowed?)")?;
    let claims = state
        .oidc
        .verify_id_token(&p.discovery, id_token, &p.row.client_id, nonce)
        .await?;
    let mut info = Value::Null;
    let claim = |name: &str, info: &Value| -> Option<Value> {
        let v = &claims[name];
        if v.is_null() {
            info.get(name).cloned()
        } else {
            Some(v.clone())
        }
    };
    let needs_userinfo = claims["email"].is_null()
        || infra_auth::oidc::string_list(&claims, &p.row.groups_claim).is_empty()
            && claims.get(&p.row.groups_claim).is_none();
    if needs_userinfo && let Some(at) = &t.access_token {
        info = state
            .oidc
            .userinfo(&p.discovery, at)
            .await
            .map_err(|e| e.describe(&p.row.name))?;
        if info.is_object() && info["sub"] != claims["sub"] {
            return Err("userinfo is for another subject than the ID token".into());
        }
    }
    let raw_email = claim("email", &info)
        .and_then(|v| v.as_str().map(str::to_owned))
        .ok_or("the provider gave no email for this user (ask for the email scope)")?;
    // The same type as everywhere else: trimmed, lower-cased, validated, so
    // " alice@corp.com" is alice, not a look-alike account.
    let email = infra_core::Email::parse(&raw_email)
        .map_err(|e| e.to_string())?
        .as_str()
        .to_owned();
    let email_verified = claim("email_verified", &info).and_then(|v| v.as_bool()) == Some(true);
    if !email_verified && p.row.allow_unverified_email == 0 {
        return Err(format!(
            "the provider does not mark {email} as verified (email_verified is not true); an admin can accept its emails as they are with --allow-unverified-email"
        ));
    }
    let sub = claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("the ID token has no subject (sub)")?
        .to_owned();
    let allowed: Vec<&str> = p.row.allowed_domains.split(',').filter(|d| !d.is_empty()).collect();
    let domain = email.rsplit_once('@').map(|x| x.1).unwrap_or_default();
    if !allowed.is_empty() && !allowed.contains(&domain) {
        return Err(format!(
            "{email} is not in a domain allowed to log in through {} ({})",
            p.row.name,
            allowed.join(", ")
        ));
    }
    let mut groups = infra_auth::oidc::string_list(&claims, &p.row.groups_claim);
    if groups.is_empty() {
        groups = infra_auth::oidc::string_list(&info, &p.row.groups_claim);
    }
    groups.sort();
    groups.dedup();
    Ok(Identity {
        sub,
        email,
        email_verified,
        groups,
    })
}
