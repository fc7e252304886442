//! The console's only way to the platform: its public JSON API, either in-process through the
//! all-in-one router (no socket, the same edge middleware) or over HTTP to the gateway.
//! Both paths build the same `http::Request`, so a page behaves identically in either
//! topology.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

/// The largest API answer the console reads into memory (CSV exports are streamed instead).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

type InProcess = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// A client of the platform's public API.
#[derive(Clone)]
pub struct ApiClient {
    transport: Transport,
}

#[derive(Clone)]
enum Transport {
    InProcess(InProcess),
    Http {
        base: String,
        client: reqwest::Client,
    },
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.transport {
            Transport::InProcess(_) => f.write_str("ApiClient(in-process)"),
            Transport::Http { base, .. } => write!(f, "ApiClient({base})"),
        }
    }
}

impl ApiClient {
    /// Calls `service` (the all-in-one API router, edge middleware included) in-process.
    pub fn in_process<S>(service: S) -> ApiClient
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        ApiClient {
            transport: Transport::InProcess(BoxCloneSyncService::new(service)),
        }
    }

    /// Calls the API over HTTP at `base_url` (e.g. the gateway, `http://127.0.0.1:3000`).
    /// `timeout` bounds each call, so a slow upstream shows an error page instead of a hang.
    pub fn http(base_url: &str, timeout: Duration) -> Result<ApiClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ApiClient {
            transport: Transport::Http {
                base: base_url.trim_end_matches('/').to_string(),
                client,
            },
        })
    }

    /// Sends `call` and reads the whole answer.
    pub async fn send(&self, call: ApiCall) -> Result<ApiAnswer, Unreachable> {
        let response = self.send_streaming(call).await?;
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Unreachable(format!("reading the answer: {e}")))?;
        Ok(ApiAnswer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// Sends `call` and hands back the answer with its body still streaming (CSV export).
    pub async fn send_streaming(&self, call: ApiCall) -> Result<Response<Body>, Unreachable> {
        match &self.transport {
            Transport::InProcess(service) => {
                let request = call.into_request("")?.map(Body::from);
                // Infallible: the router answers every request, errors included.
                match service.clone().oneshot(request).await {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                }
            }
            Transport::Http { base, client } => {
                let request = reqwest::Request::try_from(call.into_request(base)?)
                    .map_err(|e| Unreachable(format!("building the request: {e}")))?;
                let answer = client
                    .execute(request)
                    .await
                    .map_err(|e| Unreachable(format!("calling the API: {e}")))?;
                let mut response = Response::builder().status(answer.status());
                if let Some(headers) = response.headers_mut() {
                    headers.extend(answer.headers().clone());
                }
                response
                    .body(Body::from_stream(answer.bytes_stream()))
                    .map_err(|e| Unreachable(format!("reading the answer: {e}")))
            }
        }
    }
}

/// The API could not be reached or its answer not read (the page says so, with a 502).
#[derive(Debug)]
pub struct Unreachable(pub String);

/// Who the console acts for, forwarded with every call so the API's logs, audit trail,
/// throttling and session list see the browser, not the console.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// The browser's address (from the connection).
    pub client: Option<SocketAddr>,
    /// `X-Forwarded-For` as the console received it (from a proxy in front of it).
    pub forwarded_for: Option<String>,
    /// The request id of the page request, shared by every API call it makes.
    pub request_id: Option<String>,
    /// The browser's user agent (shown in "my sessions").
    pub user_agent: Option<String>,
}

/// One call to the API.
#[derive(Debug)]
pub struct ApiCall {
    method: Method,
    path: String,
    token: Option<String>,
    tenant: Option<String>,
    if_match: Option<i64>,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, Bytes)>,
    forwarded: Forwarded,
}

impl ApiCall {
    /// A call of `method` on `path` (with its query string), e.g. `/api/auth/me`.
    pub fn new(method: Method, path: impl Into<String>) -> ApiCall {
        ApiCall {
            method,
            path: path.into(),
            token: None,
            tenant: None,
            if_match: None,
            headers: Vec::new(),
            body: None,
            forwarded: Forwarded::default(),
        }
    }

    /// Sends the access token.
    pub fn token(mut self, token: &str) -> ApiCall {
        self.token = Some(token.to_string());
        self
    }

