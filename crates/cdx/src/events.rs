//! The events CDX emits. Tenant events carry the tenant's whole current state, because every
//! service's [`platform::tenants::TenantReplica`] is built from them alone.

use platform::directory::AdminIdentity;
use platform::events::{Actor, Event};
use serde_json::json;

use crate::model::{Client, Tenant};

/// A client was created; `data`: `name`, `changed`.
pub const CLIENT_CREATED: &str = "cdx.client.created";
/// A client changed; `data`: `name`, `changed`.
pub const CLIENT_UPDATED: &str = "cdx.client.updated";
/// A tenant was created; `data`: `slug`, `name`, `client_id`, `status`, `changed`.
pub const TENANT_CREATED: &str = platform::tenants::TENANT_CREATED;
/// A tenant changed; `data` as for [`TENANT_CREATED`].
pub const TENANT_UPDATED: &str = platform::tenants::TENANT_UPDATED;
/// A tenant was deleted; every service purges its data.
pub const TENANT_DELETED: &str = platform::tenants::TENANT_DELETED;
/// A superadmin exported a tenant's data.
pub const TENANT_EXPORTED: &str = "cdx.tenant.exported";
/// A platform admin was created; `data`: `username`.
pub const ADMIN_CREATED: &str = "cdx.admin.created";

/// A platform admin changed their password; `data` is empty.
pub const ADMIN_PASSWORD_CHANGED: &str = "cdx.admin.password_changed";

/// Every field of a client, as `changed` of its creation.
pub(crate) const CLIENT_FIELDS: &[&str] = &["name"];
/// Every field of a tenant, as `changed` of its creation.
pub(crate) const TENANT_FIELDS: &[&str] = &["slug", "name", "client_id", "status"];

fn source() -> &'static str {
    crate::SERVICE.name
}

/// `cdx.client.created` or `cdx.client.updated` for the client as it now is.
pub(crate) fn client(event_type: &str, client: &Client, changed: &[&str], actor: &Actor) -> Event {
    Event::new(
        source(),
        event_type,
        None,
        &client.id,
        actor,
        json!({ "name": client.name, "changed": changed }),
    )
}

/// `cdx.tenant.created` or `cdx.tenant.updated` for the tenant as it now is.
pub(crate) fn tenant(event_type: &str, tenant: &Tenant, changed: &[&str], actor: &Actor) -> Event {
    Event::new(
        source(),
        event_type,
        Some(&tenant.id),
        &tenant.id,
        actor,
        json!({
            "slug": tenant.slug,
            "name": tenant.name,
            "client_id": tenant.client_id,
            "status": tenant.status.as_str(),
            "changed": changed,
        }),
    )
}

/// `cdx.admin.created`; never carries the password or its hash.
pub(crate) fn admin_created(admin: &AdminIdentity, actor: &Actor) -> Event {
    Event::new(
        source(),
        ADMIN_CREATED,
        None,
        &admin.id,
        actor,
        json!({ "username": admin.username }),
    )
}

/// `cdx.admin.password_changed`; never carries the password or its hash.
pub(crate) fn admin_password_changed(admin_id: &str, actor: &Actor) -> Event {
    Event::new(
        source(),
        ADMIN_PASSWORD_CHANGED,
        None,
        admin_id,
        actor,
        json!({}),
    )
}
