//! What the sqlx stores share: times as signed integers, and sqlx's errors
//! sorted into failures and unavailability.

use crate::StorageError;

/// SQL integers are signed: times past `i64::MAX` are clamped.
pub(super) fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// SQLSTATE classes and codes that say the server is unreachable, shutting
/// down, overloaded or too slow, rather than that the statement is wrong:
/// `08` connection exceptions, `53` insufficient resources, `57P01`..`57P03`
/// shutdown and start-up, `57014` a cancelled statement (the statement
/// timeout).
fn unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "57014")
}

/// SQLite's primary result codes for a database locked past the busy
/// timeout: `SQLITE_BUSY` (5) and `SQLITE_LOCKED` (6), extended codes
/// included.
fn sqlite_busy(code: &str) -> bool {
    code.parse::<u32>().is_ok_and(|c| matches!(c & 0xff, 5 | 6))
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| unavailable_sqlstate(&c) || sqlite_busy(&c)),
            _ => false,
        };
        if unavailable {
            Self::unavailable(e)
        } else {
            Self::new(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_errors_into_failures_and_unavailability() {
        assert!(StorageError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(
            StorageError::from(sqlx::Error::Io(
                std::io::ErrorKind::ConnectionRefused.into()
            ))
            .is_unavailable()
        );
        assert!(!StorageError::from(sqlx::Error::RowNotFound).is_unavailable());
        assert!(!StorageError::from(sqlx::Error::Protocol("x".into())).is_unavailable());
        for code in ["08006", "57P01", "57014", "53300"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        for code in ["23505", "42P01", "40001"] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
        assert!(sqlite_busy("5") && sqlite_busy("517") && sqlite_busy("6"));
        assert!(!sqlite_busy("19") && !sqlite_busy("2067") && !sqlite_busy("SQLITE"));
    }
}
