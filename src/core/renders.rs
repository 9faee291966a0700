//! Renders: what a client is sent for a packument. The stored document is parsed, the versions
//! plugins hide are taken off, its invariants repaired, tarball links rewritten to
//! `server.public_url`, abbreviated when asked, gzipped once, and held in the hot cache with a
//! strong ETag until the document changes, a plugin's rules change (generation), or a plugin's
//! answer changes by itself (min-age's next version coming of age).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::Value;
use sluice_plugin_api::{CacheStatus, Packument};

use super::packuments::{Doc, Packuments};
use super::{gzip_bytes, parse_document, Error, Shared, TRIM_AFTER};
use crate::flight::SingleFlight;
use crate::memory::release_freed_memory;
use crate::packument;
use crate::plugins::Host;
use crate::store::{now_ms, HotCache, HotKey, HotKeyRef, Rendered};

/// A document as served, before links are rewritten: hidden versions gone, invariants repaired.
#[derive(Debug)]
pub struct Filtered {
    /// The document.
    pub doc: Packument,
    /// When the plugins' answer for it changes by itself, if it does.
    pub until: Option<SystemTime>,
}

/// The renders part of the core.
pub struct Renders {
    packuments: Arc<Packuments>,
    host: Arc<Host>,
    hot: HotCache,
    public_url: String,
    flights: SingleFlight<HotKey, Shared<Arc<Rendered>>>,
}

