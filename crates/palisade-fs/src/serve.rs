//! Serving stored files so that a browser never runs them.
//!
//! [`download`] opens a file through a [`SafeRoot`] and answers with:
//!
//! - `Content-Type`: the [sniffed](crate::sniff) type, made inert by
//!   [`served_content_type`](crate::sniff::served_content_type) (HTML, SVG,
//!   XML, scripts and unknown bytes are `application/octet-stream`), never
//!   the extension's or the uploader's claim;
//! - `X-Content-Type-Options: nosniff`;
//! - `Content-Disposition: attachment` with an RFC 6266 / RFC 5987 filename
//!   ([`content_disposition`]): an ASCII fallback in `filename` and the exact
//!   UTF-8 name in `filename*`;
//! - `Content-Security-Policy: default-src 'none'; sandbox`, in case a
//!   browser renders it anyway;
//! - `Content-Length`, and the file streamed in 64 KiB chunks.
//!
//! Range requests and conditional requests are not handled.
//!
//! # Example
//!
//! ```
//! use palisade_fs::{SafeRoot, path::PathRules, serve};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("page.png"), "<html><script>alert(1)</script>").unwrap();
//! let root = SafeRoot::open_dir(dir.path()).unwrap();
//!
//! let path = PathRules::new().parse("page.png").unwrap();
//! let response = serve::download(&root, &path).await.unwrap();
//! assert_eq!(response.headers()["content-type"], "application/octet-stream");
//! assert_eq!(response.headers()["x-content-type-options"], "nosniff");
//! assert_eq!(
//!     response.headers()["content-disposition"],
//!     "attachment; filename=\"page.png\"; filename*=UTF-8''page.png"
//! );
//! # });
//! ```

use std::io;
use std::os::unix::fs::FileExt;

use bytes::Bytes;
use http::header::{
    CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use tokio::io::AsyncReadExt;

use crate::error::FsError;
use crate::path::SafePath;
use crate::root::SafeRoot;
use crate::sniff::{SNIFF_LEN, served_content_type, sniff};

/// The body of a [`download`] response: the file, streamed.
pub type FileBody = UnsyncBoxBody<Bytes, io::Error>;

/// The size of the chunks a download is streamed in.
const CHUNK: u64 = 64 * 1024;

/// RFC 5987 `attr-char`: everything else is percent-encoded in `filename*`.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// A file opened for download, with what [`download`] sends about it.
#[derive(Debug)]
pub struct Download {
    /// The open file.
    pub file: std::fs::File,
    /// Its size when it was opened.
    pub len: u64,
    /// The sniffed type (before [`served_content_type`]).
    pub sniffed: &'static str,
}

/// Opens `path` for download and sniffs its first bytes (blocking; see
/// [`download`] for the async, ready-made response).
pub fn open_download(root: &SafeRoot, path: &SafePath) -> Result<Download, FsError> {
    let file = root.open(path)?;
    let len = file.metadata()?.len();
    let mut head = vec![0_u8; usize::try_from(len).unwrap_or(SNIFF_LEN).min(SNIFF_LEN)];
    let mut filled = 0;
    while let Some(rest) = head.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match file.read_at(rest, filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(FsError::from(error)),
        }
    }
    head.truncate(filled);
    Ok(Download {
        file,
        len,
        sniffed: sniff(&head),
    })
}

/// The `200` response for downloading `path` (see the [module docs](self)).
/// Errors map to problems with [`FsError::problem`] (404 for anything that is
/// not a readable regular file inside the root).
pub async fn download(root: &SafeRoot, path: &SafePath) -> Result<Response<FileBody>, FsError> {
    let target = path.clone();
    let opened = root
        .blocking(move |root| open_download(root, &target))
        .await?;
    let mut response = Response::new(file_body(opened.file, opened.len));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(served_content_type(opened.sniffed)),
    );
    headers.insert(CONTENT_LENGTH, HeaderValue::from(opened.len));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CONTENT_DISPOSITION, content_disposition(path.file_name()));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(response)
}

/// Streams at most `len` bytes of `file`.
pub fn file_body(file: std::fs::File, len: u64) -> FileBody {
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold((file, len), |(mut file, remaining)| async move {
        if remaining == 0 {
            return None;
        }
        let size = usize::try_from(remaining.min(CHUNK)).unwrap_or(64 * 1024);
        let mut buf = vec![0_u8; size];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok(Frame::data(Bytes::from(buf))),
                    (file, remaining - n as u64),
                ))
            }
            Err(error) => Some((Err(error), (file, 0))),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>`
/// (RFC 6266 with RFC 5987 encoding). The fallback keeps printable ASCII
/// except `"`, `\`, `%`, `;` and `,`, replacing everything else with `_`; a
/// name with nothing left becomes `download`. Control characters cannot
/// reach the header in either form.
pub fn content_disposition(filename: &str) -> HeaderValue {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() || c == ' ') && !matches!(c, '"' | '\\' | '%' | ';' | ',') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let fallback = if fallback.trim_matches(['_', ' ', '.']).is_empty() {
        "download"
    } else {
        fallback.as_str()
    };
    let encoded = utf8_percent_encode(filename, ATTR_CHAR);
    HeaderValue::try_from(format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disposition_forms() {
        assert_eq!(
            content_disposition("résumé 2024.pdf"),
            "attachment; filename=\"r_sum_ 2024.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf"
        );
        assert_eq!(
            content_disposition("a\"b\\c;d\r\n.txt"),
            "attachment; filename=\"a_b_c_d__.txt\"; filename*=UTF-8''a%22b%5Cc%3Bd%0D%0A.txt"
        );
        assert_eq!(
            content_disposition("日本.txt"),
            "attachment; filename=\"__.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC.txt"
        );
        assert_eq!(
            content_disposition("日本"),
            "attachment; filename=\"download\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC"
        );
    }
}
