//! Tenants.

use platform::db::Db;
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::ids::{is_uuid, new_id, Timestamp};
use platform::tenants::TenantStatus;
use platform::{ApiError, ApiResult};
use serde::Serialize;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Executor, Row};

use super::{check_version, client_by_id, TENANT_COLUMNS};
use crate::events::{self, TENANT_FIELDS};
use crate::model::{Slug, Tenant};
use platform::sql::lost_race;

pub(super) fn tenant_from_row(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    let status: String = row.try_get("status")?;
    Ok(Tenant {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        client_id: row.try_get("client_id")?,
        status: TenantStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown tenant status `{status}`").into())
        })?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

// Tenants

/// Filters of the tenant list.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only this status.
    pub status: Option<TenantStatus>,
    /// Only tenants of this client.
    pub client_id: Option<String>,
    /// Case-insensitive substring of slug or name.
    pub q: Option<String>,
}

/// The tenant with this id or slug; text that is neither answers `None` without a query.
pub async fn tenant_by_key<'e>(
    ex: impl Executor<'e, Database = Any>,
    key: &str,
) -> ApiResult<Option<Tenant>> {
    let column = if is_uuid(key) {
        "id"
    } else if Slug::parse(key).is_ok() {
        "slug"
    } else {
        return Ok(None);
    };
    let row = sqlx::query(&format!(
        "SELECT {TENANT_COLUMNS} FROM tenants WHERE {column} = $1"
    ))
    .bind(key)
    .fetch_optional(ex)
    .await?;
    Ok(row.as_ref().map(tenant_from_row).transpose()?)
}

/// A tenant to create (validated).
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Unique short name.
    pub slug: Slug,
    /// Display name.
    pub name: String,
    /// Owning client; must exist.
    pub client_id: String,
}

pub(super) fn build_tenant(new: &NewTenant) -> Tenant {
    let now = Timestamp::now();
    Tenant {
        id: new_id(),
        slug: new.slug.as_str().to_string(),
        name: new.name.clone(),
        client_id: new.client_id.clone(),
        status: TenantStatus::Active,
        created_at: now,
        updated_at: now,
        version: 1,
    }
}

pub(super) const INSERT_TENANT: &str = "INSERT INTO tenants \
    (id, slug, name, client_id, status, created_at, updated_at, version) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(super) fn bind_tenant<'q>(sql: &'q str, t: &Tenant) -> Query<'q, Any, AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(t.id.clone())
        .bind(t.slug.clone())
        .bind(t.name.clone())
        .bind(t.client_id.clone())
        .bind(t.status.as_str())
        .bind(t.created_at.millis())
        .bind(t.updated_at.millis())
        .bind(t.version)
}