impl std::fmt::Debug for Renders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renders")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Renders {
    /// Renders of `packuments`' documents under `host`'s plugins, links to `public_url`, held in
    /// `hot`.
    pub fn new(
        packuments: Arc<Packuments>,
        host: Arc<Host>,
        hot: HotCache,
        public_url: String,
    ) -> Self {
        Self {
            packuments,
            host,
            hot,
            public_url,
            flights: SingleFlight::default(),
        }
    }

    /// The document of `name` as served: the versions plugins hide taken off, invariants
    /// repaired (links not yet rewritten).
    pub fn filtered(&self, name: &str, doc: &Doc) -> Result<Filtered, Error> {
        let mut parsed = parse_document(&doc.bytes, name)?;
        let hidden = self.host.hidden(&parsed, SystemTime::now())?;
        for version in hidden.reasons.keys() {
            parsed.remove_version(version);
            // A hidden version's publish time would tell clients it exists.
            if let Some(time) = parsed.doc.get_mut("time").and_then(Value::as_object_mut) {
                time.shift_remove(version);
            }
        }
        packument::repair(&mut parsed);
        packument::lift_readme(&mut parsed);
        Ok(Filtered {
            doc: parsed,
            until: hidden.until,
        })
    }

    fn current(&self, key: HotKeyRef<'_>) -> Option<Arc<Rendered>> {
        let generation = self.host.generation();
        let now = now_ms();
        self.hot.get(&key).filter(|r| r.is_current(generation, now))
    }

    /// The rendered packument body of `name` for a client, from the hot cache when possible.
    pub async fn packument(
        self: &Arc<Self>,
        name: &str,
        abbreviated: bool,
        gzip: bool,
    ) -> Result<(Arc<Rendered>, CacheStatus), Error> {
        let lookup = HotKeyRef::Packument {
            name,
            abbreviated,
            gzip,
        };
        if let Some(rendered) = self.current(lookup) {
            if self.packuments.confirmed_fresh(name) {
                return Ok((rendered, CacheStatus::Hit));
            }
            self.packuments.revalidate_in_background(name);
            return Ok((rendered, CacheStatus::Stale));
        }
        let key = HotKey::Packument {
            name: name.into(),
            abbreviated,
            gzip,
        };
        // A change stored while this renders (a revalidation, another node) must not be
        // hidden by this render being cached afterwards.
        let seen = self.packuments.change_seq(name);
        let (doc, status) = self.packuments.get(name).await?;
        // A document this request just stored (a miss) is its own change: its render may be
        // kept until the next one.
        let seen = doc.stored_as.unwrap_or(seen);
        let this = self.clone();
        let task_key = key.clone();
        let (rendered, _) = self
            .flights
            .run(key, async move { this.render(task_key, doc, seen).await })
            .await;
        Ok((rendered?, status))
    }

    /// Hold `rendered` under `key` unless the packument of `name` changed since `seen`.
    fn keep(&self, key: HotKey, name: &str, seen: u64, rendered: &Arc<Rendered>) {
        if self.packuments.change_seq(name) == seen {
            self.hot.insert(key, rendered.clone());
        }
    }

    async fn render(self: Arc<Self>, key: HotKey, source: Doc, seen: u64) -> Shared<Arc<Rendered>> {
        let HotKey::Packument {
            name,
            abbreviated,
            gzip,
        } = key.clone()
        else {
            return Err(Error::Internal("not a packument".into()));
        };
        if gzip {
            // Compress the identity body, rendering it first when needed.
            let identity_key = HotKey::Packument {
                name: name.clone(),
                abbreviated,
                gzip: false,
            };
            let identity = match self.current(identity_key.as_ref()) {
                Some(identity) => identity,
                None => Box::pin(self.clone().render(identity_key, source, seen)).await?,
            };
            let body = identity.body.clone();
            let compressed = tokio::task::spawn_blocking(move || {
                let compressed = gzip_bytes(&body);
                if body.len() > TRIM_AFTER {
                    release_freed_memory();
                }
                compressed
            })
            .await
            .map_err(|e| Error::Internal(format!("render failed: {e}")))?;
            let rendered = Arc::new(Rendered {
                body: compressed,
                etag: format!("{}-gz\"", identity.etag.trim_end_matches('"')).into(),
                last_modified: identity.last_modified.clone(),
                generation: identity.generation,
                expires_at: identity.expires_at,
            });
            self.keep(key, &name, seen, &rendered);
            return Ok(rendered);
        }
        let this = self.clone();
        let render_name = name.clone();
        let rendered = tokio::task::spawn_blocking(move || -> Shared<Arc<Rendered>> {
            let generation = this.host.generation();
            let Filtered { mut doc, until } = this.filtered(&render_name, &source)?;
            packument::rewrite(&mut doc, &this.public_url);
            let body = if abbreviated {
                // `_id` as upstream serves it, for what comes from upstream; a package
                // published here goes without, as Verdaccio's battery asks.
                let mirrored = !this.packuments.private().contains(&render_name);
                serde_json::to_vec(&packument::abbreviate(&doc, mirrored))
            } else {
                serde_json::to_vec(&doc.doc)
            }
            .map_err(|e| Error::Internal(format!("cannot render {render_name}: {e}")))?;
            let modified = doc
                .time()
                .and_then(|t| t.get("modified"))
                .and_then(Value::as_str)
                .and_then(|m| humantime::parse_rfc3339_weak(m.trim_end_matches('Z')).ok())
                .map(|t| Arc::from(httpdate::fmt_http_date(t)));
            // The parse tree is as large as the stored document, whatever was rendered.
            let large = source.bytes.len() > TRIM_AFTER;
            let rendered = Arc::new(Rendered {
                generation,
                expires_at: until.map(unix_ms),
                ..Rendered::new(Bytes::from(body), modified)
            });
            drop(doc);
            drop(source);
            if large {
                release_freed_memory();
            }
            Ok(rendered)
        })
        .await
        .map_err(|e| Error::Internal(format!("render failed: {e}")))??;
        self.keep(key, &name, seen, &rendered);
        Ok(rendered)
    }

    /// One version's manifest (by version or dist-tag), links rewritten.
    pub async fn version(
        self: &Arc<Self>,
        name: &str,
        spec: &str,
    ) -> Result<(Value, CacheStatus), Error> {
        let (doc, status) = self.packuments.get(name).await?;
        let filtered = self.filtered(name, &doc)?;
        let mut manifest = packument::manifest(&filtered.doc, spec)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!("{name} has no version or dist-tag `{spec}`"))
            })?;
        packument::rewrite_manifest(&mut manifest, name, &self.public_url);
        Ok((manifest, status))
    }

    /// The dist-tags of `name`.
    pub async fn dist_tags(self: &Arc<Self>, name: &str) -> Result<(Value, CacheStatus), Error> {
        let (doc, status) = self.packuments.get(name).await?;
        let filtered = self.filtered(name, &doc)?;
        Ok((
            filtered
                .doc
                .doc
                .get("dist-tags")
                .cloned()
                .unwrap_or(Value::Object(Default::default())),
            status,
        ))
    }
}
