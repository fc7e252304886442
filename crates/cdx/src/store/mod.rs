//! All SQL of CDX. Portable SQL through sqlx's `Any` driver (runs unchanged on SQLite and
//! PostgreSQL); every write that touches more than one row or records an event runs in one
//! transaction together with its outbox rows. Handlers never write SQL; they call these.

mod admins;
mod aggregates;
mod audit;
mod clients;
mod login_window;
mod services;
mod tenant_list;
mod tenants;
mod verifications;

pub use admins::*;
pub use aggregates::*;
pub use audit::*;
pub use clients::*;
pub use login_window::expire_logins;
pub use services::*;
pub use tenant_list::*;
pub use tenants::*;
pub use verifications::*;

pub(crate) use platform::sql::{check_version, Arg, Conditions};

const CLIENT_COLUMNS: &str = "id, name, created_at, updated_at, version";
const TENANT_COLUMNS: &str = "id, slug, name, client_id, status, created_at, updated_at, version";
const AUDIT_COLUMNS: &str = "id, occurred_at, actor_id, actor_role, actor_name, tenant_id, \
                             action, target, request_id, ip, detail, changed, seq, prev_hash, \
                             hash";
