//! Notes and activities (notes, calls, meetings and tasks) on customers, companies and
//! deals, and the customer timeline that merges a customer's notes with the stage changes
//! of its deals.

use super::Removal;
use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::{record, Actor};
use platform::ids::{new_id, Timestamp};
use platform::sql::{check_version, Conditions};
use platform::validate::Invalid;
use platform::{ApiError, ApiResult};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row};

use super::{check_reference, exists, tenant_conditions, Reference, Sort};
use crate::events;
use crate::model::{invalid_fields, Note, NoteKind};

/// Columns of a note.
const NOTE_COLUMNS: &str = "id, kind, body, customer_id, company_id, deal_id, due_on, done, \
    author_id, created_at, updated_at, version";

/// The sorts of the note list: API name, column, numeric. `due` lists only tasks with a
/// due date (the dates compare as `YYYY-MM-DD` text).
pub const NOTE_SORTS: &[(&str, &str, bool)] =
    &[("created", "created_at", true), ("due", "due_on", false)];

/// The fields a note is created with, as `changed` of its creation event.
const NOTE_FIELDS: &[&str] = &[
    "kind",
    "body",
    "customer_id",
    "company_id",
    "deal_id",
    "due_on",
    "done",
];

pub(crate) fn note_from_row(row: &AnyRow) -> Result<Note, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(Note {
        id: row.try_get("id")?,
        kind: NoteKind::parse(&kind).unwrap_or(NoteKind::Note),
        body: row.try_get("body")?,
        customer_id: row.try_get("customer_id")?,
        company_id: row.try_get("company_id")?,
        deal_id: row.try_get("deal_id")?,
        due_on: row.try_get("due_on")?,
        done: row.try_get::<i64, _>("done")? != 0,
        author_id: row.try_get("author_id")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        version: row.try_get("version")?,
    })
}

/// The sort value of a note under `sort` (for its cursor).
pub fn note_sort_value(n: &Note, sort: &Sort) -> String {
    match sort.column {
        "due_on" => n.due_on.clone().unwrap_or_default(),
        _ => n.created_at.millis().to_string(),
    }
}

/// Filters of the note list (all validated).
#[derive(Debug, Clone, Default)]
pub struct NoteFilter {
    /// About this customer.
    pub customer_id: Option<String>,
    /// About this company.
    pub company_id: Option<String>,
    /// About this deal.
    pub deal_id: Option<String>,
    /// Of this kind.
    pub kind: Option<NoteKind>,
    /// Tasks that are (or are not) done.
    pub done: Option<bool>,
    /// Tasks due on or before this date (`YYYY-MM-DD`).
    pub due_before: Option<String>,
}

impl NoteFilter {
    /// Adds the filter's conditions.
    fn apply(&self, c: &mut Conditions) {
        for (column, value) in [
            ("customer_id", &self.customer_id),
            ("company_id", &self.company_id),
            ("deal_id", &self.deal_id),
        ] {
            if let Some(id) = value {
                let p = c.bind(id.as_str());
                c.and(format!("{column} = {p}"));
            }
        }
        if let Some(kind) = self.kind {
            let p = c.bind(kind.as_str());
            c.and(format!("kind = {p}"));
        }
        if self.done.is_some() || self.due_before.is_some() {
            let p = c.bind(NoteKind::Task.as_str());
            c.and(format!("kind = {p}"));
        }
        if let Some(done) = self.done {
            let p = c.bind(i64::from(done));
            c.and(format!("done = {p}"));
        }
        if let Some(date) = &self.due_before {
            let p = c.bind(date.as_str());
            c.and(format!("due_on <= {p}"));
        }
    }
}

/// A page of the scope's notes matching `filter`, in `sort` order after `cursor`; at most
/// `limit` rows. Sorted by due date, only tasks with one are listed.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_notes(
    pool: &AnyPool,
    scope: &TenantScope,
    filter: &NoteFilter,
    sort: &Sort,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<Note>> {
    let mut c = tenant_conditions(scope);
    filter.apply(&mut c);
    if sort.column == "due_on" {
        let p = c.bind(NoteKind::Task.as_str());
        c.and(format!("kind = {p} AND due_on IS NOT NULL"));
    }
    sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT {NOTE_COLUMNS} FROM notes{where_sql}{order} LIMIT {p}",
        order = sort.order_by(""),
    );
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(note_from_row).collect::<Result<_, _>>()?)
}

