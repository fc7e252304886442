//! Domain types of the registry and the rules that validate input before it reaches the store.

use platform::ids::{is_uuid, Timestamp};
use platform::tenants::TenantStatus;
use serde::Serialize;
use serde_json::Value;

pub use platform::validate::Invalid;

/// Longest client or tenant name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A tenant's URL-safe short name: 2..=63 characters of `[a-z0-9-]`, starting with a letter
/// or digit and not ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    /// Validates `s` as the value of input field `slug`.
    pub fn parse(s: &str) -> Result<Slug, Invalid> {
        let invalid = |reason: &str| Err(Invalid::new("slug", reason));
        let len = s.chars().count();
        if !(2..=63).contains(&len) {
            return invalid("must be 2 to 63 characters long");
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return invalid("may contain only lowercase letters a-z, digits and '-'");
        }
        if s.starts_with('-') {
            return invalid("must start with a letter or digit");
        }
        if s.ends_with('-') {
            return invalid("must not end with '-'");
        }
        // Tenants are looked up by "id or slug"; a slug that reads as an id would be
        // unreachable by slug.
        if is_uuid(s) {
            return invalid("must not have the form of an id");
        }
        Ok(Slug(s.to_string()))
    }

    /// The slug text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a display name (of a client or a tenant) given as input field `field`:
/// surrounding whitespace is dropped, the rest must be 1..=200 characters without control
/// characters.
pub fn parse_name(field: &'static str, s: &str) -> Result<String, Invalid> {
    platform::validate::text(field, s, MAX_NAME_CHARS)
}

/// A platform admin's login name, normalized to lowercase: 3..=64 characters of
/// `[a-z0-9._-]`, starting with a letter or digit. No `@`: the login endpoint tells
/// superadmins (user names) from tenant users (emails) by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username(String);

impl Username {
    /// Validates and normalizes `s` as the value of input field `username`.
    pub fn parse(s: &str) -> Result<Username, Invalid> {
        let name = s.trim().to_ascii_lowercase();
        let len = name.chars().count();
        if !(3..=64).contains(&len) {
            return Err(Invalid::new("username", "must be 3 to 64 characters long"));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(Invalid::new(
                "username",
                "may contain only letters, digits and . _ -",
            ));
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new(
                "username",
                "must start with a letter or digit",
            ));
        }
        Ok(Username(name))
    }

    /// The normalized name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which event types an audit query asks for: one exact type, or every type under a prefix
/// (`auth.login.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionFilter {
    /// Exactly this event type.
    Exact(String),
    /// Every event type starting with this text.
    Prefix(String),
}

impl ActionFilter {
    /// Parses the `action` query parameter: dotted lowercase words, optionally ending in `*`.
    pub fn parse(s: &str) -> Result<ActionFilter, Invalid> {
        let (text, prefix) = match s.strip_suffix('*') {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        if !text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
        {
            return Err(Invalid::new(
                "action",
                "must be an event type (a-z, 0-9, '.', '_', '-'), optionally ending in '*'",
            ));
        }
        if prefix {
            Ok(ActionFilter::Prefix(text.to_string()))
        } else if text.is_empty() {
            Err(Invalid::new("action", "must not be empty"))
        } else {
            Ok(ActionFilter::Exact(text.to_string()))
        }
    }
}

/// A client of the platform: the customer that owns tenants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Client {
    /// Client id (UUIDv7).
    pub id: String,
    /// Unique display name.
    pub name: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the `ETag`).
    pub version: i64,
}

/// A tenant: one isolated customer space of a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Tenant {
    /// Tenant id (UUIDv7).
    pub id: String,
    /// Unique URL-safe short name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Owning client.
    pub client_id: String,
    /// Lifecycle state.
    pub status: TenantStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// Version for optimistic concurrency (also the `ETag`).
    pub version: i64,
}

/// A platform admin as the store holds it (never leaves the crate with its hash).
#[derive(Debug, Clone)]
pub(crate) struct AdminRecord {
    pub id: String,
    pub username: String,
    pub password_hash: String,
}

