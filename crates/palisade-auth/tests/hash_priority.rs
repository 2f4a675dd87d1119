//! The hashing threads' scheduling priority, in a test binary of its own:
//! no other test's pool runs in this process, so every `palisade-hash-*`
//! thread read from `/proc` belongs to the pool under test.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions

use std::time::Duration;

use palisade_auth::hash::{HashParams, Hasher};

/// The nice value in a `/proc/.../stat` line: field 19, the 17th after the
/// parenthesised command name (which may itself hold spaces).
fn nice_in(stat: &str) -> i64 {
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

/// The nice value of every hashing thread of this process.
fn hashing_threads() -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        // A thread that exited since the listing has no files left.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if let (true, Ok(stat)) = (
            comm.starts_with("palisade-hash"),
            std::fs::read_to_string(dir.join("stat")),
        ) {
            out.push(nice_in(&stat));
        }
    }
    out
}

/// Polls (bounded: the threads set their priority as they start, and stop
/// once the last `Hasher` is dropped) until the hashing threads are `want`.
fn wait_for_threads(want: &[i64]) {
    let mut seen = Vec::new();
    for _ in 0..5_000 {
        seen = hashing_threads();
        if seen == want {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("hashing threads {seen:?}, expected {want:?}");
}

#[test]
fn hashing_threads_run_at_nice_ten_by_default_below_the_rest_of_the_process() {
    let own = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    // Raising one's priority needs a privilege: a test run under a nice
    // above 10 leaves the threads there.
    let default = 10.max(own);
    let params = HashParams::new(256, 1, 1);

    let hasher = Hasher::builder().params(params).workers(2).build().unwrap();
    wait_for_threads(&[default, default]);
    drop(hasher);
    wait_for_threads(&[]);

    let hasher = Hasher::builder()
        .params(params)
        .workers(2)
        .nice(7)
        .build()
        .unwrap();
    wait_for_threads(&[7.max(own), 7.max(own)]);
    drop(hasher);
    wait_for_threads(&[]);

    // 0 keeps the process's priority.
    let _hasher = Hasher::builder()
        .params(params)
        .workers(1)
        .nice(0)
        .build()
        .unwrap();
    wait_for_threads(&[own]);
    // The calling thread is never lowered.
    let after = nice_in(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    assert_eq!(after, own);
}
