//! The walk over the whole chain: one implementation for `metatron audit verify` and for
//! the API's background verification ([`crate::verification`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use platform::db::Db;
use serde::Serialize;

use super::{checkpoint_signature_valid, entry_hash, PinnedKey, GENESIS};
use crate::store;

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChainBreak {
    /// Position of the first broken (or missing) entry; `null` for entries outside the chain.
    pub seq: Option<i64>,
    /// Its id, when the entry exists.
    pub id: Option<String>,
    /// What is wrong.
    pub reason: String,
}

/// A checkpoint key as `audit verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct CheckpointKey {
    /// Key id.
    pub id: String,
    /// Raw Ed25519 public key, base64url.
    pub public_key: String,
    /// Whether the key is one of the pinned keys the walk required.
    pub pinned: bool,
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
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
    /// Position of the last checkpoint that verified (0: none). Entries after it are chained
    /// but not yet covered by a signature.
    pub signed_through: i64,
    /// Whether every checkpoint had to be signed by a pinned key.
    pub pinned: bool,
    /// The keys that sign checkpoints, as the database holds them.
    pub keys: Vec<CheckpointKey>,
    /// The first break, when not valid.
    pub broken: Option<ChainBreak>,
}

/// How a walk checks the checkpoints, and where it reports how far it got.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// When not empty, every checkpoint must be signed by one of these keys: the database's
    /// own record of its keys is then not trusted, since whoever can rewrite the chain can
    /// also replace them.
    pub pinned_keys: Vec<PinnedKey>,
    /// Set to the number of entries verified so far after every page.
    pub progress: Option<Arc<AtomicI64>>,
}

/// Entries read per query while walking.
const PAGE: i64 = 2000;
/// Entries hashed between two yields to the runtime: a walk runs for many seconds beside
/// the server's requests, and must not hold a runtime thread for a whole page.
const YIELD_EVERY: i64 = 128;

/// The checkpoint keys the database holds, and the pinned ones they must be among.
struct Keys<'a> {
    stored: BTreeMap<String, String>,
    pinned: &'a [PinnedKey],
}

impl Keys<'_> {
    /// What is wrong with a checkpoint's signature, if anything.
    fn problem(&self, cp: &store::Checkpoint) -> Option<String> {
        let Some(public_key) = self.stored.get(&cp.key_id) else {
            return Some(format!(
                "checkpoint {} is signed by unknown key {}",
                cp.seq, cp.key_id
            ));
        };
        if !self.pinned.is_empty() && !self.pinned.iter().any(|p| p.matches(public_key)) {
            return Some(format!(
                "checkpoint {} is signed by key {}, which is not a pinned key",
                cp.seq, cp.key_id
            ));
        }
        if !checkpoint_signature_valid(public_key, cp.seq, &cp.hash, &cp.signature) {
            return Some(format!("checkpoint {} has an invalid signature", cp.seq));
        }
        None
    }
}

/// The keys that sign checkpoints, as the database of `db` holds them, each marked when it
/// is among `pinned`.
pub async fn checkpoint_keys(
    db: &Db,
    pinned: &[PinnedKey],
) -> Result<Vec<CheckpointKey>, sqlx::Error> {
    let stored = store::checkpoint_keys(db.reader()).await?;
    Ok(described(&stored.into_iter().collect(), pinned))
}

fn described(stored: &BTreeMap<String, String>, pinned: &[PinnedKey]) -> Vec<CheckpointKey> {
    stored
        .iter()
        .map(|(id, public_key)| CheckpointKey {
            id: id.clone(),
            public_key: public_key.clone(),
            pinned: pinned.iter().any(|p| p.matches(public_key)),
        })
        .collect()
}

/// Walks the whole chain of `db` (read-only) and reports the first break.
pub async fn verify(db: &Db, options: &VerifyOptions) -> Result<ChainReport, sqlx::Error> {
    let pool = db.reader();
    let keys = Keys {
        stored: store::checkpoint_keys(pool).await?.into_iter().collect(),
        pinned: &options.pinned_keys,
    };
    let checkpoints = store::checkpoints(pool).await?;
    let mut cps = checkpoints.iter().peekable();
    let mut report = ChainReport {
        valid: false,
        entries: 0,
        checkpoints: 0,
        head_seq: 0,
        head_hash: GENESIS.to_string(),
        pruned_through: 0,
        signed_through: 0,
        pinned: !options.pinned_keys.is_empty(),
        keys: described(&keys.stored, &options.pinned_keys),
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
            Some(cp) if cp.hash == prev => keys.problem(cp),
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
        report.signed_through = last;
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
                    keys.problem(cp)
                };
                if let Some(reason) = problem {
                    broken(&mut report, Some(fields.seq), Some(&fields.id), reason);
                    return Ok(report);
                }
                report.checkpoints += 1;
                report.signed_through = cp.seq;
            }
            last = fields.seq;
            prev = computed;
            report.entries += 1;
            report.head_seq = last;
            report.head_hash = prev.clone();
            if report.entries % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
        }
        if let Some(progress) = &options.progress {
            progress.store(report.entries, Ordering::Relaxed);
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
