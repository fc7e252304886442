//! Pipelines and their stages.
//!
//! Every tenant has one default pipeline ("Sales" with [`DEFAULT_STAGES`]), created the first
//! time the tenant needs one: `INSERT ... ON CONFLICT DO NOTHING` against the unique partial
//! index `pipelines_default`, then a re-read, so concurrent first requests create it once.
//!
//! Deals and pipeline changes meet at the stage rows: a deal entering a stage first "touches"
//! that row (a no-op `UPDATE`, which on PostgreSQL holds the row lock until commit), and a
//! pipeline change touches or deletes the stages it removes before it counts their deals. So a
//! stage is never removed while a deal is being moved into it, on either backend.

use platform::caller::TenantScope;
use platform::db::Db;
use platform::error::on_unique;
use platform::events::{record, Actor};
use platform::ids::{is_uuid, new_id, Timestamp};
use platform::sql::check_version;
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde_json::json;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use crate::events;
use crate::model::{
    invalid_fields, sort_key, Pipeline, Stage, StageKind, DEFAULT_PIPELINE, DEFAULT_STAGES,
};

/// Most pipelines one tenant may have.
pub const MAX_PIPELINES: i64 = 50;
/// Most stages in one pipeline.
pub const MAX_STAGES: usize = 30;

/// A pipeline with its stages (`p` pipelines, `s` stages), one row per stage.
const PIPELINE_SELECT: &str = "SELECT p.id, p.name, p.is_default, p.created_at, p.updated_at, \
    p.version, s.id AS stage_id, s.name AS stage_name, s.position, s.kind \
    FROM pipelines p LEFT JOIN stages s ON s.tenant_id = p.tenant_id AND s.pipeline_id = p.id";
/// Pipelines in the order the API lists them, each with its stages in order.
const PIPELINE_ORDER: &str = " ORDER BY p.is_default DESC, p.created_at, p.id, s.position, s.id";
/// Columns of a stage.
const STAGE_COLUMNS: &str = "id, name, position, kind";

/// The fields a pipeline is created with, as `changed` of its creation event.
const PIPELINE_FIELDS: &[&str] = &["name", "is_default", "stages"];

/// Maps a clash of pipeline names (unique per tenant) to 409 `name_taken`.
fn name_taken(e: sqlx::Error) -> ApiError {
    on_unique("name_taken", "a pipeline with this name already exists")(e)
}

/// A stage from a row of [`STAGE_COLUMNS`].
pub(crate) fn stage_from_row(row: &AnyRow) -> Result<Stage, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Stage {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        position: row.try_get("position")?,
        kind: StageKind::parse(&kind).unwrap_or(StageKind::Open),
    })
}

/// Folds the rows of [`PIPELINE_SELECT`] (ordered by pipeline, then stage) into pipelines.
fn pipelines_from_rows(rows: &[AnyRow]) -> Result<Vec<Pipeline>, sqlx::Error> {
    let mut out: Vec<Pipeline> = Vec::new();
    for row in rows {
        let id: String = row.try_get("id")?;
        if out.last().map(|p| &p.id) != Some(&id) {
            out.push(Pipeline {
                id,
                name: row.try_get("name")?,
                is_default: row.try_get::<i64, _>("is_default")? != 0,
                stages: Vec::new(),
                created_at: Timestamp(row.try_get("created_at")?),
                updated_at: Timestamp(row.try_get("updated_at")?),
                version: row.try_get("version")?,
            });
        }
        let stage_id: Option<String> = row.try_get("stage_id")?;
        if let (Some(stage_id), Some(pipeline)) = (stage_id, out.last_mut()) {
            let kind: String = row.try_get("kind")?;
            pipeline.stages.push(Stage {
                id: stage_id,
                name: row.try_get("stage_name")?,
                position: row.try_get("position")?,
                kind: StageKind::parse(&kind).unwrap_or(StageKind::Open),
            });
        }
    }
    Ok(out)
}

/// Every pipeline of the scope's tenant with its ordered stages: the default first, then by
/// creation (at most [`MAX_PIPELINES`]).
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_pipelines<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
) -> ApiResult<Vec<Pipeline>> {
    let rows = sqlx::query(&format!(
        "{PIPELINE_SELECT} WHERE p.tenant_id = $1{PIPELINE_ORDER}"
    ))
    .bind(scope.tenant_id())
    .fetch_all(ex)
    .await?;
    Ok(pipelines_from_rows(&rows)?)
}

