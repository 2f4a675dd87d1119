//! The watchdog's decisions at chosen instants (no socket, no sleep), the
//! trackers' bookkeeping, and the accept loop's error classification.
#![allow(clippy::unwrap_used)] // test code: a failed step is a failed test

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::Version;

use super::conn::{InFlight, Tracker};
use super::watch::{Action, Limits, Reason, Watch};

fn limits() -> Limits {
    Limits::new(
        Duration::from_millis(100), // head
        Duration::from_millis(600), // idle
        Duration::from_millis(300), // write
        Duration::from_millis(900), // drain
        Duration::from_millis(50),  // grace
    )
}

/// A connection accepted at `base`, and a clock in milliseconds from it.
fn accepted() -> (Arc<Tracker>, Watch, impl Fn(u64) -> Instant) {
    let base = Instant::now();
    let tracker = Arc::new(Tracker::default());
    let watch = Watch::new(Arc::clone(&tracker), "127.0.0.1:1".parse().unwrap(), base);
    (tracker, watch, move |ms| base + Duration::from_millis(ms))
}

fn check(watch: &mut Watch, at: Instant) -> Option<Action> {
    watch.check(at, &limits(), false)
}

#[test]
fn the_tick_is_a_quarter_of_the_shortest_timeout_within_bounds() {
    assert_eq!(limits().tick, Duration::from_micros(12_500));
    let long = Limits::new(
        Duration::from_secs(10),
        Duration::from_secs(60),
        Duration::from_secs(30),
        Duration::from_secs(30),
        Duration::from_secs(1),
    );
    assert_eq!(long.tick, Duration::from_millis(250));
}

#[test]
fn the_first_head_is_timed_from_the_accept() {
    let (tracker, mut watch, at) = accepted();
    // First looked at late: the deadline still counts from the accept.
    assert_eq!(check(&mut watch, at(99)), None);
    tracker.on_read();
    assert_eq!(
        check(&mut watch, at(100)),
        Some(Action::Cut(Reason::HeadTimeout))
    );
    // Decided once.
    assert_eq!(check(&mut watch, at(200)), None);
}

#[test]
fn an_idle_connection_closes_at_the_idle_timeout_not_the_head_timeout() {
    let (tracker, mut watch, at) = accepted();
    drop(InFlight::start(&tracker, Version::HTTP_11));
    assert_eq!(check(&mut watch, at(10)), None); // idle seen from 10 ms
    assert_eq!(check(&mut watch, at(300)), None);
    assert_eq!(check(&mut watch, at(609)), None);
    assert_eq!(
        check(&mut watch, at(610)),
        Some(Action::Close(Reason::Idle))
    );
    // Then the grace, and a cut if it did not close.
    assert_eq!(check(&mut watch, at(659)), None);
    assert_eq!(
        check(&mut watch, at(660)),
        Some(Action::Cut(Reason::CloseTimeout))
    );
}

#[test]
fn a_later_head_is_timed_from_when_its_first_byte_is_seen() {
    let (tracker, mut watch, at) = accepted();
    drop(InFlight::start(&tracker, Version::HTTP_11));
    assert_eq!(check(&mut watch, at(10)), None);
    tracker.on_read();
    assert!(tracker.head_begun.load(Ordering::Acquire));
    assert_eq!(check(&mut watch, at(500)), None); // begun, seen at 500
    assert_eq!(check(&mut watch, at(599)), None);
    assert_eq!(
        check(&mut watch, at(600)),
        Some(Action::Cut(Reason::HeadTimeout))
    );
}

#[test]
fn requests_between_two_looks_restart_the_clock() {
    let (tracker, mut watch, at) = accepted();
    drop(InFlight::start(&tracker, Version::HTTP_11));
    assert_eq!(check(&mut watch, at(10)), None);
    // Another request came and went, and a third head began, between looks.
    drop(InFlight::start(&tracker, Version::HTTP_11));
    tracker.on_read();
    assert_eq!(check(&mut watch, at(590)), None);
    assert_eq!(check(&mut watch, at(689)), None);
    assert_eq!(
        check(&mut watch, at(690)),
        Some(Action::Cut(Reason::HeadTimeout))
    );
}

#[test]
fn nothing_is_timed_while_a_request_is_in_flight() {
    let (tracker, mut watch, at) = accepted();
    let guard = InFlight::start(&tracker, Version::HTTP_11);
    tracker.on_read(); // its body: no head begins
    assert!(!tracker.head_begun.load(Ordering::Acquire));
    assert_eq!(check(&mut watch, at(10_000)), None);
    drop(guard);
    assert_eq!(check(&mut watch, at(10_001)), None);
}

#[test]
fn reads_on_http2_begin_no_head() {
    let (tracker, mut watch, at) = accepted();
    drop(InFlight::start(&tracker, Version::HTTP_2));
    tracker.on_read(); // a PING or a WINDOW_UPDATE
    assert!(!tracker.head_begun.load(Ordering::Acquire));
    assert_eq!(check(&mut watch, at(10)), None);
    assert_eq!(
        check(&mut watch, at(610)),
        Some(Action::Close(Reason::Idle))
    );
}

