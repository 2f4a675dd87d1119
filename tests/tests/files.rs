//! `/files` of the reference backend, black-box: every row of the contract,
//! uploads stopped at the cap, types that must agree, other users' files.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use palisade_security_tests::http::{Request, Response};
use palisade_security_tests::{Backend, Database, Db};
use serde_json::{Value, json};

const PASSWORD: &str = "violet quartz harbor timber";
const PNG: &[u8] = &[
    0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, b'I', b'H', b'D', b'R', 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89,
];

fn token(addr: SocketAddr, email: &str) -> String {
    let creds = json!({"email": email, "password": PASSWORD}).to_string();
    let send = |path: &str| {
        Request::post(path)
            .header("content-type", "application/json")
            .body(creds.clone())
            .send(addr)
            .unwrap()
    };
    assert_eq!(send("/auth/register").status, 201);
    let res = send("/auth/login");
    assert_eq!(res.status, 200);
    res.json().unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    ct: &str,
    body: &[u8],
) -> Response {
    Request::new(method, path)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", ct)
        .body(body.to_vec())
        .send(addr)
        .unwrap()
}

#[allow(clippy::too_many_lines)] // one walk through the contract rows, in order
fn every_files_row_of_the_contract(db: Db) {
    let database = Database::start(db);
    let backend = Backend::start_on(&database, &[]);
    let addr = backend.addr;
    let alice = token(addr, "alice@example.com");
    let bob = {
        // A second registration from this address is within the 3/min limit.
        token(addr, "bob@example.com")
    };

    let res = call(
        addr,
        "PUT",
        "/files/notes/todo.txt",
        &alice,
        "text/plain",
        b"buy milk",
    );
    assert_eq!(res.status, 201, "{}", res.text());
    let stored: Value = res.json().unwrap();
    assert_eq!(stored["path"], "notes/todo.txt");
    assert_eq!(stored["size"], 8);
    assert_eq!(stored["content_type"], "text/plain");
    assert_eq!(stored["sha256"].as_str().unwrap().len(), 64);

    let res = call(
        addr,
        "GET",
        "/files/notes/todo.txt",
        &alice,
        "text/plain",
        b"",
    );
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "buy milk");
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert!(
        res.header("content-disposition")
            .unwrap()
            .starts_with("attachment;")
    );
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );

    // A PNG as .png is stored; HTML declared as a PNG is refused.
    let res = call(addr, "PUT", "/files/pic.png", &alice, "image/png", PNG);
    assert_eq!(res.status, 201, "{}", res.text());
    let res = call(
        addr,
        "PUT",
        "/files/evil.png",
        &alice,
        "image/png",
        b"<html><script>alert(1)</script></html>",
    );
    assert_eq!(res.status, 415);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));

    let res = call(addr, "GET", "/files", &alice, "text/plain", b"");
    assert_eq!(res.status, 200);
    let mut listed: Vec<String> = res.json().unwrap()["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{} {} {}",
                f["path"].as_str().unwrap(),
                f["size"],
                f["content_type"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            "notes/todo.txt 8 text/plain; charset=utf-8",
            "pic.png 33 image/png"
        ]
    );

    // Bob sees none of it.
    assert_eq!(
        call(
            addr,
            "GET",
            "/files/notes/todo.txt",
            &bob,
            "text/plain",
            b""
        )
        .status,
        404
    );
    assert_eq!(
        call(addr, "GET", "/files", &bob, "text/plain", b"")
            .json()
            .unwrap()["files"],
        json!([])
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            "/files/notes/todo.txt",
            &bob,
            "text/plain",
            b""
        )
        .status,
        404
    );

    // Unsafe paths: 400 before any file system call.
    for path in [
        "/files/..%2f..%2fapp.db",
        "/files/a/..%5c..%5capp.db",
        "/files/C:%5cwindows",
        "/files/CON.txt",
        "/files/%2e%2e/x",
    ] {
        let res = call(addr, "GET", path, &alice, "text/plain", b"");
        assert_eq!(res.status, 400, "{path}");
    }
    assert_eq!(Request::get("/files").send(addr).unwrap().status, 401);

    assert_eq!(
        call(
            addr,
            "DELETE",
            "/files/notes/todo.txt",
            &alice,
            "text/plain",
            b""
        )
        .status,
        204
    );
    assert_eq!(
        call(
            addr,
            "GET",
            "/files/notes/todo.txt",
            &alice,
            "text/plain",
            b""
        )
        .status,
        404
    );
    assert_eq!(
        call(
            addr,
            "DELETE",
            "/files/notes/todo.txt",
            &alice,
            "text/plain",
            b""
        )
        .status,
        404
    );

    // Stored files are never executable.
    let mut stack = vec![backend.data_dir().join("files")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                assert_eq!(
                    meta.permissions().mode() & 0o111,
                    0,
                    "{}",
                    entry.path().display()
                );
            }
        }
    }
}

