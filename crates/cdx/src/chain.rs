//! The audit log as a tamper-evident hash chain with signed checkpoints.
//!
//! Every entry has a gap-free position `seq` (from 1) and
//! `hash = hex(SHA-256(prev_hash || canonical(entry)))`, where `prev_hash` is the previous
//! entry's `hash` as its 64 lowercase hex characters (64 × `0` before entry 1) and
//! `canonical(entry)` is [`canonical`]: the stored fields as one compact JSON object with its
//! keys sorted, UTF-8. Every [`crate::AuditSettings::checkpoint_every`] entries, and on a
//! timer, CDX signs the head with its own Ed25519 key ([`checkpoint_message`]).
//!
//! [`verify`] walks the whole chain in `seq` order, recomputes every hash, checks every
//! checkpoint signature and the recorded head, and names the first broken entry.
//!
//! With a retention policy, the oldest entries are removed up to a signed checkpoint
//! ([`crate::store::prune_audit`]); the head records that anchor (`pruned_seq`,
//! `pruned_hash`) and the walk starts from it, once its checkpoint's signature verifies.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use platform::db::Db;
use platform::ids::Timestamp;
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::AuditEntry;
use crate::store;
pub use crate::store::Pruned;

/// The `prev_hash` of entry 1.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every stored field of one audit entry that its hash covers (all but the hashes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFields {
    /// Position in the chain.
    pub seq: i64,
    /// Event id.
    pub id: String,
    /// Unix milliseconds.
    pub occurred_at: i64,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Actor role.
    pub actor_role: String,
    /// Actor display name.
    pub actor_name: Option<String>,
    /// Tenant id.
    pub tenant_id: Option<String>,
    /// Event type.
    pub action: String,
    /// Aggregate id.
    pub target: String,
    /// Request id.
    pub request_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// The event payload as stored (JSON text).
    pub detail: String,
    /// Changed field names as stored (JSON array text), if any.
    pub changed: Option<String>,
}

/// The canonical encoding of an entry: a compact JSON object of every stored field, keys in
/// byte order, `detail` and `changed` as the JSON strings of their stored text, absent
/// values as `null`, numbers as integers; serde_json's escaping, UTF-8.
pub fn canonical(e: &EntryFields) -> String {
    let text = |s: &Option<String>| s.clone().map(Value::String).unwrap_or(Value::Null);
    let mut fields: BTreeMap<&str, Value> = BTreeMap::new();
    fields.insert("action", Value::String(e.action.clone()));
    fields.insert("actor_id", text(&e.actor_id));
    fields.insert("actor_name", text(&e.actor_name));
    fields.insert("actor_role", Value::String(e.actor_role.clone()));
    fields.insert("changed", text(&e.changed));
    fields.insert("detail", Value::String(e.detail.clone()));
    fields.insert("id", Value::String(e.id.clone()));
    fields.insert("ip", text(&e.ip));
    fields.insert("occurred_at", Value::from(e.occurred_at));
    fields.insert("request_id", text(&e.request_id));
    fields.insert("seq", Value::from(e.seq));
    fields.insert("target", Value::String(e.target.clone()));
    fields.insert("tenant_id", text(&e.tenant_id));
    // Written out by hand so that the order never depends on serde_json's map features.
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String((*key).to_string()).to_string());
        out.push(':');
        out.push_str(&value.to_string());
    }
    out.push('}');
    out
}

/// `hex(SHA-256(prev_hash || canonical(entry)))`.
pub fn entry_hash(prev_hash: &str, entry: &EntryFields) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(canonical(entry).as_bytes());
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What a checkpoint signs: `metatron-audit-checkpoint:{seq}:{hash}` (UTF-8).
pub fn checkpoint_message(seq: i64, hash: &str) -> String {
    format!("metatron-audit-checkpoint:{seq}:{hash}")
}

