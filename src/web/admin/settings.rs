//! `/-/ui/admin/settings`: the live settings (read-through, the replication policy, the
//! refresh interval) shown with where each value comes from, as `sluice check` shows them, and
//! changed from a plain form through [`crate::api::admin`] (kept in the store, in force at
//! once, audited), as `sluice settings set|unset` changes them.

use askama::Template;

use super::super::pages::{when, Layout};
use super::super::{html, redirect, Visit};
use super::{actor, identity, not_here};
use crate::api::admin;
use crate::api::Answer;
use crate::core::settings::{Effective, Source, KEYS};
use crate::core::Error;

/// One live setting as the page shows it.
struct Row {
    key: &'static str,
    label: &'static str,
    value: String,
    source: String,
    /// Whether it is set live (then it can go back to the file's value).
    live: bool,
}

/// The settings page.
#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    layout: Layout,
    tab: &'static str,
    /// The configuration file.
    file: String,
    rows: Vec<Row>,
    /// The form's values: those in force, or those just refused.
    read_through: String,
    mode: String,
    refresh: String,
    /// Who may read.
    reads: &'static str,
    /// How soon the other nodes of a fleet follow.
    sync: String,
    error: Option<String>,
    saved: bool,
}

/// The settings page (GET), a change (POST), or going back to the file's value (POST
/// `settings/unset`).
pub(super) async fn handle(visit: &Visit<'_>) -> Result<Answer, Error> {
    match (visit.path, visit.post) {
        ("admin/settings", false) => page(visit, None, 200),
        ("admin/settings", true) => change(visit).await,
        ("admin/settings/unset", true) => unset(visit).await,
        _ => Err(not_here(visit)),
    }
}

/// The label a setting is shown with.
fn label(key: &str) -> &'static str {
    match key {
        "read_through" => "Read-through",
        "mode" => "Replication policy",
        _ => "Refresh interval",
    }
}

/// Where `effective` comes from, with who set it and when for a value set live.
fn source(effective: &Effective) -> String {
    let from = match effective.source {
        Source::Default => "built-in default".to_string(),
        Source::File => "configuration file".to_string(),
        Source::Store => "set live (kept in the store)".to_string(),
    };
    match &effective.set_by {
        Some((by, at)) => format!("{from}, by {by} at {}", when(*at)),
        None => from,
    }
}

/// The page, with the form showing what is in force (or, after `error`, what was sent).
fn page(visit: &Visit<'_>, error: Option<String>, status: u16) -> Result<Answer, Error> {
    let app = visit.call.app;
    let effective = admin::settings(app);
    let value = |key: &str| {
        if error.is_some() {
            if let Some(sent) = visit.form.get(key) {
                return sent.to_string();
            }
        }
        effective
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
            .unwrap_or_default()
    };
    let page = SettingsPage {
        layout: visit.layout("Settings"),
        tab: "settings",
        file: app.config.source.clone(),
        read_through: value("read_through"),
        mode: value("mode"),
        refresh: value("refresh"),
        rows: effective
            .iter()
            .map(|e| Row {
                key: e.key,
                label: label(e.key),
                value: e.value.clone(),
                source: source(e),
                live: e.source == Source::Store,
            })
            .collect(),
        reads: match app.config.auth.read {
            crate::config::Read::Authenticated => "users only",
            _ => "anyone",
        },
        sync: humantime::format_duration(app.config.cluster.sync).to_string(),
        error,
        saved: visit.query.text("saved") == "1",
    };
    html(status, &page)
}

/// Set what the form changed; a refused value is shown on the page and nothing is written.
async fn change(visit: &Visit<'_>) -> Result<Answer, Error> {
    let who = identity(visit)?;
    let changes: Vec<(&str, &str)> = KEYS
        .into_iter()
        .filter_map(|key| visit.form.get(key).map(|value| (key, value)))
        .collect();
    match admin::set_settings(actor(visit, &who), &changes).await {
        Ok(_) => Ok(redirect("/-/ui/admin/settings?saved=1")),
        Err(Error::Client(why)) => page(visit, Some(why), 400),
        Err(other) => Err(other),
    }
}

/// Drop a setting's live value: the file's is in force again.
async fn unset(visit: &Visit<'_>) -> Result<Answer, Error> {
    let who = identity(visit)?;
    let key = visit.form.text("key");
    match admin::unset_setting(actor(visit, &who), key).await {
        Ok(_) => Ok(redirect("/-/ui/admin/settings?saved=1")),
        Err(Error::Client(why)) => page(visit, Some(why), 400),
        Err(other) => Err(other),
    }
}
