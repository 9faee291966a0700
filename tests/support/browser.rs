//! The console in a real browser: Debian's headless chromium driven over the DevTools protocol
//! (chromiumoxide), the steps a test takes on a page, and `review`, the checks every console
//! page must pass (one h1, labelled fields, keyboard reach, WCAG AA contrast) with a screenshot
//! of it under target/console-screenshots/.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chromiumoxide::cdp::browser_protocol::input::{DispatchKeyEventParams, DispatchKeyEventType};
use chromiumoxide::page::ScreenshotParams;
use chromiumoxide::{Browser, BrowserConfig, Page};
use futures::StreamExt;
use serde::Deserialize;

use super::cannot_run;

/// How long the browser gets for anything the test waits for (generous: CI machines are slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A headless chromium with its own fresh profile.
pub struct Chromium {
    browser: Browser,
    events: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

/// Debian's chromium, or `None` after saying the test cannot run.
pub fn chromium_path() -> Option<PathBuf> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        cannot_run("chromium is not installed (scripts/setup --tests installs it)");
    }
    found
}

impl Chromium {
    /// Start the browser at `executable`.
    pub async fn launch(executable: &Path) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let config = BrowserConfig::builder()
            .chrome_executable(executable)
            .user_data_dir(profile.path())
            .no_sandbox()
            .args([
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ])
            .launch_timeout(PATIENCE)
            .request_timeout(PATIENCE)
            .build()
            .unwrap();
        let (browser, mut handler) = Browser::launch(config).await.unwrap();
        // The connection's events must be read for any command to complete; an event the
        // crate cannot parse is no reason to stop reading.
        let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
        Chromium {
            browser,
            events,
            _profile: profile,
        }
    }

    /// A new blank tab.
    pub async fn page(&self) -> Page {
        self.browser.new_page("about:blank").await.unwrap()
    }

    /// Close the browser and wait for it to exit.
    pub async fn close(mut self) {
        let _ = self.browser.close().await;
        let _ = self.browser.wait().await;
        self.events.abort();
    }
}

/// Run `test` in a runtime with a browser (or say it cannot run).
pub fn with_browser<F, Fut>(test: F)
where
    F: FnOnce(Chromium) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(executable) = chromium_path() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let chromium = Chromium::launch(&executable).await;
        test(chromium).await;
    });
}

