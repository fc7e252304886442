//! Custom field definitions.

use platform::caller::TenantScope;
use platform::ids::Timestamp;
use platform::ApiResult;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::model::{Entity, FieldDefinition, FieldKind};

const FIELD_COLUMNS: &str =
    "id, entity, name, label, kind, options, required, created_at, updated_at, version";

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
