//! What every query shares: the rules (an active member, a live session, a role
//! grant in force, an address that may sign in) as SQL, by name, and the member
//! row that most reads end in, with its one column list.
//!
//! A rule takes the alias (or expression) it applies to, so that one definition
//! serves a plain query, a join and a batched lookup alike. Queries built from
//! these are assembled once, into `LazyLock<String>` statics beside the
//! operation that runs them.

use crate::domain::{Email, Member, MemberId, MemberStatus, Role};

use super::{StoreError, StoreResult};

/// `member` (an alias of `members`) may sign in and use its sessions and keys.
pub fn active(member: &str) -> String {
    format!("{member}.status = 'active'")
}

/// `session` (an alias of `sessions`) has not been revoked.
pub fn live_session(session: &str) -> String {
    format!("{session}.revoked_at IS NULL")
}

/// `grant` (an alias of `member_roles`) is in force at `now`: it has no expiry,
/// or expires later.
pub fn live_grant(grant: &str, now: &str) -> String {
    format!("({grant}.expires_at IS NULL OR {grant}.expires_at > {now})")
}

/// `link` (an alias of `magic_links`) is unused and unexpired at `now`.
pub fn live_link(link: &str, now: &str) -> String {
    format!("{link}.consumed_at IS NULL AND {link}.expires_at > {now}")
}

/// Whether `email` may receive a sign-in link, as one boolean expression: it
/// belongs to an active member or, not being a member's, is on the allowlist.
pub fn eligible(email: &str) -> String {
    format!(
        "COALESCE((SELECT {} FROM members m WHERE m.email = {email}), \
         EXISTS (SELECT 1 FROM eligible_emails WHERE email = {email}))",
        active("m")
    )
}

/// The columns of [`MemberRoleRow`] but its role, from members aliased `m`.
pub const MEMBER_COLUMNS: &str = "m.id, m.email, m.status, m.created_at, m.last_login_at";

/// Members (`m`), each joined with the roles (`r`) they hold at `now`: the
/// start of every read that ends in a [`Member`]. Order by `r.role` (after the
/// member) and fold with [`fold_member`] or [`fold_members`].
pub fn members_with_roles(now: &str) -> String {
    format!(
        "SELECT {MEMBER_COLUMNS}, r.role FROM members m \
         LEFT JOIN member_roles r ON r.member_id = m.id AND {}",
        live_grant("r", now)
    )
}

/// One row of a member joined with one of their roles (`None` when they have none).
#[derive(sqlx::FromRow)]
pub struct MemberRoleRow {
    pub id: String,
    pub email: String,
    pub status: String,
    pub created_at: i64,
    pub last_login_at: Option<i64>,
    pub role: Option<String>,
}

/// Folds the rows of one member (one per role) into a [`Member`].
pub fn fold_member(rows: Vec<MemberRoleRow>) -> StoreResult<Option<Member>> {
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let corrupt = |what: &str| StoreError::Corrupt(format!("member {}: {what}", first.id));
    let mut roles = Vec::new();
    for role in std::iter::once(first.role.clone())
        .chain(rows.map(|r| r.role))
        .flatten()
    {
        roles.push(Role::parse(&role).map_err(|_| corrupt("role"))?);
    }
    roles.sort();
    roles.dedup();
    Ok(Some(Member {
        id: MemberId::parse(&first.id).ok_or_else(|| corrupt("id"))?,
        email: Email::parse(&first.email).map_err(|_| corrupt("email"))?,
        status: member_status(&first.status)?,
        roles,
        created_at: first.created_at,
        last_login_at: first.last_login_at,
    }))
}

/// Folds rows ordered by member (one per role) into members.
pub fn fold_members(rows: Vec<MemberRoleRow>) -> StoreResult<Vec<Member>> {
    let mut members = Vec::new();
    let mut group: Vec<MemberRoleRow> = Vec::new();
    for row in rows {
        if group.last().is_some_and(|last| last.id != row.id) {
            members.extend(fold_member(std::mem::take(&mut group))?);
        }
        group.push(row);
    }
    members.extend(fold_member(group)?);
    Ok(members)
}

pub fn member_status(stored: &str) -> StoreResult<MemberStatus> {
    MemberStatus::parse(stored)
        .ok_or_else(|| StoreError::Corrupt(format!("member status `{stored}`")))
}

/// Escapes `%`, `_` and `\` so user text matches literally in `LIKE … ESCAPE '\'`.
pub fn like_pattern(text: &str) -> String {
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

/// `$first, $first+1, …`: `count` numbered placeholders.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