/// The value of the expression `js` in `page`.
pub async fn eval<T: serde::de::DeserializeOwned>(page: &Page, js: &str) -> T {
    page.evaluate(js)
        .await
        .unwrap_or_else(|e| panic!("{js}: {e}"))
        .into_value()
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Wait until the expression `js` is true in `page` (a page that is loading counts as not yet).
pub async fn until(page: &Page, js: &str) {
    let deadline = Instant::now() + PATIENCE;
    let check = format!("document.readyState === 'complete' && !!({js})");
    loop {
        if let Ok(result) = page.evaluate(check.as_str()).await {
            if result.into_value::<bool>().unwrap_or(false) {
                return;
            }
        }
        if Instant::now() > deadline {
            let url = page.url().await.ok().flatten().unwrap_or_default();
            let text: String = eval(page, "document.body ? document.body.innerText : ''").await;
            panic!("never true: {js}\nat {url}:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Go to `url` and wait for it to load.
pub async fn visit(page: &Page, url: &str) {
    page.goto(url).await.unwrap();
    until(page, "document.querySelector('h1')").await;
}

/// Click `selector` (a submit button) and wait for the next page, whose path starts with
/// `path`.
pub async fn submit(page: &Page, selector: &str, path: &str) {
    let before: String = eval(page, "String(performance.timeOrigin)").await;
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap();
    until(
        page,
        &format!(
            "String(performance.timeOrigin) !== {before:?} && location.pathname.startsWith({path:?}) \
             && document.querySelector('h1')"
        ),
    )
    .await;
}

/// Type `text` into the field `selector`.
pub async fn fill(page: &Page, selector: &str, text: &str) {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .click()
        .await
        .unwrap()
        .type_str(text)
        .await
        .unwrap();
}

/// The rendered text of the first element matching `selector`.
pub async fn text(page: &Page, selector: &str) -> String {
    page.find_element(selector)
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"))
        .inner_text()
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Save a screenshot of the whole page as target/console-screenshots/{name}.png, then check
/// what every console page must pass ([`check_accessibility`]).
pub async fn review(page: &Page, name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    page.save_screenshot(
        ScreenshotParams::builder().full_page(true).build(),
        dir.join(format!("{name}.png")),
    )
    .await
    .unwrap();
    check_accessibility(page, name).await;
}

/// What the page itself reports: its h1s, unlabelled fields, positive tabindexes, text below
/// WCAG AA contrast, and how many elements a keyboard must reach.
#[derive(Deserialize, Debug)]
struct Survey {
    h1s: u32,
    unlabelled: Vec<String>,
    positive_tabindex: Vec<String>,
    low_contrast: Vec<String>,
    interactive: usize,
}

/// Marks the page's interactive elements (`window.__a11y`, in document order) and reports on
/// it. Contrast is WCAG 2's: relative luminance of sRGB, (L1 + 0.05) / (L2 + 0.05), against
/// the element's effective background (its own and its ancestors' background colours
/// composited over the white canvas); 4.5:1, or 3:1 for large text (24px, or 18.66px bold).
const SURVEY: &str = r#"(() => {
  const rendered = e => e.getClientRects().length > 0 && getComputedStyle(e).visibility === 'visible';
  const show = e => e.outerHTML.slice(0, 160);
  const parse = c => {
    const m = /rgba?\(([^)]+)\)/.exec(c || '');
    if (!m) return null;
    const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(v => v.endsWith('%') ? parseFloat(v) / 100 : parseFloat(v));
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => {
    const a = top[3] + under[3] * (1 - top[3]);
    if (a === 0) return [0, 0, 0, 0];
    return [0, 1, 2].map(i => (top[i] * top[3] + under[i] * under[3] * (1 - top[3])) / a).concat([a]);
  };
  const background = e => {
    const layers = [];
    for (let n = e; n; n = n.parentElement) {
      const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let bg = [255, 255, 255, 1];
    for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
    return bg;
  };
  const luminance = c => {
    const [r, g, b] = c.slice(0, 3).map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  };
  const hex = c => '#' + c.slice(0, 3).map(v => Math.round(v).toString(16).padStart(2, '0')).join('');
  const low = [];
  const check = (e, color, what) => {
    const style = getComputedStyle(e);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    const bg = background(e);
    const fg = over(parse(color) || [0, 0, 0, 1], bg);
    const r = ratio(fg, bg);
    const need = large ? 3 : 4.5;
    if (r < need) low.push(`${what} ${hex(fg)} on ${hex(bg)}: ${r.toFixed(2)} < ${need} in ${show(e)}`);
  };
  for (const e of document.body.querySelectorAll('*')) {
    if (!rendered(e)) continue;
    const own = [...e.childNodes].some(n => n.nodeType === Node.TEXT_NODE && n.textContent.trim());
    if (own) check(e, getComputedStyle(e).color, 'text');
    if (e.matches('input:not([type=hidden]), textarea, select')) {
      if (e.value) check(e, getComputedStyle(e).color, 'value');
      if (e.placeholder) check(e, getComputedStyle(e, '::placeholder').color, 'placeholder');
    }
  }
  const fields = [...document.querySelectorAll('input:not([type=hidden]), select, textarea')];
  const interactive = [...document.querySelectorAll(
      'a[href], button, input:not([type=hidden]), select, textarea, summary, [contenteditable=""], [contenteditable=true], [tabindex]')]
    .filter(e => rendered(e) && !e.disabled && !(e.matches('[tabindex]') && e.tabIndex < 0 &&
      !e.matches('a[href], button, input, select, textarea, summary')));
  window.__a11y = interactive;
  return {
    h1s: document.querySelectorAll('h1').length,
    unlabelled: fields.filter(e => e.labels.length === 0 && !(e.getAttribute('aria-label') || '').trim()).map(show),
    positive_tabindex: [...document.querySelectorAll('[tabindex]')].filter(e => e.tabIndex > 0).map(show),
    low_contrast: low,
    interactive: interactive.length,
  };
})()"#;

/// Check what every console page must pass, failing the test with what is wrong
/// ([`accessibility_problems`]).
pub async fn check_accessibility(page: &Page, name: &str) {
    let problems = accessibility_problems(page).await;
    assert!(
        problems.is_empty(),
        "{name}: accessibility problems {problems:#?}"
    );
}

/// What keeps the page in `page` from being accessible: not exactly one `h1`; a field with no
/// label (`label[for]`, a wrapping label, or `aria-label`); a positive `tabindex`; text below
/// WCAG AA contrast ([`SURVEY`]); a link, button or field never reached by pressing Tab round
/// the page.
pub async fn accessibility_problems(page: &Page) -> Vec<String> {
    let survey: Survey = eval(page, SURVEY).await;
    let mut problems = Vec::new();
    if survey.h1s != 1 {
        problems.push(format!("{} h1 elements, not one", survey.h1s));
    }
    let listed = [
        ("no label", survey.unlabelled),
        ("a positive tabindex", survey.positive_tabindex),
        ("low contrast", survey.low_contrast),
        (
            "not reached by Tab",
            keyboard_walk(page, survey.interactive).await,
        ),
    ];
    for (what, found) in listed {
        problems.extend(found.into_iter().map(|f| format!("{what}: {f}")));
    }
    problems
}

/// Press Tab round the page from its start until focus comes back to where it first landed;
/// the interactive elements (`window.__a11y`) never focused on the way, as HTML.
async fn keyboard_walk(page: &Page, interactive: usize) -> Vec<String> {
    let _: bool = eval(
        page,
        "(() => { if (document.activeElement) document.activeElement.blur(); \
         window.__a11yReached = new Set(); return true; })()",
    )
    .await;
    // Focus may rest on the document between the last element and the first again: twice the
    // elements, and a few for the page's own stops, is always enough to go round once.
    let presses = 2 * interactive + 6;
    let mut first: Option<String> = None;
    for _ in 0..presses {
        press_tab(page).await;
        let at: String = eval(
            page,
            "(() => { const e = document.activeElement; \
             if (!e || e === document.body) return ''; \
             const i = window.__a11y.indexOf(e); window.__a11yReached.add(i); \
             return i >= 0 ? String(i) : e.outerHTML.slice(0, 160); })()",
        )
        .await;
        if at.is_empty() {
            continue;
        }
        match &first {
            Some(start) if *start == at => break,
            Some(_) => {}
            None => first = Some(at),
        }
    }
    eval(
        page,
        "window.__a11y.filter((e, i) => !window.__a11yReached.has(i) && \
         !(e.type === 'radio' && window.__a11y.some((o, j) => window.__a11yReached.has(j) && \
           o.type === 'radio' && o.name === e.name && o.form === e.form))) \
         .map(e => e.outerHTML.slice(0, 160))",
    )
    .await
}

/// One press of the Tab key, as a keyboard sends it.
async fn press_tab(page: &Page) {
    let key = |kind| {
        DispatchKeyEventParams::builder()
            .r#type(kind)
            .key("Tab")
            .code("Tab")
            .windows_virtual_key_code(9)
            .native_virtual_key_code(9)
            .build()
            .unwrap()
    };
    page.execute(key(DispatchKeyEventType::RawKeyDown))
        .await
        .unwrap();
    page.execute(key(DispatchKeyEventType::KeyUp))
        .await
        .unwrap();
}
