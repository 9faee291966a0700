//! Architecture rules, checked mechanically on the source files under src/ (in the spirit of
//! rust-analyzer's tidy tests): each failure names the offending file and line.
//!
//! What is read is code only: comments (line, block, doc) and the contents of string, byte
//! string, raw string and character literals are blanked first, so a doc comment or an error
//! message may mention anything. A module's imports are the paths `crate::X…` (also in groups,
//! `crate::{X, Y::…}`) and `super::…` chains that climb to the crate root; `X` is then the
//! top-level module (src/X.rs or src/X/), and lib.rs and main.rs belong to none.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// One source file: its path from the package root ("src/core/mod.rs"), its module path
/// (["core"] for src/core/mod.rs) and its code with comments and literals blanked.
struct Source {
    path: String,
    module: Vec<String>,
    code: String,
}

impl Source {
    /// The top-level module it belongs to (none for lib.rs and main.rs).
    fn top(&self) -> Option<&str> {
        self.module.first().map(String::as_str)
    }

    fn under(&self, dir: &str) -> bool {
        self.path.starts_with(dir)
    }
}

/// Where a rule is broken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Witness {
    path: String,
    line: usize,
    text: String,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.text)
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every .rs file under src/, sorted by path.
fn sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    collect(&root.join("src"), &mut files);
    files.sort();
    assert!(
        files.len() > 10,
        "no sources found under {}",
        root.display()
    );
    files
        .into_iter()
        .map(|file| {
            let path = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&file).unwrap();
            Source {
                module: module_of(&path),
                code: code_only(&text),
                path,
            }
        })
        .collect()
}