    /// Names the tenant (`X-Tenant`), for a superadmin working inside one.
    pub fn tenant(mut self, tenant: Option<&str>) -> ApiCall {
        self.tenant = tenant.map(str::to_string);
        self
    }

    /// Sends `If-Match` with this version.
    pub fn if_match(mut self, version: i64) -> ApiCall {
        self.if_match = Some(version);
        self
    }

    /// Another header (e.g. `last-event-id` when a stream resumes).
    pub fn header(mut self, name: &'static str, value: &str) -> ApiCall {
        self.headers.push((name, value.to_string()));
        self
    }

    /// A JSON body.
    pub fn json(mut self, body: &Value) -> ApiCall {
        self.body = Some(("application/json", Bytes::from(body.to_string())));
        self
    }

    /// A raw body of `content_type`.
    pub fn raw(mut self, content_type: &'static str, body: Bytes) -> ApiCall {
        self.body = Some((content_type, body));
        self
    }

    /// Acts for the browser described by `forwarded`.
    pub fn forwarded(mut self, forwarded: &Forwarded) -> ApiCall {
        self.forwarded = forwarded.clone();
        self
    }

    fn into_request(self, base: &str) -> Result<Request<Bytes>, Unreachable> {
        let mut builder = Request::builder()
            .method(self.method)
            .uri(format!("{base}{}", self.path));
        let headers = builder
            .headers_mut()
            .ok_or_else(|| Unreachable(format!("invalid API path {}", self.path)))?;
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        };
        if let Some(token) = &self.token {
            put("authorization", &format!("Bearer {token}"));
        }
        if let Some(tenant) = &self.tenant {
            put("x-tenant", tenant);
        }
        if let Some(version) = self.if_match {
            put("if-match", &format!("\"{version}\""));
        }
        for (name, value) in &self.headers {
            put(name, value);
        }
        if let Some(id) = &self.forwarded.request_id {
            put("x-request-id", id);
        }
        if let Some(agent) = &self.forwarded.user_agent {
            put("user-agent", agent);
        }
        let client_ip = self.forwarded.client.map(|a| a.ip().to_string());
        let chain = match (&self.forwarded.forwarded_for, &client_ip) {
            (Some(before), Some(ip)) => Some(format!("{before}, {ip}")),
            (None, Some(ip)) => Some(ip.clone()),
            (Some(before), None) => Some(before.clone()),
            (None, None) => None,
        };
        if let Some(chain) = chain {
            put("x-forwarded-for", &chain);
        }
        let body = match self.body {
            Some((content_type, bytes)) => {
                put(header::CONTENT_TYPE.as_str(), content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let mut request = builder
            .body(body)
            .map_err(|e| Unreachable(format!("building the request: {e}")))?;
        if let Some(client) = self.forwarded.client {
            // In-process the API sees the browser's own address as the peer, exactly as it
            // would if the browser had called it directly.
            request.extensions_mut().insert(ConnectInfo(client));
        }
        Ok(request)
    }
}

/// An answer of the API, read whole.
#[derive(Debug)]
pub struct ApiAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

/// The API's error body, `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ApiError {
    /// Stable code, e.g. `validation_failed`.
    pub code: String,
    /// For people.
    pub message: String,
    /// Per-code details.
    #[serde(default)]
    pub details: Option<Value>,
}

impl ApiError {
    /// The fields a 422 names, with their reasons: `{"field", "reason"}` or
    /// `{"fields": [{"field", "reason"}, ...]}`.
    pub fn field_errors(&self) -> Vec<(String, String)> {
        let Some(details) = &self.details else {
            return Vec::new();
        };
        let one = |v: &Value| {
            Some((
                v.get("field")?.as_str()?.to_string(),
                v.get("reason")?.as_str()?.to_string(),
            ))
        };
        match details.get("fields").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(one).collect(),
            None => one(details).into_iter().collect(),
        }
    }
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ApiError,
}

impl ApiAnswer {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Unreachable> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Unreachable(format!(
                "unexpected answer ({}) from the API: {e}",
                self.status
            ))
        })
    }

    /// The error body; a non-JSON error (e.g. from a proxy) becomes a generic one.
    pub fn error(&self) -> ApiError {
        serde_json::from_slice::<ErrorEnvelope>(&self.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| ApiError {
                code: "unexpected".into(),
                message: format!("the API answered {}", self.status),
                details: None,
            })
    }

    /// `Retry-After` in seconds, when given.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get(header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}
