//! All SQL of the auth service. Tenant-scoped functions take a [`TenantScope`]; the only
//! unscoped user lookup is [`login_candidates`], which runs before anyone is authenticated.

use platform::caller::TenantScope;
use platform::db::contains_pattern;
use platform::ids::Timestamp;
use platform::tenants::{TenantRef, TenantStatus};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use crate::model::{UserRole, UserStatus};

/// A stored tenant user.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub tenant_id: String,
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub password_hash: String,
    pub role: UserRole,
    pub status: UserStatus,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: i64,
}

const USER_COLUMNS: &str =
    "tenant_id, id, email, name, password_hash, role, status, created_at, updated_at, version";

fn user_from_row(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    let bad = |what: &str| sqlx::Error::Protocol(format!("stored user has an invalid {what}"));
    Ok(UserRow {
        tenant_id: r.try_get("tenant_id")?,
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        name: r.try_get("name")?,
        password_hash: r.try_get("password_hash")?,
        role: UserRole::parse(&r.try_get::<String, _>("role")?).ok_or_else(|| bad("role"))?,
        status: UserStatus::parse(&r.try_get::<String, _>("status")?)
            .ok_or_else(|| bad("status"))?,
        created_at: Timestamp(r.try_get("created_at")?),
        updated_at: Timestamp(r.try_get("updated_at")?),
        version: r.try_get("version")?,
    })
}

/// Inserts a new user into the scope's tenant.
pub async fn insert_user(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    user: &UserRow,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(scope.tenant_id())
    .bind(&user.id)
    .bind(&user.email)
    .bind(&user.name)
    .bind(&user.password_hash)
    .bind(user.role.as_str())
    .bind(user.status.as_str())
    .bind(user.created_at.millis())
    .bind(user.updated_at.millis())
    .bind(user.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// One user of the scope's tenant.
pub async fn get_user<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    scope: &TenantScope,
    id: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2"
    ))
    .bind(scope.tenant_id())
    .bind(id)
    .fetch_optional(exec)
    .await?
    .as_ref()
    .map(user_from_row)
    .transpose()
}

/// The user with this email in the scope's tenant.
pub async fn user_by_email<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    scope: &TenantScope,
    email: &str,
) -> Result<Option<UserRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND email = $2"
    ))
    .bind(scope.tenant_id())
    .bind(email)
    .fetch_optional(exec)
    .await?
    .as_ref()
    .map(user_from_row)
    .transpose()
}

/// Users with this email, each with their tenant as the replica knows it; in any tenant,
/// or only in the tenant named by `tenant` (slug or id). Runs before authentication, so it
/// is the one unscoped user lookup. At most `limit` rows.
pub async fn login_candidates<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    email: &str,
    tenant: Option<&str>,
    limit: i64,
) -> Result<Vec<(UserRow, TenantRef)>, sqlx::Error> {
    let columns: Vec<String> = USER_COLUMNS.split(", ").map(|c| format!("u.{c}")).collect();
    let rows = sqlx::query(&format!(
        "SELECT {}, t.slug AS tenant_slug, t.status AS tenant_status \
         FROM users u JOIN tenant_replica t ON t.id = u.tenant_id \
         WHERE u.email = $1 AND ($2 IS NULL OR t.slug = $2 OR t.id = $2) \
         ORDER BY u.tenant_id LIMIT $3",
        columns.join(", ")
    ))
    .bind(email)
    .bind(tenant)
    .bind(limit)
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| {
            let user = user_from_row(r)?;
            let tenant = TenantRef {
                id: user.tenant_id.clone(),
                slug: r.try_get("tenant_slug")?,
                status: TenantStatus::parse(&r.try_get::<String, _>("tenant_status")?)
                    .unwrap_or(TenantStatus::Suspended),
            };
            Ok((user, tenant))
        })
        .collect()
}

/// Filters of the user list.
#[derive(Debug, Default)]
pub struct UserFilter {
    pub role: Option<UserRole>,
    pub status: Option<UserStatus>,
    /// Lowercased substring of email or name.
    pub q: Option<String>,
}

