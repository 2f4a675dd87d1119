//! A flag a request-body guard raises when it rejects the body, so the layer
//! that installed it can replace whatever the handler answered with the right
//! problem (413, 408) instead of the extractor's generic 400.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::Response;
use http::header::{CONNECTION, HeaderValue};
use palisade_core::ProblemDetails;
use palisade_core::body::ResponseBody;

#[derive(Debug, Clone, Default)]
pub(crate) struct Trip(Arc<AtomicBool>);

impl Trip {
    pub(crate) fn trip(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_tripped(&self) -> bool {
        self.0.load(Ordering::Acquire)
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
