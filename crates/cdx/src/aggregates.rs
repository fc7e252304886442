//! Read models of every tenant and of the platform, kept from the services' events (CDX
//! never reads another service's database): users (total, active), logins in the last 24 h,
//! customers, companies, open deals and their value per currency, and activity per day.
//!
//! CDX's consumer ([`crate::audit::CdxConsumer`]) applies each event exactly once in effect:
//! the counters move in the same transaction that appends the event's audit entry, and an
//! event whose entry is there already is skipped.
//! [`rebuild`] checks and repairs them against the facts each service computes from its own
//! data ([`platform::facts`]); the activity per day is history, kept from the events only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use platform::db::Db;
use platform::ids::Timestamp;
use platform::tenants::TenantStatus;
use serde::Serialize;
use tokio::sync::Mutex;

use crate::live::{Feed, LiveSummary};
use crate::store;

/// Events of services without a release yet that fill the [`ServiceSlots`] of their tenant:
/// a CMS content item was created (`data` unused).
pub const CMS_ITEM_CREATED: &str = "cms.item.created";
/// A CMS content item was deleted (`data` unused).
pub const CMS_ITEM_DELETED: &str = "cms.item.deleted";
/// The tenant's subscription changed; `data`: `plan` (string, `null` when it ended), `mrr`
/// (integer, minor units per month) and `currency` (ISO 4217).
pub const BILLING_SUBSCRIPTION_CHANGED: &str = "billing.subscription.changed";
/// Analytics counted events of the tenant; `data`: `count` (integer, added).
pub const ANALYTICS_EVENTS_COUNTED: &str = "analytics.events.counted";

/// Announces what the aggregates became after CDX's consumer moved them: the new version to
/// the overview, and the changed summaries to the live streams.
#[derive(Debug, Clone)]
pub(crate) struct Aggregates {
    db: Db,
    feed: Feed,
    /// The last summary sent per tenant (without `updated_at`), so that only changes go out;
    /// emptied while no stream listens.
    sent: Arc<Mutex<HashMap<String, String>>>,
}

impl Aggregates {
    /// Reading CDX's database `db` and announcing on `feed`.
    pub(crate) fn new(db: Db, feed: Feed) -> Self {
        Aggregates {
            db,
            feed,
            sent: Arc::default(),
        }
    }

    /// Tells the overview and the streams that events of `tenants` were applied.
    pub(crate) async fn applied(&self, tenants: BTreeSet<String>) {
        self.feed.aggregates_changed();
        self.announce(tenants).await;
    }

    /// Publishes the summaries of `tenants` that differ from the last ones sent.
    async fn announce(&self, tenants: BTreeSet<String>) {
        if !self.feed.listened() {
            self.sent.lock().await.clear();
            return;
        }
        let mut changed = Vec::new();
        let mut sent = self.sent.lock().await;
        for tenant in tenants {
            let summary = match store::tenant_summary(self.db.reader(), &tenant).await {
                Ok(Some(summary)) => summary,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a changed tenant summary failed");
                    continue;
                }
            };
            let state = TenantSummary {
                updated_at: None,
                ..summary.clone()
            };
            let (Ok(state), Ok(json)) = (
                serde_json::to_string(&state),
                serde_json::to_string(&summary),
            ) else {
                continue;
            };
            if sent.get(&tenant) != Some(&state) {
                sent.insert(tenant.clone(), state);
                changed.push(LiveSummary {
                    tenant_id: tenant,
                    json,
                });
            }
        }
        self.feed.publish_summaries(changed);
    }
}

/// The platform overview as last computed. It is reused while the aggregates in this
/// process stay unchanged ([`Feed::aggregates_version`]) and for at most [`Self::MAX_AGE`],
/// which bounds what the clock and other processes (a `cdx rebuild`) change meanwhile: with
/// ten thousand tenants one computation reads every summary row, and a console left open on
/// the overview should not repeat that while nothing happens.
#[derive(Debug, Default)]
pub(crate) struct OverviewCache {
    last: tokio::sync::Mutex<Option<(u64, std::time::Instant, Overview)>>,
}

impl OverviewCache {
    const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

    /// The overview at aggregates `version`: the kept one if it is of that version and
    /// fresh, else the one `compute` makes. Concurrent callers wait for one computation.
    pub(crate) async fn get<F>(
        &self,
        version: u64,
        compute: F,
    ) -> Result<Overview, platform::ApiError>
    where
        F: std::future::Future<Output = Result<Overview, platform::ApiError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((kept, at, overview)) = &*last {
            if *kept == version && at.elapsed() < Self::MAX_AGE {
                return Ok(overview.clone());
            }
        }
        let overview = compute.await?;
        *last = Some((version, std::time::Instant::now(), overview.clone()));
        Ok(overview)
    }
}

/// The services asked for their facts, by name.
pub type FactSources = Vec<(String, Arc<dyn platform::facts::ServiceFacts>)>;