/// Users of the scope's tenant in id order after `after`, at most `limit` rows.
pub async fn list_users<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    scope: &TenantScope,
    filter: &UserFilter,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    // Optional filters are written as `($n IS NULL OR col = $n)` so that one statement
    // serves every combination on both backends.
    let pattern = filter.q.as_deref().map(contains_pattern);
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 \
         AND ($2 IS NULL OR role = $2) AND ($3 IS NULL OR status = $3) \
         AND ($4 IS NULL OR LOWER(email) LIKE $4 ESCAPE '\\' OR LOWER(COALESCE(name, '')) LIKE $4 ESCAPE '\\') \
         AND ($5 IS NULL OR id > $5) ORDER BY id LIMIT $6"
    ))
    .bind(scope.tenant_id())
    .bind(filter.role.map(|r| r.as_str()))
    .bind(filter.status.map(|s| s.as_str()))
    .bind(pattern)
    .bind(after)
    .bind(limit)
    .fetch_all(exec)
    .await?;
    rows.iter().map(user_from_row).collect()
}

/// Writes the changed fields of `user` if its stored version is still `user.version - 1`.
/// Returns false when someone else changed it first.
pub async fn update_user(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    user: &UserRow,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET name = $1, role = $2, status = $3, password_hash = $4, updated_at = $5, \
         version = $6 WHERE tenant_id = $7 AND id = $8 AND version = $9",
    )
    .bind(&user.name)
    .bind(user.role.as_str())
    .bind(user.status.as_str())
    .bind(&user.password_hash)
    .bind(user.updated_at.millis())
    .bind(user.version)
    .bind(scope.tenant_id())
    .bind(&user.id)
    .bind(user.version - 1)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a password hash without touching the version (re-hash on login).
pub async fn set_password_hash(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
    hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1 WHERE tenant_id = $2 AND id = $3")
        .bind(hash)
        .bind(scope.tenant_id())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a user; false when there was none.
pub async fn delete_user(
    conn: &mut AnyConnection,
    scope: &TenantScope,
    id: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM users WHERE tenant_id = $1 AND id = $2")
        .bind(scope.tenant_id())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A stored session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub tenant_id: Option<String>,
    pub subject_id: String,
    pub subject_name: String,
    pub role: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

const SESSION_COLUMNS: &str = "id, tenant_id, subject_id, subject_name, role, ip, user_agent, \
    created_at, last_used_at, expires_at, revoked_at";

fn session_from_row(r: &AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get("id")?,
        tenant_id: r.try_get("tenant_id")?,
        subject_id: r.try_get("subject_id")?,
        subject_name: r.try_get("subject_name")?,
        role: r.try_get("role")?,
        ip: r.try_get("ip")?,
        user_agent: r.try_get("user_agent")?,
        created_at: Timestamp(r.try_get("created_at")?),
        last_used_at: Timestamp(r.try_get("last_used_at")?),
        expires_at: Timestamp(r.try_get("expires_at")?),
        revoked_at: r.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

/// Stores a new session and its first refresh token hash.
pub async fn insert_session(
    conn: &mut AnyConnection,
    s: &SessionRow,
    refresh_hash: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)"
    ))
    .bind(&s.id)
    .bind(&s.tenant_id)
    .bind(&s.subject_id)
    .bind(&s.subject_name)
    .bind(&s.role)
    .bind(&s.ip)
    .bind(&s.user_agent)
    .bind(s.created_at.millis())
    .bind(s.last_used_at.millis())
    .bind(s.expires_at.millis())
    .execute(&mut *conn)
    .await?;
    insert_refresh(conn, &s.id, refresh_hash, s.created_at).await
}

/// Adds a refresh token (hash) to a session.
pub async fn insert_refresh(
    conn: &mut AnyConnection,
    sid: &str,
    hash: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)",
    )
    .bind(hash)
    .bind(sid)
    .bind(now.millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a refresh token used, if it was unused. Returns the session and whether this call
/// was the one that used it (false means reuse of a rotated token).
pub async fn use_refresh(
    conn: &mut AnyConnection,
    hash: &str,
    now: Timestamp,
) -> Result<Option<(SessionRow, bool)>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT session_id FROM refresh_tokens WHERE token_hash = $1")
        .bind(hash)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let sid: String = row.try_get("session_id")?;
    let first_use = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now.millis())
    .bind(hash)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    let session = get_session(&mut *conn, &sid).await?;
    Ok(session.map(|s| (s, first_use)))
}

/// Records use of a session (on refresh).
pub async fn touch_session(
    conn: &mut AnyConnection,
    sid: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_used_at = $1 WHERE id = $2")
        .bind(now.millis())
        .bind(sid)
        .execute(conn)
        .await?;
    Ok(())
}

