//! A JSON log format with `request_id` at the top level of every line.
//!
//! tracing-subscriber's stock JSON format nests span fields under
//! `span`/`spans`, so a log query for one request has to dig. [`JsonFormat`]
//! writes one flat object per line:
//!
//! ```text
//! {"timestamp":"2026-11-22T09:00:00.123456Z","level":"INFO","target":"app","message":"saved","order":42,"request_id":"0193…"}
//! ```
//!
//! The `request_id` is that of the request the task is serving
//! ([`RequestIdLayer`](crate::RequestIdLayer) sets it wherever the request's
//! code runs, as a task-local would), so lines from handlers, from inner
//! layers and from tasks started with [`spawn`](crate::spawn) all carry it,
//! at no cost per request. Outside a request, the nearest enclosing span
//! with a `request_id` field is used ([`RequestIdRecorder`] must then be in
//! the subscriber, as [`init`](crate::init) does).
//!
//! Fields whose names say they hold a secret (`authorization`, `cookie`,
//! `password`, `token`, `secret`, `api_key`...; configurable) are written as
//! `"[REDACTED]"` whatever their value.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use palisade_telemetry::{JsonFormat, RequestIdRecorder};
//! use tracing_subscriber::prelude::*;
//!
//! #[derive(Clone, Default)]
//! struct Buf(Arc<Mutex<Vec<u8>>>);
//! impl std::io::Write for Buf {
//!     fn write(&mut self, b: &[u8]) -> std::io::Result<usize> { self.0.lock().unwrap().write(b) }
//!     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! }
//! let buf = Buf::default();
//! let writer = buf.clone();
//! let subscriber = tracing_subscriber::registry()
//!     .with(RequestIdRecorder)
//!     .with(tracing_subscriber::fmt::layer().event_format(JsonFormat::default()).with_writer(move || writer.clone()));
//! tracing::subscriber::with_default(subscriber, || {
//!     let span = tracing::error_span!("request", request_id = "req-7");
//!     let _e = span.enter();
//!     tracing::info!(password = "hunter2", "login");
//! });
//! let line: serde_json::Value = serde_json::from_slice(&buf.0.lock().unwrap()).unwrap();
//! assert_eq!(line["request_id"], "req-7");
//! assert_eq!(line["message"], "login");
//! assert_eq!(line["password"], "[REDACTED]");
//! ```

use std::fmt::{self, Write as _};
use std::sync::Arc;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// Field names redacted by default (compared case-insensitively, `-` and `_` alike).
pub const DEFAULT_REDACTED_FIELDS: &[&str] = &[
    "authorization",
    "proxy_authorization",
    "cookie",
    "set_cookie",
    "x_api_key",
    "api_key",
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "refresh_token",
    "client_secret",
    "key",
];

/// The request id of a span, stored in its extensions by [`RequestIdRecorder`].
#[derive(Debug, Clone)]
struct SpanRequestId(String);

/// A tracing layer that remembers the `request_id` field of spans, for
/// [`JsonFormat`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdRecorder;

impl<S> tracing_subscriber::Layer<S> for RequestIdRecorder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        struct Find(Option<String>);
        impl Visit for Find {
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "request_id" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if field.name() == "request_id" {
                    // `%id` arrives as Debug of a Display wrapper: its text.
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut find = Find(None);
        attrs.record(&mut find);
        if let (Some(value), Some(span)) = (find.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(value));
        }
    }
}

/// The JSON line format. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct JsonFormat {
    redacted: Arc<[String]>,
    /// One bit per [`signature`] of a redacted name: most fields are not
    /// redacted, and a clear bit says so without comparing any name.
    signatures: u128,
}

impl Default for JsonFormat {
    fn default() -> Self {
        Self::with_redacted_fields(DEFAULT_REDACTED_FIELDS.iter().copied())
    }
}

fn normalise(name: &str) -> String {
    // Each ASCII byte as `normalise_byte` maps it; other characters stay.
    name.chars()
        .map(|c| u8::try_from(c).map_or(c, |b| char::from(normalise_byte(b))))
        .collect()
}

/// How a name's byte is compared: lowercase, `-` as `_`.
fn normalise_byte(b: u8) -> u8 {
    if b == b'-' {
        b'_'
    } else {
        b.to_ascii_lowercase()
    }
}

