//! CSV import and export of customers.
//!
//! **Import.** The body is read as a stream (never buffered whole) and parsed record by
//! record. The header row maps columns to fields (case-insensitive, trimmed): the customer's
//! fields, `company` (a company *name*, matched to the tenant's companies by name key and
//! created when missing), `company_id`, `owner_id`, `tags` (separated by `;` or `,` inside
//! the cell) and the tenant's custom customer fields, by name or as `custom.<name>`. The
//! read-only columns of an export (`id`, `created_at`, `updated_at`, `company_name`) are
//! ignored; any other column refuses the file. Every row is validated with the rules of
//! [`crate::model`] before anything is written, and its errors are reported by the physical
//! line it starts on (the header is line 1; quoted multi-line cells and `\r\n` endings
//! count the way an editor shows them). A row whose email belongs to an existing customer
//! updates that customer (the columns present in the file; an empty cell clears an optional
//! value, a custom value or the tags, and leaves the status as it is); new customers get
//! the defaults of the API (status `lead`, the importing user as owner). A second row with
//! the same email is an error. Then either nothing is written (some row is invalid, default
//! mode) or all valid rows are, in one transaction with one `crm.customers.imported` event.
//! Valid rows are held (parsed) until then: the body itself is never buffered.
//!
//! **Export.** The customers matching the list's filters, in its sort, fetched page by page
//! (keyset) and written as a streamed CSV with the columns [`export_header`] names, which an
//! import reads back.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::sync::Mutex;

use axum::body::Bytes;
use axum::http::StatusCode;
use csv_async::{AsyncReaderBuilder, ByteRecord};
use futures_util::{Stream, StreamExt};
use platform::caller::TenantScope;
use platform::events::Actor;
use platform::ids::{new_id, Timestamp};
use platform::validate::{optional_text, text, Email, Invalid};
use platform::{ApiError, ApiResult};
use serde::Serialize;
use serde_json::{json, Map, Number, Value};
use tokio_util::io::StreamReader;

use crate::model::{
    merge_custom, phone, reference, sort_key, tags, Customer, CustomerStatus, FieldDefinition,
    FieldKind, MAX_TEXT,
};
use crate::store::{self, CustomerFilter, ImportLookup, ImportUpdate, ImportWrite, Sort};
use crate::Crm;

/// Most invalid lines listed in a report (the total is always given).
pub const MAX_REPORTED_LINES: usize = 1000;
/// Customers per page an export reads.
const EXPORT_PAGE: i64 = 1000;

/// The error a body stream ends with when it passes the import's size limit (as the inner
/// error of an [`io::Error`]); answered 413.
#[derive(Debug, Clone, Copy)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the CSV exceeds the import size limit")
    }
}

impl std::error::Error for TooLarge {}

/// How an import treats invalid rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Any invalid row refuses the whole file (422 `import_invalid`, nothing written).
    AllOrNothing,
    /// Invalid rows are skipped and reported; the valid ones are imported.
    SkipInvalid,
}

/// The limits of one import.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest CSV, in bytes (413 beyond).
    pub max_bytes: usize,
    /// Most data rows (422 beyond).
    pub max_rows: usize,
}

/// One refused input field of a row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field (column), e.g. `email` or `custom.tier`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

/// The errors of one row.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LineErrors {
    /// Physical line of the file the row starts on (the header is line 1).
    pub line: u64,
    /// What is wrong with it.
    pub errors: Vec<FieldError>,
}

/// The answer of an import.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ImportSummary {
    /// Customers created.
    pub created: usize,
    /// Existing customers (matched by email) the file updated, changed or not.
    pub updated: usize,
    /// Invalid rows left out (`mode=skip_invalid`).
    pub skipped: usize,
    /// The invalid rows, by line (at most the first 1000 lines).
    pub errors: Vec<LineErrors>,
}

/// The per-line error report, keeping the first [`MAX_REPORTED_LINES`] lines and the
/// total.
#[derive(Debug, Default)]
struct Report {
    lines: BTreeMap<u64, Vec<Invalid>>,
    total: usize,
}

impl Report {
    fn add(&mut self, line: u64, errors: Vec<Invalid>) {
        self.total += 1;
        self.lines.insert(line, errors);
        if self.lines.len() > MAX_REPORTED_LINES {
            self.lines.pop_last();
        }
    }

