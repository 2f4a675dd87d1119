//! The response future shared by layers that either pass a request on or
//! answer it themselves (a rejection, a preflight).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Response, StatusCode};
//! use palisade_core::future::ResponseFuture;
//!
//! # tokio_test_block_on(async {
//! let early: ResponseFuture<std::future::Ready<Result<Response<Bytes>, ()>>> =
//!     ResponseFuture::early(Response::builder().status(StatusCode::FORBIDDEN).body(Bytes::new()).unwrap());
//! assert_eq!(early.await.unwrap().status(), StatusCode::FORBIDDEN);
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

pin_project! {
    /// Either the inner service's future or a response decided by the layer.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Early { response: Option<Response<Bytes>> },
    }
}

impl<F> ResponseFuture<F> {
    /// Waits for the inner service.
    pub fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    /// Answers with `response`.
    pub fn early(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Early {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            KindProj::Early { response } => {
                // Polled again after completion: answer an empty 500 rather than panic.
                let response = response.take().unwrap_or_else(|| {
                    let mut r = Response::new(Bytes::new());
                    *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                    r
                });
                Poll::Ready(Ok(response.map(ResponseBody::full)))
            }
        }
    }
}