/// The 10 MiB upload cap from outside. Exactly 10 MiB is stored. A chunked
/// body of 10 MiB and one 64 KiB chunk more, never terminated, is answered
/// 413 and the connection ends: the server cannot have read more than the
/// client sent, the cap plus one chunk, and reads nothing after it. (The
/// bytes a client manages to write are no measure of what the server read:
/// the kernel buffers up to `tcp_rmem`'s maximum, 32 MiB here, unread on the
/// server's side.)
#[test]
fn an_upload_one_chunk_past_ten_mebibytes_is_refused_and_the_connection_ended() {
    const CAP: usize = 10 << 20;
    const CHUNK: usize = 64 << 10;
    let backend = Backend::start();
    let addr = backend.addr;
    let carol = token(addr, "carol@example.com");
    let exact = call(
        addr,
        "PUT",
        "/files/exact.txt",
        &carol,
        "text/plain",
        &vec![b'a'; CAP],
    );
    assert_eq!(exact.status, 201, "{}", exact.text());
    assert_eq!(exact.json().unwrap()["size"], CAP);

    let mut stream = palisade_security_tests::http::connect(addr).unwrap();
    let timeout = Some(std::time::Duration::from_secs(20));
    stream.set_read_timeout(timeout).unwrap();
    stream.set_write_timeout(timeout).unwrap();
    let head = format!(
        "PUT /files/big.txt HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {carol}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = palisade_testkit::http::chunk(&vec![b'a'; CHUNK]);
    // The server reads up to the cap: every chunk within it is taken. The
    // last one crosses it, and the server may answer and close before the
    // client has handed all of it to the kernel.
    for i in 0..CAP / CHUNK {
        stream
            .write_all(&chunk)
            .unwrap_or_else(|e| panic!("chunk {i}: {e}"));
    }
    let _ = stream.write_all(&chunk);
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) => break Err(e),
        }
    };
    let text = String::from_utf8_lossy(&response);
    assert!(
        text.starts_with("HTTP/1.1 413"),
        "{}",
        text.lines().next().unwrap_or("")
    );
    // Closed (or reset, its unread bytes discarded), not left open.
    if let Err(e) = ended {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert_eq!(
        call(addr, "GET", "/files/big.txt", &carol, "text/plain", b"").status,
        404,
        "nothing stored"
    );
}

/// A 413 quota problem for `code` that names no path and no directory.
fn assert_quota_problem(res: &Response, code: &str, data_dir: &std::path::Path) {
    assert_eq!(res.status, 413, "{}", res.text());
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
    let body: Value = res.json().unwrap();
    assert_eq!(
        body["type"], "urn:palisade:problem:quota-exceeded",
        "{body}"
    );
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    let text = body.to_string();
    let dir = data_dir.display().to_string();
    assert!(!text.contains(".txt") && !text.contains(&dir), "{text}");
}

