#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: panics are the assertions
//! The hashing service: ceilings, rehash, pepper, the bounded pool.

mod common;

use std::time::Duration;

use futures_util::future::join_all;
use palisade_auth::hash::{Ceiling, HashError, HashParams, Hasher, Verdict, calibrate};
use secrecy::{SecretBox, SecretString};

/// Small parameters: debug builds of argon2 are slow.
const FAST: HashParams = HashParams::new(256, 1, 1);

fn pw(s: &str) -> SecretString {
    SecretString::from(s)
}

fn pepper(byte: u8) -> SecretBox<[u8]> {
    SecretBox::new(vec![byte; 32].into_boxed_slice())
}

/// Over-ceiling parameters are refused on the first poll, before a job is
/// queued — so before a worker allocates the memory they ask for: nothing is
/// pending and no job ran (the job-time average is unchanged).
#[tokio::test]
async fn a_tampered_hash_asking_for_gigabytes_is_refused_without_allocating() {
    use futures_util::FutureExt;
    let hasher = Hasher::builder().params(FAST).build().unwrap();
    let good = hasher.hash(&pw("a long passphrase")).await.unwrap();
    let job_time = hasher.job_time();
    let (head, tail) = good.split_once("$m=256,t=1,p=1$").unwrap();
    for params in [
        "m=4194304,t=1,p=1",
        "m=256,t=100000,p=1",
        "m=256,t=1,p=255",
        "m=65537,t=1,p=1",
    ] {
        let tampered = format!("{head}${params}${tail}");
        assert_eq!(
            hasher
                .verify(&pw("a long passphrase"), &tampered)
                .now_or_never(),
            Some(Err(HashError::InvalidHash)),
            "{params}"
        );
    }
    assert_eq!(hasher.pending(), 0);
    assert_eq!(hasher.job_time(), job_time, "a job ran");
    // Not argon2id, not a PHC string, oversized.
    let argon2i = good.replacen("argon2id", "argon2i", 1);
    for bad in [
        argon2i.as_str(),
        "plain",
        "$argon2id$v=19$",
        &"$".repeat(600),
    ] {
        assert_eq!(
            hasher.verify(&pw("x"), bad).await,
            Err(HashError::InvalidHash)
        );
    }
}

/// `phc` (made with `params`) with its parameter string replaced by `to`.
fn tamper(phc: &str, params: HashParams, to: &str) -> String {
    let from = format!("$m={},t={},p={}$", params.m_kib, params.t, params.p);
    assert!(phc.contains(&from), "{phc}");
    phc.replacen(&from, &format!("${to}$"), 1)
}

const PASSWORD: &str = "a long passphrase";

/// The default ceiling (64 MiB, 10 iterations, 4 lanes) is inclusive: a
/// hash stored with exactly those parameters verifies (right and wrong
/// password); one more of any of them is refused before any work.
#[tokio::test]
async fn a_stored_hash_exactly_at_the_default_ceiling_is_verified_and_one_above_is_refused() {
    let c = Ceiling::default();
    assert_eq!(
        (c.m_kib, c.t, c.p),
        (65_536, 10, 4),
        "the documented ceiling"
    );
    let at = HashParams::new(c.m_kib, c.t, c.p);
    let hasher = Hasher::builder().params(FAST).build().unwrap();
    let phc = common::unnormalised_hash(PASSWORD, at);
    assert_eq!(hasher.verify(&pw(PASSWORD), &phc).await, Ok(true));
    assert_eq!(hasher.verify(&pw("another one"), &phc).await, Ok(false));
    for above in ["m=65537,t=10,p=4", "m=65536,t=11,p=4", "m=65536,t=10,p=5"] {
        assert_eq!(
            hasher.verify(&pw(PASSWORD), &tamper(&phc, at, above)).await,
            Err(HashError::InvalidHash),
            "{above}"
        );
    }
}

