//! Content sniffing: what the bytes are, whatever the name and the client say.
//!
//! [`sniff`] looks at the first bytes of a file:
//!
//! 1. **Markup first.** Browsers have sniffed HTML inside files declared as
//!    images, so anything whose first KiB looks like HTML, SVG, XML, PHP or a
//!    shell script is reported as that type, even when it also starts with a
//!    valid image signature (a polyglot). The check is case-insensitive,
//!    ignores a byte order mark, leading whitespace and NUL bytes (so UTF-16
//!    markup is caught too); the WHATWG list of HTML tags is matched at the
//!    start, and long, distinctive tags (`<script`, `<html`, `<svg`, `<iframe`,
//!    `<!doctype`...) anywhere in the first KiB.
//! 2. **Magic bytes** with the `infer` crate (PNG, JPEG, GIF, WebP, PDF, ZIP...).
//! 3. **Text**: valid UTF-8 without control characters other than tab, CR, LF
//!    and form feed is `text/plain`.
//! 4. Anything else is `application/octet-stream`.
//!
//! [`served_content_type`] maps a sniffed type to the `Content-Type` to send:
//! active types (HTML, SVG, XML, scripts) and unknown ones become
//! `application/octet-stream`.
//!
//! # Example
//!
//! ```
//! use palisade_fs::sniff::{sniff, served_content_type};
//!
//! assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
//! assert_eq!(sniff(b"  <!DOCTYPE html><p>hi"), "text/html");
//! assert_eq!(sniff(b"\x89PNG\r\n\x1a\n<script>alert(1)</script>"), "text/html");
//! assert_eq!(sniff("plain words\n".as_bytes()), "text/plain");
//! assert_eq!(served_content_type("text/html"), "application/octet-stream");
//! assert_eq!(served_content_type("text/plain"), "text/plain; charset=utf-8");
//! ```

/// How many leading bytes [`sniff`] uses (magic bytes and the text check).
pub const SNIFF_LEN: usize = 8192;
/// How many leading bytes are searched for markup.
pub const MARKUP_WINDOW: usize = 1024;

/// `text/html`.
pub const HTML: &str = "text/html";
/// `image/svg+xml`.
pub const SVG: &str = "image/svg+xml";
/// `application/xml`.
pub const XML: &str = "application/xml";
/// A PHP script.
pub const PHP: &str = "application/x-httpd-php";
/// A script with a `#!` line.
pub const SHELL_SCRIPT: &str = "text/x-shellscript";
/// `text/plain`.
pub const TEXT: &str = "text/plain";
/// `application/octet-stream`: unknown bytes.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// Tags matched at the start of the content (after whitespace), as in the
/// WHATWG MIME sniffing standard; each must be followed by a space or `>`.
const LEADING_TAGS: &[&[u8]] = &[
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<body",
    b"<br",
    b"<p",
];

/// Distinctive tags matched anywhere in the first KiB (long enough that
/// compressed image data does not contain them by chance).
const ANYWHERE_TAGS: &[&[u8]] = &[
    b"<!doctype",
    b"<html",
    b"<head",
    b"<body",
    b"<script",
    b"<iframe",
    b"<frame",
    b"<object",
    b"<embed",
    b"<applet",
    b"<style",
    b"<meta",
    b"<link",
    b"<title",
    b"<img",
    b"<form",
    b"<base",
    b"<math",
    b"<xml",
    b"javascript:",
];

/// The type the content looks like (see the [module docs](self)).
pub fn sniff(head: &[u8]) -> &'static str {
    if let Some(markup) = sniff_markup(head) {
        return markup;
    }
    if let Some(kind) = infer::get(head) {
        return kind.mime_type();
    }
    if looks_like_text(head) {
        TEXT
    } else {
        OCTET_STREAM
    }
}

