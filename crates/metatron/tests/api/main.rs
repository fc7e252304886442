//! Integration suite of the whole platform over real HTTP. Every test starts its own server
//! on port 0 with fresh databases on the backend chosen by `TEST_BACKEND` (sqlite by
//! default, or postgres), so the same suite runs unchanged on both.

mod common;

mod aggregates;

mod audit;
mod cli;
mod crm;
mod export;
mod input;
mod lifecycle;
mod login;
mod nats;
mod provisioning;
mod roles;
mod tokens;
