//! Domain types of the CRM and the rules that validate input before it reaches the store.

use chrono::NaiveDate;
use platform::ids::{is_uuid, Timestamp};
use platform::validate::Invalid;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Longest name, title, domain and similar one-line text, in characters.
pub const MAX_TEXT: usize = 200;
/// Longest address, in characters.
pub const MAX_ADDRESS: usize = 500;
/// Longest note body, in characters.
pub const MAX_BODY: usize = 10_000;
/// Most tags on one customer.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG: usize = 50;
/// Most custom field values on one record (and definitions per entity).
pub const MAX_CUSTOM_FIELDS: usize = 50;
/// Largest deal value in minor units (10^15: a thousand billion in a two-decimal currency).
pub const MAX_VALUE: i64 = 1_000_000_000_000_000;

/// Deserializes a field that distinguishes "absent" (outer `None`, leave unchanged) from
/// `null` (`Some(None)`, clear it); use with `#[serde(default, deserialize_with = ...)]`.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Stage of a customer's life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerStatus {
    /// Not yet qualified.
    Lead,
    /// Qualified, in talks.
    Prospect,
    /// Buying.
    Customer,
    /// Stopped buying.
    Churned,
}

impl CustomerStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerStatus::Lead => "lead",
            CustomerStatus::Prospect => "prospect",
            CustomerStatus::Customer => "customer",
            CustomerStatus::Churned => "churned",
        }
    }

    /// Parses the stored (or CSV) text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lead" => Some(CustomerStatus::Lead),
            "prospect" => Some(CustomerStatus::Prospect),
            "customer" => Some(CustomerStatus::Customer),
            "churned" => Some(CustomerStatus::Churned),
            _ => None,
        }
    }
}

/// A customer (contact).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Customer {
    /// Id (UUIDv7).
    pub id: String,
    /// First name.
    pub first_name: String,
    /// Last name (may be empty).
    pub last_name: String,
    /// Email, unique in the tenant when present.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// The company the customer works for.
    pub company_id: Option<String>,
    /// The company's name (read-only).
    pub company_name: Option<String>,
    /// Life-cycle stage.
    pub status: CustomerStatus,
    /// The tenant user responsible for the customer.
    pub owner_id: Option<String>,
    /// Tags, lower-cased.
    pub tags: Vec<String>,
    /// Values of the tenant's custom customer fields.
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// A company.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Company {
    /// Id (UUIDv7).
    pub id: String,
    /// Name.
    pub name: String,
    /// Web domain, e.g. `example.com`.
    pub domain: Option<String>,
    /// Industry.
    pub industry: Option<String>,
    /// Size, e.g. `11-50`.
    pub size: Option<String>,
    /// Postal address.
    pub address: Option<String>,
    /// Values of the tenant's custom company fields.
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// What reaching a stage means for a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// The deal is still open.
    Open,
    /// The deal is closed and won.
    Won,
    /// The deal is closed and lost.
    Lost,
}

impl StageKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Open => "open",
            StageKind::Won => "won",
            StageKind::Lost => "lost",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(StageKind::Open),
            "won" => Some(StageKind::Won),
            "lost" => Some(StageKind::Lost),
            _ => None,
        }
    }
}

/// A stage of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Stage {
    /// Id (UUIDv7).
    pub id: String,
    /// Name.
    pub name: String,
    /// Position in the pipeline, from 0.
    pub position: i64,
    /// Open, won or lost.
    pub kind: StageKind,
}

/// A sales pipeline: ordered stages deals move through.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Pipeline {
    /// Id (UUIDv7).
    pub id: String,
    /// Name, unique in the tenant.
    pub name: String,
    /// Whether new deals land here unless told otherwise.
    pub is_default: bool,
    /// Stages in order.
    pub stages: Vec<Stage>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// The stages every tenant's default pipeline starts with.
pub const DEFAULT_STAGES: &[(&str, StageKind)] = &[
    ("Lead", StageKind::Open),
    ("Qualified", StageKind::Open),
    ("Proposal", StageKind::Open),
    ("Negotiation", StageKind::Open),
    ("Won", StageKind::Won),
    ("Lost", StageKind::Lost),
];
/// The default pipeline's name.
pub const DEFAULT_PIPELINE: &str = "Sales";

