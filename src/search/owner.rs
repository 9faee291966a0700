//! The index's owner: the one task with an `IndexWriter`. It opens the generation `CURRENT`
//! names (building one when there is none or it cannot be read), applies changed names in
//! batches, commits within a second, builds new generations and swaps them in.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::schema::{extract, register_tokenizers, Fields, SCHEMA_VERSION};
use super::{Journal, JournalView, SearchIndex};
use crate::store::{all_names, now_ms, SharedStore, StoreError};

/// The pointer file: which generation is the complete, current index.
const CURRENT: &str = "CURRENT";
/// Held (an exclusive lock) by the process that owns the index.
const LOCK: &str = "owner.lock";
/// A `sluice reindex` asking the owning server for a rebuild (its id inside).
const REQUEST: &str = "reindex.request";
/// The owner's progress on a build, for `sluice reindex`.
const PROGRESS: &str = "reindex.progress";
/// How often the spool and a reindex request are looked for, and a follower reloads.
const TICK: Duration = Duration::from_secs(1);
/// Changes are searchable within this (at once when a search waits for one).
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// A build commits what it wrote this often (an index being built while none exists is
/// searched meanwhile: then as often as changes).
const BUILD_COMMIT_EVERY: Duration = Duration::from_secs(5);
/// How often a build logs its progress.
const REPORT_EVERY: Duration = Duration::from_secs(10);
/// Names taken at once, from the inbox or from a build's listing.
const BATCH: usize = 512;
/// Packuments read at once.
const READS_AT_ONCE: usize = 16;
/// The writer's indexing memory (one indexing thread: the machine's cores serve requests).
const WRITER_MEMORY: usize = 64 << 20;

/// What a generation's commit records beside its documents (tantivy's commit payload, written
/// in the same atomic step as the commit).
#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    /// Every change the fleet's journal lists before this position is in the index.
    journal: u64,
}

fn recorded_of(index: &Index) -> Option<u64> {
    let payload = index.load_metas().ok()?.payload?;
    serde_json::from_str::<Recorded>(&payload)
        .ok()
        .map(|r| r.journal)
}

/// What `CURRENT` says.
#[derive(Debug, Serialize, Deserialize)]
struct Pointer {
    generation: String,
    schema: u32,
}

/// A build's progress, as the owner writes it for `sluice reindex`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reindexed {
    /// The request it answers.
    pub id: String,
    /// Packages read so far.
    pub done: u64,
    /// Packages listed (0 while the store is being listed).
    pub total: u64,
    /// Whether the new index is the current one now.
    pub finished: bool,
    /// Documents in the index.
    pub documents: u64,
    /// Whether the server did it (else this process).
    #[serde(skip)]
    pub by_server: bool,
}

/// One index folder and its writer.
struct Generation {
    name: String,
    writer: IndexWriter,
    reader: IndexReader,
    dirty: bool,
    last_commit: Instant,
    /// The journal position its last commit recorded.
    recorded: Option<u64>,
}

impl Generation {
    /// A new empty generation in `root`.
    fn create(root: &Path, fields: &Fields) -> tantivy::Result<Self> {
        let name = format!("g-{}-{:08x}", now_ms(), fastrand::u32(..));
        let path = root.join(&name);
        std::fs::create_dir_all(&path)?;
        let index = Index::create_in_dir(&path, fields.schema.clone())?;
        register_tokenizers(&index)?;
        Self::from_index(name, &index)
    }

    /// The generation `name` of `root`, checked: its schema is this version's and every
    /// segment opens.
    fn open(root: &Path, name: &str, fields: &Fields) -> tantivy::Result<Self> {
        let index = Index::open_in_dir(root.join(name))?;
        register_tokenizers(&index)?;
        if index.schema() != fields.schema {
            return Err(tantivy::TantivyError::SchemaError(
                "another schema than this version's".into(),
            ));
        }
        let mut generation = Self::from_index(name.to_string(), &index)?;
        generation.recorded = recorded_of(&index);
        let searcher = generation.reader.searcher();
        for segment in searcher.segment_readers() {
            segment.fast_fields().str("name")?;
            segment.get_store_reader(1)?;
        }
        Ok(generation)
    }

