//! The admin pages, for users with the admin role (403 for anyone else): health, the mirror,
//! store usage, the hit ratio, the whitelist (filter, add with the dependency closure as a
//! background job shown live, remove); the live settings ([`settings`]), users and their
//! tokens ([`users`]) and the audit log ([`audit`]). Every change goes through
//! [`crate::api::admin`], which checks the role and audits it, as the command line's do.

mod audit;
mod settings;
mod users;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use askama::Template;
use serde_json::json;

use super::pages::{when, Layout};
use super::{html, redirect, Visit};
use crate::api::admin::Actor;
use crate::api::Answer;
use crate::app::App;
use crate::auth::Identity;
use crate::core::sessions::random_hex;
use crate::core::Error;
use crate::jobs::closure::{add_packages, parse_spec, AddOptions, Progress, Summary};

/// Whether `user` administers the registry.
///
/// The admin role (`name:<hash>:<email>:admin` in the users file) until the users kept in the
/// store bring `Auth::is_admin`: the users file's parser of today reads the fourth field as
/// the e-mail address's tail.
pub fn is_admin(app: &App, user: &str) -> bool {
    app.auth.is_admin(user)
}

/// An add-package run started from the console.
struct Job {
    id: String,
    spec: String,
    progress: Arc<Progress>,
    started: Instant,
    summary: Mutex<Option<Summary>>,
}

/// The runs started on this node, newest last (the latest few are kept).
static JOBS: LazyLock<Mutex<Vec<Arc<Job>>>> = LazyLock::new(Mutex::default);

/// How many runs are remembered.
const JOBS_KEPT: usize = 20;

fn jobs() -> Vec<Arc<Job>> {
    JOBS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Job {
    fn state(&self) -> String {
        let summary = self.summary.lock().unwrap_or_else(|p| p.into_inner());
        match &*summary {
            None => format!("running for {} s", self.started.elapsed().as_secs()),
            Some(s) if s.failures.is_empty() => format!(
                "done: {} packages, {} versions, {} tarballs; {} added to the whitelist",
                s.names.len(),
                s.versions,
                s.tarballs,
                s.added.len()
            ),
            Some(s) => format!(
                "done with {} failures: {} packages, {} tarballs; {} added to the whitelist",
                s.failures.len(),
                s.names.len(),
                s.tarballs,
                s.added.len()
            ),
        }
    }

    fn lines(&self) -> Vec<String> {
        let summary = self.summary.lock().unwrap_or_else(|p| p.into_inner());
        summary
            .as_ref()
            .map(|s| {
                let mut lines: Vec<String> = s.added.iter().map(|n| format!("added {n}")).collect();
                lines.extend(s.failures.iter().map(|f| format!("failed: {f}")));
                lines
            })
            .unwrap_or_default()
    }

    fn running(&self) -> bool {
        self.summary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }
}

/// A job in the overview's list.
pub struct JobLine {
    href: String,
    spec: String,
    state: String,
}

/// The admin overview.
#[derive(Template)]
#[template(path = "admin.html")]
struct Overview {
    layout: Layout,
    tab: &'static str,
    facts: Vec<(String, String)>,
    has_whitelist: bool,
    jobs: Vec<JobLine>,
    filter: String,
    entries: Vec<String>,
    shown: usize,
    total: usize,
}

/// A job's page.
#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    spec: String,
    status_url: String,
    running: bool,
    state: String,
    names: u64,
    tarballs: u64,
    bytes: u64,
    lines: Vec<String>,
}

/// Entries shown at most on the overview (the filter narrows them).
const ENTRIES_SHOWN: usize = 500;

/// `/-/ui/admin…`.
pub async fn handle(visit: &Visit<'_>) -> Result<Answer, Error> {
    let Some(user) = visit.user() else {
        return Ok(super::to_login(visit.path));
    };
    if !is_admin(visit.call.app, user) {
        return Err(Error::Forbidden(format!(
            "{user} is not an admin of this registry"
        )));
    }
    match (visit.path, visit.post) {
        ("admin", false) => overview(visit).await,
        ("admin/whitelist/add", true) => add(visit),
        ("admin/whitelist/remove", true) => remove(visit),
        (path, false) if path.starts_with("admin/jobs/") => job(visit, &path[11..]),
        ("admin/audit", false) => audit::page(visit).await,
        (path, _) if path == "admin/settings" || path.starts_with("admin/settings/") => {
            settings::handle(visit).await
        }
        (path, _) if path == "admin/users" || path.starts_with("admin/users/") => {
            users::handle(visit).await
        }
        _ => Err(not_here(visit)),
    }
}

