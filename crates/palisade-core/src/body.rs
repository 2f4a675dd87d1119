//! The response body of Palisade layers: the inner service's body, or a
//! complete body the layer produced itself (a problem document).
//!
//! Layers that can answer on their own (413, 503, 403...) return
//! `Response<ResponseBody<B>>`; the type keeps the inner body's error type, so
//! stacking layers never boxes.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body::Body as _;
//! use http_body_util::Empty;
//! use palisade_core::body::ResponseBody;
//!
//! let own: ResponseBody<Empty<Bytes>> = ResponseBody::full(Bytes::from_static(b"{}"));
//! assert_eq!(own.size_hint().exact(), Some(2));
//! let inner = ResponseBody::inner(Empty::<Bytes>::new());
//! assert!(inner.is_end_stream());
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Either the inner service's body or a complete body of our own.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { data: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    /// A complete body of our own.
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// An empty body of our own.
    pub fn empty() -> Self {
        Self {
            kind: Kind::Full { data: None },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    #[tokio::test]
    async fn full_body_yields_its_bytes_once() {
        let body: ResponseBody<Empty<Bytes>> = ResponseBody::full(Bytes::from_static(b"hello"));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
    }

    #[test]
    fn empty_body_is_at_end() {
        let body: ResponseBody<Empty<Bytes>> = ResponseBody::empty();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
