//! The layers of `src/` (README, "How the code is laid out"): arrows point down only. This
//! reads every source file and fails on a `crate::…` path (a `use` or an inline path, outside
//! comments) that reaches a module its layer may not know.

use std::path::{Path, PathBuf};

/// Each layer (a top-level module of `src/`, a folder or a file) and what it may not reach.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // Protocol code: no handlers, pages, admin API, CLI operations or router.
    (
        "oauth",
        &[
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    // Storage: plain records and SQL; nothing of the protocol or of what is built on it.
    (
        "store",
        &[
            "oauth",
            "config",
            "keys",
            "audit",
            "metrics",
            "error",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    // The ground floor and infrastructure under the protocol.
    (
        "config",
        &[
            "oauth",
            "keys",
            "audit",
            "error",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    (
        "util",
        &[
            "oauth",
            "store",
            "config",
            "keys",
            "audit",
            "error",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    (
        "error",
        &[
            "oauth",
            "audit",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    (
        "metrics",
        &[
            "oauth",
            "store",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    (
        "audit",
        &[
            "oauth",
            "keys",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    (
        "keys",
        &[
            "oauth",
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    // Pages render; they decide nothing and know no handler.
    (
        "ui",
        &[
            "startup",
            "router",
            "endpoints",
            "admin",
            "manage",
            "state",
            "http",
        ],
    ),
    // The admin API and the operations it shares with the CLI reach protocol decisions only
    // through `oauth`.
    ("admin", &["startup", "router", "endpoints", "ui"]),
    (
        "manage",
        &[
            "startup",
            "router",
            "endpoints",
            "ui",
            "admin",
            "state",
            "http",
        ],
    ),
    ("endpoints", &["startup", "router", "admin", "manage"]),
    (
        "state",
        &["startup", "router", "endpoints", "admin", "manage", "http"],
    ),
    (
        "http",
        &["startup", "router", "endpoints", "admin", "manage", "ui"],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/oauth/grants/x.rs` → `oauth`).
fn layer_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The modules a line of code names as `crate::<module>` (not `$crate::`, not in comments).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = &rest[..i];
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !before.ends_with('$') && !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

/// The modules a `use crate::{a, b::{c, d}}` group names (first segments of its top-level
/// items), for every such group in `text`, with the line it starts on.
fn grouped(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while let Some(i) = text[offset..].find("use crate::{") {
        let start = offset + i;
        let line = text[..start].matches('\n').count() + 1;
        let body = &text[start + "use crate::{".len()..];
        let (mut depth, mut item) = (0usize, String::new());
        for c in body.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.push((line, std::mem::take(&mut item)));
                    continue;
                }
                _ => {}
            }
            if depth == 0 || item.is_empty() {
                item.push(c);
            }
        }
        out.push((line, item));
        offset = start + 1;
    }
    out.into_iter()
        .filter_map(|(line, item)| {
            let name: String = item
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some((line, name))
        })
        .collect()
}

#[test]
fn arrows_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let layer = layer_of(&src, file);
        let Some((_, forbidden)) = FORBIDDEN.iter().find(|(l, _)| *l == layer) else {
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let mut named: Vec<(usize, String)> = grouped(&text);
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") {
                named.extend(crate_paths(line).into_iter().map(|m| (n + 1, m)));
            }
        }
        for (line, module) in named {
            if forbidden.contains(&module.as_str()) {
                wrong.push(format!(
                    "{}:{line}: {layer} may not use crate::{module}",
                    file.strip_prefix(&src).unwrap().display(),
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "arrows that run back up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_should() {
    assert_eq!(crate_paths("use crate::startup::AppState;"), ["startup"]);
    assert_eq!(crate_paths("    let x = crate::manage::f();"), ["manage"]);
    assert!(crate_paths("    $crate::store::x!()").is_empty());
    assert!(crate_paths("    f(); // see crate::router").is_empty());
    let names = |t: &str| grouped(t).into_iter().map(|(_, m)| m).collect::<Vec<_>>();
    assert_eq!(names("use crate::{router, ui::Web};"), ["router", "ui"]);
    assert_eq!(
        names("use crate::{\n    a::{b, c},\n    d,\n};"),
        ["a", "d"]
    );
}
