//! Capturing log output in tests, to assert on what a service logs (and on
//! what it must never log).
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use palisade_testkit::logs::Capture;
//!
//! let capture = Capture::default();
//! let mut writer = capture.clone();
//! writer.write_all(b"{\"message\":\"hello\",\"request_id\":\"r-1\"}\n").unwrap();
//! assert_eq!(capture.json_lines().unwrap()[0]["request_id"], "r-1");
//! assert!(capture.text().contains("hello"));
//! ```

use std::io;
use std::sync::{Arc, Mutex, PoisonError};

/// An in-memory writer: clone it into a logger (`with_writer(move ||
/// capture.clone())`), read it back in the test.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// Everything written so far, as text (lossy).
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Every line parsed as JSON; an error names the first line that is not.
    pub fn json_lines(&self) -> Result<Vec<serde_json::Value>, String> {
        self.text()
            .lines()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{e}: {l}")))
            .collect()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