/// Recomputes every aggregate in CDX's database `db` from the facts of `sources` and reports
/// the counters that differed; with `apply` the recomputed ones replace them, else nothing
/// changes. Events still on their way when the facts are read may be counted twice in
/// customers and companies (users, deals and logins are keyed and count once): check again
/// once the services are quiet.
pub async fn rebuild(
    db: &Db,
    sources: &FactSources,
    apply: bool,
) -> Result<Vec<Drift>, platform::ApiError> {
    let facts = platform::facts::collect(sources).await?;
    store::rebuild_aggregates(db, &facts, Timestamp::now(), apply).await
}

/// A tenant's counters (zero before its first event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct TenantCounters {
    /// Users of the tenant.
    pub users_total: i64,
    /// Users that may log in (status `active`).
    pub users_active: i64,
    /// CRM customers.
    pub customers: i64,
    /// CRM companies.
    pub companies: i64,
    /// CRM deals in an open stage.
    pub open_deals: i64,
}

/// The slots that services without a release yet fill through their events: `null` (or
/// empty) until the tenant's first such event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServiceSlots {
    /// CMS content items (`cms.item.created/deleted`).
    pub content_items: Option<i64>,
    /// The billing plan (`billing.subscription.changed`; `null` without a subscription).
    pub plan: Option<String>,
    /// Monthly recurring revenue per currency, minor units (`billing.subscription.changed`).
    pub mrr: Vec<Revenue>,
    /// Events counted by analytics (`analytics.events.counted`).
    pub analytics_events: Option<i64>,
}

/// Monthly recurring revenue in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Revenue {
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units per month.
    pub mrr: i64,
}

/// A tenant's aggregates, the same in the tenant list (its items' `summary`) and in
/// `GET /api/cdx/tenants/{id}/summary`: the counters, logins of the last 24 hours, the open
/// pipeline per currency and the slots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SummaryColumns {
    /// The counters.
    #[serde(flatten)]
    pub counters: TenantCounters,
    /// Successful logins in the last 24 hours (a login leaves the count within
    /// [`LOGIN_EXPIRY_EVERY`] of turning 24 hours old).
    pub logins_24h: i64,
    /// Value of the open deals per currency (currencies with a non-zero value).
    pub pipeline: Vec<PipelineValue>,
    /// The slots.
    #[serde(flatten)]
    pub slots: ServiceSlots,
}

/// How often logins that turned 24 hours old leave the tenants' `logins_24h` (they also
/// leave it whenever new logins arrive).
pub const LOGIN_EXPIRY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Value of the open deals in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PipelineValue {
    /// ISO 4217 code.
    pub currency: String,
    /// Sum of the open deals' values, in minor units.
    pub open_value: i64,
}

/// `GET /api/cdx/tenants/{id}/summary`: one tenant's aggregates.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantSummary {
    /// Tenant id.
    pub tenant_id: String,
    /// Tenant slug.
    pub slug: String,
    /// Tenant name.
    pub name: String,
    /// Lifecycle state.
    pub status: TenantStatus,
    /// The aggregates, as the tenant list's `summary` carries them.
    #[serde(flatten)]
    pub columns: SummaryColumns,
    /// When an event last changed the counters (`null` before any).
    pub updated_at: Option<Timestamp>,
}

/// Tenants by lifecycle state.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantsByStatus {
    /// All tenants.
    pub total: i64,
    /// Count per status (`active`, `suspended`).
    pub by_status: BTreeMap<String, i64>,
}

/// Totals across all tenants.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverviewTotals {
    /// Summed counters.
    #[serde(flatten)]
    pub counters: TenantCounters,
    /// Successful tenant logins in the last 24 hours.
    pub logins_24h: i64,
    /// Value of the open deals per currency.
    pub pipeline: Vec<PipelineValue>,
    /// CMS content items of all tenants (`null` before any CMS event).
    pub content_items: Option<i64>,
    /// Tenants per billing plan.
    pub plans: BTreeMap<String, i64>,
    /// Monthly recurring revenue per currency, minor units.
    pub mrr: Vec<Revenue>,
    /// Events counted by analytics (`null` before any analytics event).
    pub analytics_events: Option<i64>,
}

/// Activity of one UTC day across the platform.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DayActivity {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Successful logins.
    pub logins: i64,
    /// Events of every service.
    pub events: i64,
}

/// `GET /api/cdx/overview`: the platform at a glance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Overview {
    /// Tenants by status.
    pub tenants: TenantsByStatus,
    /// Totals across tenants.
    pub totals: OverviewTotals,
    /// The last 30 days, oldest first (days without activity included, as zeros).
    pub activity: Vec<DayActivity>,
}

/// A counter whose kept value differs from the one recomputed from the services' facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Drift {
    /// The tenant.
    pub tenant_id: String,
    /// `users_total`, `users_active`, `customers`, `companies`, `open_deals`, `logins_24h`
    /// or `pipeline.<currency>`.
    pub counter: String,
    /// The value the aggregates held.
    pub kept: i64,
    /// The value recomputed from the services' facts.
    pub recomputed: i64,
}
