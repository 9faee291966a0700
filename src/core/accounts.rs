//! npm's account protocol over [`Auth`]: the legacy (CouchDB-style) login that `npm login
//! --auth-type=legacy`, `npm adduser` and `yarn npm login` speak, whoami, logout, and the token
//! API of `npm token list|create|revoke`. Each answer is a status and a JSON body.

use serde_json::{json, Value};

use crate::auth::{Auth, AuthError, Identity, TokenInfo};

/// An answer: HTTP status and JSON body (`{"error": …}` when it failed).
pub type Reply = (u16, Value);

fn error(status: u16, message: impl Into<String>) -> Reply {
    (status, json!({ "error": message.into() }))
}

fn from_auth(e: AuthError) -> Reply {
    match e {
        AuthError::Unauthorized(m) => error(401, m),
        AuthError::Forbidden(m) => error(403, m),
        AuthError::Locked => error(429, AuthError::Locked.to_string()),
        AuthError::Store(m) => error(503, format!("sluice's store failed ({m}); try again later")),
    }
}

/// The 401 for a request that needs a user.
pub fn login_first() -> Reply {
    error(
        401,
        "log in first: npm login --registry <this registry> (or an _authToken in .npmrc)",
    )
}

/// `PUT /-/user/org.couchdb.user:{name}` with `{name, password, …}`, from `address`.
pub async fn login(auth: &Auth, name: &str, body: &[u8], address: Option<&str>) -> Reply {
    if auth.locked_out(name, address) {
        return from_auth(AuthError::Locked);
    }
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(400, "the login body is not JSON");
    };
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if let Some(named) = body.get("name").and_then(Value::as_str) {
        if named != name {
            return error(400, format!("the body names `{named}`, the URL `{name}`"));
        }
    }
    if password.is_empty() {
        return error(400, "no password given");
    }
    if !auth.has_user(name) {
        if !auth.adduser {
            return error(
                401,
                format!(
                    "{name} is not a user of this registry: an admin adds users with \
                     `sluice user add {name}` (auth.adduser is off)"
                ),
            );
        }
        // `npm adduser` sends the e-mail address it asked for; `npm login` none.
        let email = body
            .get("email")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if !crate::auth::valid_email(email) {
            return error(
                400,
                format!("`{email}` is not an e-mail address sluice can keep"),
            );
        }
        if let Err(e) = auth.add_user(name, password, email) {
            return error(409, e);
        }
    } else if !auth.check_password(name, password) {
        auth.failed(name, address).await;
        return error(401, "wrong user name or password");
    }
    match auth.create_token(name, false, Vec::new()).await {
        Ok((token, _)) => (
            201,
            json!({
                "ok": true,
                "id": format!("org.couchdb.user:{name}"),
                "rev": "_we_dont_use_revs_any_more",
                "token": token,
            }),
        ),
        Err(e) => from_auth(e),
    }
}

/// `GET /-/whoami`.
pub fn whoami(who: Option<&Identity>) -> Reply {
    match who {
        Some(who) => (200, json!({ "username": who.user })),
        None => login_first(),
    }
}

/// `DELETE /-/user/token/{token}`.
pub async fn logout(auth: &Auth, who: Option<&Identity>, token: &str) -> Reply {
    let Some(who) = who else {
        return login_first();
    };
    match auth.revoke(&who.user, token).await {
        Ok(_) => (200, json!({ "ok": true })),
        Err(e) => from_auth(e),
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
pub async fn tokens(auth: &Auth, who: Option<&Identity>) -> Reply {
    let Some(who) = who else {
        return login_first();
    };
    match auth.tokens(&who.user).await {
        Ok(list) => {
            let objects: Vec<Value> = list.iter().map(redacted).collect();
            (
                200,
                json!({ "objects": objects, "total": list.len(), "urls": {} }),
            )
        }
        Err(e) => from_auth(e),
    }
}

/// `POST /-/npm/v1/tokens` with `{password, readonly, cidr_whitelist}`.
pub async fn create_token(auth: &Auth, who: Option<&Identity>, body: &[u8]) -> Reply {
    let Some(who) = who else {
        return login_first();
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let password = body.get("password").and_then(Value::as_str).unwrap_or("");
    if auth.locked_out(&who.user, None) {
        return from_auth(AuthError::Locked);
    }
    if !auth.check_password(&who.user, password) {
        auth.failed(&who.user, None).await;
        return error(
            401,
            "wrong password: a new token needs the account's password",
        );
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
        return error(400, bad);
    }
    match auth.create_token(&who.user, readonly, cidr).await {
        Ok((token, info)) => {
            let mut shown = redacted(&info);
            shown["token"] = Value::String(token);
            (200, shown)
        }
        Err(e) => from_auth(e),
    }
}

/// `DELETE /-/npm/v1/tokens/token/{id}`.
pub async fn revoke_token(auth: &Auth, who: Option<&Identity>, id: &str) -> Reply {
    let Some(who) = who else {
        return login_first();
    };
    match auth.revoke(&who.user, id).await {
        Ok(true) => (200, json!({ "ok": true })),
        Ok(false) => error(404, format!("no token of {} has the id {id}", who.user)),
        Err(e) => from_auth(e),
    }
}

/// An authentication failure as an answer.
pub fn refused(e: AuthError) -> Reply {
    from_auth(e)
}
