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
//!
//! *Architecture Invariant:* a login role can log in only while this
//! connector has a session open for it. The first session sets a fresh
//! random password and `LOGIN`; when the last one ends the role gets
//! another random password nobody knows and `NOLOGIN`, and at start-up
//! every role with Infra's mark found able to log in is treated the same.
//! A password the user set on their own role (`ALTER ROLE CURRENT_USER
//! PASSWORD …`, which PostgreSQL allows any role) thus works at most while
//! one of their Infra sessions is open, and `pg_hba.conf` keeps that window
//! to the connector's address.

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

/// What this connector knows of one login role.
#[derive(Default)]
pub(crate) struct Slot {
    /// The password it set and until when it is valid (unix seconds).
    password: Option<(String, i64)>,
    /// Sessions open through this connector.
    sessions: usize,
    /// The user behind the role, to tell when their access ends.
    user_id: String,
    /// Disabled for lost access; nothing more to do until a new session.
    revoked: bool,
    /// The last session ended but the role could not be locked out (the
    /// database was unreachable): tried again on the next snapshot.
    lock_out_due: bool,
}

/// One open session's hold on a login role; [`Lease::end`] it when the
/// session ends (dropping it ends it in the background).
pub(crate) struct Lease {
    roles: Arc<Roles>,
    name: String,
    ended: bool,
}

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
    /// Per login role: what this connector knows of it, behind a lock that
    /// keeps a password change, a login and a lock-out from crossing.
    users: Mutex<HashMap<String, Arc<Mutex<Slot>>>>,
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
    crate::clock::now_ms() / 1000
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

    fn slot(&self, users: &mut HashMap<String, Arc<Mutex<Slot>>>, name: &str) -> Arc<Mutex<Slot>> {
        users.entry(name.to_owned()).or_default().clone()
    }

    /// Makes sure `email`'s login role exists, may log in, and is a member
    /// of exactly `roles`, for one more session; returns the session's
    /// lease on it, its password and the lock to hold while logging in with
    /// it. `fresh` sets a new password even if this connector's is current
    /// (a login with it was refused).
    pub(crate) async fn ensure(
        self: &Arc<Self>,
        email: &str,
        user_id: &str,
        roles: &[String],
        fresh: bool,
    ) -> Result<(Lease, String, tokio::sync::OwnedMutexGuard<Slot>), PgError> {
        let name = role_name(email);
        let slot = self.slot(&mut *self.users.lock().await, &name);
        let mut s = slot.lock_owned().await;
        let state = self.role_state(&name).await?;
        // A new password when the role was locked out (no session open
        // here, or another connector's last session ended), or when due.
        let renew = fresh
            || s.sessions == 0
            || state.as_ref().is_some_and(|r| !r.can_login)
            || s.password
                .as_ref()
                .is_none_or(|(_, until)| until - now_s() < RENEW_SECS);
        let (password, until) = match s.password.as_ref() {
            Some((p, u)) if !renew => (p.clone(), *u),
            _ => (new_password()?, now_s() + VALID_SECS),
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
                if renew {
                    sql.push_str(&format!(
                        "ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL {};",
                        ident(&name),
                        literal(&password),
                        literal(&valid_until)
                    ));
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
        s.password = Some((password.clone(), until));
        s.sessions += 1;
        user_id.clone_into(&mut s.user_id);
        s.revoked = false;
        s.lock_out_due = false;
        let lease = Lease {
            roles: self.clone(),
            name,
            ended: false,
        };
        Ok((lease, password, s))
    }

    /// A session on role `name` ended; after the last one the role may no
    /// longer log in.
    async fn release(&self, name: &str) {
        let slot = self.slot(&mut *self.users.lock().await, name);
        let mut s = slot.lock().await;
        s.sessions = s.sessions.saturating_sub(1);
        if s.sessions > 0 {
            return;
        }
        s.password = None;
        match self.lock_out(name).await {
            Ok(()) => s.lock_out_due = false,
            Err(e) => {
                tracing::warn!(role = %name, error = %e, "cannot lock out the login role after its last session; will retry");
                s.lock_out_due = true;
            }
        }
    }

    /// `NOLOGIN` and a random password nobody knows, if the role is ours.
    /// Its memberships stay: the next session needs them.
    async fn lock_out(&self, name: &str) -> Result<(), PgError> {
        if self.role_state(name).await?.is_none_or(|r| !r.ours) {
            return Ok(());
        }
        self.admin(&format!(
            "ALTER ROLE {} NOLOGIN PASSWORD {};",
            ident(name),
            literal(&new_password()?)
        ))
        .await?;
        Ok(())
    }

    /// At start-up: every role with Infra's mark that can log in was left
    /// so by a connector that stopped with sessions open (or by hand); none
    /// of its sessions is open here, so it is locked out. Returns how many.
    pub(crate) async fn lock_out_enabled(&self) -> Result<usize, PgError> {
        let rows = self
            .admin(&format!(
                "SELECT r.rolname FROM pg_roles r WHERE r.rolcanlogin \
                 AND starts_with(coalesce(shobj_description(r.oid, 'pg_authid'), ''), {})",
                literal(MARK)
            ))
            .await?;
        let mut n = 0;
        for name in rows.into_iter().filter_map(|r| r.into_iter().next().flatten()) {
            let slot = self.slot(&mut *self.users.lock().await, &name);
            let mut s = slot.lock().await;
            // A session that started meanwhile keeps its role.
            if s.sessions > 0 {
                continue;
            }
            self.lock_out(&name).await?;
            s.password = None;
            n += 1;
        }
        Ok(n)
    }

    /// After a change of grants: disables the role of every user this
    /// connector served who no longer has access (`has_access` by user
    /// id), open session or not, and retries lock-outs that failed.
    pub(crate) async fn revoke_lost(&self, has_access: impl Fn(&str) -> bool) {
        let known: Vec<(String, Arc<Mutex<Slot>>)> = self
            .users
            .lock()
            .await
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, slot) in known {
            let mut s = slot.lock().await;
            if !s.revoked && !s.user_id.is_empty() && !has_access(&s.user_id) {
                match self.disable_locked(&name, &mut s).await {
                    Ok(()) => tracing::info!(role = %name, "access ended: login role disabled"),
                    Err(e) => tracing::warn!(role = %name, error = %e, "cannot disable the login role; will retry"),
                }
            } else if s.lock_out_due && s.sessions == 0 {
                match self.lock_out(&name).await {
                    Ok(()) => s.lock_out_due = false,
                    Err(e) => tracing::warn!(role = %name, error = %e, "cannot lock out the login role; will retry"),
                }
            }
        }
    }

    /// Access ended: the role may no longer log in, loses its memberships,
    /// and its sessions are ended.
    pub(crate) async fn disable(&self, email: &str) -> Result<(), PgError> {
        let name = role_name(email);
        let Some(slot) = self.users.lock().await.get(&name).cloned() else {
            return Ok(());
        };
        let mut s = slot.lock().await;
        self.disable_locked(&name, &mut s).await
    }

    async fn disable_locked(&self, name: &str, s: &mut Slot) -> Result<(), PgError> {
        s.password = None;
        let Some(state) = self.role_state(name).await?.filter(|r| r.ours) else {
            s.revoked = true;
            return Ok(());
        };
        let mut sql = format!(
            "ALTER ROLE {} NOLOGIN PASSWORD {};",
            ident(name),
            literal(&new_password()?)
        );
        for r in state.member_of {
            sql.push_str(&format!(" REVOKE {} FROM {};", ident(&r), ident(name)));
        }
        sql.push_str(&format!(
            " SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {};",
            literal(name)
        ));
        self.admin(&sql).await?;
        s.revoked = true;
        Ok(())
    }
}

impl Lease {
    /// The login role's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The session ended: after the last one the role may no longer log in.
    pub(crate) async fn end(mut self) {
        self.ended = true;
        self.roles.release(&self.name).await;
    }
}

impl Drop for Lease {
    /// A session task that ends without [`Lease::end`] (cancelled, or a
    /// bug) still gives its role back.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (roles, name) = (self.roles.clone(), std::mem::take(&mut self.name));
            // Not tracked: a drop has no owner to hand the task to, and a
            // release is one short query.
            rt.spawn(async move { roles.release(&name).await });
        }
    }
}

/// A random password for a login role: known only to this connector, or to
/// nobody (a locked-out role).
fn new_password() -> Result<String, PgError> {
    infra_auth::random_token(24).map_err(|e| PgError::Io(e.to_string()))
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