/// The note with this id in the scope's tenant.
pub async fn note_by_id<'e>(
    ex: impl Executor<'e, Database = Any>,
    scope: &TenantScope,
    id: &str,
) -> ApiResult<Option<Note>> {
    super::row_by_id(ex, scope, "notes", NOTE_COLUMNS, id, note_from_row).await
}

/// Refuses a note that breaks the rules every note keeps: it is about at least one
/// customer, company or deal, and only tasks have a due date or are done.
fn check_note_rules(n: &Note) -> ApiResult<()> {
    let mut errors = Vec::new();
    if n.customer_id.is_none() && n.company_id.is_none() && n.deal_id.is_none() {
        errors.push(Invalid::new(
            "customer_id",
            "a note must be about a customer, a company or a deal (give at least one of \
             customer_id, company_id, deal_id)",
        ));
    }
    if n.kind != NoteKind::Task {
        if n.due_on.is_some() {
            errors.push(Invalid::new("due_on", "only tasks have a due date"));
        }
        if n.done {
            errors.push(Invalid::new("done", "only tasks can be done"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(invalid_fields(errors))
    }
}

/// Checks that the note's links named in `fields` exist in the scope's tenant.
async fn check_links(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    n: &Note,
    fields: &[&str],
) -> ApiResult<()> {
    for (field, table, value) in [
        ("customer_id", Reference::Customer, &n.customer_id),
        ("company_id", Reference::Company, &n.company_id),
        ("deal_id", Reference::Deal, &n.deal_id),
    ] {
        if let (true, Some(id)) = (fields.contains(&field), value) {
            check_reference(&mut *conn, scope, table, field, id).await?;
        }
    }
    Ok(())
}

/// A new note (validated, but its rules and references not yet checked).
#[derive(Debug, Clone)]
pub struct NewNote {
    /// Kind.
    pub kind: NoteKind,
    /// Text.
    pub body: String,
    /// Customer it is about.
    pub customer_id: Option<String>,
    /// Company it is about.
    pub company_id: Option<String>,
    /// Deal it is about.
    pub deal_id: Option<String>,
    /// Due date of a task.
    pub due_on: Option<String>,
    /// Whether a task is done.
    pub done: bool,
    /// The author (the caller).
    pub author_id: Option<String>,
}

/// Creates a note and records `crm.note.created`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn create_note(
    db: &Db,
    scope: &TenantScope,
    new: NewNote,
    actor: &Actor,
) -> ApiResult<Note> {
    let now = Timestamp::now();
    let note = Note {
        id: new_id(),
        kind: new.kind,
        body: new.body,
        customer_id: new.customer_id,
        company_id: new.company_id,
        deal_id: new.deal_id,
        due_on: new.due_on,
        done: new.done,
        author_id: new.author_id,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    check_note_rules(&note)?;
    let mut tx = db.begin().await?;
    check_links(&mut tx, scope, &note, NOTE_FIELDS).await?;
    sqlx::query(
        "INSERT INTO notes (tenant_id, id, kind, body, customer_id, company_id, deal_id, \
         due_on, done, author_id, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(scope.tenant_id())
    .bind(&note.id)
    .bind(note.kind.as_str())
    .bind(&note.body)
    .bind(&note.customer_id)
    .bind(&note.company_id)
    .bind(&note.deal_id)
    .bind(&note.due_on)
    .bind(i64::from(note.done))
    .bind(&note.author_id)
    .bind(note.created_at.millis())
    .bind(note.updated_at.millis())
    .bind(note.version)
    .execute(&mut *tx)
    .await?;
    record(
        &mut tx,
        &events::changed(
            "note",
            "created",
            scope.tenant_id(),
            &note.id,
            actor,
            NOTE_FIELDS,
        ),
    )
    .await?;
    let created = note_by_id(&mut *tx, scope, &note.id)
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    tx.commit().await?;
    Ok(created)
}

/// Changes to a note (validated); `Some(None)` clears an optional field. The kind and the
/// author never change.
#[derive(Debug, Clone, Default)]
pub struct NoteChanges {
    /// Text.
    pub body: Option<String>,
    /// Customer.
    pub customer_id: Option<Option<String>>,
    /// Company.
    pub company_id: Option<Option<String>>,
    /// Deal.
    pub deal_id: Option<Option<String>>,
    /// Due date (tasks).
    pub due_on: Option<Option<String>>,
    /// Done (tasks).
    pub done: Option<bool>,
}

/// Applies `changes` when the note is still at `expected` (if given) and records
/// `crm.note.updated` naming the fields that really changed. No change, no event.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn update_note(
    db: &Db,
    scope: &TenantScope,
    id: &str,
    changes: NoteChanges,
    expected: Option<i64>,
    actor: &Actor,
) -> ApiResult<Note> {
    let mut tx = db.begin().await?;
    let current = note_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    check_version(expected, current.version)?;
    let mut next = current.clone();
    let mut changed: Vec<&str> = Vec::new();
    apply_changes!(changes, next, changed; body, customer_id, company_id, deal_id, due_on, done);
    check_note_rules(&next)?;
    if changed.is_empty() {
        return Ok(current);
    }
    check_links(&mut tx, scope, &next, &changed).await?;
    next.version = current.version + 1;
    next.updated_at = Timestamp::now();
    let updated = sqlx::query(
        "UPDATE notes SET body = $1, customer_id = $2, company_id = $3, deal_id = $4, \
         due_on = $5, done = $6, updated_at = $7, version = $8 \
         WHERE tenant_id = $9 AND id = $10 AND version = $11",
    )
    .bind(&next.body)
    .bind(&next.customer_id)
    .bind(&next.company_id)
    .bind(&next.deal_id)
    .bind(&next.due_on)
    .bind(i64::from(next.done))
    .bind(next.updated_at.millis())
    .bind(next.version)
    .bind(scope.tenant_id())
    .bind(id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(super::lost_race_of(&mut tx, scope, "notes", "note", id).await?);
    }
    record(
        &mut tx,
        &events::changed("note", "updated", scope.tenant_id(), id, actor, &changed),
    )
    .await?;
    let updated = note_by_id(&mut *tx, scope, id)
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    tx.commit().await?;
    Ok(updated)
}

/// Deleting a note: nothing refers to it.
pub const NOTE_REMOVAL: Removal = Removal {
    table: "notes",
    noun: "note",
    cascade: &[],
};

/// One entry of a customer's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineItem {
    /// A note or activity about the customer.
    Note {
        /// When it was written.
        at: Timestamp,
        /// The note.
        note: Note,
    },
    /// A deal of the customer moved between stages.
    StageChange {
        /// When it moved.
        at: Timestamp,
        /// Id of the stage change.
        id: String,
        /// The deal.
        deal_id: String,
        /// The deal's title (`null` once the deal is deleted).
        deal_title: Option<String>,
        /// Name of the stage it left (`null` for a new deal or a deleted stage).
        from_stage: Option<String>,
        /// Name of the stage it entered (`null` for a deleted stage).
        to_stage: Option<String>,
        /// Id of the stage it left.
        from_stage_id: Option<String>,
        /// Id of the stage it entered.
        to_stage_id: String,
        /// Who moved it.
        actor_id: Option<String>,
    },
}

impl TimelineItem {
    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            TimelineItem::Note { at, .. } | TimelineItem::StageChange { at, .. } => *at,
        }
    }

    /// Its id (of the note or of the stage change).
    pub fn id(&self) -> &str {
        match self {
            TimelineItem::Note { note, .. } => &note.id,
            TimelineItem::StageChange { id, .. } => id,
        }
    }

    /// The cursor text of a page ending with this item: `millis\nid`.
    pub fn cursor(&self) -> String {
        Sort::cursor(self.at().millis(), self.id())
    }
}

