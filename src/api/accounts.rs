//! npm's account protocol over [`Auth`]: the legacy (CouchDB-style) login that `npm login
//! --auth-type=legacy`, `npm adduser` and `yarn npm login` speak, whoami, logout, and the token
//! API of `npm token list|create|revoke`, user documents, and npm's web login (the browser's
//! half is the console's login page, `crate::web`).

use serde_json::{json, Value};
use sluice_plugin_api::NpmRequest;

use super::{login_first, Answer, Call};
use crate::auth::{Auth, AuthError, Identity, TokenInfo};
use crate::core::audit_log::{Action, AuditEntry};
use crate::core::sessions::Poll;
use crate::core::Error;

/// An account answer: a status and a JSON body, or the core's error.
type Reply = Result<(u16, Value), Error>;

/// Answer an account request.
pub async fn handle(call: &Call<'_>) -> Result<Answer, Error> {
    let auth = &call.app.auth;
    let who = call.who;
    let (status, value) = match call.request {
        NpmRequest::WebLogin => web_login(call).await,
        NpmRequest::WebLoginDone { session } => return web_login_done(call, session).await,
        NpmRequest::Login { name } => {
            let address = call.address.map(|a| a.to_string());
            let at = (address.as_deref(), call.otp.as_deref());
            let reply = login(auth, name, who, &call.body, at).await;
            if reply.is_ok() {
                let entry = AuditEntry::new(
                    Some(name),
                    call.address,
                    Action::TokenCreate,
                    name.as_str(),
                    "login",
                );
                call.app.audit.note(entry).await;
            }
            reply
        }
        NpmRequest::Whoami => whoami(who),
        NpmRequest::Logout { token } => {
            let reply = logout(auth, who, token).await;
            audited(call, reply, Action::TokenRevoke, "logout").await
        }
        NpmRequest::Tokens => tokens(auth, who).await,
        NpmRequest::CreateToken => {
            let address = call.address.map(|a| a.to_string());
            let reply = create_token(auth, who, &call.body, address.as_deref()).await;
            let detail = match &reply {
                Ok((_, shown)) => format!(
                    "token {}",
                    shown["key"].as_str().map_or("", |k| &k[..k.len().min(8)])
                ),
                Err(_) => String::new(),
            };
            audited(call, reply, Action::TokenCreate, &detail).await
        }
        NpmRequest::RevokeToken { id } => {
            let reply = revoke_token(auth, who, id).await;
            audited(call, reply, Action::TokenRevoke, &format!("token {id}")).await
        }
        NpmRequest::User { name } => user_document(call, name),
        _ => Err(Error::Internal("not an account request".into())),
    }?;
    Ok(Answer::json(status, &value))
}

/// `reply`, recorded in the audit log as `action` on the caller's account when it succeeded.
async fn audited(call: &Call<'_>, reply: Reply, action: Action, detail: &str) -> Reply {
    if let (Ok(_), Some(who)) = (&reply, call.who) {
        super::audit(call, action, &who.user, detail).await;
    }
    reply
}

/// `POST /-/v1/login`: npm's web login begins; the browser logs in on the console's login
/// page for it, while npm polls the done URL.
async fn web_login(call: &Call<'_>) -> Reply {
    if !call.app.config.auth.web_login {
        return Err(Error::NotFound(
            "web login is not offered here (auth.web_login = false): npm falls back to its \
             prompts (npm login --auth-type=legacy)"
                .into(),
        ));
    }
    // Each one is kept in the store: an anonymous client may not start them without bound.
    static BEGUN: std::sync::LazyLock<moka::sync::Cache<Option<std::net::IpAddr>, u32>> =
        std::sync::LazyLock::new(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(std::time::Duration::from_secs(60))
                .build()
        });
    let begun = BEGUN.get(&call.address).unwrap_or(0) + 1;
    if begun > WEB_LOGINS_PER_MINUTE {
        return Err(Error::Throttled(format!(
            "more than {WEB_LOGINS_PER_MINUTE} web logins begun from this address in a minute: \
             wait a minute"
        )));
    }
    BEGUN.insert(call.address, begun);
    let login = call.app.sessions.begin_web_login().await?;
    let base = call.app.config.server.public_url.trim_end_matches('/');
    Ok((
        200,
        json!({
            "loginUrl": format!("{base}/-/ui/login?session={}", login.login),
            "doneUrl": format!("{base}/-/v1/done/{}.{}", login.login, login.done),
        }),
    ))
}

