//! What a service crate hands to the binary that composes the topology.

use crate::db::MigrationFile;

/// Static description of a service: its name and its embedded migrations.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// Name, also the database name and the API path segment (`/api/<name>`).
    pub name: &'static str,
    /// Version reported in the service registry.
    pub version: &'static str,
    /// Embedded migrations, versions from 100 up.
    pub migrations: &'static [MigrationFile],
}
