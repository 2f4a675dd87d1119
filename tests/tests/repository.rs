//! The repository documents itself: no document, crate doc, manifest or
//! test points into the project's private `shared` folder, which a clone
//! does not have. The reference backend's contract is
//! `examples/reference-backend/API.md`.
#![allow(clippy::unwrap_used, clippy::panic)] // test code: a failed step is a failed test

use std::path::{Path, PathBuf};

/// The one file allowed to name the folder: `scripts/test` looks for the
/// offline advisory-db snapshot beside the repository, and fetches the live
/// database when there is none.
const ALLOWED: [&str; 1] = ["scripts/test"];

fn files(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = path.strip_prefix(root).unwrap();
        // Build trees, git's store, and what the binaries write when run
        // from the root (all ignored by git).
        if ["target", ".git"]
            .iter()
            .any(|n| path.file_name().is_some_and(|f| f == *n))
            || relative == Path::new("data")
        {
            continue;
        }
        if path.is_dir() {
            files(&path, root, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn nothing_in_the_repository_refers_to_the_private_shared_folder() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut all = Vec::new();
    files(root, root, &mut all);
    assert!(all.len() > 50, "the walk found {} files", all.len());
    // Written in two pieces so that this file does not match itself.
    let needle = ["shared", "/"].concat();
    let mut offenders = Vec::new();
    for path in &all {
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if ALLOWED.contains(&relative.as_str()) {
            continue;
        }
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            if line.contains(&needle) {
                offenders.push(format!("{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "point these at examples/reference-backend/API.md (or the repository's own docs):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_contract_is_in_the_repository_and_linked_from_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let contract = std::fs::read_to_string(root.join("examples/reference-backend/API.md")).unwrap();
    for section in [
        "## Settings",
        "## Endpoints",
        "## Default limits",
        "## Logs",
    ] {
        assert!(contract.contains(section), "API.md has no {section}");
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(readme.contains("(examples/reference-backend/API.md)"));
    assert!(readme.contains("## Start your service from this template"));
}

/// Every setting the backend reads (a field of `Raw` in `settings.rs`) is
/// documented in API.md as `APP_<NAME>`.
#[test]
fn api_md_documents_every_setting_the_backend_reads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let settings =
        std::fs::read_to_string(root.join("examples/reference-backend/src/settings.rs")).unwrap();
    let contract = std::fs::read_to_string(root.join("examples/reference-backend/API.md")).unwrap();
    let body = settings
        .split_once("struct Raw {")
        .and_then(|(_, rest)| rest.split_once("\n}"))
        .map_or_else(
            || panic!("no `struct Raw` in settings.rs"),
            |(body, _)| body,
        );
    let fields: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(|name| format!("`APP_{}`", name.to_ascii_uppercase()))
        .collect();
    assert!(fields.len() >= 10, "found only {fields:?}");
    let missing: Vec<&String> = fields
        .iter()
        .filter(|f| !contract.contains(f.as_str()))
        .collect();
    assert!(missing.is_empty(), "API.md does not document {missing:?}");
}
