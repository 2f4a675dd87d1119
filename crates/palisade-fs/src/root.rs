//! [`SafeRoot`]: a directory handle that every operation resolves through.
//!
//! A `SafeRoot` holds an open file descriptor of its directory, never a path
//! string; every operation takes a [`SafePath`] (a path that passed the
//! [rules](crate::path)) and resolves it relative to that descriptor:
//!
//! - on Linux ≥ 5.6 with `openat2(2)` and `RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS` (plus `RESOLVE_NO_SYMLINKS` under
//!   [`SymlinkPolicy::Deny`]): the kernel refuses any resolution that would
//!   leave the directory, including through symlinks and `..` in link targets.
//!   `EAGAIN` (a concurrent rename raced the lookup) is retried;
//! - elsewhere, on kernels without `openat2` (`ENOSYS`), or when
//!   [`Resolver::Walk`] is chosen: a component-by-component walk with
//!   `openat(O_NOFOLLOW)`, holding a descriptor per level. A symlink met on
//!   the way is refused ([`SymlinkPolicy::Deny`]) or expanded in user space
//!   ([`SymlinkPolicy::FollowBeneath`]): an absolute target, or a `..` that
//!   would climb above the root, is [`FsError::Escape`]; more than 40 links is
//!   [`FsError::Symlink`].
//!
//! Operations that create or remove a name (create, atomic write, remove,
//! create dir) resolve the *parent* directory that way and then act on the last
//! component with an `*at` call that never follows it: new files are created
//! with `O_CREAT | O_EXCL | O_NOFOLLOW` and mode `0o600` (or `0o640`, see
//! [`Permissions`]; never executable), atomic writes go to a temporary file in
//! the same directory that is fsynced, renamed into place (without replacing an
//! existing file unless asked) and followed by an fsync of the directory.
//! Reads open with `O_NONBLOCK` and check the file type, so a FIFO planted in
//! the root cannot hang a request.
//!
//! # Limits
//!
//! The user-space walk holds descriptors, never re-resolves `..`, and so stays
//! inside the directories it opened; but a local attacker who can *move* a
//! directory out of the root while a walk holds it could make that one walk
//! continue outside. `openat2` has no such race: prefer the kernel resolver
//! (the default) where it exists. Windows is not supported by `SafeRoot` (the
//! [path rules](crate::path) are).
//!
//! # Example
//!
//! ```
//! use std::io::Read;
//! use palisade_fs::{FsError, SafeRoot, path::PathRules};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let root = SafeRoot::builder(dir.path()).open().unwrap();
//! let rules = PathRules::new();
//!
//! let path = rules.parse("notes/today.txt").unwrap();
//! root.create_dir_all(&path.parent().unwrap()).unwrap();
//! root.write_atomic(&path, b"hello", false).unwrap();
//! assert!(matches!(root.write_atomic(&path, b"again", false), Err(FsError::AlreadyExists)));
//!
//! let mut text = String::new();
//! root.open(&path).unwrap().read_to_string(&mut text).unwrap();
//! assert_eq!(text, "hello");
//! assert_eq!(root.list_files(100).unwrap()[0].path.as_str(), "notes/today.txt");
//!
//! // A symlink planted inside the root cannot lead outside it.
//! std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
//! let escape = rules.parse("etc/passwd").unwrap();
//! assert!(matches!(root.open(&escape), Err(FsError::Symlink)));
//! ```

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::error::FsError;
use crate::path::{PathRules, SafePath, TEMP_PREFIX};

/// How many symbolic links one resolution may expand (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINK_HOPS: u32 = 40;
/// How many times an `openat2` that returned `EAGAIN` is retried.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EAGAIN_RETRIES: u32 = 64;

/// What to do with symbolic links met while resolving a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SymlinkPolicy {
    /// Refuse every symbolic link, final component included (the default).
    #[default]
    Deny,
    /// Follow symbolic links whose target stays inside the root; refuse
    /// absolute targets and targets that climb above the root.
    FollowBeneath,
}

