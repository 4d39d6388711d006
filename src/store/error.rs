//! What can go wrong in the store: the database (unreachable, busy, refusing a
//! statement, holding a row we cannot read), or the request (nothing there, or
//! in conflict with what is there). Business rules are the domain's: a
//! [`Conflict`] says which one a change would break.

use crate::domain::Conflict;

/// Cloneable, so that a batch that fails (SQLite's group commit, Postgres'
/// coalesced lookups) can hand every job in it the same typed error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy; the request may be retried.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(String),
    #[error("unreadable row: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Conflict(#[from] Conflict),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) if is_transient(db.code().as_deref(), db.message()) => {
                Self::Unavailable(err.to_string())
            }
            _ => Self::Database(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migrate(err.to_string())
    }
}

/// SQLite's busy/locked and Postgres' connection-class (08), shutdown (57P),
/// insufficient-resources (53, e.g. too many connections) and serialization or
/// deadlock (40001, 40P01) errors are transient: they say "try later", not
/// "your request is wrong". Postgres codes are five-character SQLSTATEs, SQLite's
/// are numbers (531 is a SQLite constraint error, not class 53), hence the length test.
fn is_transient(code: Option<&str>, message: &str) -> bool {
    match code {
        Some(sqlstate) if sqlstate.len() == 5 => {
            ["08", "57P", "53"]
                .iter()
                .any(|class| sqlstate.starts_with(class))
                || matches!(sqlstate, "40001" | "40P01")
        }
        Some("5" | "6" | "261" | "517") => true,
        _ => message.contains("database is locked"),
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn outages_are_transient_and_bad_requests_are_not() {
        for sqlstate in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01",
        ] {
            assert!(is_transient(Some(sqlstate), ""), "{sqlstate}");
        }
        for sqlstate in ["23505", "42P01", "22P02"] {
            assert!(!is_transient(Some(sqlstate), ""), "{sqlstate}");
        }
        assert!(is_transient(Some("5"), "database is locked"));
        assert!(is_transient(Some("517"), ""));
        assert!(!is_transient(Some("531"), "constraint failed"));
        assert!(!is_transient(Some("2067"), "UNIQUE constraint failed"));
    }
}
