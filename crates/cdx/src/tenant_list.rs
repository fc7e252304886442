//! The tenant list (`GET /api/cdx/tenants`): each tenant with its aggregates, in one of the
//! orders below. Every order walks an index of its column and the tenant id (in either
//! direction), and pages continue after a row-value keyset position, so a page costs the
//! same at the start and deep into ten thousand tenants.

use serde::Serialize;

use crate::aggregates::SummaryColumns;
use crate::model::Tenant;
use crate::store::SortValue;

/// One item of the tenant list: the tenant and its aggregates.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantListItem {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// Its aggregates, as `GET /api/cdx/tenants/{id}/summary` has them.
    pub summary: SummaryColumns,
}

/// A numeric column of the summary the list can be ordered by.
struct SummaryOrder {
    /// Its name in `?sort=`, the same as in the items' `summary`.
    key: &'static str,
    /// The `tenant_summary` column whose index `(column, tenant_id)` gives the order.
    column: &'static str,
    /// The item's value of it.
    value: fn(&SummaryColumns) -> i64,
}

/// Every summary order. The CMS and analytics slots are NULL before their first event and
/// order by a twin column that holds 0 instead, since NULL cannot take part in a row-value
/// comparison (migration 0109).
const SUMMARY_ORDERS: &[SummaryOrder] = &[
    SummaryOrder {
        key: "users_total",
        column: "users_total",
        value: |s| s.counters.users_total,
    },
    SummaryOrder {
        key: "users_active",
        column: "users_active",
        value: |s| s.counters.users_active,
    },
    SummaryOrder {
        key: "logins_24h",
        column: "logins_24h",
        value: |s| s.logins_24h,
    },
    SummaryOrder {
        key: "customers",
        column: "customers",
        value: |s| s.counters.customers,
    },
    SummaryOrder {
        key: "companies",
        column: "companies",
        value: |s| s.counters.companies,
    },
    SummaryOrder {
        key: "open_deals",
        column: "open_deals",
        value: |s| s.counters.open_deals,
    },
    SummaryOrder {
        key: "content_items",
        column: "content_items_order",
        value: |s| s.slots.content_items.unwrap_or(0),
    },
    SummaryOrder {
        key: "analytics_events",
        column: "analytics_events_order",
        value: |s| s.slots.analytics_events.unwrap_or(0),
    },
];

/// `users`, the order's name before the list carried every column, still means this.
const USERS_ALIAS: (&str, &str) = ("users", "users_total");

/// What the list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortKey {
    /// Tenant id, which is creation order (UUIDv7).
    Id,
    /// Tenant name.
    Name,
    /// Creation time.
    Created,
    /// A summary column: the index in [`SUMMARY_ORDERS`].
    Summary(usize),
}

/// Order of the tenant list (`?sort=`; a leading `-` sorts descending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantSort {
    key: SortKey,
    descending: bool,
}

impl TenantSort {
    /// By id (creation order), the default.
    pub const ID: TenantSort = TenantSort {
        key: SortKey::Id,
        descending: false,
    };

    /// Parses a key of [`TenantSort::allowed`], optionally prefixed by `-`.
    pub fn parse(s: &str) -> Option<TenantSort> {
        let (descending, key) = match s.strip_prefix('-') {
            Some(key) => (true, key),
            None => (false, s),
        };
        let key = if key == USERS_ALIAS.0 {
            USERS_ALIAS.1
        } else {
            key
        };
        let key = match key {
            "id" if !descending => SortKey::Id,
            "name" => SortKey::Name,
            "created" => SortKey::Created,
            _ => SortKey::Summary(SUMMARY_ORDERS.iter().position(|o| o.key == key)?),
        };
        Some(TenantSort { key, descending })
    }

    /// The keys `?sort=` takes (each also with a leading `-`, except `id`).
    pub fn allowed() -> Vec<&'static str> {
        let mut keys = vec!["name", "created"];
        keys.extend(SUMMARY_ORDERS.iter().map(|o| o.key));
        keys.push(USERS_ALIAS.0);
        keys
    }

    /// Whether the order is descending.
    pub fn descending(self) -> bool {
        self.descending
    }

    /// Whether this is the default order by id, whose cursor is the id alone.
    pub fn by_id(self) -> bool {
        self.key == SortKey::Id
    }

    /// The SQL of the sort key (over `tenants t` joined with `tenant_summary s`).
    pub(crate) fn key_sql(self) -> String {
        match self.key {
            SortKey::Id => "t.id".into(),
            SortKey::Name => "t.name".into(),
            SortKey::Created => "t.created_at".into(),
            SortKey::Summary(i) => format!("s.{}", SUMMARY_ORDERS[i].column),
        }
    }

    /// The SQL of the column that breaks ties (the tenant id, from the table the order's
    /// index belongs to, so that the index gives the whole order).
    pub(crate) fn tiebreak_sql(self) -> &'static str {
        if self.by_summary() {
            "s.tenant_id"
        } else {
            "t.id"
        }
    }

    /// The tables the list reads: for an order by a summary column, driven by
    /// `tenant_summary` (every tenant has its row) to walk its index on that column.
    pub(crate) fn tables_sql(self) -> &'static str {
        if self.by_summary() {
            "tenant_summary s JOIN tenants t ON t.id = s.tenant_id"
        } else {
            "tenants t LEFT JOIN tenant_summary s ON s.tenant_id = t.id"
        }
    }

    fn by_summary(self) -> bool {
        matches!(self.key, SortKey::Summary(_))
    }

    /// Whether the key is text (else a number).
    pub(crate) fn is_text(self) -> bool {
        matches!(self.key, SortKey::Id | SortKey::Name)
    }

    /// The sort value of an item.
    pub(crate) fn value_of(self, item: &TenantListItem) -> SortValue {
        match self.key {
            SortKey::Id => SortValue::Text(item.tenant.id.clone()),
            SortKey::Name => SortValue::Text(item.tenant.name.clone()),
            SortKey::Created => SortValue::Int(item.tenant.created_at.millis()),
            SortKey::Summary(i) => SortValue::Int((SUMMARY_ORDERS[i].value)(&item.summary)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_key_parses_both_ways_and_nothing_else_does() {
        for key in TenantSort::allowed() {
            let asc = TenantSort::parse(key).expect(key);
            let desc = TenantSort::parse(&format!("-{key}")).expect(key);
            assert!(!asc.descending() && desc.descending(), "{key}");
            assert_eq!(asc.key, desc.key);
        }
        assert_eq!(TenantSort::parse("users"), TenantSort::parse("users_total"));
        assert_eq!(TenantSort::parse("id"), Some(TenantSort::ID));
        for bad in ["-id", "plan", "mrr", "pipeline", "slug", "", "-", "--name"] {
            assert_eq!(TenantSort::parse(bad), None, "{bad}");
        }
    }
}
