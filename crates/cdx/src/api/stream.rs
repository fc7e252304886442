//! Live streams of audit entries over Server-Sent Events: every entry once it is committed,
//! for the superadmin (`/api/cdx/stream`) and for a tenant's admins, limited to their tenant
//! (`/api/cdx/tenant-stream`).
//!
//! Each entry is one event: `id: <seq>`, `event: <action>`, `data: <the entry as JSON>`.
//! The superadmin's stream also carries `event: tenant.summary` with a tenant's summary (as
//! `GET /api/cdx/tenants/{id}/summary` returns it) whenever events change its aggregates.
//! Summaries are state, not entries of the trail: they carry no `id` (so `Last-Event-ID`
//! stays the last entry's seq) and are never replayed; a resuming client reads the current
//! summaries once and then follows the changes.
//! A client resuming with `Last-Event-ID` (or `?after=`) first gets the stored entries after
//! that position, read in `seq` order from the database, then the live ones, with neither
//! gaps nor repeats: the stream subscribes to the live feed before it reads the backlog and
//! skips live entries at or below the last one it sent. The live feed carries entries in
//! `seq` order, so that one comparison suffices.
//!
//! The same streams are served over WebSocket (`/api/cdx/stream/ws`,
//! `/api/cdx/tenant-stream/ws`): one text message per event, `{"id": <seq or null>, "event":
//! <name>, "data": <the same JSON>}`, with the same filters; `?after=` (or `Last-Event-ID`)
//! resumes, and the final events below end with a close.
//!
//! A stream ends with a final `dropped` event when its client fell behind the live feed, or
//! when more than [`MAX_REPLAY`] stored entries would have to be replayed; the client
//! reconnects with `Last-Event-ID` and continues where it stopped. It ends with `expired`
//! when the caller's access token expires, with `revoked` once the caller's session is
//! revoked (checked whenever entries arrive), and with `error` when the database fails.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::stream::{self, Stream, StreamExt};
use platform::caller::{AuthContext, Caller, Revocations, Superadmin, TenantAdmin};
use platform::http::Query;
use platform::ids::Timestamp;
use platform::ApiError;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::broadcast::Receiver;
use tokio::sync::OwnedSemaphorePermit;

use crate::live::{Batch, Live, LiveFilter, SUMMARY_EVENT};
use crate::model::ActionFilter;
use crate::store::{self, AuditFilter};
use crate::CdxState;

/// Stored entries one connection replays at most; beyond, it ends with `dropped` and the
/// client resumes from the last one it got.
pub(crate) const MAX_REPLAY: usize = 10_000;
/// Stored entries read per query while replaying.
const REPLAY_PAGE: usize = 500;
/// A comment line this often keeps idle connections (and proxies) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A WebSocket client that takes longer than this to accept a message is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a stream that lagged while replaying goes back to the database before it
/// gives up with `dropped`.
const REPLAY_RETRIES: u32 = 3;

pub(super) fn router() -> Router<CdxState> {
    Router::new()
        .route("/api/cdx/stream", get(stream))
        .route("/api/cdx/stream/ws", get(stream_ws))
        .route("/api/cdx/tenant-stream", get(tenant_stream))
        .route("/api/cdx/tenant-stream/ws", get(tenant_stream_ws))
}

/// Filters and resume position of the superadmin's stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StreamParams {
    /// Only entries of this tenant (id).
    tenant: Option<String>,
    /// An event type, or a prefix ending in `*` (e.g. `crm.customer.*`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Replay the stored entries after this position first (`Last-Event-ID` wins).
    after: Option<i64>,
}

/// Filter and resume position of a tenant's own stream.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct TenantStreamParams {
    /// An event type, or a prefix ending in `*` (e.g. `crm.customer.*`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// Replay the stored entries after this position first (`Last-Event-ID` wins).
    after: Option<i64>,
}

/// Every audit entry as it is committed, as Server-Sent Events (`id` = seq, `event` =
/// action, `data` = the entry as `GET /api/cdx/audit` returns it), and every changed tenant
/// summary (`event` = `tenant.summary`, no `id`); resumes after `Last-Event-ID`.
#[utoipa::path(get, path = "/api/cdx/stream", tag = "cdx", security(("bearer" = [])),
    params(StreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq")),
    responses((status = 200, content_type = "text/event-stream", body = String,
            description = "One event per audit entry and per changed tenant summary"),
        (status = 400), (status = 401), (status = 403), (status = 503)))]