/// How many web logins one address may begin in a minute.
const WEB_LOGINS_PER_MINUTE: u32 = 20;

/// `GET /-/v1/done/{session}`: 202 with `Retry-After` until the user logged in, then the
/// token, once.
async fn web_login_done(call: &Call<'_>, session: &str) -> Result<Answer, Error> {
    match call.app.sessions.poll_web_login(session).await? {
        Poll::Waiting => {
            let mut answer = Answer::json(202, &json!({}));
            answer.headers.push(("retry-after".into(), "1".into()));
            Ok(answer)
        }
        Poll::Ready(user) => {
            let (token, _) = call.app.auth.create_token(&user, false, Vec::new()).await?;
            let entry = AuditEntry::new(
                Some(&user),
                call.address,
                Action::TokenCreate,
                &user,
                "web login",
            );
            call.app.audit.note(entry).await;
            Ok(Answer::json(200, &json!({ "token": token })))
        }
    }
}

/// The answer to a login that failed, whether the name exists or not.
fn wrong_password() -> Error {
    Error::Unauthenticated("wrong user name or password".into())
}

/// `GET /-/user/org.couchdb.user:{name}`: the whole document (with the e-mail address) to
/// that user; the name alone to another user (`npm owner add` checks that the name exists).
/// An anonymous client learns nothing of the name: with sign-ups open it gets the name-only
/// document for any name (what npm reads between the 409 and the Basic retry of a login, see
/// [`login`]), otherwise a 401.
fn user_document(call: &Call<'_>, name: &str) -> Reply {
    let auth = &call.app.auth;
    // Looked up first, for every caller: an anonymous answer takes as long for any name.
    let known = auth.has_user(name);
    let Some(who) = call.who else {
        if auth.adduser {
            return Ok((200, name_only(name)));
        }
        return Err(login_first());
    };
    if !known {
        return Err(Error::NotFound(format!(
            "{name} is not a user of this registry"
        )));
    }
    let mut document = name_only(name);
    if who.user == name {
        document["email"] = Value::String(auth.email(name).unwrap_or_default());
    }
    Ok((200, document))
}

/// A user document with nothing but the name.
fn name_only(name: &str) -> Value {
    json!({
        "_id": format!("org.couchdb.user:{name}"),
        "_rev": "1-0",
        "name": name,
        "type": "user",
        "roles": [],
    })
}

/// `PUT /-/user/org.couchdb.user:{name}[/-rev/{rev}]` with `{name, password, …}`, from
/// `address`, by `who` (its `Authorization`, when good), with the one-time code `otp`
/// (`npm-otp`) for a user who enrolled a second factor.
///
/// With sign-ups open (`auth.adduser`), a PUT that does not come with `name`'s own credentials
/// is a sign-up, and an existing name is taken: 409 once the password is right (a wrong one is
/// a failed login, 401), as CouchDB and Verdaccio answer. npm and Yarn then read the user
/// document and retry with the password as Basic credentials; pnpm sends those at once. With
/// sign-ups closed a PUT can only be a login, and the password in its body logs in.
async fn login(
    auth: &Auth,
    name: &str,
    who: Option<&Identity>,
    body: &[u8],
    (address, otp): (Option<&str>, Option<&str>),
) -> Reply {
    auth.users_ready().await;
    if auth.locked_out(name, address) {
        return Err(AuthError::Locked.into());
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(Error::Client("the login body is not JSON".into()));
    };
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if let Some(named) = body.get("name").and_then(Value::as_str) {
        if named != name {
            return Err(Error::Client(format!(
                "the body names `{named}`, the URL `{name}`"
            )));
        }
    }
    if password.is_empty() {
        return Err(Error::Client("no password given".into()));
    }
    if !auth.has_user(name) {
        if !auth.adduser {
            // An unknown name is told apart from a wrong password neither by the answer nor
            // by its time (the check hashes as a real one does), and it counts as a failure.
            let _ = auth.check_password(name, password);
            auth.failed(name, address, "unknown user").await;
            return Err(wrong_password());
        }
        // `npm adduser` sends the e-mail address it asked for; `npm login` none.
        let email = body
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if !crate::auth::valid_email(email) {
            return Err(Error::Client(format!(
                "`{email}` is not an e-mail address sluice can keep"
            )));
        }
        // Nobody signs up as a look-alike (or a case variant) of a user.
        auth.new_name_ok(name)?;
        if let Err(e) = auth.add_user(name, password, email) {
            return Err(Error::Conflict(e));
        }
    } else if !auth.check_password(name, password) {
        auth.failed(name, address, "wrong password").await;
        return Err(wrong_password());
    } else if auth.adduser && who.is_none_or(|w| w.user != name) {
        return Err(Error::Conflict(format!(
            "the user {name} exists: log in with its password as Basic credentials"
        )));
    } else {
        // Asked only once the password is right: the 401 with `WWW-Authenticate: OTP` makes
        // npm prompt for the code and send the login again with it (`npm-otp`).
        let who = Identity {
            user: name.to_string(),
            readonly: false,
            token_hash: None,
            admin: false,
        };
        auth.require_second_factor(&who, otp, address).await?;
    }
    match auth.create_token(name, false, Vec::new()).await {
        Ok((token, _)) => Ok((
            201,
            json!({
                "ok": true,
                "id": format!("org.couchdb.user:{name}"),
                "rev": "_we_dont_use_revs_any_more",
                "token": token,
            }),
        )),
        Err(e) => Err(e.into()),
    }
}

