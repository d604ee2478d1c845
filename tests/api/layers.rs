//! The layers of `src/` (README, "How the code is laid out"): arrows point down only. This
//! reads every source file and fails on a `crate::…` path (a `use` or an inline path, outside
//! comments) that reaches a module its layer may not know.

use std::path::{Path, PathBuf};

/// The floors of `src/`, from the ground up; each is a list of top-level modules (a folder
/// or a file). A module may use only modules on lower floors, never one beside or above it.
/// `main.rs` and `lib.rs`, which assemble everything, stand above them all. A new module
/// must be given a floor here.
const FLOORS: &[&[&str]] = &[
    // Helpers that need nothing (`fuzz`: the property tests' inputs, test builds only).
    &["util", "fuzz"],
    // The request being served (for log lines); signed deliveries to operators' endpoints.
    &["request_id", "webhook"],
    // Plain records and their SQL.
    &["store"],
    &["config", "error"],
    &["metrics", "telemetry", "listener"],
    &["audit"],
    &["keys"],
    // Protocol: every decision, and nothing of HTTP, pages, the admin API or the CLI.
    &["oauth"],
    // Pages render and decide nothing; operations the admin API and the CLI share; export
    // and import.
    &["ui", "manage", "export"],
    &["state"],
    &["http"],
    // Handlers reach protocol decisions only through `oauth`.
    &["admin", "endpoints"],
    &["router"],
    &["startup"],
];

/// Above every floor.
const ASSEMBLY: &[&str] = &["main", "lib"];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&module))
}

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
        let shown = file.strip_prefix(&src).unwrap().display().to_string();
        if ASSEMBLY.contains(&layer.as_str()) {
            continue;
        }
        let Some(floor) = floor_of(&layer) else {
            wrong.push(format!("{shown}: module {layer} has no floor in FLOORS"));
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
            if module == layer {
                continue;
            }
            match floor_of(&module) {
                Some(f) if f < floor => {}
                _ => wrong.push(format!(
                    "{shown}:{line}: {layer} (floor {}) may not use crate::{module}",
                    floor + 1
                )),
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
