//! How a portable [`Query`] runs on Postgres: its arguments bound in one place.

use sqlx::postgres::{PgConnection, PgPool};

use crate::store::StoreResult;
use crate::store::sql::{Arg, Executor, Query, Row};

/// The sqlx statement for `query`, borrowing its text and arguments.
fn statement<'q>(
    query: &'q Query<'_>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .args
        .iter()
        .fold(sqlx::query(&query.sql), |statement, arg| match arg {
            Arg::Text(value) => statement.bind(value.as_deref()),
            Arg::Int(value) => statement.bind(*value),
            Arg::Bool(value) => statement.bind(*value),
            Arg::Bytes(value) => statement.bind(value.as_deref()),
        })
}

/// [`statement`] for rows of `T`.
fn statement_as<'q, T: Row>(
    query: &'q Query<'_>,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments> {
    query
        .args
        .iter()
        .fold(sqlx::query_as(&query.sql), |statement, arg| match arg {
            Arg::Text(value) => statement.bind(value.as_deref()),
            Arg::Int(value) => statement.bind(*value),
            Arg::Bool(value) => statement.bind(*value),
            Arg::Bytes(value) => statement.bind(value.as_deref()),
        })
}

impl Executor for PgConnection {
    async fn run<'e>(&'e mut self, query: Query<'e>) -> StoreResult<u64> {
        Ok(statement(&query).execute(self).await?.rows_affected())
    }

    async fn rows<'e, T: Row + 'e>(&'e mut self, query: Query<'e>) -> StoreResult<Vec<T>> {
        Ok(statement_as(&query).fetch_all(self).await?)
    }

    async fn first_row<'e, T: Row + 'e>(&'e mut self, query: Query<'e>) -> StoreResult<Option<T>> {
        Ok(statement_as(&query).fetch_optional(self).await?)
    }
}

impl Executor for PgPool {
    async fn run<'e>(&'e mut self, query: Query<'e>) -> StoreResult<u64> {
        Ok(statement(&query).execute(&*self).await?.rows_affected())
    }

    async fn rows<'e, T: Row + 'e>(&'e mut self, query: Query<'e>) -> StoreResult<Vec<T>> {
        Ok(statement_as(&query).fetch_all(&*self).await?)
    }

    async fn first_row<'e, T: Row + 'e>(&'e mut self, query: Query<'e>) -> StoreResult<Option<T>> {
        Ok(statement_as(&query).fetch_optional(&*self).await?)
    }
}