    fn into_lines(self) -> Vec<LineErrors> {
        self.lines
            .into_iter()
            .map(|(line, errors)| LineErrors {
                line,
                errors: errors
                    .into_iter()
                    .map(|e| FieldError {
                        field: e.field,
                        reason: e.reason,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// What a column of the file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    FirstName,
    LastName,
    Email,
    Phone,
    Company,
    CompanyId,
    Status,
    OwnerId,
    Tags,
    /// A custom field: index into the definitions.
    Custom(usize),
    /// Read-only (or unnamed) column, skipped.
    Ignored,
}

impl Column {
    /// The standard column of a (lower-cased) header name.
    fn standard(name: &str) -> Option<Column> {
        Some(match name {
            "first_name" => Column::FirstName,
            "last_name" => Column::LastName,
            "email" => Column::Email,
            "phone" => Column::Phone,
            "company" => Column::Company,
            "company_id" => Column::CompanyId,
            "status" => Column::Status,
            "owner_id" => Column::OwnerId,
            "tags" => Column::Tags,
            "id" | "created_at" | "updated_at" | "company_name" | "" => Column::Ignored,
            _ => return None,
        })
    }
}

/// Maps the header row to columns: refuses unknown and repeated columns, and a file
/// without `first_name`.
fn map_header(cells: &[String], defs: &[FieldDefinition]) -> ApiResult<Vec<Column>> {
    let mut columns = Vec::with_capacity(cells.len());
    let mut unknown = Vec::new();
    let mut repeated = Vec::new();
    for (i, raw) in cells.iter().enumerate() {
        let name = raw
            .trim()
            .trim_start_matches('\u{feff}')
            .trim()
            .to_lowercase();
        let column = Column::standard(&name).or_else(|| {
            let bare = name.strip_prefix("custom.").unwrap_or(&name);
            defs.iter().position(|d| d.name == bare).map(Column::Custom)
        });
        match column {
            Some(c) => {
                if c != Column::Ignored && columns.contains(&c) {
                    repeated.push(cells[i].trim().to_string());
                }
                columns.push(c);
            }
            None => unknown.push(raw.trim().to_string()),
        }
    }
    let refuse = |code: &'static str, what: &str, names: Vec<String>| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            format!("{what}: {}", names.join(", ")),
        )
        .with_details(json!({ "columns": names }))
    };
    if !unknown.is_empty() {
        let mut known: Vec<String> = [
            "first_name",
            "last_name",
            "email",
            "phone",
            "company",
            "company_id",
            "status",
            "owner_id",
            "tags",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        known.extend(defs.iter().map(|d| format!("custom.{}", d.name)));
        return Err(refuse(
            "unknown_columns",
            &format!(
                "unknown columns (known: {}; ignored: id, created_at, updated_at, company_name)",
                known.join(", ")
            ),
            unknown,
        ));
    }
    if !repeated.is_empty() {
        return Err(refuse(
            "duplicate_columns",
            "columns given more than once",
            repeated,
        ));
    }
    if !columns.contains(&Column::FirstName) {
        return Err(refuse(
            "missing_columns",
            "the header lacks required columns",
            vec!["first_name".into()],
        ));
    }
    Ok(columns)
}

/// Changes a row makes to an existing customer (`None`: column absent, leave unchanged).
#[derive(Debug, Clone)]
struct Changes {
    first_name: String,
    last_name: Option<String>,
    phone: Option<Option<String>>,
    company_id: Option<Option<String>>,
    status: Option<CustomerStatus>,
    owner_id: Option<Option<String>>,
    tags: Option<Vec<String>>,
    /// Custom values to set; `null` removes one.
    custom: Map<String, Value>,
}

/// A valid row, as what it will write.
#[derive(Debug)]
enum Row {
    Create(Customer),
    Update {
        line: u64,
        id: String,
        changes: Changes,
    },
}

/// Validates rows against the tenant's data read once in an [`ImportLookup`].
struct Validator {
    lookup: ImportLookup,
    columns: Vec<Column>,
    /// The owner of new rows that name none.
    default_owner: Option<String>,
    now: Timestamp,
    /// First line of each email in the file.
    seen_emails: HashMap<String, u64>,
    /// Companies the file names that do not exist yet: key → (id, name).
    new_companies: HashMap<String, (String, String)>,
}

/// Which of a row's cells belong to which field (`None`: no such column).
#[derive(Default)]
struct Cells<'a> {
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    company: Option<&'a str>,
    company_id: Option<&'a str>,
    status: Option<&'a str>,
    owner_id: Option<&'a str>,
    tags: Option<&'a str>,
    custom: Vec<(usize, &'a str)>,
}

impl Validator {
    /// Validates one data row starting on `line`. `Ok(None)`: a blank row, skipped.
    fn row(&mut self, line: u64, record: &ByteRecord) -> Result<Option<Row>, Vec<Invalid>> {
        let mut errors = Vec::new();
        let mut cells = Cells::default();
        let mut blank = true;
        let mut unreadable = false;
        for (i, bytes) in record.iter().enumerate() {
            let column = self.columns.get(i).copied();
            if column == Some(Column::Ignored) {
                blank &= bytes.iter().all(u8::is_ascii_whitespace);
                continue;
            }
            let cell = match std::str::from_utf8(bytes) {
                Ok(s) => s,
                Err(_) => {
                    errors.push(Invalid::new(
                        self.field_name(column, i),
                        "is not valid UTF-8 (save the file as UTF-8)",
                    ));
                    unreadable = true;
                    blank = false;
                    continue;
                }
            };
            if cell.trim().is_empty() {
                // Missing and empty cells are the same; empty surplus cells are harmless.
                if column.is_none() {
                    continue;
                }
            } else {
                blank = false;
            }
            match column {
                Some(Column::FirstName) => cells.first_name = Some(cell),
                Some(Column::LastName) => cells.last_name = Some(cell),
                Some(Column::Email) => cells.email = Some(cell),
                Some(Column::Phone) => cells.phone = Some(cell),
                Some(Column::Company) => cells.company = Some(cell),
                Some(Column::CompanyId) => cells.company_id = Some(cell),
                Some(Column::Status) => cells.status = Some(cell),
                Some(Column::OwnerId) => cells.owner_id = Some(cell),
                Some(Column::Tags) => cells.tags = Some(cell),
                Some(Column::Custom(d)) => cells.custom.push((d, cell)),
                Some(Column::Ignored) => {}
                None => errors.push(Invalid::new(
                    format!("column {}", i + 1),
                    format!(
                        "the row has more cells than the header ({})",
                        self.columns.len()
                    ),
                )),
            }
        }
        if blank && errors.is_empty() {
            return Ok(None);
        }
        if unreadable {
            return Err(errors);
        }
        // Cells short of the header's length are empty.
        for column in self.columns.iter().skip(record.len()) {
            match column {
                Column::FirstName => cells.first_name = Some(""),
                Column::LastName => cells.last_name = Some(""),
                Column::Email => cells.email = Some(""),
                Column::Phone => cells.phone = Some(""),
                Column::Company => cells.company = Some(""),
                Column::CompanyId => cells.company_id = Some(""),
                Column::Status => cells.status = Some(""),
                Column::OwnerId => cells.owner_id = Some(""),
                Column::Tags => cells.tags = Some(""),
                Column::Custom(d) => cells.custom.push((*d, "")),
                Column::Ignored => {}
            }
        }
        self.validate(line, cells, errors)
    }

    /// The field name of column `i` in error reports.
    fn field_name(&self, column: Option<Column>, i: usize) -> String {
        match column {
            Some(Column::FirstName) => "first_name".into(),
            Some(Column::LastName) => "last_name".into(),
            Some(Column::Email) => "email".into(),
            Some(Column::Phone) => "phone".into(),
            Some(Column::Company) => "company".into(),
            Some(Column::CompanyId) => "company_id".into(),
            Some(Column::Status) => "status".into(),
            Some(Column::OwnerId) => "owner_id".into(),
            Some(Column::Tags) => "tags".into(),
            Some(Column::Custom(d)) => format!("custom.{}", self.lookup.customer_fields[d].name),
            Some(Column::Ignored) | None => format!("column {}", i + 1),
        }
    }

    fn validate(
        &mut self,
        line: u64,
        cells: Cells<'_>,
        mut errors: Vec<Invalid>,
    ) -> Result<Option<Row>, Vec<Invalid>> {
        let keep = |r: Result<Option<String>, Invalid>, errors: &mut Vec<Invalid>| match r {
            Ok(v) => v,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        let first_name = keep(
            text("first_name", cells.first_name.unwrap_or(""), MAX_TEXT).map(Some),
            &mut errors,
        );
        let last_name = cells.last_name.map(|l| {
            keep(optional_text("last_name", l, MAX_TEXT), &mut errors).unwrap_or_default()
        });
        let phone = cells.phone.map(|p| keep(phone(p), &mut errors));
        let status = match cells.status.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => match CustomerStatus::parse(&s.to_lowercase()) {
                Some(status) => Some(status),
                None => {
                    errors.push(Invalid::new(
                        "status",
                        "must be one of lead, prospect, customer, churned",
                    ));
                    None
                }
            },
        };
        let owner_id = cells.owner_id.map(|o| match o.trim() {
            "" => None,
            o => match reference("owner_id", o) {
                Ok(id)
                    if self.lookup.users.contains(&id)
                        || self.default_owner.as_deref() == Some(id.as_str()) =>
                {
                    Some(id)
                }
                Ok(_) => {
                    errors.push(Invalid::new("owner_id", "no such user in this tenant"));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        });
        let tags = cells.tags.map(|t| {
            let raw: Vec<String> = t
                .split([';', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            match tags(&raw) {
                Ok(tags) => tags,
                Err(e) => {
                    errors.push(e);
                    Vec::new()
                }
            }
        });
        let company_id = self.company(&cells, &mut errors);
        let mut custom = Map::new();
        for (d, cell) in &cells.custom {
            let def = &self.lookup.customer_fields[*d];
            match custom_cell(def, cell) {
                Ok(v) => {
                    custom.insert(def.name.clone(), v);
                }
                Err(e) => errors.push(e),
            }
        }
        let mut existing = None;
        let email = match cells.email.map(str::trim).filter(|e| !e.is_empty()) {
            None => None,
            Some(raw) => match Email::parse(raw) {
                Ok(email) => {
                    let key = sort_key(email.as_str());
                    if let Some(first) = self.seen_emails.get(&key) {
                        errors.push(Invalid::new("email", format!("duplicate of line {first}")));
                    } else {
                        existing = self.lookup.emails.get(&key).cloned();
                        self.seen_emails.insert(key, line);
                    }
                    Some(email.into_string())
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
        };
        let changes = Changes {
            first_name: first_name.unwrap_or_default(),
            last_name,
            phone,
            company_id,
            status,
            owner_id,
            tags,
            custom,
        };
        if let Some(id) = existing {
            // Checked against the customer's current values once all rows are read.
            return if errors.is_empty() {
                Ok(Some(Row::Update { line, id, changes }))
            } else {
                Err(errors)
            };
        }
        let custom = match merge_custom(&self.lookup.customer_fields, &Map::new(), &changes.custom)
        {
            Ok(custom) => custom,
            Err(e) => {
                // A value refused above is not also "required".
                let refused: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
                errors.extend(e.into_iter().filter(|e| !refused.contains(&e.field)));
                Map::new()
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Some(Row::Create(Customer {
            id: new_id(),
            first_name: changes.first_name,
            last_name: changes.last_name.unwrap_or_default(),
            email,
            phone: changes.phone.flatten(),
            company_id: changes.company_id.flatten(),
            company_name: None,
            status: changes.status.unwrap_or(CustomerStatus::Lead),
            owner_id: changes
                .owner_id
                .flatten()
                .or_else(|| self.default_owner.clone()),
            tags: changes.tags.unwrap_or_default(),
            custom,
            created_at: self.now,
            updated_at: self.now,
            version: 1,
        })))
    }

    /// The company of a row: `company_id` when given, else the company named `company`
    /// (a new one when the tenant has none of that name); `Some(None)` clears it.
    fn company(&mut self, cells: &Cells<'_>, errors: &mut Vec<Invalid>) -> Option<Option<String>> {
        if cells.company.is_none() && cells.company_id.is_none() {
            return None;
        }
        if let Some(id) = cells.company_id.map(str::trim).filter(|s| !s.is_empty()) {
            return match reference("company_id", id) {
                Ok(id) if self.lookup.company_ids.contains(&id) => Some(Some(id)),
                Ok(_) => {
                    errors.push(Invalid::new("company_id", "no such company in this tenant"));
                    None
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            };
        }
        let name = match optional_text("company", cells.company.unwrap_or(""), MAX_TEXT) {
            Ok(Some(name)) => name,
            Ok(None) => return Some(None),
            Err(e) => {
                errors.push(e);
                return None;
            }
        };
        let key = sort_key(&name);
        if let Some(id) = self.lookup.companies.get(&key) {
            return Some(Some(id.clone()));
        }
        if let Some((id, _)) = self.new_companies.get(&key) {
            return Some(Some(id.clone()));
        }
        if self.lookup.company_fields_required {
            errors.push(Invalid::new(
                "company",
                "no company of this name; companies have required custom fields, so create \
                 it first",
            ));
            return None;
        }
        let id = new_id();
        self.new_companies.insert(key, (id.clone(), name));
        Some(Some(id))
    }
}

/// Parses a custom field's cell per the field's kind (blank: `null`, removing the value);
/// [`merge_custom`] then applies the field's own rules.
fn custom_cell(def: &FieldDefinition, cell: &str) -> Result<Value, Invalid> {
    let cell = cell.trim();
    if cell.is_empty() {
        return Ok(Value::Null);
    }
    let field = || format!("custom.{}", def.name);
    Ok(match def.kind {
        FieldKind::Text | FieldKind::Date => Value::String(cell.to_string()),
        FieldKind::Number => {
            if let Ok(n) = cell.parse::<i64>() {
                Value::Number(n.into())
            } else {
                cell.parse::<f64>()
                    .ok()
                    .and_then(Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| Invalid::new(field(), "must be a number"))?
            }
        }
        FieldKind::Boolean => match cell.to_lowercase().as_str() {
            "true" | "yes" | "1" => Value::Bool(true),
            "false" | "no" | "0" => Value::Bool(false),
            _ => {
                return Err(Invalid::new(
                    field(),
                    "must be true or false (or yes/no, 1/0)",
                ))
            }
        },
        FieldKind::Select => Value::String(
            def.options
                .iter()
                .find(|o| o.as_str() == cell)
                .or_else(|| def.options.iter().find(|o| o.eq_ignore_ascii_case(cell)))
                .cloned()
                .unwrap_or_else(|| cell.to_string()),
        ),
    })
}

/// Applies a row's changes to the customer's current state: `Ok(None)` when nothing
/// changes, else the update (version incremented).
fn apply_update(
    current: Customer,
    changes: Changes,
    defs: &[FieldDefinition],
    now: Timestamp,
) -> Result<Option<ImportUpdate>, Vec<Invalid>> {
    let custom = merge_custom(defs, &current.custom, &changes.custom)?;
    let mut next = current.clone();
    next.first_name = changes.first_name;
    if let Some(v) = changes.last_name {
        next.last_name = v;
    }
    if let Some(v) = changes.phone {
        next.phone = v;
    }
    if let Some(v) = changes.company_id {
        next.company_id = v;
    }
    if let Some(v) = changes.status {
        next.status = v;
    }
    if let Some(v) = changes.owner_id {
        next.owner_id = v;
    }
    if let Some(v) = changes.tags {
        next.tags = v;
    }
    next.custom = custom;
    if next == current {
        return Ok(None);
    }
    let tags_changed = next.tags != current.tags;
    next.version = current.version + 1;
    next.updated_at = now;
    Ok(Some(ImportUpdate {
        customer: next,
        expected_version: current.version,
        tags_changed,
    }))
}

/// Offsets of the line-ending bytes (`\r`, `\n`) of the body that the parser has not yet
/// passed, to find the physical line each record starts on: the parser's own position
/// counts `\n`s consumed, but a record's start may still lie behind blank lines or the
/// `\n` of a `\r\n`.
#[derive(Debug, Default)]
struct LineEndings {
    /// Bytes of the body seen so far.
    seen: u64,
    /// (offset, is `\n`) of every line-ending byte at or after the last record start.
    ends: VecDeque<(u64, bool)>,
}

impl LineEndings {
    fn push_chunk(&mut self, chunk: &[u8]) {
        let base = self.seen;
        for (i, b) in chunk.iter().enumerate() {
            if *b == b'\n' || *b == b'\r' {
                self.ends.push_back((base + i as u64, *b == b'\n'));
            }
        }
        self.seen += chunk.len() as u64;
    }

    /// The line a record starts on, given the parser's position (byte offset and line)
    /// before it: that line plus the `\n`s of the line endings right at that offset.
    fn record_line(&mut self, byte: u64, line: u64) -> u64 {
        while self.ends.front().is_some_and(|(at, _)| *at < byte) {
            self.ends.pop_front();
        }
        let newlines = (byte..)
            .zip(&self.ends)
            .take_while(|(expect, (at, _))| at == expect)
            .filter(|(_, (_, lf))| *lf)
            .count();
        line + newlines as u64
    }
}

/// Maps a CSV read error: the body passed the size limit (413) or could not be read (400).
fn read_error(e: &csv_async::Error, limits: Limits) -> ApiError {
    let too_large = match e.kind() {
        csv_async::ErrorKind::Io(io) => io
            .get_ref()
            .is_some_and(|inner| inner.downcast_ref::<TooLarge>().is_some()),
        _ => false,
    };
    if too_large {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!(
                "the CSV exceeds the import limit of {} bytes",
                limits.max_bytes
            ),
        )
    } else {
        ApiError::bad_request("unreadable_body", "the request body could not be read")
    }
}

/// The 413 of a body announced larger than the limit.
pub fn too_large(limits: Limits) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "the CSV exceeds the import limit of {} bytes",
            limits.max_bytes
        ),
    )
}

/// Imports the CSV `body` into the scope's tenant (see the module documentation) and
/// answers the counts and the report of invalid rows.
#[tracing::instrument(skip_all, err(level = "debug"))]
pub async fn import_customers<S>(
    crm: &Crm,
    scope: &TenantScope,
    actor: &Actor,
    default_owner: Option<String>,
    mode: Mode,
    limits: Limits,
    body: S,
) -> ApiResult<ImportSummary>
where
    S: Stream<Item = Result<Bytes, io::Error>> + Send,
{
    let lookup = store::import_lookup(crm.db().reader(), scope).await?;
    let endings = Mutex::new(LineEndings::default());
    let max = limits.max_bytes as u64;
    let counted = body.map(|chunk| {
        let chunk = chunk?;
        let mut endings = endings
            .lock()
            .map_err(|_| io::Error::other("line tracking failed"))?;
        if endings.seen + chunk.len() as u64 > max {
            return Err(io::Error::other(TooLarge));
        }
        endings.push_chunk(&chunk);
        Ok(chunk)
    });
    let mut reader = AsyncReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .create_reader(StreamReader::new(Box::pin(counted)));
    let mut record = ByteRecord::new();
    if !reader
        .read_byte_record(&mut record)
        .await
        .map_err(|e| read_error(&e, limits))?
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_file",
            "the file is empty: the first line must name the columns",
        ));
    }
    let header: Vec<String> = record
        .iter()
        .map(|cell| String::from_utf8_lossy(cell).into_owned())
        .collect();
    let columns = map_header(&header, &lookup.customer_fields)?;
    let now = Timestamp::now();
    let mut validator = Validator {
        lookup,
        columns,
        default_owner,
        now,
        seen_emails: HashMap::new(),
        new_companies: HashMap::new(),
    };
    let mut report = Report::default();
    let mut valid = Vec::new();
    let mut rows = 0usize;
    while reader
        .read_byte_record(&mut record)
        .await
        .map_err(|e| read_error(&e, limits))?
    {
        let line = match record.position() {
            Some(pos) => endings
                .lock()
                .map_err(|_| ApiError::internal("import", "line tracking failed"))?
                .record_line(pos.byte(), pos.line()),
            None => 0,
        };
        match validator.row(line, &record) {
            Ok(None) => continue,
            Ok(Some(row)) => valid.push(row),
            Err(errors) => report.add(line, errors),
        }
        rows += 1;
        if rows.is_multiple_of(4096) {
            // Parsing buffered input never waits: let other tasks of this thread run.
            tokio::task::yield_now().await;
        }
        if rows > limits.max_rows {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "too_many_rows",
                format!("the file has more than {} rows", limits.max_rows),
            ));
        }
    }
    drop(reader);

    // Rows updating existing customers are checked against their current values.
    let update_ids: Vec<String> = valid
        .iter()
        .filter_map(|r| match r {
            Row::Update { id, .. } => Some(id.clone()),
            Row::Create(_) => None,
        })
        .collect();
    let mut current: HashMap<String, Customer> =
        store::customers_by_ids(crm.db().reader(), scope, &update_ids)
            .await?
            .into_iter()
            .map(|c| (c.id.clone(), c))
            .collect();
    let Validator {
        lookup,
        new_companies,
        ..
    } = validator;
    let mut write = ImportWrite::default();
    for row in valid {
        match row {
            Row::Create(c) => write.created.push(c),
            Row::Update { line, id, changes } => {
                let Some(cur) = current.remove(&id) else {
                    report.add(
                        line,
                        vec![Invalid::new(
                            "email",
                            "the customer with this email was deleted meanwhile",
                        )],
                    );
                    continue;
                };
                match apply_update(cur, changes, &lookup.customer_fields, now) {
                    Ok(Some(update)) => write.updated.push(update),
                    Ok(None) => write.unchanged += 1,
                    Err(errors) => report.add(line, errors),
                }
            }
        }
    }
    let invalid = report.total;
    if invalid > 0 && mode == Mode::AllOrNothing {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "import_invalid",
            format!("{invalid} of {rows} rows are invalid; nothing was imported"),
        )
        .with_details(json!({
            "invalid_rows": invalid,
            "rows": rows,
            "errors": report.into_lines(),
        })));
    }
    // Only the new companies a valid row refers to are created.
    let used: std::collections::HashSet<&str> = write
        .created
        .iter()
        .filter_map(|c| c.company_id.as_deref())
        .chain(
            write
                .updated
                .iter()
                .filter_map(|u| u.customer.company_id.as_deref()),
        )
        .collect();
    write.companies = new_companies
        .into_values()
        .filter(|(id, _)| used.contains(id.as_str()))
        .collect();
    write.companies.sort();
    write.skipped = invalid;
    if !write.created.is_empty() || !write.updated.is_empty() {
        store::write_import(crm.db(), scope, &new_id(), &write, now, actor).await?;
        crm.announce();
    }
    Ok(ImportSummary {
        created: write.created.len(),
        updated: write.updated.len() + write.unchanged,
        skipped: invalid,
        errors: report.into_lines(),
    })
}

/// The columns of an export: the customer's fields, then one `custom.<name>` per custom
/// customer field of the tenant.
pub fn export_header(defs: &[FieldDefinition]) -> Vec<String> {
    let mut names: Vec<String> = [
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "company",
        "status",
        "owner_id",
        "tags",
        "created_at",
        "updated_at",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend(defs.iter().map(|d| format!("custom.{}", d.name)));
    names
}

/// Appends one CSV field, quoted when needed (RFC 4180).
fn push_field(out: &mut Vec<u8>, first: bool, s: &str) {
    if !first {
        out.push(b',');
    }
    let quote = s.contains([',', '"', '\n', '\r'])
        || s.starts_with(char::is_whitespace)
        || s.ends_with(char::is_whitespace);
    if quote {
        out.push(b'"');
        out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(s.as_bytes());
    }
}

/// Appends a CSV line of `cells`.
fn push_line<'a>(out: &mut Vec<u8>, cells: impl IntoIterator<Item = &'a str>) {
    for (i, cell) in cells.into_iter().enumerate() {
        push_field(out, i == 0, cell);
    }
    out.extend_from_slice(b"\r\n");
}

/// A custom value as a cell.
fn custom_text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => other.to_string(),
    }
}

