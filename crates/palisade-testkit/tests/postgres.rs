//! The throwaway PostgreSQL: start, queries, authentication, outage,
//! restart with the data kept, cleanup.

#![cfg(unix)]

use std::os::unix::fs::MetadataExt;

use palisade_testkit::TestkitError;
use palisade_testkit::postgres::PostgresServer;

#[test]
fn starts_on_a_private_unix_socket_with_a_password() {
    let mut pg = PostgresServer::start().unwrap();
    assert!(pg.is_running());
    assert!(pg.is_ready());
    assert!(pg.socket_dir().join(".s.PGSQL.5432").exists());
    assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "off");
    // No TCP listener; clients authenticate with SCRAM.
    assert_eq!(pg.psql("postgres", "SHOW listen_addresses").unwrap(), "");
    assert_eq!(
        pg.psql("postgres", "SHOW password_encryption").unwrap(),
        "scram-sha-256"
    );
    let hba = std::fs::read_to_string(pg.dir().join("data/pg_hba.conf")).unwrap();
    assert!(
        !hba.lines()
            .any(|l| !l.starts_with('#') && l.contains("trust")),
        "{hba}"
    );
    // The directory is private to the server's user, never root's.
    let meta = std::fs::metadata(pg.dir()).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o700);
    if running_as_root() {
        assert_ne!(meta.uid(), 0, "postgres must not run as root");
    }
    // The password is in the URL, never in Debug.
    assert!(pg.url("postgres").contains(pg.password()));
    assert!(!format!("{pg:?}").contains(pg.password()));
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[test]
fn databases_queries_and_error_replies() {
    let pg = PostgresServer::start().unwrap();
    let url = pg.create_database("app_1").unwrap();
    assert!(url.ends_with(&format!(
        "/app_1?host={}&port=5432",
        pg.socket_dir().display()
    )));
    pg.psql("app_1", "CREATE TABLE t (a INT, b TEXT)").unwrap();
    pg.psql("app_1", "INSERT INTO t VALUES (1, 'x'), (2, 'y')")
        .unwrap();
    assert_eq!(
        pg.psql("app_1", "SELECT a, b FROM t ORDER BY a").unwrap(),
        "1|x\n2|y"
    );
    let err = pg.psql("app_1", "SELECT * FROM missing").unwrap_err();
    assert!(
        matches!(err, TestkitError::Postgres { tool: "psql", ref message } if message.contains("missing")),
        "{err}"
    );
    for bad in ["", "a;b", "x\"y", "a b"] {
        assert!(pg.create_database(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn kill_then_restart_keeps_what_was_committed() {
    let mut pg = PostgresServer::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql("app", "CREATE TABLE t (n INT); INSERT INTO t VALUES (7)")
        .unwrap();
    let before = pg.pid().unwrap();
    pg.kill();
    assert!(!pg.is_running());
    assert!(!pg.is_ready());
    assert!(pg.psql("app", "SELECT 1").is_err());
    pg.kill(); // twice is harmless
    pg.restart().unwrap();
    assert_ne!(pg.pid().unwrap(), before);
    assert_eq!(pg.psql("app", "SELECT n FROM t").unwrap(), "7");
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let pg = PostgresServer::start().unwrap();
    let dir = pg.dir().to_path_buf();
    let pid = pg.pid().unwrap();
    drop(pg);
    assert!(!dir.exists());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn missing_binaries_say_how_to_install_postgresql() {
    let empty = tempfile::tempdir().unwrap();
    for bindir in [empty.path(), std::path::Path::new("/nonexistent/pg/bin")] {
        let err = PostgresServer::start_with(bindir).unwrap_err();
        assert!(
            matches!(err, TestkitError::PostgresNotFound { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("apt-get install postgresql"), "{message}");
        assert!(message.contains("./scripts/test"), "{message}");
        assert!(message.contains("PALISADE_PG_BINDIR"), "{message}");
        assert!(message.contains("never skip"), "{message}");
    }
}

#[test]
fn a_frozen_server_answers_nothing_until_thawed() {
    let mut pg = PostgresServer::start().unwrap();
    pg.freeze();
    assert!(!pg.is_ready(), "pg_isready answered a frozen server");
    pg.thaw();
    assert_eq!(pg.psql("postgres", "SELECT 1").unwrap(), "1");
    // Killing a frozen server works too.
    pg.freeze();
    pg.kill();
    assert!(!pg.is_running());
    pg.restart().unwrap();
    assert_eq!(pg.psql("postgres", "SELECT 2").unwrap(), "2");
}

#[test]
fn a_durable_server_syncs_its_commits() {
    let pg = PostgresServer::start_durable().unwrap();
    assert_eq!(pg.psql("postgres", "SHOW fsync").unwrap(), "on");
    assert_eq!(pg.psql("postgres", "SHOW full_page_writes").unwrap(), "on");
}