/// A configured ceiling is inclusive too, for hashing and for stored hashes:
/// parameters equal to it build and verify, one above is refused.
#[tokio::test]
async fn a_configured_ceiling_accepts_its_own_parameters_and_refuses_one_more() {
    let ceiling = Ceiling {
        m_kib: 512,
        t: 2,
        p: 2,
    };
    let at = HashParams::new(512, 2, 2);
    let hasher = Hasher::builder()
        .params(at)
        .ceiling(ceiling)
        .build()
        .unwrap();
    let phc = hasher.hash(&pw(PASSWORD)).await.unwrap();
    assert!(phc.contains("$m=512,t=2,p=2$"), "{phc}");
    assert_eq!(hasher.verify(&pw(PASSWORD), &phc).await, Ok(true));
    // A hasher with lower parameters under the same ceiling verifies it.
    let lower = Hasher::builder()
        .params(FAST)
        .ceiling(ceiling)
        .build()
        .unwrap();
    assert_eq!(lower.verify(&pw(PASSWORD), &phc).await, Ok(true));
    for above in ["m=513,t=2,p=2", "m=512,t=3,p=2", "m=512,t=2,p=3"] {
        assert_eq!(
            lower.verify(&pw(PASSWORD), &tamper(&phc, at, above)).await,
            Err(HashError::InvalidHash),
            "{above}"
        );
    }
    for params in [
        HashParams::new(513, 2, 2),
        HashParams::new(512, 3, 2),
        HashParams::new(512, 2, 3),
    ] {
        assert!(
            Hasher::builder()
                .params(params)
                .ceiling(ceiling)
                .build()
                .is_err(),
            "{params:?}"
        );
    }
}

#[tokio::test]
async fn weaker_hashes_need_a_rehash() {
    let weak = Hasher::builder().params(FAST).build().unwrap();
    let strong = Hasher::builder()
        .params(HashParams::new(512, 2, 1))
        .build()
        .unwrap();
    let phc = weak.hash(&pw("passphrase one")).await.unwrap();
    assert!(strong.needs_rehash(&phc));
    assert!(!weak.needs_rehash(&phc));
    // Still verifies: login works, then the app rehashes.
    assert!(strong.verify(&pw("passphrase one"), &phc).await.unwrap());
    assert!(strong.needs_rehash("not a hash"));
}

#[tokio::test]
async fn peppers_are_required_identified_and_rotatable() {
    let old = Hasher::builder()
        .params(FAST)
        .pepper("k1", pepper(1))
        .build()
        .unwrap();
    let phc = old.hash(&pw("peppered words")).await.unwrap();
    assert!(phc.contains("keyid="), "{phc}");
    assert!(old.verify(&pw("peppered words"), &phc).await.unwrap());
    // Without the pepper the hash cannot be verified (nor brute-forced).
    let none = Hasher::builder().params(FAST).build().unwrap();
    assert_eq!(
        none.verify(&pw("peppered words"), &phc).await,
        Err(HashError::InvalidHash)
    );
    // A wrong key under the same id fails.
    let wrong = Hasher::builder()
        .params(FAST)
        .pepper("k1", pepper(2))
        .build()
        .unwrap();
    assert!(!wrong.verify(&pw("peppered words"), &phc).await.unwrap());
    // Rotation: k2 current, k1 previous.
    let rotated = Hasher::builder()
        .params(FAST)
        .pepper("k2", pepper(3))
        .previous_pepper("k1", pepper(1))
        .build()
        .unwrap();
    assert!(rotated.verify(&pw("peppered words"), &phc).await.unwrap());
    assert!(rotated.needs_rehash(&phc));
    let fresh = rotated.hash(&pw("peppered words")).await.unwrap();
    assert!(!rotated.needs_rehash(&fresh));
    // Bad pepper configuration is refused.
    assert!(
        Hasher::builder()
            .pepper("bad id!", pepper(1))
            .build()
            .is_err()
    );
    assert!(
        Hasher::builder()
            .pepper("k", SecretBox::new(vec![1; 8].into_boxed_slice()))
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn a_saturated_pool_answers_busy_instead_of_queueing_forever() {
    let hasher = Hasher::builder()
        .params(HashParams::new(8192, 3, 1))
        .workers(1)
        .queue(2)
        .build()
        .unwrap();
    let password = pw("a password to hash");
    let jobs: Vec<_> = (0..10).map(|_| hasher.hash(&password)).collect();
    let results = join_all(jobs).await;
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(HashError::Busy { .. })))
        .count();
    let done = results.iter().filter(|r| r.is_ok()).count();
    assert!(busy >= 7, "{busy} busy");
    assert!((1..=3).contains(&done), "{done} done");
}

