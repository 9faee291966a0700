//! The search index: one tantivy index per store folder (`storage.dir`/search-index: beside
//! the disk store, or in a fleet node's local tier), so a search reads a few postings instead
//! of every packument.
//!
//! One process owns it (the owner lock, `owner.lock`): the server, or `sluice reindex` when no
//! server runs. The owner's one task ([`owner`]) holds the only `IndexWriter`: it hears every
//! changed name (the packuments' `on_change` hook and the fleet's journal) through an in-memory
//! inbox, reads the packument from the store, replaces the package's document and commits
//! within a second (at once when a search waits for a change), reloading the reader. Any other
//! process that changes packuments (`add-package`, `mirror --once`) appends the names to the
//! `changes` spool file, which the owner takes in every second.
//!
//! Generations: the index lives in a folder `g-…` that the pointer file `CURRENT` names; only
//! complete builds are named there. A build (at start, when `CURRENT` is missing or names an
//! index that cannot be opened; on `sluice reindex`; when a fleet node missed more changes than
//! the journal keeps) writes a new folder from the store's listing and then replaces `CURRENT`
//! by a rename, so searches go on from the old index meanwhile, or from what the new one holds
//! so far when there is none.
//!
//! In a fleet the owner follows the fleet's change journal ([`Journal`]) itself: each commit
//! records, in the same tantivy commit (its payload), the journal position through which every
//! change is in the index. At start the owner reads the journal from that position, so a node
//! that was stopped catches up on what other nodes changed meanwhile; an index that records no
//! position (written before positions were kept, or without a fleet), or a journal that no
//! longer reaches back to it, is rebuilt from the store in the background.

mod owner;
pub mod query;
pub mod schema;
mod threads;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use tantivy::schema::Value as _;
use tantivy::{IndexReader, TantivyDocument};

use crate::store::StoreError;
pub use owner::{reindex, Reindexed};
pub use query::Admit;
use schema::Fields;

/// The index's folder inside a store folder.
pub const FOLDER: &str = "search-index";
/// The spool of names changed by other processes, one a line.
const SPOOL: &str = "changes";
/// How long a search waits for changes made before it to be searchable.
const WAIT_FOR_CHANGES: Duration = Duration::from_secs(5);
/// The deepest result a search pages to (`from` + `size`).
pub const DEEPEST: usize = 10_000;

/// One package found.
#[derive(Debug, Clone)]
pub struct Hit {
    /// Its name.
    pub name: String,
    /// The query's score (an exact name match scores above a million, a prefix above 1,000).
    pub score: f32,
    /// The latest version as indexed (the answer shows the policy's view instead).
    pub version: String,
    /// Its description as indexed.
    pub description: String,
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// How many match and are admitted (matches below the page the policy was never asked
    /// about are counted).
    pub total: u64,
    /// The best ones, best first.
    pub hits: Vec<Hit>,
}

/// The index's state for status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchStatus {
    /// `building` (a build runs, or none finished yet) or `ready`.
    pub state: &'static str,
    /// Documents the searched index holds.
    pub documents: u64,
}

impl Default for SearchStatus {
    fn default() -> Self {
        Self {
            state: "building",
            documents: 0,
        }
    }
}

/// Where an index hears of changes other processes sharing its store made: a fleet's journal
/// of changed packuments, each entry numbered.
#[async_trait::async_trait]
pub trait Journal: Send + Sync {
    /// The journal as stored now.
    async fn read(&self) -> Result<JournalView, StoreError>;
}

/// A journal as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalView {
    /// The position of the next entry to be written.
    pub next: u64,
    /// The entries still kept, oldest first: (position, package name).
    pub entries: Vec<(u64, String)>,
}

impl JournalView {
    /// The names changed at or after position `from`; `None` when the journal no longer
    /// reaches back that far (entries dropped, or a journal started over).
    pub fn since(&self, from: u64) -> Option<Vec<&str>> {
        let oldest = self.entries.first().map_or(self.next, |(seq, _)| *seq);
        if oldest > from || self.next < from {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(|(seq, _)| *seq >= from)
                .map(|(_, name)| name.as_str())
                .collect(),
        )
    }
}

