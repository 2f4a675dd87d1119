use super::*;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use tower::service_fn;

type Counter = Arc<AtomicU32>;
type Seen = Arc<std::sync::Mutex<Option<String>>>;

/// A dependency answering `status` (with `retry_after`, if any) after `delay`,
/// counting its calls and remembering the last `X-Request-Id`.
fn dependency(
    status: StatusCode,
    retry_after: Option<&'static str>,
    delay: Duration,
) -> (
    Counter,
    Seen,
    impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
) {
    let calls = Counter::default();
    let seen = Seen::default();
    let (c, s) = (calls.clone(), seen.clone());
    let svc = service_fn(move |req: Request<String>| {
        c.fetch_add(1, Ordering::SeqCst);
        *s.lock().unwrap() = req
            .headers()
            .get(&X_REQUEST_ID)
            .map(|v| v.to_str().unwrap().to_owned());
        async move {
            tokio::time::sleep(delay).await;
            let mut res = Response::new(String::new());
            *res.status_mut() = status;
            if let Some(v) = retry_after {
                res.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static(v));
            }
            Ok::<_, Infallible>(res)
        }
    });
    (calls, seen, svc)
}

fn get() -> Request<String> {
    Request::get("http://dep/x").body(String::new()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_never_exceed_their_budget_under_a_dependency_that_always_fails() {
    let (calls, _, dep) = dependency(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .retry(
            Retry::new()
                .max_attempts(5)
                .backoff(Duration::from_millis(1), Duration::from_millis(4))
                .budget(Duration::from_secs(10), 1, 0.1),
        )
        .build();
    let client = outbound.layer().layer(dep);
    let n = 1000u32;
    for _ in 0..n {
        let res = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(res.status(), 503, "the last answer is returned");
    }
    let attempts = calls.load(Ordering::SeqCst);
    // 10 % of 1,000 calls, plus the floor of 1/s over the 10 s window.
    let budget = n / 10 + 10;
    assert!(attempts > n, "some retries were made: {attempts}");
    assert!(attempts <= n + budget, "{attempts} attempts for {n} calls");
}

#[tokio::test(start_paused = true)]
async fn with_a_generous_budget_every_call_makes_all_its_attempts() {
    // The control for the test above: the bound there is the budget's doing.
    let (calls, _, dep) = dependency(StatusCode::SERVICE_UNAVAILABLE, None, Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .retry(
            Retry::new()
                .max_attempts(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(1))
                .budget(Duration::from_secs(10), 0, 1000.0),
        )
        .build();
    let client = outbound.layer().layer(dep);
    for _ in 0..100 {
        client.clone().oneshot(get()).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 300);
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_is_honoured() {
    let (calls, _, dep) = dependency(StatusCode::SERVICE_UNAVAILABLE, Some("3"), Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .total(Duration::from_secs(10))
        .retry(Retry::new().max_attempts(2))
        .build();
    let start = tokio::time::Instant::now();
    let res = outbound.layer().layer(dep).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    let clock = TokioClock::shared();
    let at = std::time::UNIX_EPOCH + clock.unix_now() + Duration::from_secs(5);
    let date: &'static str = Box::leak(httpdate::fmt_http_date(at).into_boxed_str());
    let (calls, _, dep) = dependency(StatusCode::TOO_MANY_REQUESTS, Some(date), Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .clock(clock)
        .retry(Retry::new().max_attempts(2))
        .build();
    let start = tokio::time::Instant::now();
    outbound.layer().layer(dep).oneshot(get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // HTTP dates have whole seconds.
    let waited = start.elapsed();
    assert!(
        (Duration::from_secs(4)..=Duration::from_secs(5)).contains(&waited),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    let (calls, _, dep) = dependency(StatusCode::SERVICE_UNAVAILABLE, Some("60"), Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .total(Duration::from_secs(2))
        .build();
    let start = tokio::time::Instant::now();
    let res = outbound.layer().layer(dep).oneshot(get()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_not_retried_unless_marked() {
    let (calls, _, dep) = dependency(StatusCode::BAD_GATEWAY, None, Duration::ZERO);
    let client = Outbound::builder("dep").build().layer().layer(dep);
    let post = || Request::post("http://dep/x").body(String::new()).unwrap();
    client.clone().oneshot(post()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "POST: one attempt");
    let mut marked = post();
    marked.extensions_mut().insert(Retryable);
    client.clone().oneshot(marked).await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "marked POST: three attempts"
    );
    client.oneshot(get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 7, "GET: three attempts");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_dependency_is_cut_per_attempt_and_in_total() {
    let (calls, _, dep) = dependency(StatusCode::OK, None, Duration::from_secs(3600));
    let outbound = Outbound::builder("dep")
        .total(Duration::from_secs(2))
        .attempt_timeout(Duration::from_millis(500))
        .retry(
            Retry::new()
                .max_attempts(10)
                .backoff(Duration::ZERO, Duration::ZERO),
        )
        .build();
    let start = tokio::time::Instant::now();
    let err = outbound
        .layer()
        .layer(dep.clone())
        .oneshot(get())
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::DeadlineExceeded), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(calls.load(Ordering::SeqCst), 4, "4 attempts of 500 ms");

    // Attempt timeouts alone: the last attempt's timeout is the error.
    let few = Outbound::builder("dep")
        .attempt_timeout(Duration::from_millis(500))
        .retry(Retry::new().max_attempts(2))
        .build();
    let err = few
        .layer()
        .layer(dep.clone())
        .oneshot(get())
        .await
        .unwrap_err();
    assert!(matches!(err, OutboundError::TimedOut), "{err}");

    // The caller's deadline is shorter: it wins.
    let mut req = get();
    req.extensions_mut().insert(Deadline(
        tokio::time::Instant::now().into_std() + Duration::from_millis(300),
    ));
    let start = tokio::time::Instant::now();
    let err = outbound.layer().layer(dep).oneshot(req).await.unwrap_err();
    assert!(matches!(err, OutboundError::DeadlineExceeded));
    assert_eq!(start.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_short_circuits_without_calling_or_retrying() {
    let (calls, _, dep) = dependency(StatusCode::INTERNAL_SERVER_ERROR, None, Duration::ZERO);
    let outbound = Outbound::builder("dep")
        .breaker(BreakerConfig::consecutive_failures(3).open_for(Duration::from_secs(30)))
        .build();
    let client = outbound.layer().layer(dep);
    for _ in 0..3 {
        assert_eq!(client.clone().oneshot(get()).await.unwrap().status(), 500);
    }
    for _ in 0..100 {
        let err = client.clone().oneshot(get()).await.unwrap_err();
        assert!(matches!(err, OutboundError::ShortCircuited));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "500 is not retried");
    let breaker = outbound.breaker().unwrap();
    assert_eq!(breaker.calls("short_circuited"), 100);
    // Half-open after 30 s: one probe reaches the dependency.
    tokio::time::advance(Duration::from_secs(30)).await;
    client.oneshot(get()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn slow_answers_open_the_breaker() {
    let (calls, _, dep) = dependency(StatusCode::OK, None, Duration::from_secs(1));
    let outbound = Outbound::builder("dep")
        .breaker(
            BreakerConfig::default()
                .window(crate::breaker::Window::Count(4))
                .minimum_calls(4)
                .slow_call_rate(100)
                .slow_call_duration(Duration::from_secs(1)),
        )
        .build();
    let client = outbound.layer().layer(dep);
    for _ in 0..4 {
        assert_eq!(client.clone().oneshot(get()).await.unwrap().status(), 200);
    }
    assert!(matches!(
        client.oneshot(get()).await.unwrap_err(),
        OutboundError::ShortCircuited
    ));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

/// Polls `future` with `context` current, as the request-id layer does.
async fn in_context<F: Future>(
    context: &Arc<palisade_core::request_id::RequestContext>,
    future: F,
) -> F::Output {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        let _entered = palisade_core::request_id::enter(context);
        future.as_mut().poll(cx)
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_request_id_of_the_request_served_is_sent_along() {
    let (_, seen, dep) = dependency(StatusCode::OK, None, Duration::ZERO);
    let client = Outbound::builder("dep").build().layer().layer(dep);
    let context = Arc::new(palisade_core::request_id::RequestContext {
        id: RequestId::parse("req-42").unwrap(),
        trace_id: palisade_core::request_id::TraceId([7; 16]),
    });
    in_context(&context, client.clone().oneshot(get()))
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("req-42"));
    // Outside a request: none; a header set by the caller is kept.
    client.clone().oneshot(get()).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), None);
    let mut req = get();
    req.headers_mut()
        .insert(X_REQUEST_ID, HeaderValue::from_static("mine"));
    in_context(&context, client.oneshot(req)).await.unwrap();
    assert_eq!(seen.lock().unwrap().as_deref(), Some("mine"));
}

#[tokio::test(start_paused = true)]
async fn the_future_wrapper_retries_errors_only_when_retryable() {
    let outbound = Outbound::builder("dep")
        .retry(Retry::new().max_attempts(3))
        .build();
    let attempts = Counter::default();
    let failing = |a: Attempt| {
        attempts.fetch_add(1, Ordering::SeqCst);
        assert!(a.number >= 1);
        async { Err::<(), _>("refused") }
    };
    let err = outbound.call(false, failing).await.unwrap_err();
    assert!(matches!(err, OutboundError::Call("refused")));
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    let _ = outbound.call(true, failing).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 4);
}