/// The module path of a file: src/a/b.rs is a::b, src/a/mod.rs and src/a.rs are a, src/lib.rs
/// and src/main.rs the root.
fn module_of(path: &str) -> Vec<String> {
    let rest = path.strip_prefix("src/").unwrap_or(path);
    let rest = rest.strip_suffix(".rs").unwrap_or(rest);
    let mut parts: Vec<String> = rest.split('/').map(str::to_string).collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `text` with every comment and the contents of every literal replaced by spaces (line breaks
/// kept, so line numbers stay right).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: up to the quote followed by as many hashes.
            let open = chars[i..].iter().position(|&c| c == '"').unwrap_or(0) + 1;
            out.extend(std::iter::repeat_n(' ', open));
            i += open;
            while i < chars.len() {
                if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
                    out.extend(std::iter::repeat_n(' ', hashes + 1));
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' || (c == 'b' && next == Some('"') && !ident_char_before(&chars, i)) {
            let start = if c == 'b' { 2 } else { 1 };
            out.extend(std::iter::repeat_n(' ', start));
            i += start;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && is_char_literal(&chars, i) {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident_char_before(chars: &[char], i: usize) -> bool {
    i > 0 && is_ident_char(chars[i - 1])
}

/// The number of hashes of a raw string starting at `i` (`r"`, `r#"`, `br##"`…).
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if ident_char_before(chars, i) {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// Whether the quote at `i` opens a character literal ('x', '\n', b'x'), not a lifetime ('a).
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

/// Every place in `sources` where `token` occurs as code, not glued to an identifier on either
/// side where the token itself starts or ends with one.
fn find(sources: &[&Source], token: &str) -> Vec<Witness> {
    let starts_ident = token.chars().next().is_some_and(is_ident_char);
    let ends_ident = token.chars().last().is_some_and(is_ident_char);
    let mut hits = Vec::new();
    for source in sources {
        for (n, line) in source.code.lines().enumerate() {
            for (at, _) in line.match_indices(token) {
                let before = line[..at].chars().next_back();
                let after = line[at + token.len()..].chars().next();
                if (starts_ident && before.is_some_and(is_ident_char))
                    || (ends_ident && after.is_some_and(is_ident_char))
                {
                    continue;
                }
                hits.push(Witness {
                    path: source.path.clone(),
                    line: n + 1,
                    text: line.trim().to_string(),
                });
            }
        }
    }
    hits
}

/// Fail listing every witness, if there are any.
fn assert_none(rule: &str, witnesses: &[Witness]) {
    if !witnesses.is_empty() {
        let list: Vec<String> = witnesses.iter().map(|w| format!("  {w}")).collect();
        panic!("{rule}:\n{}", list.join("\n"));
    }
}

fn leading_ident(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident_char(c)).unwrap_or(s.len());
    &s[..end]
}

/// The top-level modules named by a group `{…}` at the start of `rest`: the first identifier of
/// each item at the group's own depth.
fn group_heads(rest: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    let mut i = 0;
    let bytes = rest.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b'{' => {
                depth += 1;
                item_start = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => item_start = true,
            c if item_start && depth == 1 && is_ident_char(c as char) => {
                let name = leading_ident(&rest[i..]);
                heads.push(name.to_string());
                i += name.len();
                item_start = false;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The imports of one file: (top-level module named, witness), other than its own module.
fn imports(source: &Source) -> Vec<(String, Witness)> {
    let code = &source.code;
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let witness = |at: usize| {
        let line = line_of(at);
        Witness {
            path: source.path.clone(),
            line,
            text: code.lines().nth(line - 1).unwrap_or("").trim().to_string(),
        }
    };
    let mut found = Vec::new();
    let mut push = |name: &str, at: usize| {
        if !name.is_empty() && Some(name) != source.top() && name != "self" {
            found.push((name.to_string(), witness(at)));
        }
    };
    for (at, _) in code.match_indices("crate::") {
        if code[..at].chars().next_back().is_some_and(is_ident_char) {
            continue;
        }
        let rest = &code[at + "crate::".len()..];
        if rest.starts_with('{') {
            for head in group_heads(rest) {
                push(&head, at);
            }
        } else {
            push(leading_ident(rest), at);
        }
    }
    // `super::super::x` in src/a/b.rs climbs to the root: x is a top-level module.
    for (at, _) in code.match_indices("super::") {
        if code[..at].chars().next_back().is_some_and(is_ident_char)
            || code[..at].ends_with("super::")
        {
            continue;
        }
        let mut rest = &code[at..];
        let mut climbs = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = after;
        }
        if climbs >= source.module.len() {
            push(leading_ident(rest), at);
        }
    }
    found
}

/// The import graph of the top-level modules: for each edge, its first witness.
type Graph = BTreeMap<String, BTreeMap<String, Witness>>;

fn graph(sources: &[Source]) -> Graph {
    let mut graph = Graph::new();
    for source in sources {
        let Some(top) = source.top() else { continue };
        let edges = graph.entry(top.to_string()).or_default();
        for (to, witness) in imports(source) {
            edges.entry(to).or_insert(witness);
        }
    }
    graph
}

/// One cycle per strongly connected component of more than one module, as the modules in
/// order (the last imports the first).
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph
        .keys()
        .chain(graph.values().flat_map(BTreeMap::keys))
        .collect();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for node in &nodes {
        if done.contains(*node) || !reaches[node].contains(*node) {
            continue;
        }
        let component: BTreeSet<String> = nodes
            .iter()
            .filter(|m| reaches[node].contains(**m) && reaches[*m].contains(*node))
            .map(|m| (*m).clone())
            .collect();
        done.extend(component.iter().cloned());
        out.push(path_back(graph, node, &component));
    }
    out
}

/// A shortest path from `start` back to itself within `component` (breadth first).
fn path_back(graph: &Graph, start: &String, component: &BTreeSet<String>) -> Vec<String> {
    let mut parent: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
            if !component.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![node.clone()];
                while let Some(p) = parent.get(path.last().unwrap()) {
                    path.push(p.clone());
                }
                path.reverse();
                return path;
            }
            if !parent.contains_key(next) {
                parent.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.clone()]
}

/// Each cycle written out with a witness for each of its edges.
fn describe(graph: &Graph, cycles: &[Vec<String>]) -> Vec<String> {
    cycles
        .iter()
        .map(|cycle| {
            let mut text = cycle.join(" → ") + " → " + &cycle[0];
            for (i, from) in cycle.iter().enumerate() {
                let to = &cycle[(i + 1) % cycle.len()];
                text += &format!("\n    {from} → {to}: {}", graph[from][to]);
            }
            text
        })
        .collect()
}

fn under<'a>(sources: &'a [Source], dir: &str) -> Vec<&'a Source> {
    sources.iter().filter(|s| s.under(dir)).collect()
}

/// (a) The core speaks no HTTP: no file under src/core/ names an HTTP library or its types
/// (`http::`, `pingora`, `hyper`, `reqwest`, `StatusCode`, `HeaderMap`, `HeaderValue`).
#[test]
fn the_core_names_no_http_library_or_type() {
    let sources = sources();
    let core = under(&sources, "src/core/");
    let mut hits = Vec::new();
    for token in [
        "http::",
        "pingora",
        "hyper",
        "reqwest",
        "StatusCode",
        "HeaderMap",
        "HeaderValue",
    ] {
        hits.extend(find(&core, token));
    }
    hits.sort();
    assert_none("src/core/ names an HTTP library or type", &hits);
}

/// (a) The core builds no HTTP answer: no `Response::error(` (a plugin answer with a status),
/// and no `u16` (the type HTTP statuses travel as in this crate; the core has no other use
/// for it).
#[test]

fn the_core_builds_no_http_answer_or_status() {
    let sources = sources();
    let core = under(&sources, "src/core/");
    let mut hits = find(&core, "Response::error(");
    hits.extend(find(&core, "u16"));
    hits.sort();
    assert_none("src/core/ builds an HTTP answer or status", &hits);
}

/// What src/observe/ may import of the crate: the store (its operation counters and clock),
/// the configuration and the process's memory figures. Everything else, the core above all,
/// reaches it as plain values through the app.
const OBSERVE_MAY_IMPORT: [&str; 3] = ["store", "config", "memory"];

/// (b) src/observe/ imports nothing of `crate::core`, and only what [`OBSERVE_MAY_IMPORT`]
/// lists.
#[test]
fn observe_imports_only_what_it_may() {
    let sources = sources();
    let mut hits: Vec<Witness> = under(&sources, "src/observe/")
        .into_iter()
        .flat_map(imports)
        .filter(|(to, _)| !OBSERVE_MAY_IMPORT.contains(&to.as_str()))
        .map(|(_, witness)| witness)
        .collect();
    hits.sort();
    assert_none(
        &format!(
            "src/observe/ imports a module other than {}",
            OBSERVE_MAY_IMPORT.join(", ")
        ),
        &hits,
    );
}

/// The connection layer imports nothing of the crate: the server and the front both build on
/// it, and it must not build on them.
#[test]
fn conn_imports_nothing_of_the_crate() {
    let sources = sources();
    let mut hits: Vec<Witness> = under(&sources, "src/conn/")
        .into_iter()
        .flat_map(imports)
        .map(|(_, witness)| witness)
        .collect();
    hits.sort();
    assert_none("src/conn/ imports a module of the crate", &hits);
}

/// (c) Only the store knows its cache's library: nothing outside src/store/ names `cacache`.
#[test]
fn nothing_outside_the_store_names_cacache() {
    let sources = sources();
    let outside: Vec<&Source> = sources.iter().filter(|s| !s.under("src/store/")).collect();
    assert_none(
        "`cacache` is named outside src/store/",
        &find(&outside, "cacache"),
    );
}

/// (d) The top-level modules of src/ import each other without a cycle.
#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph(&sources());
    assert!(graph.contains_key("core") && graph.contains_key("server"));
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between top-level modules:\n  {}",
        describe(&graph, &found).join("\n  ")
    );
}