/// There is no such admin page (or it takes no post).
fn not_here(visit: &Visit<'_>) -> Error {
    Error::NotFound(format!("no console page at /-/ui/{}", visit.path))
}

/// The logged-in admin as an identity for [`crate::api::admin`]: a console session is a
/// password login, read-write.
fn identity(visit: &Visit<'_>) -> Result<Identity, Error> {
    let user = visit
        .user()
        .ok_or_else(|| Error::Unauthenticated("log in first".into()))?;
    Ok(Identity {
        user: user.to_string(),
        readonly: false,
        token_hash: None,
        admin: is_admin(visit.call.app, user),
    })
}

/// Who acts, for [`crate::api::admin`]: `who` from the visit's address.
fn actor<'a>(visit: &'a Visit<'_>, who: &'a Identity) -> Actor<'a> {
    Actor {
        app: visit.call.app,
        who,
        address: visit.call.address,
    }
}

async fn overview(visit: &Visit<'_>) -> Result<Answer, Error> {
    let app = visit.call.app;
    let facts = facts(app).await;
    let filter = visit.query.text("filter").to_lowercase();
    let (entries, total) = whitelist_entries(app, &filter);
    let jobs = jobs()
        .iter()
        .rev()
        .map(|job| JobLine {
            href: format!("/-/ui/admin/jobs/{}", job.id),
            spec: job.spec.clone(),
            state: job.state(),
        })
        .collect();
    let page = Overview {
        layout: visit.layout("Administration"),
        tab: "overview",
        facts,
        has_whitelist: app.whitelist().is_some(),
        jobs,
        filter,
        shown: entries.len(),
        entries,
        total,
    };
    html(200, &page)
}

/// The whitelist's entries containing `filter` (at most `ENTRIES_SHOWN`), and how many it has.
fn whitelist_entries(app: &App, filter: &str) -> (Vec<String>, usize) {
    let Some(list) = app.whitelist() else {
        return (Vec::new(), 0);
    };
    let matcher = list.snapshot();
    let mut entries: Vec<String> = matcher
        .scopes()
        .chain(matcher.names())
        .filter(|e| e.to_lowercase().contains(filter))
        .map(str::to_string)
        .collect();
    entries.sort();
    entries.truncate(ENTRIES_SHOWN);
    (entries, matcher.len())
}

/// What the overview tells of the node: mode, upstream, store, caches, refresh, the mirror.
async fn facts(app: &App) -> Vec<(String, String)> {
    let snapshot = app.snapshot().await;
    let (hits, all) = app.metrics.hit_ratio();
    let mut facts = vec![
        ("Node".to_string(), snapshot.node.clone()),
        ("Mode".into(), snapshot.mode.to_string()),
        (
            "Upstream".into(),
            format!(
                "{} ({}; {} requests, {} failed)",
                snapshot.upstream,
                if snapshot.upstream_failing {
                    "failing: serving stored copies"
                } else {
                    "healthy"
                },
                snapshot.upstream_requests,
                snapshot.upstream_failures
            ),
        ),
        (
            "Store".into(),
            format!(
                "{}, {:.1} MB used",
                snapshot.store,
                snapshot.store_bytes as f64 / 1e6
            ),
        ),
        (
            "Memory cache".into(),
            format!(
                "{:.1} of {:.1} MB",
                snapshot.hot_bytes as f64 / 1e6,
                snapshot.hot_limit as f64 / 1e6
            ),
        ),
        (
            "Hit ratio".into(),
            if all == 0 {
                "no reads yet".into()
            } else {
                format!("{:.1}% ({hits} of {all})", hits as f64 * 100.0 / all as f64)
            },
        ),
        (
            "Last refresh".into(),
            match snapshot.last_refresh_ms {
                0 => "none yet".into(),
                ms => when(ms),
            },
        ),
    ];
    if let Some(mirror) = &snapshot.mirror {
        let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        facts.push(("Mirror seq".into(), or_dash(&mirror.checkpoint)));
        facts.push(("Mirror head".into(), or_dash(&mirror.head)));
        facts.push((
            "Mirror lag".into(),
            mirror.lag.map_or("—".into(), |l| l.to_string()),
        ));
        facts.push((
            "Mirror rate".into(),
            format!("{:.1} packages/s", mirror.rate),
        ));
    }
    facts
}

