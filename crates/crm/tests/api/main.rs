//! The CRM's integration suite: real HTTP against the CRM on a fresh database, on SQLite or
//! PostgreSQL (`TEST_BACKEND`).

mod common;
mod companies;
mod customers;
mod deals;
mod fields;
mod import;
mod isolation;
mod notes;
mod permissions;
mod pipelines;
mod tenant;
