//! The upload pipeline: cap, sniff, agree, store, serve inert.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test code

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use palisade_fs::upload::{MismatchReason, UnsupportedReason};
use palisade_fs::{
    FsError, PathRules, Permissions, SafePath, SafeRoot, UploadError, UploadPolicy, serve,
};
use sha2::{Digest, Sha256};

fn p(text: &str) -> SafePath {
    PathRules::new().parse(text).unwrap()
}

/// A PNG signature and IHDR chunk followed by `len` bytes of filler.
fn png(len: usize) -> Vec<u8> {
    let mut data =
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde".to_vec();
    data.extend((0..len).map(|i| u8::try_from(i * 7 % 251).unwrap()));
    data
}

/// Names in `dir`, temporary files included.
fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn setup() -> (tempfile::TempDir, SafeRoot) {
    let dir = tempfile::tempdir().unwrap();
    let root = SafeRoot::open_dir(dir.path()).unwrap();
    (dir, root)
}

#[tokio::test]
async fn over_cap_chunked_body_is_stopped_at_the_cap() {
    let (dir, root) = setup();
    let polled = Arc::new(AtomicUsize::new(0));
    let counter = polled.clone();
    // An endless chunked body: 16 KiB chunks forever.
    let endless = futures_util::stream::repeat_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(Bytes::from(vec![b'a'; 16 * 1024]))
    });
    let policy = UploadPolicy::new().max_bytes(64 * 1024);
    let err = policy
        .store_stream(&root, &p("big.txt"), None, endless)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { limit: 65536 }),
        "{err:?}"
    );
    assert_eq!(err.problem().status, 413);
    // 4 chunks fill the cap; the 5th crosses it and nothing more is read.
    assert_eq!(polled.load(Ordering::SeqCst), 5);
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
}

/// A body that declares `declared` bytes (as a `Content-Length` does) and
/// records whether anything polled it; polled, it yields `data` once.
struct Declared {
    length: u64,
    data: Option<Bytes>,
    polled: Arc<AtomicBool>,
}

impl Declared {
    fn new(declared: u64, data: Vec<u8>) -> (Self, Arc<AtomicBool>) {
        let polled = Arc::new(AtomicBool::new(false));
        let body = Self {
            length: declared,
            data: Some(Bytes::from(data)),
            polled: polled.clone(),
        };
        (body, polled)
    }
}

impl http_body::Body for Declared {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.polled.store(true, Ordering::SeqCst);
        std::task::Poll::Ready(self.data.take().map(|d| Ok(http_body::Frame::data(d))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.length)
    }
}

#[tokio::test]
async fn declared_length_over_the_cap_is_refused_before_reading() {
    let (dir, root) = setup();
    let policy = UploadPolicy::new().max_bytes(1024);
    // Over the cap (a gigabyte, and one byte over), through `store` and
    // through `receive` with a per-call limit: refused without a poll.
    for declared in [1 << 30, 1025] {
        let (body, polled) = Declared::new(declared, png(1000));
        let err = policy
            .store(&root, &p("a.png"), None, body)
            .await
            .unwrap_err();
        assert!(
            matches!(err, UploadError::TooLarge { limit: 1024 }),
            "{err:?}"
        );
        assert!(
            !polled.load(Ordering::SeqCst),
            "{declared}: the body was read"
        );
    }
    let (body, polled) = Declared::new(101, png(60));
    let err = policy
        .receive(&root, &p("a.png"), None, body, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { limit: 100 }),
        "{err:?}"
    );
    assert!(!polled.load(Ordering::SeqCst), "the body was read");
    assert!(names(dir.path()).is_empty());
    // Control: exactly the cap declared is read and stored.
    let data = png(1024 - 33);
    assert_eq!(data.len(), 1024);
    let (body, polled) = Declared::new(1024, data);
    let stored = policy.store(&root, &p("a.png"), None, body).await.unwrap();
    assert_eq!(stored.size, 1024);
    assert!(polled.load(Ordering::SeqCst));
}

