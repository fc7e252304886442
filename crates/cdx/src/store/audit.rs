//! The audit log.

use std::collections::HashSet;

use platform::db::Db;
use platform::events::Event;
use platform::ids::Timestamp;
use platform::ApiResult;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use platform::db::escape_like;
use platform::sql::{placeholders, values_list};

use super::{Arg, Conditions, AUDIT_COLUMNS};
use crate::chain::{self, EntryFields};
use crate::model::{ActionFilter, AuditActor, AuditEntry};

// Audit log

/// Columns written per audit row.
const AUDIT_ROW_COLUMNS: usize = 15;
/// Audit rows per statement (15 values each).
const AUDIT_BATCH: usize = 40;
/// Ids looked up per statement when skipping redelivered events.
const ID_BATCH: usize = 200;
/// Pre-chain rows chained per query by the one-time backfill.
const BACKFILL_PAGE: i64 = 1000;

/// The chain's head as `audit_chain_head` records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// Position of the last entry (0 when empty).
    pub seq: i64,
    /// Hash of the last entry ([`chain::GENESIS`] when empty).
    pub hash: String,
    /// Position of the last checkpoint (0 when none).
    pub checkpoint_seq: i64,
    /// When the last checkpoint was signed (Unix ms).
    pub checkpoint_at: i64,
    /// 1 once the rows from before the chain are chained.
    pub backfilled: i64,
    /// Position of the last entry the retention removed (0 when none): the chain's anchor.
    pub pruned_seq: i64,
    /// Its hash ([`chain::GENESIS`] when none), signed by the checkpoint at `pruned_seq`.
    pub pruned_hash: String,
}

fn head_from_row(row: &AnyRow) -> Result<ChainHead, sqlx::Error> {
    Ok(ChainHead {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        checkpoint_seq: row.try_get("checkpoint_seq")?,
        checkpoint_at: row.try_get("checkpoint_at")?,
        backfilled: row.try_get("backfilled")?,
        pruned_seq: row.try_get("pruned_seq")?,
        pruned_hash: row.try_get("pruned_hash")?,
    })
}

const HEAD_COLUMNS: &str =
    "seq, hash, checkpoint_seq, checkpoint_at, backfilled, pruned_seq, pruned_hash";

/// Locks the head row for this transaction (a no-op update: PostgreSQL holds the row lock
/// until commit; SQLite has one writer anyway) and returns it.
async fn lock_head(conn: &mut AnyConnection) -> Result<ChainHead, sqlx::Error> {
    let row = sqlx::query(&format!(
        "UPDATE audit_chain_head SET seq = seq WHERE id = 1 RETURNING {HEAD_COLUMNS}"
    ))
    .fetch_one(conn)
    .await?;
    head_from_row(&row)
}

async fn store_head(conn: &mut AnyConnection, head: &ChainHead) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE audit_chain_head SET seq = $1, hash = $2, checkpoint_seq = $3, \
         checkpoint_at = $4, backfilled = $5 WHERE id = 1",
    )
    .bind(head.seq)
    .bind(&head.hash)
    .bind(head.checkpoint_seq)
    .bind(head.checkpoint_at)
    .bind(head.backfilled)
    .execute(conn)
    .await?;
    Ok(())
}

/// The recorded head (for reading; writers lock it instead).
pub async fn chain_head(pool: &AnyPool) -> Result<ChainHead, sqlx::Error> {
    let row = sqlx::query(&format!(
        "SELECT {HEAD_COLUMNS} FROM audit_chain_head WHERE id = 1"
    ))
    .fetch_one(pool)
    .await?;
    head_from_row(&row)
}

