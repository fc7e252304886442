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
//! checkpoint signature (by a [`PinnedKey`] when keys are pinned) and the recorded head, and
//! names the first broken entry.
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
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::AuditEntry;
use crate::store;
pub use crate::store::Pruned;

mod keys;
mod verify;

pub use keys::{parse_key_list, PinnedKey};
pub use verify::{checkpoint_keys, verify, ChainBreak, ChainReport, CheckpointKey, VerifyOptions};

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

/// Removes the entries of `db` older than `retention_days` days, up to the newest signed
/// checkpoint among them, which becomes the chain's anchor; `None` when no checkpoint is old
/// enough (nothing is removed).
pub async fn prune(db: &Db, retention_days: u64) -> Result<Option<Pruned>, sqlx::Error> {
    let secs = i64::try_from(retention_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    let before = Timestamp::now().plus_secs(-secs);
    store::prune_audit(db, before).await
}

/// Entries read per query while exporting.
const PAGE: i64 = 2000;

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
