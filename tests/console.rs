//! The web console in a real browser: Debian's headless chromium driven over the DevTools
//! protocol (chromiumoxide), against sluice and a fake upstream on 127.0.0.1. Screenshots of
//! every page go to target/console-screenshots/ for review.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chromiumoxide::Page;
use serde_json::{json, Value};
use sluice::core::audit_log::{Action, AuditEntry};
use support::browser::{
    accessibility_problems, chromium_path, eval, fill, review, submit, text, until, visit,
    with_browser, Chromium, PATIENCE,
};
use support::publishing::add_user;
use support::terminal::Authenticator;
use support::{FakeRegistry, Project, Sluice};

/// Entries put in the audit log before the admin test's own.
const OLD_ENTRIES: usize = 60;

/// `name` made an admin in the users file (the role's field after the e-mail address).
fn make_admin(sluice: &Sluice, name: &str) {
    let path = sluice.dir.path().join("users");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited: String = text
        .lines()
        .map(|line| {
            if line.starts_with(&format!("{name}:")) {
                format!("{line}::admin\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    std::fs::write(&path, edited).unwrap();
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

const HOSTILE_README: &str =
    "# Widget\n\nA widget.\n\n<script>window.pwned = 'script'</script>\n\n\
    <img src=\"/nothing.png\" onerror=\"window.pwned = 'onerror'\">\n\n\
    [docs](javascript:window.pwned='link')\n";

/// A page with one of each flaw the accessibility checks look for, and near misses that pass.
const FLAWED_PAGE: &str = "<!doctype html><html lang=en><body>\
    <h1>One</h1><h1>Two</h1>\
    <p style=\"color:#999999\">faint</p>\
    <p style=\"color:#949494\">small and grey</p>\
    <p style=\"color:#949494;font-size:24px\">large and grey</p>\
    <p style=\"background:#a0a0a0\"><span style=\"color:#fff;font-size:24px\">white on grey</span></p>\
    <label for=\"named\">Named</label><input id=\"named\"><input id=\"unlabelled\">\
    <a href=\"#\">fine</a><a href=\"#\" tabindex=\"2\">jumps ahead</a>\
    <a href=\"#\" tabindex=\"-1\">out of reach</a></body></html>";

#[test]
fn search_package_page_install_line_and_an_inert_readme() {
    let upstream = FakeRegistry::start();
    upstream.publish("helper", "1.0.0", &[]);
    upstream.publish_with(
        "widget",
        "1.0.0",
        json!({"description": "a blue widget", "readme": HOSTILE_README,
               "dependencies": {"helper": "^1.0.0"}}),
        None,
    );
    upstream.publish_with(
        "widget",
        "2.0.0",
        json!({"description": "a blue widget", "readme": HOSTILE_README}),
        Some(&now_rfc3339()),
    );
    let sluice = Sluice::start(
        &upstream,
        "widget\nhelper\n",
        "[[plugins]]\nkind = \"min-age\"\ndays = 3\n",
    );
    // Stored once asked for, so the search finds it.
    assert_eq!(sluice.get("/widget", &[]).0, 200);
    let url = sluice.url();
    with_browser(|chromium| async move {
        let page = chromium.page().await;
        // A browser asking for `/` lands on the console.
        visit(&page, &url).await;
        assert!(page.url().await.unwrap().unwrap().ends_with("/-/ui/"));
        review(&page, "home").await;
        fill(&page, "#home-q", "blue").await;
        submit(&page, ".big-search button", "/-/ui/search").await;
        review(&page, "search").await;
        assert!(text(&page, "ol.results").await.contains("widget"));
        submit(&page, "ol.results a.name", "/-/ui/package/widget").await;
        review(&page, "package").await;
        assert_eq!(text(&page, "#install-npm").await, "npm install widget");
        assert_eq!(text(&page, "#install-pnpm").await, "pnpm add widget");
        assert_eq!(text(&page, "#install-yarn").await, "yarn add widget");
        assert_eq!(text(&page, "#install-bun").await, "bun add widget");
        // 2.0.0 is younger than min-age allows: shown with why, and latest is 1.0.0.
        assert!(text(&page, ".latest").await.contains("1.0.0"));
        let young: String = eval(&page, "document.getElementById('v-2.0.0').innerText").await;
        assert!(
            young.contains("Not served") && young.contains("3 days"),
            "{young}"
        );
        // The README rendered, and nothing in it ran or can run.
        assert_eq!(text(&page, ".readme h2:not(#readme)").await, "Widget");
        let pwned: String = eval(&page, "typeof window.pwned").await;
        assert_eq!(pwned, "undefined");
        let live: u32 = eval(
            &page,
            "document.querySelectorAll('.readme script, .readme [onerror], \
             .readme a[href^=\"javascript\" i]').length",
        )
        .await;
        assert_eq!(live, 0);
        // Dependencies link to their pages.
        submit(
            &page,
            "a[href='/-/ui/package/helper']",
            "/-/ui/package/helper",
        )
        .await;
        assert_eq!(text(&page, "h1").await, "helper");
        // The home page counts what the index holds (widget was found above, so at least it).
        visit(&page, &format!("{url}-/ui/")).await;
        let packages: u64 = text(&page, "dl.counts dd").await.parse().unwrap();
        assert!(packages >= 1, "the home page counts {packages} packages");
        // The checks every page passes do find what they look for.
        // (On a blank page: the console's policy would refuse the inline styles.)
        page.goto("about:blank").await.unwrap();
        page.set_content(FLAWED_PAGE).await.unwrap();
        let problems = accessibility_problems(&page).await;
        for expected in [
            "2 h1 elements",
            "no label: <input id=\"unlabelled\">",
            "a positive tabindex: <a href=\"#\" tabindex=\"2\">",
            "low contrast: text #999999 on #ffffff: 2.85 < 4.5",
            "low contrast: text #949494 on #ffffff: 3.03 < 4.5",
            "low contrast: text #ffffff on #a0a0a0: 2.61 < 3",
            "not reached by Tab: <a href=\"#\" tabindex=\"-1\">",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} not found in {problems:#?}"
            );
        }
        // Large text needs 3:1: #949494 at 24px passes; the labelled field and the plain
        // link are fine.
        assert_eq!(problems.len(), 7, "{problems:#?}");
        chromium.close().await;
    });
}

#[test]
fn admin_console_whitelist_settings_users_tokens_audit_and_forms_need_their_token() {
    let upstream = FakeRegistry::start();
    upstream.publish("tiny", "1.0.0", &[]);
    upstream.publish("lodash", "4.17.21", &[("tiny", "^1.0.0")]);
    upstream.publish("leftpad", "1.0.0", &[]);
    let sluice = Sluice::start(
        &upstream,
        "widget\n",
        "[auth]\nread = \"authenticated\"\n[policy]\nread_through = true\n",
    );
    add_user(&sluice, "root", "root-password-1");
    make_admin(&sluice, "root");
    add_user(&sluice, "bob", "bob-password-1");
    let (url, whitelist) = (sluice.url(), sluice.whitelist_path());
    let upstream = &upstream;
    let app = sluice.server.as_ref().unwrap().app.clone();
    let root_login = || support::publishing::login(&sluice, "root", "root-password-1");
    with_browser(|chromium| async move {
        // Entries older than this test's own, so that the audit log has two pages.
        for i in 0..OLD_ENTRIES {
            let subject = format!("old-{i:02}");
            let entry = AuditEntry::new(Some("ci"), None, Action::Publish, subject, "");
            app.audit.record(entry).await.unwrap();
        }
        let page = chromium.page().await;
        // Every page but the login page needs a session.
        visit(&page, &format!("{url}-/ui/admin")).await;
        assert!(page
            .url()
            .await
            .unwrap()
            .unwrap()
            .contains("/-/ui/login?next="));
        review(&page, "login").await;
        fill(&page, "#login-name", "root").await;
        fill(&page, "#login-password", "wrong-password").await;
        submit(&page, "form.stack button", "/-/ui/login").await;
        assert!(text(&page, ".error")
            .await
            .contains("wrong user name or password"));
        fill(&page, "#login-name", "root").await;
        fill(&page, "#login-password", "root-password-1").await;
        submit(&page, "form.stack button", "/-/ui/admin").await;
        review(&page, "admin").await;
        fill(&page, "#add-spec", "lodash").await;
        submit(
            &page,
            "form[action$='whitelist/add'] button",
            "/-/ui/admin/jobs/",
        )
        .await;
        until(
            &page,
            "document.getElementById('job-state').textContent.startsWith('done')",
        )
        .await;
        review(&page, "add-package").await;
        // The page's summary: both packages resolved and stored, both added.
        assert_eq!(text(&page, "#job-names").await, "2");
        assert_eq!(text(&page, "#job-tarballs").await, "2");
        let lines = text(&page, "#job-lines").await;
        assert!(
            lines.contains("added lodash") && lines.contains("added tiny"),
            "{lines}"
        );
        let listed = std::fs::read_to_string(&whitelist).unwrap();
        assert!(listed.lines().any(|l| l == "lodash") && listed.lines().any(|l| l == "tiny"));
        // What the job stored is all a fresh install needs: upstream down, npm installs both.
        upstream.set_down(true);
        tokio::task::block_in_place(|| {
            let project = Project::logged_in(&url, &root_login());
            project.install(&url, &["lodash"]);
            assert_eq!(project.require("lodash"), "lodash@4.17.21");
            assert_eq!(project.require("tiny"), "tiny@1.0.0");
        });
        upstream.set_down(false);
        // A post from this very page without the form's token is refused.
        let status: u32 = eval(
            &page,
            "fetch('/-/ui/admin/whitelist/remove', {method: 'POST', headers: \
             {'content-type': 'application/x-www-form-urlencoded'}, body: 'name=tiny'}) \
             .then(r => r.status)",
        )
        .await;
        assert_eq!(status, 403);
        assert!(std::fs::read_to_string(&whitelist)
            .unwrap()
            .contains("tiny"));
        visit(&page, &format!("{url}-/ui/admin?filter=tin")).await;
        submit(&page, "button[aria-label='Remove tiny']", "/-/ui/admin").await;
        let listed = std::fs::read_to_string(&whitelist).unwrap();
        assert!(!listed.lines().any(|l| l == "tiny"), "{listed}");
        let token = users_and_settings(&page, &url, upstream).await;
        // Someone who is not an admin gets 403 on every admin page; no one logged in is sent
        // to the login page.
        submit(&page, "header form.inline button", "/-/ui/").await;
        visit(&page, &format!("{url}-/ui/admin/users")).await;
        assert!(page
            .url()
            .await
            .unwrap()
            .unwrap()
            .contains("/-/ui/login?next="));
        fill(&page, "#login-name", "bob").await;
        fill(&page, "#login-password", "bob-password-1").await;
        submit(&page, "form.stack button", "/-/ui/admin/users").await;
        for path in [
            "admin",
            "admin/settings",
            "admin/users",
            "admin/users/dave",
            "admin/audit",
        ] {
            let status: u32 =
                eval(&page, &format!("fetch('/-/ui/{path}').then(r => r.status)")).await;
            assert_eq!(status, 403, "{path}");
        }
        // Not even with the session's own token can bob change a setting.
        let status: u32 = eval(
            &page,
            "fetch('/-/ui/admin/settings', {method: 'POST', headers: \
             {'content-type': 'application/x-www-form-urlencoded'}, body: 'read_through=off&csrf=' \
             + document.querySelector('input[name=csrf]').value}).then(r => r.status)",
        )
        .await;
        assert_eq!(status, 403);
        visit(&page, &format!("{url}-/ui/admin")).await;
        review(&page, "forbidden").await;
        chromium.close().await;
        // The token revoked in the console is refused.
        let (status, _) = npm_call("GET", &format!("{url}lodash"), Some(&token), None).await;
        assert_eq!(status, 401);
    });
}

/// `method url` as npm sends it, with `token` and a JSON `body`: the status and the JSON answer.
async fn npm_call(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Choose `value` in the select (or type it in the field) `selector`.
async fn set_field(page: &Page, selector: &str, value: &str) {
    let js = format!("document.querySelector({selector:?}).value = {value:?}");
    page.evaluate(js.as_str()).await.unwrap();
}

/// The text of the element `selector`, read in the page (a node handle taken just after a
/// navigation can go stale).
async fn shown(page: &Page, selector: &str) -> String {
    let js = format!(
        "(e => e ? e.innerText : 'nothing matches ' + {selector:?} + ' at ' + location.href + ': ' + document.body.innerText)(document.querySelector({selector:?}))"
    );
    eval(page, &js).await
}

/// The text of a live setting's `cell` (value, source) on the settings page.
async fn setting(page: &Page, key: &str, cell: &str) -> String {
    shown(page, &format!("#setting-{key} .{cell}")).await
}

/// Set read-through `on` or `off` on the settings page; the page says it is in force.
async fn set_read_through(page: &Page, url: &str, value: &str) {
    visit(page, &format!("{url}-/ui/admin/settings")).await;
    set_field(page, "#set-read_through", value).await;
    submit(page, "#settings-form button", "/-/ui/admin/settings").await;
    assert!(shown(page, ".notice").await.contains("in force"));
    assert_eq!(setting(page, "read_through", "value").await, value);
    assert!(setting(page, "read_through", "source")
        .await
        .contains("by root"));
}

/// As the admin root: the live settings, a user made in the console reading with npm's
/// login and a token revoked, the audit log of it all, and forms without their token refused.
/// Returns the revoked token.
async fn users_and_settings(page: &Page, url: &str, upstream: &FakeRegistry) -> String {
    visit(page, &format!("{url}-/ui/admin/settings")).await;
    assert_eq!(setting(page, "read_through", "value").await, "on");
    assert!(setting(page, "read_through", "source")
        .await
        .contains("configuration file"));
    review(page, "settings").await;
    // A bad value is explained on the page and nothing is written, not even the good one.
    set_field(page, "#set-read_through", "off").await;
    set_field(page, "#set-refresh", "soon").await;
    submit(page, "#settings-form button", "/-/ui/admin/settings").await;
    assert!(shown(page, ".error")
        .await
        .contains("refresh is a duration"));
    assert_eq!(setting(page, "read_through", "value").await, "on");
    review(page, "settings-refused").await;
    // A user made in the console logs in as npm does, and reads.
    visit(page, &format!("{url}-/ui/admin/users")).await;
    fill(page, "#new-name", "dave").await;
    fill(page, "#new-email", "dave@example.com").await;
    fill(page, "#new-password", "dave-password-1").await;
    submit(page, "#create-user-form button", "/-/ui/admin/users/dave").await;
    assert!(shown(page, ".notice").await.contains("Created"));
    let login = json!({"_id": "org.couchdb.user:dave", "name": "dave",
                       "password": "dave-password-1", "type": "user", "roles": []});
    let user_url = format!("{url}-/user/org.couchdb.user:dave");
    let (status, body) = npm_call("PUT", &user_url, None, Some(login)).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let project = Project::logged_in(url, &token);
    let registry = url.to_string();
    let version = tokio::task::spawn_blocking(move || {
        project.npm_ok(&registry, &["view", "lodash", "version"])
    })
    .await
    .unwrap();
    assert_eq!(version.trim(), "4.17.21");
    // Read-through off: a package off the whitelist is refused at once, upstream never asked.
    set_read_through(page, url, "off").await;
    review(page, "settings-live").await;
    let (status, _) = npm_call("GET", &format!("{url}leftpad"), Some(&token), None).await;
    assert_eq!(status, 403);
    assert_eq!(upstream.count("/leftpad"), 0);
    // A post without the form's token changes nothing.
    let status: u32 = eval(
        page,
        "fetch('/-/ui/admin/settings', {method: 'POST', headers: \
         {'content-type': 'application/x-www-form-urlencoded'}, body: 'read_through=on'}) \
         .then(r => r.status)",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = npm_call("GET", &format!("{url}leftpad"), Some(&token), None).await;
    assert_eq!(status, 403);
    set_read_through(page, url, "on").await;
    let (status, _) = npm_call("GET", &format!("{url}leftpad"), Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(upstream.count("/leftpad") > 0);
    // The users list marks where each user is defined.
    visit(page, &format!("{url}-/ui/admin/users")).await;
    review(page, "users").await;
    let listed = shown(page, "table.users").await;
    assert!(listed.contains("root\t\tadmin\tusers file"), "{listed}");
    assert!(
        listed.contains("dave\tdave@example.com\tuser\tstore"),
        "{listed}"
    );
    let status: u32 = eval(
        page,
        "fetch('/-/ui/admin/users', {method: 'POST', headers: \
         {'content-type': 'application/x-www-form-urlencoded'}, \
         body: 'name=mallory&password=mallory-password-1&admin=1'}).then(r => r.status)",
    )
    .await;
    assert_eq!(status, 403);
    assert!(!shown(page, "table.users").await.contains("mallory"));
    visit(page, &format!("{url}-/ui/admin/users/root")).await;
    assert!(shown(page, "#file-user").await.contains("users file"));
    // dave's token is listed by its id, never itself, and revoked from the console.
    visit(page, &format!("{url}-/ui/admin/users/dave")).await;
    review(page, "user").await;
    let html: String = eval(page, "document.documentElement.outerHTML").await;
    assert!(!html.contains(&token));
    let id = shown(page, "table.tokens code").await;
    submit(
        page,
        &format!("button[aria-label='Revoke token {id}']"),
        "/-/ui/admin/users/dave",
    )
    .await;
    assert!(shown(page, ".notice").await.contains("revoked"));
    let (status, _) = npm_call("GET", &format!("{url}lodash"), Some(&token), None).await;
    assert_eq!(status, 401);
    // The audit log tells who changed what, from where, newest first.
    visit(page, &format!("{url}-/ui/admin/audit")).await;
    review(page, "audit").await;
    let log = shown(page, "table.audit").await;
    let lines: Vec<&str> = log.lines().collect();
    let find = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what} in\n{log}"))
    };
    let revoked = find("\troot\t127.0.0.1\ttoken-revoke\tdave");
    let back_on = find("\troot\t127.0.0.1\tsettings\tread_through\toff (store) -> on");
    let created = find("\troot\t127.0.0.1\tuser-create\tdave");
    assert!(revoked < back_on && back_on < created, "{log}");
    assert!(
        !log.contains("soon"),
        "a refused change is not a change: {log}"
    );
    // 50 entries a page, newest first; the older ones follow, down to the log's first.
    let old = |line: &&str| line.contains("\tci\t—\tpublish\told-");
    assert_eq!(lines.len(), 1 + 50, "a header and 50 entries: {log}");
    let ours = lines[1..].iter().filter(|l| !old(l)).count();
    submit(page, "a[rel=next]", "/-/ui/admin/audit").await;
    review(page, "audit-older").await;
    let older = shown(page, "table.audit").await;
    let rows: Vec<&str> = older.lines().skip(1).collect();
    assert!(rows.iter().all(old), "{older}");
    assert_eq!(rows.len(), OLD_ENTRIES - (50 - ours), "{older}");
    assert!(rows.last().unwrap().contains("\told-00\t"), "{older}");
    let links: u32 = eval(page, "document.querySelectorAll('a[rel=next]').length").await;
    assert_eq!(links, 0, "the log's first page has no older one");
    token
}

#[test]
fn npm_web_login_completes_when_the_browser_logs_in() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", "");
    add_user(&sluice, "alice", "alice-password-1");
    let url = sluice.url();
    let Some(executable) = chromium_path() else {
        return;
    };
    let npm = NpmLogin::start(&url, &["--auth-type=web"], None);
    let login_url = npm.login_url.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let chromium = Chromium::launch(&executable).await;
        let page = chromium.page().await;
        visit(&page, &login_url).await;
        assert_eq!(text(&page, "h1").await, "Log in to npm");
        review(&page, "npm-login").await;
        fill(&page, "#login-name", "alice").await;
        fill(&page, "#login-password", "alice-password-1").await;
        submit(&page, "form.stack button", "/-/ui/login").await;
        assert_eq!(text(&page, "h1").await, "npm is logged in");
        review(&page, "npm-logged-in").await;
        chromium.close().await;
    });
    assert_eq!(npm.finish(), "alice");
}

/// The texts (trimmed) of the elements `selector` finds in `page`.
async fn all_text(page: &Page, selector: &str) -> Vec<String> {
    eval(
        page,
        &format!("[...document.querySelectorAll({selector:?})].map(e => e.textContent.trim())"),
    )
    .await
}

#[test]
fn account_page_enrolls_two_factor_and_then_logins_and_npm_12s_web_login_ask_for_a_code() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", "");
    add_user(&sluice, "dave", "dave-password-1");
    let (url, app) = (sluice.url(), sluice.server.as_ref().unwrap().app.clone());
    let Some(node24) = support::node24_path() else {
        return;
    };
    with_browser(|chromium| async move {
        let enrolled = || sluice::api::admin::login_needs_second_factor(&app, "dave");
        let page = chromium.page().await;
        // The account page is a logged-in user's.
        visit(&page, &format!("{url}-/ui/account")).await;
        assert!(page
            .url()
            .await
            .unwrap()
            .unwrap()
            .contains("/-/ui/login?next="));
        fill(&page, "#login-name", "dave").await;
        fill(&page, "#login-password", "dave-password-1").await;
        submit(&page, "form.stack button", "/-/ui/account").await;
        review(&page, "account").await;
        assert!(text(&page, "#two-factor-state").await.contains("off"));
        fill(&page, "#begin-password", "dave-password-1").await;
        submit(&page, "form[action$='2fa/begin'] button", "/-/ui/account").await;
        review(&page, "account-2fa-setup").await;
        // The QR code is an SVG drawn on the server (the page runs no script of its own).
        let drawn: bool = eval(
            &page,
            "(document.querySelector('figure.qr svg path')?.getAttribute('d') || '').length > 100",
        )
        .await;
        assert!(drawn);
        let uri = text(&page, "#otpauth-uri").await;
        assert!(
            uri.starts_with("otpauth://totp/") && uri.contains("secret="),
            "{uri}"
        );
        let mut authenticator = Authenticator::scan(&uri);
        // A wrong code turns nothing on.
        fill(&page, "#confirm-otp", &authenticator.wrong_code()).await;
        submit(&page, "form[action$='2fa/confirm'] button", "/-/ui/account").await;
        assert!(text(&page, ".error").await.contains("nothing changed"));
        assert!(!enrolled().await.unwrap());
        assert_eq!(
            text(&page, "#otpauth-uri").await,
            uri,
            "the same secret waits"
        );
        fill(&page, "#confirm-otp", &authenticator.code()).await;
        submit(&page, "form[action$='2fa/confirm'] button", "/-/ui/account").await;
        review(&page, "account-recovery-codes").await;
        let recovery = all_text(&page, "#recovery-codes code").await;
        assert_eq!(recovery.len(), 8, "{recovery:?}");
        assert!(enrolled().await.unwrap());
        // Shown once: the page shows them no more.
        visit(&page, &format!("{url}-/ui/account")).await;
        assert!(text(&page, "#two-factor-state").await.contains("is on"));
        assert!(all_text(&page, "#recovery-codes code").await.is_empty());
        // Every form needs its token; with it, a second factor is not replaced by a new
        // enrollment (that would skip the code turning it off needs).
        let post = |path: &str, token: bool| {
            let csrf = if token {
                "'csrf=' + encodeURIComponent(document.querySelector('input[name=csrf]').value)"
            } else {
                "''"
            };
            format!(
                "fetch('/-/ui/account/{path}', {{method: 'POST', headers: {{'content-type': \
                 'application/x-www-form-urlencoded'}}, body: {csrf}}}).then(r => r.status)"
            )
        };
        for form in ["2fa/begin", "2fa/disable", "password"] {
            let status: u32 = eval(&page, &post(form, false)).await;
            assert_eq!(status, 403, "{form} without its token");
        }
        let status: u32 = eval(&page, &post("2fa/begin", true)).await;
        assert_eq!(status, 409);
        assert!(enrolled().await.unwrap());

        // A new password needs the current one, and the session goes on under the new one.
        fill(&page, "#current-password", "not-my-password").await;
        fill(&page, "#new-password", "dave-password-2").await;
        fill(&page, "#again-password", "dave-password-2").await;
        submit(&page, "form[action$='password'] button", "/-/ui/account").await;
        assert!(text(&page, ".error")
            .await
            .contains("current password is wrong"));
        fill(&page, "#current-password", "dave-password-1").await;
        fill(&page, "#new-password", "dave-password-2").await;
        fill(&page, "#again-password", "dave-password-2").await;
        submit(&page, "form[action$='password'] button", "/-/ui/account").await;
        assert!(text(&page, ".notice").await.contains("password is changed"));
        assert_eq!(text(&page, "span.who").await, "dave");

        // The console's login now asks for a code.
        submit(&page, "header form.inline button", "/-/ui/").await;
        visit(&page, &format!("{url}-/ui/login")).await;
        fill(&page, "#login-name", "dave").await;
        fill(&page, "#login-password", "dave-password-2").await;
        submit(&page, "form.stack button", "/-/ui/login").await;
        assert!(text(&page, ".error").await.contains("one-time code"));
        fill(&page, "#login-name", "dave").await;
        fill(&page, "#login-password", "dave-password-2").await;
        fill(&page, "#login-otp", &authenticator.code()).await;
        submit(&page, "form.stack button", "/-/ui/").await;
        assert_eq!(text(&page, "span.who").await, "dave");
        submit(&page, "header form.inline button", "/-/ui/").await;

        // npm 12's login (its default, the web flow): the browser logs in on the page npm
        // gave, with a recovery code for the second factor.
        let login_url = url.clone();
        let npm =
            tokio::task::spawn_blocking(move || NpmLogin::start(&login_url, &[], Some(node24)))
                .await
                .unwrap();
        visit(&page, &npm.login_url).await;
        assert_eq!(text(&page, "h1").await, "Log in to npm");
        fill(&page, "#login-name", "dave").await;
        fill(&page, "#login-password", "dave-password-2").await;
        fill(&page, "#login-otp", &recovery[0]).await;
        submit(&page, "form.stack button", "/-/ui/login").await;
        assert_eq!(text(&page, "h1").await, "npm is logged in");
        let who = tokio::task::spawn_blocking(move || npm.finish())
            .await
            .unwrap();
        assert_eq!(who, "dave");

        // Turning two-factor authentication off needs a good code: a used one is not.
        visit(&page, &format!("{url}-/ui/account")).await;
        fill(&page, "#disable-otp", &recovery[0]).await;
        submit(&page, "form[action$='2fa/disable'] button", "/-/ui/account").await;
        assert!(text(&page, ".error").await.contains("still on"));
        assert!(enrolled().await.unwrap());
        fill(&page, "#disable-otp", &recovery[1]).await;
        submit(&page, "form[action$='2fa/disable'] button", "/-/ui/account").await;
        assert!(text(&page, ".notice").await.contains("is off"));
        assert!(!enrolled().await.unwrap());
        // Each change is in the audit log, by dave, as the command line's are.
        let log = app.audit.page(None, 100).await.unwrap().entries;
        use sluice::core::audit_log::Action;
        let changes: Vec<(Action, &str)> = log
            .iter()
            .rev()
            .filter(|e| e.actor.as_deref() == Some("dave") && e.subject == "dave")
            .filter(|e| matches!(e.action, Action::TwoFactor | Action::PasswordReset))
            .map(|e| (e.action, e.detail.as_str()))
            .collect();
        assert_eq!(
            changes,
            [
                (Action::TwoFactor, "enrolled"),
                (Action::PasswordReset, ""),
                (Action::TwoFactor, "removed")
            ],
            "{log:?}"
        );
        chromium.close().await;
    });
}

/// `npm login` against a registry, waiting for a browser.
struct NpmLogin {
    npm: support::Reaped,
    home: tempfile::TempDir,
    url: String,
    path: Option<std::ffi::OsString>,
    /// The page npm asks the browser to log in on.
    login_url: String,
}

impl NpmLogin {
    /// `npm login` with `args` against `url` (`path` as `$PATH` for another npm), once it
    /// printed the login URL.
    fn start(url: &str, args: &[&str], path: Option<std::ffi::OsString>) -> NpmLogin {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join(".npmrc"), "").unwrap();
        let mut command = Self::npm(&home, url, path.as_ref());
        command
            .arg("login")
            .args(args)
            .arg("--no-update-notifier")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut npm = support::Reaped(command.spawn().expect("npm runs (install Node.js and npm)"));
        // npm prints "Login at:" and the URL, then polls until the browser logged in.
        let stdout = npm.0.stdout.take().unwrap();
        let login_url = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.starts_with("http"))
            .expect("npm prints the login URL");
        assert!(
            login_url.starts_with(&format!("{url}-/ui/login?session=")),
            "{login_url}"
        );
        NpmLogin {
            npm,
            home,
            url: url.to_string(),
            path,
            login_url,
        }
    }

    /// npm with this login's user config and cache.
    fn npm(home: &tempfile::TempDir, url: &str, path: Option<&std::ffi::OsString>) -> Command {
        let mut command = Command::new("npm");
        command
            .args(["--registry", url])
            .arg("--userconfig")
            .arg(home.path().join(".npmrc"))
            .arg("--cache")
            .arg(home.path().join("cache"))
            .env_remove("npm_config_registry");
        if let Some(path) = path {
            command.env("PATH", path);
        }
        command
    }

    /// Wait for npm to finish logging in: who `npm whoami` says it is then.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.npm.0.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "npm login never finished");
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.npm.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "npm login failed: {stderr}");
        let rc = std::fs::read_to_string(self.home.path().join(".npmrc")).unwrap();
        assert!(rc.contains(":_authToken=sluice_"), "{rc}");
        let whoami = Self::npm(&self.home, &self.url, self.path.as_ref())
            .arg("whoami")
            .output()
            .unwrap();
        String::from_utf8_lossy(&whoami.stdout).trim().to_string()
    }
}

