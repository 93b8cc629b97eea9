//! A [`ConditionalStore`] over HTTP: talks to a running `oxiflow serve`, so
//! remote workers (or a browser) use a store they cannot reach directly.
//! Conditions travel as `If-None-Match: *` / `If-Match: <etag>` headers,
//! exactly as for S3; a generation-only version (GCS) rides in
//! `x-oxiflow-generation`.

use async_trait::async_trait;
use oxiflow_core::{Object, Version};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, ETAG, IF_MATCH, IF_NONE_MATCH};
use reqwest::StatusCode;

use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};

/// Carries a store generation (GCS) next to the ETag.
pub const GENERATION_HEADER: &str = "x-oxiflow-generation";
/// On a GET: the largest body the client takes; the service answers 413
/// for a larger object instead of sending it.
pub const MAX_BYTES_HEADER: &str = "x-oxiflow-max-bytes";
/// On a 413: the size of the object refused.
pub const SIZE_HEADER: &str = "x-oxiflow-size";

/// The `oxiflow serve` raw-object API under a base URL.
#[derive(Debug, Clone)]
pub struct HttpStore {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
    describe: String,
}

impl HttpStore {
    /// `base` is `http://host:port`; `token` the service's bearer token.
    pub fn new(base: &str, token: Option<String>) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::InvalidUrl { url: base, reason: "an oxiflow service URL starts with http:// or https://".into() });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Store { store: base.clone(), reason: e.to_string() })?;
        Ok(HttpStore { client, describe: base.clone(), base, token })
    }

    /// The object's URL; the core's key rules first, so a bad key is refused
    /// here as it is by every store, before any request.
    fn url(&self, key: &str) -> Result<String> {
        oxiflow_core::keys::check_key(key)?;
        Ok(format!("{}/v1/objects/{key}", self.base))
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url);
        match &self.token {
            Some(t) => r.header(AUTHORIZATION, format!("Bearer {t}")),
            None => r,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        r.send().await.map_err(|e| Error::Unavailable { store: self.describe.clone(), reason: without_url(&e) })
    }

    /// Sends a request that may safely run twice (GET, DELETE, LIST),
    /// once more if the first attempt found its pooled connection closed:
    /// a keep-alive connection can close just as a request goes out on it.
    async fn send_idempotent(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let again = r.try_clone();
        match (r.send().await, again) {
            (Err(e), Some(again)) if e.is_request() && !e.is_timeout() && !e.is_connect() => self.send(again).await,
            (result, _) => result.map_err(|e| Error::Unavailable { store: self.describe.clone(), reason: without_url(&e) }),
        }
    }

    /// Turns a non-success status into our error.
    async fn failure(&self, key: &str, response: reqwest::Response) -> Error {
        let store = self.describe.clone();
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message: String = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body)
            .chars()
            .take(400)
            .collect();
        match status {
            StatusCode::PRECONDITION_FAILED => Error::Precondition { store, key: key.into() },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::AccessDenied { store, reason: format!("{status}: {message}") },
            s if s.is_server_error() => Error::Unavailable { store, reason: format!("{status}: {message}") },
            StatusCode::PAYLOAD_TOO_LARGE => Error::Core(oxiflow_core::Error::InvalidInput { reason: message }),
            _ => Error::Store { store, reason: format!("{status}: {message}") },
        }
    }
}

/// reqwest's messages include the URL; ours name the store instead.
fn without_url(e: &reqwest::Error) -> String {
    let text = crate::error::chain(e);
    match e.url() {
        Some(url) => text.replace(url.as_str(), ""),
        None => text,
    }
}

/// The version a response describes.
fn version_from(headers: &HeaderMap) -> Version {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    Version { e_tag: get(ETAG.as_str()), version: get(GENERATION_HEADER) }
}

fn condition_headers(version: &Version) -> Result<HeaderMap> {
    let mut h = HeaderMap::new();
    let bad = |_| Error::Core(oxiflow_core::Error::InvalidInput { reason: "a version holds characters HTTP headers cannot carry".into() });
    if let Some(e) = &version.e_tag {
        h.insert(IF_MATCH, HeaderValue::from_str(e).map_err(bad)?);
    }
    if let Some(g) = &version.version {
        h.insert(GENERATION_HEADER, HeaderValue::from_str(g).map_err(bad)?);
    }
    Ok(h)
}

#[async_trait]
impl ConditionalStore for HttpStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        let r = self.request(reqwest::Method::GET, self.url(key)?).header(MAX_BYTES_HEADER, max_bytes);
        let response = self.send_idempotent(r).await?;
        match response.status() {
            StatusCode::NOT_FOUND => return Ok(None),
            StatusCode::PAYLOAD_TOO_LARGE if response.headers().contains_key(SIZE_HEADER) => {
                let size = response.headers().get(SIZE_HEADER).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(max_bytes + 1);
                return Err(oxiflow_core::Error::TooLarge { key: key.into(), size, limit: max_bytes }.into());
            }
            s if s.is_success() => {}
            _ => return Err(self.failure(key, response).await),
        }
        let size = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok()).unwrap_or(0);
        if size > max_bytes {
            return Err(oxiflow_core::Error::TooLarge { key: key.into(), size, limit: max_bytes }.into());
        }
        let version = version_from(response.headers());
        let body = response.bytes().await.map_err(|e| Error::Unavailable { store: self.describe.clone(), reason: without_url(&e) })?;
        if body.len() > max_bytes {
            return Err(oxiflow_core::Error::TooLarge { key: key.into(), size: body.len(), limit: max_bytes }.into());
        }
        Ok(Some(Object { body: body.to_vec(), version }))
    }

    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        let r = self.request(reqwest::Method::PUT, self.url(key)?).header(IF_NONE_MATCH, "*").body(body);
        let response = self.send(r).await?;
        match response.status() {
            s if s.is_success() => Ok(version_from(response.headers())),
            StatusCode::PRECONDITION_FAILED => Err(Error::AlreadyExists { store: self.describe.clone(), key: key.into() }),
            _ => Err(self.failure(key, response).await),
        }
    }

    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        let r = self.request(reqwest::Method::PUT, self.url(key)?).headers(condition_headers(version)?).body(body);
        let response = self.send(r).await?;
        match response.status() {
            s if s.is_success() => Ok(version_from(response.headers())),
            _ => Err(self.failure(key, response).await),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let response = self.send_idempotent(self.request(reqwest::Method::DELETE, self.url(key)?)).await?;
        match response.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(self.failure(key, response).await),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        oxiflow_core::keys::check_prefix(prefix)?;
        let url = url::Url::parse_with_params(&format!("{}/v1/keys", self.base), [("prefix", prefix)])
            .map_err(|e| Error::InvalidUrl { url: self.base.clone(), reason: e.to_string() })?;
        let response = self.send_idempotent(self.request(reqwest::Method::GET, url.to_string())).await?;
        if !response.status().is_success() {
            return Err(self.failure(prefix, response).await);
        }
        let text = response.text().await.map_err(|e| Error::Unavailable { store: self.describe.clone(), reason: without_url(&e) })?;
        serde_json::from_str(&text).map_err(|e| Error::Store { store: self.describe.clone(), reason: format!("bad key list: {e}") })
    }
}