/// One service in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ServiceEntry {
    /// Service name, e.g. `auth`.
    pub name: String,
    /// Running version.
    pub version: String,
    /// Base URL it serves on.
    pub url: String,
    /// `up`, `down`, or `unknown` before the first health check.
    pub status: String,
    /// When its health was last checked.
    pub last_checked_at: Option<Timestamp>,
}

/// Who caused an audited event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditActor {
    /// User or admin id; `null` for the platform itself.
    pub id: Option<String>,
    /// `superadmin`, `admin`, `user` or `system`.
    pub role: String,
    /// Display name, when the emitter knew it.
    pub name: Option<String>,
}

/// One entry of the audit log: one event of any service.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The event id (UUIDv7, time-ordered).
    pub id: String,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Who caused it.
    pub actor: AuditActor,
    /// Tenant it belongs to; `null` for platform-level changes.
    pub tenant_id: Option<String>,
    /// The event type, e.g. `cdx.tenant.created`.
    pub action: String,
    /// Id of the entity that changed.
    pub target: String,
    /// Request id of the HTTP request that caused it.
    pub request_id: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
    /// The event's payload.
    #[schema(value_type = Object)]
    pub detail: Value,
    /// Names of the changed fields, when the event listed them.
    pub changed: Option<Vec<String>>,
    /// Position in the audit hash chain (gap-free from 1).
    pub seq: Option<i64>,
    /// Hash of the entry before it (64 hex digits; all zeros before entry 1).
    pub prev_hash: Option<String>,
    /// `hex(SHA-256(prev_hash || canonical encoding of the entry))`.
    pub hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rules() {
        for ok in ["ab", "demo", "a-b", "9lives", "x1-2-3", &"a".repeat(63)] {
            assert_eq!(
                Slug::parse(ok).map(|s| s.as_str().to_string()),
                Ok(ok.to_string())
            );
        }
        for bad in [
            "",
            "a",
            "-ab",
            "ab-",
            "Demo",
            "a_b",
            "a b",
            "ünï",
            &"a".repeat(64),
            "0190a5d2-0f7e-7c3a-9a1b-123456789abc",
            "0190a5d20f7e7c3a9a1b123456789abc",
        ] {
            let err = Slug::parse(bad).expect_err(bad);
            assert_eq!(err.field, "slug", "{bad}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(parse_name("name", "  Acme  ").as_deref(), Ok("Acme"));
        assert_eq!(parse_name("name", "Zoë & Co.").as_deref(), Ok("Zoë & Co."));
        assert!(parse_name("name", "   ").is_err());
        assert!(parse_name("name", "a\u{0}b").is_err());
        assert!(parse_name("name", &"é".repeat(MAX_NAME_CHARS)).is_ok());
        let err = parse_name("name", &"x".repeat(MAX_NAME_CHARS + 1)).expect_err("too long");
        assert_eq!(err.field, "name");
    }

    #[test]
    fn usernames_are_normalized() {
        assert_eq!(
            Username::parse(" Test ").map(|u| u.0),
            Ok("test".to_string())
        );
        assert!(Username::parse("ops.team-1").is_ok());
        for bad in [
            "ab",
            ".dot",
            "ops@example.com",
            "a b c",
            "x;drop",
            &"a".repeat(65),
        ] {
            assert_eq!(Username::parse(bad).expect_err(bad).field, "username");
        }
    }

    #[test]
    fn action_filters() {
        assert_eq!(
            ActionFilter::parse("auth.login.*"),
            Ok(ActionFilter::Prefix("auth.login.".into()))
        );
        assert_eq!(
            ActionFilter::parse("cdx.tenant.created"),
            Ok(ActionFilter::Exact("cdx.tenant.created".into()))
        );
        assert_eq!(
            ActionFilter::parse("*"),
            Ok(ActionFilter::Prefix(String::new()))
        );
        for bad in ["", "a*b", "auth%", "Auth.login", "a.**"] {
            assert!(ActionFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn invalid_input_is_a_422_naming_the_field() {
        let err: platform::ApiError = Slug::parse("-").expect_err("invalid").into();
        assert_eq!(err.status.as_u16(), 422);
        assert_eq!(err.details.expect("details")["field"], "slug");
    }
}