/// Creates an active tenant of an existing client and records `cdx.tenant.created`.
#[tracing::instrument(skip_all, fields(slug = new.slug.as_str()), err(level = "debug"))]
pub async fn create_tenant(
    db: &Db,
    new: &NewTenant,
    admin: Option<&platform::tenants::InitialAdmin>,
    actor: &Actor,
) -> ApiResult<Tenant> {
    let tenant = build_tenant(new);
    let mut tx = db.begin().await?;
    if client_by_id(&mut *tx, &new.client_id).await?.is_none() {
        return Err(ApiError::validation("client_id", "no client has this id"));
    }
    bind_tenant(INSERT_TENANT, &tenant)
        .execute(&mut *tx)
        .await
        .map_err(on_unique(
            "slug_taken",
            "a tenant with this slug already exists",
        ))?;
    super::aggregates::ensure_summary(&mut tx, &tenant.id, tenant.created_at.millis()).await?;
    let mut event = events::tenant(events::TENANT_CREATED, &tenant, TENANT_FIELDS, actor);
    if let Some(admin) = admin {
        event.data["admin"] = serde_json::json!(admin);
    }
    record(&mut tx, &event).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Changes to a tenant (validated).
#[derive(Debug, Clone, Default)]
pub struct TenantChanges {
    /// New display name.
    pub name: Option<String>,
    /// Suspend or resume.
    pub status: Option<TenantStatus>,
}

/// Applies `changes` to the tenant with this id or slug when it is still at `expected` (if
/// given) and records `cdx.tenant.updated`. No change, no event.
#[tracing::instrument(skip_all, fields(tenant = key), err(level = "debug"))]
pub async fn update_tenant(
    db: &Db,
    key: &str,
    changes: &TenantChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Tenant> {
    let mut tx = db.begin().await?;
    let current = tenant_by_key(&mut *tx, key)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    check_version(expected, current.version)?;
    let mut next = current.clone();
    let mut changed = Vec::new();
    if let Some(name) = changes.name.as_ref().filter(|n| **n != current.name) {
        next.name = name.clone();
        changed.push("name");
    }
    if let Some(status) = changes.status.filter(|s| *s != current.status) {
        next.status = status;
        changed.push("status");
    }
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE tenants SET name = $1, status = $2, updated_at = $3, version = $4 \
         WHERE id = $5 AND version = $6",
    )
    .bind(&next.name)
    .bind(next.status.as_str())
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(&current.id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(lost_race(
            tenant_by_key(&mut *tx, &current.id)
                .await?
                .map(|t| t.version),
            "tenant",
        ));
    }
    record(
        &mut tx,
        &events::tenant(events::TENANT_UPDATED, &next, &changed, actor),
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// One service's part of a tenant deletion.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgeStep {
    /// The service.
    pub service: String,
    /// When it reported the tenant's data gone (`null`: not yet).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub purged_at: Option<Timestamp>,
    /// Rows it removed.
    pub rows: Option<i64>,
}

/// Where the deletion of a tenant stands, per service.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PurgeStatus {
    /// The deleted tenant's id.
    pub tenant_id: String,
    /// Its slug (free for a new tenant).
    pub slug: String,
    /// When the deletion was asked for.
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: Timestamp,
    /// Whether every service has purged the tenant's data.
    pub complete: bool,
    /// Each service's part.
    pub services: Vec<PurgeStep>,
}

/// Deletes the tenant with this id or slug when `confirm` repeats its slug: removes it from
/// the registry, records one pending purge step per registered service (CDX's own done at
/// once) and `cdx.tenant.deleted`, on which every service purges the tenant's data.
pub async fn delete_tenant(
    db: &Db,
    key: &str,
    confirm: Option<&str>,
    actor: &Actor,
) -> ApiResult<PurgeStatus> {
    let mut tx = db.begin().await?;
    let tenant = tenant_by_key(&mut *tx, key)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    if confirm != Some(tenant.slug.as_str()) {
        return Err(ApiError::validation(
            "confirm",
            "repeat the tenant's slug (`?confirm=<slug>`) to delete it and all its data",
        ));
    }
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(&tenant.id)
        .execute(&mut *tx)
        .await?;
    let mut services: Vec<String> = sqlx::query_scalar("SELECT name FROM services ORDER BY name")
        .fetch_all(&mut *tx)
        .await?;
    if !services.iter().any(|s| s == crate::SERVICE.name) {
        services.push(crate::SERVICE.name.to_string());
    }
    let now = Timestamp::now();
    for service in &services {
        let own = service == crate::SERVICE.name;
        sqlx::query(
            "INSERT INTO tenant_purges (tenant_id, service, slug, requested_at, purged_at, \
             rows_removed) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&tenant.id)
        .bind(service)
        .bind(tenant.slug.as_str())
        .bind(now.millis())
        .bind(own.then_some(now.millis()))
        .bind(own.then_some(1i64))
        .execute(&mut *tx)
        .await?;
    }
    record(
        &mut tx,
        &events::tenant(events::TENANT_DELETED, &tenant, &[], actor),
    )
    .await?;
    let status = purge_status(&mut *tx, &tenant.id).await?;
    tx.commit().await?;
    status.ok_or_else(|| ApiError::not_found("tenant"))
}

/// The deletion of the tenant with this id or (former) slug, if one was asked for.
pub async fn purge_status<'e>(
    ex: impl Executor<'e, Database = Any>,
    key: &str,
) -> ApiResult<Option<PurgeStatus>> {
    let rows = sqlx::query(
        "SELECT tenant_id, service, slug, requested_at, purged_at, rows_removed \
         FROM tenant_purges WHERE tenant_id = $1 OR slug = $1 ORDER BY requested_at DESC, service",
    )
    .bind(key)
    .fetch_all(ex)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    // The latest deletion under this key (a slug may have been reused and deleted again).
    let tenant_id: String = first.try_get("tenant_id")?;
    let mut status = PurgeStatus {
        slug: first.try_get("slug")?,
        requested_at: Timestamp(first.try_get("requested_at")?),
        tenant_id: tenant_id.clone(),
        complete: true,
        services: Vec::new(),
    };
    for row in &rows {
        if row.try_get::<String, _>("tenant_id")? != tenant_id {
            continue;
        }
        let purged_at: Option<i64> = row.try_get("purged_at")?;
        status.complete &= purged_at.is_some();
        status.services.push(PurgeStep {
            service: row.try_get("service")?,
            purged_at: purged_at.map(Timestamp),
            rows: row.try_get("rows_removed")?,
        });
    }
    Ok(Some(status))
}

/// Records that `actor` exported the tenant's data.
pub async fn record_export(db: &Db, tenant: &Tenant, actor: &Actor) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    record(
        &mut tx,
        &events::tenant(events::TENANT_EXPORTED, tenant, &[], actor),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
