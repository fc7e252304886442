//! Companies.

use platform::caller::TenantScope;
use platform::db::Db;
use platform::events::Actor;
use platform::ApiResult;
use serde_json::{Map, Value};

use crate::model::Company;

/// A new company (validated; custom values checked here).
#[derive(Debug, Clone)]
pub struct NewCompany {
    /// Name.
    pub name: String,
    /// Web domain.
    pub domain: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Size.
    pub size: Option<String>,
    /// Address.
    pub address: Option<String>,
    /// Custom values.
    pub custom: Map<String, Value>,
}

/// Creates a company and records `crm.company.created`.
pub async fn create_company(
    _db: &Db,
    _scope: &TenantScope,
    _new: NewCompany,
    _actor: &Actor,
) -> ApiResult<Company> {
    todo!("companies")
}