/// Which resolution mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Resolver {
    /// `openat2` where the kernel has it, the user-space walk otherwise (the default).
    #[default]
    Auto,
    /// `openat2` only: opening the root fails with [`FsError::Unsupported`]
    /// when the kernel lacks it (or on another OS).
    Kernel,
    /// The component-by-component `O_NOFOLLOW` walk, even where `openat2`
    /// exists (for tests and for comparison).
    Walk,
}

/// The permissions of files and directories a [`SafeRoot`] creates. Neither
/// choice has an execute bit on files, nor write access for anyone but the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Permissions {
    /// Files `0o600`, directories `0o700` (the default).
    #[default]
    Private,
    /// Files `0o640`, directories `0o750`: readable by the group (a backup
    /// or a web server sharing the group).
    GroupRead,
}

impl Permissions {
    /// The mode of new files (before the process umask).
    pub const fn file_mode(self) -> u32 {
        match self {
            Self::Private => 0o600,
            Self::GroupRead => 0o640,
        }
    }

    /// The mode of new directories (before the process umask).
    pub const fn dir_mode(self) -> u32 {
        match self {
            Self::Private => 0o700,
            Self::GroupRead => 0o750,
        }
    }
}

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (listed, never followed by listings).
    Symlink,
    /// A FIFO, socket or device.
    Other,
}

impl EntryKind {
    fn from_file_type(file_type: FileType) -> Self {
        match file_type {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            _ => Self::Other,
        }
    }
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's path relative to the root.
    pub path: SafePath,
    /// What it is (not following symbolic links).
    pub kind: EntryKind,
    /// Its size in bytes.
    pub len: u64,
}

/// Metadata of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// What it is.
    pub kind: EntryKind,
    /// Its size in bytes.
    pub len: u64,
    /// When it was last modified, where the platform says.
    pub modified: Option<SystemTime>,
}

/// Configures and opens a [`SafeRoot`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SafeRootBuilder {
    dir: PathBuf,
    symlinks: SymlinkPolicy,
    resolver: Resolver,
    rules: PathRules,
    permissions: Permissions,
    create: bool,
}

impl SafeRootBuilder {
    /// The symbolic link policy (default [`SymlinkPolicy::Deny`]).
    pub fn symlinks(mut self, policy: SymlinkPolicy) -> Self {
        self.symlinks = policy;
        self
    }