fn stage_change_from_row(row: &AnyRow) -> Result<TimelineItem, sqlx::Error> {
    Ok(TimelineItem::StageChange {
        at: Timestamp(row.try_get("occurred_at")?),
        id: row.try_get("id")?,
        deal_id: row.try_get("deal_id")?,
        deal_title: row.try_get("deal_title")?,
        from_stage: row.try_get("from_stage_name")?,
        to_stage: row.try_get("to_stage_name")?,
        from_stage_id: row.try_get("from_stage")?,
        to_stage_id: row.try_get("to_stage")?,
        actor_id: row.try_get("actor_id")?,
    })
}

/// Newest first by time, then id (the order the timeline pages in).
const NEWEST_FIRST: Sort = Sort {
    column: "",
    numeric: true,
    descending: true,
};

/// A page of the customer's timeline, newest first after `cursor` (`millis\nid` of the
/// last item seen): its notes and activities and the stage changes of its deals, merged;
/// at most `limit` items. 404 when the customer is not in the scope's tenant.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn customer_timeline(
    pool: &AnyPool,
    scope: &TenantScope,
    customer_id: &str,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<TimelineItem>> {
    if !exists(pool, scope, Reference::Customer, customer_id).await? {
        return Err(ApiError::not_found("customer"));
    }
    // Each source gives its own newest `limit` after the cursor; the merged page can only
    // hold items from those.
    let notes_sort = Sort {
        column: "created_at",
        ..NEWEST_FIRST
    };
    let mut c = tenant_conditions(scope);
    let p = c.bind(customer_id);
    c.and(format!("customer_id = {p}"));
    notes_sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT {NOTE_COLUMNS} FROM notes{where_sql}{order} LIMIT {p}",
        order = notes_sort.order_by(""),
    );
    let notes = c.query(&sql).fetch_all(pool).await?;

    let changes_sort = Sort {
        column: "occurred_at",
        ..NEWEST_FIRST
    };
    let mut c = tenant_conditions(scope);
    let p = c.bind(customer_id);
    c.and(format!("customer_id = {p}"));
    changes_sort.continue_after(&mut c, cursor)?;
    let where_sql = c.where_sql();
    let p = c.bind(limit);
    let sql = format!(
        "SELECT sc.id, sc.deal_id, d.title AS deal_title, sc.from_stage, \
         fs.name AS from_stage_name, sc.to_stage, ts.name AS to_stage_name, sc.actor_id, \
         sc.occurred_at \
         FROM (SELECT * FROM stage_changes{where_sql}{inner} LIMIT {p}) sc \
         LEFT JOIN deals d ON d.tenant_id = sc.tenant_id AND d.id = sc.deal_id \
         LEFT JOIN stages fs ON fs.tenant_id = sc.tenant_id AND fs.id = sc.from_stage \
         LEFT JOIN stages ts ON ts.tenant_id = sc.tenant_id AND ts.id = sc.to_stage{outer}",
        inner = changes_sort.order_by(""),
        outer = changes_sort.order_by("sc."),
    );
    let changes = c.query(&sql).fetch_all(pool).await?;

    let mut items = notes
        .iter()
        .map(|row| {
            note_from_row(row).map(|note| TimelineItem::Note {
                at: note.created_at,
                note,
            })
        })
        .chain(changes.iter().map(stage_change_from_row))
        .collect::<Result<Vec<_>, _>>()?;
    items.sort_by(|a, b| (b.at(), b.id()).cmp(&(a.at(), a.id())));
    items.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: NoteKind) -> Note {
        Note {
            id: new_id(),
            kind,
            body: "hi".into(),
            customer_id: Some(new_id()),
            company_id: None,
            deal_id: None,
            due_on: None,
            done: false,
            author_id: None,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
        }
    }

    #[test]
    fn note_rules() {
        assert!(check_note_rules(&note(NoteKind::Note)).is_ok());
        let mut unlinked = note(NoteKind::Call);
        unlinked.customer_id = None;
        assert!(check_note_rules(&unlinked).is_err());
        let mut task = note(NoteKind::Task);
        task.due_on = Some("2026-01-31".into());
        task.done = true;
        assert!(check_note_rules(&task).is_ok());
        let mut meeting = note(NoteKind::Meeting);
        meeting.due_on = Some("2026-01-31".into());
        assert!(check_note_rules(&meeting).is_err());
        let mut done_note = note(NoteKind::Note);
        done_note.done = true;
        assert!(check_note_rules(&done_note).is_err());
    }

    #[test]
    fn timeline_items_serialize_tagged() {
        let n = note(NoteKind::Note);
        let item = TimelineItem::Note {
            at: Timestamp(1),
            note: n.clone(),
        };
        let v = serde_json::to_value(&item).expect("json");
        assert_eq!(v["type"], "note");
        assert_eq!(v["note"]["id"], n.id.as_str());
        assert_eq!(item.cursor(), format!("1\n{}", n.id));
        let change = TimelineItem::StageChange {
            at: Timestamp(2),
            id: new_id(),
            deal_id: new_id(),
            deal_title: None,
            from_stage: None,
            to_stage: Some("Won".into()),
            from_stage_id: None,
            to_stage_id: new_id(),
            actor_id: None,
        };
        let v = serde_json::to_value(&change).expect("json");
        assert_eq!(v["type"], "stage_change");
        assert_eq!(v["to_stage"], "Won");
        assert!(v["from_stage"].is_null());
    }
}
