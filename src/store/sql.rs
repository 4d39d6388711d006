//! How the operations run SQL on either backend: a statement with its
//! arguments ([`Query`]), run on anything that can run one ([`Executor`]): a
//! connection, a transaction (through `&mut *tx`) or a reader pool.
//!
//! Why not sqlx's own generic API: a function generic over "any sqlx database"
//! must restate, for every Rust type it binds or decodes, that the database can
//! encode it, and those bounds cannot be stated once. Here the arguments are
//! one small enum ([`Arg`]), bound in one place per backend, and rows decode
//! into types that derive `sqlx::FromRow`, which serves both. SQL text is the
//! same on both: ids are text, times 64-bit integers, placeholders `$N`.
//!
//! Why not `sqlx::query!` (checked against the schema at compile time): it
//! checks one text against one database, and every text here runs on two. What
//! catches a wrong column instead is the store contract suite
//! (`tests/api/store/`), which runs every operation on both backends.

use std::borrow::Cow;

use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{StoreError, StoreResult};

/// A value bound to a `$N` placeholder.
#[derive(Debug, Clone)]
pub enum Arg<'q> {
    Text(Option<Cow<'q, str>>),
    Int(Option<i64>),
    Bool(Option<bool>),
    Bytes(Option<Cow<'q, [u8]>>),
}

/// A row type both backends can decode.
pub trait Row:
    for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> Row for T where
    T: for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin
{
}

/// Something a statement can run on. Implemented once per backend for its
/// connection and its pool (`sqlite/mod.rs`, `postgres/mod.rs`).
pub trait Executor: Send {
    /// Runs the statement; the number of rows it changed.
    fn run<'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> impl Future<Output = StoreResult<u64>> + Send + 'e;

    fn rows<'e, T: Row + 'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> impl Future<Output = StoreResult<Vec<T>>> + Send + 'e;

    fn first_row<'e, T: Row + 'e>(
        &'e mut self,
        query: Query<'e>,
    ) -> impl Future<Output = StoreResult<Option<T>>> + Send + 'e;
}

/// A statement and its arguments, in placeholder order.
#[derive(Debug, Clone)]
pub struct Query<'q> {
    pub sql: Cow<'q, str>,
    pub args: Vec<Arg<'q>>,
}

/// A statement to bind arguments to, as with `sqlx::query`.
pub fn query(sql: &str) -> Query<'_> {
    Query {
        sql: Cow::Borrowed(sql),
        args: Vec::new(),
    }
}

impl<'q> Query<'q> {
    /// A statement whose text was built for this call (a list of placeholders).
    pub fn owned(sql: String) -> Self {
        Self {
            sql: Cow::Owned(sql),
            args: Vec::new(),
        }
    }

    pub fn bind(mut self, value: impl Into<Arg<'q>>) -> Self {
        self.args.push(value.into());
        self
    }

    pub async fn execute(self, db: &mut impl Executor) -> StoreResult<u64> {
        db.run(self).await
    }

    pub async fn fetch_all<T: Row + 'q>(self, db: &mut impl Executor) -> StoreResult<Vec<T>> {
        db.rows(self).await
    }

    pub async fn fetch_optional<T: Row + 'q>(
        self,
        db: &mut impl Executor,
    ) -> StoreResult<Option<T>> {
        db.first_row(self).await
    }

    /// The first row, which the statement always returns (a count, an `EXISTS`).
    pub async fn fetch_one<T: Row + 'q>(self, db: &mut impl Executor) -> StoreResult<T> {
        let sql = self.sql.clone();
        db.first_row(self)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no row from `{sql}`")))
    }
}

impl<'q> From<&'q str> for Arg<'q> {
    fn from(value: &'q str) -> Self {
        Self::Text(Some(Cow::Borrowed(value)))
    }
}

impl<'q> From<&'q String> for Arg<'q> {
    fn from(value: &'q String) -> Self {
        Self::Text(Some(Cow::Borrowed(value)))
    }
}

impl From<String> for Arg<'_> {
    fn from(value: String) -> Self {
        Self::Text(Some(Cow::Owned(value)))
    }
}

impl<'q> From<Option<&'q str>> for Arg<'q> {
    fn from(value: Option<&'q str>) -> Self {
        Self::Text(value.map(Cow::Borrowed))
    }
}

impl From<Option<String>> for Arg<'_> {
    fn from(value: Option<String>) -> Self {
        Self::Text(value.map(Cow::Owned))
    }
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Self::Int(Some(value))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Self::Int(value)
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Self::Bool(Some(value))
    }
}

impl From<Option<bool>> for Arg<'_> {
    fn from(value: Option<bool>) -> Self {
        Self::Bool(value)
    }
}

impl<'q> From<&'q [u8]> for Arg<'q> {
    fn from(value: &'q [u8]) -> Self {
        Self::Bytes(Some(Cow::Borrowed(value)))
    }
}