fn fields_from_row(row: &AnyRow, seq: i64) -> Result<EntryFields, sqlx::Error> {
    Ok(EntryFields {
        seq,
        id: row.try_get("id")?,
        occurred_at: row.try_get("occurred_at")?,
        actor_id: row.try_get("actor_id")?,
        actor_role: row.try_get("actor_role")?,
        actor_name: row.try_get("actor_name")?,
        tenant_id: row.try_get("tenant_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        ip: row.try_get("ip")?,
        detail: row.try_get("detail")?,
        changed: row.try_get("changed")?,
    })
}

/// Chains the rows written before the chain existed, once, in order of id (inside the
/// caller's transaction, with the head locked).
async fn backfill(conn: &mut AnyConnection, head: &mut ChainHead) -> Result<(), sqlx::Error> {
    loop {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq IS NULL ORDER BY id LIMIT $1"
        ))
        .bind(BACKFILL_PAGE)
        .fetch_all(&mut *conn)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let mut fields = fields_from_row(row, head.seq + 1)?;
            if fields.changed.is_none() {
                fields.changed = serde_json::from_str::<serde_json::Value>(&fields.detail)
                    .ok()
                    .and_then(|d| chain::changed_of(&d));
            }
            let hash = chain::entry_hash(&head.hash, &fields);
            sqlx::query(
                "UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3, changed = $4 \
                 WHERE id = $5",
            )
            .bind(fields.seq)
            .bind(&head.hash)
            .bind(&hash)
            .bind(fields.changed.clone())
            .bind(&fields.id)
            .execute(&mut *conn)
            .await?;
            head.seq = fields.seq;
            head.hash = hash;
        }
    }
    head.backfilled = 1;
    Ok(())
}

/// Chains the audit rows from before the chain existed, when not done yet (idempotent).
/// Returns how many were chained.
pub async fn prepare_chain(db: &Db) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut head = lock_head(&mut tx).await?;
    if head.backfilled != 0 {
        tx.rollback().await?;
        return Ok(0);
    }
    let before = head.seq;
    backfill(&mut tx, &mut head).await?;
    store_head(&mut tx, &head).await?;
    tx.commit().await?;
    Ok(head.seq - before)
}

/// Signs the head (`head.seq`, `head.hash`) with CDX's newest checkpoint key, generating
/// the first key when there is none, and records it in `head`.
async fn write_checkpoint(
    conn: &mut AnyConnection,
    head: &mut ChainHead,
    now: i64,
) -> Result<(), sqlx::Error> {
    let key = sqlx::query(
        "SELECT id, private_pkcs8 FROM audit_signing_keys ORDER BY created_at DESC, id DESC \
         LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    let (key_id, private) = match key {
        Some(row) => (
            row.try_get::<String, _>("id")?,
            row.try_get::<String, _>("private_pkcs8")?,
        ),
        None => {
            let key = platform::token::generate_key().map_err(sqlx::Error::Protocol)?;
            sqlx::query(
                "INSERT INTO audit_signing_keys (id, algorithm, public_key, private_pkcs8, \
                 created_at) VALUES ($1, 'Ed25519', $2, $3, $4)",
            )
            .bind(&key.kid)
            .bind(&key.public_x)
            .bind(&key.private_pkcs8)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            (key.kid.clone(), key.private_pkcs8.clone())
        }
    };
    let signature =
        chain::sign_checkpoint(&private, head.seq, &head.hash).map_err(sqlx::Error::Protocol)?;
    sqlx::query(
        "INSERT INTO audit_checkpoints (seq, hash, signature, key_id, signed_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(head.seq)
    .bind(&head.hash)
    .bind(signature)
    .bind(key_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    head.checkpoint_seq = head.seq;
    head.checkpoint_at = now;
    Ok(())
}

/// Signs a checkpoint at the head when entries were appended since the last one. Returns
/// its position, if one was written.
pub async fn checkpoint_now(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut head = lock_head(&mut tx).await?;
    if head.seq <= head.checkpoint_seq {
        tx.rollback().await?;
        return Ok(None);
    }
    write_checkpoint(&mut tx, &mut head, Timestamp::now().millis()).await?;
    store_head(&mut tx, &head).await?;
    tx.commit().await?;
    Ok(Some(head.seq))
}

/// What a prune removed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pruned {
    /// Entries removed.
    pub entries: u64,
    /// The new anchor: entries up to and including this position are gone.
    pub through_seq: i64,
}

/// Removes the entries that occurred before `before`, up to the newest signed checkpoint
/// among them, which stays as the chain's anchor (recorded in the head) together with the
/// checkpoints after it; earlier checkpoints go with their entries. Returns `None` when no
/// checkpoint is old enough (nothing is removed).
pub async fn prune_audit(db: &Db, before: Timestamp) -> Result<Option<Pruned>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let head = lock_head(&mut tx).await?;
    let anchor = sqlx::query(
        "SELECT c.seq, c.hash FROM audit_checkpoints c JOIN audit_log a ON a.seq = c.seq \
         WHERE a.occurred_at < $1 AND c.seq > $2 ORDER BY c.seq DESC LIMIT 1",
    )
    .bind(before.millis())
    .bind(head.pruned_seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(anchor) = anchor else {
        tx.rollback().await?;
        return Ok(None);
    };
    let seq: i64 = anchor.try_get("seq")?;
    let hash: String = anchor.try_get("hash")?;
    let entries = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
        .bind(seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM audit_checkpoints WHERE seq < $1")
        .bind(seq)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE audit_chain_head SET pruned_seq = $1, pruned_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(Pruned {
        entries,
        through_seq: seq,
    }))
}

/// What [`append_audit`] appended.
#[derive(Debug)]
pub struct Appended<'e> {
    /// The events recorded for the first time, in order: the ones whose effects the caller
    /// applies in the same transaction.
    pub events: Vec<&'e Event>,
    /// Their entries, as the audit list shows them.
    pub entries: Vec<AuditEntry>,
}