/// One session by id.
pub async fn get_session<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    sid: &str,
) -> Result<Option<SessionRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
    ))
    .bind(sid)
    .fetch_optional(exec)
    .await?
    .as_ref()
    .map(session_from_row)
    .transpose()
}

/// Active sessions of a subject, newest first.
pub async fn active_sessions_of<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    subject_id: &str,
    now: Timestamp,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE subject_id = $1 AND revoked_at IS NULL \
         AND expires_at > $2 ORDER BY id DESC LIMIT 500"
    ))
    .bind(subject_id)
    .bind(now.millis())
    .fetch_all(exec)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Which sessions a revocation covers.
#[derive(Debug, Clone, Copy)]
pub enum Revoke<'a> {
    /// One session.
    Session(&'a str),
    /// Every session of a subject, optionally but one.
    Subject {
        id: &'a str,
        except: Option<&'a str>,
    },
    /// Every session in a tenant.
    Tenant(&'a str),
}

/// Revokes unrevoked sessions and answers the ids that were revoked.
pub async fn revoke_sessions(
    conn: &mut AnyConnection,
    which: Revoke<'_>,
    reason: &str,
    now: Timestamp,
) -> Result<Vec<String>, sqlx::Error> {
    let (condition, key, except) = match which {
        Revoke::Session(sid) => ("id = $3", sid, None),
        Revoke::Subject { id, except } => {
            ("subject_id = $3 AND ($4 IS NULL OR id <> $4)", id, except)
        }
        Revoke::Tenant(tid) => ("tenant_id = $3", tid, None),
    };
    let sql = format!(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 WHERE revoked_at IS NULL AND {condition} RETURNING id"
    );
    let mut query = sqlx::query(&sql).bind(now.millis()).bind(reason).bind(key);
    if condition.contains("$4") {
        query = query.bind(except);
    }
    let rows = query.fetch_all(conn).await?;
    rows.iter().map(|r| r.try_get::<String, _>("id")).collect()
}

/// Sessions revoked at or after `since` (to rebuild the in-memory revocation list at start),
/// those of deleted tenants included.
pub async fn revoked_since<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    since: Timestamp,
) -> Result<Vec<(String, Timestamp)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, revoked_at FROM sessions WHERE revoked_at >= $1 \
         UNION ALL SELECT session_id, revoked_at FROM revoked_sessions WHERE revoked_at >= $1",
    )
    .bind(since.millis())
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("id")?, Timestamp(r.try_get("revoked_at")?))))
        .collect()
}

/// Records a login attempt.
pub async fn insert_attempt(
    conn: &mut AnyConnection,
    account_key: &str,
    ip: Option<&str>,
    tenant_id: Option<&str>,
    failure: Option<&str>,
    at: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO login_attempts (id, account_key, ip, tenant_id, succeeded, reason, at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(platform::ids::new_id())
    .bind(account_key)
    .bind(ip)
    .bind(tenant_id)
    .bind(i64::from(failure.is_none()))
    .bind(failure)
    .bind(at.millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Recent failed logins of one account and of one IP address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Failures {
    /// The account's failures since its last success (within the window).
    pub account: i64,
    /// When the account's latest failure was.
    pub account_latest: Option<Timestamp>,
    /// The IP address's failures within the window.
    pub ip: i64,
    /// When the IP address's latest failure was.
    pub ip_latest: Option<Timestamp>,
}

/// Counts recent failures of `account_key` and of `ip` since `since`, in one statement (it
/// runs on every login).
pub async fn failures<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    account_key: &str,
    ip: Option<&str>,
    since: Timestamp,
) -> Result<Failures, sqlx::Error> {
    let row = sqlx::query(
        "SELECT \
         (SELECT COUNT(*) FROM login_attempts WHERE account_key = $1 AND succeeded = 0 AND at >= $2 \
            AND at > COALESCE((SELECT MAX(at) FROM login_attempts WHERE account_key = $1 AND succeeded = 1), 0)) \
            AS account_n, \
         (SELECT MAX(at) FROM login_attempts WHERE account_key = $1 AND succeeded = 0 AND at >= $2) AS account_latest, \
         (SELECT COUNT(*) FROM login_attempts WHERE ip = $3 AND succeeded = 0 AND at >= $2) AS ip_n, \
         (SELECT MAX(at) FROM login_attempts WHERE ip = $3 AND succeeded = 0 AND at >= $2) AS ip_latest",
    )
    .bind(account_key)
    .bind(since.millis())
    .bind(ip)
    .fetch_one(exec)
    .await?;
    Ok(Failures {
        account: row.try_get("account_n")?,
        account_latest: row
            .try_get::<Option<i64>, _>("account_latest")?
            .map(Timestamp),
        ip: row.try_get("ip_n")?,
        ip_latest: row.try_get::<Option<i64>, _>("ip_latest")?.map(Timestamp),
    })
}

/// Deletes attempts older than `before` and sessions (deleted tenants' revoked ones too)
/// expired before it.
pub async fn prune(conn: &mut AnyConnection, before: Timestamp) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
        .bind(before.millis())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM login_attempts WHERE at < $1")
        .bind(before.millis())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE expires_at < $1)")
        .bind(before.millis())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
        .bind(before.millis())
        .execute(conn)
        .await?;
    Ok(())
}

