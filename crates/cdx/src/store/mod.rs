//! All SQL of CDX. Portable SQL through sqlx's `Any` driver (runs unchanged on SQLite and
//! PostgreSQL); every write that touches more than one row or records an event runs in one
//! transaction together with its outbox rows. Handlers never write SQL; they call these.

mod admins;
mod audit;
mod clients;
mod services;
mod tenants;

pub use admins::*;
pub use audit::*;
pub use clients::*;
pub use services::*;
pub use tenants::*;

use platform::{ApiError, ApiResult};
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

const CLIENT_COLUMNS: &str = "id, name, created_at, updated_at, version";
const TENANT_COLUMNS: &str = "id, slug, name, client_id, status, created_at, updated_at, version";
const AUDIT_COLUMNS: &str = "id, occurred_at, actor_id, actor_role, actor_name, tenant_id, \
                             action, target, request_id, ip, detail";

/// A bound value of a dynamically assembled query.
enum Arg {
    Text(String),
    Int(i64),
}

/// `WHERE` conditions assembled from optional filters, numbering placeholders as they go so
/// the same text runs on both backends.
#[derive(Default)]
struct Conditions {
    clauses: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Binds `arg` and returns its placeholder.
    fn bind(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn and(&mut self, clause: String) {
        self.clauses.push(clause);
    }

    fn where_sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }

    fn query(self, sql: &str) -> Query<'_, Any, AnyArguments<'_>> {
        self.args
            .into_iter()
            .fold(sqlx::query(sql), |q, arg| match arg {
                Arg::Text(s) => q.bind(s),
                Arg::Int(n) => q.bind(n),
            })
    }
}

fn check_version(expected: Option<i64>, current: i64) -> ApiResult<()> {
    match expected {
        Some(v) if v != current => Err(ApiError::stale(current)),
        _ => Ok(()),
    }
}

/// A concurrent writer committed between our read and our conditional update.
fn lost_race(current: Option<i64>) -> ApiError {
    match current {
        Some(v) => ApiError::stale(v),
        None => ApiError::not_found("resource"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_number_placeholders_in_order() {
        let mut c = Conditions::default();
        let a = c.bind(Arg::Text("x".into()));
        c.and(format!("a = {a}"));
        let b = c.bind(Arg::Int(1));
        c.and(format!("b > {b}"));
        assert_eq!(c.where_sql(), " WHERE a = $1 AND b > $2");
    }
}
