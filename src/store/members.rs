//! Members and roles as admins manage them: lists, status, role grants with
//! expiry, custom roles, onboarding. The SQL is portable and written once in
//! [`impl_member_store!`], like `portable.rs`.
//!
//! Guard rail kept here, inside the write transaction: a change that would leave
//! no active admin is refused ([`StoreError::LastAdmin`]). On SQLite the single
//! writer serializes it; on Postgres two concurrent demotions of the last two
//! admins could still both pass (READ COMMITTED) — rare enough to accept.

use crate::domain::{Email, Member, MemberId, MemberStatus, Role};
use crate::store::{AuditEntry, NewApiKey, StoreResult};

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

#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// Members holding it now (expired grants left out).
    pub members: i64,
}

#[async_trait::async_trait]
pub trait MemberStore {
    async fn list_members(&self, filter: &MemberFilter, now: i64) -> StoreResult<Vec<Member>>;

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

    async fn list_roles(&self, now: i64) -> StoreResult<Vec<RoleInfo>>;

    async fn create_role(
        &self,
        role: &Role,
        description: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()>;

    /// Deletes a custom role; one still granted needs `force`, which revokes it.
    async fn delete_role(
        &self,
        role: &Role,
        force: bool,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()>;
}

/// Folds rows ordered by member id (one per role) into members.
pub(crate) fn fold_members(rows: Vec<super::portable::MemberRoleRow>) -> StoreResult<Vec<Member>> {
    let mut members = Vec::new();
    let mut group = Vec::new();
    for row in rows {
        if group
            .last()
            .is_some_and(|last: &super::portable::MemberRoleRow| last.id != row.id)
        {
            members.extend(super::portable::fold_member(std::mem::take(&mut group))?);
        }
        group.push(row);
    }
    members.extend(super::portable::fold_member(group)?);
    Ok(members)
}

/// Escapes `%`, `_` and `\` so user text matches literally in `LIKE … ESCAPE '\'`.
pub(crate) fn like_pattern(text: &str) -> String {
    let mut out = String::from("%");
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// Number of active members holding a live `admin` grant, inside a transaction.
macro_rules! active_admins {
    ($tx:expr, $now:expr) => {{
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM members m JOIN member_roles r ON r.member_id = m.id \
             WHERE r.role = 'admin' AND (r.expires_at IS NULL OR r.expires_at > $1) AND m.status = 'active'",
        )
        .bind($now)
        .fetch_one(&mut *$tx)
        .await?;
        count
    }};
}
pub(crate) use active_admins;

/// Loads the member inside the transaction, or returns `Ok(None)` from the
/// enclosing function; evaluates to whether they are an active admin now.
macro_rules! load_or_none {
    ($tx:expr, $id:expr, $now:expr) => {{
        match $crate::store::portable::load_member!(&mut *$tx, $id, $now) {
            Some(member) if member.status == MemberStatus::Deleted => {
                return Err(StoreError::Conflict("the member is deleted".into()));
            }
            Some(member) => member.status == MemberStatus::Active && member.has_role(Role::ADMIN),
            None => return Ok(None),
        }
    }};
}
pub(crate) use load_or_none;

/// Commits after checking that an admin remains if `was_admin` was one; then
/// evaluates to the member as they are now.
macro_rules! finish_member_change {
    ($tx:expr, $id:expr, $was_admin:expr, $audit:expr, $now:expr) => {{
        if $was_admin && $crate::store::members::active_admins!($tx, $now) == 0 {
            return Err(StoreError::LastAdmin);
        }
        insert_audit!($tx, $audit, $now);
        let member = $crate::store::portable::load_member!(&mut *$tx, $id, $now);
        $tx.commit().await?;
        Ok(member)
    }};
}
pub(crate) use finish_member_change;

/// Revokes every live session and refresh token of a member inside a transaction.
macro_rules! revoke_member_sessions_in {
    ($tx:expr, $id:expr, $now:expr) => {{
        let revoked = sqlx::query(
            "UPDATE sessions SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL",
        )
        .bind($id)
        .bind($now)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE member_id = $1 AND revoked_at IS NULL",
        )
        .bind($id)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        revoked
    }};
}
pub(crate) use revoke_member_sessions_in;

/// Fails with [`StoreError::UnknownRole`] unless every role exists.
macro_rules! ensure_roles_exist {
    ($tx:expr, $roles:expr) => {{
        for role in $roles {
            let found: Option<(String,)> = sqlx::query_as("SELECT name FROM roles WHERE name = $1")
                .bind(role.as_str())
                .fetch_optional(&mut *$tx)
                .await?;
            if found.is_none() {
                return Err(StoreError::UnknownRole(role.to_string()));
            }
        }
    }};
}
pub(crate) use ensure_roles_exist;
