//! Helpers for SQL assembled at run time and for optimistic concurrency, shared by every
//! service's `store`. Queries stay portable: placeholders are numbered `$n`, which sqlx's
//! `Any` driver accepts on SQLite and PostgreSQL alike.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

use crate::db::Backend;
use crate::error::{ApiError, ApiResult};

/// A bound value of a dynamically assembled query.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// Text.
    Text(String),
    /// An integer.
    Int(i64),
}

/// `WHERE` conditions assembled from optional filters, numbering placeholders as they go so
/// the same text runs on both backends.
#[derive(Debug, Default)]
pub struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Binds `arg` and returns its placeholder.
    pub fn bind(&mut self, arg: impl Into<Arg>) -> String {
        self.args.push(arg.into());
        format!("${}", self.args.len())
    }

    /// Adds a condition (joined with `AND`).
    pub fn and(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    /// ` WHERE …` for the conditions so far, or nothing.
    pub fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    /// The query `sql` with every bound value.
    pub fn query(self, sql: &str) -> Query<'_, Any, AnyArguments<'_>> {
        self.args
            .into_iter()
            .fold(sqlx::query(sql), |q, arg| match arg {
                Arg::Text(s) => q.bind(s),
                Arg::Int(n) => q.bind(n),
            })
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Self {
        Arg::Text(s)
    }
}

impl From<&str> for Arg {
    fn from(s: &str) -> Self {
        Arg::Text(s.to_string())
    }
}

impl From<i64> for Arg {
    fn from(n: i64) -> Self {
        Arg::Int(n)
    }
}

/// `$from, $from+1, …`: `n` numbered placeholders, e.g. for `IN (…)` lists.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(…), (…)` for a multi-row `INSERT … VALUES`: `rows` rows of `columns` placeholders,
/// bound row after row. PostgreSQL gets `$1, $2, …`; SQLite gets anonymous `?`, because it
/// finds numbered placeholders by walking a list, which makes binding a large statement
/// quadratic in its size.
pub fn values_list(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * (columns * 6 + 4));
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * columns + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// Refuses a change based on a version other than the current one (409 with the current).
pub fn check_version(expected: Option<i64>, current: i64) -> ApiResult<()> {
    match expected {
        Some(v) if v != current => Err(ApiError::stale(current)),
        _ => Ok(()),
    }
}

/// A concurrent writer committed between our read and our conditional update: 409 with the
/// version it left, or 404 when it deleted the row.
pub fn lost_race(current: Option<i64>, what: &str) -> ApiError {
    match current {
        Some(v) => ApiError::stale(v),
        None => ApiError::not_found(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_placeholders_in_order() {
        let mut c = Conditions::default();
        let a = c.bind("x");
        c.and(format!("a = {a}"));
        let b = c.bind(1);
        c.and(format!("b > {b}"));
        assert_eq!(c.where_sql(), " WHERE a = $1 AND b > $2");
        assert_eq!(Conditions::default().where_sql(), "");
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn values_lists_per_backend() {
        assert_eq!(values_list(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(values_list(Backend::Postgres, 2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn versions() {
        assert!(check_version(None, 3).is_ok());
        assert!(check_version(Some(3), 3).is_ok());
        assert_eq!(
            check_version(Some(2), 3).expect_err("stale").status,
            axum::http::StatusCode::CONFLICT
        );
    }
}
