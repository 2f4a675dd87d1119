//! The throwaway `redis-server`: start, commands, outage, restart, cleanup.

#![cfg(unix)]

use std::path::Path;

use palisade_testkit::TestkitError;
use palisade_testkit::redis::{RedisServer, Reply};

#[test]
fn starts_on_a_private_unix_socket() {
    let mut redis = RedisServer::start().unwrap();
    assert!(redis.is_running());
    let socket = redis.socket_path();
    assert!(socket.starts_with(redis.dir()));
    assert_eq!(redis.url(), format!("redis+unix://{}", socket.display()));

    redis.ping().unwrap();
    // No TCP listener, no persistence.
    assert_eq!(
        redis.command(&["CONFIG", "GET", "port"]).unwrap(),
        Reply::Array(vec![
            Reply::Bulk(b"port".to_vec()),
            Reply::Bulk(b"0".to_vec())
        ])
    );
    assert_eq!(
        redis.command(&["CONFIG", "GET", "save"]).unwrap(),
        Reply::Array(vec![Reply::Bulk(b"save".to_vec()), Reply::Bulk(Vec::new())])
    );
    assert_eq!(
        redis.command(&["CONFIG", "GET", "unixsocketperm"]).unwrap(),
        Reply::Array(vec![
            Reply::Bulk(b"unixsocketperm".to_vec()),
            Reply::Bulk(b"700".to_vec())
        ])
    );
}

#[test]
fn set_get_and_error_replies() {
    let redis = RedisServer::start().unwrap();
    assert_eq!(
        redis.command(&["SET", "k", "v\r\nwith crlf"]).unwrap(),
        Reply::Status("OK".to_owned())
    );
    let value = redis.command(&["GET", "k"]).unwrap();
    assert_eq!(value.as_str(), Some("v\r\nwith crlf"));
    assert_eq!(redis.command(&["GET", "missing"]).unwrap(), Reply::Nil);
    assert_eq!(redis.command(&["INCR", "n"]).unwrap(), Reply::Integer(1));
    let err = redis.command(&["NOSUCHCOMMAND"]).unwrap_err();
    assert!(
        matches!(err, TestkitError::Redis(ref m) if m.starts_with("ERR")),
        "{err}"
    );
}

#[test]
fn kill_then_restart_on_the_same_socket() {
    let mut redis = RedisServer::start().unwrap();
    let socket = redis.socket_path().to_path_buf();
    let url = redis.url();
    redis.command(&["SET", "k", "v"]).unwrap();
    let first_pid = redis.pid().unwrap();

    redis.kill();
    assert!(!redis.is_running());
    assert_eq!(redis.pid(), None);
    assert!(redis.ping().is_err());
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists());
    redis.kill(); // idempotent

    redis.restart().unwrap();
    assert!(redis.is_running());
    assert_eq!(redis.socket_path(), socket);
    assert_eq!(redis.url(), url);
    redis.ping().unwrap();
    // Persistence is off: the store comes back empty.
    assert_eq!(redis.command(&["GET", "k"]).unwrap(), Reply::Nil);

    // Restarting a running server replaces the process.
    let second_pid = redis.pid().unwrap();
    redis.restart().unwrap();
    assert_ne!(redis.pid(), Some(second_pid));
    redis.ping().unwrap();
}

#[test]
fn a_crashed_server_is_not_running() {
    let mut redis = RedisServer::start().unwrap();
    // SHUTDOWN closes the connection without a reply.
    let _ = redis.command(&["SHUTDOWN", "NOSAVE"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while redis.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "redis-server did not exit"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    redis.restart().unwrap();
    redis.ping().unwrap();
}

#[test]
fn drop_stops_the_process_and_removes_the_directory() {
    let redis = RedisServer::start().unwrap();
    let pid = redis.pid().unwrap();
    let dir = redis.dir().to_path_buf();
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_ok());
    assert!(dir.is_dir());

    drop(redis);
    assert!(std::fs::metadata(format!("/proc/{pid}")).is_err());
    assert!(!dir.exists());
}

#[test]
fn a_missing_binary_says_how_to_install_redis() {
    for binary in ["/nonexistent/redis-server", "palisade-no-such-redis-server"] {
        let err = RedisServer::start_with(binary).unwrap_err();
        assert!(matches!(err, TestkitError::RedisNotFound { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("redis-server not found"), "{message}");
        assert!(
            message.contains("apt-get install redis-server"),
            "{message}"
        );
        assert!(message.contains("./scripts/test"), "{message}");
        assert!(message.contains("never skip"), "{message}");
        assert!(message.contains(binary), "{message}");
    }
}

#[test]
fn a_server_that_exits_at_once_reports_its_output() {
    // `false` is not redis-server: it exits with status 1 straight away.
    let Some(binary) = ["/bin/false", "/usr/bin/false"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        panic!("no `false` binary on this machine");
    };
    let err = RedisServer::start_with(binary).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TestkitError::NotReady { .. }), "{err:?}");
    assert!(message.contains("exited early"), "{message}");
}

/// A script that runs the real redis-server with extra arguments after the
/// configuration file.
fn wrapper(dir: &Path, extra: &str) -> std::io::Result<std::path::PathBuf> {
    let path = dir.join("redis-server");
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec \"${{PALISADE_REDIS_SERVER:-redis-server}}\" \"$1\" {extra}\n"),
    )?;
    let mut perms = std::fs::metadata(&path)?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms)?;
    Ok(path)
}

/// Starts `binary`, retrying while it is "text file busy": a fork in another
/// test thread can briefly hold the script we just wrote open.
fn start_script(binary: &Path) -> Result<RedisServer, TestkitError> {
    let mut result = RedisServer::start_with(binary);
    for _ in 0..100 {
        match &result {
            Err(TestkitError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::ExecutableFileBusy => {}
            _ => break,
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        result = RedisServer::start_with(binary);
    }
    result
}

#[test]
fn a_failed_start_quotes_the_redis_log() {
    // The configuration loads, then binding the socket fails: redis-server
    // says why in its log file.
    let dir = tempfile::tempdir().unwrap();
    let binary = wrapper(dir.path(), "--unixsocket /nonexistent/palisade.sock").unwrap();
    let err = start_script(&binary).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TestkitError::NotReady { .. }), "{err:?}");
    assert!(message.contains("exited early"), "{message}");
    assert!(message.contains("Failed opening Unix socket"), "{message}");
}

#[test]
fn a_bad_configuration_quotes_the_server_stderr() {
    // An unknown directive is reported on stderr, before the log file opens.
    let dir = tempfile::tempdir().unwrap();
    let binary = wrapper(dir.path(), "--no-such-option yes").unwrap();
    let err = start_script(&binary).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, TestkitError::NotReady { .. }), "{err:?}");
    assert!(message.contains("no-such-option"), "{message}");
}
