//! CDX over real HTTP on a fresh database per test (SQLite by default, PostgreSQL with
//! `TEST_BACKEND=postgres`), wired the way the binary wires it: outbox and relay to an
//! in-process bus carrying CDX's consumer (audit and aggregates) and the tenant replica.

mod access;
mod admins;
mod aggregates;
mod audit;
mod audit_chain;
mod audit_verify;
mod clients;
mod common;
mod export;
mod stream;
mod tenant_list;
mod tenants;
