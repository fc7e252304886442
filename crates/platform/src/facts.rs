//! The per-tenant facts behind CDX's aggregates, computed by each service from its own
//! database, so that `metatron cdx rebuild` can compare the aggregates CDX built from events
//! with the truth and repair them.
//!
//! A service answers pages of tenants (in id order, taken from its tenant replica), each with
//! the facts it owns: auth the users' statuses and the recent logins, CRM the numbers of
//! customers and companies and every deal's status, value and currency. CDX merges the
//! services' answers per tenant. Services in CDX's process are asked directly
//! ([`ServiceFacts`] on the service's facts reader), those in other processes over HTTP
//! ([`RemoteFacts`], `GET /internal/<service>/facts?after=<tenant id>&limit=<n>`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::Db;
use crate::error::ApiError;

/// Tenants per page when the caller names no limit.
pub const DEFAULT_PAGE: i64 = 100;
/// Most tenants one page may carry.
pub const MAX_PAGE: i64 = 1000;
/// How far back logins count as recent facts (two days, in ms): CDX keeps logins that long
/// for "logins in the last 24 h".
pub const RECENT_LOGINS_MS: i64 = 2 * 86_400_000;

/// Path of a service's internal facts endpoint.
pub fn internal_path(service: &str) -> String {
    format!("/internal/{service}/facts")
}

/// A user as its tenant's aggregates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFact {
    /// User id.
    pub id: String,
    /// `active` or `disabled`.
    pub status: String,
}

/// A successful login (one session) of a tenant user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginFact {
    /// The session it opened.
    pub session_id: String,
    /// When, in Unix milliseconds.
    pub at: i64,
}

/// A deal as the pipeline aggregates see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealFact {
    /// Deal id.
    pub id: String,
    /// `open`, `won` or `lost`.
    pub status: String,
    /// Value in minor units.
    pub value: i64,
    /// ISO 4217 code.
    pub currency: String,
}

/// What the services know of one tenant; each service fills the fields it owns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TenantFacts {
    /// Tenant id.
    pub tenant_id: String,
    /// Auth: every user with its status.
    pub users: Vec<UserFact>,
    /// Auth: successful logins of the last [`RECENT_LOGINS_MS`].
    pub logins: Vec<LoginFact>,
    /// CRM: number of customers.
    pub customers: i64,
    /// CRM: number of companies.
    pub companies: i64,
    /// CRM: every deal.
    pub deals: Vec<DealFact>,
}

impl TenantFacts {
    /// Adds another service's facts of the same tenant.
    pub fn merge(&mut self, other: TenantFacts) {
        self.users.extend(other.users);
        self.logins.extend(other.logins);
        self.customers += other.customers;
        self.companies += other.companies;
        self.deals.extend(other.deals);
    }
}

/// One page of a service's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsPage {
    /// Tenants in id order.
    pub tenants: Vec<TenantFacts>,
    /// Pass as `after` for the next page; `null` on the last.
    pub next: Option<String>,
}

/// The facts one service computes from its own database.
#[async_trait]
pub trait ServiceFacts: Send + Sync {
    /// The tenants after `after` (by id), at most `limit`, with their facts.
    async fn facts(&self, after: Option<&str>, limit: i64) -> Result<FactsPage, ApiError>;
}