/// The pipeline with this id in the scope's tenant, with its ordered stages.
pub async fn pipeline_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<Pipeline>> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let rows = sqlx::query(&format!(
        "{PIPELINE_SELECT} WHERE p.tenant_id = $1 AND p.id = $2{PIPELINE_ORDER}"
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .fetch_all(ex)
    .await?;
    Ok(pipelines_from_rows(&rows)?.into_iter().next())
}

/// Whether `id` names a pipeline of the scope's tenant.
pub(crate) async fn pipeline_exists(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<bool> {
    if !is_uuid(id) {
        return Ok(false);
    }
    Ok(
        sqlx::query("SELECT 1 FROM pipelines WHERE tenant_id = $1 AND id = $2")
            .bind(scope.tenant_id())
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .is_some(),
    )
}

/// The id of the tenant's default pipeline, if it has one yet.
async fn default_pipeline_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
) -> ApiResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT id FROM pipelines WHERE tenant_id = $1 AND is_default = 1")
            .bind(scope.tenant_id())
            .fetch_optional(ex)
            .await?,
    )
}

/// The id of the tenant's default pipeline, creating it (inside the caller's transaction,
/// recording `crm.pipeline.created`) when the tenant has none yet. Concurrent callers create
/// it once: the losers' inserts do nothing and they read the winner's.
pub(crate) async fn ensure_default_pipeline(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    actor: &Actor,
) -> ApiResult<String> {
    if let Some(id) = default_pipeline_id(&mut *conn, scope).await? {
        return Ok(id);
    }
    let id = new_id();
    let now = Timestamp::now();
    let inserted = sqlx::query(
        "INSERT INTO pipelines (tenant_id, id, name, is_default, created_at, updated_at, version) \
         VALUES ($1, $2, $3, 1, $4, $5, 1) ON CONFLICT DO NOTHING",
    )
    .bind(scope.tenant_id())
    .bind(&id)
    .bind(DEFAULT_PIPELINE)
    .bind(now.millis())
    .bind(now.millis())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        let stages: Vec<(String, StageKind)> = DEFAULT_STAGES
            .iter()
            .map(|(name, kind)| (name.to_string(), *kind))
            .collect();
        for (position, (name, kind)) in stages.iter().enumerate() {
            insert_stage(conn, scope, &id, &new_id(), name, position, *kind).await?;
        }
        record(
            conn,
            &events::changed(
                "pipeline",
                "created",
                scope.tenant_id(),
                &id,
                actor,
                PIPELINE_FIELDS,
            ),
        )
        .await?;
        return Ok(id);
    }
    // Someone else created it first (their commit is visible to this new statement).
    if let Some(id) = default_pipeline_id(&mut *conn, scope).await? {
        return Ok(id);
    }
    // Pipelines exist but none is the default (one holds the default's name): the oldest
    // becomes the default.
    sqlx::query(
        "UPDATE pipelines SET is_default = 1, updated_at = $1, version = version + 1 \
         WHERE tenant_id = $2 AND id = (SELECT id FROM pipelines WHERE tenant_id = $3 \
         ORDER BY created_at, id LIMIT 1)",
    )
    .bind(now.millis())
    .bind(scope.tenant_id())
    .bind(scope.tenant_id())
    .execute(&mut *conn)
    .await?;
    default_pipeline_id(&mut *conn, scope)
        .await?
        .ok_or_else(|| ApiError::conflict("pipeline_busy", "the pipelines changed; retry"))
}

/// The id of the tenant's default pipeline, created (and committed, with its event) on first
/// use. Reads only, once it exists; the caller announces after it returns.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn default_pipeline(db: &Db, scope: &TenantScope, actor: &Actor) -> ApiResult<String> {
    if let Some(id) = default_pipeline_id(db.reader(), scope).await? {
        return Ok(id);
    }
    let mut tx = db.begin().await?;
    let id = ensure_default_pipeline(&mut tx, scope, actor).await?;
    tx.commit().await?;
    Ok(id)
}