/// Polls `done` every 50 ms for up to 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The per-user quota (issue 17 item 6), from outside: the byte and the
/// file past it are refused with a 413 problem that names no path, a client
/// that hangs up mid-upload gives its reservation back, a delete frees
/// quota, and the listing has its `next_cursor`.
fn the_quota_holds_and_a_dropped_connection_gives_its_reservation_back(db: Db) {
    let database = Database::start(db);
    let backend = Backend::start_on(
        &database,
        &[
            ("APP_FILES_MAX_BYTES", "1000"),
            ("APP_FILES_MAX_COUNT", "3"),
        ],
    );
    let addr = backend.addr;
    let data_dir = backend.data_dir();
    let alice = token(addr, "dave@example.com");
    let bob = token(addr, "erin@example.com");
    let send = |method: &str, path: &str, token: &str, body: &[u8]| {
        call(addr, method, path, token, "text/plain", body)
    };
    let put =
        |token: &str, path: &str, body: &[u8]| send("PUT", &format!("/files/{path}"), token, body);

    assert_eq!(put(&alice, "a.txt", &[b'a'; 600]).status, 201);
    let res = put(&alice, "b.txt", &[b'b'; 401]);
    assert_quota_problem(&res, "quota_bytes", &data_dir);
    assert_eq!(put(&bob, "b.txt", &[b'b'; 1000]).status, 201, "per user");

    // A chunked upload of unknown length reserves what remains (400 bytes),
    // sends a little and hangs up. `100 Continue` comes when the handler
    // first reads the body, after its reservation.
    let mut stream = palisade_security_tests::http::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "PUT /files/slow.txt HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {alice}\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut interim = [0_u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert!(
        interim.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    let chunk = palisade_testkit::http::chunk(&[b's'; 100]);
    stream.write_all(&chunk).unwrap();
    let res = put(&alice, "probe.txt", b"p");
    assert_quota_problem(&res, "quota_bytes", &data_dir);
    drop(stream);
    eventually("the dropped upload kept its reservation", || {
        let res = put(&alice, "b.txt", &[b'b'; 400]);
        if res.status != 201 {
            assert_quota_problem(&res, "quota_bytes", &data_dir);
        }
        res.status == 201
    });

    // Three files is the limit, whatever their size; a delete frees a slot.
    assert_eq!(put(&alice, "empty.txt", b"").status, 201);
    assert_quota_problem(&put(&alice, "d.txt", b""), "quota_files", &data_dir);
    assert_eq!(send("DELETE", "/files/a.txt", &alice, b"").status, 204);
    assert_eq!(put(&alice, "d.txt", &[b'd'; 600]).status, 201);

    let res = send("GET", "/files", &alice, b"");
    assert_eq!(res.status, 200);
    let text = "text/plain; charset=utf-8";
    assert_eq!(
        res.json().unwrap(),
        json!({"files": [
            {"path": "b.txt", "size": 400, "content_type": text},
            {"path": "d.txt", "size": 600, "content_type": text},
            {"path": "empty.txt", "size": 0, "content_type": text},
        ], "next_cursor": null})
    );
    let res = send("GET", "/files?cursor=..%2F", &alice, b"");
    assert_eq!(res.status, 400);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));

    // Nothing of the dropped upload is left on disk.
    let mut stack = vec![data_dir.join("files")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            assert!(!name.starts_with(".palisade-tmp"), "{name}");
            if entry.metadata().unwrap().is_dir() {
                stack.push(entry.path());
            }
        }
    }
}

/// 16 uploads of 100 bytes by one user at once (under the 20 requests in
/// flight a client may have) against a 1,000-byte quota: each reservation
/// sums and inserts under the user's lock, so exactly 10 are stored and the
/// listing adds up to the quota, not past it.
fn parallel_uploads_never_cross_the_quota(db: Db) {
    let database = Database::start(db);
    let backend = Backend::start_on(
        &database,
        &[
            ("APP_FILES_MAX_BYTES", "1000"),
            ("APP_FILES_MAX_COUNT", "1000"),
        ],
    );
    let addr = backend.addr;
    let alice = token(addr, "racer@example.com");
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let alice = &alice;
                s.spawn(move || {
                    call(
                        addr,
                        "PUT",
                        &format!("/files/f{i}.txt"),
                        alice,
                        "text/plain",
                        &[b'x'; 100],
                    )
                    .status
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let stored = statuses.iter().filter(|s| **s == 201).count();
    assert!(
        statuses.iter().all(|s| matches!(s, 201 | 413)),
        "{statuses:?}"
    );
    assert_eq!(stored, 10, "{statuses:?}");
    let listed = call(addr, "GET", "/files", &alice, "text/plain", b"")
        .json()
        .unwrap();
    let total: u64 = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["size"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1000, "{listed}");
}

palisade_security_tests::on_both_databases!(
    every_files_row_of_the_contract,
    the_quota_holds_and_a_dropped_connection_gives_its_reservation_back,
    parallel_uploads_never_cross_the_quota,
);
