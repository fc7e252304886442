//! Deals and their stage changes.

use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::Actor;
use platform::ApiResult;
use serde_json::{Map, Value};

use crate::model::Deal;

/// A new deal (validated; references, stage and custom values checked here).
#[derive(Debug, Clone)]
pub struct NewDeal {
    /// Title.
    pub title: String,
    /// Value in minor units.
    pub value: i64,
    /// Currency.
    pub currency: String,
    /// Pipeline; the tenant's default when absent.
    pub pipeline_id: Option<String>,
    /// Stage; the pipeline's first when absent.
    pub stage_id: Option<String>,
    /// Customer.
    pub customer_id: Option<String>,
    /// Company.
    pub company_id: Option<String>,
    /// Owner.
    pub owner_id: Option<String>,
    /// Expected close date.
    pub expected_close: Option<String>,
    /// Custom values.
    pub custom: Map<String, Value>,
}

/// Creates a deal and records `crm.deal.created`.
pub async fn create_deal(
    _db: &Db,
    _scope: &TenantScope,
    _new: NewDeal,
    _actor: &Actor,
) -> ApiResult<Deal> {
    todo!("deals")
}
