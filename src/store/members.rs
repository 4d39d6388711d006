//! Members as admins manage them: lists, status, role grants with expiry,
//! session revocation, onboarding, deletion, and the bootstrap admins.
//!
//! Every change that can take an active admin away checks, inside its
//! transaction, that one remains ([`domain::an_admin_remains`]). On SQLite the
//! single writer serialises such changes; on Postgres two concurrent
//! demotions of the last two admins could still both pass (READ COMMITTED),
//! rare enough to accept.

use std::sync::LazyLock;

use super::api_keys::insert_api_key;
use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::sessions::revoke_member_sessions_in;
use super::sql::{Executor, query};
use super::{AuditEntry, NewApiKey, StoreError, StoreResult, schema};
use crate::domain::{self, Conflict, Email, Member, MemberId, MemberStatus, Role};

/// Filters and keyset position for the member list (ordered by id, i.e. creation).
#[derive(Debug, Clone, Default)]
pub struct MemberFilter {
    pub role: Option<Role>,
    pub status: Option<MemberStatus>,
    /// A substring of the address, lowercase.
    pub q: Option<String>,
    /// Only members with an id after this one.
    pub after: Option<String>,
    pub limit: i64,
}

/// A role grant; `expires_at` (unix seconds) ends it, e.g. a yearly sustainer.
#[derive(Debug, Clone)]
pub struct RoleGrant {
    pub role: Role,
    pub expires_at: Option<i64>,
}

#[async_trait::async_trait]
pub trait MemberStore {
    async fn member_by_id(&self, id: &MemberId, now: i64) -> StoreResult<Option<Member>>;

    async fn list_members(&self, filter: &MemberFilter, now: i64) -> StoreResult<Vec<Member>>;

    /// The member's grants in force at `now`, with their expiry, by role name.
    async fn member_grants(&self, id: &MemberId, now: i64) -> StoreResult<Vec<RoleGrant>>;