/// Every tenant's facts from every source, merged per tenant.
pub async fn collect(
    sources: &[(String, std::sync::Arc<dyn ServiceFacts>)],
) -> Result<BTreeMap<String, TenantFacts>, ApiError> {
    let mut all: BTreeMap<String, TenantFacts> = BTreeMap::new();
    for (_, source) in sources {
        let mut after: Option<String> = None;
        loop {
            let page = source.facts(after.as_deref(), DEFAULT_PAGE).await?;
            for facts in page.tenants {
                match all.get_mut(&facts.tenant_id) {
                    Some(known) => known.merge(facts),
                    None => {
                        all.insert(facts.tenant_id.clone(), facts);
                    }
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(all)
}

/// A page being filled by a service: the tenants of its replica after `after`, at most
/// `limit` (clamped to 1..=[`MAX_PAGE`]), each with empty facts.
#[derive(Debug)]
pub struct PageBuilder {
    tenants: BTreeMap<String, TenantFacts>,
    full: bool,
}

impl PageBuilder {
    /// Reads the page's tenants from the tenant replica of `db`.
    pub async fn start(db: &Db, after: Option<&str>, limit: i64) -> Result<Self, ApiError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM tenant_replica WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(limit)
                .fetch_all(db.reader())
                .await?;
        let full = i64::try_from(ids.len()).unwrap_or(i64::MAX) >= limit;
        let tenants = ids
            .into_iter()
            .map(|id| {
                let facts = TenantFacts {
                    tenant_id: id.clone(),
                    ..TenantFacts::default()
                };
                (id, facts)
            })
            .collect();
        Ok(PageBuilder { tenants, full })
    }

    /// The first and last tenant id of the page (`None` when it is empty): a service reads
    /// its rows with `tenant_id BETWEEN first AND last` and hands them to [`Self::tenant`].
    pub fn range(&self) -> Option<(String, String)> {
        let first = self.tenants.keys().next()?;
        let last = self.tenants.keys().next_back()?;
        Some((first.clone(), last.clone()))
    }

    /// The facts of a tenant of the page (`None` for a tenant outside it, e.g. one the
    /// replica does not know).
    pub fn tenant(&mut self, id: &str) -> Option<&mut TenantFacts> {
        self.tenants.get_mut(id)
    }

    /// Reads `sql` (bound to the page's first and last tenant id as `$1`, `$2`) and hands
    /// each row with its tenant's facts to `each`; rows of tenants outside the page are
    /// skipped.
    pub async fn fill(
        &mut self,
        db: &Db,
        sql: &str,
        mut each: impl FnMut(&mut TenantFacts, &sqlx::any::AnyRow) -> Result<(), sqlx::Error>,
    ) -> Result<(), ApiError> {
        let Some((first, last)) = self.range() else {
            return Ok(());
        };
        let rows = sqlx::query(sql)
            .bind(first)
            .bind(last)
            .fetch_all(db.reader())
            .await?;
        for row in &rows {
            let tenant: String = row.try_get("tenant_id")?;
            if let Some(facts) = self.tenant(&tenant) {
                each(facts, row)?;
            }
        }
        Ok(())
    }

    /// The finished page.
    pub fn finish(self) -> FactsPage {
        let next = if self.full {
            self.tenants.keys().next_back().cloned()
        } else {
            None
        };
        FactsPage {
            tenants: self.tenants.into_values().collect(),
            next,
        }
    }
}

/// `?after=&limit=` of the internal facts endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FactsQuery {
    /// The last tenant id of the previous page.
    pub after: Option<String>,
    /// Tenants per page (1..=[`MAX_PAGE`], default [`DEFAULT_PAGE`]).
    pub limit: Option<i64>,
}

impl FactsQuery {
    /// Asks `source` for the page this query names.
    pub async fn answer(&self, source: &dyn ServiceFacts) -> Result<FactsPage, ApiError> {
        if let Some(after) = &self.after {
            if !crate::ids::is_uuid(after) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "after must be a tenant id",
                ));
            }
        }
        source
            .facts(self.after.as_deref(), self.limit.unwrap_or(DEFAULT_PAGE))
            .await
    }
}

/// A service in another process, asked over HTTP with this process's service token.
#[derive(Debug, Clone)]
pub struct RemoteFacts {
    service: String,
    client: crate::remote::ServiceClient,
}

impl RemoteFacts {
    /// The facts of `service`, reached with `client`.
    pub fn new(service: &str, client: crate::remote::ServiceClient) -> Self {
        RemoteFacts {
            service: service.to_string(),
            client,
        }
    }
}

#[async_trait]
impl ServiceFacts for RemoteFacts {
    async fn facts(&self, after: Option<&str>, limit: i64) -> Result<FactsPage, ApiError> {
        let mut path = format!("{}?limit={limit}", internal_path(&self.service));
        if let Some(after) = after {
            if !crate::ids::is_uuid(after) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "after must be a tenant id",
                ));
            }
            path.push_str("&after=");
            path.push_str(after);
        }
        self.client.get(&path).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{DatabaseSettings, PoolDefaults};

    /// A service whose facts are one customer per tenant of its replica.
    struct OneCustomerEach(Db);

    #[async_trait]
    impl ServiceFacts for OneCustomerEach {
        async fn facts(&self, after: Option<&str>, limit: i64) -> Result<FactsPage, ApiError> {
            let mut page = PageBuilder::start(&self.0, after, limit).await?;
            page.fill(
                &self.0,
                "SELECT id AS tenant_id FROM tenant_replica WHERE id BETWEEN $1 AND $2",
                |facts, _| {
                    facts.customers += 1;
                    Ok(())
                },
            )
            .await?;
            Ok(page.finish())
        }
    }

    #[tokio::test]
    async fn pages_cover_every_tenant_once_and_sources_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = crate::db::database_url("svc", &DatabaseSettings::default(), dir.path());
        let db = Db::connect("svc", &url, None, &PoolDefaults::default())
            .await
            .expect("connect");
        db.migrate(&[]).await.expect("migrate");
        let tenants = 2 * DEFAULT_PAGE + 7;
        for i in 0..tenants {
            sqlx::query(
                "INSERT INTO tenant_replica (id, slug, status, updated_at) \
                 VALUES ($1, $2, 'active', 0)",
            )
            .bind(crate::ids::new_id())
            .bind(format!("t{i}"))
            .execute(db.writer())
            .await
            .expect("tenant");
        }
        let source = OneCustomerEach(db.clone());
        let first = source.facts(None, 3).await.expect("page");
        assert_eq!(first.tenants.len(), 3);
        assert_eq!(
            first.next.as_deref(),
            Some(first.tenants[2].tenant_id.as_str())
        );
        let second = source.facts(first.next.as_deref(), 3).await.expect("page");
        assert!(second.tenants[0].tenant_id > first.tenants[2].tenant_id);

        let sources: Vec<(String, Arc<dyn ServiceFacts>)> = vec![
            ("a".into(), Arc::new(OneCustomerEach(db.clone()))),
            ("b".into(), Arc::new(OneCustomerEach(db.clone()))),
        ];
        let all = collect(&sources).await.expect("collect");
        assert_eq!(i64::try_from(all.len()).expect("len"), tenants);
        assert!(all.values().all(|facts| facts.customers == 2));
        db.close().await;
    }
}