/// Appends audit entries for `events` to the chain in the transaction `conn` of `db` (the
/// caller commits): events already recorded (same id) are skipped, so redelivery neither
/// adds an entry nor advances the chain; a checkpoint is signed once `checkpoint_every`
/// entries have been appended since the last one.
pub async fn append_audit<'e>(
    db: &Db,
    conn: &mut AnyConnection,
    events: &[&'e Event],
    checkpoint_every: i64,
) -> Result<Appended<'e>, sqlx::Error> {
    let mut head = lock_head(conn).await?;
    let mut changed_head = false;
    if head.backfilled == 0 {
        backfill(conn, &mut head).await?;
        changed_head = true;
    }
    // Skip what is recorded already, and repeats within the batch.
    let mut seen: HashSet<&str> = HashSet::new();
    for chunk in events.chunks(ID_BATCH) {
        let sql = format!(
            "SELECT id FROM audit_log WHERE id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for event in chunk {
            q = q.bind(&event.id);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let id: String = row.try_get("id")?;
            if let Some(event) = chunk.iter().find(|e| e.id == id) {
                seen.insert(event.id.as_str());
            }
        }
    }
    let mut fresh: Vec<(&'e Event, EntryFields, String, String)> = Vec::new();
    for event in events {
        if !seen.insert(event.id.as_str()) {
            continue;
        }
        let detail = serde_json::to_string(&event.data)
            .map_err(|e| sqlx::Error::Protocol(format!("event data encoding: {e}")))?;
        let fields = EntryFields {
            seq: head.seq + 1,
            id: event.id.clone(),
            occurred_at: event.occurred_at.millis(),
            actor_id: event.actor.id.clone(),
            actor_role: event.actor.role.clone(),
            actor_name: event.actor.name.clone(),
            tenant_id: event.tenant_id.clone(),
            action: event.event_type.clone(),
            target: event.aggregate_id.clone(),
            request_id: event.actor.request_id.clone(),
            ip: event.actor.ip.clone(),
            detail,
            changed: chain::changed_of(&event.data),
        };
        let hash = chain::entry_hash(&head.hash, &fields);
        let prev = std::mem::replace(&mut head.hash, hash.clone());
        head.seq = fields.seq;
        fresh.push((event, fields, prev, hash));
    }
    for chunk in fresh.chunks(AUDIT_BATCH) {
        let sql = format!(
            "INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES {}",
            values_list(db.backend(), chunk.len(), AUDIT_ROW_COLUMNS)
        );
        let mut q = sqlx::query(&sql);
        for (_, f, prev, hash) in chunk {
            q = q
                .bind(&f.id)
                .bind(f.occurred_at)
                .bind(f.actor_id.clone())
                .bind(&f.actor_role)
                .bind(f.actor_name.clone())
                .bind(f.tenant_id.clone())
                .bind(&f.action)
                .bind(&f.target)
                .bind(f.request_id.clone())
                .bind(f.ip.clone())
                .bind(&f.detail)
                .bind(f.changed.clone())
                .bind(f.seq)
                .bind(prev)
                .bind(hash);
        }
        q.execute(&mut *conn).await?;
    }
    if !fresh.is_empty() {
        changed_head = true;
        if head.seq - head.checkpoint_seq >= checkpoint_every.max(1) {
            write_checkpoint(conn, &mut head, Timestamp::now().millis()).await?;
        }
    }
    if changed_head {
        store_head(conn, &head).await?;
    }
    let appended = fresh.iter().map(|(event, ..)| *event).collect();
    let entries = fresh
        .into_iter()
        .map(|(event, f, prev, hash)| AuditEntry {
            id: f.id,
            occurred_at: Timestamp(f.occurred_at),
            actor: AuditActor {
                id: f.actor_id,
                role: f.actor_role,
                name: f.actor_name,
            },
            tenant_id: f.tenant_id,
            action: f.action,
            target: f.target,
            request_id: f.request_id,
            ip: f.ip,
            detail: event.data.clone(),
            changed: f.changed.and_then(|c| serde_json::from_str(&c).ok()),
            seq: Some(f.seq),
            prev_hash: Some(prev),
            hash: Some(hash),
        })
        .collect();
    Ok(Appended {
        events: appended,
        entries,
    })
}