/// A bit that depends on the length and the first and last bytes of a
/// name, normalised: names that differ there never share a bit by accident
/// more often than one in 128.
fn signature(name: &str) -> u128 {
    let bytes = name.as_bytes();
    let (first, last) = match (bytes.first(), bytes.last()) {
        (Some(&f), Some(&l)) => (normalise_byte(f), normalise_byte(l)),
        _ => (0, 0),
    };
    let mixed = (bytes.len() as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(u64::from(first) << 8 | u64::from(last))
        .wrapping_mul(0xff51_afd7_ed55_8ccd);
    1u128 << (mixed >> 57)
}

impl JsonFormat {
    /// A format that redacts exactly these field names.
    pub fn with_redacted_fields<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let redacted: Arc<[String]> = names.into_iter().map(|n| normalise(n.as_ref())).collect();
        let signatures = redacted.iter().fold(0, |bits, n| bits | signature(n));
        Self {
            redacted,
            signatures,
        }
    }

    fn is_redacted(&self, name: &str) -> bool {
        if self.signatures & signature(name) == 0 {
            return false;
        }
        // Field names are ASCII identifiers; compare without allocating.
        self.redacted.iter().any(|r| {
            r.len() == name.len()
                && r.bytes()
                    .zip(name.bytes())
                    .all(|(a, b)| a == normalise_byte(b))
        })
    }
}

/// Writes `s` as the contents of a JSON string.
fn escape(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip eight plain bytes at a time: most text needs no escaping.
        // The last few bytes are tested the same way, padded with spaces
        // (never escaped), so short names and values take no byte loop.
        let word = match bytes.get(i..i + 8) {
            Some(word) => u64::from_le_bytes(word.try_into().unwrap_or([0; 8])),
            None => bytes
                .get(i..)
                .unwrap_or_default()
                .iter()
                .rev()
                .fold(0x2020_2020_2020_2020_u64, |word, &b| {
                    word << 8 | u64::from(b)
                }),
        };
        if !needs_escape(word) {
            i += 8;
            continue;
        }
        let Some(&b) = bytes.get(i) else { break };
        let replacement = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => {
                i += 1;
                continue;
            }
        };
        out.write_str(s.get(start..i).unwrap_or(""))?;
        if replacement.is_empty() {
            write!(out, "\\u{b:04x}")?;
        } else {
            out.write_str(replacement)?;
        }
        i += 1;
        start = i;
    }
    out.write_str(s.get(start..).unwrap_or(""))
}

/// Whether any of the eight bytes of `word` is a control character, DEL,
/// `"` (0x22) or a backslash (0x5c): the bytes [`escape`] rewrites.
const fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set in `zero(x)` where the byte of x is zero (no
    // false negatives; false positives only send the byte to the slow path).
    const fn zero(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    // Bytes below 0x20: (b - 0x20) borrows into the high bit, for bytes
    // that do not already have it set (those are non-ASCII, never escaped).
    let below = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let hits = below
        | zero(word ^ (ONES * 0x22))
        | zero(word ^ (ONES * 0x5c))
        | zero(word ^ (ONES * 0x7f));
    hits != 0
}

/// An adapter that escapes everything written through it.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s)
    }
}

struct Fields<'a> {
    writer: &'a mut String,
    format: &'a JsonFormat,
    result: fmt::Result,
    has_request_id: bool,
}

impl Fields<'_> {
    fn key(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        let name = field.name();
        if name == "request_id" {
            self.has_request_id = true;
        }
        self.writer.push_str(",\"");
        // Field names are identifiers: most need no escaping.
        if name.bytes().any(is_special) {
            self.result = escape(self.writer, name);
        } else {
            self.writer.push_str(name);
        }
        self.writer.push_str("\":");
        if self.result.is_ok() && self.format.is_redacted(name) {
            self.writer.push_str("\"[REDACTED]\"");
            return false;
        }
        self.result.is_ok()
    }

    fn string(&mut self, value: fmt::Arguments<'_>) {
        self.result = self
            .writer
            .write_char('"')
            .and_then(|()| Escaping(self.writer).write_fmt(value))
            .and_then(|()| self.writer.write_char('"'));
    }

    fn text(&mut self, value: &str) {
        self.result = self
            .writer
            .write_char('"')
            .and_then(|()| escape(self.writer, value))
            .and_then(|()| self.writer.write_char('"'));
    }
}

