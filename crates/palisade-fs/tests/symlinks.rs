//! A symlink farm inside the root (relative, absolute, chained, parent-pointing,
//! looping, final links with trailing slashes, /proc magic links) never yields a
//! handle outside it, with either resolver and either policy; and random paths
//! that pass the rules always resolve inside the root.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::Farm;
use palisade_fs::root::EntryKind;
use palisade_fs::{FsError, PathRejection, PathRules, SafeRoot, SymlinkPolicy};
use proptest::prelude::*;

fn outcome<T>(result: &Result<T, FsError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(FsError::Io(e)) => format!("io({:?})", e.kind()),
        Err(e) => format!("{e:?}"),
    }
}

/// Every operation on `probe`: nothing may reach outside. Returns the
/// outcome of `open`.
fn exercise(farm: &Farm, config: &str, root: &SafeRoot, probe: &str) -> String {
    let rules = PathRules::new();
    let path = rules.parse(probe).unwrap();
    let opened = root.open(&path);
    if let Ok(file) = &opened {
        farm.assert_inside(file, &format!("{config} open {probe}"));
        let mut content = Vec::new();
        file.try_clone().unwrap().read_to_end(&mut content).unwrap();
        assert_ne!(content, common::SECRET, "{config} {probe}");
    }
    let result = outcome(&opened);

    let _ = root.metadata(&path);
    if let Ok(entries) = root.list(Some(&path)) {
        assert!(
            entries.iter().all(|e| e.path.file_name() != "secret.txt"),
            "{config} listed outside through {probe}"
        );
    }
    if let Ok(sub) = root.sub_root(&path, false) {
        for entry in sub.list(None).unwrap() {
            assert_ne!(
                entry.path.file_name(),
                "secret.txt",
                "{config} sub_root {probe}"
            );
        }
        if let Ok(file) = sub.open(&rules.parse("file.txt").unwrap()) {
            farm.assert_inside(&file, &format!("{config} sub_root {probe}"));
        }
    }
    let new = rules.parse(&format!("{probe}/created.txt")).unwrap();
    if let Ok(mut file) = root.create_new(&new) {
        farm.assert_inside(&file, &format!("{config} create {probe}"));
        file.write_all(b"x").unwrap();
        root.remove_file(&new).unwrap();
    }
    if root.write_atomic(&new, b"y", false).is_ok() {
        let file = root.open(&new).unwrap();
        farm.assert_inside(&file, &format!("{config} write {probe}"));
        root.remove_file(&new).unwrap();
    }
    let _ = root.create_dir(&new);
    let _ = root.remove_dir(&new);
    result
}

#[test]
fn farm_never_yields_a_handle_outside_the_root() {
    let farm = Farm::new();
    let mut outcomes: BTreeMap<(String, &str), String> = BTreeMap::new();
    for (config, root) in farm.roots() {
        for probe in Farm::probes() {
            outcomes.insert(
                (probe.clone(), config),
                exercise(&farm, config, &root, &probe),
            );
            farm.assert_outside_untouched();
        }
    }

    // The kernel and the walk agree on every probe.
    for probe in Farm::probes() {
        for (kernel, walk) in [
            ("kernel/deny", "walk/deny"),
            ("kernel/follow", "walk/follow"),
        ] {
            if let Some(k) = outcomes.get(&(probe.clone(), kernel)) {
                assert_eq!(
                    k,
                    &outcomes[&(probe.clone(), walk)],
                    "{probe}: {kernel} vs {walk}"
                );
            }
        }
    }
    // Deny refuses every link; FollowBeneath follows those that stay inside.
    for probe in [
        "inside_file",
        "inside_via_dotdot",
        "inside_dir/file.txt",
        "chain_in1/file.txt",
        "sub/up/file.txt",
        "sub/deeper/root_file",
        "sub/up/sub/file.txt",
        "inside_dir_slash/file.txt",
    ] {
        assert_eq!(
            outcomes[&(probe.to_owned(), "walk/follow")],
            "ok",
            "{probe}"
        );
        assert_eq!(
            outcomes[&(probe.to_owned(), "walk/deny")],
            "Symlink",
            "{probe}"
        );
    }
    for probe in [
        "rel_out/secret.txt",
        "abs_out_file",
        "chain1/secret.txt",
        "parent/outside/secret.txt",
        "grandparent",
        "dotdot_in_sub",
        "proc_root/etc/passwd",
        "sub/up2/outside/secret.txt",
        "sub/deeper/up3",
        "final_link",
        "final_link_file",
        "abs_etc/etc/passwd",
    ] {
        assert_eq!(
            outcomes[&(probe.to_owned(), "walk/follow")],
            "Escape",
            "{probe}"
        );
        assert_eq!(
            outcomes[&(probe.to_owned(), "walk/deny")],
            "Symlink",
            "{probe}"
        );
    }
    assert_eq!(
        outcomes[&("self_loop".to_owned(), "walk/follow")],
        "Symlink"
    );
    assert_eq!(outcomes[&("loop_a".to_owned(), "walk/follow")], "Symlink");
}