#[tokio::test]
async fn png_as_png_is_accepted_with_size_and_sha256() {
    let (dir, root) = setup();
    let data = png(20_000);
    let stored = UploadPolicy::new()
        .store(
            &root,
            &p("img/cat.png"),
            Some("image/png"),
            Full::new(Bytes::from(data.clone())),
        )
        .await
        .unwrap();
    assert_eq!(stored.path.as_str(), "img/cat.png");
    assert_eq!(stored.size, data.len() as u64);
    assert_eq!(stored.content_type, "image/png");
    let expected = Sha256::digest(&data)
        .iter()
        .fold(String::new(), |mut out, b| {
            use std::fmt::Write;
            write!(out, "{b:02x}").unwrap();
            out
        });
    assert_eq!(stored.sha256, expected);
    assert_eq!(std::fs::read(dir.path().join("img/cat.png")).unwrap(), data);
    assert_eq!(names(&dir.path().join("img")), ["cat.png"]);
}

#[tokio::test]
async fn html_declared_as_png_is_refused_with_415() {
    let (dir, root) = setup();
    let html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>";
    for declared in [None, Some("image/png")] {
        let err = UploadPolicy::new()
            .store(
                &root,
                &p("cat.png"),
                declared,
                Full::new(Bytes::from_static(html)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, UploadError::Mismatch(MismatchReason::Extension)),
            "{err:?}"
        );
        assert_eq!(err.problem().status, 415);
    }
    // Declared as HTML: not on the allowlist at all.
    let err = UploadPolicy::new()
        .store(
            &root,
            &p("page.html"),
            Some("text/html"),
            Full::new(Bytes::from_static(html)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Unsupported(_)));
    let err = UploadPolicy::new()
        .store_random(&root, None, None, Full::new(Bytes::from_static(html)))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        UploadError::Unsupported(UnsupportedReason::Content)
    ));
    assert!(names(dir.path()).is_empty());
}

#[tokio::test]
async fn declared_type_must_match_content() {
    let (_dir, root) = setup();
    let err = UploadPolicy::new()
        .store(
            &root,
            &p("notes.txt"),
            Some("text/plain"),
            Full::new(Bytes::from(png(100))),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        UploadError::Mismatch(MismatchReason::Extension)
    ));
    let policy = UploadPolicy::new().allow_only([
        palisade_fs::upload::FileType::PNG,
        palisade_fs::upload::FileType::TEXT,
    ]);
    let err = policy
        .store_random(
            &root,
            None,
            Some("text/plain"),
            Full::new(Bytes::from(png(100))),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        UploadError::Mismatch(MismatchReason::DeclaredType)
    ));
}

#[tokio::test]
async fn polyglot_with_markup_in_the_first_kib_is_refused() {
    let (dir, root) = setup();
    // A PNG whose tEXt chunk carries HTML right after the header.
    let mut poly = png(0);
    poly.extend_from_slice(b"\0\0\0\x40tEXtComment\0<html><script>alert(1)</script></html>");
    poly.extend(png(10_000).into_iter().skip(33));
    let err = UploadPolicy::new()
        .store(
            &root,
            &p("poly.png"),
            Some("image/png"),
            Full::new(Bytes::from(poly)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Mismatch(_)), "{err:?}");
    // GIFAR-style: a GIF with HTML in it.
    let gif = [&b"GIF89a\x01\0\x01\0\0\0\0"[..], b"<svg onload=alert(1)>"].concat();
    let err = UploadPolicy::new()
        .store(&root, &p("x.gif"), None, Full::new(Bytes::from(gif)))
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Mismatch(_)), "{err:?}");
    assert!(names(dir.path()).is_empty());
}

