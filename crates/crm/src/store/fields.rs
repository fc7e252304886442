//! Custom field definitions: per tenant and record type, the keys records may carry in
//! `custom`, with their type and whether they are required.

use platform::caller::TenantScope;
use platform::db::{escape_like, Db};
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::ids::{new_id, Timestamp};
use platform::sql::check_version;
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde_json::{json, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::custom_from_text;
use crate::events;
use crate::model::{Entity, FieldDefinition, FieldKind, MAX_CUSTOM_FIELDS};

const FIELD_COLUMNS: &str =
    "id, entity, name, label, kind, options, required, created_at, updated_at, version";

/// The fields a definition is created with, as `changed` of its creation event.
const DEFINITION_FIELDS: &[&str] = &["entity", "name", "label", "kind", "options", "required"];

/// Records whose stored values of a deleted field are cleared per statement batch.
const CLEAR_BATCH: i64 = 500;

pub(crate) fn field_from_row(row: &AnyRow) -> Result<FieldDefinition, sqlx::Error> {
    let entity: String = row.try_get("entity")?;
    let kind: String = row.try_get("kind")?;
    let options: String = row.try_get("options")?;
    Ok(FieldDefinition {
        id: row.try_get("id")?,
        entity: Entity::parse(&entity).unwrap_or(Entity::Customer),
        name: row.try_get("name")?,
        label: row.try_get("label")?,
        kind: FieldKind::parse(&kind).unwrap_or(FieldKind::Text),
        options: serde_json::from_str(&options).unwrap_or_default(),
        required: row.try_get::<i64, _>("required")? != 0,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

/// The tenant's custom field definitions for `entity`, by name.
pub async fn field_definitions<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    entity: Entity,
) -> ApiResult<Vec<FieldDefinition>> {
    let rows = sqlx::query(&format!(
        "SELECT {FIELD_COLUMNS} FROM field_definitions WHERE tenant_id = $1 AND entity = $2 \
         ORDER BY name"
    ))
    .bind(scope.tenant_id())
    .bind(entity.as_str())
    .fetch_all(ex)
    .await?;
    Ok(rows.iter().map(field_from_row).collect::<Result<_, _>>()?)
}

/// The tenant's definitions of `entity`, or of every entity (by entity, then name). Not
/// paged: at most [`MAX_CUSTOM_FIELDS`] per entity exist.
pub async fn list_fields(
    pool: &AnyPool,
    scope: &TenantScope,
    entity: Option<Entity>,
) -> ApiResult<Vec<FieldDefinition>> {
    match entity {
        Some(entity) => field_definitions(pool, scope, entity).await,
        None => {
            let rows = sqlx::query(&format!(
                "SELECT {FIELD_COLUMNS} FROM field_definitions WHERE tenant_id = $1 \
                 ORDER BY entity, name"
            ))
            .bind(scope.tenant_id())
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(field_from_row).collect::<Result<_, _>>()?)
        }
    }
}

/// The definition with this id in the scope's tenant.
pub async fn field_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<FieldDefinition>> {
    super::row_by_id(
        ex,
        scope,
        "field_definitions",
        FIELD_COLUMNS,
        id,
        field_from_row,
    )
    .await
}

/// A new definition (validated: name, label, and options that fit the kind).
#[derive(Debug, Clone)]
pub struct NewField {
    /// Record type.
    pub entity: Entity,
    /// Key in `custom`.
    pub name: String,
    /// Label.
    pub label: String,
    /// Type.
    pub kind: FieldKind,
    /// Options of a `select` field (empty otherwise).
    pub options: Vec<String>,
    /// Whether every record must have a value.
    pub required: bool,
}

fn field_exists(e: sqlx::Error) -> ApiError {
    on_unique(
        "field_exists",
        "a custom field with this name already exists for this record type",
    )(e)
}

fn options_text(options: &[String]) -> String {
    serde_json::to_string(options).unwrap_or_else(|_| "[]".into())
}

/// Creates a definition and records `crm.field.created`. Refuses a duplicate name (409
/// `field_exists`) and more than [`MAX_CUSTOM_FIELDS`] definitions per entity (422).
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_field(
    db: &Db,
    scope: &TenantScope,
    new: NewField,
    actor: &Actor,
) -> ApiResult<FieldDefinition> {
    let now = Timestamp::now();
    let field = FieldDefinition {
        id: new_id(),
        entity: new.entity,
        name: new.name,
        label: new.label,
        kind: new.kind,
        options: new.options,
        required: new.required,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let mut tx = db.begin().await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM field_definitions WHERE tenant_id = $1 AND entity = $2",
    )
    .bind(scope.tenant_id())
    .bind(field.entity.as_str())
    .fetch_one(&mut *tx)
    .await?;
    if count >= MAX_CUSTOM_FIELDS as i64 {
        return Err(Invalid::new(
            "entity",
            format!("at most {MAX_CUSTOM_FIELDS} custom fields are allowed per record type"),
        )
        .into());
    }
    sqlx::query(
        "INSERT INTO field_definitions (tenant_id, id, entity, name, label, kind, options, \
         required, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(scope.tenant_id())
    .bind(&field.id)
    .bind(field.entity.as_str())
    .bind(&field.name)
    .bind(&field.label)
    .bind(field.kind.as_str())
    .bind(options_text(&field.options))
    .bind(i64::from(field.required))
    .bind(field.created_at.millis())
    .bind(field.updated_at.millis())
    .bind(field.version)
    .execute(&mut *tx)
    .await
    .map_err(field_exists)?;
    record(
        &mut tx,
        &events::changed(
            "field",
            "created",
            scope.tenant_id(),
            &field.id,
            actor,
            DEFINITION_FIELDS,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(field)
}

/// Changes to a definition (validated); the entity, name and kind never change.
#[derive(Debug, Clone, Default)]
pub struct FieldChanges {
    /// Label.
    pub label: Option<String>,
    /// The whole new option list (only for `select` fields).
    pub options: Option<Vec<String>>,
    /// Whether every record must have a value.
    pub required: Option<bool>,
}

/// Applies `changes` when the definition is still at `expected` (if given) and records
/// `crm.field.updated` naming the fields that really changed. No change, no event.
///
/// Stored values are not rewritten: a field made required, or a value no longer among a
/// select field's options, is enforced on the next write of that value or record.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_field(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: FieldChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<FieldDefinition> {
    let mut tx = db.begin().await?;
    let current = field_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("field"))?;
    check_version(expected, current.version)?;
    if changes.options.is_some() && current.kind != FieldKind::Select {
        return Err(Invalid::new("options", "only select fields have options").into());
    }
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    apply_changes!(changes, next, changed; label, options, required);
    if changed.is_empty() {
        return Ok(current);
    }
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE field_definitions SET label = $1, options = $2, required = $3, updated_at = $4, \
         version = $5 WHERE tenant_id = $6 AND id = $7 AND version = $8",
    )
    .bind(&next.label)
    .bind(options_text(&next.options))
    .bind(i64::from(next.required))
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "field_definitions", "field", id).await?);
    }
    record(
        &mut tx,
        &events::changed("field", "updated", scope.tenant_id(), id, actor, &changed),
    )
    .await?;
    tx.commit().await?;
    Ok(next)
}

