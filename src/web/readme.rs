//! READMEs: Markdown rendered with pulldown-cmark, then sanitized with ammonia, so no script,
//! event handler, style or `javascript:` link of a package's author reaches the page.

use std::collections::HashSet;

use pulldown_cmark::{html, Options, Parser};

/// How much of a README is rendered (some are megabytes of generated docs).
const LARGEST: usize = 512 << 10;

/// `markdown` as safe HTML.
pub fn render(markdown: &str) -> String {
    let markdown = match markdown.char_indices().nth(LARGEST) {
        Some((at, _)) => &markdown[..at],
        None => markdown,
    };
    let mut options = Options::empty();
    options.insert(Options::ENABLE_TABLES);
    options.insert(Options::ENABLE_STRIKETHROUGH);
    options.insert(Options::ENABLE_TASKLISTS);
    let mut unsafe_html = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut unsafe_html, Parser::new_ext(markdown, options));
    demote_headings(&sanitize(&unsafe_html))
}

/// Every heading one level down (`h1` → `h2` … `h5` → `h6`): the page has one `h1`, the
/// package's name. Safe on sanitized HTML, which html5ever wrote out: a tag is `<hN>` or
/// `<hN attr…>`, and text never holds a raw `<`.
fn demote_headings(html: &str) -> String {
    let mut out = html.to_string();
    for level in (1..=5).rev() {
        let lower = level + 1;
        out = out
            .replace(&format!("<h{level}>"), &format!("<h{lower}>"))
            .replace(&format!("<h{level} "), &format!("<h{lower} "))
            .replace(&format!("</h{level}>"), &format!("</h{lower}>"));
    }
    out
}

/// Keep only markup that cannot run anything: ammonia's allow-list (no `script`, `style`,
/// `iframe`, `on*` attribute or `style` attribute), links only to http, https and mailto,
/// each with `rel="noopener noreferrer nofollow"`.
pub fn sanitize(html: &str) -> String {
    let schemes: HashSet<&str> = ["http", "https", "mailto"].into_iter().collect();
    ammonia::Builder::default()
        .url_schemes(schemes)
        .link_rel(Some("noopener noreferrer nofollow"))
        .clean(html)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_handlers_and_javascript_links_do_not_survive() {
        let out = render(
            "# Hi\n\n<script>alert(1)</script>\n\n<img src=x onerror=\"alert(2)\">\n\n\
             [click](javascript:alert(3)) <a href=\"JaVaScRiPt:alert(4)\">x</a>\n\n\
             <div style=\"background:url(x)\" onclick=\"alert(5)\">text</div>",
        );
        assert!(!out.contains("<script"), "{out}");
        assert!(!out.to_lowercase().contains("javascript:"), "{out}");
        assert!(
            !out.contains("onerror") && !out.contains("onclick"),
            "{out}"
        );
        assert!(!out.contains("style="), "{out}");
        assert!(out.contains("<h2>Hi</h2>") && out.contains("text"), "{out}");
        assert!(!render("<h1 align=\"center\">x</h1>\n\n## y").contains("<h1"));
    }
}
