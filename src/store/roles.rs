//! Roles: the four built in and the custom ones admins create.

use super::audit::insert_audit;
use super::backend::{Backend, SqlStore};
use super::sql::query;
use super::{AuditEntry, StoreError, StoreResult, schema};
use crate::domain::{self, Conflict, Role};

#[derive(Debug, Clone)]
pub struct RoleInfo {
    pub name: String,
    pub description: String,
    pub builtin: bool,
    /// Members holding it now (expired grants left out).
    pub members: i64,
}

#[async_trait::async_trait]
pub trait RoleStore {
    /// The names of all roles, built-in and custom.
    async fn role_names(&self) -> StoreResult<Vec<String>>;

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

#[async_trait::async_trait]
impl<B: Backend> RoleStore for SqlStore<B> {
    async fn role_names(&self) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = query("SELECT name FROM roles ORDER BY name")
            .fetch_all(&mut self.backend.reader())
            .await?;
        Ok(rows.into_iter().map(|(name,)| name).collect())
    }

    async fn list_roles(&self, now: i64) -> StoreResult<Vec<RoleInfo>> {
        static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "SELECT r.name, r.description, CAST(CASE WHEN r.builtin THEN 1 ELSE 0 END AS BIGINT), \
                   (SELECT COUNT(*) FROM member_roles g JOIN members m ON m.id = g.member_id \
                    WHERE g.role = r.name AND m.status <> 'deleted' AND {}) \
                 FROM roles r ORDER BY r.name",
                schema::live_grant("g", "$1")
            )
        });
        let rows: Vec<(String, String, i64, i64)> = query(&LIST)
            .bind(now)
            .fetch_all(&mut self.backend.reader())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(name, description, builtin, members)| RoleInfo {
                name,
                description,
                builtin: builtin != 0,
                members,
            })
            .collect())
    }

    async fn create_role(
        &self,
        role: &Role,
        description: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.backend.begin().await?;
        let created = query(
            "INSERT INTO roles (name, description, builtin, created_at) VALUES ($1, $2, FALSE, $3) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(role.as_str())
        .bind(description)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if created == 0 {
            return Err(Conflict::RoleExists(role.clone()).into());
        }
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await
    }

    async fn delete_role(
        &self,
        role: &Role,
        force: bool,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()> {
        domain::may_delete_role(role)?;
        let mut tx = self.backend.begin().await?;
        let found: Option<(String,)> = query("SELECT name FROM roles WHERE name = $1")
            .bind(role.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Err(StoreError::NotFound("role"));
        }
        let (grants,): (i64,) = query("SELECT COUNT(*) FROM member_roles WHERE role = $1")
            .bind(role.as_str())
            .fetch_one(&mut *tx)
            .await?;
        domain::may_delete_granted_role(role, grants, force)?;
        query("DELETE FROM member_roles WHERE role = $1")
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        query("DELETE FROM roles WHERE name = $1")
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        let audit = audit.details(serde_json::json!({ "revoked_grants": grants, "force": force }));
        insert_audit(&mut *tx, audit, now).await?;
        B::commit(tx).await
    }
}