#[tracing::instrument(skip_all)]
pub(super) async fn stream(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Response, ApiError> {
    Ok(sse(superadmin_streamer(&cdx, &caller, &headers, params)?))
}

/// `/api/cdx/stream` over WebSocket: one text message per event,
/// `{"id": <seq or null>, "event": <name>, "data": <JSON>}`.
#[utoipa::path(get, path = "/api/cdx/stream/ws", tag = "cdx", security(("bearer" = [])),
    params(StreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq")),
    responses((status = 101, description = "Switched to WebSocket; one text message per event"),
        (status = 400), (status = 401), (status = 403), (status = 503)))]
#[tracing::instrument(skip_all)]
pub(super) async fn stream_ws(
    State(cdx): State<CdxState>,
    Superadmin(caller): Superadmin,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(not_a_websocket)?;
    let streamer = superadmin_streamer(&cdx, &caller, &headers, params)?;
    Ok(upgrade.on_upgrade(move |socket| forward(socket, streamer)))
}

/// The answer to a request for a WebSocket path that is not a WebSocket handshake.
fn not_a_websocket(rejection: WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad_request(
        "websocket_required",
        format!(
            "this path speaks WebSocket, send a WebSocket handshake (or use the path without \
             /ws for Server-Sent Events): {}",
            rejection.body_text()
        ),
    )
}

fn superadmin_streamer(
    cdx: &CdxState,
    caller: &Caller,
    headers: &HeaderMap,
    params: StreamParams,
) -> Result<Streamer, ApiError> {
    let filter = LiveFilter {
        tenant_id: params.tenant,
        action: action(params.kind.as_deref())?,
    };
    let after = resume_point(headers, params.after)?;
    open(cdx, filter, after, caller, true)
}

/// The caller's own tenant's audit entries as they are committed (tenant admins, and the
/// superadmin naming the tenant with `X-Tenant`); the same events as `/api/cdx/stream`.
#[utoipa::path(get, path = "/api/cdx/tenant-stream", tag = "cdx", security(("bearer" = [])),
    params(TenantStreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq"),
        ("X-Tenant" = Option<String>, Header, description = "Tenant slug or id (superadmin)")),
    responses((status = 200, content_type = "text/event-stream", body = String,
            description = "One event per audit entry of the tenant"),
        (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)))]
#[tracing::instrument(skip_all)]
pub(super) async fn tenant_stream(
    State(cdx): State<CdxState>,
    admin: TenantAdmin,
    headers: HeaderMap,
    Query(params): Query<TenantStreamParams>,
) -> Result<Response, ApiError> {
    Ok(sse(tenant_streamer(&cdx, &admin, &headers, params)?))
}

/// `/api/cdx/tenant-stream` over WebSocket, in the messages of `/api/cdx/stream/ws`.
#[utoipa::path(get, path = "/api/cdx/tenant-stream/ws", tag = "cdx", security(("bearer" = [])),
    params(TenantStreamParams,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this seq"),
        ("X-Tenant" = Option<String>, Header, description = "Tenant slug or id (superadmin)")),
    responses((status = 101, description = "Switched to WebSocket; one text message per event"),
        (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)))]
#[tracing::instrument(skip_all)]
pub(super) async fn tenant_stream_ws(
    State(cdx): State<CdxState>,
    admin: TenantAdmin,
    headers: HeaderMap,
    Query(params): Query<TenantStreamParams>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(not_a_websocket)?;
    let streamer = tenant_streamer(&cdx, &admin, &headers, params)?;
    Ok(upgrade.on_upgrade(move |socket| forward(socket, streamer)))
}

fn tenant_streamer(
    cdx: &CdxState,
    admin: &TenantAdmin,
    headers: &HeaderMap,
    params: TenantStreamParams,
) -> Result<Streamer, ApiError> {
    let filter = LiveFilter {
        tenant_id: Some(admin.scope.tenant_id().to_string()),
        action: action(params.kind.as_deref())?,
    };
    let after = resume_point(headers, params.after)?;
    open(cdx, filter, after, &admin.caller, false)
}

fn action(value: Option<&str>) -> Result<Option<ActionFilter>, ApiError> {
    value
        .map(|a| {
            ActionFilter::parse(a)
                .map_err(|e| ApiError::bad_request("invalid_query", format!("type: {}", e.reason)))
        })
        .transpose()
}

/// `Last-Event-ID` (a browser's reconnect sends it) or else `?after=`.
fn resume_point(headers: &HeaderMap, after: Option<i64>) -> Result<Option<i64>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_query",
            "Last-Event-ID and after must be an audit seq (a non-negative integer)",
        )
    };
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(invalid)
        })
        .transpose()?;
    match header.or(after) {
        Some(n) if n < 0 => Err(invalid()),
        other => Ok(other),
    }
}

