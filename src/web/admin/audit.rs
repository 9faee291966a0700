//! `/-/ui/admin/audit`: the audit log, newest first, a page at a time; older pages are asked
//! for by the id they end before (`?before=`), a cursor that stays put as entries are
//! appended. Read-only: nothing here changes the log.

use askama::Template;

use super::super::pages::{when, Layout};
use super::super::{html, Visit};
use super::{actor, identity};
use crate::api::admin;
use crate::api::Answer;
use crate::core::Error;

/// Entries on one page.
const PER_PAGE: usize = 50;

/// One entry as the page shows it.
struct Row {
    when: String,
    who: String,
    address: String,
    action: String,
    subject: String,
    detail: String,
}

/// A page of the audit log.
#[derive(Template)]
#[template(path = "audit.html")]
struct AuditView {
    layout: Layout,
    tab: &'static str,
    rows: Vec<Row>,
    /// The link to the older entries, unless this page reaches the log's start.
    older: Option<String>,
    /// Whether this page is not the newest.
    paged: bool,
}

/// The page of entries before `?before=` (the newest without it).
pub(super) async fn page(visit: &Visit<'_>) -> Result<Answer, Error> {
    let before = match visit.query.text("before") {
        "" => None,
        text => Some(
            text.parse::<u64>()
                .map_err(|_| Error::Client(format!("before={text} is not an entry's id")))?,
        ),
    };
    let who = identity(visit)?;
    let page = admin::audit_log(actor(visit, &who), before, PER_PAGE).await?;
    let rows = page
        .entries
        .into_iter()
        .map(|e| Row {
            when: when(e.at),
            who: e.actor.unwrap_or_else(|| "anonymous".into()),
            address: e.address.unwrap_or_else(|| "—".into()),
            action: e.action.to_string(),
            subject: e.subject,
            detail: e.detail,
        })
        .collect();
    let view = AuditView {
        layout: visit.layout("Audit log"),
        tab: "audit",
        rows,
        older: page.next.map(|id| format!("/-/ui/admin/audit?before={id}")),
        paged: before.is_some(),
    };
    html(200, &view)
}
