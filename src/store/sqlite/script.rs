//! Scripts: several `;`-separated statements sent to SQLite's writer in one
//! round trip, and reading what each statement returned.

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteArguments, SqliteRow};

use crate::store::StoreResult;

/// A script with its arguments bound: `$N` placeholders are numbered across
/// the whole script, and `?` placeholders take the arguments in order across it.
pub type Script<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// The rows each statement of a script returned, in statement order.
pub type ScriptRows = Vec<Vec<SqliteRow>>;

/// The first row statement `index` of a script returned, decoded.
pub fn first_row<T>(rows: &ScriptRows, index: usize) -> StoreResult<Option<T>>
where
    T: for<'r> sqlx::FromRow<'r, SqliteRow>,
{
    Ok(rows
        .get(index)
        .and_then(|rows| rows.first())
        .map(T::from_row)
        .transpose()?)
}

/// Every row statement `index` of a script returned, decoded.
pub fn all_rows<T>(rows: &ScriptRows, index: usize) -> StoreResult<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, SqliteRow>,
{
    Ok(rows
        .get(index)
        .map(|rows| rows.iter().map(T::from_row).collect::<Result<_, _>>())
        .transpose()?
        .unwrap_or_default())
}

/// `n` copies of a row's `VALUES` tuple.
pub fn tuples(tuple: &str, n: usize) -> String {
    vec![tuple; n].join(", ")
}