/// Start adding a spec and its closure in the background; show its page.
fn add(visit: &Visit<'_>) -> Result<Answer, Error> {
    let app = visit.call.app;
    if app.whitelist().is_none() {
        return Err(Error::NotOffered(
            "there is no whitelist in mirror mode: every package is mirrored".into(),
        ));
    }
    let spec = visit.form.text("spec").to_string();
    let want = parse_spec(&spec).map_err(Error::Client)?;
    let job = Arc::new(Job {
        id: random_hex()[..16].to_string(),
        spec: spec.clone(),
        progress: Arc::default(),
        started: Instant::now(),
        summary: Mutex::default(),
    });
    {
        let mut list = JOBS.lock().unwrap_or_else(|p| p.into_inner());
        list.push(job.clone());
        let over = list.len().saturating_sub(JOBS_KEPT);
        list.drain(..over);
    }
    let options = AddOptions {
        all_versions: false,
        concurrency: app.config.upstream.concurrency.max(1),
        progress: false,
        watch: Some(job.progress.clone()),
    };
    let (app, running) = (app.clone(), job.clone());
    audit_whitelist(visit, true, &spec);
    tokio::spawn(async move {
        let summary = add_packages(&app, vec![want], &options).await;
        *running.summary.lock().unwrap_or_else(|p| p.into_inner()) = Some(summary);
    });
    Ok(redirect(&format!("/-/ui/admin/jobs/{}", job.id)))
}

fn remove(visit: &Visit<'_>) -> Result<Answer, Error> {
    let name = visit.form.text("name");
    let list = visit
        .call
        .app
        .whitelist()
        .ok_or_else(|| Error::NotOffered("there is no whitelist in mirror mode".into()))?;
    let removed = list.remove(name).map_err(|e| Error::store(e.to_string()))?;
    if !removed {
        return Err(Error::NotFound(format!(
            "{name} is not a line of the whitelist file (an addition shared by the fleet \
             stays until the fleet's list is edited)"
        )));
    }
    audit_whitelist(visit, false, name);
    Ok(redirect("/-/ui/admin"))
}

/// Record a whitelist change made in the console in the audit log (off the answer's path).
fn audit_whitelist(visit: &Visit<'_>, added: bool, subject: &str) {
    use crate::core::audit_log::{Action, AuditEntry};
    let action = if added {
        Action::WhitelistAdd
    } else {
        Action::WhitelistRemove
    };
    let entry = AuditEntry::new(visit.user(), visit.call.address, action, subject, "console");
    let app = visit.call.app.clone();
    tokio::spawn(async move { app.audit.note(entry).await });
}

/// A job's page, or its state as JSON for the page's script.
fn job(visit: &Visit<'_>, id: &str) -> Result<Answer, Error> {
    let job = jobs()
        .into_iter()
        .find(|j| j.id == id)
        .ok_or_else(|| Error::NotFound("no such job on this node".into()))?;
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let (names, tarballs, bytes) = (
        load(&job.progress.names),
        load(&job.progress.tarballs),
        load(&job.progress.bytes),
    );
    if visit.query.text("format") == "json" {
        let mut answer = Answer::json(
            200,
            &json!({
                "spec": job.spec,
                "running": job.running(),
                "state": job.state(),
                "names": names,
                "tarballs": tarballs,
                "bytes": bytes,
                "lines": job.lines(),
            }),
        );
        answer.cache_control = Some("no-store");
        return Ok(answer);
    }
    let page = JobPage {
        layout: visit.layout(format!("Adding {}", job.spec)),
        spec: job.spec.clone(),
        status_url: format!("/-/ui/admin/jobs/{}?format=json", job.id),
        running: job.running(),
        state: job.state(),
        names,
        tarballs,
        bytes,
        lines: job.lines(),
    };
    html(200, &page)
}