/// A deal.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Deal {
    /// Id (UUIDv7).
    pub id: String,
    /// Title.
    pub title: String,
    /// Value in minor units of `currency` (cents for EUR).
    pub value: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Pipeline.
    pub pipeline_id: String,
    /// Current stage.
    pub stage_id: String,
    /// `open`, `won` or `lost`: follows the kind of the stage.
    pub status: StageKind,
    /// Customer.
    pub customer_id: Option<String>,
    /// Company.
    pub company_id: Option<String>,
    /// The tenant user responsible.
    pub owner_id: Option<String>,
    /// Expected close date (`YYYY-MM-DD`).
    pub expected_close: Option<String>,
    /// When the deal was won or lost.
    pub closed_at: Option<Timestamp>,
    /// Why it was won or lost.
    pub close_reason: Option<String>,
    /// Values of the tenant's custom deal fields.
    #[schema(value_type = Object)]
    pub custom: Map<String, Value>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// Kind of a note or activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// A text note.
    Note,
    /// A call.
    Call,
    /// A meeting.
    Meeting,
    /// A task, with a due date and a done flag.
    Task,
}

impl NoteKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            NoteKind::Note => "note",
            NoteKind::Call => "call",
            NoteKind::Meeting => "meeting",
            NoteKind::Task => "task",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "note" => Some(NoteKind::Note),
            "call" => Some(NoteKind::Call),
            "meeting" => Some(NoteKind::Meeting),
            "task" => Some(NoteKind::Task),
            _ => None,
        }
    }
}

/// A note or activity on a customer, company and/or deal.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Note {
    /// Id (UUIDv7).
    pub id: String,
    /// Note, call, meeting or task.
    pub kind: NoteKind,
    /// The text.
    pub body: String,
    /// Customer it is about.
    pub customer_id: Option<String>,
    /// Company it is about.
    pub company_id: Option<String>,
    /// Deal it is about.
    pub deal_id: Option<String>,
    /// Due date of a task (`YYYY-MM-DD`).
    pub due_on: Option<String>,
    /// Whether a task is done.
    pub done: bool,
    /// Who wrote it.
    pub author_id: Option<String>,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// The record type a custom field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// Customers.
    Customer,
    /// Companies.
    Company,
    /// Deals.
    Deal,
}

impl Entity {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Customer => "customer",
            Entity::Company => "company",
            Entity::Deal => "deal",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Entity::Customer),
            "company" => Some(Entity::Company),
            "deal" => Some(Entity::Deal),
            _ => None,
        }
    }
}

/// Type of a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// Text up to 1000 characters.
    Text,
    /// A finite number.
    Number,
    /// A date `YYYY-MM-DD`.
    Date,
    /// `true` or `false`.
    Boolean,
    /// One of the field's options.
    Select,
}

impl FieldKind {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldKind::Text => "text",
            FieldKind::Number => "number",
            FieldKind::Date => "date",
            FieldKind::Boolean => "boolean",
            FieldKind::Select => "select",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(FieldKind::Text),
            "number" => Some(FieldKind::Number),
            "date" => Some(FieldKind::Date),
            "boolean" => Some(FieldKind::Boolean),
            "select" => Some(FieldKind::Select),
            _ => None,
        }
    }
}

/// Longest custom text value, in characters.
pub const MAX_CUSTOM_TEXT: usize = 1000;

/// A tenant's definition of a custom field.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldDefinition {
    /// Id (UUIDv7).
    pub id: String,
    /// Record type.
    pub entity: Entity,
    /// Key in `custom` (`[a-z][a-z0-9_]*`, up to 50 characters), unique per entity.
    pub name: String,
    /// Label shown to people.
    pub label: String,
    /// Type.
    pub kind: FieldKind,
    /// Allowed values of a `select` field.
    pub options: Vec<String>,
    /// Whether every record must have a value.
    pub required: bool,
    /// Created.
    pub created_at: Timestamp,
    /// Last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the ETag).
    pub version: i64,
}

/// Validates a custom field's key.
pub fn field_name(s: &str) -> Result<String, Invalid> {
    let ok = !s.is_empty()
        && s.len() <= 50
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(Invalid::new(
            "name",
            "must be 1 to 50 characters of a-z, 0-9 and _, starting with a letter",
        ))
    }
}

