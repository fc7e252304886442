//! The `metatron` binary's library: settings, the all-in-one composition, one
//! service per process (`node`), and the commands.
//! `main.rs` only parses the command line and calls in here; tests call the same functions.

pub mod app;
pub mod commands;
pub mod node;
pub mod settings;
pub mod up;

#[cfg(test)]
mod event_catalogue;

pub use app::App;
pub use settings::Settings;