/// `GET /-/whoami`.
fn whoami(who: Option<&Identity>) -> Reply {
    match who {
        Some(who) => Ok((200, json!({ "username": who.user }))),
        None => Err(login_first()),
    }
}

/// `DELETE /-/user/token/{token}`.
async fn logout(auth: &Auth, who: Option<&Identity>, token: &str) -> Reply {
    let Some(who) = who else {
        return Err(login_first());
    };
    who.may_log_out(token)?;
    match auth.revoke(&who.user, token).await {
        Ok(_) => Ok((200, json!({ "ok": true }))),
        Err(e) => Err(e.into()),
    }
}

fn redacted(info: &TokenInfo) -> Value {
    let created = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.created),
    )
    .to_string();
    json!({
        "token": format!("sluice_…{}", &info.hash[info.hash.len() - 6..]),
        "key": info.hash,
        "cidr_whitelist": info.cidr_whitelist,
        "readonly": info.readonly,
        "automation": false,
        "created": created,
        "updated": created,
    })
}

/// `GET /-/npm/v1/tokens`.
async fn tokens(auth: &Auth, who: Option<&Identity>) -> Reply {
    let Some(who) = who else {
        return Err(login_first());
    };
    who.may_manage_tokens()?;
    match auth.tokens(&who.user).await {
        Ok(list) => {
            let objects: Vec<Value> = list.iter().map(redacted).collect();
            Ok((
                200,
                json!({ "objects": objects, "total": list.len(), "urls": {} }),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /-/npm/v1/tokens` with `{password, readonly, cidr_whitelist}`, from `address`.
async fn create_token(
    auth: &Auth,
    who: Option<&Identity>,
    body: &[u8],
    address: Option<&str>,
) -> Reply {
    let Some(who) = who else {
        return Err(login_first());
    };
    who.may_manage_tokens()?;
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if auth.locked_out(&who.user, address) {
        return Err(AuthError::Locked.into());
    }
    if !auth.check_password(&who.user, password) {
        auth.failed(&who.user, address, "wrong password for a new token")
            .await;
        return Err(Error::Unauthenticated(
            "wrong password: a new token needs the account's password".into(),
        ));
    }
    let readonly = body
        .get("readonly")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let cidr: Vec<String> = body
        .get("cidr_whitelist")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = cidr.iter().find_map(|c| crate::auth::parse_cidr(c).err()) {
        return Err(Error::Client(bad));
    }
    match auth.create_token(&who.user, readonly, cidr).await {
        Ok((token, info)) => {
            let mut shown = redacted(&info);
            shown["token"] = Value::String(token);
            Ok((200, shown))
        }
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /-/npm/v1/tokens/token/{id}`.
async fn revoke_token(auth: &Auth, who: Option<&Identity>, id: &str) -> Reply {
    let Some(who) = who else {
        return Err(login_first());
    };
    who.may_manage_tokens()?;
    match auth.revoke(&who.user, id).await {
        Ok(true) => Ok((200, json!({ "ok": true }))),
        Ok(false) => Err(Error::NotFound(format!(
            "no token of {} has the id {id}",
            who.user
        ))),
        Err(e) => Err(e.into()),
    }
}