    /// Sets `active` or `suspended`; suspending revokes every session at once.
    /// `None` when unknown; a deleted member cannot be changed.
    async fn set_member_status(
        &self,
        id: &MemberId,
        status: MemberStatus,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    /// Replaces the member's roles; grants that stay keep their expiry.
    async fn set_member_roles(
        &self,
        id: &MemberId,
        roles: &[Role],
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    /// Grants a role, or changes the expiry of a grant the member has.
    async fn grant_member_role(
        &self,
        id: &MemberId,
        grant: &RoleGrant,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    async fn revoke_member_role(
        &self,
        id: &MemberId,
        role: &Role,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>>;

    /// Revokes every session of the member; `None` when unknown.
    async fn revoke_member_sessions(
        &self,
        id: &MemberId,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>>;

    /// Allowlists `email` and creates its member with `member` plus `roles`, and
    /// the API key if given, in one transaction. An existing member is a conflict.
    async fn onboard_member(
        &self,
        email: &Email,
        roles: &[Role],
        key: Option<NewApiKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Member>;

    /// Soft-deletes a member and revokes every session and API key. Returns false
    /// if unknown; [`Conflict::LastAdmin`] if they are the last active admin.
    async fn delete_member(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<bool>;

    /// Allowlists the addresses with `admin` pre-assigned, and grants `admin` to
    /// those that are members already.
    async fn bootstrap_admins(&self, emails: &[Email], now: i64) -> StoreResult<()>;
}

/// `$1` now, `$2` the member.
static MEMBER_BY_ID: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE m.id = $2 ORDER BY r.role",
        schema::members_with_roles("$1")
    )
});

/// The member with their roles in force at `now`.
pub async fn load_member(
    db: &mut impl Executor,
    id: &str,
    now: i64,
) -> StoreResult<Option<Member>> {
    let rows = query(&MEMBER_BY_ID)
        .bind(now)
        .bind(id)
        .fetch_all(db)
        .await?;
    schema::fold_member(rows)
}

/// Members holding a live `admin` grant, counted inside the change's transaction.
async fn active_admins(db: &mut impl Executor, now: i64) -> StoreResult<i64> {
    static COUNT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT COUNT(*) FROM members m JOIN member_roles r ON r.member_id = m.id \
             WHERE r.role = 'admin' AND {} AND {}",
            schema::live_grant("r", "$1"),
            schema::active("m"),
        )
    });
    let (count,): (i64,) = query(&COUNT).bind(now).fetch_one(db).await?;
    Ok(count)
}

/// The member a change is about to apply to, read inside its transaction:
/// `None` when unknown. A deleted member cannot change.
async fn member_to_change(
    db: &mut impl Executor,
    id: &MemberId,
    now: i64,
) -> StoreResult<Option<Member>> {
    match load_member(db, id.as_str(), now).await? {
        Some(member) if member.status == MemberStatus::Deleted => {
            Err(Conflict::MemberDeleted.into())
        }
        member => Ok(member),
    }
}

/// Refuses a change that took the last active admin away: `before` is the
/// member as the change found them.
async fn ensure_an_admin_remains(
    db: &mut impl Executor,
    before: &Member,
    now: i64,
) -> StoreResult<()> {
    if before.is_active_admin() {
        domain::an_admin_remains(active_admins(db, now).await?)?;
    }
    Ok(())
}

/// Fails with [`Conflict::UnknownRole`] unless every role exists.
async fn ensure_roles_exist(db: &mut impl Executor, roles: &[Role]) -> StoreResult<()> {
    for role in roles {
        let found: Option<(String,)> = query("SELECT name FROM roles WHERE name = $1")
            .bind(role.as_str())
            .fetch_optional(db)
            .await?;
        if found.is_none() {
            return Err(Conflict::UnknownRole(role.clone()).into());
        }
    }
    Ok(())
}

/// Grants each of `roles` without expiry; a role the member holds keeps its grant.
async fn grant_roles(
    db: &mut impl Executor,
    member_id: &str,
    roles: &[Role],
    granted_by: Option<&str>,
    now: i64,
) -> StoreResult<()> {
    for role in roles {
        query(
            "INSERT INTO member_roles (member_id, role, granted_by, granted_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (member_id, role) DO NOTHING",
        )
        .bind(member_id)
        .bind(role.as_str())
        .bind(granted_by)
        .bind(now)
        .execute(db)
        .await?;
    }
    Ok(())
}

impl<B: Backend> SqlStore<B> {
    /// Ends a change to the member `before`: refuses it if it took the last
    /// active admin away, audits it, commits, and returns the member as they are now.
    async fn finish_member_change(
        mut tx: B::Tx<'_>,
        before: &Member,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        ensure_an_admin_remains(&mut *tx, before, now).await?;
        insert_audit(&mut *tx, audit, now).await?;
        let after = load_member(&mut *tx, before.id.as_str(), now).await?;
        B::commit(tx).await?;
        Ok(after)
    }
}

#[async_trait::async_trait]
impl<B: Backend> MemberStore for SqlStore<B> {
    async fn member_by_id(&self, id: &MemberId, now: i64) -> StoreResult<Option<Member>> {
        load_member(&mut self.backend.reader(), id.as_str(), now).await
    }