    /// The resolution mechanism (default [`Resolver::Auto`]).
    pub fn resolver(mut self, resolver: Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// The path rules used for listings (default [`PathRules::new`]); entries
    /// whose names break them are left out.
    pub fn rules(mut self, rules: PathRules) -> Self {
        self.rules = rules;
        self
    }

    /// The permissions of created files and directories (default [`Permissions::Private`]).
    pub fn permissions(mut self, permissions: Permissions) -> Self {
        self.permissions = permissions;
        self
    }

    /// Creates the root directory (and its parents) when missing.
    pub fn create(mut self) -> Self {
        self.create = true;
        self
    }

    /// Opens the root directory. The directory path is trusted configuration
    /// (symbolic links in it are followed); only paths *inside* the root are
    /// confined.
    pub fn open(self) -> Result<SafeRoot, FsError> {
        if self.create {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(self.permissions.dir_mode())
                .create(&self.dir)?;
        }
        let fd = rustix::fs::open(
            &self.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(map_errno)?;
        let kernel = match self.resolver {
            Resolver::Walk => false,
            Resolver::Auto => kernel_resolution_available(&fd),
            Resolver::Kernel if kernel_resolution_available(&fd) => true,
            Resolver::Kernel => return Err(FsError::Unsupported),
        };
        Ok(SafeRoot {
            inner: Arc::new(Inner {
                fd,
                kernel,
                fallback: self.resolver == Resolver::Auto,
                symlinks: self.symlinks,
                rules: self.rules,
                permissions: self.permissions,
            }),
        })
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn kernel_resolution_available(dir: &OwnedFd) -> bool {
    !matches!(
        rustix::fs::openat2(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::BENEATH,
        ),
        Err(Errno::NOSYS)
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn kernel_resolution_available(_dir: &OwnedFd) -> bool {
    false
}

/// A directory that confines every path resolved through it. Cheap to clone
/// (the descriptor is shared).
#[derive(Clone)]
pub struct SafeRoot {
    inner: Arc<Inner>,
}

struct Inner {
    fd: OwnedFd,
    kernel: bool,
    fallback: bool,
    symlinks: SymlinkPolicy,
    rules: PathRules,
    permissions: Permissions,
}

impl fmt::Debug for SafeRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafeRoot")
            .field("kernel_confinement", &self.inner.kernel)
            .field("symlinks", &self.inner.symlinks)
            .field("permissions", &self.inner.permissions)
            .finish_non_exhaustive()
    }
}

/// A directory descriptor: the root's own, or one opened beneath it.
enum DirFd<'a> {
    Root(BorrowedFd<'a>),
    Sub(OwnedFd),
}

impl AsFd for DirFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Root(fd) => *fd,
            Self::Sub(fd) => fd.as_fd(),
        }
    }
}

impl SafeRoot {
    /// A builder for a root at `dir`, with the safe defaults: symlinks denied,
    /// kernel confinement where available, private permissions.
    pub fn builder(dir: impl AsRef<Path>) -> SafeRootBuilder {
        SafeRootBuilder {
            dir: dir.as_ref().to_path_buf(),
            symlinks: SymlinkPolicy::default(),
            resolver: Resolver::default(),
            rules: PathRules::new(),
            permissions: Permissions::default(),
            create: false,
        }
    }

    /// Opens `dir` with the defaults (see [`SafeRoot::builder`]).
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self, FsError> {
        Self::builder(dir).open()
    }

    /// Whether paths are resolved by the kernel (`openat2`) rather than the
    /// user-space walk.
    pub fn kernel_confinement(&self) -> bool {
        self.inner.kernel
    }

    /// The symbolic link policy.
    pub fn symlink_policy(&self) -> SymlinkPolicy {
        self.inner.symlinks
    }

    /// The path rules of this root (used for listings; use them to parse
    /// request paths too).
    pub fn rules(&self) -> &PathRules {
        &self.inner.rules
    }

    /// Opens a regular file for reading.
    pub fn open(&self, path: &SafePath) -> Result<File, FsError> {
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let file = File::from(fd);
        let file_type = file.metadata()?.file_type();
        if file_type.is_dir() {
            Err(FsError::IsADirectory)
        } else if file_type.is_file() {
            Ok(file)
        } else {
            Err(FsError::NotAFile)
        }
    }

    /// Metadata of a file or directory (a final symbolic link is refused or
    /// followed according to the policy).
    pub fn metadata(&self, path: &SafePath) -> Result<Metadata, FsError> {
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let meta = File::from(fd).metadata()?;
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            EntryKind::File
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::Other
        };
        Ok(Metadata {
            kind,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }

    /// Creates a new file for writing; fails with [`FsError::AlreadyExists`]
    /// if the name exists (even as a dangling symbolic link).
    pub fn create_new(&self, path: &SafePath) -> Result<File, FsError> {
        let (dir, name) = self.parent(path)?;
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            self.file_mode(),
        )
        .map_err(map_errno)?;
        Ok(File::from(fd))
    }

    /// Writes `data` to `path` atomically: a temporary file in the same
    /// directory, fsynced, renamed into place, the directory fsynced. An
    /// existing file is replaced only when `overwrite` is true (otherwise
    /// [`FsError::AlreadyExists`]). The parent directory must exist.
    pub fn write_atomic(
        &self,
        path: &SafePath,
        data: &[u8],
        overwrite: bool,
    ) -> Result<(), FsError> {
        let (staged, mut file) = self.stage(path)?;
        file.write_all(data)?;
        staged.commit(file, overwrite)
    }

