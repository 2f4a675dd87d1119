#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The panic hook `init` installs. The hook and the subscriber are
//! process-wide, so each case runs this test binary again as a child process
//! (the `child` test, which does nothing unless asked) and reads what it
//! wrote on stdout and stderr.

use std::process::Command;
use std::sync::Arc;

use palisade_core::RequestId;
use palisade_core::request_id::{RequestContext, TraceId, enter};
use palisade_telemetry::{LogConfig, PanicHook};

const MODE: &str = "PALISADE_PANIC_HOOK_CHILD";
const SECRET: &str = "tok_5up3r5ecret";

/// Run by the tests below in a child process: sets up logging like a
/// service, then panics inside a request and outside any.
#[test]
fn child() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    let logs = match mode.as_str() {
        "redacted" => Some(palisade_telemetry::init(&LogConfig::default()).unwrap()),
        "unredacted" => Some(
            palisade_telemetry::init(&LogConfig::default().without_panic_message_redaction())
                .unwrap(),
        ),
        "no-subscriber" => {
            PanicHook::new().install();
            None
        }
        other => panic!("unknown mode {other}"),
    };
    let context = Arc::new(RequestContext {
        id: RequestId::parse("rid-panic-7").unwrap(),
        trace_id: TraceId([7; 16]),
    });
    let worker = std::thread::Builder::new()
        .name("worker-7".to_owned())
        .spawn(move || {
            let _serving = enter(&context);
            panic!("bad token {SECRET}");
        })
        .unwrap();
    assert!(worker.join().is_err());
    assert!(
        std::thread::spawn(|| panic!("outside {}", 42))
            .join()
            .is_err()
    );
    drop(logs); // flushes
}

struct Output {
    panics: Vec<serde_json::Value>,
    stdout: String,
    stderr: String,
}

fn run_child(mode: &str) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "child failed: {stdout}\n{stderr}");
    // Lines of the test harness may share a line with a log line's start.
    let panics = stdout
        .lines()
        .filter_map(|l| l.find("{\"timestamp\"").map(|at| &l[at..]))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["target"] == "palisade::panic")
        .collect();
    Output {
        panics,
        stdout,
        stderr,
    }
}

/// Issue 17, finding 7: a panic is one JSON log line with its location,
/// thread and request id, and neither the line nor stderr carries the
/// message.
#[test]
fn init_installs_a_json_panic_hook_that_keeps_the_message_out() {
    let out = run_child("redacted");
    assert_eq!(out.panics.len(), 2, "{}\n{}", out.stdout, out.stderr);
    let served = &out.panics[0];
    assert_eq!(served["level"], "ERROR", "{served}");
    assert_eq!(served["request_id"], "rid-panic-7", "{served}");
    assert_eq!(served["thread"], "worker-7", "{served}");
    let location = served["location"].as_str().unwrap();
    assert!(location.starts_with(&format!("{}:", file!())), "{location}");
    let length = format!("bad token {SECRET}").len();
    assert_eq!(served["panic"], format!("[redacted: {length} bytes]"));
    let outside = &out.panics[1];
    assert!(outside.get("request_id").is_none(), "{outside}");
    assert_eq!(outside["panic"], "[redacted: 10 bytes]");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains("5up3r5ecret"), "{text}");
        assert!(!text.contains("outside 42"), "{text}");
    }
    assert!(
        !out.stderr.contains("panicked at"),
        "std's default text replaced: {}",
        out.stderr
    );
}

#[test]
fn the_message_is_logged_only_when_redaction_is_turned_off() {
    let out = run_child("unredacted");
    assert_eq!(out.panics.len(), 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.panics[0]["panic"], format!("bad token {SECRET}"));
    assert_eq!(out.panics[0]["request_id"], "rid-panic-7");
    assert_eq!(out.panics[1]["panic"], "outside 42");
    assert!(!out.stderr.contains(SECRET), "{}", out.stderr);
}

#[test]
fn without_a_subscriber_the_line_goes_to_stderr_as_json() {
    let out = run_child("no-subscriber");
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert_eq!(lines[0]["target"], "palisade::panic");
    assert_eq!(lines[0]["request_id"], "rid-panic-7");
    assert_eq!(lines[0]["thread"], "worker-7");
    assert!(!out.stderr.contains(SECRET) && !out.stderr.contains("panicked at"));
}