#[derive(Default)]
struct Inbox {
    names: Vec<String>,
    pending: HashSet<String>,
    /// Changes ever pushed.
    seq: u64,
    /// The journal position through which changed names were pushed.
    journal: Option<u64>,
}

/// The search index of one store folder, as this process sees it.
pub struct SearchIndex {
    root: PathBuf,
    fields: Fields,
    /// What searches read (the current index, or the one being built when there is none).
    live: RwLock<Option<IndexReader>>,
    inbox: Mutex<Inbox>,
    wake: tokio::sync::Notify,
    /// Whether this process owns the index (changes go to the inbox, else to the spool).
    owner: AtomicBool,
    ready: AtomicBool,
    documents: AtomicU64,
    /// The inbox sequence searchable now.
    applied: tokio::sync::watch::Sender<u64>,
    /// A search waits for a change: commit now.
    flush: AtomicBool,
    /// The journal moved: the owner reads it.
    journal_moved: AtomicBool,
    /// Queries run at once: half the cores, so searches never take the cores packument and
    /// tarball answers need (on 2 cores, one query at a time).
    queries: tokio::sync::Semaphore,
    /// Where they run: threads of their own at a lower priority.
    threads: threads::QueryThreads,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    /// The index of the store folder `storage_dir` (nothing is opened until [`Self::run`]).
    pub fn new(storage_dir: &Path) -> Self {
        Self {
            root: storage_dir.join(FOLDER),
            fields: Fields::new(),
            live: RwLock::new(None),
            inbox: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            owner: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            documents: AtomicU64::new(0),
            applied: tokio::sync::watch::channel(0).0,
            flush: AtomicBool::new(false),
            journal_moved: AtomicBool::new(false),
            queries: tokio::sync::Semaphore::new(query_threads()),
            threads: threads::QueryThreads::new(query_threads()),
        }
    }

    /// The index's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Note that the stored packument of `name` changed: its document is replaced soon.
    pub fn changed(&self, name: &str) {
        if self.owner.load(Ordering::Acquire) {
            let mut inbox = self.inbox();
            if inbox.pending.insert(name.to_string()) {
                inbox.names.push(name.to_string());
            }
            inbox.seq += 1;
            drop(inbox);
            self.wake.notify_one();
        } else if let Err(error) = self.spool(name) {
            tracing::warn!(package = name, %error, "search index: cannot note a change");
        }
    }

    /// The fleet's journal has new entries: the owner reads it and takes in what it has not.
    pub fn journal_moved(&self) {
        self.journal_moved.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// The index's state.
    pub fn status(&self) -> SearchStatus {
        SearchStatus {
            state: if self.ready.load(Ordering::Acquire) {
                "ready"
            } else {
                "building"
            },
            documents: self.documents.load(Ordering::Relaxed),
        }
    }

    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append `name` to the spool the owner takes in (under an exclusive lock of the file, so
    /// the owner never truncates a line being written).
    fn spool(&self, name: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(SPOOL))?;
        file.lock()?;
        file.write_all(format!("{name}\n").as_bytes())?;
        file.unlock()
    }

    /// A turn to search: held for the whole of a search (the query and describing its hits),
    /// so at most half the cores ever search at once.
    pub async fn turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.queries.acquire().await.ok()
    }

    /// The best `limit` matches of `text` that `admit` lets through. Callers wait for
    /// [`Self::catch_up`], then hold a [`Self::turn`].
    pub async fn search(&self, text: &str, limit: usize, admit: Admit) -> Found {
        let Some(reader) = self.live.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Found::default();
        };
        let fields = self.fields.clone();
        let text = text.to_string();
        let limit = limit.min(DEEPEST);
        let found = self
            .threads
            .run(move || run_query(&reader, &fields, &text, limit, admit))
            .await;
        match found {
            Some(Ok(found)) => found,
            Some(Err(error)) => {
                tracing::error!(%error, "search index: the query failed");
                Found::default()
            }
            None => {
                tracing::error!("search index: the query panicked");
                Found::default()
            }
        }
    }

    /// Wait until what was changed before now is searchable (at most [`WAIT_FOR_CHANGES`]).
    pub async fn catch_up(&self) {
        if !self.owner.load(Ordering::Acquire) {
            return;
        }
        let target = self.inbox().seq;
        let mut applied = self.applied.subscribe();
        if *applied.borrow() >= target {
            return;
        }
        self.flush.store(true, Ordering::Release);
        self.wake.notify_one();
        let _ =
            tokio::time::timeout(WAIT_FOR_CHANGES, applied.wait_for(|seq| *seq >= target)).await;
    }
}