    /// Removes a file (a symbolic link is removed itself, never its target).
    pub fn remove_file(&self, path: &SafePath) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::empty()).map_err(map_errno)
    }

    /// Removes an empty directory.
    pub fn remove_dir(&self, path: &SafePath) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR).map_err(map_errno)
    }

    /// Creates a directory; its parent must exist.
    pub fn create_dir(&self, path: &SafePath) -> Result<(), FsError> {
        let (dir, name) = self.parent(path)?;
        rustix::fs::mkdirat(&dir, name, self.dir_mode()).map_err(map_errno)
    }

    /// Creates a directory and its missing parents; succeeds if it exists.
    pub fn create_dir_all(&self, path: &SafePath) -> Result<(), FsError> {
        let mut prefix: Option<SafePath> = None;
        for component in path.components() {
            let next = match &prefix {
                Some(parent) => parent.child(component),
                None => SafePath::from_checked(component.to_owned()),
            };
            match self.create_dir(&next) {
                Ok(()) | Err(FsError::AlreadyExists) => {}
                Err(error) => return Err(error),
            }
            prefix = Some(next);
        }
        self.resolve(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map(drop)
    }

    /// The entries of a directory (`None`: the root itself), sorted by name.
    /// Symbolic links are listed as such and not followed; names that break
    /// the root's [rules](Self::rules) (dotfiles by default, temporary files,
    /// names that are not NFKC) are left out, so every listed path can be
    /// passed back to the other operations.
    pub fn list(&self, dir: Option<&SafePath>) -> Result<Vec<Entry>, FsError> {
        let fd = self.open_dir_fd(dir)?;
        let mut entries = Vec::new();
        self.read_dir(fd, dir, |entry| {
            entries.push(entry);
            true
        })?;
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// Every regular file under the root, depth-first, at most `max_entries`
    /// of them and no deeper than the rules' depth limit, sorted by path.
    /// Symbolic links are not followed.
    pub fn list_files(&self, max_entries: usize) -> Result<Vec<Entry>, FsError> {
        let mut files = Vec::new();
        let mut pending: Vec<(OwnedFd, Option<SafePath>)> = vec![(self.open_dir_fd(None)?, None)];
        while let Some((fd, dir)) = pending.pop() {
            let depth = dir.as_ref().map_or(0, SafePath::depth);
            let mut subdirs = Vec::new();
            self.read_dir(fd, dir.as_ref(), |entry| {
                match entry.kind {
                    EntryKind::File => files.push(entry),
                    EntryKind::Dir if depth + 1 < self.inner.rules.depth_limit() => {
                        subdirs.push(entry.path);
                    }
                    _ => {}
                }
                files.len() < max_entries
            })?;
            for sub in subdirs {
                if files.len() >= max_entries {
                    break;
                }
                // Descend by name relative to the directory just read, without
                // following a symbolic link swapped in meanwhile.
                if let Ok(fd) = self.resolve(
                    &sub,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK,
                    Mode::empty(),
                ) {
                    pending.push((fd, Some(sub)));
                }
            }
        }
        files.truncate(max_entries);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// A root confined to a subdirectory of this one, with the same settings;
    /// with `create`, the subdirectory is created first when missing. Use it
    /// for one root per user: `files.sub_root(&user_id, true)`.
    pub fn sub_root(&self, path: &SafePath, create: bool) -> Result<Self, FsError> {
        if create {
            self.create_dir_all(path)?;
        }
        let fd = self.resolve(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                fd,
                kernel: self.inner.kernel,
                fallback: self.inner.fallback,
                symlinks: self.inner.symlinks,
                rules: self.inner.rules.clone(),
                permissions: self.inner.permissions,
            }),
        })
    }

    /// Runs blocking file system work on tokio's blocking pool, e.g.
    /// `root.blocking(move |root| root.remove_file(&path)).await`.
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, FsError>
    where
        F: FnOnce(&Self) -> Result<T, FsError> + Send + 'static,
        T: Send + 'static,
    {
        let root = self.clone();
        tokio::task::spawn_blocking(move || work(&root))
            .await
            .map_err(|_| FsError::Io(io::Error::other("blocking file system task failed")))?
    }

    /// Creates a temporary file next to `path` (same directory, reserved
    /// name, `O_EXCL`), to be committed with [`Staged::commit`].
    pub(crate) fn stage(&self, path: &SafePath) -> Result<(Staged, File), FsError> {
        let (dir, name) = self.parent(path)?;
        let dir = match dir {
            DirFd::Root(fd) => rustix::io::dup(fd).map_err(map_errno)?,
            DirFd::Sub(fd) => fd,
        };
        for _ in 0..8 {
            let tmp = format!("{TEMP_PREFIX}{}", random_hex()?);
            match rustix::fs::openat(
                &dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                self.file_mode(),
            ) {
                Ok(fd) => {
                    let staged = Staged {
                        dir,
                        tmp,
                        name: name.to_owned(),
                        committed: false,
                    };
                    return Ok((staged, File::from(fd)));
                }
                Err(Errno::EXIST) => {}
                Err(errno) => return Err(map_errno(errno)),
            }
        }
        Err(FsError::AlreadyExists)
    }

    fn file_mode(&self) -> Mode {
        Mode::from_raw_mode(self.inner.permissions.file_mode() as _)
    }

    fn dir_mode(&self) -> Mode {
        Mode::from_raw_mode(self.inner.permissions.dir_mode() as _)
    }

    fn open_dir_fd(&self, dir: Option<&SafePath>) -> Result<OwnedFd, FsError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK;
        match dir {
            Some(path) => self.resolve(path, flags, Mode::empty()),
            None => rustix::fs::openat(&self.inner.fd, ".", flags | OFlags::CLOEXEC, Mode::empty())
                .map_err(map_errno),
        }
    }

    /// Reads a directory, calling `visit` with each acceptable entry until it
    /// returns false.
    fn read_dir(
        &self,
        fd: OwnedFd,
        dir: Option<&SafePath>,
        mut visit: impl FnMut(Entry) -> bool,
    ) -> Result<(), FsError> {
        let mut reader = rustix::fs::Dir::new(fd).map_err(map_errno)?;
        while let Some(item) = reader.read() {
            let item = item.map_err(map_errno)?;
            let Ok(name) = item.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            match self.inner.rules.parse(name) {
                Ok(checked) if checked.as_str() == name => {}
                _ => continue,
            }
            let Ok(stat) = rustix::fs::statat(
                reader.fd().map_err(map_errno)?,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            let path = match dir {
                Some(parent) => parent.child(name),
                None => SafePath::from_checked(name.to_owned()),
            };
            let entry = Entry {
                path,
                kind: EntryKind::from_file_type(FileType::from_raw_mode(stat.st_mode as _)),
                len: u64::try_from(stat.st_size).unwrap_or(0),
            };
            if !visit(entry) {
                break;
            }
        }
        Ok(())
    }

    /// Resolves the parent of `path` and returns it with the last component.
    fn parent<'p>(&self, path: &'p SafePath) -> Result<(DirFd<'_>, &'p str), FsError> {
        let name = path.file_name();
        let dir = match path.parent() {
            None => DirFd::Root(self.inner.fd.as_fd()),
            Some(parent) => DirFd::Sub(self.resolve(
                &parent,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK,
                Mode::empty(),
            )?),
        };
        Ok((dir, name))
    }

    /// Opens `path` beneath the root with `flags`.
    fn resolve(&self, path: &SafePath, flags: OFlags, mode: Mode) -> Result<OwnedFd, FsError> {
        let flags = flags | OFlags::CLOEXEC | OFlags::NOCTTY;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if self.inner.kernel {
            match self.openat2(path.as_str(), flags, mode) {
                Err(Errno::NOSYS) if self.inner.fallback => {}
                other => return other.map_err(map_errno),
            }
        }
        self.walk(path, flags, mode)
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn openat2(&self, path: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        use rustix::fs::ResolveFlags;
        let mut resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        if self.inner.symlinks == SymlinkPolicy::Deny {
            resolve |= ResolveFlags::NO_SYMLINKS;
        }
        let mut result = Err(Errno::AGAIN);
        for _ in 0..EAGAIN_RETRIES {
            result = rustix::fs::openat2(&self.inner.fd, path, flags, mode, resolve);
            if !matches!(result, Err(Errno::AGAIN)) {
                break;
            }
        }
        result
    }

    /// The user-space walk: one `openat(O_NOFOLLOW)` per component, holding a
    /// descriptor per level; symbolic links refused or expanded per policy.
    fn walk(&self, path: &SafePath, flags: OFlags, mode: Mode) -> Result<OwnedFd, FsError> {
        let root = self.inner.fd.as_fd();
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut pending: Vec<String> = path.components().rev().map(str::to_owned).collect();
        let mut must_be_dir = false;
        let mut hops = 0_u32;
        while let Some(name) = pending.pop() {
            match name.as_str() {
                "" | "." => continue,
                ".." => {
                    if stack.pop().is_none() {
                        return Err(FsError::Escape);
                    }
                    continue;
                }
                _ => {}
            }
            let here = stack.last().map_or(root, AsFd::as_fd);
            let last = pending.is_empty();
            let step = if last {
                let dir = if must_be_dir {
                    OFlags::DIRECTORY
                } else {
                    OFlags::empty()
                };
                rustix::fs::openat(here, name.as_str(), flags | dir | OFlags::NOFOLLOW, mode)
            } else {
                rustix::fs::openat(
                    here,
                    name.as_str(),
                    OFlags::RDONLY
                        | OFlags::DIRECTORY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            match step {
                Ok(fd) if last => return Ok(fd),
                Ok(fd) => stack.push(fd),
                Err(errno @ (Errno::LOOP | Errno::NOTDIR | Errno::MLINK)) => {
                    let Ok(target) = rustix::fs::readlinkat(here, name.as_str(), Vec::new()) else {
                        return Err(map_errno(errno));
                    };
                    if self.inner.symlinks == SymlinkPolicy::Deny {
                        return Err(FsError::Symlink);
                    }
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(FsError::Symlink);
                    }
                    let target = target.into_string().map_err(|_| FsError::Symlink)?;
                    if target.starts_with('/') {
                        return Err(FsError::Escape);
                    }
                    if target.is_empty() {
                        return Err(FsError::NotFound);
                    }
                    if last && target.ends_with('/') {
                        must_be_dir = true;
                    }
                    pending.extend(target.split('/').rev().map(str::to_owned));
                }
                Err(errno) => return Err(map_errno(errno)),
            }
        }
        // The path ended on a directory reached through a link's `.` or `..`.
        let here = stack.last().map_or(root, AsFd::as_fd);
        rustix::fs::openat(here, ".", flags, mode).map_err(map_errno)
    }
}

/// A temporary file waiting to be renamed into place. Dropping it without
/// committing removes the temporary file.
pub(crate) struct Staged {
    dir: OwnedFd,
    tmp: String,
    name: String,
    committed: bool,
}

impl Staged {
    /// Changes the final name (a name that passed the rules, in the same directory).
    pub(crate) fn set_name(&mut self, name: String) {
        self.name = name;
    }

    /// Fsyncs `file`, renames the temporary file to its final name (replacing
    /// an existing file only if `overwrite`), and fsyncs the directory.
    pub(crate) fn commit(mut self, file: File, overwrite: bool) -> Result<(), FsError> {
        file.sync_all()?;
        drop(file);
        if overwrite {
            rustix::fs::renameat(&self.dir, self.tmp.as_str(), &self.dir, self.name.as_str())
                .map_err(map_errno)?;
        } else {
            rename_no_replace(&self.dir, &self.tmp, &self.name)?;
        }
        self.committed = true;
        rustix::fs::fsync(&self.dir).map_err(map_errno)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Renames without replacing: `renameat2(RENAME_NOREPLACE)` on Linux, else
/// (or on file systems without it) a hard link and an unlink.
fn rename_no_replace(dir: &OwnedFd, from: &str, to: &str) -> Result<(), FsError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    match rustix::fs::renameat_with(dir, from, dir, to, rustix::fs::RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS) => {}
        other => return other.map_err(map_errno),
    }
    rustix::fs::linkat(dir, from, dir, to, AtFlags::empty()).map_err(map_errno)?;
    rustix::fs::unlinkat(dir, from, AtFlags::empty()).map_err(map_errno)
}

pub(crate) fn random_hex() -> Result<String, FsError> {
    let mut bytes = [0_u8; 16];
    getrandom::fill(&mut bytes).map_err(|_| FsError::Io(io::Error::other("no randomness")))?;
    Ok(crate::upload::hex(&bytes))
}

pub(crate) fn map_errno(errno: Errno) -> FsError {
    match errno {
        Errno::NOENT => FsError::NotFound,
        Errno::EXIST => FsError::AlreadyExists,
        Errno::NOTDIR => FsError::NotADirectory,
        Errno::ISDIR => FsError::IsADirectory,
        Errno::LOOP | Errno::MLINK => FsError::Symlink,
        Errno::XDEV => FsError::Escape,
        Errno::NOTEMPTY => FsError::DirectoryNotEmpty,
        Errno::NXIO => FsError::NotAFile,
        other => FsError::Io(io::Error::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots(dir: &Path) -> Vec<SafeRoot> {
        let mut roots = vec![
            SafeRoot::builder(dir)
                .resolver(Resolver::Walk)
                .open()
                .unwrap(),
        ];
        match SafeRoot::builder(dir).resolver(Resolver::Kernel).open() {
            Ok(kernel) => {
                assert!(kernel.kernel_confinement());
                roots.push(kernel);
            }
            // Skipped only where the kernel really lacks openat2.
            Err(FsError::Unsupported) if !kernel_has_openat2(dir) => {}
            Err(e) => panic!("the kernel resolver: {e} (this kernel has openat2)"),
        }
        roots
    }

    /// Whether this kernel has `openat2(2)`, by a system call of the test's
    /// own rather than the detection under test.
    fn kernel_has_openat2(dir: &Path) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let fd = rustix::fs::open(dir, flags, Mode::empty()).unwrap();
            let probe = rustix::fs::openat2(
                &fd,
                ".",
                flags,
                Mode::empty(),
                rustix::fs::ResolveFlags::BENEATH,
            );
            !matches!(probe, Err(Errno::NOSYS))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = dir;
            false
        }
    }

    fn p(text: &str) -> SafePath {
        PathRules::new().parse(text).unwrap()
    }

    #[test]
    fn create_read_remove_on_both_resolvers() {
        let dir = tempfile::tempdir().unwrap();
        for (i, root) in roots(dir.path()).into_iter().enumerate() {
            let base = p(&format!("r{i}"));
            root.create_dir(&base).unwrap();
            let file = base.child("a.txt");
            root.create_new(&file).unwrap().write_all(b"x").unwrap();
            assert!(matches!(
                root.create_new(&file),
                Err(FsError::AlreadyExists)
            ));
            assert_eq!(root.metadata(&file).unwrap().len, 1);
            assert_eq!(root.metadata(&base).unwrap().kind, EntryKind::Dir);
            assert!(matches!(root.open(&base), Err(FsError::IsADirectory)));
            assert!(matches!(
                root.remove_dir(&base),
                Err(FsError::DirectoryNotEmpty)
            ));
            root.remove_file(&file).unwrap();
            assert!(matches!(root.open(&file), Err(FsError::NotFound)));
            assert!(matches!(root.remove_file(&file), Err(FsError::NotFound)));
            root.remove_dir(&base).unwrap();
        }
    }

    #[test]
    fn atomic_write_replaces_only_when_asked_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let root = SafeRoot::open_dir(dir.path()).unwrap();
        let file = p("f.txt");
        root.write_atomic(&file, b"one", false).unwrap();
        assert!(matches!(
            root.write_atomic(&file, b"two", false),
            Err(FsError::AlreadyExists)
        ));
        root.write_atomic(&file, b"three", true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"three");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.txt"]);
    }

    #[test]
    fn created_files_are_never_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for permissions in [Permissions::Private, Permissions::GroupRead] {
            let root = SafeRoot::builder(dir.path())
                .permissions(permissions)
                .open()
                .unwrap();
            let name = p(&format!("{permissions:?}.bin"));
            root.write_atomic(&name, b"x", false).unwrap();
            let mode = std::fs::metadata(dir.path().join(name.as_str()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0, "{mode:o}");
            assert_eq!(mode & 0o022, 0, "{mode:o}");
        }
    }

    #[test]
    fn fifo_is_not_a_file_and_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(dir.path().join("pipe"))
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return; // no mkfifo on this system
        }
        for root in roots(dir.path()) {
            assert!(matches!(root.open(&p("pipe")), Err(FsError::NotAFile)));
            let listed = root.list(None).unwrap();
            assert_eq!(listed[0].kind, EntryKind::Other);
        }
    }

    #[test]
    fn list_hides_dotfiles_and_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "SECRET=1").unwrap();
        std::fs::write(dir.path().join(".palisade-tmp-abc"), "x").unwrap();
        std::fs::write(dir.path().join("visible.txt"), "abc").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/deep.txt"), "abcd").unwrap();
        let root = SafeRoot::open_dir(dir.path()).unwrap();
        let names: Vec<_> = root
            .list(None)
            .unwrap()
            .into_iter()
            .map(|e| (e.path.to_string(), e.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("sub".into(), EntryKind::Dir),
                ("visible.txt".into(), EntryKind::File)
            ]
        );
        let files: Vec<_> = root
            .list_files(10)
            .unwrap()
            .into_iter()
            .map(|e| (e.path.to_string(), e.len))
            .collect();
        assert_eq!(
            files,
            [
                ("sub/deep.txt".to_owned(), 4),
                ("visible.txt".to_owned(), 3)
            ]
        );
        assert_eq!(root.list_files(1).unwrap().len(), 1);
        let open = SafeRoot::builder(dir.path())
            .rules(PathRules::new().allow_dotfiles())
            .open()
            .unwrap();
        assert_eq!(open.list(None).unwrap().len(), 3);
    }

    #[test]
    fn sub_root_is_confined_to_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.txt"), "not yours").unwrap();
        let files = SafeRoot::open_dir(dir.path()).unwrap();
        let user = files.sub_root(&p("users/42"), true).unwrap();
        user.write_atomic(&p("mine.txt"), b"yours", false).unwrap();
        assert!(dir.path().join("users/42/mine.txt").exists());
        assert!(matches!(user.open(&p("other.txt")), Err(FsError::NotFound)));
        std::os::unix::fs::symlink("../../other.txt", dir.path().join("users/42/link")).unwrap();
        let follow = SafeRoot::builder(dir.path())
            .symlinks(SymlinkPolicy::FollowBeneath)
            .open()
            .unwrap();
        let user = follow.sub_root(&p("users/42"), false).unwrap();
        assert!(matches!(user.open(&p("link")), Err(FsError::Escape)));
    }
}