#[test]
fn a_write_blocked_without_progress_is_cut_and_progress_restarts_the_clock() {
    let (tracker, mut watch, at) = accepted();
    let _guard = InFlight::start(&tracker, Version::HTTP_11);
    tracker.on_write_blocked();
    assert_eq!(check(&mut watch, at(50)), None); // seen blocked at 50
    assert_eq!(check(&mut watch, at(349)), None);
    // The client read some: blocked again at once, but that is progress.
    tracker.on_written();
    tracker.on_write_blocked();
    assert_eq!(check(&mut watch, at(349)), None);
    assert_eq!(check(&mut watch, at(648)), None);
    assert_eq!(
        check(&mut watch, at(649)),
        Some(Action::Cut(Reason::WriteStalled))
    );
}

#[test]
fn a_frame_hyper_never_takes_is_a_stall_but_a_slow_body_is_not() {
    let (tracker, mut watch, at) = accepted();
    let mut guard = InFlight::start(&tracker, Version::HTTP_2);
    guard.produced();
    assert_eq!(tracker.bodies_waiting.load(Ordering::Acquire), 1);
    assert_eq!(check(&mut watch, at(10)), None);
    // hyper asks for the next frame: the body is slow to produce one (a
    // handler streaming events), which is not the client's stall.
    guard.resumed();
    assert_eq!(check(&mut watch, at(5_000)), None);
    // It produces one hyper never takes (flow control window closed).
    guard.produced();
    assert_eq!(check(&mut watch, at(5_010)), None);
    assert_eq!(
        check(&mut watch, at(5_310)),
        Some(Action::Cut(Reason::WriteStalled))
    );
    drop(guard);
    assert_eq!(tracker.bodies_waiting.load(Ordering::Acquire), 0);
    assert_eq!(tracker.in_flight.load(Ordering::Acquire), 0);
}

#[test]
fn draining_closes_what_is_idle_waits_for_what_is_in_flight_and_cuts_at_the_deadline() {
    let limits = limits();
    let (tracker, mut idle, at) = accepted();
    drop(InFlight::start(&tracker, Version::HTTP_11));
    tracker.on_read(); // even with half a head
    assert_eq!(
        idle.check(at(10), &limits, true),
        Some(Action::Close(Reason::Drained))
    );
    assert_eq!(
        idle.check(at(60), &limits, true),
        Some(Action::Cut(Reason::CloseTimeout))
    );

    let (tracker, mut busy, at) = accepted();
    let _guard = InFlight::start(&tracker, Version::HTTP_11);
    assert_eq!(busy.check(at(10), &limits, true), None); // draining from 10
    assert_eq!(busy.check(at(909), &limits, true), None);
    assert_eq!(
        busy.check(at(910), &limits, true),
        Some(Action::Cut(Reason::DrainDeadline))
    );
}

#[test]
fn an_upgraded_connection_has_no_http_deadline() {
    let (tracker, mut watch, at) = accepted();
    tracker.upgraded.store(true, Ordering::Release);
    assert_eq!(check(&mut watch, at(10_000)), None);
}

#[test]
fn a_connection_is_woken_once_per_change_of_command() {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use super::conn::Command;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&count));
    let tracker = Tracker::default();
    tracker.waker.register(&waker);
    tracker.command(Command::Close);
    assert_eq!(count.0.load(Ordering::Acquire), 1);
    // The same command again (the watchdog closing a draining connection)
    // must not use up the registration the connection relies on...
    tracker.waker.register(&waker);
    tracker.command(Command::Close);
    assert_eq!(count.0.load(Ordering::Acquire), 1);
    // ...so that the cut still wakes it.
    tracker.command(Command::Cut);
    assert_eq!(count.0.load(Ordering::Acquire), 2);
    // A weaker command never undoes a stronger one.
    tracker.waker.register(&waker);
    tracker.command(Command::Close);
    assert_eq!(count.0.load(Ordering::Acquire), 2);
}

#[test]
fn every_request_starts_with_the_peer_address_and_nothing_else() {
    let peer = "192.0.2.7:4242".parse().unwrap();
    let extensions = super::conn::peer_extensions(peer);
    assert_eq!(
        extensions.get::<palisade_core::client_ip::PeerAddr>(),
        Some(&palisade_core::client_ip::PeerAddr(peer))
    );
    #[cfg(feature = "axum")]
    {
        let info = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
        assert_eq!(info.map(|i| i.0), Some(peer));
        assert_eq!(extensions.len(), 2);
    }
    #[cfg(not(feature = "axum"))]
    assert_eq!(extensions.len(), 1);
}

#[test]
fn only_errors_of_one_connection_are_retried_at_once() {
    use super::is_connection_error;
    for kind in [
        io::ErrorKind::ConnectionAborted,
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::ConnectionRefused,
        io::ErrorKind::Interrupted,
    ] {
        assert!(is_connection_error(&io::Error::from(kind)));
    }
    // EMFILE, ENFILE, ENOMEM: back off, keep serving.
    for errno in [24, 23, 12] {
        assert!(!is_connection_error(&io::Error::from_raw_os_error(errno)));
    }
}