/// Appends a customer's line of an export.
fn push_customer(out: &mut Vec<u8>, c: &Customer, defs: &[FieldDefinition]) {
    let tags = c.tags.join(";");
    let created = c.created_at.to_rfc3339();
    let updated = c.updated_at.to_rfc3339();
    let custom: Vec<String> = defs
        .iter()
        .map(|d| custom_text(c.custom.get(&d.name)))
        .collect();
    let fixed = [
        c.id.as_str(),
        c.first_name.as_str(),
        c.last_name.as_str(),
        c.email.as_deref().unwrap_or(""),
        c.phone.as_deref().unwrap_or(""),
        c.company_name.as_deref().unwrap_or(""),
        c.status.as_str(),
        c.owner_id.as_deref().unwrap_or(""),
        tags.as_str(),
        created.as_str(),
        updated.as_str(),
    ];
    push_line(
        out,
        fixed.into_iter().chain(custom.iter().map(String::as_str)),
    );
}

/// Where an export stands between pages.
struct ExportState {
    crm: Crm,
    scope: TenantScope,
    filter: CustomerFilter,
    sort: Sort,
    defs: Vec<FieldDefinition>,
    /// Where the next page starts; `None` before the first.
    cursor: Option<String>,
    header_sent: bool,
    done: bool,
}