    fn from_index(name: String, index: &Index) -> tantivy::Result<Self> {
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            name,
            writer,
            reader,
            dirty: false,
            last_commit: Instant::now(),
            recorded: None,
        })
    }

    /// Replace the document of `name` with `doc` (none: take it out).
    fn apply(&mut self, fields: &Fields, name: &str, doc: Option<&TantivyDocument>) {
        self.writer
            .delete_term(Term::from_field_text(fields.name, name));
        if let Some(doc) = doc {
            if let Err(error) = self.writer.add_document(doc.clone()) {
                tracing::error!(package = name, %error, "search index: document not added");
            }
        }
        self.dirty = true;
    }

    /// Whether a commit recording `journal` would change what is stored.
    fn changed(&self, journal: Option<u64>) -> bool {
        self.dirty || journal != self.recorded
    }

    /// Commit what was applied, recording the journal position `journal` in the same commit.
    fn commit(&mut self, journal: Option<u64>) -> tantivy::Result<()> {
        if self.changed(journal) {
            let mut prepared = self.writer.prepare_commit()?;
            if let Some(position) = journal {
                let payload = serde_json::to_string(&Recorded { journal: position })
                    .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
                prepared.set_payload(&payload);
            }
            prepared.commit()?;
            self.reader.reload()?;
            self.dirty = false;
            self.recorded = journal;
        }
        self.last_commit = Instant::now();
        Ok(())
    }

    fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

/// A generation being written from the store's listing.
struct Build {
    into: Generation,
    /// The store's names once listed.
    names: Option<Vec<String>>,
    listing: Option<tokio::task::JoinHandle<Result<Listed, StoreError>>>,
    /// The journal position read before the listing: every change before it is listed.
    listed_at: Option<u64>,
    next: usize,
    /// Names changed since the build began: read again before the swap, so no document
    /// written from an older read survives.
    replay: HashSet<String>,
    started: Instant,
    id: String,
    last_report: Instant,
}

/// A store's listing, and the journal position read just before it.
type Listed = (Option<u64>, Vec<String>);

/// List the store, after reading the journal's position (so every change before it is listed).
async fn list(store: SharedStore, journal: Option<Arc<dyn Journal>>) -> Result<Listed, StoreError> {
    let at = match journal {
        Some(journal) => Some(journal.read().await?.next),
        None => None,
    };
    Ok((at, all_names(store.as_ref()).await?))
}

/// Where the owner is in the fleet's journal.
#[derive(Default)]
struct Following {
    /// The journal position through which changed names went into the inbox (`None`: not
    /// known, until a build lists the store).
    queued: Option<u64>,
    /// The journal position through which changed names are applied.
    applied: Option<u64>,
    /// The current generation holds every change before `applied` (its commits record it).
    current: bool,
    /// Reading the journal failed: read it again at the next tick.
    retry: bool,
    /// Names whose packument could not be read: taken in again at the next tick (the
    /// position does not move past them meanwhile).
    failed: HashSet<String>,
}

/// The owner's state.
struct Owner {
    index: Arc<SearchIndex>,
    store: SharedStore,
    _lock: File,
    /// The fleet's journal, in a fleet.
    journal: Option<Arc<dyn Journal>>,
    following: Following,
    current: Option<Generation>,
    build: Option<Build>,
    /// A build asked for while another ran (its id).
    queued: Option<String>,
    /// The inbox sequence applied to the live generation (published once committed).
    seen: u64,
    last_housekeeping: Instant,
}

/// Take the owner lock of `root`; `None` when another process (or task) holds it.
fn take_lock(root: &Path) -> std::io::Result<Option<File>> {
    std::fs::create_dir_all(root)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join(LOCK))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(error)) => Err(error),
    }
}

