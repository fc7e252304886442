//! Input rules every service shares: display texts and email addresses. Each refusal names
//! the input field, and answers 422 `validation_failed` through [`ApiError`].

use crate::error::ApiError;

/// Input that breaks a rule; answered as 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The offending input field.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl Invalid {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        ApiError::validation(&e.field, e.reason)
    }
}

/// A required one-line text: surrounding whitespace dropped, then 1..=`max` characters
/// without control characters.
pub fn text(field: &str, s: &str, max: usize) -> Result<String, Invalid> {
    match optional_text(field, s, max)? {
        Some(t) => Ok(t),
        None => Err(Invalid::new(field, "must not be empty")),
    }
}

/// An optional one-line text: like [`text`], but blank means absent.
pub fn optional_text(field: &str, s: &str, max: usize) -> Result<Option<String>, Invalid> {
    let t = s.trim();
    if t.is_empty() {
        return Ok(None);
    }
    if t.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if t.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(Some(t.to_string()))
}

/// A multi-line text (notes): like [`text`], but line breaks and tabs are allowed.
pub fn long_text(field: &str, s: &str, max: usize) -> Result<String, Invalid> {
    let t = s.trim();
    if t.is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    if t.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters long"),
        ));
    }
    if t.chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(t.to_string())
}

/// A normalised (trimmed, lowercased) email address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Parses the input field `field` as an address: one `@`, a non-empty local part, a
    /// dotted domain, at most 254 characters, no whitespace.
    pub fn parse_field(field: &str, raw: &str) -> Result<Email, Invalid> {
        let email = raw.trim().to_lowercase();
        let invalid = || Invalid::new(field, "must be an email address like name@example.com");
        if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        if local.is_empty()
            || domain.contains('@')
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err(invalid());
        }
        Ok(Email(email))
    }

    /// Parses the input field `email`.
    pub fn parse(raw: &str) -> Result<Email, Invalid> {
        Self::parse_field("email", raw)
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The normalised text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  John.Doe@Demo.COM ")
                .expect("valid")
                .as_str(),
            "john.doe@demo.com"
        );
        for bad in [
            "",
            "john",
            "@demo.com",
            "john@",
            "john@demo",
            "a b@demo.com",
            "a@b@c.com",
            "john@.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Email::parse(&format!("{}@demo.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn texts() {
        assert_eq!(text("name", "  Jane  ", 10).expect("ok"), "Jane");
        assert!(text("name", "   ", 10).is_err());
        assert_eq!(optional_text("name", "   ", 10).expect("ok"), None);
        assert!(text("name", &"x".repeat(11), 10).is_err());
        assert!(text("name", "a\u{7}b", 10).is_err());
        assert!(text("name", "a\nb", 10).is_err());
        assert_eq!(long_text("body", "a\nb", 10).expect("ok"), "a\nb");
        assert!(long_text("body", "a\u{0}b", 10).is_err());
    }
}