#[tokio::test]
async fn polyglot_with_markup_later_is_stored_inert_and_served_inert() {
    let (_dir, root) = setup();
    let mut poly = png(4096);
    poly.extend_from_slice(b"<html><script>alert(1)</script></html>");
    UploadPolicy::new()
        .store(&root, &p("late.png"), None, Full::new(Bytes::from(poly)))
        .await
        .unwrap();
    let response = serve::download(&root, &p("late.png")).await.unwrap();
    let headers = response.headers();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment;")
    );
    assert_eq!(
        headers["content-security-policy"],
        "default-src 'none'; sandbox"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body.len(), 4096 + 33 + 38);
}

#[tokio::test]
async fn stored_files_are_never_executable() {
    for permissions in [Permissions::Private, Permissions::GroupRead] {
        let dir = tempfile::tempdir().unwrap();
        let root = SafeRoot::builder(dir.path())
            .permissions(permissions)
            .open()
            .unwrap();
        UploadPolicy::new()
            .store(
                &root,
                &p("run.txt"),
                None,
                Full::new(Bytes::from_static(b"#!not a script but text")),
            )
            .await
            .unwrap_err(); // `#!` sniffs as a shell script: refused
        let stored = UploadPolicy::new()
            .store(
                &root,
                &p("a/b/run.txt"),
                None,
                Full::new(Bytes::from_static(b"echo hi")),
            )
            .await
            .unwrap();
        let mode = std::fs::metadata(dir.path().join(stored.path.as_str()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0, "{mode:o}");
        assert_eq!(mode & 0o777 & !permissions.file_mode(), 0, "{mode:o}");
    }
}

#[tokio::test]
async fn no_overwrite_unless_asked() {
    let (dir, root) = setup();
    let body = || Full::new(Bytes::from_static(b"one"));
    UploadPolicy::new()
        .store(&root, &p("f.txt"), None, body())
        .await
        .unwrap();
    let err = UploadPolicy::new()
        .store(&root, &p("f.txt"), None, body())
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Fs(FsError::AlreadyExists)));
    assert_eq!(err.problem().status, 409);
    UploadPolicy::new()
        .allow_overwrite()
        .store(
            &root,
            &p("f.txt"),
            None,
            Full::new(Bytes::from_static(b"two")),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.path().join("f.txt")).unwrap(), b"two");
    assert_eq!(names(dir.path()), ["f.txt"]);
}

#[tokio::test]
async fn random_names_take_the_sniffed_extension() {
    let (dir, root) = setup();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let stored = UploadPolicy::new()
        .store_random(&root, Some(&p("in")), None, Full::new(Bytes::from(png(10))))
        .await
        .unwrap();
    let name = stored.path.file_name();
    assert!(stored.path.as_str().starts_with("in/"));
    assert_eq!(name.len(), 32 + 4, "{name}");
    assert_eq!(stored.path.extension(), Some("png"));
    assert!(dir.path().join(stored.path.as_str()).exists());
}

#[tokio::test]
async fn a_failing_body_leaves_nothing_behind() {
    let (dir, root) = setup();
    let chunks = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"hello ")),
        Err(std::io::Error::other("connection reset")),
    ]);
    let err = UploadPolicy::new()
        .store_stream(&root, &p("x.txt"), None, chunks)
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Body(_)));
    assert_eq!(err.problem().status, 400);
    assert!(names(dir.path()).is_empty());
}

#[tokio::test]
async fn uploads_through_a_planted_symlink_cannot_leave_the_root() {
    let base = tempfile::tempdir().unwrap();
    std::fs::create_dir(base.path().join("root")).unwrap();
    std::fs::create_dir(base.path().join("outside")).unwrap();
    std::os::unix::fs::symlink("../outside", base.path().join("root/out")).unwrap();
    let root = SafeRoot::open_dir(base.path().join("root")).unwrap();
    let err = UploadPolicy::new()
        .store(
            &root,
            &p("out/evil.txt"),
            None,
            Full::new(Bytes::from_static(b"x")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Fs(FsError::Symlink)), "{err:?}");
    assert!(names(&base.path().join("outside")).is_empty());
}

