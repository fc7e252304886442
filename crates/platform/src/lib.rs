//! The Metatron kernel: what every service stands on.
//!
//! Configuration layering, one database per service, the JSON error format, the HTTP edge
//! (request ids, limits, timeouts), the authenticated caller and its tenant scope, access
//! token signing and verification, password hashing, and the transactional outbox with its
//! in-process event bus. Service crates depend on this crate and never on each other.

pub mod caller;
pub mod config;
pub mod db;
pub mod directory;
pub mod error;
pub mod events;
pub mod export;
pub mod facts;
pub mod group;
pub mod http;
pub mod identity;
pub mod ids;
pub mod limit;
pub mod page;
pub mod password;
pub mod remote;
pub mod service;
pub mod sql;
pub mod tenants;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;
pub mod validate;

pub use error::{ApiError, ApiResult};