#[tokio::test]
async fn jobs_that_waited_past_the_queue_timeout_are_refused() {
    let hasher = Hasher::builder()
        .params(HashParams::new(8192, 3, 1))
        .workers(1)
        .queue(8)
        .queue_timeout(Duration::ZERO)
        .build()
        .unwrap();
    let password = pw("a password to hash");
    let results = join_all((0..4).map(|_| hasher.hash(&password))).await;
    // The first job may be picked up at once; the others waited.
    assert!(
        results
            .iter()
            .filter(|r| matches!(r, Err(HashError::Busy { .. })))
            .count()
            >= 3
    );
}

/// A 1 MB password is refused on the first poll, before a job is queued:
/// no job is pending and none ran (the job-time average, which every job
/// done moves, is unchanged; a control job moves it).
#[tokio::test]
async fn a_megabyte_password_is_refused_before_any_hashing() {
    use futures_util::FutureExt;
    let hasher = Hasher::builder().params(FAST).workers(1).build().unwrap();
    let before = hasher.job_time();
    let huge = pw(&"a".repeat(1 << 20));
    let phc = hasher.hash(&pw("a stored password")).await.unwrap();
    let before_refusals = hasher.job_time();
    assert_ne!(before_refusals, before, "a job done moves the average");
    assert_eq!(
        hasher.hash(&huge).now_or_never(),
        Some(Err(HashError::TooLong))
    );
    assert_eq!(
        hasher.verify(&huge, &phc).now_or_never(),
        Some(Err(HashError::TooLong))
    );
    assert_eq!(
        hasher.verify_dummy(&huge).now_or_never(),
        Some(Err(HashError::TooLong))
    );
    // A job that had been queued would be pending, or done and recorded
    // (the worker records before it stops counting a job).
    assert_eq!(hasher.pending(), 0);
    assert_eq!(hasher.job_time(), before_refusals, "a hash ran");
    // The longest accepted password is hashed.
    let longest = pw(&"a".repeat(palisade_auth::hash::MAX_PASSWORD_BYTES));
    assert!(hasher.hash(&longest).await.is_ok());
    assert_ne!(hasher.job_time(), before_refusals);
}

#[tokio::test]
async fn the_dummy_verifies_and_no_hash_is_in_the_debug_output() {
    let hasher = Hasher::builder().params(FAST).build().unwrap();
    hasher.verify_dummy(&pw("whatever")).await.unwrap();
    assert!(!format!("{hasher:?}").contains("argon2id$"));
}