    async fn member_grants(&self, id: &MemberId, now: i64) -> StoreResult<Vec<RoleGrant>> {
        static GRANTS: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT r.role, r.expires_at FROM member_roles r \
                 WHERE r.member_id = $1 AND {} ORDER BY r.role",
                schema::live_grant("r", "$2")
            )
        });
        let rows: Vec<(String, Option<i64>)> = query(&GRANTS)
            .bind(id.as_str())
            .bind(now)
            .fetch_all(&mut self.backend.reader())
            .await?;
        rows.into_iter()
            .map(|(role, expires_at)| {
                let role = Role::parse(&role)
                    .map_err(|_| StoreError::Corrupt(format!("granted role `{role}`")))?;
                Ok(RoleGrant { role, expires_at })
            })
            .collect()
    }

    async fn list_members(&self, filter: &MemberFilter, now: i64) -> StoreResult<Vec<Member>> {
        static LIST: LazyLock<String> = LazyLock::new(|| {
            format!(
                "{} WHERE m.id IN (SELECT x.id FROM members x WHERE ($2 IS NULL OR x.id > $2) \
                   AND ($3 IS NULL OR x.status = $3) AND ($4 IS NULL OR x.email LIKE $4 ESCAPE '\\') \
                   AND ($5 IS NULL OR EXISTS (SELECT 1 FROM member_roles g WHERE g.member_id = x.id \
                     AND g.role = $5 AND {})) \
                   ORDER BY x.id LIMIT $6) \
                 ORDER BY m.id, r.role",
                schema::members_with_roles("$1"),
                schema::live_grant("g", "$1"),
            )
        });
        let rows = query(&LIST)
            .bind(now)
            .bind(filter.after.as_deref())
            .bind(filter.status.map(MemberStatus::as_str))
            .bind(filter.q.as_deref().map(schema::like_pattern))
            .bind(filter.role.as_ref().map(Role::as_str))
            .bind(filter.limit)
            .fetch_all(&mut self.backend.reader())
            .await?;
        schema::fold_members(rows)
    }

    async fn set_member_status(
        &self,
        id: &MemberId,
        status: MemberStatus,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let mut tx = self.backend.begin().await?;
        let Some(before) = member_to_change(&mut *tx, id, now).await? else {
            return Ok(None);
        };
        query("UPDATE members SET status = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        if status != MemberStatus::Active {
            revoke_member_sessions_in(&mut *tx, id.as_str(), now).await?;
        }
        Self::finish_member_change(tx, &before, audit, now).await
    }

    async fn set_member_roles(
        &self,
        id: &MemberId,
        roles: &[Role],
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let mut tx = self.backend.begin().await?;
        ensure_roles_exist(&mut *tx, roles).await?;
        let Some(before) = member_to_change(&mut *tx, id, now).await? else {
            return Ok(None);
        };
        let held: Vec<(String,)> = query("SELECT role FROM member_roles WHERE member_id = $1")
            .bind(id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        for (role,) in &held {
            if !roles.iter().any(|r| r.as_str() == role) {
                query("DELETE FROM member_roles WHERE member_id = $1 AND role = $2")
                    .bind(id.as_str())
                    .bind(role)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        grant_roles(&mut *tx, id.as_str(), roles, audit.actor.as_deref(), now).await?;
        Self::finish_member_change(tx, &before, audit, now).await
    }

    async fn grant_member_role(
        &self,
        id: &MemberId,
        grant: &RoleGrant,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let mut tx = self.backend.begin().await?;
        ensure_roles_exist(&mut *tx, std::slice::from_ref(&grant.role)).await?;
        let Some(before) = member_to_change(&mut *tx, id, now).await? else {
            return Ok(None);
        };
        query(
            "INSERT INTO member_roles (member_id, role, granted_by, granted_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (member_id, role) DO UPDATE SET expires_at = excluded.expires_at, \
               granted_by = excluded.granted_by, granted_at = excluded.granted_at",
        )
        .bind(id.as_str())
        .bind(grant.role.as_str())
        .bind(audit.actor.as_deref())
        .bind(now)
        .bind(grant.expires_at)
        .execute(&mut *tx)
        .await?;
        Self::finish_member_change(tx, &before, audit, now).await
    }

    async fn revoke_member_role(
        &self,
        id: &MemberId,
        role: &Role,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let mut tx = self.backend.begin().await?;
        let Some(before) = member_to_change(&mut *tx, id, now).await? else {
            return Ok(None);
        };
        query("DELETE FROM member_roles WHERE member_id = $1 AND role = $2")
            .bind(id.as_str())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        Self::finish_member_change(tx, &before, audit, now).await
    }

    async fn revoke_member_sessions(
        &self,
        id: &MemberId,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        let mut tx = self.backend.begin().await?;
        if load_member(&mut *tx, id.as_str(), now).await?.is_none() {
            return Ok(None);
        }
        let revoked = revoke_member_sessions_in(&mut *tx, id.as_str(), now).await?;
        let audit = audit.details(serde_json::json!({ "sessions": revoked }));
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(Some(revoked))
    }

    async fn onboard_member(
        &self,
        email: &Email,
        roles: &[Role],
        key: Option<NewApiKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Member> {
        let mut tx = self.backend.begin().await?;
        ensure_roles_exist(&mut *tx, roles).await?;
        let existing: Option<(String,)> = query("SELECT id FROM members WHERE email = $1")
            .bind(email.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if existing.is_some() {
            return Err(Conflict::AlreadyMember(email.clone()).into());
        }
        let id = MemberId::new();
        query("INSERT INTO members (id, email, status, created_at) VALUES ($1, $2, 'active', $3)")
            .bind(id.as_str())
            .bind(email.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        query(
            "INSERT INTO eligible_emails (email, batch_id, roles, added_by, created_at, claimed_by) \
             VALUES ($1, 'onboarding', $2, $3, $4, $5) \
             ON CONFLICT (email) DO UPDATE SET claimed_by = excluded.claimed_by",
        )
        .bind(email.as_str())
        .bind(Role::join(roles))
        .bind(audit.actor.as_deref())
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        let all_roles: Vec<Role> = std::iter::once(Role::member())
            .chain(roles.iter().cloned())
            .collect();
        grant_roles(
            &mut *tx,
            id.as_str(),
            &all_roles,
            audit.actor.as_deref(),
            now,
        )
        .await?;
        if let Some(key) = key {
            insert_api_key(&mut *tx, &key, id.as_str(), now).await?;
        }
        insert_audit(&mut *tx, audit.target(id.as_str()), now).await?;
        let member = load_member(&mut *tx, id.as_str(), now)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("member {id} vanished")))?;
        B::commit(tx).await?;
        Ok(member)
    }

    async fn delete_member(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        let mut tx = self.backend.begin().await?;
        let Some(before) = load_member(&mut *tx, id.as_str(), now).await? else {
            return Ok(false);
        };
        let deleted =
            query("UPDATE members SET status = 'deleted' WHERE id = $1 AND status <> 'deleted'")
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
        if deleted == 0 {
            return Ok(false);
        }
        revoke_member_sessions_in(&mut *tx, id.as_str(), now).await?;
        query("UPDATE api_keys SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL")
            .bind(id.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        ensure_an_admin_remains(&mut *tx, &before, now).await?;
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await?;
        Ok(true)
    }

    async fn bootstrap_admins(&self, emails: &[Email], now: i64) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        for email in emails {
            let preassigned: Option<(String,)> =
                query("SELECT roles FROM eligible_emails WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            let allowlisted = match preassigned {
                // Instances starting together all bootstrap; the first insert wins.
                None => {
                    query(
                        "INSERT INTO eligible_emails (email, batch_id, roles, created_at) \
                         VALUES ($1, 'bootstrap', 'admin', $2) ON CONFLICT (email) DO NOTHING",
                    )
                    .bind(email.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                        > 0
                }
                Some((roles,)) if !roles.split(',').any(|r| r == Role::ADMIN) => {
                    let mut list = Role::parse_list(&roles).unwrap_or_default();
                    list.push(Role::admin());
                    list.sort();
                    query("UPDATE eligible_emails SET roles = $2 WHERE email = $1")
                        .bind(email.as_str())
                        .bind(Role::join(&list))
                        .execute(&mut *tx)
                        .await?;
                    true
                }
                Some(_) => false,
            };
            if allowlisted {
                let audit = AuditEntry::new("allowlist.bootstrap_admin").target(email.as_str());
                insert_audit(&mut *tx, audit, now).await?;
            }
            let granted = query(
                "INSERT INTO member_roles (member_id, role, granted_at) \
                 SELECT id, 'admin', $2 FROM members WHERE email = $1 ON CONFLICT DO NOTHING",
            )
            .bind(email.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if granted > 0 {
                let audit = AuditEntry::new("role.bootstrap_admin").target(email.as_str());
                insert_audit(&mut *tx, audit, now).await?;
            }
        }
        B::commit(tx).await
    }
}