/// Queries at once: half the cores (at least one).
fn query_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn run_query(
    reader: &IndexReader,
    fields: &Fields,
    text: &str,
    limit: usize,
    admit: Admit,
) -> tantivy::Result<Found> {
    let Some(query) = query::build(fields, text) else {
        return Ok(Found::default());
    };
    let searcher = reader.searcher();
    let found = searcher.search(&query, &query::Admitted { limit, admit })?;
    let mut hits = Vec::with_capacity(found.best.len());
    for ranked in found.best {
        let doc: TantivyDocument = searcher.doc(ranked.address)?;
        let text_of = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        hits.push(Hit {
            version: text_of(fields.version),
            description: text_of(fields.description),
            name: ranked.name,
            score: ranked.score,
        });
    }
    Ok(Found {
        total: found.total,
        hits,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::schema::{register_tokenizers, Entry, Fields};
    use super::{run_query, JournalView};

    /// Pages of a query whose matches tie in score and length: in one segment whose documents
    /// are in no name order, each page is the next run of names, none twice, none left out.
    #[test]
    fn pages_of_tied_matches_follow_the_names_whatever_the_documents_order() {
        let fields = Fields::new();
        let index = tantivy::Index::create_in_ram(fields.schema.clone());
        register_tokenizers(&index).unwrap();
        let mut writer = index.writer_with_num_threads(1, 15_000_000).unwrap();
        let names: Vec<String> = (1..=8).map(|i| format!("e2e-srchloc-x-p{i}")).collect();
        for i in [8, 2, 6, 1, 7, 3, 5, 4] {
            let entry = Entry {
                name: names[i - 1].clone(),
                description: "some cool project".into(),
                keywords: vec!["foo".into()],
                people: vec!["ann".into()],
                version: "1.0.0".into(),
                date: "2026-01-01T00:00:00.000Z".into(),
            };
            writer.add_document(fields.document(&entry)).unwrap();
        }
        writer.commit().unwrap();
        let reader = index.reader().unwrap();
        assert_eq!(reader.searcher().segment_readers().len(), 1);
        let mut walked = Vec::new();
        for from in [0, 3, 6] {
            let admit: super::query::Admit = Arc::new(|_: &str| true);
            let found = run_query(&reader, &fields, "e2e-srchloc-x", from + 3, admit).unwrap();
            assert_eq!(found.total, 8);
            let page: Vec<String> = found.hits.into_iter().skip(from).map(|h| h.name).collect();
            walked.extend(page);
        }
        assert_eq!(walked, names);
    }

    fn view(next: u64, first: u64) -> JournalView {
        JournalView {
            next,
            entries: (first..next).map(|seq| (seq, format!("p{seq}"))).collect(),
        }
    }

    #[test]
    fn a_journal_reaches_back_only_as_far_as_it_keeps_entries() {
        assert_eq!(view(5, 2).since(3), Some(vec!["p3", "p4"]));
        assert_eq!(view(5, 2).since(2), Some(vec!["p2", "p3", "p4"]));
        assert_eq!(view(5, 2).since(5), Some(vec![]));
        // Entries before 2 were dropped: what changed at 1 is unknown.
        assert_eq!(view(5, 2).since(1), None);
        // A journal started over (behind the position).
        assert_eq!(view(5, 2).since(7), None);
        assert_eq!(view(0, 0).since(0), Some(vec![]));
    }
}