#[test]
fn calibration_reports_timings() {
    let c = calibrate(FAST, 2, 8).unwrap();
    assert!(c.median > Duration::ZERO && c.p99 >= c.median && c.per_second > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturation_is_visible_before_submitting() {
    let hasher = Hasher::builder()
        .params(HashParams::new(32_768, 4, 1))
        .workers(1)
        .queue(1)
        .build()
        .unwrap();
    assert!(!hasher.saturated());
    // Each job retries while the worker has not yet taken the previous one
    // off the queue (a send can find the one queue slot still occupied).
    let jobs: Vec<_> = (0..2)
        .map(|_| {
            let hasher = hasher.clone();
            tokio::spawn(async move {
                for _ in 0..2000 {
                    match hasher.hash(&pw("a password to hash")).await {
                        Err(HashError::Busy { .. }) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        other => return other,
                    }
                }
                Err(HashError::Internal)
            })
        })
        .collect();
    // Poll (bounded) until both jobs are accepted; no time window is crossed.
    let mut seen = false;
    for _ in 0..2000 {
        if hasher.saturated() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(seen, "one running + one queued fills a pool of 1 + 1");
    for j in jobs {
        j.await.unwrap().unwrap();
    }
    // The worker releases a place just after replying: poll for it too.
    let mut freed = false;
    for _ in 0..2000 {
        if !hasher.saturated() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(freed, "finished jobs free their places");
}

#[tokio::test]
async fn passwords_are_hashed_in_nfkc_form_and_unnormalised_old_hashes_still_verify() {
    let hasher = Hasher::builder().params(FAST).build().unwrap();
    let wide = "ｃｏｒｒｅｃｔ\u{3000}ｈｏｒｓｅ ｂａｔｔｅｒｙ";
    let plain = "correct horse battery";
    let phc = hasher.hash(&pw(wide)).await.unwrap();
    assert_eq!(
        hasher.check(&pw(plain), &phc).await.unwrap(),
        Verdict::Match
    );
    assert_eq!(hasher.check(&pw(wide), &phc).await.unwrap(), Verdict::Match);
    assert_eq!(
        hasher.check(&pw("correct horse"), &phc).await.unwrap(),
        Verdict::Mismatch
    );
    // A hash stored before normalisation: of the bytes as typed.
    let legacy = common::unnormalised_hash(wide, FAST);
    assert_eq!(
        hasher.check(&pw(wide), &legacy).await.unwrap(),
        Verdict::MatchUnnormalised
    );
    assert!(hasher.verify(&pw(wide), &legacy).await.unwrap());
    assert_eq!(
        hasher.check(&pw(plain), &legacy).await.unwrap(),
        Verdict::Mismatch
    );
}

#[test]
fn the_pending_count_is_exact_after_a_multithreaded_stress() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Tiny parameters: jobs finish in microseconds, so workers often finish
    // a job while its submitter is still between the send and the next
    // statement — the window where the old count leaked.
    let hasher = Hasher::builder()
        .params(HashParams::new(8, 1, 1))
        .workers(2)
        .queue(16)
        .nice(0)
        .build()
        .unwrap();
    let (done, busy) = rt.block_on(async {
        let tasks: Vec<_> = (0..8u32)
            .map(|t| {
                let hasher = hasher.clone();
                tokio::spawn(async move {
                    let (mut done, mut busy) = (0u32, 0u32);
                    for i in 0..5_000u32 {
                        let password = pw("stress password");
                        if (i + t) % 7 == 0 {
                            // Abandon the job after its first poll: the
                            // worker skips it and must still count it done.
                            let _ = futures_util::FutureExt::now_or_never(hasher.hash(&password));
                        } else {
                            match hasher.hash(&password).await {
                                Ok(_) => done += 1,
                                Err(HashError::Busy { .. }) => busy += 1,
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                    (done, busy)
                })
            })
            .collect();
        let mut totals = (0, 0);
        for t in tasks {
            let (d, b) = t.await.unwrap();
            totals = (totals.0 + d, totals.1 + b);
        }
        totals
    });
    assert!(done > 10_000, "{done} hashed, {busy} busy");
    // The workers decrement just after replying: wait (bounded) for the last.
    let mut pending = hasher.pending();
    for _ in 0..10_000 {
        if pending == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        pending = hasher.pending();
    }
    assert_eq!(pending, 0, "no job may leak from the count");
    assert!(!hasher.saturated());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_by_time_not_by_a_small_count() {
    // One thread; ~1-5 ms a hash: the default queue holds what it finishes
    // within the 2 s queue timeout, so a burst of 64 is served in full.
    let hasher = Hasher::builder()
        .params(HashParams::new(4096, 1, 1))
        .workers(1)
        .build()
        .unwrap();
    assert!(hasher.capacity() > 64, "capacity {}", hasher.capacity());
    let burst = pw("a burst of logins");
    let results = join_all((0..64).map(|_| hasher.hash(&burst))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // With a 30 ms timeout, only what fits in 30 ms is accepted; the rest is
    // refused at once with a Retry-After of at least a second.
    let hasher = Hasher::builder()
        .params(HashParams::new(4096, 1, 1))
        .workers(1)
        .queue_timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    let flood = pw("a flood of logins");
    let results = join_all((0..200).map(|_| hasher.hash(&flood))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let busy: Vec<Duration> = results
        .iter()
        .filter_map(|r| match r {
            Err(HashError::Busy { retry_after }) => Some(*retry_after),
            _ => None,
        })
        .collect();
    assert_eq!(ok + busy.len(), 200);
    assert!(ok >= 1 && busy.len() > 100, "{ok} ok, {} busy", busy.len());
    assert!(
        busy.iter()
            .all(|d| *d >= Duration::from_secs(1) && d.subsec_nanos() == 0)
    );
}
