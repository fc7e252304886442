//! docs/events.md lists every event type the code emits or understands, and nothing else:
//! checked by reading both. Event types are written as string literals (constants, match
//! arms, the CRM's `EVENT_TYPES`), so every literal of that shape in the crates' sources
//! counts as one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The services whose names lead an event type.
const SERVICES: &[&str] = &["cdx", "auth", "crm", "cms", "billing", "analytics"];

/// Whether `text` is shaped like an event type, `<service>.<entity>.<action>`.
fn is_event_type(text: &str) -> bool {
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && SERVICES.contains(&parts[0])
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
}

/// The event types in `text` enclosed in `delimiter` (`"` in code, `` ` `` in Markdown).
fn event_types_between(text: &str, delimiter: char) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (start, _) in text.match_indices(delimiter) {
        let rest = &text[start + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        if rest[end..].starts_with(delimiter) && is_event_type(&rest[..end]) {
            found.insert(rest[..end].to_string());
        }
    }
    found
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn event_types_in_code() -> BTreeSet<String> {
    let mut files = Vec::new();
    for krate in std::fs::read_dir(workspace().join("crates")).expect("crates") {
        let src = krate.expect("a crate").path().join("src");
        if src.is_dir() {
            sources(&src, &mut files);
        }
    }
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).expect("a source file");
            event_types_between(&text, '"')
        })
        .collect()
}

#[test]
fn the_event_catalogue_lists_every_event_type_and_no_other() {
    let code = event_types_in_code();
    // The scan sees the constants and lists it must see.
    for known in [
        cdx::events::TENANT_EXPORTED,
        cdx::events::ADMIN_PASSWORD_CHANGED,
        platform::tenants::TENANT_DELETED,
        platform::caller::SESSION_REVOKED,
        cdx::aggregates::BILLING_SUBSCRIPTION_CHANGED,
    ]
    .into_iter()
    .chain(crm::events::EVENT_TYPES.iter().copied())
    {
        assert!(code.contains(known), "{known} not found in the sources");
    }

    let catalogue =
        std::fs::read_to_string(workspace().join("docs/events.md")).expect("docs/events.md");
    let documented = event_types_between(&catalogue, '`');
    let undocumented: Vec<&String> = code.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "event types missing from docs/events.md: {undocumented:?}"
    );
    let unknown: Vec<&String> = documented.difference(&code).collect();
    assert!(
        unknown.is_empty(),
        "docs/events.md lists types the code neither emits nor applies: {unknown:?}"
    );
}

#[test]
fn event_types_are_found_between_their_delimiters_only() {
    let text = r#"x("auth.user.created") "crm.deal" "metatron.auth.user.created" "cdx.tenant.*"
        `billing.subscription.changed` "Auth.user.created""#;
    assert_eq!(
        event_types_between(text, '"'),
        BTreeSet::from(["auth.user.created".to_string()])
    );
    assert_eq!(
        event_types_between(text, '`'),
        BTreeSet::from(["billing.subscription.changed".to_string()])
    );
}