fn source(path: &str, text: &str) -> Source {
    Source {
        path: path.to_string(),
        module: module_of(path),
        code: code_only(text),
    }
}

/// The checks' own parts, on made-up sources: the cycle the server and the front had (before
/// src/conn/) is found and shown with its witnesses, and comments, strings and groups are read
/// as they should be.
#[test]
fn the_checks_find_what_they_look_for() {
    let sources = [
        source(
            "src/proxy/mod.rs",
            "//! Uses crate::jobs in a comment.\nuse crate::app::App;\nuse crate::server::deadline::Guarded;\n",
        ),
        source(
            "src/server/mod.rs",
            "use crate::{\n    app::App,\n    proxy::{self, Proxy},\n};\nconst S: &str = \"crate::jobs\";\n",
        ),
        source("src/app.rs", "fn f() -> char { '\"' }\nuse crate::store;\n"),
        source("src/store/disk.rs", "use super::super::config::Config;\n"),
    ];
    let graph = graph(&sources);
    let edges = |from: &str| graph[from].keys().cloned().collect::<Vec<_>>();
    assert_eq!(edges("proxy"), ["app", "server"]);
    assert_eq!(edges("server"), ["app", "proxy"]);
    assert_eq!(edges("app"), ["store"]);
    assert_eq!(edges("store"), ["config"]);
    let found = cycles(&graph);
    assert_eq!(found, [vec!["proxy".to_string(), "server".to_string()]]);
    let text = describe(&graph, &found).join("\n");
    assert!(
        text.contains("proxy → server: src/proxy/mod.rs:3:"),
        "{text}"
    );
    assert!(
        text.contains("server → proxy: src/server/mod.rs:1:"),
        "{text}"
    );

    let refs: Vec<&Source> = sources.iter().collect();
    assert!(
        find(&refs, "jobs").is_empty(),
        "comments and strings are code"
    );
    let hit = &find(&refs, "Guarded")[0];
    assert_eq!((hit.path.as_str(), hit.line), ("src/proxy/mod.rs", 3));
    assert!(
        find(&refs, "Guard").is_empty(),
        "a token glued to a word is not the token"
    );
    let code =
        code_only("let s = r#\"a \"quoted\" crate::x\"#; // crate::y\nb'\\''; x /* a /* b */ c */");
    assert!(
        !code.contains("crate::") && !code.contains("quoted"),
        "{code}"
    );
    assert!(
        code.starts_with("let s = ") && code.contains("; x"),
        "{code}"
    );
    assert!(
        !code.contains(['*', '\'']),
        "nested comments and char literals: {code}"
    );
    assert_eq!(code.lines().count(), 2);
}
