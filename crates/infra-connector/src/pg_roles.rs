//! Per-user login roles: the identity a user's session has in the
//! database.
//!
//! *Architecture Invariant:* a user's session logs in as a role of their
//! own (named by their email), which is a plain login role (no superuser,
//! no CREATEROLE, no BYPASSRLS) and a member of exactly the roles their
//! grants name. There is nothing above it to get back to: `RESET SESSION
//! AUTHORIZATION` or `SET ROLE NONE` land on that same role, and `SET ROLE`
//! reaches only the granted roles. The connector's admin credentials are
//! used only on its own connection, to create, update and disable these
//! roles; they never carry a user's queries.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::config::PgConfig;
use crate::pg_upstream::{Admin, PgError, ident, literal};

/// How long a login role's password is valid; it is renewed well before.
const VALID_SECS: i64 = 3600;
/// Renew when less than this is left.
const RENEW_SECS: i64 = 600;
/// Marks the roles Infra manages (and may change); others are never touched.
const MARK: &str = "managed by infra";

/// A login role's password and until when it is valid (unix seconds).
type Password = Option<(String, i64)>;

/// A role as `pg_roles` describes it.
struct RoleState {
    /// Carries Infra's mark: made by a connector, may be changed.
    ours: bool,
    superuser: bool,
    can_login: bool,
    /// The roles it is a member of.
    member_of: Vec<String>,
}

pub(crate) struct Roles {
    cfg: PgConfig,
    admin: Mutex<Option<Admin>>,
    /// Per user: the password and until when it is valid, and a lock that
    /// keeps a password change and a login from crossing.
    users: Mutex<HashMap<String, Arc<Mutex<Password>>>>,
}

/// The database role for `email`: the email itself, which is what
/// `current_user` and the server's logs then show. Longer than
/// PostgreSQL's 63-byte limit, it is cut and a digest keeps it unique.
pub(crate) fn role_name(email: &str) -> String {
    if email.len() <= 63 {
        return email.to_owned();
    }
    let mut cut = 46;
    while !email.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = infra_auth::sha256_hex(email.as_bytes());
    format!("{}~{}", &email[..cut], &digest[..16])
}

fn now_s() -> i64 {
    crate::state::now_ms() / 1000
}