fn read_pointer(root: &Path) -> Option<Pointer> {
    let text = std::fs::read(root.join(CURRENT)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Write `bytes` to `root/file` whole or not at all (a temporary file renamed over it).
fn write_atomically(root: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let temporary = root.join(format!(".{file}.{:08x}", fastrand::u32(..)));
    let mut out = File::create(&temporary)?;
    out.write_all(bytes)?;
    out.sync_all()?;
    std::fs::rename(&temporary, root.join(file))?;
    File::open(root)?.sync_all()
}

/// Read the packuments of `names` and make their documents (none: the package has no
/// version left, or no packument). A name whose read failed is left out: its document stays.
async fn read(
    store: &SharedStore,
    fields: &Fields,
    names: Vec<String>,
) -> Vec<(String, Option<TantivyDocument>)> {
    let mut reads = futures::stream::iter(names)
        .map(|name| {
            let store = store.clone();
            async move {
                let read = store.packument(&name).await;
                (name, read)
            }
        })
        .buffer_unordered(READS_AT_ONCE);
    let mut out = Vec::new();
    while let Some((name, read)) = reads.next().await {
        match read {
            Ok(Some(stored)) => {
                let doc = extract(&name, &stored.bytes).map(|entry| fields.document(&entry));
                out.push((name, doc));
            }
            Ok(None) => out.push((name, None)),
            Err(error) => {
                tracing::warn!(package = %name, %error, "search index: packument not read, its document kept");
            }
        }
    }
    out
}

impl Owner {
    /// Own the index with `lock` held: open the current generation, or begin a build; in a
    /// fleet, read the `journal` from the position the generation recorded.
    fn start(
        index: Arc<SearchIndex>,
        store: SharedStore,
        lock: File,
        journal: Option<Arc<dyn Journal>>,
    ) -> Self {
        index.owner.store(true, Ordering::Release);
        let root = index.root.clone();
        let current = match read_pointer(&root) {
            Some(pointer) if pointer.schema == SCHEMA_VERSION => {
                match Generation::open(&root, &pointer.generation, &index.fields) {
                    Ok(generation) => Some(generation),
                    Err(error) => {
                        tracing::warn!(%error, "search index: cannot be read, rebuilding it");
                        None
                    }
                }
            }
            Some(_) => {
                tracing::info!("search index: written by another version, rebuilding it");
                None
            }
            None => {
                tracing::info!("search index: none yet, building it from the store");
                None
            }
        };
        let recorded = current.as_ref().and_then(|c| c.recorded);
        index
            .journal_moved
            .store(journal.is_some(), Ordering::Release);
        let mut owner = Self {
            index,
            store,
            _lock: lock,
            journal,
            following: Following {
                queued: recorded,
                applied: recorded,
                current: recorded.is_some(),
                ..Following::default()
            },
            current,
            build: None,
            queued: None,
            seen: 0,
            last_housekeeping: Instant::now(),
        };
        owner.remove_strays();
        match &owner.current {
            Some(current) => {
                owner.publish_live(current.reader.clone(), current.documents());
                owner.index.ready.store(true, Ordering::Release);
            }
            None => owner.start_build("start"),
        }
        owner.take_spool();
        owner
    }

    /// Remove generation folders nothing names (an interrupted build, an unreadable index).
    fn remove_strays(&self) {
        let keep: Vec<&str> = [self.current.as_ref(), self.build.as_ref().map(|b| &b.into)]
            .into_iter()
            .flatten()
            .map(|g| g.name.as_str())
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.index.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("g-") && !keep.contains(&name.as_str()) {
                if let Err(error) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(folder = %entry.path().display(), %error, "search index: old generation not removed");
                }
            }
        }
    }

    fn publish_live(&self, reader: IndexReader, documents: u64) {
        *self.index.live.write().unwrap_or_else(|p| p.into_inner()) = Some(reader);
        self.index.documents.store(documents, Ordering::Relaxed);
    }

    /// Begin building a new generation from the store; when one is being built already, the
    /// next begins once it is done (it may have listed the store before what is asked for).
    fn start_build(&mut self, id: &str) {
        if self.build.is_some() {
            self.queued = Some(id.to_string());
            return;
        }
        let into = match Generation::create(&self.index.root, &self.index.fields) {
            Ok(into) => into,
            Err(error) => {
                tracing::error!(%error, "search index: cannot create a new index");
                return;
            }
        };
        if self.current.is_none() {
            // Nothing complete to search: search what is built so far.
            self.publish_live(into.reader.clone(), 0);
        }
        self.index.ready.store(false, Ordering::Release);
        tracing::info!(generation = %into.name, "search index: building from the store");
        let (store, journal) = (self.store.clone(), self.journal.clone());
        self.build = Some(Build {
            into,
            names: None,
            listing: Some(tokio::spawn(list(store, journal))),
            listed_at: None,
            next: 0,
            replay: HashSet::new(),
            started: Instant::now(),
            id: id.to_string(),
            last_report: Instant::now(),
        });
    }

    /// Take the names other processes spooled into the inbox.
    fn take_spool(&self) {
        let names = match take_spool(&self.index.root) {
            Ok(names) => names,
            Err(error) => {
                tracing::warn!(%error, "search index: cannot read the spool of changes");
                return;
            }
        };
        for name in names {
            self.index.changed(&name);
        }
    }

    /// Whether there is work without waiting for news.
    fn busy(&self) -> bool {
        self.build
            .as_ref()
            .is_some_and(|b| b.names.as_ref().is_some_and(|n| b.next < n.len()))
    }

    /// How long to wait for news at most.
    fn next_deadline(&self) -> Duration {
        let mut wait = TICK.saturating_sub(self.last_housekeeping.elapsed());
        if let Some(current) = self.current.as_ref().filter(|c| c.dirty) {
            wait = wait.min(COMMIT_EVERY.saturating_sub(current.last_commit.elapsed()));
        }
        wait
    }

    /// One round: housekeeping when due, changed names, a batch of the build, commits.
    async fn step(&mut self) {
        if self.last_housekeeping.elapsed() >= TICK {
            self.housekeeping();
        }
        self.follow_journal().await;
        self.apply_changes().await;
        self.build_batch().await;
        self.commit_due();
        if self.busy() || self.build.as_ref().is_none_or(|b| b.names.is_none()) {
            return;
        }
        self.finish_build().await;
    }

    fn housekeeping(&mut self) {
        self.last_housekeeping = Instant::now();
        self.take_spool();
        for name in std::mem::take(&mut self.following.failed) {
            self.index.changed(&name);
        }
        if std::mem::take(&mut self.following.retry) {
            self.index.journal_moved.store(true, Ordering::Release);
        }
        let root = self.index.root.clone();
        if let Ok(id) = std::fs::read_to_string(root.join(REQUEST)) {
            let _ = std::fs::remove_file(root.join(REQUEST));
            tracing::info!("search index: rebuild asked for (sluice reindex)");
            self.start_build(id.trim());
        }
        let Some(build) = &mut self.build else {
            return;
        };
        if let Some(listing) = build.listing.take_if(|l| l.is_finished()) {
            match listing.now_or_never() {
                Some(Ok(Ok((at, names)))) => {
                    build.names = Some(names);
                    build.listed_at = at;
                    if self.following.queued.is_none() && at.is_some() {
                        // Followed from here on: what came before is listed.
                        self.following.queued = at;
                        self.following.applied = at;
                        self.index.inbox().journal = at;
                        self.index.journal_moved.store(true, Ordering::Release);
                    }
                }
                Some(Ok(Err(error))) => {
                    tracing::warn!(%error, "search index: cannot list the store, trying again");
                    let (store, journal) = (self.store.clone(), self.journal.clone());
                    build.listing = Some(tokio::spawn(list(store, journal)));
                }
                Some(Err(error)) => tracing::error!(%error, "search index: the listing failed"),
                None => {}
            }
        }
        if build.last_report.elapsed() >= REPORT_EVERY {
            build.last_report = Instant::now();
            let total = build.names.as_ref().map_or(0, Vec::len);
            tracing::info!(done = build.next, total, "search index: building");
        }
        let progress = self.progress(false);
        if let Err(error) = write_progress(&root, &progress) {
            tracing::debug!(%error, "search index: progress not written");
        }
    }

    fn progress(&self, finished: bool) -> Reindexed {
        let build = self.build.as_ref();
        Reindexed {
            id: build.map(|b| b.id.clone()).unwrap_or_default(),
            done: build.map_or(0, |b| b.next as u64),
            total: build
                .and_then(|b| b.names.as_ref())
                .map_or(0, |n| n.len() as u64),
            finished,
            documents: self.index.documents.load(Ordering::Relaxed),
            by_server: false,
        }
    }

    /// Apply the changed names waiting in the inbox.
    async fn apply_changes(&mut self) {
        let (names, covered) = {
            let mut inbox = self.index.inbox();
            let take = inbox.names.len().min(BATCH);
            let names: Vec<String> = inbox.names.drain(..take).collect();
            for name in &names {
                inbox.pending.remove(name);
            }
            let mut covered = None;
            if inbox.names.is_empty() {
                self.seen = inbox.seq;
                covered = inbox.journal;
            }
            (names, covered)
        };
        let mut unread: HashSet<String> = names.iter().cloned().collect();
        let fields = self.index.fields.clone();
        let docs = read(&self.store, &fields, names).await;
        for (name, _) in &docs {
            unread.remove(name);
        }
        self.following.failed.extend(unread);
        if self.following.failed.is_empty() {
            if let Some(covered) = covered {
                let applied = self.following.applied.get_or_insert(covered);
                *applied = (*applied).max(covered);
            }
        }
        for (name, doc) in docs {
            if let Some(current) = &mut self.current {
                current.apply(&fields, &name, doc.as_ref());
            }
            if let Some(build) = &mut self.build {
                if self.current.is_none() {
                    build.into.apply(&fields, &name, doc.as_ref());
                }
                build.replay.insert(name);
            }
        }
    }

    /// Write the build's next batch of listed names.
    async fn build_batch(&mut self) {
        let Some(build) = &mut self.build else {
            return;
        };
        let Some(names) = &build.names else {
            return;
        };
        let end = (build.next + BATCH).min(names.len());
        let batch = names[build.next..end].to_vec();
        build.next = end;
        let fields = self.index.fields.clone();
        for (name, doc) in read(&self.store, &fields, batch).await {
            build.into.apply(&fields, &name, doc.as_ref());
        }
    }

    /// Commit what is due: changes within a second (at once when a search waits), a build
    /// every few seconds.
    fn commit_due(&mut self) {
        let flush = self.index.flush.swap(false, Ordering::AcqRel);
        let live_is_build = self.current.is_none();
        let mut committed = None;
        let record = self.recorded();
        if let Some(current) = &mut self.current {
            let due = flush || current.last_commit.elapsed() >= COMMIT_EVERY;
            if current.changed(record) && due {
                match current.commit(record) {
                    Ok(()) => committed = Some(current.documents()),
                    Err(error) => tracing::error!(%error, "search index: commit failed"),
                }
            }
        }
        if let Some(build) = &mut self.build {
            let every = if live_is_build {
                COMMIT_EVERY
            } else {
                BUILD_COMMIT_EVERY
            };
            let due = (live_is_build && flush) || build.into.last_commit.elapsed() >= every;
            if build.into.dirty && due {
                match build.into.commit(None) {
                    Ok(()) if live_is_build => committed = Some(build.into.documents()),
                    Ok(()) => {}
                    Err(error) => tracing::error!(%error, "search index: commit failed"),
                }
            }
        }
        if let Some(documents) = committed {
            self.index.documents.store(documents, Ordering::Relaxed);
        }
        let live_dirty = match (&self.current, &self.build) {
            (Some(current), _) => current.dirty,
            (None, Some(build)) => build.into.dirty,
            (None, None) => false,
        };
        if !live_dirty {
            let seen = self.seen;
            self.index.applied.send_if_modified(|applied| {
                let newer = *applied < seen;
                *applied = (*applied).max(seen);
                newer
            });
        }
    }

    /// The build read every listed name: read the names changed meanwhile again, commit, and
    /// make it the current generation.
    async fn finish_build(&mut self) {
        let Some(mut build) = self.build.take() else {
            return;
        };
        let fields = self.index.fields.clone();
        let replay: Vec<String> = build.replay.drain().collect();
        for (name, doc) in read(&self.store, &fields, replay).await {
            build.into.apply(&fields, &name, doc.as_ref());
        }
        let pointer = Pointer {
            generation: build.into.name.clone(),
            schema: SCHEMA_VERSION,
        };
        // Listed before `listed_at`; what was applied since is replayed into it too.
        let position = build
            .listed_at
            .map(|at| self.following.applied.map_or(at, |a| a.max(at)));
        let swapped = build
            .into
            .commit(position)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let bytes = serde_json::to_vec(&pointer).map_err(|e| e.to_string())?;
                write_atomically(&self.index.root, CURRENT, &bytes).map_err(|e| e.to_string())
            });
        if let Err(error) = swapped {
            tracing::error!(%error, "search index: the new index could not be made current");
            self.build = Some(build);
            return;
        }
        let documents = build.into.documents();
        self.publish_live(build.into.reader.clone(), documents);
        if let Some(old) = self.current.replace(build.into) {
            drop(old);
        }
        self.following.current = position.is_some();
        if let Some(position) = position {
            let following = &mut self.following;
            following.queued = Some(following.queued.map_or(position, |q| q.max(position)));
            following.applied = Some(position);
        }
        self.index.ready.store(true, Ordering::Release);
        self.remove_strays();
        tracing::info!(
            documents,
            seconds = build.started.elapsed().as_secs_f64(),
            "search index: ready"
        );
        let done = Reindexed {
            id: build.id,
            done: build.next as u64,
            total: build.names.as_ref().map_or(0, |n| n.len() as u64),
            finished: true,
            documents,
            by_server: false,
        };
        if let Err(error) = write_progress(&self.index.root, &done) {
            tracing::warn!(%error, "search index: progress not written");
        }
        if let Some(id) = self.queued.take() {
            self.start_build(&id);
        }
    }

    /// The journal position the current generation's commits record.
    fn recorded(&self) -> Option<u64> {
        self.following
            .applied
            .filter(|_| self.following.current && self.journal.is_some())
    }

    /// Read the journal when it moved (and at start), and take in what changed since the
    /// position followed.
    async fn follow_journal(&mut self) {
        let Some(journal) = self.journal.clone() else {
            return;
        };
        if !self.index.journal_moved.swap(false, Ordering::AcqRel) {
            return;
        }
        match journal.read().await {
            Ok(view) => self.take_journal(&view),
            Err(error) => {
                tracing::warn!(%error, "search index: cannot read the fleet's journal, trying again");
                self.following.retry = true;
            }
        }
    }

    /// Put the names `view` lists since the position followed into the inbox; rebuild when
    /// that position is not known or the journal no longer reaches back to it.
    fn take_journal(&mut self, view: &JournalView) {
        let Some(from) = self.following.queued else {
            // What the index holds is known once a build lists the store.
            if self.build.is_none() {
                tracing::info!(
                    "search index: it records no journal position, rebuilding it from the store"
                );
                self.start_build("journal");
            }
            return;
        };
        let Some(names) = view.since(from) else {
            tracing::info!(
                from,
                "search index: the journal no longer reaches back to its position, rebuilding it from the store"
            );
            self.following.queued = None;
            self.following.applied = None;
            self.following.current = false;
            self.index.inbox().journal = None;
            self.start_build("journal");
            return;
        };
        for name in names {
            self.index.changed(name);
        }
        self.following.queued = Some(view.next);
        self.index.inbox().journal = Some(view.next);
    }

    /// Commit whatever is pending (the owner is stopping).
    fn close(&mut self) {
        let record = self.recorded();
        if let Some(current) = &mut self.current {
            if let Err(error) = current.commit(record) {
                tracing::warn!(%error, "search index: last commit failed");
            }
        }
        self.index.owner.store(false, Ordering::Release);
    }
}