/// A runtime for a test's requests and a client that shows redirects rather than following
/// them (the console answers a form with 303).
fn http_runtime() -> (tokio::runtime::Runtime, reqwest::Client) {
    sluice::crypto::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (runtime, client)
}

/// The value of the hidden field `name` in `html`.
fn hidden_field(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).expect("the field") + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

/// The `name=value` of the cookie `name` among `set-cookie` headers, and its attributes.
fn set_cookie(headers: &reqwest::header::HeaderMap, name: &str) -> (String, String) {
    let line = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie in {headers:?}"));
    let (pair, attributes) = line.split_once(';').unwrap();
    (pair.to_string(), attributes.to_string())
}

#[test]
fn web_login_protocol_csrf_and_the_browsers_root_over_http() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", "");
    add_user(&sluice, "carol", "carol-password-1");
    let url = sluice.url();
    let (runtime, client) = http_runtime();
    runtime.block_on(async {
        // A browser asking for `/` is sent to the console; npm gets what it always got.
        let root = client
            .get(&url)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(root.status(), 303);
        assert_eq!(root.headers()["location"], "/-/ui/");
        let npm = client
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(npm.status(), 404);
        let begun: Value = client
            .post(format!("{url}-/v1/login"))
            .json(&json!({"hostname": "laptop"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let login_url = begun["loginUrl"].as_str().unwrap().to_string();
        let done_url = begun["doneUrl"].as_str().unwrap().to_string();
        let session = login_url.split("session=").nth(1).unwrap().to_string();
        // Not logged in yet: npm is told to come back.
        let waiting = client.get(&done_url).send().await.unwrap();
        assert_eq!(waiting.status(), 202);
        assert_eq!(waiting.headers()["retry-after"], "1");
        let form = client.get(&login_url).send().await.unwrap();
        assert_eq!(form.status(), 200);
        let csp = form.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        let (cookie, attributes) = set_cookie(form.headers(), "sluice_login");
        assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"));
        let html = form.text().await.unwrap();
        let csrf = hidden_field(&html, "csrf");
        let post = |body: String| {
            client
                .post(format!("{url}-/ui/login"))
                .header("cookie", cookie.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        let credentials = format!("name=carol&password=carol-password-1&session={session}");
        // Without the form's token, or with another one, the login is refused.
        assert_eq!(post(credentials.clone()).await.unwrap().status(), 403);
        let forged = format!("{credentials}&csrf={}", "0".repeat(64));
        assert_eq!(post(forged).await.unwrap().status(), 403);
        let wrong = format!("name=carol&password=nope&session={session}&csrf={csrf}");
        assert_eq!(post(wrong).await.unwrap().status(), 401);
        let done = post(format!("{credentials}&csrf={csrf}")).await.unwrap();
        assert_eq!(done.status(), 200);
        let (session_cookie, attributes) = set_cookie(done.headers(), "sluice_session");
        assert!(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"));
        assert!(attributes.contains("Max-Age=") && !attributes.contains("Secure"));
        // npm's next poll gets a token, once.
        let answer = client.get(&done_url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        let token = answer.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(client.get(&done_url).send().await.unwrap().status(), 404);
        let whoami: Value = client
            .get(format!("{url}-/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(whoami["username"], "carol");
        // The login page of a login that is done says so.
        let used = client.get(&login_url).send().await.unwrap();
        assert_eq!(used.status(), 404);
        // The console session is carol's until her password changes: a session opened with a
        // password an attacker knew ends with it.
        let home = || async {
            client
                .get(format!("{url}-/ui/"))
                .header("cookie", session_cookie.clone())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        assert!(home().await.contains("<span class=\"who\">carol</span>"));
        support::publishing::user_cli(
            &sluice.config_path,
            "passwd",
            "carol",
            "carol-password-2",
            &[],
        );
        // Once the server has re-read the users file (its watcher), the session is gone.
        let mut ended = false;
        for _ in 0..300 {
            if !home().await.contains("<span class=\"who\">carol</span>") {
                ended = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            ended,
            "the console session outlived carol's password change"
        );
    });
}

/// A console session over plain HTTP: `name` logs in with `password`; the session's cookie
/// and its CSRF token (from the account page's forms).
async fn http_session(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    password: &str,
) -> (String, String) {
    let form = client.get(format!("{url}-/ui/login")).send().await.unwrap();
    let (cookie, _) = set_cookie(form.headers(), "sluice_login");
    let csrf = hidden_field(&form.text().await.unwrap(), "csrf");
    let done = client
        .post(format!("{url}-/ui/login"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("name={name}&password={password}&csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303);
    let (session, _) = set_cookie(done.headers(), "sluice_session");
    let account = client
        .get(format!("{url}-/ui/account"))
        .header("cookie", session.clone())
        .send()
        .await
        .unwrap();
    let csrf = hidden_field(&account.text().await.unwrap(), "csrf");
    (session, csrf)
}

#[test]
fn hostile_console_inputs_write_nothing_odd_to_the_audit_log_or_the_users() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", "");
    add_user(&sluice, "root", "root-password-1");
    make_admin(&sluice, "root");
    add_user(&sluice, "carol", "carol-password-1");
    let url = sluice.url();
    let app = &sluice.server.as_ref().unwrap().app;
    let root = sluice::auth::Identity {
        user: "root".into(),
        readonly: false,
        token_hash: None,
        admin: true,
    };
    let actor = sluice::api::admin::Actor {
        app,
        who: &root,
        address: None,
    };
    let (runtime, client) = http_runtime();
    runtime.block_on(async {
        let form = client.get(format!("{url}-/ui/login")).send().await.unwrap();
        let (login_cookie, _) = set_cookie(form.headers(), "sluice_login");
        let login_csrf = hidden_field(&form.text().await.unwrap(), "csrf");
        // An outsider's failed login with a name of 60 000 characters: the audit log keeps
        // what a user name can be, not the whole field (each entry rewrites its chunk).
        let huge = "x".repeat(60_000);
        let refused = client
            .post(format!("{url}-/ui/login"))
            .header("cookie", login_cookie.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("name={huge}&password=guess&csrf={login_csrf}"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let log = sluice::api::admin::audit_log(actor, None, 10)
            .await
            .unwrap();
        let failed = log
            .entries
            .iter()
            .find(|e| e.action == Action::LoginFailure)
            .expect("the failed login is audited");
        assert!(
            failed.subject.len() <= 214 && failed.subject.starts_with("xxxx"),
            "an audit entry of {} bytes",
            failed.subject.len()
        );
        // A `next` with a line break cannot make a header of its own: the login goes home.
        let next = client
            .post(format!("{url}-/ui/login"))
            .header("cookie", login_cookie.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "name=carol&password=carol-password-1&csrf={login_csrf}\
                 &next=%2F-%2Fui%2F%0D%0ASet-Cookie%3A%20planted%3D1"
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 303);
        assert_eq!(next.headers()["location"], "/-/ui/");
        assert!(next
            .headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().contains("planted")));

        // An admin cannot create a user whose name passes for another's: a case variant of
        // carol, one with a control character, an unaddressable one; nothing is written.
        let (session, csrf) = http_session(&client, &url, "root", "root-password-1").await;
        let before = sluice::api::admin::users(actor).await.unwrap();
        for name in [
            "Carol",
            "CAROL",
            "car%E2%80%AEol",
            "car%07ol",
            "100%25",
            "..",
        ] {
            let created = client
                .post(format!("{url}-/ui/admin/users"))
                .header("cookie", session.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&name={name}&password=pw-123456&email="))
                .send()
                .await
                .unwrap();
            assert_eq!(created.status(), 400, "{name} was created");
        }
        let after = sluice::api::admin::users(actor).await.unwrap();
        let names = |users: &[sluice::auth::UserSummary]| {
            users.iter().map(|u| u.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names(&after), names(&before));
        // A plain new name still works, and its page is reachable.
        let created = client
            .post(format!("{url}-/ui/admin/users"))
            .header("cookie", session.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={csrf}&name=dave.o-k_1&password=pw-123456&email="
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 303);
        let page = client
            .get(format!("{url}-/ui/admin/users/dave.o-k_1"))
            .header("cookie", session.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
    });
}

/// The text of the element with `id` in `html` (its markup's entities undone).
fn element_text(html: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = html.find(&marker).expect("the element") + marker.len();
    let end = start + html[start..].find('<').unwrap();
    html[start..end]
        .replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#61;", "=")
        .replace("&amp;", "&")
}

#[test]
fn two_factor_over_http_needs_the_password_to_begin_and_spends_every_code_once() {
    let upstream = FakeRegistry::start();
    let sluice = Sluice::start(&upstream, "", "");
    add_user(&sluice, "carol", "carol-password-1");
    add_user(&sluice, "bob", "bob-password-1");
    let url = sluice.url();
    let app = &sluice.server.as_ref().unwrap().app;
    let (runtime, client) = http_runtime();
    runtime.block_on(async {
        let enrolled = || sluice::api::admin::login_needs_second_factor(app, "carol");
        let pending = || app.auth.pending_two_factor("carol", "sluice");
        let (session, csrf) = http_session(&client, &url, "carol", "carol-password-1").await;
        let (bob_session, bob_csrf) = http_session(&client, &url, "bob", "bob-password-1").await;
        let post = |path: &str, cookie: &str, body: String| {
            client
                .post(format!("{url}-/ui/account/{path}"))
                .header("cookie", cookie.to_string())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        // Another session's token is not this one's.
        let status = post("2fa/begin", &session, format!("csrf={bob_csrf}&current=x"))
            .await
            .unwrap()
            .status();
        assert_eq!(status, 403);
        // A session alone (one left open, or stolen) cannot set up a second factor: that
        // needs the password, and a wrong one begins nothing.
        for body in [
            format!("csrf={csrf}"),
            format!("csrf={csrf}&current=carol-password-2"),
        ] {
            let status = post("2fa/begin", &session, body).await.unwrap().status();
            assert_eq!(status, 400);
            assert!(pending().await.unwrap().is_none());
        }
        let begun = post(
            "2fa/begin",
            &session,
            format!("csrf={csrf}&current=carol-password-1"),
        )
        .await
        .unwrap();
        assert_eq!(begun.status(), 303);
        assert!(pending().await.unwrap().is_some());
        let account = |cookie: String| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let answer = client
                    .get(format!("{url}-/ui/account"))
                    .header("cookie", cookie)
                    .send()
                    .await
                    .unwrap();
                answer.text().await.unwrap()
            }
        };
        let html = account(session.clone()).await;
        let uri = element_text(&html, "otpauth-uri");
        // Bob's session never sees carol's secret.
        assert!(!account(bob_session.clone()).await.contains(&uri));
        let mut authenticator = Authenticator::scan(&uri);
        let confirming = authenticator.code();
        let confirmed = post(
            "2fa/confirm",
            &session,
            format!("csrf={csrf}&otp={confirming}"),
        )
        .await
        .unwrap();
        assert_eq!(confirmed.status(), 200);
        let html = confirmed.text().await.unwrap();
        let recovery: Vec<String> = html
            .split("<li><code>")
            .skip(1)
            .map(|rest| rest.split('<').next().unwrap().to_string())
            .collect();
        assert_eq!(recovery.len(), 8, "{html}");
        assert!(enrolled().await.unwrap());

        // Turning it off needs a code: none, the confirming one again, a wrong one.
        for otp in [
            String::new(),
            confirming.clone(),
            authenticator.wrong_code(),
        ] {
            let off = post("2fa/disable", &session, format!("csrf={csrf}&otp={otp}"))
                .await
                .unwrap();
            assert_eq!(off.status(), 400, "otp {otp:?}");
            assert!(enrolled().await.unwrap(), "turned off with {otp:?}");
        }

        // npm's legacy login without a code gets no token, whatever the password.
        let legacy = |otp: Option<String>| {
            let mut request = client
                .put(format!("{url}-/user/org.couchdb.user:carol"))
                .json(&json!({"name": "carol", "password": "carol-password-1"}));
            if let Some(otp) = otp {
                request = request.header("npm-otp", otp);
            }
            request.send()
        };
        let asked = legacy(None).await.unwrap();
        assert_eq!(asked.status(), 401);
        assert!(asked.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("OTP"));
        assert!(asked.json::<Value>().await.unwrap()["token"].is_null());
        // A recovery code works once: for the login, then not to turn it off.
        let once = legacy(Some(recovery[0].clone())).await.unwrap();
        assert_eq!(once.status(), 201);
        let again = legacy(Some(recovery[0].clone())).await.unwrap();
        assert_eq!(again.status(), 401);
        let off = post(
            "2fa/disable",
            &session,
            format!("csrf={csrf}&otp={}", recovery[0]),
        )
        .await
        .unwrap();
        assert_eq!(off.status(), 400);
        assert!(enrolled().await.unwrap());
        let off = post(
            "2fa/disable",
            &session,
            format!("csrf={csrf}&otp={}", recovery[1]),
        )
        .await
        .unwrap();
        assert_eq!(off.status(), 303);
        assert!(!enrolled().await.unwrap());
    });
}