impl Roles {
    pub(crate) fn new(cfg: PgConfig) -> Self {
        Self {
            cfg,
            admin: Mutex::new(None),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `sql` on the admin connection, reconnecting once if it broke.
    async fn admin(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
        let mut g = self.admin.lock().await;
        for attempt in 0..2 {
            if g.is_none() {
                *g = Some(
                    Admin::connect(
                        &self.cfg.host,
                        self.cfg.port,
                        &self.cfg.admin_user,
                        &self.cfg.admin_password,
                        &self.cfg.database,
                    )
                    .await?,
                );
            }
            let Some(a) = g.as_mut() else { continue };
            match a.query(sql).await {
                Ok(rows) => return Ok(rows),
                Err(PgError::Io(e)) if attempt == 0 => {
                    tracing::warn!(error = %e, "admin connection to the database broke; reconnecting");
                    *g = None;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PgError::Io("admin connection failed twice".into()))
    }

    /// What the database says of role `name`, in one round trip.
    async fn role_state(&self, name: &str) -> Result<Option<RoleState>, PgError> {
        let rows = self
            .admin(&format!(
                "SELECT shobj_description(r.oid, 'pg_authid'), r.rolsuper::text, r.rolcanlogin::text, \
                 (SELECT coalesce(json_agg(g.rolname), '[]')::text FROM pg_auth_members m \
                  JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid) \
                 FROM pg_roles r WHERE r.rolname = {}",
                literal(name)
            ))
            .await?;
        Ok(rows.into_iter().next().map(|row| {
            let col = |i: usize| row.get(i).cloned().flatten();
            RoleState {
                ours: col(0).is_some_and(|c| c.starts_with(MARK)),
                superuser: col(1).as_deref() == Some("true"),
                can_login: col(2).as_deref() == Some("true"),
                member_of: col(3).and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default(),
            }
        }))
    }

    /// Makes sure `email`'s login role exists, may log in, and is a member
    /// of exactly `roles`; returns its name, its password and the lock to
    /// hold while logging in with it.
    pub(crate) async fn ensure(
        &self,
        email: &str,
        roles: &[String],
    ) -> Result<(String, String, tokio::sync::OwnedMutexGuard<Password>), PgError> {
        let name = role_name(email);
        let slot = {
            let mut users = self.users.lock().await;
            users.entry(name.clone()).or_default().clone()
        };
        let mut pw = slot.lock_owned().await;
        let state = self.role_state(&name).await?;
        let renew = pw.as_ref().is_none_or(|(_, until)| until - now_s() < RENEW_SECS);
        let (password, until) = match pw.as_ref() {
            Some((p, u)) if !renew => (p.clone(), *u),
            _ => (
                infra_auth::random_token(24).map_err(|e| PgError::Io(e.to_string()))?,
                now_s() + VALID_SECS,
            ),
        };
        let valid_until = time::OffsetDateTime::from_unix_timestamp(until)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        let mut sql = String::new();
        let current = match state {
            None => {
                sql.push_str(&format!(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT \
                     PASSWORD {} VALID UNTIL {}; COMMENT ON ROLE {} IS {};",
                    ident(&name),
                    literal(&password),
                    literal(&valid_until),
                    ident(&name),
                    literal(&format!("{MARK}: login role of {email}"))
                ));
                Vec::new()
            }
            Some(r) if r.ours => {
                if r.superuser {
                    return Err(PgError::Protocol(format!(
                        "role {name} became a superuser outside Infra; refusing to use it"
                    )));
                }
                // LOGIN again if it was disabled and, when due, a new
                // password; nothing when both are as they should be.
                if renew {
                    sql.push_str(&format!(
                        "ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL {};",
                        ident(&name),
                        literal(&password),
                        literal(&valid_until)
                    ));
                } else if !r.can_login {
                    sql.push_str(&format!("ALTER ROLE {} LOGIN;", ident(&name)));
                }
                r.member_of
            }
            Some(_) => {
                return Err(PgError::Server {
                    code: "28000".into(),
                    message: format!(
                        "a database role named {name} exists and is not managed by Infra; an admin must rename or remove it"
                    ),
                });
            }
        };
        // Memberships: exactly the granted roles.
        for r in roles.iter().filter(|r| !current.contains(r)) {
            sql.push_str(&format!(" GRANT {} TO {};", ident(r), ident(&name)));
        }
        for r in current.iter().filter(|r| !roles.contains(r)) {
            sql.push_str(&format!(" REVOKE {} FROM {};", ident(r), ident(&name)));
        }
        if !sql.is_empty() {
            self.admin(&sql).await?;
        }
        *pw = Some((password.clone(), until));
        Ok((name, password, pw))
    }

    /// Access ended: the role may no longer log in, loses its memberships,
    /// and its sessions are ended.
    pub(crate) async fn disable(&self, email: &str) -> Result<(), PgError> {
        let name = role_name(email);
        let users = self.users.lock().await;
        let Some(slot) = users.get(&name).cloned() else {
            return Ok(());
        };
        drop(users);
        let mut pw = slot.lock().await;
        let Some(state) = self.role_state(&name).await?.filter(|r| r.ours) else {
            *pw = None;
            return Ok(());
        };
        let mut sql = format!("ALTER ROLE {} NOLOGIN PASSWORD NULL;", ident(&name));
        for r in state.member_of {
            sql.push_str(&format!(" REVOKE {} FROM {};", ident(&r), ident(&name)));
        }
        sql.push_str(&format!(
            " SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {};",
            literal(&name)
        ));
        self.admin(&sql).await?;
        *pw = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names() {
        assert_eq!(role_name("alice@example.com"), "alice@example.com");
        let long = format!("{}@example.com", "a".repeat(80));
        let r = role_name(&long);
        assert!(r.len() <= 63, "{r}");
        assert_ne!(r, role_name(&format!("{}@example.org", "a".repeat(80))));
    }
}
