//! The audit log: every event of every service, newest first; a tenant's own trail for its
//! admins. Its verification is in [`super::verify`].

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use platform::caller::{Superadmin, TenantAdmin};
use platform::http::{Json, Query};
use platform::ids::Timestamp;
use platform::page::{page, Page, PageParams};
use platform::ApiError;
use serde::Deserialize;

use crate::model::{ActionFilter, AuditEntry};
use crate::store::{self, AuditFilter};
use crate::CdxState;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/audit", get(list))
        .route("/api/cdx/tenant-audit", get(tenant_list))
}

/// Filters and paging of the audit log.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListParams {
    /// Only entries of this tenant (id).
    tenant: Option<String>,
    /// Only entries caused by this user or admin (id).
    actor: Option<String>,
    /// An event type, or a prefix ending in `*` (e.g. `auth.login.*`).
    action: Option<String>,
    /// Only entries about this entity (id).
    target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    from: Option<String>,
    /// Only entries before this time (RFC 3339).
    to: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

/// Filters and paging of a tenant's own audit trail (the tenant is the caller's).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TenantListParams {
    /// Only entries caused by this user or admin (id).
    actor: Option<String>,
    /// An event type, or a prefix ending in `*` (e.g. `auth.login.*`).
    action: Option<String>,
    /// Only entries about this entity (id).
    target: Option<String>,
    /// Only entries at or after this time (RFC 3339).
    from: Option<String>,
    /// Only entries before this time (RFC 3339).
    to: Option<String>,
    /// Page size (1..=500, default 50).
    limit: Option<i64>,
    /// Cursor from the previous page.
    cursor: Option<String>,
}

fn time(field: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .map(|v| {
            Timestamp::parse_rfc3339(v).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("{field} must be an RFC 3339 date-time, e.g. 2025-01-31T12:00:00Z"),
                )
            })
        })
        .transpose()
}

/// Audit entries, newest first.
#[utoipa::path(get, path = "/api/cdx/audit", tag = "cdx", security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, body = Page<AuditEntry>), (status = 400), (status = 401),
        (status = 403)))]
#[tracing::instrument(skip_all)]
pub(super) async fn list(
    State(cdx): State<CdxState>,
    _: Superadmin,
    Query(params): Query<ListParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        tenant_id: params.tenant,
        actor_id: params.actor,
        action: action(params.action.as_deref())?,
        target: params.target,
        from: time("from", params.from.as_deref())?,
        to: time("to", params.to.as_deref())?,
    };
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    entries(&cdx, &filter, paging).await
}

/// The caller's own tenant's audit entries, newest first: for tenant admins, and for the
/// superadmin naming the tenant with `X-Tenant`.
#[utoipa::path(get, path = "/api/cdx/tenant-audit", tag = "cdx", security(("bearer" = [])),
    params(TenantListParams,
        ("X-Tenant" = Option<String>, Header, description = "Tenant slug or id (superadmin)")),
    responses((status = 200, body = Page<AuditEntry>), (status = 400), (status = 401),
        (status = 403), (status = 404)))]
#[tracing::instrument(skip_all)]
pub(super) async fn tenant_list(
    State(cdx): State<CdxState>,
    admin: TenantAdmin,
    Query(params): Query<TenantListParams>,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let filter = AuditFilter {
        tenant_id: Some(admin.scope.tenant_id().to_string()),
        actor_id: params.actor,
        action: action(params.action.as_deref())?,
        target: params.target,
        from: time("from", params.from.as_deref())?,
        to: time("to", params.to.as_deref())?,
    };
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    entries(&cdx, &filter, paging).await
}

fn action(value: Option<&str>) -> Result<Option<ActionFilter>, ApiError> {
    value
        .map(|a| {
            ActionFilter::parse(a).map_err(|e| {
                ApiError::bad_request("invalid_query", format!("{}: {}", e.field, e.reason))
            })
        })
        .transpose()
}

async fn entries(
    cdx: &CdxState,
    filter: &AuditFilter,
    paging: PageParams,
) -> Result<Json<Page<AuditEntry>>, ApiError> {
    let limit = paging.limit()?;
    let rows = store::list_audit(
        cdx.db().reader(),
        filter,
        paging.after()?.as_deref(),
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |e| e.id.clone())))
}
