//! The batched forms of the per-request lookups, which the coalescer
//! (`coalesce.rs`) sends for all the requests waiting at once: one query for a
//! batch of sessions, one for a batch of API keys, each row numbered by its
//! place in the batch.

use std::sync::LazyLock;

use sqlx::postgres::PgPool;

use super::SessionKey;
use super::coalesce::Fetch;
use crate::domain::Member;
use crate::store::api_keys::{KEY_COLUMNS, KeyMemberRow, fold_key};
use crate::store::schema::{self, MemberRoleRow};
use crate::store::{ApiKeyRecord, StoreError, StoreResult};

#[derive(sqlx::FromRow)]
struct NumberedMemberRow {
    i: i64,
    #[sqlx(flatten)]
    row: MemberRoleRow,
}

#[derive(sqlx::FromRow)]
struct NumberedKeyRow {
    i: i64,
    #[sqlx(flatten)]
    row: KeyMemberRow,
}

/// The slot of row number `i` (1-based, from `WITH ORDINALITY`).
fn numbered_slot<T>(slots: &mut [Vec<T>], i: i64) -> StoreResult<&mut Vec<T>> {
    usize::try_from(i - 1)
        .ok()
        .and_then(|i| slots.get_mut(i))
        .ok_or_else(|| StoreError::Corrupt(format!("batched lookup row {i}")))
}

/// The members behind a batch of sessions, `None` for each that is not live
/// (revoked, unknown, or its member not active).
pub fn live_sessions(pool: PgPool) -> Fetch<SessionKey, Option<Member>> {
    static BATCH: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT q.i, {}, r.role \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS q(member_id, session_id, now, i) \
             JOIN sessions s ON s.id = q.session_id AND s.member_id = q.member_id AND {} \
             JOIN members m ON m.id = q.member_id AND {} \
             LEFT JOIN member_roles r ON r.member_id = m.id AND {} \
             ORDER BY q.i, r.role",
            schema::MEMBER_COLUMNS,
            schema::live_session("s"),
            schema::active("m"),
            schema::live_grant("r", "q.now"),
        )
    });
    Box::new(move |keys: Vec<SessionKey>| {
        let pool = pool.clone();
        Box::pin(async move {
            let n = keys.len();
            let (mut members, mut sessions, mut nows) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for (member, session, now) in keys {
                members.push(member);
                sessions.push(session);
                nows.push(now);
            }
            let rows: Vec<NumberedMemberRow> = sqlx::query_as(&BATCH)
                .bind(&members)
                .bind(&sessions)
                .bind(&nows)
                .fetch_all(&pool)
                .await?;
            let mut grouped: Vec<Vec<MemberRoleRow>> = (0..n).map(|_| Vec::new()).collect();
            for NumberedMemberRow { i, row } in rows {
                numbered_slot(&mut grouped, i)?.push(row);
            }
            grouped.into_iter().map(schema::fold_member).collect()
        })
    })
}

/// A batch of keys with their members, `None` for each unknown id.
pub fn keys_with_members(pool: PgPool) -> Fetch<(String, i64), Option<ApiKeyRecord>> {
    static BATCH: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT q.i, {KEY_COLUMNS}, {}, r.role \
             FROM UNNEST($1::text[], $2::bigint[]) WITH ORDINALITY AS q(key_id, now, i) \
             JOIN api_keys k ON k.id = q.key_id JOIN members m ON m.id = k.member_id \
             LEFT JOIN member_roles r ON r.member_id = m.id AND {} \
             ORDER BY q.i, r.role",
            schema::MEMBER_COLUMNS,
            schema::live_grant("r", "q.now"),
        )
    });
    Box::new(move |keys: Vec<(String, i64)>| {
        let pool = pool.clone();
        Box::pin(async move {
            let (ids, nows): (Vec<String>, Vec<i64>) = keys.into_iter().unzip();
            let rows: Vec<NumberedKeyRow> = sqlx::query_as(&BATCH)
                .bind(&ids)
                .bind(&nows)
                .fetch_all(&pool)
                .await?;
            let mut grouped: Vec<Vec<KeyMemberRow>> = ids.iter().map(|_| Vec::new()).collect();
            for NumberedKeyRow { i, row } in rows {
                numbered_slot(&mut grouped, i)?.push(row);
            }
            ids.iter()
                .zip(grouped)
                .map(|(id, rows)| fold_key(id, rows))
                .collect()
        })
    })
}