fn write_progress(root: &Path, progress: &Reindexed) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(progress).map_err(std::io::Error::other)?;
    write_atomically(root, PROGRESS, &bytes)
}

/// Take every name in the spool, leaving it empty.
fn take_spool(root: &Path) -> std::io::Result<Vec<String>> {
    use std::io::{Read as _, Seek as _};
    let path = root.join(super::SPOOL);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.lock()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    file.set_len(0)?;
    file.rewind()?;
    file.unlock()?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Follow the index another process owns: search the generation `CURRENT` names, reloaded
/// every tick.
struct Follower {
    generation: Option<(String, IndexReader)>,
}

impl Follower {
    fn tick(&mut self, index: &SearchIndex) {
        let Some(pointer) = read_pointer(&index.root) else {
            return;
        };
        match &self.generation {
            Some((name, reader)) if *name == pointer.generation => {
                let _ = reader.reload();
            }
            _ => {
                let opened =
                    Index::open_in_dir(index.root.join(&pointer.generation)).and_then(|i| {
                        i.reader_builder()
                            .reload_policy(ReloadPolicy::Manual)
                            .try_into()
                    });
                match opened {
                    Ok(reader) => self.generation = Some((pointer.generation, reader)),
                    Err(error) => {
                        tracing::debug!(%error, "search index: the owner's index not opened");
                        return;
                    }
                }
            }
        }
        if let Some((_, reader)) = &self.generation {
            *index.live.write().unwrap_or_else(|p| p.into_inner()) = Some(reader.clone());
            index
                .documents
                .store(reader.searcher().num_docs(), Ordering::Relaxed);
            index.ready.store(true, Ordering::Release);
        }
    }
}

impl SearchIndex {
    /// Keep the index until `stop` resolves: own it (or follow the process that does until it
    /// can), apply changes, build and swap generations.
    pub async fn run(
        self: Arc<Self>,
        store: SharedStore,
        journal: Option<Arc<dyn Journal>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = pin!(stop);
        let mut follower = Follower { generation: None };
        let lock = loop {
            match take_lock(&self.root) {
                Ok(Some(lock)) => break lock,
                Ok(None) => follower.tick(&self),
                Err(error) => {
                    tracing::error!(%error, folder = %self.root.display(), "search index: cannot be opened")
                }
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        };
        drop(follower);
        let mut owner = Owner::start(self.clone(), store, lock, journal);
        loop {
            if owner.busy() {
                if stop.as_mut().now_or_never().is_some() {
                    break;
                }
            } else {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(owner.next_deadline()) => {}
                }
            }
            owner.step().await;
        }
        owner.close();
    }
}

/// `sluice reindex`: rebuild the index of the store folder `storage_dir` from `store`. When a
/// server owns the index it is asked to (it swaps the new index in when done); else this
/// process builds it. `progress` hears of each step.
pub async fn reindex(
    store: SharedStore,
    journal: Option<Arc<dyn Journal>>,
    storage_dir: &Path,
    progress: &(dyn Fn(&Reindexed) + Send + Sync),
) -> anyhow::Result<Reindexed> {
    let index = Arc::new(SearchIndex::new(storage_dir));
    let root: PathBuf = index.root.clone();
    let id = format!("{}-{:08x}", now_ms(), fastrand::u32(..));
    let mut asked = false;
    loop {
        if let Some(lock) = take_lock(&root)? {
            let _ = std::fs::remove_file(root.join(REQUEST));
            return build_here(index, store, journal, lock, &id, progress).await;
        }
        if !asked {
            write_atomically(&root, REQUEST, id.as_bytes())?;
            asked = true;
        }
        if let Some(seen) = std::fs::read(root.join(PROGRESS))
            .ok()
            .and_then(|b| serde_json::from_slice::<Reindexed>(&b).ok())
            .filter(|p| p.id == id)
        {
            progress(&seen);
            if seen.finished {
                return Ok(Reindexed {
                    by_server: true,
                    ..seen
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn build_here(
    index: Arc<SearchIndex>,
    store: SharedStore,
    journal: Option<Arc<dyn Journal>>,
    lock: File,
    id: &str,
    progress: &(dyn Fn(&Reindexed) + Send + Sync),
) -> anyhow::Result<Reindexed> {
    let mut owner = Owner::start(index, store, lock, journal);
    match &mut owner.build {
        // Started now (there was no index): it lists the store after this request.
        Some(build) => build.id = id.to_string(),
        None => owner.start_build(id),
    }
    let mut last = owner.progress(false);
    while owner.build.is_some() {
        last = owner.progress(false);
        progress(&last);
        owner.step().await;
        if !owner.busy() && owner.build.is_some() {
            // The store is being listed.
            tokio::time::sleep(Duration::from_millis(50)).await;
            owner.housekeeping();
        }
    }
    owner.close();
    let done = Reindexed {
        finished: true,
        done: last.total,
        documents: owner.index.documents.load(Ordering::Relaxed),
        ..last
    };
    progress(&done);
    Ok(done)
}