/// Signs a checkpoint with a stored PKCS#8 key (base64url); the signature is base64url.
pub(crate) fn sign_checkpoint(private_pkcs8: &str, seq: i64, hash: &str) -> Result<String, String> {
    let der = URL_SAFE_NO_PAD
        .decode(private_pkcs8)
        .map_err(|e| format!("stored checkpoint key is not base64url: {e}"))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("stored checkpoint key is not an Ed25519 key: {e}"))?;
    let signature = pair.sign(checkpoint_message(seq, hash).as_bytes());
    Ok(URL_SAFE_NO_PAD.encode(signature.as_ref()))
}

/// Whether `signature` (base64url) is a valid signature of the checkpoint by `public_key`
/// (raw Ed25519, base64url).
pub fn checkpoint_signature_valid(public_key: &str, seq: i64, hash: &str, signature: &str) -> bool {
    let (Ok(key), Ok(sig)) = (
        URL_SAFE_NO_PAD.decode(public_key),
        URL_SAFE_NO_PAD.decode(signature),
    ) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, key)
        .verify(checkpoint_message(seq, hash).as_bytes(), &sig)
        .is_ok()
}

/// The changed field names of an event payload (`data.changed`, an array of strings) as
/// stored: JSON array text.
pub(crate) fn changed_of(data: &Value) -> Option<String> {
    let list = data.get("changed")?.as_array()?;
    let names: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
    serde_json::to_string(&names?).ok()
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainBreak {
    /// Position of the first broken (or missing) entry; `null` for entries outside the chain.
    pub seq: Option<i64>,
    /// Its id, when the entry exists.
    pub id: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// A checkpoint key as `audit verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckpointKey {
    /// Key id.
    pub id: String,
    /// Raw Ed25519 public key, base64url.
    pub public_key: String,
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Whether the whole chain verified.
    pub valid: bool,
    /// Entries verified (up to the first break).
    pub entries: i64,
    /// Checkpoints whose hash and signature verified.
    pub checkpoints: i64,
    /// Position of the last entry.
    pub head_seq: i64,
    /// Hash of the last entry.
    pub head_hash: String,
    /// Entries up to this position were removed by the retention policy (0: none); the walk
    /// starts after it, anchored by the signed checkpoint at this position.
    pub pruned_through: i64,
    /// The keys that sign checkpoints.
    pub keys: Vec<CheckpointKey>,
    /// The first break, when not valid.
    pub broken: Option<ChainBreak>,
}

/// Entries read per query while walking.
const PAGE: i64 = 2000;

/// Walks the whole chain of `db` (read-only) and reports the first break.
pub async fn verify(db: &Db) -> Result<ChainReport, sqlx::Error> {
    let pool = db.reader();
    let keys: BTreeMap<String, String> = store::checkpoint_keys(pool).await?.into_iter().collect();
    let checkpoints = store::checkpoints(pool).await?;
    let mut cps = checkpoints.iter().peekable();
    let mut report = ChainReport {
        valid: false,
        entries: 0,
        checkpoints: 0,
        head_seq: 0,
        head_hash: GENESIS.to_string(),
        pruned_through: 0,
        keys: keys
            .iter()
            .map(|(id, public_key)| CheckpointKey {
                id: id.clone(),
                public_key: public_key.clone(),
            })
            .collect(),
        broken: None,
    };
    let broken = |report: &mut ChainReport, seq: Option<i64>, id: Option<&str>, reason: String| {
        report.broken = Some(ChainBreak {
            seq,
            id: id.map(str::to_string),
            reason,
        });
    };
    let head = store::chain_head(pool).await?;
    if head.backfilled == 0 {
        let waiting = store::unchained(pool).await?;
        if let Some((id, count)) = waiting {
            broken(
                &mut report,
                None,
                Some(&id),
                format!(
                    "{count} entries from before the chain are not chained yet; start \
                     metatron (or run `metatron migrate`) once to chain them"
                ),
            );
            return Ok(report);
        }
    }
    let mut last = head.pruned_seq;
    let mut prev = head.pruned_hash.clone();
    if last > 0 {
        // The removed part is vouched for by the signed checkpoint at the anchor alone.
        // Checkpoints below it are leftovers of a prune that committed after they were read.
        while cps.next_if(|cp| cp.seq < last).is_some() {}
        let problem = match cps.next_if(|cp| cp.seq == last) {
            Some(cp) if cp.hash == prev => checkpoint_problem(&keys, cp),
            _ => Some(format!(
                "entries up to {last} were pruned, but no signed checkpoint covers that \
                 position with the recorded hash"
            )),
        };
        if let Some(reason) = problem {
            broken(&mut report, Some(last), None, reason);
            return Ok(report);
        }
        report.checkpoints += 1;
        report.pruned_through = last;
        report.head_seq = last;
        report.head_hash = prev.clone();
    }
    loop {
        let rows = store::chain_page(pool, last, PAGE).await?;
        if rows.is_empty() {
            break;
        }
        for (fields, prev_hash, hash) in &rows {
            let expected = last + 1;
            if fields.seq != expected {
                broken(
                    &mut report,
                    Some(expected),
                    None,
                    format!(
                        "entry {expected} is missing (the next entry is {} with id {})",
                        fields.seq, fields.id
                    ),
                );
                return Ok(report);
            }
            if *prev_hash != prev {
                broken(
                    &mut report,
                    Some(fields.seq),
                    Some(&fields.id),
                    format!(
                        "prev_hash does not match the hash of entry {}",
                        fields.seq - 1
                    ),
                );
                return Ok(report);
            }
            let computed = entry_hash(&prev, fields);
            if computed != *hash {
                broken(
                    &mut report,
                    Some(fields.seq),
                    Some(&fields.id),
                    "the stored hash does not match the entry's content".into(),
                );
                return Ok(report);
            }
            while let Some(cp) = cps.next_if(|cp| cp.seq <= fields.seq) {
                // Checkpoints come in seq order; one below this entry would have been
                // consumed at its own entry, so `cp.seq == fields.seq` here.
                let problem = if cp.seq != fields.seq {
                    Some("a checkpoint names no entry".to_string())
                } else if cp.hash != computed {
                    Some(format!("checkpoint {} does not match the chain", cp.seq))
                } else {
                    checkpoint_problem(&keys, cp)
                };
                if let Some(reason) = problem {
                    broken(&mut report, Some(fields.seq), Some(&fields.id), reason);
                    return Ok(report);
                }
                report.checkpoints += 1;
            }
            last = fields.seq;
            prev = computed;
            report.entries += 1;
            report.head_seq = last;
            report.head_hash = prev.clone();
        }
    }
    if let Some(cp) = cps.next() {
        broken(
            &mut report,
            Some(last + 1),
            None,
            format!(
                "the chain ends at entry {last} but checkpoint {} exists: entries were removed",
                cp.seq
            ),
        );
        return Ok(report);
    }
    // Read after the walk: a writer may have appended meanwhile, never removed.
    let head = store::chain_head(pool).await?;
    if head.seq > last {
        let now = store::chain_page(pool, last, 1).await?;
        if now.is_empty() {
            broken(
                &mut report,
                Some(last + 1),
                None,
                format!(
                    "the chain ends at entry {last} but its head is entry {}: entries were removed",
                    head.seq
                ),
            );
            return Ok(report);
        }
    } else if head.seq < last {
        broken(
            &mut report,
            Some(head.seq + 1),
            None,
            format!(
                "entries after the head ({}) were added outside the audit writer",
                head.seq
            ),
        );
        return Ok(report);
    } else if head.hash != report.head_hash {
        broken(
            &mut report,
            Some(last),
            None,
            "the recorded head hash does not match the last entry".into(),
        );
        return Ok(report);
    }
    if let Some((id, count)) = store::unchained(pool).await? {
        broken(
            &mut report,
            None,
            Some(&id),
            format!("{count} entries carry no chain position (inserted outside the audit writer)"),
        );
        return Ok(report);
    }
    report.valid = true;
    Ok(report)
}

/// What is wrong with a checkpoint's signature, if anything.
fn checkpoint_problem(keys: &BTreeMap<String, String>, cp: &store::Checkpoint) -> Option<String> {
    match keys.get(&cp.key_id) {
        None => Some(format!(
            "checkpoint {} is signed by unknown key {}",
            cp.seq, cp.key_id
        )),
        Some(public_key)
            if !checkpoint_signature_valid(public_key, cp.seq, &cp.hash, &cp.signature) =>
        {
            Some(format!("checkpoint {} has an invalid signature", cp.seq))
        }
        Some(_) => None,
    }
}

/// Removes the entries of `db` older than `retention_days` days, up to the newest signed
/// checkpoint among them, which becomes the chain's anchor; `None` when no checkpoint is old
/// enough (nothing is removed).
pub async fn prune(db: &Db, retention_days: u64) -> Result<Option<Pruned>, sqlx::Error> {
    let secs = i64::try_from(retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let before = Timestamp::now().plus_secs(-secs);
    store::prune_audit(db, before).await
}

/// Hands every audit entry of `tenant_id` (all when `None`) that occurred in `[from, to)` to
/// `each`, in chain order; returns how many.
pub async fn export(
    db: &Db,
    tenant_id: Option<&str>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    mut each: impl FnMut(&AuditEntry) -> std::io::Result<()>,
) -> Result<u64, ExportError> {
    let filter = store::AuditFilter {
        tenant_id: tenant_id.map(str::to_string),
        from,
        to,
        ..Default::default()
    };
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store::audit_in_chain_order(db.reader(), &filter, after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        after = last.seq.unwrap_or(i64::MAX);
        for entry in &page {
            each(entry)?;
            count += 1;
        }
    }
}

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the database failed.
    #[error("reading the audit log: {0}")]
    Db(#[from] sqlx::Error),
    /// Writing an entry failed.
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> EntryFields {
        EntryFields {
            seq: 1,
            id: "e1".into(),
            occurred_at: 1_700_000_000_000,
            actor_id: None,
            actor_role: "system".into(),
            actor_name: Some("seed \"x\"".into()),
            tenant_id: None,
            action: "cdx.admin.created".into(),
            target: "a1".into(),
            request_id: None,
            ip: Some("127.0.0.1".into()),
            detail: r#"{"username":"test"}"#.into(),
            changed: Some(r#"["name"]"#.into()),
        }
    }

    #[test]
    fn the_canonical_encoding_is_sorted_compact_json() {
        assert_eq!(
            canonical(&entry()),
            r#"{"action":"cdx.admin.created","actor_id":null,"actor_name":"seed \"x\"","actor_role":"system","changed":"[\"name\"]","detail":"{\"username\":\"test\"}","id":"e1","ip":"127.0.0.1","occurred_at":1700000000000,"request_id":null,"seq":1,"target":"a1","tenant_id":null}"#
        );
    }

    #[test]
    fn hashes_chain_and_depend_on_every_field() {
        let first = entry_hash(GENESIS, &entry());
        assert_eq!(first.len(), 64);
        assert_eq!(first, entry_hash(GENESIS, &entry()), "deterministic");
        assert_ne!(first, entry_hash(&first, &entry()), "depends on prev");
        let mut other = entry();
        other.detail = r#"{"username":"root"}"#.into();
        assert_ne!(first, entry_hash(GENESIS, &other));
        let mut other = entry();
        other.seq = 2;
        assert_ne!(first, entry_hash(GENESIS, &other));
    }

    #[test]
    fn checkpoints_sign_and_verify() {
        let key = platform::token::generate_key().expect("key");
        let sig = sign_checkpoint(&key.private_pkcs8, 7, GENESIS).expect("sign");
        assert!(checkpoint_signature_valid(&key.public_x, 7, GENESIS, &sig));
        assert!(!checkpoint_signature_valid(&key.public_x, 8, GENESIS, &sig));
        let other = platform::token::generate_key().expect("key");
        assert!(!checkpoint_signature_valid(
            &other.public_x,
            7,
            GENESIS,
            &sig
        ));
    }

    #[test]
    fn changed_names_are_taken_from_the_payload() {
        assert_eq!(
            changed_of(&serde_json::json!({ "changed": ["name", "status"] })).as_deref(),
            Some(r#"["name","status"]"#)
        );
        assert_eq!(changed_of(&serde_json::json!({ "name": "x" })), None);
        assert_eq!(changed_of(&serde_json::json!({ "changed": [1] })), None);
    }
}
