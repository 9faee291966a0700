//! The s3 backend: one bucket on any S3-compatible server (AWS S3, SeaweedFS, Ceph RGW, MinIO,
//! R2…) through the `object_store` crate, shared by every node of a fleet.
//!
//! - Packuments are objects under `packuments/`, written with conditional PUTs: `If-None-Match:
//!   *` to create, `If-Match: <etag>` to replace the version that was read. Their metadata
//!   (validators, freshness) travels as user metadata of the same object, so bytes and metadata
//!   change together. The version token is the object's ETag.
//! - Tarballs are keyed by content: the bytes are objects under `content/<algorithm>/<hex>`
//!   (the published integrity's strongest hash), written once and verified while they stream
//!   in; large ones go up as a multipart upload, which S3 makes visible only when it completes,
//!   and which is aborted when the check fails. Under `tarballs/<name>/-/<file>` an empty
//!   object names the content (user metadata) and is written only after the content is, so a
//!   name never points at bytes that are not there and verified.
//! - State objects (the mirror checkpoint, leases) are objects under `state/`, with the same
//!   conditional PUTs; an exclusive claim is a lease object renewed while it is held.
//! - At start, [`S3Store::open`] proves the bucket is reachable with these credentials and that
//!   the server enforces conditional writes: one that accepts the headers but ignores them would
//!   lose versions, and is refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::{Path, PathPart};
use object_store::{
    Attribute, AttributeValue, Attributes, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, RetryConfig, UpdateVersion,
    WriteMultipart,
};
use ssri::{Integrity, IntegrityChecker};

use super::lease::{Lease, LeaseHolder};
use super::{
    verified_stream, Claim, Expect, PackumentMeta, Store, StoreError, StoredPackument, TarballBody,
    TarballSink, Token, VerifyReport, Written,
};
use crate::config::S3Config;

/// The user-metadata key of a packument's [`PackumentMeta`].
const META: &str = "sluice-meta";
/// The user-metadata key of a tarball's integrity.
const INTEGRITY: &str = "sluice-integrity";
/// The user-metadata key of the content object a tarball's name points at.
const CONTENT: &str = "sluice-content";
/// Tarballs up to this go up in one PUT; larger ones as a multipart upload of parts this size.
const PART: usize = 8 << 20;

/// A bucket (and key prefix) on an S3-compatible server.
#[derive(Debug, Clone)]
pub struct S3Store {
    bucket: Arc<AmazonS3>,
    prefix: Vec<String>,
    location: String,
    /// This node's name, in the leases it takes.
    node: String,
    /// How long a claim's lease lasts without renewal.
    lease: Duration,
    /// The claims asked for and not had, with what was seen of them: taking one over needs
    /// its lease seen unchanged for a whole duration, across attempts.
    claims: Arc<Mutex<std::collections::HashMap<String, Lease>>>,
}

/// A token from an object's ETag and version and, for a packument, its metadata. The ETag is
/// the digest of the bytes and a bucket without versioning gives no version, so without the
/// metadata a touch (same bytes, new metadata) would keep the token it replaced. A conditional
/// put can still check only the ETag and version: one over a version read before a touch goes
/// through, losing that touch's metadata but no bytes.
fn token(e_tag: Option<String>, version: Option<String>, meta: Option<&PackumentMeta>) -> Token {
    let meta = meta
        .map(|meta| {
            format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(encode_meta(meta).as_bytes())
            )
        })
        .unwrap_or_default();
    Token::new(format!(
        "{}|{}|{meta}",
        e_tag.unwrap_or_default(),
        version.unwrap_or_default()
    ))
}

fn update_version(token: &Token) -> UpdateVersion {
    let mut parts = token.as_str().splitn(3, '|');
    let e_tag = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    UpdateVersion {
        e_tag: Some(e_tag.to_string()).filter(|t| !t.is_empty()),
        version: Some(version.to_string()).filter(|v| !v.is_empty()),
    }
}