/// A byte [`escape`] rewrites.
fn is_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.text(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.string(format_args!("{value:?}"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            self.result = if value < 0 {
                self.writer
                    .write_char('-')
                    .and_then(|()| write_u64(self.writer, value.unsigned_abs()))
            } else {
                write_u64(self.writer, value.unsigned_abs())
            };
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            self.result = write_u64(self.writer, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            self.result = if let Some(millis) = thousandths(value) {
                // Exactly representable with three decimals (latencies in ms):
                // integer formatting, no float formatting.
                write_u64(self.writer, millis / 1_000).and_then(|()| {
                    let frac = millis % 1_000;
                    let digits = [
                        b'.',
                        b'0' + u8::try_from(frac / 100).unwrap_or(0),
                        b'0' + u8::try_from(frac / 10 % 10).unwrap_or(0),
                        b'0' + u8::try_from(frac % 10).unwrap_or(0),
                    ];
                    self.writer
                        .write_str(std::str::from_utf8(&digits).unwrap_or(".000"))
                })
            } else if value.is_finite() {
                write!(self.writer, "{value}")
            } else {
                write!(self.writer, "\"{value}\"")
            };
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.key(field) {
            self.string(format_args!("{value}"));
        }
    }
}

/// Writes `value` in decimal without going through `core::fmt`.
fn write_u64(writer: &mut impl fmt::Write, mut value: u64) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(slot) = buf.get_mut(at) {
            *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
        }
        value /= 10;
        if value == 0 || at == 0 {
            break;
        }
    }
    writer.write_str(std::str::from_utf8(buf.get(at..).unwrap_or(b"0")).unwrap_or("0"))
}

/// `value × 1000` when `value` is a non-negative number with at most three
/// decimals (below 2^53 / 1000), so it can be written from integers exactly.
fn thousandths(value: f64) -> Option<u64> {
    if !(0.0..9.0e12).contains(&value) {
        return None;
    }
    let scaled = (value * 1_000.0).round();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // range checked above
    let millis = scaled as u64;
    #[allow(clippy::cast_precision_loss)] // below 2^53: exact
    let back = millis as f64 / 1_000.0;
    #[allow(clippy::float_cmp)] // an exact round trip is the point
    let exact = back == value;
    exact.then_some(millis)
}

thread_local! {
    /// The formatted second of the last line written by this thread.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// Writes the current time as RFC 3339 UTC with microseconds. The date part
/// is computed once per second per thread.
fn write_timestamp(writer: &mut String) -> fmt::Result {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let prefix = SECOND.with(|cell| {
        let (cached, text) = cell.get();
        if cached == secs {
            text
        } else {
            let text = palisade_core::clock::utc_datetime(secs);
            cell.set((secs, text));
            text
        }
    });
    writer.write_str(std::str::from_utf8(&prefix).unwrap_or("0000-00-00T00:00:00"))?;
    let mut micros = *b".000000Z";
    let mut v = now.subsec_micros();
    for slot in micros.iter_mut().take(7).skip(1).rev() {
        *slot = b'0' + u8::try_from(v % 10).unwrap_or(0);
        v /= 10;
    }
    writer.write_str(std::str::from_utf8(&micros).unwrap_or(".000000Z"))
}

fn write_request_id(writer: &mut String, id: &str) -> fmt::Result {
    writer.write_str(",\"request_id\":\"")?;
    escape(writer, id)?;
    writer.write_char('"')
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // The line is built in a reused buffer of this thread, where every
        // small write is an inlined copy, and handed over in one write. A
        // field whose `Debug` logs re-enters here: that line gets a buffer
        // of its own.
        LINE.with(|cell| {
            if let Ok(mut line) = cell.try_borrow_mut() {
                line.clear();
                self.write_line(ctx, &mut line, event)?;
                writer.write_str(&line)
            } else {
                let mut line = String::new();
                self.write_line(ctx, &mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

thread_local! {
    static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(512));
}

impl JsonFormat {
    fn write_line<S, N>(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: &mut String,
        event: &Event<'_>,
    ) -> fmt::Result
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(writer)?;
        writer.write_str(match *meta.level() {
            Level::ERROR => "\",\"level\":\"ERROR\",\"target\":\"",
            Level::WARN => "\",\"level\":\"WARN\",\"target\":\"",
            Level::INFO => "\",\"level\":\"INFO\",\"target\":\"",
            Level::DEBUG => "\",\"level\":\"DEBUG\",\"target\":\"",
            Level::TRACE => "\",\"level\":\"TRACE\",\"target\":\"",
        })?;
        escape(writer, meta.target())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            writer,
            format: self,
            result: Ok(()),
            has_request_id: false,
        };
        event.record(&mut fields);
        fields.result?;
        if !fields.has_request_id {
            // The task's request first (no span needed), else a span's field.
            match crate::request_id::with_current_id(|id| write_request_id(writer, id)) {
                Some(result) => result?,
                None => {
                    if let Some(scope) = ctx.event_scope() {
                        for span in scope {
                            if let Some(r) = span.extensions().get::<SpanRequestId>() {
                                write_request_id(writer, &r.0)?;
                                break;
                            }
                        }
                    }
                }
            }
        }
        writer.write_str("}\n")
    }
}

#[cfg(test)]
mod tests;