/// Chained entries after position `after`, in order: fields, `prev_hash`, `hash`.
pub async fn chain_page(
    pool: &AnyPool,
    after: i64,
    limit: i64,
) -> Result<Vec<(EntryFields, String, String)>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let seq: i64 = row.try_get("seq")?;
            let prev: Option<String> = row.try_get("prev_hash")?;
            let hash: Option<String> = row.try_get("hash")?;
            Ok((
                fields_from_row(row, seq)?,
                prev.unwrap_or_default(),
                hash.unwrap_or_default(),
            ))
        })
        .collect()
}

/// The first entry without a chain position (by id) and how many there are.
pub async fn unchained(pool: &AnyPool) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row =
        sqlx::query("SELECT MIN(id) AS first, COUNT(*) AS n FROM audit_log WHERE seq IS NULL")
            .fetch_one(pool)
            .await?;
    let n: i64 = row.try_get("n")?;
    if n == 0 {
        return Ok(None);
    }
    let first: Option<String> = row.try_get("first")?;
    Ok(Some((first.unwrap_or_default(), n)))
}

/// One signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Position it signs.
    pub seq: i64,
    /// The chain's hash at that position.
    pub hash: String,
    /// Ed25519 signature, base64url.
    pub signature: String,
    /// Signing key id.
    pub key_id: String,
}

/// Every checkpoint, in order.
pub async fn checkpoints(pool: &AnyPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT seq, hash, signature, key_id FROM audit_checkpoints ORDER BY seq")
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|row| {
            Ok(Checkpoint {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                signature: row.try_get("signature")?,
                key_id: row.try_get("key_id")?,
            })
        })
        .collect()
}

/// Every checkpoint key: id and public key.
pub async fn checkpoint_keys(pool: &AnyPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, public_key FROM audit_signing_keys ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("id")?, row.try_get("public_key")?)))
        .collect()
}

/// Filters of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this tenant.
    pub tenant_id: Option<String>,
    /// Only this actor.
    pub actor_id: Option<String>,
    /// Only these event types.
    pub action: Option<ActionFilter>,
    /// Only entries about this entity (id).
    pub target: Option<String>,
    /// Only entries at or after this time.
    pub from: Option<Timestamp>,
    /// Only entries before this time.
    pub to: Option<Timestamp>,
}