/// Opens a stream: admits it and subscribes to the live feed (before any replay reads the
/// database); with `summaries` it carries changed tenant summaries too.
fn open(
    cdx: &CdxState,
    filter: LiveFilter,
    after: Option<i64>,
    caller: &Caller,
    summaries: bool,
) -> Result<Streamer, ApiError> {
    let Some(permit) = cdx.feed().admit() else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many live streams are open; try again later",
        ));
    };
    let rx = cdx.feed().subscribe();
    Ok(Streamer {
        cdx: cdx.clone(),
        filter,
        summaries,
        rx,
        last: after.unwrap_or(0),
        replaying: after.is_some(),
        replayed: 0,
        retries: 0,
        just_replayed: false,
        pending: VecDeque::new(),
        done: false,
        expires: token_deadline(caller.claims.exp),
        revocations: AuthContext::from_ref(cdx).revocations,
        session: caller.session_id().to_string(),
        _permit: permit,
    })
}

/// Answers with the stream as Server-Sent Events.
fn sse(streamer: Streamer) -> Response {
    let events = frames(streamer).map(|frame| Ok::<_, Infallible>(frame.into_sse()));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Proxies such as nginx must pass events on at once instead of buffering them.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Sends the stream to a WebSocket client until either side ends it: a text message per
/// event, a ping after [`KEEP_ALIVE`] without one, a close after the last event. A client
/// that does not take a message within [`SEND_TIMEOUT`] is dropped; one that reads too
/// slowly gets `dropped` as on SSE. Messages from the client are not read but to see it close.
async fn forward(mut socket: WebSocket, streamer: Streamer) {
    let frames = frames(streamer);
    tokio::pin!(frames);
    let mut idle = tokio::time::interval_at(tokio::time::Instant::now() + KEEP_ALIVE, KEEP_ALIVE);
    loop {
        let message = tokio::select! {
            frame = frames.next() => match frame {
                Some(frame) => frame.into_ws(),
                None => Message::Close(None),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            _ = idle.tick() => Message::Ping(Default::default()),
        };
        let last = matches!(message, Message::Close(_));
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
            Ok(Ok(())) if !last => idle.reset(),
            _ => return,
        }
    }
}

fn token_deadline(exp: i64) -> tokio::time::Instant {
    let left = exp.saturating_sub(Timestamp::now().seconds()).max(0);
    let left = u64::try_from(left).unwrap_or(0);
    tokio::time::Instant::now() + Duration::from_secs(left)
}

/// One open stream's state.
struct Streamer {
    cdx: CdxState,
    filter: LiveFilter,
    /// Whether changed tenant summaries are sent too.
    summaries: bool,
    rx: Receiver<Batch>,
    /// The last position sent (or the resume point): nothing at or below it is sent again.
    last: i64,
    /// Reading stored entries, not the live feed.
    replaying: bool,
    /// Stored entries replayed so far.
    replayed: usize,
    /// Times the replay restarted after its live receiver lagged.
    retries: u32,
    /// The replay just ended and no live message arrived since.
    just_replayed: bool,
    /// Events ready to send.
    pending: VecDeque<Frame>,
    /// No more events after `pending`.
    done: bool,
    /// When the caller's token expires.
    expires: tokio::time::Instant,
    /// Sessions revoked since (logout, disabled account, suspended tenant).
    revocations: Revocations,
    /// The caller's session.
    session: String,
    _permit: OwnedSemaphorePermit,
}

/// One event of a stream, as SSE and WebSocket both send it.
#[derive(Debug)]
struct Frame {
    /// The audit seq (entries only; `Last-Event-ID` resumes after it).
    id: Option<i64>,
    /// The action, `tenant.summary`, or how the stream ended.
    event: String,
    /// JSON.
    data: String,
}

impl Frame {
    fn entry(seq: i64, action: &str, json: &str) -> Frame {
        Frame {
            id: Some(seq),
            event: action.to_string(),
            data: json.to_string(),
        }
    }

    fn new(event: &str, data: String) -> Frame {
        Frame {
            id: None,
            event: event.to_string(),
            data,
        }
    }

    fn into_sse(self) -> Event {
        // Event names cannot carry line breaks; actions never do, but a stray one must not
        // panic.
        let name: String = self
            .event
            .chars()
            .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
            .collect();
        let event = Event::default().event(name).data(self.data);
        match self.id {
            Some(seq) => event.id(seq.to_string()),
            None => event,
        }
    }

    fn into_ws(self) -> Message {
        let id = self
            .id
            .map_or_else(|| "null".to_string(), |seq| seq.to_string());
        let event = serde_json::Value::from(self.event);
        // `data` is JSON already: it goes in as it is.
        Message::Text(format!(r#"{{"id":{id},"event":{event},"data":{}}}"#, self.data).into())
    }
}

fn dropped(reason: &str, last: i64) -> Frame {
    let data = serde_json::json!({
        "reason": reason,
        "last_event_id": last,
        "message": "reconnect with Last-Event-ID to continue where this stream stopped",
    });
    Frame::new("dropped", data.to_string())
}

impl Streamer {
    /// Ends the stream with `event` when the caller's session was revoked since it opened.
    fn revoked(&mut self) -> bool {
        if !self.revocations.is_revoked(&self.session) {
            return false;
        }
        let data = serde_json::json!({
            "message": "the session was revoked; log in again",
            "last_event_id": self.last,
        });
        self.pending
            .push_back(Frame::new("revoked", data.to_string()));
        self.done = true;
        true
    }

    /// Reads the next page of stored entries after `last`.
    async fn replay_page(&mut self) {
        if self.revoked() {
            return;
        }
        let budget = MAX_REPLAY.saturating_sub(self.replayed);
        let limit = budget.min(REPLAY_PAGE);
        let filter = AuditFilter {
            tenant_id: self.filter.tenant_id.clone(),
            action: self.filter.action.clone(),
            ..Default::default()
        };
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let page = match store::audit_in_chain_order(
            self.cdx.db().reader(),
            &filter,
            self.last,
            limit_sql,
        )
        .await
        {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "replaying audit entries for a stream failed");
                let data = serde_json::json!({
                    "message": "reading the audit log failed; reconnect with Last-Event-ID",
                    "last_event_id": self.last,
                });
                self.pending
                    .push_back(Frame::new("error", data.to_string()));
                self.done = true;
                return;
            }
        };
        let caught_up = page.len() < limit;
        for entry in &page {
            let Some(seq) = entry.seq else { continue };
            match serde_json::to_string(entry) {
                Ok(json) => self
                    .pending
                    .push_back(Frame::entry(seq, &entry.action, &json)),
                Err(e) => tracing::warn!(error = %e, "encoding an audit entry failed"),
            }
            self.last = seq;
        }
        self.replayed += page.len();
        if caught_up {
            self.replaying = false;
            self.just_replayed = true;
        } else if self.replayed >= MAX_REPLAY {
            self.pending.push_back(dropped("backlog", self.last));
            self.done = true;
        }
    }

    /// Waits for the next live message (or the token's expiry).
    async fn next_live(&mut self) {
        let received = tokio::select! {
            r = self.rx.recv() => r,
            () = tokio::time::sleep_until(self.expires) => {
                let data = serde_json::json!({
                    "message": "the access token expired; reconnect with a fresh token and \
                                Last-Event-ID",
                    "last_event_id": self.last,
                });
                self.pending
                    .push_back(Frame::new("expired", data.to_string()));
                self.done = true;
                return;
            }
        };
        match received {
            Ok(batch) => {
                self.just_replayed = false;
                // Checked per message: a logout is itself an audit entry, so a revoked
                // session's stream ends at once.
                if self.revoked() {
                    return;
                }
                match batch.as_ref() {
                    Live::Entries(entries) => {
                        for entry in entries {
                            if entry.seq <= self.last {
                                continue;
                            }
                            self.last = entry.seq;
                            if self
                                .filter
                                .matches(entry.tenant_id.as_deref(), &entry.action)
                            {
                                self.pending.push_back(Frame::entry(
                                    entry.seq,
                                    &entry.action,
                                    &entry.json,
                                ));
                            }
                        }
                    }
                    Live::Summaries(summaries) if self.summaries => {
                        for summary in summaries {
                            if self.filter.matches(Some(&summary.tenant_id), SUMMARY_EVENT) {
                                self.pending
                                    .push_back(Frame::new(SUMMARY_EVENT, summary.json.clone()));
                            }
                        }
                    }
                    Live::Summaries(_) => {}
                }
            }
            Err(RecvError::Lagged(_))
                if self.just_replayed
                    && self.retries < REPLAY_RETRIES
                    && self.replayed < MAX_REPLAY =>
            {
                // Fell behind while replaying: what was missed is stored, so read on from the
                // database with a fresh subscription.
                self.retries += 1;
                self.rx = self.cdx.feed().subscribe();
                self.replaying = true;
            }
            Err(RecvError::Lagged(_)) => {
                self.pending.push_back(dropped("slow_consumer", self.last));
                self.done = true;
            }
            Err(RecvError::Closed) => self.done = true,
        }
    }
}

fn frames(state: Streamer) -> impl Stream<Item = Frame> + Send {
    stream::unfold(state, |mut s| async move {
        loop {
            if let Some(frame) = s.pending.pop_front() {
                return Some((frame, s));
            }
            if s.done {
                return None;
            }
            if s.replaying {
                s.replay_page().await;
            } else {
                s.next_live().await;
            }
        }
    })
}
