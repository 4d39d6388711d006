//! The portable SQL of [`super::MemberStore`], instantiated per backend.

/// Grants each of `$roles` (without expiry) to `$member` inside an open
/// transaction; a role the member already holds keeps its grant.
macro_rules! grant_roles {
    ($tx:expr, $member:expr, $roles:expr, $granted_by:expr, $now:expr) => {
        for role in $roles {
            sqlx::query(
                "INSERT INTO member_roles (member_id, role, granted_by, granted_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (member_id, role) DO NOTHING",
            )
            .bind($member)
            .bind(role.as_str())
            .bind($granted_by)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    };
}
pub(crate) use grant_roles;

/// Implements [`crate::store::MemberStore`] for `$store` (which has `writer` and `reader` pools).
macro_rules! impl_member_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::MemberStore for $store {
            async fn list_members(&self, filter: &MemberFilter, now: i64) -> StoreResult<Vec<Member>> {
                let rows: Vec<$crate::store::portable::MemberRoleRow> = sqlx::query_as(concat!(
                    $crate::store::portable::member_select!("$1"),
                    "WHERE m.id IN (SELECT x.id FROM members x WHERE ($2 IS NULL OR x.id > $2) ",
                    "AND ($3 IS NULL OR x.status = $3) AND ($4 IS NULL OR x.email LIKE $4 ESCAPE '\\') ",
                    "AND ($5 IS NULL OR EXISTS (SELECT 1 FROM member_roles g WHERE g.member_id = x.id AND g.role = $5 ",
                    "AND (g.expires_at IS NULL OR g.expires_at > $1))) ORDER BY x.id LIMIT $6) ",
                    "ORDER BY m.id, r.role"
                ))
                .bind(now)
                .bind(filter.after.as_deref())
                .bind(filter.status.map(MemberStatus::as_str))
                .bind(filter.q.as_deref().map($crate::store::members::like_pattern))
                .bind(filter.role.as_ref().map(Role::as_str))
                .bind(filter.limit)
                .fetch_all(&self.reader)
                .await?;
                $crate::store::members::fold_members(rows)
            }

            async fn set_member_status(&self, id: &MemberId, status: MemberStatus, audit: AuditEntry, now: i64) -> StoreResult<Option<Member>> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let was_admin = $crate::store::members::load_or_none!(tx, id.as_str(), now);
                sqlx::query("UPDATE members SET status = $2 WHERE id = $1")
                    .bind(id.as_str())
                    .bind(status.as_str())
                    .execute(&mut *tx)
                    .await?;
                if status != MemberStatus::Active {
                    $crate::store::members::revoke_member_sessions_in!(tx, id.as_str(), now);
                }
                $crate::store::members::finish_member_change!(tx, id.as_str(), was_admin, audit, now)
            }

            async fn set_member_roles(&self, id: &MemberId, roles: &[Role], audit: AuditEntry, now: i64) -> StoreResult<Option<Member>> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                $crate::store::members::ensure_roles_exist!(tx, roles);
                let was_admin = $crate::store::members::load_or_none!(tx, id.as_str(), now);
                let current: Vec<(String,)> = sqlx::query_as("SELECT role FROM member_roles WHERE member_id = $1")
                    .bind(id.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                for (role,) in &current {
                    if !roles.iter().any(|r| r.as_str() == role) {
                        sqlx::query("DELETE FROM member_roles WHERE member_id = $1 AND role = $2")
                            .bind(id.as_str())
                            .bind(role)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                $crate::store::members_sql::grant_roles!(tx, id.as_str(), roles, audit.actor.as_deref(), now);
                $crate::store::members::finish_member_change!(tx, id.as_str(), was_admin, audit, now)
            }

            async fn grant_member_role(&self, id: &MemberId, grant: &RoleGrant, audit: AuditEntry, now: i64) -> StoreResult<Option<Member>> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                $crate::store::members::ensure_roles_exist!(tx, [&grant.role]);
                let was_admin = $crate::store::members::load_or_none!(tx, id.as_str(), now);
                sqlx::query(
                    "INSERT INTO member_roles (member_id, role, granted_by, granted_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
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
                $crate::store::members::finish_member_change!(tx, id.as_str(), was_admin, audit, now)
            }

            async fn revoke_member_role(&self, id: &MemberId, role: &Role, audit: AuditEntry, now: i64) -> StoreResult<Option<Member>> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let was_admin = $crate::store::members::load_or_none!(tx, id.as_str(), now);
                sqlx::query("DELETE FROM member_roles WHERE member_id = $1 AND role = $2")
                    .bind(id.as_str())
                    .bind(role.as_str())
                    .execute(&mut *tx)
                    .await?;
                $crate::store::members::finish_member_change!(tx, id.as_str(), was_admin, audit, now)
            }

            async fn revoke_member_sessions(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<Option<u64>> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                if $crate::store::portable::load_member!(&mut *tx, id.as_str(), now).is_none() {
                    return Ok(None);
                }
                let revoked = $crate::store::members::revoke_member_sessions_in!(tx, id.as_str(), now);
                insert_audit!(tx, audit.details(serde_json::json!({ "sessions": revoked })), now);
                tx.commit().await?;
                Ok(Some(revoked))
            }

            async fn onboard_member(&self, email: &Email, roles: &[Role], key: Option<NewApiKey>, audit: AuditEntry, now: i64) -> StoreResult<Member> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                $crate::store::members::ensure_roles_exist!(tx, roles);
                let existing: Option<(String,)> = sqlx::query_as("SELECT id FROM members WHERE email = $1")
                    .bind(email.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                if existing.is_some() {
                    return Err(StoreError::Conflict(format!("{email} is already a member")));
                }
                let id = MemberId::new();
                sqlx::query("INSERT INTO members (id, email, status, created_at) VALUES ($1, $2, 'active', $3)")
                    .bind(id.as_str())
                    .bind(email.as_str())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
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
                $crate::store::members_sql::grant_roles!(tx, id.as_str(), std::iter::once(&Role::member()).chain(roles), audit.actor.as_deref(), now);
                if let Some(key) = key {
                    $crate::store::api_keys::insert_api_key!(tx, key, id.as_str(), now);
                }
                insert_audit!(tx, audit.target(id.as_str()), now);
                let member = $crate::store::portable::load_member!(&mut *tx, id.as_str(), now)
                    .ok_or_else(|| StoreError::Corrupt(format!("member {id} vanished")))?;
                tx.commit().await?;
                Ok(member)
            }

            async fn list_roles(&self, now: i64) -> StoreResult<Vec<RoleInfo>> {
                let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
                    "SELECT r.name, r.description, CAST(CASE WHEN r.builtin THEN 1 ELSE 0 END AS BIGINT), \
                       (SELECT COUNT(*) FROM member_roles g JOIN members m ON m.id = g.member_id \
                        WHERE g.role = r.name AND m.status <> 'deleted' AND (g.expires_at IS NULL OR g.expires_at > $1)) \
                     FROM roles r ORDER BY r.name",
                )
                .bind(now)
                .fetch_all(&self.reader)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, description, builtin, members)| RoleInfo { name, description, builtin: builtin != 0, members })
                    .collect())
            }

            async fn create_role(&self, role: &Role, description: &str, audit: AuditEntry, now: i64) -> StoreResult<()> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let created = sqlx::query(
                    "INSERT INTO roles (name, description, builtin, created_at) VALUES ($1, $2, FALSE, $3) ON CONFLICT (name) DO NOTHING",
                )
                .bind(role.as_str())
                .bind(description)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if created == 0 {
                    return Err(StoreError::Conflict(format!("the role `{role}` exists already")));
                }
                insert_audit!(tx, audit, now);
                tx.commit().await?;
                Ok(())
            }

            async fn delete_role(&self, role: &Role, force: bool, audit: AuditEntry, now: i64) -> StoreResult<()> {
                let mut writer = self.write().await?;
                let mut tx = sqlx::Connection::begin(&mut *writer).await?;
                let found: Option<(i64,)> = sqlx::query_as("SELECT CAST(CASE WHEN builtin THEN 1 ELSE 0 END AS BIGINT) FROM roles WHERE name = $1")
                    .bind(role.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                match found {
                    None => return Err(StoreError::NotFound("role")),
                    Some((1,)) => return Err(StoreError::BuiltinRole(role.to_string())),
                    Some(_) => {}
                }
                let (grants,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM member_roles WHERE role = $1")
                    .bind(role.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                if grants > 0 && !force {
                    return Err(StoreError::RoleInUse { role: role.to_string(), grants });
                }
                sqlx::query("DELETE FROM member_roles WHERE role = $1").bind(role.as_str()).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM roles WHERE name = $1").bind(role.as_str()).execute(&mut *tx).await?;
                insert_audit!(tx, audit.details(serde_json::json!({ "revoked_grants": grants, "force": force })), now);
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_member_store;
