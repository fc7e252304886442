//! Platform admins and the demo seed.

use platform::db::Db;
use platform::directory::AdminIdentity;
use platform::events::{record, Actor};
use platform::ids::{is_uuid, new_id, Timestamp};
use platform::{ApiError, ApiResult};
use sqlx::{AnyConnection, AnyPool, Row};

use super::clients::new_client;
use super::tenants::{bind_tenant, build_tenant, INSERT_TENANT};
use super::{tenant_by_key, NewTenant};
use crate::events::{self, CLIENT_FIELDS, TENANT_FIELDS};
use crate::model::{AdminRecord, Slug, Tenant};

// Admins

/// Whether at least one active platform admin exists.
pub async fn has_active_admin(pool: &AnyPool) -> ApiResult<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM admins WHERE status = 'active'")
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// Whether an admin (of any status) has this username.
pub async fn admin_exists(pool: &AnyPool, username: &str) -> ApiResult<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM admins WHERE username = $1")
        .bind(username)
        .fetch_one(pool)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// How to find an admin.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AdminKey<'a> {
    /// By normalized username.
    Username(&'a str),
    /// By id.
    Id(&'a str),
}

/// The active admin found by `key`, with its password hash.
pub(crate) async fn active_admin(
    pool: &AnyPool,
    key: AdminKey<'_>,
) -> ApiResult<Option<AdminRecord>> {
    let (column, value) = match key {
        AdminKey::Username(name) => ("username", name),
        AdminKey::Id(id) if is_uuid(id) => ("id", id),
        AdminKey::Id(_) => return Ok(None),
    };
    let row = sqlx::query(&format!(
        "SELECT id, username, password_hash FROM admins WHERE {column} = $1 AND status = 'active'"
    ))
    .bind(value)
    .fetch_optional(pool)
    .await?;
    Ok(row
        .map(|r| -> Result<AdminRecord, sqlx::Error> {
            Ok(AdminRecord {
                id: r.try_get("id")?,
                username: r.try_get("username")?,
                password_hash: r.try_get("password_hash")?,
            })
        })
        .transpose()?)
}

/// The active admin with this id.
pub async fn active_admin_by_id(pool: &AnyPool, id: &str) -> ApiResult<Option<AdminIdentity>> {
    Ok(active_admin(pool, AdminKey::Id(id))
        .await?
        .map(|a| AdminIdentity {
            id: a.id,
            username: a.username,
        }))
}

/// Inserts an active admin unless the username is taken; `true` when inserted, with its
/// `cdx.admin.created` event recorded in the same transaction.
async fn insert_admin(
    conn: &mut AnyConnection,
    admin: &AdminIdentity,
    password_hash: &str,
    actor: &Actor,
) -> ApiResult<bool> {
    let now = Timestamp::now().millis();
    let inserted = sqlx::query(
        "INSERT INTO admins (id, username, password_hash, status, created_at, updated_at) \
         VALUES ($1, $2, $3, 'active', $4, $4) ON CONFLICT (username) DO NOTHING",
    )
    .bind(&admin.id)
    .bind(&admin.username)
    .bind(password_hash)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        record(conn, &events::admin_created(admin, actor)).await?;
    }
    Ok(inserted == 1)
}

/// Creates an active admin; a taken username answers 409.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_admin(
    db: &Db,
    username: &str,
    password_hash: &str,
    actor: &Actor,
) -> ApiResult<AdminIdentity> {
    let admin = AdminIdentity {
        id: new_id(),
        username: username.to_string(),
    };
    let mut tx = db.begin().await?;
    if !insert_admin(&mut tx, &admin, password_hash, actor).await? {
        return Err(ApiError::conflict(
            "username_taken",
            "an admin with this username already exists",
        ));
    }
    tx.commit().await?;
    Ok(admin)
}

/// Replaces an admin's password hash. A change the admin made (`changed_by`) is recorded
/// as `cdx.admin.password_changed`; a rehash with current parameters is not an event.
pub async fn set_admin_password_hash(
    db: &Db,
    id: &str,
    password_hash: &str,
    changed_by: Option<&Actor>,
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    sqlx::query("UPDATE admins SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(password_hash)
        .bind(Timestamp::now().millis())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if let Some(actor) = changed_by {
        record(&mut tx, &events::admin_password_changed(id, actor)).await?;
    }
    tx.commit().await?;
    Ok(())
}

// Demo seed

/// What [`seed`] makes sure exists.
#[derive(Debug)]
pub struct Seed<'a> {
    /// Admin username and password hash, when the admin does not exist yet.
    pub admin: Option<(&'a str, &'a str)>,
    /// Client name.
    pub client_name: &'a str,
    /// Tenant slug and name.
    pub tenant: (&'a Slug, &'a str),
}

/// Creates whatever of the seed is missing, in one transaction, recording an event for each
/// creation; existing rows are left as they are. Returns the tenant.
#[tracing::instrument(skip_all, err)]
pub async fn seed(db: &Db, seed: &Seed<'_>, actor: &Actor) -> ApiResult<Tenant> {
    let mut tx = db.begin().await?;
    if let Some((username, hash)) = seed.admin {
        let admin = AdminIdentity {
            id: new_id(),
            username: username.to_string(),
        };
        insert_admin(&mut tx, &admin, hash, actor).await?;
    }

    let candidate = new_client(seed.client_name);
    let inserted = sqlx::query(
        "INSERT INTO clients (id, name, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
    )
    .bind(&candidate.id)
    .bind(&candidate.name)
    .bind(candidate.created_at.millis())
    .bind(candidate.updated_at.millis())
    .bind(candidate.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        super::aggregates::ensure_summary(&mut tx, &candidate.id, candidate.created_at.millis())
            .await?;
        let event = events::client(events::CLIENT_CREATED, &candidate, CLIENT_FIELDS, actor);
        record(&mut tx, &event).await?;
    }
    let client_id: String = sqlx::query("SELECT id FROM clients WHERE name = $1")
        .bind(seed.client_name)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;

    let (slug, name) = seed.tenant;
    let candidate = build_tenant(&NewTenant {
        slug: slug.clone(),
        name: name.to_string(),
        client_id,
    });
    let sql = format!("{INSERT_TENANT} ON CONFLICT (slug) DO NOTHING");
    let inserted = bind_tenant(&sql, &candidate)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if inserted == 1 {
        let event = events::tenant(events::TENANT_CREATED, &candidate, TENANT_FIELDS, actor);
        record(&mut tx, &event).await?;
    }
    let tenant = tenant_by_key(&mut *tx, slug.as_str())
        .await?
        .ok_or_else(|| ApiError::internal("seeding", "the seeded tenant vanished"))?;
    tx.commit().await?;
    Ok(tenant)
}
