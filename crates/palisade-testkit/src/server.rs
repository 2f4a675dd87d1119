//! What the throwaway servers ([`crate::redis`], [`crate::postgres`]) share.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// How many lines of each log an error quotes.
const LOG_TAIL_LINES: usize = 30;

/// Whether `path` is an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last lines of a log file, or a note saying why there are none.
pub(crate) fn tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            let mut out = String::new();
            for line in lines.iter().skip(start) {
                out.push_str(line);
                out.push('\n');
            }
            out
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => format!("(could not read {}: {e})\n", path.display()),
    }
}
