//! `/-/ui/admin/users`: every user (the users file's and the store's, marked as such), a
//! form creating one in the store (so a fleet shares it), and a page per user
//! (`users/<name>`) to reset the password, grant or take back the admin role, list the
//! user's tokens (ids only: a token is never kept, let alone shown) and revoke one. Every
//! change goes through [`crate::api::admin`], which checks it and audits it.

use askama::Template;

use super::super::forms::encode;
use super::super::pages::{when, Layout};
use super::super::{html, redirect, Visit};
use super::{actor, identity, not_here};
use crate::api::admin;
use crate::api::Answer;
use crate::auth::{UserSource, UserSummary};
use crate::core::Error;

/// A user in the list.
struct UserRow {
    name: String,
    href: String,
    email: String,
    admin: bool,
    from_file: bool,
    two_factor: bool,
}

/// The users page.
#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    layout: Layout,
    tab: &'static str,
    users: Vec<UserRow>,
    /// Why a creation was refused.
    error: Option<String>,
    /// The creation form's values after a refusal.
    name: String,
    email: String,
    admin: bool,
}

/// A token as the user's page lists it.
struct TokenRow {
    id: String,
    created: String,
    access: &'static str,
    networks: String,
}

/// A user's page.
#[derive(Template)]
#[template(path = "user.html")]
struct UserPage {
    layout: Layout,
    tab: &'static str,
    name: String,
    email: String,
    admin: bool,
    from_file: bool,
    two_factor: bool,
    /// The users file's path (for a user it defines).
    users_file: String,
    /// Whether it is the admin looking (who cannot demote or remove themself).
    oneself: bool,
    /// Where this page's forms post (`/-/ui/admin/users/<name>`, encoded).
    base: String,
    tokens: Vec<TokenRow>,
    /// What the last change did.
    notice: Option<&'static str>,
}

/// The page or action for `visit`'s path under `admin/users`.
pub(super) async fn handle(visit: &Visit<'_>) -> Result<Answer, Error> {
    let rest = visit.path["admin/users".len()..].trim_start_matches('/');
    let (name, action) = rest.split_once('/').unwrap_or((rest, ""));
    match (name, action, visit.post) {
        ("", "", false) => list(visit, None, 200).await,
        ("", "", true) => create(visit).await,
        (name, "", false) => user_page(visit, name).await,
        (name, "password", true) => change(visit, name, Change::Password).await,
        (name, "role", true) => change(visit, name, Change::Role).await,
        (name, "revoke", true) => change(visit, name, Change::Revoke).await,
        (name, "remove", true) => remove(visit, name).await,
        _ => Err(not_here(visit)),
    }
}

/// A user's page's path.
fn user_href(name: &str) -> String {
    format!("/-/ui/admin/users/{}", encode(name))
}

async fn list(visit: &Visit<'_>, error: Option<String>, status: u16) -> Result<Answer, Error> {
    let who = identity(visit)?;
    let users = admin::users(actor(visit, &who)).await?;
    let refused = error.is_some();
    let page = UsersPage {
        layout: visit.layout("Users"),
        tab: "users",
        users: users
            .into_iter()
            .map(|u| UserRow {
                href: user_href(&u.name),
                from_file: u.source == UserSource::File,
                name: u.name,
                email: u.email,
                admin: u.admin,
                two_factor: u.two_factor,
            })
            .collect(),
        error,
        name: visit.form.text("name").to_string(),
        email: visit.form.text("email").to_string(),
        admin: refused && visit.form.text("admin") == "1",
    };
    html(status, &page)
}

/// Create a user in the store; a refused one is shown on the list's page.
async fn create(visit: &Visit<'_>) -> Result<Answer, Error> {
    let who = identity(visit)?;
    let form = &visit.form;
    let name = form.text("name");
    let created = admin::create_user(
        actor(visit, &who),
        name,
        form.get("password").unwrap_or(""),
        form.text("email"),
        form.text("admin") == "1",
    )
    .await;
    match created {
        Ok(()) => Ok(redirect(&format!("{}?done=created", user_href(name)))),
        Err(Error::Client(why) | Error::Conflict(why)) => list(visit, Some(why), 400).await,
        Err(other) => Err(other),
    }
}

/// `name` as the list says, or 404.
async fn summary(visit: &Visit<'_>, name: &str) -> Result<UserSummary, Error> {
    let who = identity(visit)?;
    admin::users(actor(visit, &who))
        .await?
        .into_iter()
        .find(|u| u.name == name)
        .ok_or_else(|| Error::NotFound(format!("{name} is not a user of this registry")))
}

/// What a change on a user's page reported, by the `done` its redirect carries.
fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "Created, in the store: every node of a fleet knows this user.",
        "password" => "The password is changed (kept in the store); its old sessions ended.",
        "role" => "The role is changed (kept in the store).",
        "revoke" => "The token is revoked: it is refused from now on.",
        _ => return None,
    })
}

async fn user_page(visit: &Visit<'_>, name: &str) -> Result<Answer, Error> {
    let user = summary(visit, name).await?;
    let who = identity(visit)?;
    let tokens = admin::tokens(actor(visit, &who), name).await?;
    let page = UserPage {
        layout: visit.layout(format!("User {name}")),
        tab: "users",
        oneself: who.user == user.name,
        base: user_href(&user.name),
        from_file: user.source == UserSource::File,
        users_file: visit.call.app.config.auth.users.display().to_string(),
        name: user.name,
        email: user.email,
        admin: user.admin,
        two_factor: user.two_factor,
        tokens: tokens
            .into_iter()
            .map(|t| TokenRow {
                id: t.id,
                created: when(t.created),
                access: if t.readonly {
                    "read-only"
                } else {
                    "read and write"
                },
                networks: if t.cidr_whitelist.is_empty() {
                    "any".into()
                } else {
                    t.cidr_whitelist.join(", ")
                },
            })
            .collect(),
        notice: notice(visit.query.text("done")),
    };
    html(200, &page)
}

/// A change made on a user's page.
#[derive(Clone, Copy)]
enum Change {
    /// A new password (`password`).
    Password,
    /// The admin role granted (`admin=1`) or taken back.
    Role,
    /// A token revoked (`token`, its id).
    Revoke,
}

/// Make `change` to `name`; back to the user's page saying so.
async fn change(visit: &Visit<'_>, name: &str, change: Change) -> Result<Answer, Error> {
    let who = identity(visit)?;
    let by = actor(visit, &who);
    let form = &visit.form;
    let done = match change {
        Change::Password => {
            admin::reset_password(by, name, form.get("password").unwrap_or("")).await?;
            "password"
        }
        Change::Role => {
            admin::set_admin(by, name, form.text("admin") == "1").await?;
            "role"
        }
        Change::Revoke => {
            let id = form.text("token");
            if !admin::revoke_token(by, name, id).await? {
                return Err(Error::NotFound(format!("{name} has no token {id}")));
            }
            "revoke"
        }
    };
    Ok(redirect(&format!("{}?done={done}", user_href(name))))
}

/// Remove a user kept in the store; one of the users file stays (the page says so).
async fn remove(visit: &Visit<'_>, name: &str) -> Result<Answer, Error> {
    if summary(visit, name).await?.source == UserSource::File {
        return Err(Error::Conflict(format!(
            "{name} is defined in the users file: remove the line there (sluice user remove \
             on the server); the console removes only users it created"
        )));
    }
    let who = identity(visit)?;
    admin::remove_user(actor(visit, &who), name).await?;
    Ok(redirect("/-/ui/admin/users"))
}