/// Checks one custom value against its definition, as input field `custom.<name>`.
/// Texts are trimmed; `null` is refused here (the caller treats it as "no value").
pub fn custom_value(def: &FieldDefinition, value: &Value) -> Result<Value, Invalid> {
    let field = format!("custom.{}", def.name);
    let refuse = |reason: &str| Err(Invalid::new(field.clone(), reason));
    match (def.kind, value) {
        (FieldKind::Text, Value::String(s)) => {
            platform::validate::optional_text(&field, s, MAX_CUSTOM_TEXT)?
                .map(Value::String)
                .map_or_else(|| refuse("must not be empty"), Ok)
        }
        (FieldKind::Text, _) => refuse("must be text"),
        (FieldKind::Number, Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {
            Ok(value.clone())
        }
        (FieldKind::Number, _) => refuse("must be a number"),
        (FieldKind::Date, Value::String(s)) => date(&field, s).map(Value::String),
        (FieldKind::Date, _) => refuse("must be a date like 2026-01-31"),
        (FieldKind::Boolean, Value::Bool(_)) => Ok(value.clone()),
        (FieldKind::Boolean, _) => refuse("must be true or false"),
        (FieldKind::Select, Value::String(s)) if def.options.iter().any(|o| o == s) => {
            Ok(value.clone())
        }
        (FieldKind::Select, _) => Err(Invalid::new(
            field.clone(),
            format!("must be one of: {}", def.options.join(", ")),
        )),
    }
}

/// Validates a record's custom values against the tenant's definitions for its entity:
/// unknown keys and wrong types are refused, `null` removes a value, and required fields
/// must end up with one. `current` is the record's present values (empty on create); the
/// answer is the complete new set.
pub fn merge_custom(
    defs: &[FieldDefinition],
    current: &Map<String, Value>,
    changes: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<Invalid>> {
    let mut errors = Vec::new();
    let mut next = current.clone();
    for (key, value) in changes {
        let Some(def) = defs.iter().find(|d| &d.name == key) else {
            errors.push(Invalid::new(
                format!("custom.{key}"),
                "is not a custom field of this tenant",
            ));
            continue;
        };
        if value.is_null() {
            next.remove(key);
            continue;
        }
        match custom_value(def, value) {
            Ok(v) => {
                next.insert(key.clone(), v);
            }
            Err(e) => errors.push(e),
        }
    }
    for def in defs.iter().filter(|d| d.required) {
        if !next.contains_key(&def.name) && !errors.iter().any(|e| e.field.ends_with(&def.name)) {
            errors.push(Invalid::new(format!("custom.{}", def.name), "is required"));
        }
    }
    if errors.is_empty() {
        Ok(next)
    } else {
        Err(errors)
    }
}

/// Validates a calendar date `YYYY-MM-DD` given as input field `field`.
pub fn date(field: &str, s: &str) -> Result<String, Invalid> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or_else(|| Invalid::new(field, "must be a date like 2026-01-31"))
}

/// Validates an ISO 4217-shaped currency code (three letters, upper-cased).
pub fn currency(s: &str) -> Result<String, Invalid> {
    let code = s.trim().to_ascii_uppercase();
    if code.len() == 3 && code.chars().all(|c| c.is_ascii_uppercase()) {
        Ok(code)
    } else {
        Err(Invalid::new(
            "currency",
            "must be a three-letter ISO 4217 code like EUR",
        ))
    }
}

/// Validates a deal value in minor units.
pub fn deal_value(v: i64) -> Result<i64, Invalid> {
    if (0..=MAX_VALUE).contains(&v) {
        Ok(v)
    } else {
        Err(Invalid::new(
            "value",
            format!("must be between 0 and {MAX_VALUE} minor units"),
        ))
    }
}

/// Validates a phone number: up to 50 characters of digits, spaces and `+-().`, with at
/// least one digit.
pub fn phone(s: &str) -> Result<Option<String>, Invalid> {
    let p = s.trim();
    if p.is_empty() {
        return Ok(None);
    }
    let ok = p.len() <= 50
        && p.chars().any(|c| c.is_ascii_digit())
        && p.chars()
            .all(|c| c.is_ascii_digit() || " +-().".contains(c));
    if ok {
        Ok(Some(p.to_string()))
    } else {
        Err(Invalid::new(
            "phone",
            "must be a phone number (digits, spaces and + - ( ) .)",
        ))
    }
}

/// Normalizes tags: trimmed, lower-cased, deduplicated, in first-seen order; each 1..=50
/// characters without control characters or commas, at most 20.
pub fn tags(raw: &[String]) -> Result<Vec<String>, Invalid> {
    let mut out: Vec<String> = Vec::new();
    for tag in raw {
        let t = tag.trim().to_lowercase();
        if t.is_empty()
            || t.chars().count() > MAX_TAG
            || t.chars().any(|c| c.is_control() || c == ',' || c == ';')
        {
            return Err(Invalid::new(
                "tags",
                format!("each tag must be 1 to {MAX_TAG} characters without , or ;"),
            ));
        }
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.len() > MAX_TAGS {
        return Err(Invalid::new(
            "tags",
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
    }
    Ok(out)
}

/// Validates a reference to another record (an id) given as input field `field`: ids are
/// UUIDs, anything else cannot name a record.
pub fn reference(field: &str, id: &str) -> Result<String, Invalid> {
    if is_uuid(id) {
        Ok(id.to_string())
    } else {
        Err(Invalid::new(field, "must be the id of an existing record"))
    }
}

/// The lower-cased key a display text sorts and searches by.
pub fn sort_key(s: &str) -> String {
    s.to_lowercase()
}

/// Turns several refusals into one 422 listing each field.
pub fn invalid_fields(errors: Vec<Invalid>) -> platform::ApiError {
    let message = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let details: Vec<Value> = errors
        .iter()
        .map(|e| serde_json::json!({ "field": e.field, "reason": e.reason }))
        .collect();
    platform::ApiError::new(
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
        message,
    )
    .with_details(serde_json::json!({ "fields": details }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str, kind: FieldKind, required: bool) -> FieldDefinition {
        FieldDefinition {
            id: platform::ids::new_id(),
            entity: Entity::Customer,
            name: name.into(),
            label: name.into(),
            kind,
            options: vec!["gold".into(), "silver".into()],
            required,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
        }
    }

    #[test]
    fn custom_values_follow_their_definitions() {
        let defs = vec![
            def("note", FieldKind::Text, false),
            def("score", FieldKind::Number, false),
            def("since", FieldKind::Date, false),
            def("vip", FieldKind::Boolean, false),
            def("tier", FieldKind::Select, true),
        ];
        let ok = json!({"note": " hi ", "score": 1.5, "since": "2026-02-28", "vip": true, "tier": "gold"});
        let merged =
            merge_custom(&defs, &Map::new(), ok.as_object().expect("object")).expect("valid");
        assert_eq!(merged["note"], "hi");
        let bad = json!({"note": 1, "score": "x", "since": "2026-02-30", "vip": "yes", "tier": "bronze", "other": 1});
        let errors = merge_custom(&defs, &Map::new(), bad.as_object().expect("object"))
            .expect_err("invalid");
        assert_eq!(errors.len(), 6, "{errors:?}");
        let missing = merge_custom(&defs, &Map::new(), &Map::new()).expect_err("required");
        assert_eq!(missing[0].field, "custom.tier");
        let cleared = merge_custom(
            &defs,
            &merged,
            json!({"note": null}).as_object().expect("object"),
        )
        .expect("valid");
        assert!(!cleared.contains_key("note"));
    }

    #[test]
    fn small_rules() {
        assert_eq!(date("d", "2026-01-31").expect("ok"), "2026-01-31");
        assert!(date("d", "2026-1-31").is_err());
        assert!(date("d", "2026-02-30").is_err());
        assert_eq!(currency("eur").expect("ok"), "EUR");
        assert!(currency("EURO").is_err());
        assert!(currency("E1R").is_err());
        assert!(deal_value(-1).is_err());
        assert!(deal_value(MAX_VALUE + 1).is_err());
        assert_eq!(
            phone(" +49 (30) 123-45 ").expect("ok"),
            Some("+49 (30) 123-45".into())
        );
        assert!(phone("call me").is_err());
        assert_eq!(
            tags(&["VIP".into(), " vip ".into(), "b2b".into()]).expect("ok"),
            vec!["vip", "b2b"]
        );
        assert!(tags(&["a,b".into()]).is_err());
        assert!(tags(&(0..21).map(|i| i.to_string()).collect::<Vec<_>>()).is_err());
        assert!(field_name("tier_2").is_ok());
        assert!(field_name("2tier").is_err());
        assert!(field_name("Tier").is_err());
        assert!(reference("company_id", "x").is_err());
    }
}
