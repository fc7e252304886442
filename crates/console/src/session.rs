//! Browser sessions: an opaque random cookie maps to the auth service's tokens, kept only in
//! this process's memory (the tokens never reach the browser, so script on the page cannot
//! steal them). A restart logs everyone out of the console; their auth sessions stay until
//! they expire or are revoked. Decision 0007 says why not an encrypted cookie.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use serde::Deserialize;

/// Who is logged in, as `/api/auth/login` and `/api/auth/me` describe them.
#[derive(Debug, Clone, Deserialize)]
pub struct Principal {
    /// User or superadmin id.
    pub id: String,
    /// `superadmin`, `admin` or `user`.
    pub role: Role,
    /// Superadmins: the user name.
    #[serde(default)]
    pub username: Option<String>,
    /// Tenant users: the email.
    #[serde(default)]
    pub email: Option<String>,
    /// Tenant users: the display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Tenant users: their tenant's slug.
    #[serde(default)]
    pub tenant_slug: Option<String>,
}

impl Principal {
    /// What the page header calls them.
    pub fn display(&self) -> &str {
        self.name
            .as_deref()
            .or(self.username.as_deref())
            .or(self.email.as_deref())
            .unwrap_or("you")
    }
}

/// The roles of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Platform operator.
    Superadmin,
    /// Tenant administrator.
    Admin,
    /// Tenant user.
    User,
}

/// A one-shot message shown on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// `ok` or `error` (the CSS class).
    pub kind: FlashKind,
    /// The text.
    pub text: String,
}

/// The kind of a flash message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    /// Something worked.
    Ok,
    /// Something did not.
    Error,
}

/// What the console keeps for one browser session.
#[derive(Debug, Clone)]
pub struct SessionData {
    /// The current access token.
    pub access_token: String,
    /// The refresh token that goes with it (used once, then replaced).
    pub refresh_token: String,
    /// When the access token should be refreshed (a little before it expires).
    pub refresh_at: Instant,
    /// Who is logged in.
    pub principal: Principal,
    /// The form token of this session (checked on every POST).
    pub csrf: String,
    /// A message for the next page.
    pub flash: Option<Flash>,
    /// The tenant a superadmin is working in (slug), if any.
    pub tenant: Option<String>,
    last_seen: Instant,
}

impl SessionData {
    /// A fresh session from a login's tokens; `expires_in` is the access token's lifetime.
    pub fn new(
        access_token: String,
        refresh_token: String,
        expires_in: u64,
        principal: Principal,
    ) -> SessionData {
        SessionData {
            access_token,
            refresh_token,
            refresh_at: refresh_deadline(expires_in),
            principal,
            csrf: random_token(),
            flash: None,
            tenant: None,
            last_seen: Instant::now(),
        }
    }

    /// The tenant the pages act in: the user's own, or the one a superadmin chose.
    pub fn tenant(&self) -> Option<&str> {
        match self.principal.role {
            Role::Superadmin => self.tenant.as_deref(),
            _ => self.principal.tenant_slug.as_deref(),
        }
    }
}

/// When to refresh a token that lives `expires_in` seconds: 30 s early, so a page's calls
/// never race the expiry.
pub fn refresh_deadline(expires_in: u64) -> Instant {
    Instant::now() + Duration::from_secs(expires_in.saturating_sub(30).max(1))
}

/// One session: its data, and a lock serialising refreshes (two tabs refreshing the same
/// refresh token at once would look like token theft to auth, which then ends the session).
#[derive(Debug)]
pub struct SessionEntry {
    data: Mutex<SessionData>,
    /// Held while this session's tokens are refreshed.
    pub refreshing: tokio::sync::Mutex<()>,
}

impl SessionEntry {
    /// The data (never poisoned in practice: no code panics while holding it).
    pub fn lock(&self) -> MutexGuard<'_, SessionData> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every session of this console process.
#[derive(Debug, Clone)]
pub struct Sessions {
    map: Arc<Mutex<HashMap<String, Arc<SessionEntry>>>>,
    idle_timeout: Duration,
}

impl Sessions {
    /// An empty store; sessions unused for `idle_timeout` are forgotten.
    pub fn new(idle_timeout: Duration) -> Sessions {
        Sessions {
            map: Arc::default(),
            idle_timeout,
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionEntry>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `data` under a new random id and answers the id (the cookie's value).
    pub fn insert(&self, data: SessionData) -> String {
        let id = random_token();
        let entry = Arc::new(SessionEntry {
            data: Mutex::new(data),
            refreshing: tokio::sync::Mutex::new(()),
        });
        let mut map = self.map();
        // Sweeping at each login keeps the map bounded by the logins of one idle period
        // without a background task.
        let idle = self.idle_timeout;
        map.retain(|_, e| e.lock().last_seen.elapsed() < idle);
        map.insert(id.clone(), entry);
        id
    }

    /// The session `id`, if it exists and is not idle too long.
    pub fn get(&self, id: &str) -> Option<Arc<SessionEntry>> {
        let mut map = self.map();
        let entry = map.get(id)?.clone();
        let mut data = entry.lock();
        if data.last_seen.elapsed() >= self.idle_timeout {
            drop(data);
            map.remove(id);
            return None;
        }
        data.last_seen = Instant::now();
        drop(data);
        Some(entry)
    }

    /// Forgets the session `id`.
    pub fn remove(&self, id: &str) {
        self.map().remove(id);
    }
}

/// 32 random bytes, base64url: session ids and form tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            id: "1".into(),
            role: Role::User,
            username: None,
            email: Some("a@b.c".into()),
            name: None,
            tenant_slug: Some("demo".into()),
        }
    }

    #[test]
    fn sessions_are_found_by_id_and_forgotten_when_removed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let id = sessions.insert(SessionData::new("a".into(), "r".into(), 900, principal()));
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("other").is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn idle_sessions_expire() {
        let sessions = Sessions::new(Duration::ZERO);
        let id = sessions.insert(SessionData::new("a".into(), "r".into(), 900, principal()));
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn secrets_compare_by_content() {
        let t = random_token();
        assert_eq!(t.len(), 43);
        assert!(same_secret(&t, &t.clone()));
        assert!(!same_secret(&t, &random_token()));
        assert!(!same_secret("a", "ab"));
    }

    #[test]
    fn a_user_acts_in_their_own_tenant_only() {
        let mut data = SessionData::new("a".into(), "r".into(), 900, principal());
        data.tenant = Some("other".into());
        assert_eq!(data.tenant(), Some("demo"));
    }
}