#[tokio::test]
async fn parents_are_not_created_when_told_not_to() {
    let (dir, root) = setup();
    let err = UploadPolicy::new()
        .no_parent_creation()
        .store(
            &root,
            &p("missing/x.txt"),
            None,
            Full::new(Bytes::from_static(b"x")),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::Fs(FsError::NotFound)));
    assert!(names(dir.path()).is_empty());
}

#[tokio::test]
async fn a_received_upload_is_invisible_until_committed_and_gone_when_dropped() {
    let (dir, root) = setup();
    let policy = UploadPolicy::new();
    let received = policy
        .receive(
            &root,
            &p("docs/a.png"),
            Some("image/png"),
            Full::new(Bytes::from(png(100))),
            u64::MAX,
        )
        .await
        .unwrap();
    assert_eq!(received.file().size, 133);
    assert_eq!(received.file().content_type, "image/png");
    assert_eq!(received.file().path.as_str(), "docs/a.png");
    // Only the temporary file exists, under a name the path rules refuse.
    let staged = names(&dir.path().join("docs"));
    assert_eq!(staged.len(), 1);
    assert!(PathRules::new().parse(&staged[0]).is_err(), "{staged:?}");
    let stored = received.commit().await.unwrap();
    assert_eq!(stored.size, 133);
    assert_eq!(names(&dir.path().join("docs")), ["a.png"]);

    let received = policy
        .receive(
            &root,
            &p("docs/b.png"),
            None,
            Full::new(Bytes::from(png(1))),
            u64::MAX,
        )
        .await
        .unwrap();
    drop(received);
    assert_eq!(names(&dir.path().join("docs")), ["a.png"]);

    // A commit that would replace a file fails and leaves nothing behind.
    let received = policy
        .receive(
            &root,
            &p("docs/a.png"),
            None,
            Full::new(Bytes::from(png(1))),
            u64::MAX,
        )
        .await
        .unwrap();
    let err = received.commit().await.unwrap_err();
    assert!(matches!(err, UploadError::Fs(FsError::AlreadyExists)));
    assert_eq!(names(&dir.path().join("docs")), ["a.png"]);
}

#[tokio::test]
async fn a_per_call_limit_below_the_cap_stops_the_body_at_the_limit() {
    let (dir, root) = setup();
    let policy = UploadPolicy::new().max_bytes(1000);
    // A declared length over the limit: refused before reading.
    let err = policy
        .receive(
            &root,
            &p("a.txt"),
            None,
            Full::new(Bytes::from(vec![b'a'; 101])),
            100,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { limit: 100 }),
        "{err:?}"
    );
    // A stream: stopped at the chunk that crosses the limit.
    let polled = Arc::new(AtomicUsize::new(0));
    let counter = polled.clone();
    let endless = futures_util::stream::repeat_with(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Infallible>(Bytes::from_static(b"0123456789"))
    });
    let body = http_body_util::StreamBody::new(futures_util::StreamExt::map(endless, |c| {
        c.map(http_body::Frame::data)
    }));
    let err = policy
        .receive(&root, &p("a.txt"), None, body, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { limit: 100 }),
        "{err:?}"
    );
    assert_eq!(polled.load(Ordering::SeqCst), 11);
    // Exactly the limit fits; the policy's cap still applies above it.
    let received = policy
        .receive(
            &root,
            &p("a.txt"),
            None,
            Full::new(Bytes::from(vec![b'a'; 100])),
            100,
        )
        .await
        .unwrap();
    assert_eq!(received.commit().await.unwrap().size, 100);
    let err = policy
        .receive(
            &root,
            &p("b.txt"),
            None,
            Full::new(Bytes::from(vec![b'b'; 1001])),
            u64::MAX,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, UploadError::TooLarge { limit: 1000 }),
        "{err:?}"
    );
    assert_eq!(names(dir.path()), ["a.txt"]);
}
