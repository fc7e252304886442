//! Domain types of the auth service and their validation.

use platform::caller::Role;
use platform::ApiError;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use platform::validate::Email;

/// A new password that meets the policy.
#[derive(Debug, Clone)]
pub struct NewPassword(SecretString);

impl NewPassword {
    /// Checks the platform's password policy ([`platform::password::check_policy`]).
    pub fn parse(field: &str, raw: &SecretString) -> Result<NewPassword, ApiError> {
        platform::password::check_policy(field, raw)?;
        Ok(NewPassword(raw.clone()))
    }

    /// The demo data's well-known passwords, which predate the policy. Only the demo seed
    /// uses this.
    pub fn demo(raw: &str) -> NewPassword {
        NewPassword(SecretString::from(raw))
    }

    /// The secret.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }
}

/// Role of a tenant user (the superadmin is not a tenant user).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    /// Manages the tenant's users and settings.
    Admin,
    /// Uses the tenant's services.
    User,
}

impl UserRole {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        self.role().as_str()
    }

    /// As a platform role.
    pub fn role(self) -> Role {
        match self {
            UserRole::Admin => Role::Admin,
            UserRole::User => Role::User,
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<UserRole> {
        match s {
            "admin" => Some(UserRole::Admin),
            "user" => Some(UserRole::User),
            _ => None,
        }
    }
}

/// Whether a user may log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    /// May log in.
    Active,
    /// May not log in; sessions revoked.
    Disabled,
}

impl UserStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    /// Parses the stored text.
    pub fn parse(s: &str) -> Option<UserStatus> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// A display name: trimmed, 1..=200 characters, or absent.
pub fn parse_name(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(raw
        .map(|n| platform::validate::optional_text("name", n, 200))
        .transpose()?
        .flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_policy() {
        assert!(NewPassword::parse("password", &SecretString::from("short")).is_err());
        assert!(NewPassword::parse("password", &SecretString::from("long enough")).is_ok());
        assert!(NewPassword::parse("password", &SecretString::from("x".repeat(1025))).is_err());
    }

    #[test]
    fn names() {
        assert_eq!(
            parse_name(Some("  Jane  ")).expect("ok"),
            Some("Jane".into())
        );
        assert_eq!(parse_name(Some("   ")).expect("ok"), None);
        assert!(parse_name(Some(&"x".repeat(201))).is_err());
    }
}
