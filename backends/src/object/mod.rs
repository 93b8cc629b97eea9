//! S3, GCS, Azure, MinIO and memory through the `object_store` crate, whose
//! `PutMode::Create` / `PutMode::Update` are exactly our conditional writes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig, UpdateVersion};
use oxiflow_core::{Object, Timestamp, Version};
use url::Url;

use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};

mod errors;
use errors::{classify, names_missing_bucket};

/// Options for S3-compatible servers and tests; everything else comes from
/// the standard environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
#[derive(Debug, Clone, Default)]
pub struct ObjectStoreOptions {
    /// Endpoint of an S3-compatible server (MinIO, moto) or Azure emulator.
    pub endpoint: Option<String>,
    /// Permit plain http (local servers).
    pub allow_http: bool,
    /// Explicit credentials; otherwise the environment's.
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id` (or the Azure account key).
    pub secret_access_key: Option<String>,
    /// The S3 region.
    pub region: Option<String>,
    /// Azure storage account (with `access_key_id` unused and
    /// `secret_access_key` as the account key).
    pub azure_account: Option<String>,
}

/// A [`ConditionalStore`] over any `object_store` backend, under a prefix.
#[derive(Debug)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

/// Retries belong to the core's policy (jittered, bounded, and aware of
/// lost responses), so object_store's own are off.
fn client_settings() -> (RetryConfig, ClientOptions) {
    let retry = RetryConfig { max_retries: 0, retry_timeout: Duration::from_secs(30), ..RetryConfig::default() };
    let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(30));
    (retry, client)
}

impl ObjectStoreBackend {
    /// Wraps an existing store; `describe` names it in messages.
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, describe: impl Into<String>) -> Self {
        ObjectStoreBackend { inner, prefix: prefix.trim_matches('/').to_string(), describe: describe.into() }
    }

    /// Opens `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
    /// or `memory://`.
    pub fn open(url: &str, options: &ObjectStoreOptions) -> Result<Self> {
        // Never the password of a mistyped URL (redsi://user:pw@host).
        let shown = match Url::parse(url) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => url.to_string(),
        };
        let invalid = |reason: String| Error::InvalidUrl { url: shown.clone(), reason };
        let parsed = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        let bucket = parsed.host_str().unwrap_or_default().to_string();
        let prefix = parsed.path().trim_matches('/').to_string();
        let (retry, client) = client_settings();
        let describe = match &options.endpoint {
            Some(endpoint) => format!("{url} at {endpoint}"),
            None => url.to_string(),
        };
        let store: Arc<dyn ObjectStore> = match parsed.scheme() {
            "memory" => Arc::new(InMemory::new()),
            "s3" | "s3a" => {
                if bucket.is_empty() {
                    return Err(invalid("no bucket: use s3://bucket/prefix".into()));
                }
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .with_retry(retry)
                    .with_client_options(client.with_allow_http(options.allow_http));
                if let Some(endpoint) = &options.endpoint {
                    b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
                }
                if let (Some(id), Some(secret)) = (&options.access_key_id, &options.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                }
                if let Some(region) = &options.region {
                    b = b.with_region(region);
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "gs" => {
                if bucket.is_empty() {
                    return Err(invalid("no bucket: use gs://bucket/prefix".into()));
                }
                let b = GoogleCloudStorageBuilder::from_env().with_bucket_name(&bucket).with_retry(retry).with_client_options(client);
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "az" | "azure" | "abfs" => {
                if bucket.is_empty() {
                    return Err(invalid("no container: use az://container/prefix".into()));
                }
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(&bucket)
                    .with_retry(retry)
                    .with_client_options(client.with_allow_http(options.allow_http));
                if let Some(account) = &options.azure_account {
                    b = b.with_account(account);
                }
                if let Some(key) = &options.secret_access_key {
                    b = b.with_access_key(key);
                }
                if let Some(endpoint) = &options.endpoint {
                    b = b.with_endpoint(endpoint.clone());
                }
                Arc::new(b.build().map_err(|e| invalid(e.to_string()))?)
            }
            "file" => return Err(invalid("file:// URLs open the local-directory store (LocalDirStore), not object_store".into())),
            other => {
                return Err(invalid(format!(
                    "unknown scheme {other:?}; use s3://, gs://, az://, redis://, rediss://, http(s)://, file:// or memory://"
                )))
            }
        };
        Ok(ObjectStoreBackend { inner: store, prefix, describe })
    }

    fn path(&self, key: &str) -> Result<Path> {
        oxiflow_core::keys::check_key(key)?;
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        Path::parse(&full).map_err(|e| oxiflow_core::Error::InvalidInput { reason: format!("bad key {key:?}: {e}") }.into())
    }

    /// Folds a conditional write's errors into ours: a stale version or a
    /// missing object is a failed condition; the rest as [`classify`] says.
    fn fold(&self, key: &str, e: object_store::Error) -> Error {
        let store = self.describe.clone();
        match e {
            object_store::Error::AlreadyExists { .. } => Error::AlreadyExists { store, key: key.into() },
            object_store::Error::Precondition { .. } => Error::Precondition { store, key: key.into() },
            object_store::Error::NotFound { .. } if !names_missing_bucket(&e) => Error::Precondition { store, key: key.into() },
            other => classify(store, &other),
        }
    }
}

/// An ETag as a GET returns it: Azure lists ETags without the quotes its
/// GET responses carry (found by the conformance suite on azurite).
fn quoted(e_tag: String) -> String {
    if e_tag.starts_with('"') || e_tag.starts_with("W/") {
        e_tag
    } else {
        format!("\"{e_tag}\"")
    }
}

fn to_version(e_tag: Option<String>, version: Option<String>) -> Version {
    Version { e_tag, version }
}

#[async_trait]
impl ConditionalStore for ObjectStoreBackend {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        let path = self.path(key)?;
        let result = match self.inner.get(&path).await {
            Ok(r) => r,
            Err(e @ object_store::Error::NotFound { .. }) if !names_missing_bucket(&e) => return Ok(None),
            Err(e) => return Err(classify(self.describe.clone(), &e)),
        };
        let size = usize::try_from(result.meta.size).unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(oxiflow_core::Error::TooLarge { key: key.into(), size, limit: max_bytes }.into());
        }
        let version = to_version(result.meta.e_tag.clone(), result.meta.version.clone());
        let body = result.bytes().await.map_err(|e| classify(self.describe.clone(), &e))?;
        Ok(Some(Object { body: body.to_vec(), version }))
    }

    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        let path = self.path(key)?;
        let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        match self.inner.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(r) => Ok(to_version(r.e_tag, r.version)),
            Err(e) => Err(self.fold(key, e)),
        }
    }

    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        let path = self.path(key)?;
        let update = UpdateVersion { e_tag: version.e_tag.clone(), version: version.version.clone() };
        let opts = PutOptions { mode: PutMode::Update(update), ..PutOptions::default() };
        match self.inner.put_opts(&path, PutPayload::from(body), opts).await {
            Ok(r) => Ok(to_version(r.e_tag, r.version)),
            Err(e) => Err(self.fold(key, e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Err(e @ object_store::Error::NotFound { .. }) if names_missing_bucket(&e) => {
                Err(Error::MissingBucket { store: self.describe.clone() })
            }
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(self.describe.clone(), &e)),
        }
    }

    async fn written_at(&self, key: &str) -> Result<Option<Timestamp>> {
        match self.inner.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(Timestamp::from_millis(meta.last_modified.timestamp_millis()))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(classify(self.describe.clone(), &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        oxiflow_core::keys::check_prefix(prefix)?;
        // object_store lists whole path segments: list the prefix's directory,
        // then filter by the full prefix (and the key rules: a foreign object
        // under the root is not ours).
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let root =
            if self.prefix.is_empty() { dir.to_string() } else { format!("{}/{dir}", self.prefix).trim_end_matches('/').to_string() };
        let root_path = if root.is_empty() { None } else { Some(Path::from(root.as_str())) };
        let metas: Vec<_> = self.inner.list(root_path.as_ref()).try_collect().await.map_err(|e| classify(self.describe.clone(), &e))?;
        let strip = if self.prefix.is_empty() { String::new() } else { format!("{}/", self.prefix) };
        let mut keys: Vec<Listed> = metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(strip.as_str())?.to_string();
                let version = (m.e_tag.is_some() || m.version.is_some()).then(|| to_version(m.e_tag.map(quoted), m.version));
                (key.starts_with(prefix) && oxiflow_core::keys::check_key(&key).is_ok()).then_some(Listed { key, version })
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(keys)
    }
}