/// The `Content-Type` to serve content sniffed as `sniffed`: inert types as
/// they are (`text/plain` with `charset=utf-8`), everything that a browser
/// could execute or render as a document, and everything unknown, as
/// `application/octet-stream`.
pub fn served_content_type(sniffed: &'static str) -> &'static str {
    match sniffed {
        TEXT => "text/plain; charset=utf-8",
        SVG => OCTET_STREAM,
        "application/pdf" | "application/zip" | "application/gzip" => sniffed,
        other
            if other.starts_with("image/")
                || other.starts_with("audio/")
                || other.starts_with("video/") =>
        {
            other
        }
        _ => OCTET_STREAM,
    }
}

fn sniff_markup(head: &[u8]) -> Option<&'static str> {
    let window = head.get(..MARKUP_WINDOW).unwrap_or(head);
    let text: Vec<u8> = window
        .iter()
        .filter(|&&b| b != 0)
        .map(u8::to_ascii_lowercase)
        .collect();
    let mut lead: &[u8] = &text;
    for bom in [&b"\xef\xbb\xbf"[..], b"\xfe\xff", b"\xff\xfe"] {
        if let Some(rest) = lead.strip_prefix(bom) {
            lead = rest;
            break;
        }
    }
    let start = lead
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(lead.len());
    let lead = lead.get(start..).unwrap_or_default();

    if lead.starts_with(b"#!") {
        return Some(SHELL_SCRIPT);
    }
    if contains(&text, b"<?php") {
        return Some(PHP);
    }
    if contains(&text, b"<svg") {
        return Some(SVG);
    }
    let html_lead = LEADING_TAGS.iter().any(|tag| {
        lead.strip_prefix(*tag)
            .is_some_and(|rest| matches!(rest.first(), Some(b' ' | b'>' | b'\t' | b'\n' | b'\r')))
    }) || lead.starts_with(b"<!--");
    if html_lead || ANYWHERE_TAGS.iter().any(|tag| contains(&text, tag)) {
        return Some(HTML);
    }
    if lead.starts_with(b"<?xml") || contains(&text, b"<!entity") {
        return Some(XML);
    }
    None
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn looks_like_text(head: &[u8]) -> bool {
    let utf8 = match std::str::from_utf8(head) {
        Ok(_) => true,
        // Cut in the middle of a character at the end of the window.
        Err(error) => error.error_len().is_none() && head.len() >= SNIFF_LEN,
    };
    utf8 && !head
        .iter()
        .any(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c)) || b == 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_variants() {
        assert_eq!(sniff(b"<svg xmlns='http://www.w3.org/2000/svg'/>"), SVG);
        assert_eq!(sniff(b"<?xml version='1.0'?><svg/>"), SVG);
        assert_eq!(sniff(b"<?xml version='1.0'?><note/>"), XML);
        assert_eq!(sniff(b"\xef\xbb\xbf\n<HTML>"), HTML);
        assert_eq!(sniff(b"<p>hello"), HTML);
        assert_eq!(sniff(b"<!-- c -->"), HTML);
        assert_eq!(sniff(b"#!/bin/sh\nrm -rf /"), SHELL_SCRIPT);
        assert_eq!(sniff(b"<?php system($_GET['c']);"), PHP);
        // UTF-16LE HTML.
        let utf16: Vec<u8> = "<html>".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(sniff(&[&[0xff, 0xfe][..], &utf16].concat()), HTML);
    }

    #[test]
    fn text_and_binary() {
        assert_eq!(sniff(b""), TEXT);
        assert_eq!(sniff("2 < 3 and a<b".as_bytes()), TEXT);
        assert_eq!(sniff(b"\x00\x01\x02\x03"), OCTET_STREAM);
        assert_eq!(sniff(b"\xc0\xae"), OCTET_STREAM);
        assert_eq!(sniff(b"%PDF-1.7\n"), "application/pdf");
    }

    #[test]
    fn markup_after_the_first_kib_is_not_markup() {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.resize(2048, 0);
        png.extend_from_slice(b"<script>");
        assert_eq!(sniff(&png), "image/png");
    }

    #[test]
    fn served_types_are_inert() {
        for active in [
            HTML,
            SVG,
            XML,
            PHP,
            SHELL_SCRIPT,
            OCTET_STREAM,
            "application/javascript",
        ] {
            assert_eq!(served_content_type(active), OCTET_STREAM);
        }
        assert_eq!(served_content_type("image/png"), "image/png");
    }
}
