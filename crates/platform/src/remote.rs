//! Calls from one service to another over HTTP (the distributed topology), carrying this
//! process's service token ([`crate::identity`]) and bounded by a timeout: the whole call
//! for an answer read at once, the wait for the head and each gap between two chunks for
//! an answer passed on as it arrives ([`ServiceClient::get_streamed`]).
//!
//! A failure to reach the other service answers 503; an error the other service answered
//! (e.g. 422 for a password that fails the policy) comes back with its status, code,
//! message and details, so the caller's client sees the same error in both topologies.

use std::time::Duration;

use axum::http::StatusCode;
use futures_util::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::export::ExportStream;
use crate::identity::{ServiceIdentity, SERVICE_HEADER};

/// An HTTP client for one other service.
#[derive(Clone, Debug)]
pub struct ServiceClient {
    http: reqwest::Client,
    /// Base URL of the service, e.g. `http://127.0.0.1:3001`.
    base: String,
    /// The service called, for messages.
    service: String,
    identity: ServiceIdentity,
    /// The call timeout (see the module documentation for what it bounds).
    timeout: Duration,
}

/// Error codes another service may answer with, as the `&'static str` codes of [`ApiError`].
const KNOWN_CODES: &[&str] = &[
    "validation_failed",
    "not_found",
    "unauthorized",
    "forbidden",
    "conflict",
    "unavailable",
];

impl ServiceClient {
    /// A client for `service` at `base_url`, calling as `identity`.
    pub fn new(
        service: &str,
        base_url: &str,
        identity: ServiceIdentity,
        timeout: Duration,
    ) -> Result<ServiceClient, String> {
        // No client-wide timeout: it would bound a streamed answer's whole transfer too.
        // Each call sets its own.
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(ServiceClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            service: service.to_string(),
            identity,
            timeout,
        })
    }

    /// `GET path`, decoding the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.send(self.http.get(self.url(path))).await
    }

    /// `GET path`, its body passed on chunk by chunk as it arrives, however long the whole
    /// transfer takes. The call timeout bounds the wait for the answer's head and every
    /// wait for the next chunk: a service that stops sending ends the stream with an
    /// error, as does a transfer the service broke off.
    pub async fn get_streamed(&self, path: &str) -> Result<ExportStream, ApiError> {
        let request = self
            .http
            .get(self.url(path))
            .header(SERVICE_HEADER, self.identity.token())
            .send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| self.stalled())?
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .map_err(|_| self.stalled())?
                .map_err(|e| self.unreachable(&e))?;
            return Err(self.remote_error(status, &body));
        }
        let reading = (response, self.clone());
        Ok(
            stream::try_unfold(reading, |(mut response, client)| async move {
                let chunk = tokio::time::timeout(client.timeout, response.chunk())
                    .await
                    .map_err(|_| client.stalled())?
                    .map_err(|e| client.unreachable(&e))?;
                Ok(chunk.map(|chunk| (chunk, (response, client))))
            })
            .boxed(),
        )
    }

    /// `POST path` with a JSON body, decoding the JSON answer.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ApiError> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A call that failed on the way: refused, broken off, or over the timeout.
    fn unreachable(&self, e: &reqwest::Error) -> ApiError {
        tracing::warn!(service = %self.service, error = %e, "service call failed");
        ApiError::unavailable(format!(
            "the {} service cannot be reached right now; retry shortly",
            self.service
        ))
    }

    /// A streamed call that waited longer than the timeout for its head or next chunk.
    fn stalled(&self) -> ApiError {
        tracing::warn!(service = %self.service, timeout = ?self.timeout, "service call stalled");
        ApiError::unavailable(format!(
            "the {} service stopped answering; retry shortly",
            self.service
        ))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let unreachable = |e: reqwest::Error| self.unreachable(&e);
        let response = request
            .timeout(self.timeout)
            .header(SERVICE_HEADER, self.identity.token())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                ApiError::internal(
                    &format!("decoding the {} service's answer", self.service),
                    e,
                )
            });
        }
        Err(self.remote_error(status, &body))
    }

    /// The other service's error as this service answers it.
    fn remote_error(&self, status: StatusCode, body: &[u8]) -> ApiError {
        let error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .unwrap_or(Value::Null);
        let code = error["code"].as_str().unwrap_or_default();
        let message = error["message"].as_str().unwrap_or_default();
        if status.is_server_error() || message.is_empty() {
            return ApiError::internal(
                &format!("calling the {} service", self.service),
                format!("{status}: {}", String::from_utf8_lossy(body)),
            );
        }
        let code = KNOWN_CODES
            .iter()
            .find(|known| **known == code)
            .copied()
            .unwrap_or("service_error");
        let mut mapped = ApiError::new(status, code, message);
        if !error["details"].is_null() {
            mapped = mapped.with_details(error["details"].clone());
        }
        mapped
    }
}

/// The token keys auth publishes, fetched over HTTP (services in other processes than auth).
#[derive(Debug, Clone)]
pub struct JwksSource {
    http: reqwest::Client,
    url: String,
}

impl JwksSource {
    /// The key set of the auth service at `auth_base_url`.
    pub fn new(auth_base_url: &str, timeout: Duration) -> Result<JwksSource, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(JwksSource {
            http,
            url: format!(
                "{}/api/auth/.well-known/jwks.json",
                auth_base_url.trim_end_matches('/')
            ),
        })
    }
}

#[async_trait::async_trait]
impl crate::token::KeySource for JwksSource {
    async fn fetch(&self) -> Result<Vec<(String, String)>, String> {
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("{}: {e}", self.url))?;
        let jwks: crate::token::Jwks = response
            .json()
            .await
            .map_err(|e| format!("{}: the key set is malformed: {e}", self.url))?;
        Ok(jwks.into_pairs())
    }
}