impl AuditFilter {
    /// Adds the filter's conditions.
    fn apply(&self, c: &mut Conditions) {
        if let Some(tenant_id) = &self.tenant_id {
            let p = c.bind(Arg::Text(tenant_id.clone()));
            c.and(format!("tenant_id = {p}"));
        }
        if let Some(actor_id) = &self.actor_id {
            let p = c.bind(Arg::Text(actor_id.clone()));
            c.and(format!("actor_id = {p}"));
        }
        if let Some(target) = &self.target {
            let p = c.bind(Arg::Text(target.clone()));
            c.and(format!("target = {p}"));
        }
        action_condition(c, self.action.as_ref());
        if let Some(from) = self.from {
            let p = c.bind(Arg::Int(from.millis()));
            c.and(format!("occurred_at >= {p}"));
        }
        if let Some(to) = self.to {
            let p = c.bind(Arg::Int(to.millis()));
            c.and(format!("occurred_at < {p}"));
        }
    }
}

/// Audit entries in chain order (by `seq`) after position `after`, at most `limit`, of one
/// tenant, event types and time range when given (for the export and the streams' replay).
pub async fn audit_in_chain_order(
    pool: &AnyPool,
    filter: &AuditFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut c = Conditions::default();
    let p = c.bind(Arg::Int(after));
    c.and(format!("seq > {p}"));
    filter.apply(&mut c);
    let where_sql = c.where_sql();
    let p = c.bind(Arg::Int(limit));
    let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log{where_sql} ORDER BY seq LIMIT {p}");
    let rows = c.query(&sql).fetch_all(pool).await?;
    rows.iter().map(audit_from_row).collect()
}

/// Audit entries newest first (by id) before `before`, at most `limit`.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn list_audit(
    pool: &AnyPool,
    filter: &AuditFilter,
    before: Option<&str>,
    limit: i64,
) -> ApiResult<Vec<AuditEntry>> {
    let mut c = Conditions::default();
    filter.apply(&mut c);
    if let Some(before) = before {
        let p = c.bind(Arg::Text(before.to_string()));
        c.and(format!("id < {p}"));
    }
    let where_sql = c.where_sql();
    let p = c.bind(Arg::Int(limit));
    let sql =
        format!("SELECT {AUDIT_COLUMNS} FROM audit_log{where_sql} ORDER BY id DESC LIMIT {p}");
    let rows = c.query(&sql).fetch_all(pool).await?;
    Ok(rows.iter().map(audit_from_row).collect::<Result<_, _>>()?)
}

fn action_condition(c: &mut Conditions, action: Option<&ActionFilter>) {
    match action {
        Some(ActionFilter::Exact(action)) => {
            let p = c.bind(Arg::Text(action.clone()));
            c.and(format!("action = {p}"));
        }
        Some(ActionFilter::Prefix(prefix)) if !prefix.is_empty() => {
            let p = c.bind(Arg::Text(format!("{}%", escape_like(prefix))));
            c.and(format!("action LIKE {p} ESCAPE '\\'"));
        }
        _ => {}
    }
}

fn audit_from_row(row: &AnyRow) -> Result<AuditEntry, sqlx::Error> {
    let detail: String = row.try_get("detail")?;
    let changed: Option<String> = row.try_get("changed")?;
    Ok(AuditEntry {
        id: row.try_get("id")?,
        occurred_at: Timestamp(row.try_get("occurred_at")?),
        actor: AuditActor {
            id: row.try_get("actor_id")?,
            role: row.try_get("actor_role")?,
            name: row.try_get("actor_name")?,
        },
        tenant_id: row.try_get("tenant_id")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        ip: row.try_get("ip")?,
        // Rows are written from serialized JSON; should one ever not parse, show it as text
        // rather than fail the whole page.
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::String(detail)),
        changed: changed.and_then(|c| serde_json::from_str(&c).ok()),
        seq: row.try_get("seq")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
