//! npm's stage API (`npm stage …`, `pnpm stage …`) for the names published here: stage a
//! version, list, view and download staged ones, approve or reject one.

use serde_json::json;
use sluice_plugin_api::NpmRequest;

use super::{user, Answer, Body, Call};
use crate::core::audit_log::Action;
use crate::core::Error;

/// Answer a stage request (its caller a user, checked by [`super::precheck`] too).
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let app = call.app;
    let publisher = &app.publisher;
    super::write_target(call)?;
    let who = user(call)?;
    let email = || app.auth.email(&who.user).unwrap_or_default();
    match call.request {
        NpmRequest::StagePublish { name } => {
            let (staged, subject) = publisher.stage(name, &call.body, who, &email()).await?;
            let id = staged["stageId"].as_str().unwrap_or_default().to_string();
            super::audit(call, Action::Stage, &subject, &id).await;
            Ok(Answer::json(201, &staged))
        }
        NpmRequest::StageList {
            package,
            page,
            per_page,
        } => {
            let list = publisher
                .staged(who, package.as_deref(), *page, *per_page)
                .await?;
            Ok(personal(Answer::json(200, &list)))
        }
        NpmRequest::StageView { id } => {
            let item = publisher.staged_item(id, who).await?;
            Ok(personal(Answer::json(200, &item)))
        }
        NpmRequest::StageTarball { id } => {
            let served = publisher.staged_tarball(id, who).await?;
            Ok(personal(Answer::tarball(served)))
        }
        NpmRequest::StageApprove { id } => {
            let (approved, subject) = publisher.approve(id, who, &email()).await?;
            super::audit(call, Action::Approve, &subject, id).await;
            Ok(Answer::json(201, &approved))
        }
        NpmRequest::StageReject { id } => {
            let subject = publisher.reject(id, who).await?;
            super::audit(call, Action::Reject, &subject, id).await;
            let mut answer = Answer::json(204, &json!(null));
            answer.body = Body::Full(bytes::Bytes::new());
            Ok(answer)
        }
        _ => Err(Error::Internal("not a stage request".into())),
    }
}

/// An answer about what only its caller may see: never kept by a cache.
fn personal(mut answer: Answer) -> Answer {
    answer.cache_control = Some("private, no-store");
    answer
}
