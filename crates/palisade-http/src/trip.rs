//! A flag a request-body guard raises when it rejects the body, so the layer
//! that installed it can replace whatever the handler answered with the right
//! problem (413, 408) instead of the extractor's generic 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Response;
use http::header::{CONNECTION, HeaderValue};
use palisade_core::ProblemDetails;
use palisade_core::body::ResponseBody;

/// The flag, shared with the `state` the guard reads (a limit, deadlines):
/// one allocation per request for both.
#[derive(Debug)]
pub(crate) struct Trip<T>(Arc<Shared<T>>);

#[derive(Debug)]
struct Shared<T> {
    state: T,
    tripped: AtomicBool,
}

impl<T> Clone for Trip<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> Trip<T> {
    pub(crate) fn new(state: T) -> Self {
        Self(Arc::new(Shared {
            state,
            tripped: AtomicBool::new(false),
        }))
    }

    pub(crate) fn state(&self) -> &T {
        &self.0.state
    }

    pub(crate) fn trip(&self) {
        self.0.tripped.store(true, Ordering::Release);
    }

    pub(crate) fn is_tripped(&self) -> bool {
        self.0.tripped.load(Ordering::Acquire)
    }
}

/// The response to send for a rejected body: the problem, and
/// `Connection: close` because the rest of the body was never read.
pub(crate) fn rejection<B>(
    problem: ProblemDetails,
    reason: &'static str,
) -> Response<ResponseBody<B>> {
    let mut response = problem.rejection(reason).map(ResponseBody::full);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