/// The CSV of the scope's customers matching `filter` in `sort` order, as a stream of
/// chunks: the header, then one chunk per page of [`EXPORT_PAGE`] customers read by
/// keyset, so that no more than a page is ever held in memory.
pub fn export_stream(
    crm: Crm,
    scope: TenantScope,
    filter: CustomerFilter,
    sort: Sort,
    defs: Vec<FieldDefinition>,
) -> impl Stream<Item = Result<Bytes, ApiError>> + Send + 'static {
    let state = ExportState {
        crm,
        scope,
        filter,
        sort,
        defs,
        cursor: None,
        header_sent: false,
        done: false,
    };
    futures_util::stream::try_unfold(state, |mut st| async move {
        if st.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        if !st.header_sent {
            let header = export_header(&st.defs);
            push_line(&mut out, header.iter().map(String::as_str));
            st.header_sent = true;
        }
        let page = store::list_customers(
            st.crm.db().reader(),
            &st.scope,
            &st.filter,
            &st.sort,
            st.cursor.as_deref(),
            EXPORT_PAGE,
        )
        .await?;
        st.done = (page.len() as i64) < EXPORT_PAGE;
        if let Some(last) = page.last() {
            st.cursor = Some(Sort::cursor(
                store::customer_sort_value(last, &st.sort),
                &last.id,
            ));
        }
        out.reserve(page.len() * 200);
        for c in &page {
            push_customer(&mut out, c, &st.defs);
        }
        Ok(Some((Bytes::from(out), st)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, kind: FieldKind) -> FieldDefinition {
        FieldDefinition {
            id: new_id(),
            entity: crate::model::Entity::Customer,
            name: name.into(),
            label: name.into(),
            kind,
            options: vec!["Gold".into(), "Silver".into()],
            required: false,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            version: 1,
        }
    }

    #[test]
    fn headers_map_to_columns() {
        let defs = vec![
            def("tier", FieldKind::Select),
            def("email", FieldKind::Text),
        ];
        let cells: Vec<String> = ["\u{feff}First_Name ", "EMAIL", "custom.email", "Tier", "id"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            map_header(&cells, &defs).expect("valid"),
            vec![
                Column::FirstName,
                Column::Email,
                Column::Custom(1),
                Column::Custom(0),
                Column::Ignored
            ]
        );
        let unknown =
            map_header(&["first_name".into(), "Shoe size".into()], &defs).expect_err("unknown");
        assert_eq!(unknown.code, "unknown_columns");
        assert_eq!(
            unknown.details.expect("details")["columns"],
            json!(["Shoe size"])
        );
        let twice = map_header(
            &["first_name".into(), "tier".into(), "custom.tier".into()],
            &defs,
        )
        .expect_err("repeated");
        assert_eq!(twice.code, "duplicate_columns");
        assert_eq!(
            map_header(&["email".into()], &defs)
                .expect_err("missing")
                .code,
            "missing_columns"
        );
    }

    #[test]
    fn custom_cells_parse_per_kind() {
        let n = def("n", FieldKind::Number);
        assert_eq!(custom_cell(&n, " 42 ").expect("int"), json!(42));
        assert_eq!(custom_cell(&n, "1.5").expect("float"), json!(1.5));
        assert!(custom_cell(&n, "1,5").is_err());
        assert!(custom_cell(&n, "NaN").is_err());
        let b = def("b", FieldKind::Boolean);
        for (cell, v) in [("Yes", true), ("0", false), ("TRUE", true), ("no", false)] {
            assert_eq!(custom_cell(&b, cell).expect("bool"), json!(v));
        }
        assert!(custom_cell(&b, "maybe").is_err());
        let s = def("s", FieldKind::Select);
        assert_eq!(custom_cell(&s, "gold").expect("select"), json!("Gold"));
        assert_eq!(
            custom_cell(&s, "bronze").expect("left to merge"),
            json!("bronze")
        );
        assert_eq!(custom_cell(&s, "  ").expect("blank"), Value::Null);
    }

    #[test]
    fn record_lines_skip_blank_lines_and_crlf() {
        // "a\r\n\r\nb": the parser puts record "b" at line 1, byte 2 (after "a\r").
        let mut endings = LineEndings::default();
        endings.push_chunk(b"a\r\n\r\nb");
        assert_eq!(endings.record_line(2, 1), 3);
        let mut endings = LineEndings::default();
        endings.push_chunk(b"a\n\n\nb\n");
        assert_eq!(endings.record_line(2, 2), 4);
    }

    #[test]
    fn fields_are_quoted_when_needed() {
        let mut out = Vec::new();
        push_line(
            &mut out,
            ["a", "b,c", "say \"hi\"", "two\nlines", " pad", ""],
        );
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\" pad\",\r\n"
        );
    }

    #[test]
    fn reports_keep_the_first_lines() {
        let mut report = Report::default();
        for line in (2..=MAX_REPORTED_LINES as u64 + 10).rev() {
            report.add(line, vec![Invalid::new("x", "y")]);
        }
        assert_eq!(report.total, MAX_REPORTED_LINES + 9);
        let lines = report.into_lines();
        assert_eq!(lines.len(), MAX_REPORTED_LINES);
        assert_eq!(lines[0].line, 2);
    }
}
