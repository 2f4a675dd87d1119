//! A symlink farm shared by the integration tests: a root with links of
//! every kind pointing inside and outside it, next to an `outside` directory
//! holding a secret.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic
)] // test code

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use palisade_fs::{Resolver, SafeRoot, SymlinkPolicy};

pub(crate) const SECRET: &[u8] = b"TOP SECRET";

/// Whether this kernel has `openat2(2)`, probed once on a temporary
/// directory with a system call of our own (not the crate's detection):
/// where it has, a root that cannot use the kernel resolver fails the tests
/// instead of dropping that resolver from them.
pub(crate) fn kernel_has_openat2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::{Mode, OFlags, ResolveFlags};
            let dir = tempfile::tempdir().unwrap();
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = rustix::fs::open(dir.path(), flags, Mode::empty()).unwrap();
            match rustix::fs::openat2(&fd, ".", flags, Mode::empty(), ResolveFlags::BENEATH) {
                Ok(_) => true,
                Err(rustix::io::Errno::NOSYS) => false,
                Err(e) => panic!("openat2 probe: {e}"),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        false
    })
}

pub(crate) struct Farm {
    _tmp: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) outside: PathBuf,
    outside_listing: BTreeSet<PathBuf>,
}

/// Every file and directory under `dir`, not following links.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
            out.insert(entry.path());
        }
    }
    out
}

impl Farm {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(outside.join("dir")).unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        std::fs::write(outside.join("dir/file.txt"), SECRET).unwrap();
        std::fs::write(base.join("secret.txt"), SECRET).unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/file.txt"), b"inside").unwrap();
        std::fs::write(root.join("file.txt"), b"inside").unwrap();
        let abs_outside = outside.to_str().unwrap().to_owned();
        let links: &[(&str, String)] = &[
            ("rel_out", "../outside".into()),
            ("rel_out_file", "../outside/secret.txt".into()),
            ("abs_out", abs_outside.clone()),
            ("abs_out_file", format!("{abs_outside}/secret.txt")),
            ("abs_root", "/".into()),
            ("abs_etc", "/etc".into()),
            ("proc_root", "/proc/self/root".into()),
            ("proc_cwd", "/proc/self/cwd".into()),
            ("chain1", "chain2".into()),
            ("chain2", "chain3".into()),
            ("chain3", "../outside".into()),
            ("chain_in1", "chain_in2".into()),
            ("chain_in2", "sub".into()),
            ("parent", "..".into()),
            ("grandparent", "../..".into()),
            ("dot", ".".into()),
            ("dotdot_in_sub", "sub/../..".into()),
            ("inside_file", "sub/file.txt".into()),
            ("inside_dir", "sub".into()),
            ("inside_dir_slash", "sub/".into()),
            ("inside_via_dotdot", "sub/../sub/file.txt".into()),
            ("self_loop", "self_loop".into()),
            ("loop_a", "loop_b".into()),
            ("loop_b", "loop_a".into()),
            ("final_link", "../outside/dir/".into()),
            ("final_link_file", "../outside/dir/file.txt/".into()),
            ("dangling", "does-not-exist".into()),
            ("sub/up", "..".into()),
            ("sub/up2", "../..".into()),
            ("sub/deeper/up3", "../../..".into()),
            ("sub/deeper/root_file", "../../file.txt".into()),
            ("sub/abs", format!("{abs_outside}/dir")),
        ];
        for (name, target) in links {
            symlink(target, root.join(name)).unwrap();
        }
        let outside_listing = listing(&base.join("outside"));
        Self {
            _tmp: tmp,
            root,
            outside,
            outside_listing,
        }
    }

    /// Names of the links, and paths through them, to try every operation on.
    pub(crate) fn probes() -> Vec<String> {
        let names = [
            "rel_out",
            "rel_out_file",
            "abs_out",
            "abs_out_file",
            "abs_root",
            "abs_etc",
            "proc_root",
            "proc_cwd",
            "chain1",
            "chain2",
            "chain3",
            "chain_in1",
            "chain_in2",
            "parent",
            "grandparent",
            "dot",
            "dotdot_in_sub",
            "inside_file",
            "inside_dir",
            "inside_dir_slash",
            "inside_via_dotdot",
            "self_loop",
            "loop_a",
            "final_link",
            "final_link_file",
            "dangling",
            "sub/up",
            "sub/up2",
            "sub/deeper/up3",
            "sub/deeper/root_file",
            "sub/abs",
        ];
        let suffixes = [
            "",
            "/secret.txt",
            "/file.txt",
            "/dir/file.txt",
            "/outside/secret.txt",
            "/root/file.txt",
            "/sub/file.txt",
            "/etc/passwd",
            "/new.txt",
            "/up/file.txt",
            "/up2/outside/secret.txt",
        ];
        let mut probes = Vec::new();
        for name in names {
            for suffix in suffixes {
                probes.push(format!("{name}{suffix}"));
            }
        }
        probes
    }

    /// The four configurations: kernel and walk, symlinks denied and followed.
    /// Without openat2 (old kernel, other OS) the kernel ones are left out.
    pub(crate) fn roots(&self) -> Vec<(&'static str, SafeRoot)> {
        let mut roots = Vec::new();
        for (name, resolver, policy) in [
            ("kernel/deny", Resolver::Kernel, SymlinkPolicy::Deny),
            (
                "kernel/follow",
                Resolver::Kernel,
                SymlinkPolicy::FollowBeneath,
            ),
            ("walk/deny", Resolver::Walk, SymlinkPolicy::Deny),
            ("walk/follow", Resolver::Walk, SymlinkPolicy::FollowBeneath),
        ] {
            match SafeRoot::builder(&self.root)
                .resolver(resolver)
                .symlinks(policy)
                .open()
            {
                Ok(root) => {
                    assert_eq!(
                        root.kernel_confinement(),
                        resolver == Resolver::Kernel,
                        "{name}"
                    );
                    roots.push((name, root));
                }
                // A skip only where the kernel really lacks openat2.
                Err(palisade_fs::FsError::Unsupported) if !kernel_has_openat2() => {}
                Err(e) => panic!("{name}: {e} (this kernel has openat2)"),
            }
        }
        assert_eq!(roots.len(), if kernel_has_openat2() { 4 } else { 2 });
        roots
    }

    /// Panics unless `file` is inside the root.
    pub(crate) fn assert_inside(&self, file: &File, what: &str) {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().unwrap();
        for secret in [
            self.outside.join("secret.txt"),
            self.outside.join("dir/file.txt"),
        ] {
            let s = std::fs::metadata(secret).unwrap();
            assert!(
                !(meta.ino() == s.ino() && meta.dev() == s.dev()),
                "{what}: opened a file outside the root"
            );
        }
        if let Ok(real) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
            assert!(
                real.starts_with(&self.root),
                "{what}: resolved to {}, outside the root",
                real.display()
            );
        }
    }

    /// Panics if anything outside the root was created, removed or changed.
    pub(crate) fn assert_outside_untouched(&self) {
        assert_eq!(
            listing(&self.outside),
            self.outside_listing,
            "outside was modified"
        );
        assert_eq!(
            std::fs::read(self.outside.join("secret.txt")).unwrap(),
            SECRET
        );
        assert_eq!(
            std::fs::read(self.outside.join("dir/file.txt")).unwrap(),
            SECRET
        );
    }
}