/// The table holding the records of `entity`.
fn entity_table(entity: Entity) -> &'static str {
    match entity {
        Entity::Customer => "customers",
        Entity::Company => "companies",
        Entity::Deal => "deals",
    }
}

/// Removes key `name` from the `custom` values of every record of `entity` in the scope's
/// tenant, in batches; each record changed gets a new version (its ETag changes with its
/// content). Answers the number of records changed.
async fn clear_values(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    entity: Entity,
    name: &str,
) -> ApiResult<u64> {
    let table = entity_table(entity);
    // Only rows whose JSON text holds the key are read; the JSON decides.
    let pattern = format!("%{}%", escape_like(&format!("\"{name}\":")));
    let now = Timestamp::now().millis();
    let mut after = String::new();
    let mut cleared = 0;
    loop {
        let rows = sqlx::query(&format!(
            "SELECT id, custom, version FROM {table} WHERE tenant_id = $1 AND id > $2 \
             AND custom LIKE $3 ESCAPE '\\' ORDER BY id LIMIT $4"
        ))
        .bind(scope.tenant_id())
        .bind(&after)
        .bind(&pattern)
        .bind(CLEAR_BATCH)
        .fetch_all(&mut *conn)
        .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let mut text: String = row.try_get("custom")?;
            let mut version: i64 = row.try_get("version")?;
            // The update is conditional on the version read, so that a concurrent writer's
            // change is never overwritten: on a lost race the row is read again.
            loop {
                let mut custom = custom_from_text(&text);
                if custom.remove(name).is_none() {
                    break;
                }
                let updated = sqlx::query(&format!(
                    "UPDATE {table} SET custom = $1, version = $2, updated_at = $3 \
                     WHERE tenant_id = $4 AND id = $5 AND version = $6"
                ))
                .bind(Value::Object(custom).to_string())
                .bind(version + 1)
                .bind(now)
                .bind(scope.tenant_id())
                .bind(&id)
                .bind(version)
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if updated > 0 {
                    cleared += 1;
                    break;
                }
                let again = sqlx::query(&format!(
                    "SELECT custom, version FROM {table} WHERE tenant_id = $1 AND id = $2"
                ))
                .bind(scope.tenant_id())
                .bind(&id)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(again) = again else {
                    break;
                };
                text = again.try_get("custom")?;
                version = again.try_get("version")?;
            }
            after = id;
        }
        if (rows.len() as i64) < CLEAR_BATCH {
            return Ok(cleared);
        }
    }
}

/// Deletes a definition and records `crm.field.deleted` (with the number of records
/// changed as `cleared`).
///
/// Its stored values are removed from every record of its entity in the same transaction
/// (those records get a new version), so that no record keeps a value nobody can see the
/// definition of, and a later field of the same name but another type starts empty.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete_field(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let current = field_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("field"))?;
    check_version(expected, current.version)?;
    let deleted = sqlx::query(
        "DELETE FROM field_definitions WHERE tenant_id = $1 AND id = $2 AND version = $3",
    )
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "field_definitions", "field", id).await?);
    }
    let cleared = clear_values(&mut tx, scope, current.entity, &current.name).await?;
    record(
        &mut tx,
        &events::record_event(
            "field",
            "deleted",
            scope.tenant_id(),
            id,
            actor,
            json!({ "changed": [], "entity": current.entity.as_str(), "cleared": cleared }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