/// Inserts one stage of a pipeline at `position`.
async fn insert_stage(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    pipeline_id: &str,
    id: &str,
    name: &str,
    position: usize,
    kind: StageKind,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO stages (tenant_id, id, pipeline_id, name, position, kind) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(scope.tenant_id())
    .bind(id)
    .bind(pipeline_id)
    .bind(name)
    .bind(position as i64)
    .bind(kind.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the stage `id` of `pipeline_id` for a deal about to enter it: touches its row (so a
/// concurrent pipeline change removing it waits for this transaction, or this one finds it
/// gone) and answers it, or `None` when the pipeline has no such stage.
pub(crate) async fn take_stage(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    pipeline_id: &str,
    id: &str,
) -> ApiResult<Option<Stage>> {
    if !is_uuid(id) {
        return Ok(None);
    }
    let row = sqlx::query(&format!(
        "UPDATE stages SET position = position \
         WHERE tenant_id = $1 AND pipeline_id = $2 AND id = $3 RETURNING {STAGE_COLUMNS}"
    ))
    .bind(scope.tenant_id())
    .bind(pipeline_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(stage_from_row).transpose()?)
}

/// Like [`take_stage`] for the first stage (by position) of `kind` in the pipeline.
pub(crate) async fn take_first_stage(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    pipeline_id: &str,
    kind: StageKind,
) -> ApiResult<Option<Stage>> {
    let row = sqlx::query(&format!(
        "UPDATE stages SET position = position WHERE tenant_id = $1 AND id = \
         (SELECT id FROM stages WHERE tenant_id = $2 AND pipeline_id = $3 AND kind = $4 \
         ORDER BY position, id LIMIT 1) RETURNING {STAGE_COLUMNS}"
    ))
    .bind(scope.tenant_id())
    .bind(scope.tenant_id())
    .bind(pipeline_id)
    .bind(kind.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(stage_from_row).transpose()?)
}

/// One stage of a pipeline as an admin writes it (validated text; kept stages name their id).
#[derive(Debug, Clone)]
pub struct StageInput {
    /// The existing stage this entry keeps; `None` adds a stage.
    pub id: Option<String>,
    /// Name (unique in the pipeline, case-insensitively).
    pub name: String,
    /// Kind; `None` keeps a kept stage's kind and makes a new stage `open`.
    pub kind: Option<StageKind>,
}

/// Checks a complete ordered stage list: 1..=[`MAX_STAGES`] stages, names unique within the
/// pipeline, ids naming distinct stages of `current` (the pipeline's present stages), and at
/// least one open stage. Answers the resolved kind of each entry.
fn check_stages(stages: &[StageInput], current: &[Stage]) -> ApiResult<Vec<StageKind>> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(
            Invalid::new("stages", format!("a pipeline has 1 to {MAX_STAGES} stages")).into(),
        );
    }
    let mut errors = Vec::new();
    let mut kinds = Vec::with_capacity(stages.len());
    for (i, stage) in stages.iter().enumerate() {
        let key = sort_key(&stage.name);
        if stages[..i].iter().any(|s| sort_key(&s.name) == key) {
            errors.push(Invalid::new(
                format!("stages[{i}].name"),
                "is already the name of another stage of this pipeline",
            ));
        }
        let kept = match &stage.id {
            Some(id) => {
                if stages[..i].iter().any(|s| s.id.as_ref() == Some(id)) {
                    errors.push(Invalid::new(
                        format!("stages[{i}].id"),
                        "names a stage already listed",
                    ));
                }
                let found = current.iter().find(|s| &s.id == id);
                if found.is_none() {
                    errors.push(Invalid::new(
                        format!("stages[{i}].id"),
                        "no such stage in this pipeline",
                    ));
                }
                found
            }
            None => None,
        };
        kinds.push(
            stage
                .kind
                .or(kept.map(|s| s.kind))
                .unwrap_or(StageKind::Open),
        );
    }
    if !kinds.contains(&StageKind::Open) {
        errors.push(Invalid::new("stages", "at least one stage must be open"));
    }
    if errors.is_empty() {
        Ok(kinds)
    } else {
        Err(invalid_fields(errors))
    }
}

/// A new pipeline (validated texts; the stage list is checked here).
#[derive(Debug, Clone)]
pub struct NewPipeline {
    /// Name, unique in the tenant.
    pub name: String,
    /// Stages in order (without ids).
    pub stages: Vec<StageInput>,
}

/// Creates a pipeline (never the default: the tenant's default is created first if it has
/// none yet) and records `crm.pipeline.created`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_pipeline(
    db: &Db,
    scope: &TenantScope,
    new: NewPipeline,
    actor: &Actor,
) -> ApiResult<Pipeline> {
    let kinds = check_stages(&new.stages, &[])?;
    if new.stages.iter().any(|s| s.id.is_some()) {
        return Err(Invalid::new("stages", "a new pipeline's stages have no ids").into());
    }
    let mut tx = db.begin().await?;
    ensure_default_pipeline(&mut tx, scope, actor).await?;
    // Touching the default's row serializes the tenant's pipeline creations, so the limit
    // below holds under concurrency too.
    sqlx::query("UPDATE pipelines SET is_default = 1 WHERE tenant_id = $1 AND is_default = 1")
        .bind(scope.tenant_id())
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipelines WHERE tenant_id = $1")
        .bind(scope.tenant_id())
        .fetch_one(&mut *tx)
        .await?;
    if count >= MAX_PIPELINES {
        return Err(ApiError::conflict(
            "too_many_pipelines",
            format!("a tenant has at most {MAX_PIPELINES} pipelines"),
        ));
    }
    let id = new_id();
    let now = Timestamp::now();
    sqlx::query(
        "INSERT INTO pipelines (tenant_id, id, name, is_default, created_at, updated_at, version) \
         VALUES ($1, $2, $3, 0, $4, $5, 1)",
    )
    .bind(scope.tenant_id())
    .bind(&id)
    .bind(&new.name)
    .bind(now.millis())
    .bind(now.millis())
    .execute(&mut *tx)
    .await
    .map_err(name_taken)?;
    for (position, (stage, kind)) in new.stages.iter().zip(kinds).enumerate() {
        insert_stage(&mut tx, scope, &id, &new_id(), &stage.name, position, kind).await?;
    }
    record(
        &mut tx,
        &events::changed(
            "pipeline",
            "created",
            scope.tenant_id(),
            &id,
            actor,
            &["name", "stages"],
        ),
    )
    .await?;
    let created = pipeline_by_id(&mut *tx, scope, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    tx.commit().await?;
    Ok(created)
}

/// Changes to a pipeline (validated texts).
#[derive(Debug, Clone, Default)]
pub struct PipelineChanges {
    /// New name.
    pub name: Option<String>,
    /// Make this the tenant's default pipeline.
    pub make_default: bool,
    /// The complete new ordered stage list: entries with an id keep that stage, entries
    /// without add one, stages left out are removed (refused while deals are in them).
    pub stages: Option<Vec<StageInput>>,
}

/// Refuses to remove a stage that deals are in (409 `stage_in_use`).
async fn remove_stage(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    stage: &Stage,
) -> ApiResult<()> {
    // Delete first: the row lock makes a deal moving into this stage either finish before
    // the count below, or find the stage gone.
    sqlx::query("DELETE FROM stages WHERE tenant_id = $1 AND id = $2")
        .bind(scope.tenant_id())
        .bind(&stage.id)
        .execute(&mut *conn)
        .await?;
    let deals: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deals WHERE tenant_id = $1 AND stage_id = $2")
            .bind(scope.tenant_id())
            .bind(&stage.id)
            .fetch_one(&mut *conn)
            .await?;
    if deals > 0 {
        return Err(ApiError::conflict(
            "stage_in_use",
            format!(
                "stage \"{}\" still has {deals} deal(s); move its deals first",
                stage.name
            ),
        )
        .with_details(json!({ "stage_id": stage.id, "deals": deals })));
    }
    Ok(())
}

/// Gives the deals in a stage whose kind changed the status that kind means: closing sets
/// `closed_at` (when not closed yet), reopening clears it and the close reason. Records
/// `crm.deal.updated` (changed `status`, with the deal's status, value and currency) for
/// each. Answers how many deals changed.
async fn restatus_deals(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    stage_id: &str,
    kind: StageKind,
    now: Timestamp,
    actor: &Actor,
) -> ApiResult<u64> {
    let affected = sqlx::query(
        "SELECT id, value, currency FROM deals \
         WHERE tenant_id = $1 AND stage_id = $2 AND status <> $3 ORDER BY id",
    )
    .bind(scope.tenant_id())
    .bind(stage_id)
    .bind(kind.as_str())
    .fetch_all(&mut *conn)
    .await?;
    for row in &affected {
        let deal_id: String = row.try_get("id")?;
        let value: i64 = row.try_get("value")?;
        let currency: String = row.try_get("currency")?;
        record(
            &mut *conn,
            &events::record_event(
                "deal",
                "updated",
                scope.tenant_id(),
                &deal_id,
                actor,
                json!({
                    "changed": ["status"],
                    "status": kind.as_str(),
                    "value": value,
                    "currency": currency,
                }),
            ),
        )
        .await?;
    }
    let query = if kind == StageKind::Open {
        sqlx::query(
            "UPDATE deals SET status = $1, closed_at = NULL, close_reason = NULL, \
             updated_at = $2, version = version + 1 \
             WHERE tenant_id = $3 AND stage_id = $4 AND status <> $5",
        )
    } else {
        sqlx::query(
            "UPDATE deals SET status = $1, closed_at = COALESCE(closed_at, $2), \
             updated_at = $2, version = version + 1 \
             WHERE tenant_id = $3 AND stage_id = $4 AND status <> $5",
        )
    };
    Ok(query
        .bind(kind.as_str())
        .bind(now.millis())
        .bind(scope.tenant_id())
        .bind(stage_id)
        .bind(kind.as_str())
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Applies `changes` when the pipeline is still at `expected` and records
/// `crm.pipeline.updated` (changed fields and the ids of added, changed and removed stages;
/// also for the previous default when the default moves). No change, no event.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_pipeline(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: PipelineChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Pipeline> {
    let mut tx = db.begin().await?;
    let current = pipeline_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    check_version(expected, current.version)?;
    let mut changed: Vec<&str> = Vec::new();
    let name = changes.name.unwrap_or_else(|| current.name.clone());
    if name != current.name {
        changed.push("name");
    }
    let make_default = changes.make_default && !current.is_default;
    if make_default {
        changed.push("is_default");
    }
    // The stage plan: positions, kinds, and which stages are added, changed or removed.
    let mut added: Vec<(usize, String, StageKind)> = Vec::new();
    let mut kept: Vec<(usize, &Stage, String, StageKind)> = Vec::new();
    let mut removed: Vec<&Stage> = Vec::new();
    if let Some(stages) = &changes.stages {
        let kinds = check_stages(stages, &current.stages)?;
        for (position, (stage, kind)) in stages.iter().zip(kinds).enumerate() {
            match stage
                .id
                .as_ref()
                .and_then(|id| current.stages.iter().find(|s| &s.id == id))
            {
                Some(old) => {
                    if old.name != stage.name || old.position != position as i64 || old.kind != kind
                    {
                        kept.push((position, old, stage.name.clone(), kind));
                    }
                }
                None => added.push((position, stage.name.clone(), kind)),
            }
        }
        removed = current
            .stages
            .iter()
            .filter(|s| !stages.iter().any(|n| n.id.as_ref() == Some(&s.id)))
            .collect();
        if !(added.is_empty() && kept.is_empty() && removed.is_empty()) {
            changed.push("stages");
        }
    }
    if changed.is_empty() {
        return Ok(current);
    }
    let now = Timestamp::now();
    // The conditional bump comes first: it holds the pipeline's row for the stage changes.
    let updated = sqlx::query(
        "UPDATE pipelines SET name = $1, updated_at = $2, version = $3 \
         WHERE tenant_id = $4 AND id = $5 AND version = $6",
    )
    .bind(&name)
    .bind(now.millis())
    .bind(current.version + 1)
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await
    .map_err(name_taken)?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "pipelines", "pipeline", id).await?);
    }
    if make_default {
        let previous = default_pipeline_id(&mut *tx, scope).await?;
        sqlx::query(
            "UPDATE pipelines SET is_default = 0, updated_at = $1, version = version + 1 \
             WHERE tenant_id = $2 AND is_default = 1",
        )
        .bind(now.millis())
        .bind(scope.tenant_id())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE pipelines SET is_default = 1 WHERE tenant_id = $1 AND id = $2")
            .bind(scope.tenant_id())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(on_unique(
                "default_changed",
                "another pipeline became the default at the same time; retry",
            ))?;
        if let Some(previous) = previous {
            record(
                &mut tx,
                &events::changed(
                    "pipeline",
                    "updated",
                    scope.tenant_id(),
                    &previous,
                    actor,
                    &["is_default"],
                ),
            )
            .await?;
        }
    }
    if changed.contains(&"stages") {
        // All stage rows first, before any deal row: a deal moving between two of them
        // (stage row, then deal row) can then never wait on this transaction in a cycle.
        sqlx::query(
            "UPDATE stages SET position = position WHERE tenant_id = $1 AND pipeline_id = $2",
        )
        .bind(scope.tenant_id())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    for stage in &removed {
        remove_stage(&mut tx, scope, stage).await?;
    }
    let mut restatused = 0;
    for (position, old, name, kind) in &kept {
        sqlx::query(
            "UPDATE stages SET name = $1, position = $2, kind = $3 \
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(name)
        .bind(*position as i64)
        .bind(kind.as_str())
        .bind(scope.tenant_id())
        .bind(&old.id)
        .execute(&mut *tx)
        .await?;
        if old.kind != *kind {
            restatused += restatus_deals(&mut tx, scope, &old.id, *kind, now, actor).await?;
        }
    }
    let mut added_ids = Vec::new();
    for (position, name, kind) in &added {
        let stage_id = new_id();
        insert_stage(&mut tx, scope, id, &stage_id, name, *position, *kind).await?;
        added_ids.push(stage_id);
    }
    let mut data = json!({ "changed": changed });
    if changed.contains(&"stages") {
        data["stages"] = json!({
            "added": added_ids,
            "changed": kept.iter().map(|(_, s, _, _)| &s.id).collect::<Vec<_>>(),
            "removed": removed.iter().map(|s| &s.id).collect::<Vec<_>>(),
            "deals_restatused": restatused,
        });
    }
    record(
        &mut tx,
        &events::record_event("pipeline", "updated", scope.tenant_id(), id, actor, data),
    )
    .await?;
    let updated = pipeline_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    tx.commit().await?;
    Ok(updated)
}

/// Deletes a pipeline and its stages and records `crm.pipeline.deleted`. Refused (409) for
/// the default pipeline (`default_pipeline`) and while deals are in it (`pipeline_in_use`).
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn delete_pipeline(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<()> {
    let mut tx = db.begin().await?;
    let current = pipeline_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    check_version(expected, current.version)?;
    if current.is_default {
        return Err(ApiError::conflict(
            "default_pipeline",
            "the default pipeline cannot be deleted; make another pipeline the default first",
        ));
    }
    // Conditional, and first: a concurrent change (making it the default) wins or waits.
    let deleted = sqlx::query(
        "DELETE FROM pipelines WHERE tenant_id = $1 AND id = $2 AND version = $3 \
         AND is_default = 0",
    )
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if deleted == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "pipelines", "pipeline", id).await?);
    }
    // The stages go before the count, for the same reason as in `remove_stage`.
    sqlx::query("DELETE FROM stages WHERE tenant_id = $1 AND pipeline_id = $2")
        .bind(scope.tenant_id())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let deals: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM deals WHERE tenant_id = $1 AND pipeline_id = $2")
            .bind(scope.tenant_id())
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if deals > 0 {
        return Err(ApiError::conflict(
            "pipeline_in_use",
            format!("the pipeline still has {deals} deal(s); move or delete them first"),
        )
        .with_details(json!({ "deals": deals })));
    }
    record(
        &mut tx,
        &events::changed("pipeline", "deleted", scope.tenant_id(), id, actor, &[]),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: Option<&str>, name: &str, kind: Option<StageKind>) -> StageInput {
        StageInput {
            id: id.map(str::to_string),
            name: name.into(),
            kind,
        }
    }

    #[test]
    fn stage_lists_are_checked() {
        let current = vec![Stage {
            id: new_id(),
            name: "Won".into(),
            position: 0,
            kind: StageKind::Won,
        }];
        let kinds = check_stages(
            &[
                input(None, "Open", None),
                input(Some(&current[0].id), "Done", None),
            ],
            &current,
        )
        .expect("valid");
        assert_eq!(kinds, vec![StageKind::Open, StageKind::Won]);
        assert!(check_stages(&[], &current).is_err());
        assert!(check_stages(&[input(None, "Won", Some(StageKind::Won))], &current).is_err());
        assert!(check_stages(&[input(None, "A", None), input(None, "a", None)], &current).is_err());
        assert!(check_stages(&[input(Some(&new_id()), "A", None)], &current).is_err());
        let many: Vec<StageInput> = (0..=MAX_STAGES)
            .map(|i| input(None, &format!("S{i}"), None))
            .collect();
        assert!(check_stages(&many, &current).is_err());
    }
}