#[test]
fn trailing_slash_after_a_link_is_refused_by_the_rules() {
    let rules = PathRules::new();
    for probe in [
        "final_link/",
        "inside_dir/",
        "rel_out/",
        "sub/up/",
        "final_link//",
        "final_link/.",
    ] {
        assert!(
            matches!(
                rules.parse(probe),
                Err(PathRejection::TrailingSlash
                    | PathRejection::EmptyComponent
                    | PathRejection::DotSegment)
            ),
            "{probe}"
        );
    }
}

#[test]
fn removing_a_link_removes_the_link_not_its_target() {
    let farm = Farm::new();
    let rules = PathRules::new();
    for (_, root) in farm.roots() {
        for name in [
            "rel_out_file",
            "abs_out_file",
            "final_link",
            "rel_out",
            "dangling",
        ] {
            let path = rules.parse(name).unwrap();
            let _ = root.remove_file(&path);
            let _ = root.remove_dir(&path);
        }
    }
    farm.assert_outside_untouched();
    assert!(!farm.root.join("rel_out_file").exists());
}

#[test]
fn listings_show_links_without_following_them() {
    let farm = Farm::new();
    let root = SafeRoot::builder(&farm.root)
        .symlinks(SymlinkPolicy::FollowBeneath)
        .open()
        .unwrap();
    let entries = root.list(None).unwrap();
    let rel_out = entries
        .iter()
        .find(|e| e.path.as_str() == "rel_out")
        .unwrap();
    assert_eq!(rel_out.kind, EntryKind::Symlink);
    let files: Vec<String> = root
        .list_files(1000)
        .unwrap()
        .into_iter()
        .map(|e| e.path.to_string())
        .collect();
    assert_eq!(files, ["file.txt", "sub/file.txt"]);
}

/// Tokens that make random paths rich in separators, dots, encodings,
/// device names, unicode look-alikes and the farm's link names.
const TOKENS: &[&str] = &[
    "a",
    "b",
    "file.txt",
    ".",
    "..",
    "...",
    "/",
    "//",
    "\\",
    "%",
    "%2e",
    "%2E",
    "%2f",
    "%5c",
    "%00",
    "%0a",
    "%25",
    "%252e",
    "%c0%ae",
    "%c0%af",
    "%e2%88%95",
    "%ef%bc%8f",
    "%ef%bc%8e",
    "%e2%80%ae",
    ":",
    "c:",
    "\0",
    "\u{FF0F}",
    "\u{2215}",
    "\u{FF0E}",
    "\u{2025}",
    "CON",
    "com\u{b9}",
    "nul.txt",
    "LPT3",
    " ",
    "~",
    "$",
    "rel_out",
    "abs_out",
    "parent",
    "grandparent",
    "sub",
    "up",
    "up2",
    "inside_dir",
    "final_link",
    "chain1",
    "dotdot_in_sub",
    "outside",
    "secret.txt",
    "proc_root",
];

fn random_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 1..10).prop_map(|t| t.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn accepted_paths_always_resolve_inside_the_root(raw in random_path()) {
        thread_local! { static FARM: Farm = Farm::new(); }
        FARM.with(|farm| {
            let Ok(path) = PathRules::new().parse_encoded(&raw) else { return Ok(()) };
            prop_assert!(path.components().all(|c| c != "." && c != ".." && !c.is_empty()));
            for (config, root) in farm.roots() {
                if let Ok(file) = root.open(&path) {
                    farm.assert_inside(&file, &format!("{config} {raw:?}"));
                }
                if let Some(parent) = path.parent() {
                    let _ = root.create_dir_all(&parent);
                }
                if root.write_atomic(&path, b"p", true).is_ok() {
                    let file = root.open(&path).unwrap();
                    farm.assert_inside(&file, &format!("{config} write {raw:?}"));
                }
                let _ = root.remove_file(&path);
            }
            farm.assert_outside_untouched();
            Ok(())
        })?;
    }
}