fn encode_meta(meta: &PackumentMeta) -> String {
    let json = serde_json::to_string(meta).unwrap_or_default();
    percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn decode_meta(attributes: &Attributes) -> PackumentMeta {
    attributes
        .get(&Attribute::Metadata(META.into()))
        .and_then(|value| {
            let json = percent_encoding::percent_decode_str(value.as_ref())
                .decode_utf8()
                .ok()?;
            serde_json::from_str(&json).ok()
        })
        .unwrap_or_default()
}

impl S3Store {
    /// A client for the bucket `config` names (no request made yet; see
    /// [`S3Store::prove_conditional_writes`]). `node` names this node in leases.
    pub fn connect(
        config: &S3Config,
        node: &str,
        lease: Duration,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        crate::crypto::install_crypto_provider();
        let location = match &config.endpoint {
            Some(endpoint) => format!("s3://{}/{} at {endpoint}", config.bucket, config.prefix),
            None => format!(
                "s3://{}/{} in {}",
                config.bucket, config.prefix, config.region
            ),
        };
        let fail = |message: String| StoreError {
            location: location.clone(),
            message,
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_allow_http(config.allow_http)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(config.allow_http)
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout.min(Duration::from_secs(10))),
            )
            .with_retry(RetryConfig {
                max_retries: 5,
                retry_timeout: timeout * 3,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        let bucket = builder
            .build()
            .map_err(|e| fail(format!("cannot configure the S3 client: {e}")))?;
        let store = Self {
            bucket: Arc::new(bucket),
            prefix: config
                .prefix
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            location,
            node: node.to_string(),
            lease,
            claims: Arc::default(),
        };
        Ok(store)
    }

    fn fail(&self, message: impl std::fmt::Display) -> StoreError {
        StoreError {
            location: self.location.clone(),
            message: message.to_string(),
        }
    }

    /// The key of `parts` under the prefix.
    fn key<'a>(&'a self, parts: impl IntoIterator<Item = &'a str>) -> Path {
        Path::from_iter(
            self.prefix
                .iter()
                .map(String::as_str)
                .chain(parts)
                .map(PathPart::from),
        )
    }

    fn packument_key(&self, name: &str) -> Path {
        self.key(std::iter::once("packuments").chain(name.split('/')))
    }

    /// The key of the content `integrity` describes (its strongest hash).
    fn content_key(&self, integrity: &Integrity) -> Path {
        let (algorithm, hex) = integrity.to_hex();
        let algorithm = algorithm.to_string();
        self.key(["content", algorithm.as_str(), hex.as_str()])
    }

    /// The content object a name object's `attributes` point at, and the tarball's integrity.
    fn pointed(&self, attributes: &Attributes) -> Option<(Path, Integrity)> {
        let integrity = attributes
            .get(&Attribute::Metadata(INTEGRITY.into()))
            .and_then(|v| v.as_ref().parse::<Integrity>().ok())?;
        let content = attributes.get(&Attribute::Metadata(CONTENT.into()))?;
        let content = self.key(std::iter::once("content").chain(content.as_ref().split('/')));
        Some((content, integrity))
    }

    fn tarball_key(&self, name: &str, file: &str) -> Path {
        self.key(
            std::iter::once("tarballs")
                .chain(name.split('/'))
                .chain(["-", file]),
        )
    }

    fn state_key(&self, key: &str) -> Path {
        self.key(std::iter::once("state").chain(key.split('/')))
    }

    /// Check the bucket is there and the credentials work, then write a probe object with
    /// conditions that must fail: a server that lets them through does not enforce conditional
    /// writes, and is refused.
    pub async fn prove_conditional_writes(&self) -> Result<(), StoreError> {
        // A listing first: some servers create a bucket on its first PUT.
        let root = self.key(["state"]);
        self.bucket
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| self.reach_error(e))?;
        let probe = self.state_key(&format!("probe/{}-{}", self.node, fastrand::u64(..)));
        let first = self
            .bucket
            .put_opts(
                &probe,
                PutPayload::from_static(b"1"),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            )
            .await
            .map_err(|e| self.reach_error(e))?;
        let again = self
            .bucket
            .put_opts(
                &probe,
                PutPayload::from_static(b"2"),
                PutOptions {
                    mode: PutMode::Create,
                    ..PutOptions::default()
                },
            )
            .await;
        let stale = UpdateVersion {
            e_tag: Some("\"00000000000000000000000000000000\"".into()),
            version: None,
        };
        let wrong = self
            .bucket
            .put_opts(
                &probe,
                PutPayload::from_static(b"3"),
                PutOptions {
                    mode: PutMode::Update(stale),
                    ..PutOptions::default()
                },
            )
            .await;
        let right = self
            .bucket
            .put_opts(
                &probe,
                PutPayload::from_static(b"4"),
                PutOptions {
                    mode: PutMode::Update(first.into()),
                    ..PutOptions::default()
                },
            )
            .await;
        let _ = self.bucket.delete(&probe).await;
        let enforced = matches!(again, Err(object_store::Error::AlreadyExists { .. }))
            && matches!(wrong, Err(object_store::Error::Precondition { .. }))
            && right.is_ok();
        if !enforced {
            return Err(self.fail(
                "this S3 server accepts conditional writes (If-None-Match, If-Match) but does not \
                 enforce them, so nodes merging one packument would lose versions; use a server \
                 that enforces them (AWS S3, SeaweedFS, MinIO, Ceph RGW, R2)",
            ));
        }
        Ok(())
    }

    /// A start-up failure, said for a person: missing bucket, wrong credentials, unreachable.
    fn reach_error(&self, error: object_store::Error) -> StoreError {
        let text = error.to_string();
        let why = if text.contains("NoSuchBucket")
            || matches!(error, object_store::Error::NotFound { .. })
        {
            "the bucket does not exist (create it first)"
        } else if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied")
            || matches!(
                error,
                object_store::Error::PermissionDenied { .. }
                    | object_store::Error::Unauthenticated { .. }
            )
        {
            "the credentials are refused (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or [storage.s3] access_key_id / secret_access_key)"
        } else {
            "the endpoint cannot be reached or answered an error"
        };
        self.fail(format!("{why}: {text}"))
    }

    async fn get(
        &self,
        key: &Path,
        head: bool,
    ) -> Result<Option<object_store::GetResult>, StoreError> {
        match self
            .bucket
            .get_opts(
                key,
                GetOptions {
                    head,
                    ..GetOptions::default()
                },
            )
            .await
        {
            Ok(result) => Ok(Some(result)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Delete `key`; one already gone is no failure.
    async fn delete(&self, key: &Path) -> Result<(), StoreError> {
        match self.bucket.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Whether a tarball name of package `name` points at `content`.
    async fn names_content(&self, name: &str, content: &Path) -> Result<bool, StoreError> {
        let prefix = self.key(
            std::iter::once("tarballs")
                .chain(name.split('/'))
                .chain(["-"]),
        );
        let names: Vec<Path> = self
            .bucket
            .list(Some(&prefix))
            .map_ok(|entry| entry.location)
            .try_collect()
            .await
            .map_err(|e| self.fail(e))?;
        for named in names {
            if let Some(found) = self.get(&named, true).await? {
                if self
                    .pointed(&found.attributes)
                    .is_some_and(|(other, _)| other == *content)
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn put_checked(
        &self,
        key: &Path,
        bytes: Bytes,
        attributes: Attributes,
        expect: Expect,
        meta: Option<&PackumentMeta>,
    ) -> Result<Written, StoreError> {
        let mode = match expect {
            Expect::Absent => PutMode::Create,
            Expect::Version(token) => PutMode::Update(update_version(&token)),
        };
        match self
            .bucket
            .put_opts(
                key,
                PutPayload::from_bytes(bytes),
                PutOptions {
                    mode,
                    attributes,
                    ..PutOptions::default()
                },
            )
            .await
        {
            Ok(result) => Ok(Written::Stored(token(result.e_tag, result.version, meta))),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Written::Conflict),
            Err(e) => Err(self.fail(e)),
        }
    }
}

#[async_trait]
impl Store for S3Store {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn packument(&self, name: &str) -> Result<Option<StoredPackument>, StoreError> {
        let Some(found) = self.get(&self.packument_key(name), false).await? else {
            return Ok(None);
        };
        let meta = decode_meta(&found.attributes);
        let token = token(
            found.meta.e_tag.clone(),
            found.meta.version.clone(),
            Some(&meta),
        );
        let bytes = found.bytes().await.map_err(|e| self.fail(e))?;
        Ok(Some(StoredPackument {
            bytes,
            meta,
            token,
            stale: false,
        }))
    }

    async fn packument_meta(
        &self,
        name: &str,
    ) -> Result<Option<(PackumentMeta, Token)>, StoreError> {
        Ok(self
            .get(&self.packument_key(name), true)
            .await?
            .map(|found| {
                let meta = decode_meta(&found.attributes);
                let token = token(found.meta.e_tag, found.meta.version, Some(&meta));
                (meta, token)
            }))
    }

    async fn put_packument(
        &self,
        name: &str,
        bytes: Bytes,
        meta: &PackumentMeta,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from("application/json"),
        );
        attributes.insert(Attribute::Metadata(META.into()), encode_meta(meta).into());
        self.put_checked(
            &self.packument_key(name),
            bytes,
            attributes,
            expect,
            Some(meta),
        )
        .await
    }

    async fn touch_packument(
        &self,
        name: &str,
        meta: &PackumentMeta,
        expect: &Token,
    ) -> Result<Written, StoreError> {
        // The metadata lives with the bytes: write both again, over the version read.
        let Some(held) = self.packument(name).await? else {
            return Ok(Written::Conflict);
        };
        if held.token != *expect {
            return Ok(Written::Conflict);
        }
        self.put_packument(name, held.bytes, meta, Expect::Version(held.token))
            .await
    }

    async fn tarball(&self, name: &str, file: &str) -> Result<Option<TarballBody>, StoreError> {
        let what = format!("{name}/-/{file}");
        let Some(named) = self.get(&self.tarball_key(name, file), true).await? else {
            return Ok(None);
        };
        let (content, integrity) = self
            .pointed(&named.attributes)
            .ok_or_else(|| self.fail(format!("{what} names no content")))?;
        let Some(found) = self.get(&content, false).await? else {
            // The name outlived its content (a verify dropped it): absent, fetched again.
            return Ok(None);
        };
        let size = found.meta.size;
        let this = self.clone();
        let stream = found.into_stream().map_err(move |e| this.fail(e)).boxed();
        let location = self.location.clone();
        let (bucket, named) = (self.bucket.clone(), self.tarball_key(name, file));
        Ok(Some(TarballBody {
            size,
            integrity: integrity.clone(),
            stream: verified_stream(stream, integrity, move || {
                // Dropped, so the next request fetches it again.
                tracing::warn!(
                    tarball = what,
                    "stored tarball is corrupt: dropped, it will be fetched again"
                );
                let (bucket, content, named) = (bucket.clone(), content.clone(), named.clone());
                tokio::spawn(async move {
                    let _ = bucket.delete(&named).await;
                    let _ = bucket.delete(&content).await;
                });
                StoreError {
                    location: location.clone(),
                    message: format!("{what} does not match its integrity"),
                }
            }),
        }))
    }

    async fn has_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        Ok(self
            .get(&self.tarball_key(name, file), true)
            .await?
            .is_some())
    }

    async fn tarball_sink(
        &self,
        name: &str,
        file: &str,
        integrity: &Integrity,
        size: Option<u64>,
    ) -> Result<Box<dyn TarballSink>, StoreError> {
        let content = self.content_key(integrity);
        let (algorithm, hex) = integrity.to_hex();
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from("application/octet-stream"),
        );
        let upload = if size.is_some_and(|size| size <= PART as u64) {
            None
        } else {
            let upload = self
                .bucket
                .put_multipart_opts(
                    &content,
                    PutMultipartOptions {
                        attributes: attributes.clone(),
                        ..PutMultipartOptions::default()
                    },
                )
                .await
                .map_err(|e| self.fail(e))?;
            Some(WriteMultipart::new_with_chunk_size(upload, PART))
        };
        Ok(Box::new(S3Sink {
            store: self.clone(),
            content,
            content_name: format!("{algorithm}/{hex}"),
            named: self.tarball_key(name, file),
            what: format!("{name}/-/{file}"),
            attributes,
            published: integrity.to_string(),
            checker: IntegrityChecker::new(integrity.clone()),
            sha512: ssri::IntegrityOpts::new().algorithm(ssri::Algorithm::Sha512),
            small: Vec::new(),
            upload,
        }))
    }

    async fn delete_tarball(&self, name: &str, file: &str) -> Result<bool, StoreError> {
        let named = self.tarball_key(name, file);
        let Some(found) = self.get(&named, true).await? else {
            return Ok(false);
        };
        let content = self.pointed(&found.attributes).map(|(content, _)| content);
        // The name first: it never points at content that is gone.
        self.delete(&named).await?;
        if let Some(content) = content {
            if !self.names_content(name, &content).await? {
                self.delete(&content).await?;
            }
        }
        Ok(true)
    }

    async fn state(&self, key: &str) -> Result<Option<(Bytes, Token)>, StoreError> {
        let Some(found) = self.get(&self.state_key(key), false).await? else {
            return Ok(None);
        };
        let token = token(found.meta.e_tag.clone(), found.meta.version.clone(), None);
        let bytes = found.bytes().await.map_err(|e| self.fail(e))?;
        Ok(Some((bytes, token)))
    }

    async fn put_state(
        &self,
        key: &str,
        bytes: Bytes,
        expect: Expect,
    ) -> Result<Written, StoreError> {
        self.put_checked(&self.state_key(key), bytes, Attributes::new(), expect, None)
            .await
    }

    async fn claim(&self, what: &str) -> Result<Option<Claim>, StoreError> {
        let key = format!("claims/{what}");
        let taken = self
            .claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        let mut lease = taken
            .unwrap_or_else(|| Lease::new(Arc::new(self.clone()), &key, &self.node, self.lease));
        let acquired = lease.acquire().await;
        if let Ok(true) = acquired {
            return Ok(Some(Box::new(LeaseHolder::hold(lease))));
        }
        self.claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, lease);
        acquired.map(|_| None)
    }

    fn packument_names(&self) -> BoxStream<'static, Result<String, StoreError>> {
        let prefix = self.key(["packuments"]);
        let skip = prefix.parts().count();
        let this = self.clone();
        self.bucket
            .list(Some(&prefix))
            .map(move |entry| {
                let entry = entry.map_err(|e| this.fail(e))?;
                let parts: Vec<String> = entry
                    .location
                    .parts()
                    .skip(skip)
                    .map(|part| {
                        percent_encoding::percent_decode_str(part.as_ref())
                            .decode_utf8_lossy()
                            .into_owned()
                    })
                    .collect();
                Ok(parts.join("/"))
            })
            .boxed()
    }

    async fn usage(&self) -> Result<u64, StoreError> {
        let prefix = self.key(std::iter::empty());
        let root = if self.prefix.is_empty() {
            None
        } else {
            Some(&prefix)
        };
        self.bucket
            .list(root)
            .try_fold(0u64, |sum, entry| {
                futures::future::ready(Ok(sum + entry.size))
            })
            .await
            .map_err(|e| self.fail(e))
    }

    async fn verify(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<VerifyReport, StoreError> {
        let names: Vec<Path> = self
            .bucket
            .list(Some(&self.key(["tarballs"])))
            .map_ok(|entry| entry.location)
            .try_collect()
            .await
            .map_err(|e| self.fail(e))?;
        let total = names.len() as u64;
        let mut report = VerifyReport::default();
        // Each content object is read once, however many names point at it.
        let mut checked: std::collections::HashMap<Path, bool> = Default::default();
        for (done, named) in names.into_iter().enumerate() {
            progress(done as u64, total);
            let Some(found) = self.get(&named, true).await? else {
                continue;
            };
            let Some((content, integrity)) = self.pointed(&found.attributes) else {
                let _ = self.bucket.delete(&named).await;
                report.corrupt.push(named.to_string());
                continue;
            };
            let good = match checked.get(&content) {
                Some(good) => *good,
                None => {
                    let good = match self.get(&content, false).await? {
                        None => None,
                        Some(found) => {
                            let bytes = found.bytes().await.map_err(|e| self.fail(e))?;
                            Some(integrity.check(&bytes).is_ok())
                        }
                    };
                    match good {
                        None => {
                            let _ = self.bucket.delete(&named).await;
                            report.missing.push(named.to_string());
                            continue;
                        }
                        Some(good) => {
                            if !good {
                                let _ = self.bucket.delete(&content).await;
                            }
                            checked.insert(content.clone(), good);
                            good
                        }
                    }
                }
            };
            if good {
                report.ok += 1;
            } else {
                let _ = self.bucket.delete(&named).await;
                report.corrupt.push(named.to_string());
            }
        }
        progress(total, total);
        Ok(report)
    }
}

/// A tarball streaming into the bucket: small ones are buffered and written in one PUT, large
/// ones go up as a multipart upload; either becomes visible only once the whole matched. A
/// sink dropped before its commit aborts its multipart upload.
struct S3Sink {
    store: S3Store,
    /// Where the bytes go.
    content: Path,
    /// `content` as the name object records it.
    content_name: String,
    /// The name object, written last.
    named: Path,
    what: String,
    attributes: Attributes,
    published: String,
    checker: IntegrityChecker,
    sha512: ssri::IntegrityOpts,
    small: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl Drop for S3Sink {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

#[async_trait]
impl TarballSink for S3Sink {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.checker.input(chunk);
        self.sha512.input(chunk);
        match self.upload.as_mut() {
            Some(upload) => {
                upload
                    .wait_for_capacity(4)
                    .await
                    .map_err(|e| self.store.fail(e))?;
                upload.write(chunk);
            }
            None => self.small.extend_from_slice(chunk),
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<Integrity, StoreError> {
        let upload = self.upload.take();
        let store = self.store.clone();
        let what = std::mem::take(&mut self.what);
        let attributes = std::mem::take(&mut self.attributes);
        let small = std::mem::take(&mut self.small);
        let checker = std::mem::replace(
            &mut self.checker,
            IntegrityChecker::new(Integrity::from(b"")),
        );
        let sha512 = std::mem::replace(
            &mut self.sha512,
            ssri::IntegrityOpts::new().algorithm(ssri::Algorithm::Sha512),
        );
        if checker.result().is_err() {
            if let Some(upload) = upload {
                let _ = upload.abort().await;
            }
            return Err(store.fail(format!(
                "{what} does not match its published integrity: not stored"
            )));
        }
        let sha512 = sha512.result();
        match upload {
            Some(upload) => {
                upload.finish().await.map_err(|e| store.fail(e))?;
            }
            None => {
                // Written once: content already there is the same bytes.
                match store
                    .bucket
                    .put_opts(
                        &self.content,
                        PutPayload::from(small),
                        PutOptions {
                            mode: PutMode::Create,
                            attributes,
                            ..PutOptions::default()
                        },
                    )
                    .await
                {
                    Ok(_)
                    | Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {}
                    Err(e) => return Err(store.fail(e)),
                }
            }
        }
        // Only now does the name point at it.
        let mut named = Attributes::new();
        named.insert(
            Attribute::Metadata(INTEGRITY.into()),
            format!("{} {sha512}", self.published).into(),
        );
        named.insert(
            Attribute::Metadata(CONTENT.into()),
            self.content_name.clone().into(),
        );
        store
            .bucket
            .put_opts(
                &self.named,
                PutPayload::default(),
                PutOptions {
                    attributes: named,
                    ..PutOptions::default()
                },
            )
            .await
            .map_err(|e| store.fail(e))?;
        Ok(sha512)
    }
}