/// A stored signing key.
#[derive(Clone)]
pub struct KeyRow {
    pub kid: String,
    pub private_pkcs8: String,
    pub public_x: String,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// Every stored key, newest first.
pub async fn keys<'c, E: Executor<'c, Database = Any>>(
    exec: E,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT kid, private_pkcs8, public_x, created_at, retired_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
    )
    .fetch_all(exec)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyRow {
                kid: r.try_get("kid")?,
                private_pkcs8: r.try_get("private_pkcs8")?,
                public_x: r.try_get("public_x")?,
                created_at: Timestamp(r.try_get("created_at")?),
                retired_at: r.try_get::<Option<i64>, _>("retired_at")?.map(Timestamp),
            })
        })
        .collect()
}

/// Stores a new key and retires every other unretired one.
pub async fn rotate_in(conn: &mut AnyConnection, key: &KeyRow) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
        .bind(key.created_at.millis())
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO signing_keys (kid, private_pkcs8, public_x, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&key.kid)
        .bind(&key.private_pkcs8)
        .bind(&key.public_x)
        .bind(key.created_at.millis())
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a one-time setup token (its hash) for `user_id`.
pub async fn insert_setup_token(
    conn: &mut AnyConnection,
    token_hash: &str,
    tenant_id: &str,
    user_id: &str,
    expires_at: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO setup_tokens (token_hash, tenant_id, user_id, expires_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(token_hash)
    .bind(tenant_id)
    .bind(user_id)
    .bind(expires_at.millis())
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a setup token is unused and unexpired.
pub async fn setup_token_usable<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    token_hash: &str,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "SELECT 1 FROM setup_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(now.millis())
    .fetch_optional(exec)
    .await?
    .is_some())
}

/// Marks an unused, unexpired setup token used and answers its `(tenant_id, user_id)`;
/// `None` when there is no such token (unknown, used or expired). Only one caller can win.
pub async fn take_setup_token(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: Timestamp,
) -> Result<Option<(String, String)>, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE setup_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(now.millis())
    .bind(token_hash)
    .bind(now.millis())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if taken != 1 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT tenant_id, user_id FROM setup_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Some((row.try_get("tenant_id")?, row.try_get("user_id")?)))
}

/// Removes every row of a tenant (users, sessions with their refresh tokens, login attempts,
/// setup tokens). Of its revoked sessions (the caller revoked them all) only the id and
/// times stay, in `revoked_sessions`, until they would have expired, so that a restarted
/// service still refuses their access tokens. Answers how many rows of the tenant went.
pub async fn delete_tenant(conn: &mut AnyConnection, tenant_id: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO revoked_sessions (session_id, revoked_at, expires_at) \
         SELECT id, revoked_at, expires_at FROM sessions \
         WHERE tenant_id = $1 AND revoked_at IS NOT NULL",
    )
    .bind(tenant_id)
    .execute(&mut *conn)
    .await?;
    let mut rows = 0;
    for sql in [
        "DELETE FROM refresh_tokens WHERE session_id IN (SELECT id FROM sessions WHERE tenant_id = $1)",
        "DELETE FROM sessions WHERE tenant_id = $1",
        "DELETE FROM login_attempts WHERE tenant_id = $1",
        "DELETE FROM setup_tokens WHERE tenant_id = $1",
        "DELETE FROM users WHERE tenant_id = $1",
    ] {
        rows += sqlx::query(sql)
            .bind(tenant_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(rows)
}
