//! A log writer that never blocks and never wakes anyone per line.
//!
//! Lines are appended to a shared, bounded buffer under a short lock; a
//! background thread swaps the buffer out every 10 ms (or as soon as it is
//! half full) and writes it in one call. A request never waits for the sink:
//! when the buffer is full — a stalled pipe, a slow collector — the line is
//! dropped and counted ([`BatchWriter::dropped_lines`]). Dropping the
//! [`BatchGuard`] writes what is left and stops the thread.
//!
//! Compared with a channel per line (tracing-appender), this spares a wake-up
//! system call and a context switch per line, which on a small machine is
//! most of the cost of logging.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use palisade_telemetry::writer::BatchWriter;
//!
//! let (writer, guard) = BatchWriter::new(Vec::new(), 1 << 20);
//! writer.clone().write_all(b"{\"message\":\"hello\"}\n").unwrap();
//! assert_eq!(writer.dropped_lines(), 0);
//! drop(guard); // flushes
//! ```

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the background thread writes what accumulated.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    capacity: usize,
    wake: Condvar,
    done: AtomicBool,
    dropped: AtomicU64,
}

/// The writing end; cheap to clone, one per log line.
#[derive(Debug, Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the background thread alive; dropping it flushes and stops it.
#[derive(Debug)]
pub struct BatchGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchWriter {
    /// A writer over `sink`, buffering at most `capacity` bytes.
    pub fn new<W: Write + Send + 'static>(sink: W, capacity: usize) -> (Self, BatchGuard) {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Vec::with_capacity(capacity.min(1 << 20))),
            capacity,
            wake: Condvar::new(),
            done: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("palisade-log".to_owned())
            .spawn(move || drain(&worker, sink))
            .ok();
        (
            Self {
                shared: shared.clone(),
            },
            BatchGuard { shared, thread },
        )
    }

    /// Lines dropped because the buffer was full.
    pub fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

fn drain<W: Write>(shared: &Shared, mut sink: W) {
    let mut spare = Vec::new();
    loop {
        let done = {
            let Ok(mut buffer) = shared.buffer.lock() else {
                return;
            };
            if buffer.is_empty() && !shared.done.load(Ordering::Acquire) {
                buffer = match shared.wake.wait_timeout(buffer, FLUSH_INTERVAL) {
                    Ok((b, _)) => b,
                    Err(_) => return,
                };
            }
            std::mem::swap(&mut *buffer, &mut spare);
            shared.done.load(Ordering::Acquire) && spare.is_empty()
        };
        if !spare.is_empty() {
            // A failing sink loses these lines; logging must not take the
            // service down with it.
            let _ = sink.write_all(&spare).and_then(|()| sink.flush());
            spare.clear();
        }
        if done {
            return;
        }
    }
}

impl Write for BatchWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let Ok(mut buffer) = self.shared.buffer.lock() else {
            return Ok(line.len());
        };
        if buffer.len() + line.len() > self.shared.capacity {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        buffer.extend_from_slice(line);
        let half_full = buffer.len() > self.shared.capacity / 2;
        drop(buffer);
        if half_full {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for BatchGuard {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_testkit::logs::Capture as Sink;
    use std::sync::mpsc;

    #[test]
    fn every_line_arrives_in_order_after_the_guard_drops() {
        let sink = Sink::default();
        let (writer, guard) = BatchWriter::new(sink.clone(), 1 << 20);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1_000 {
                        w.write_all(format!("{t}:{i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = sink.text();
        assert_eq!(text.lines().count(), 4_000);
        for t in 0..4 {
            let mine: Vec<_> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{t}:")))
                .collect();
            let expected: Vec<_> = (0..1_000).map(|i| format!("{t}:{i}")).collect();
            assert_eq!(mine, expected, "lines of one writer keep their order");
        }
        assert_eq!(writer.dropped_lines(), 0);
    }

    /// A sink that blocks until told to go on: a full pipe.
    struct Stalled(mpsc::Receiver<()>);
    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_sink_never_blocks_writers_and_drops_are_counted() {
        let (release, stalled) = mpsc::channel();
        let (writer, guard) = BatchWriter::new(Stalled(stalled), 4_096);
        let mut w = writer.clone();
        let line = [b'x'; 100];
        for _ in 0..100_000 {
            w.write_all(&line).unwrap();
        }
        // 100,000 writes against a sink that never returns: they complete
        // (bounded time, no waiting on the sink) and the overflow is counted.
        assert!(writer.dropped_lines() >= 100_000 - 2 * 41);
        drop(release);
        drop(guard);
    }
}
