use super::*;
use http::StatusCode;
use std::convert::Infallible;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Req = Request<String>;

async fn plain(_req: Req) -> Result<Response<String>, Infallible> {
    Ok(Response::builder()
        .header("server", "nginx/1.0")
        .header("x-powered-by", "PHP/5")
        .body(String::new())
        .unwrap())
}

async fn run<L>(layer: L, handler_headers: &[(&'static str, &'static str)]) -> Response<String>
where
    L: Layer<tower::util::BoxCloneService<Req, Response<String>, Infallible>>,
    L::Service: Service<Req, Response = Response<String>, Error = Infallible>,
{
    let headers: Vec<_> = handler_headers.to_vec();
    let inner = tower::util::BoxCloneService::new(service_fn(move |req: Req| {
        let headers = headers.clone();
        async move {
            let mut res = plain(req).await?;
            for (n, v) in headers {
                res.headers_mut().insert(n, HeaderValue::from_static(v));
            }
            Ok::<_, Infallible>(res)
        }
    }));
    layer
        .layer(inner)
        .oneshot(Request::new(String::new()))
        .await
        .unwrap()
}

#[tokio::test]
async fn api_profile_sets_the_contract_headers() {
    let res = run(SecurityHeaders::api().build().unwrap(), &[]).await;
    let h = res.headers();
    let expect = [
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (
            "strict-transport-security",
            "max-age=63072000; includeSubDomains",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
        ("cache-control", "no-store"),
    ];
    for (name, value) in expect {
        assert_eq!(
            h.get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name}"
        );
    }
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
}

#[tokio::test]
async fn handler_headers_win_unless_overwrite() {
    let handler = [
        ("cache-control", "public, max-age=60"),
        ("x-frame-options", "SAMEORIGIN"),
    ];
    let res = run(SecurityHeaders::api().build().unwrap(), &handler).await;
    assert_eq!(res.headers()["cache-control"], "public, max-age=60");
    assert_eq!(res.headers()["x-frame-options"], "SAMEORIGIN");

    let res = run(
        SecurityHeaders::api().overwrite(true).build().unwrap(),
        &handler,
    )
    .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}

#[tokio::test]
async fn inner_layer_overrides_a_route() {
    // The route's own layer (inner) sets its values first; the global one keeps them.
    let svc = ServiceBuilder::new()
        .layer(SecurityHeaders::api().build().unwrap())
        .layer(SecurityHeaders::html().build().unwrap())
        .service_fn(plain);
    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert_eq!(res.headers()["x-frame-options"], "SAMEORIGIN");
    // The api layer still adds what the html profile does not set.
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn html_profile_has_a_fresh_nonce_per_request() {
    let layer = SecurityHeaders::html().build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|req: Req| async move {
            let nonce = req
                .extensions()
                .get::<CspNonce>()
                .unwrap()
                .as_str()
                .to_owned();
            Ok::<_, Infallible>(Response::new(nonce))
        });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let res = svc
            .clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        let csp = res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let nonce = res.into_body();
        assert_eq!(nonce.len(), 24, "128 bits, base64");
        assert!(
            csp.contains(&format!("script-src 'self' 'nonce-{nonce}'")),
            "{csp}"
        );
        assert!(
            csp.contains(&format!("style-src 'self' 'nonce-{nonce}'")),
            "{csp}"
        );
        assert!(!csp.contains("unsafe-inline"));
        assert!(seen.insert(nonce), "nonce repeated");
    }
}

#[tokio::test]
async fn html_profile_headers() {
    let res = run(SecurityHeaders::html().build().unwrap(), &[]).await;
    let h = res.headers();
    assert_eq!(h["x-frame-options"], "SAMEORIGIN");
    assert_eq!(h["origin-agent-cluster"], "?1");
    assert_eq!(h["x-xss-protection"], "0");
    assert!(h.get("cache-control").is_none());
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("object-src 'none'") && csp.ends_with("upgrade-insecure-requests"),
        "{csp}"
    );
}

#[tokio::test]
async fn report_only_mode() {
    let csp = ContentSecurityPolicy::html().directive("report-uri", ["/csp-reports"]);
    let layer = SecurityHeaders::html()
        .content_security_policy(csp)
        .csp_report_only(true)
        .build()
        .unwrap();
    let res = run(layer, &[]).await;
    assert!(res.headers().get("content-security-policy").is_none());
    let ro = res.headers()["content-security-policy-report-only"]
        .to_str()
        .unwrap();
    assert!(ro.ends_with("report-uri /csp-reports"), "{ro}");

    // A handler-set policy is not overwritten by the report-only one either.
    let layer = SecurityHeaders::api()
        .content_security_policy(ContentSecurityPolicy::api().directive("report-to", ["csp"]))
        .csp_report_only(true)
        .build()
        .unwrap();
    let res = run(layer, &[("content-security-policy", "default-src 'self'")]).await;
    assert_eq!(
        res.headers()["content-security-policy"],
        "default-src 'self'"
    );
    assert!(
        res.headers()
            .get("content-security-policy-report-only")
            .is_none()
    );
}

#[test]
fn invalid_combinations_are_errors() {
    let cases = [
        SecurityHeaders::api().csp_report_only(true),
        SecurityHeaders::api()
            .without_content_security_policy()
            .csp_report_only(true),
        SecurityHeaders::api().hsts(Hsts {
            max_age: 300,
            include_subdomains: true,
            preload: true,
        }),
        SecurityHeaders::api().hsts(Hsts {
            max_age: 63_072_000,
            include_subdomains: false,
            preload: true,
        }),
        SecurityHeaders::api().header("x-custom", "line\nbreak"),
        SecurityHeaders::api().header("bad name", "v"),
        SecurityHeaders::api().header("content-security-policy", "default-src *"),
        SecurityHeaders::api().content_security_policy(ContentSecurityPolicy::new()),
        SecurityHeaders::api().content_security_policy(
            ContentSecurityPolicy::api().directive("script-src", ["'self'; img-src *"]),
        ),
        SecurityHeaders::api().content_security_policy(
            ContentSecurityPolicy::api().directive("Script Src", ["'self'"]),
        ),
        SecurityHeaders::api()
            .content_security_policy(ContentSecurityPolicy::api().directive("img-src", [""])),
    ];
    for (i, case) in cases.into_iter().enumerate() {
        assert!(case.build().is_err(), "case {i} should be refused");
    }
    let ok = SecurityHeaders::api().hsts(Hsts {
        max_age: 31_536_000,
        include_subdomains: true,
        preload: true,
    });
    assert!(ok.build().is_ok());
}

#[tokio::test]
async fn profile_edits() {
    let layer = SecurityHeaders::api()
        .without("permissions-policy")
        .header("X-Custom", "1")
        .without_hsts()
        .build()
        .unwrap();
    let res = run(layer, &[]).await;
    assert!(res.headers().get("permissions-policy").is_none());
    assert!(res.headers().get("strict-transport-security").is_none());
    assert_eq!(res.headers()["x-custom"], "1");
    assert_eq!(res.status(), StatusCode::OK);
}

#[test]
fn default_layer_is_the_api_profile() {
    assert!(SecurityHeaders::api().build().is_ok());
    assert!(SecurityHeaders::html().build().is_ok());
    let layer = SecurityHeadersLayer::default();
    assert!(layer.config.csp.is_some());
    // Eight fixed headers and the policy.
    assert_eq!(layer.config.template.len(), 9);
}

/// A CSP source: ordinary ones, the nonce placeholder, and ones carrying
/// what would end the directive or the policy (`;`, `,`), split it
/// (whitespace, CR, LF), or break the header (NUL, DEL, non-ASCII).
fn csp_source() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let plain = prop::sample::select(vec![
        "'self'",
        "'none'",
        "https://cdn.example.com",
        "data:",
        "https:",
        "'sha256-abc123='",
        NONCE_SOURCE,
    ])
    .prop_map(str::to_owned);
    let injected = (
        "[a-z':/.]{0,8}",
        prop::sample::select(vec![
            ";",
            "; script-src *",
            ",",
            " ",
            "\t",
            "\r\n",
            "\n",
            "\0",
            "\u{7f}",
            "é",
        ]),
        "[a-z':/.*]{0,8}",
    )
        .prop_map(|(a, bad, b)| format!("{a}{bad}{b}"));
    prop_oneof![
        6 => plain,
        2 => "[!-~]{1,12}",
        3 => injected,
        1 => Just(String::new()),
    ]
}

/// A directive name: ordinary ones (any case), and ones carrying `;`,
/// spaces or other characters.
fn csp_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        4 => prop::sample::select(vec!["img-src", "script-src", "default-src", "Frame-Ancestors"])
            .prop_map(str::to_owned),
        2 => "[a-z-]{1,12}",
        2 => prop::sample::select(vec![
            "img-src; script-src",
            "img-src ",
            "img src",
            "img_src",
            "",
            "img-src\r\nx-injected",
        ])
        .prop_map(str::to_owned),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// A directive added to the API policy compiles exactly when its name is
    /// letters and '-' and every source is visible ASCII without ';' or ','
    /// (or the nonce placeholder); then the header is exactly the directives
    /// written out, so no source or name can inject a directive or a policy.
    #[test]
    fn a_policy_compiles_only_without_injection_and_renders_exactly(
        name in csp_name(),
        sources in proptest::collection::vec(csp_source(), 0..5),
    ) {
        let csp = ContentSecurityPolicy::api().directive(&name, sources.clone());
        let name_ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-');
        let sources_ok = sources.iter().all(|s| {
            s == NONCE_SOURCE
                || (!s.is_empty()
                    && s.bytes().all(|b| b.is_ascii_graphic() && b != b';' && b != b','))
        });
        let compiled = csp.compile();
        proptest::prop_assert_eq!(compiled.is_ok(), name_ok && sources_ok, "{:?} {:?}", name, sources);
        let Ok(compiled) = compiled else { return Ok(()) };
        let nonce = CspNonce::generate().unwrap();
        let rendered = compiled.render(Some(&nonce)).unwrap();
        // The expected text, from the parts: the API policy's directives,
        // this one replacing its namesake or added last.
        let name = name.to_ascii_lowercase();
        let written = |sources: &[String]| {
            sources
                .iter()
                .map(|s| if s == NONCE_SOURCE { format!("'nonce-{}'", nonce.as_str()) } else { s.clone() })
                .fold(String::new(), |out, s| out + " " + &s)
        };
        let mut directives: Vec<String> = ["default-src", "frame-ancestors", "base-uri"]
            .iter()
            .map(|n| if *n == name { format!("{n}{}", written(&sources)) } else { format!("{n} 'none'") })
            .collect();
        if !["default-src", "frame-ancestors", "base-uri"].contains(&name.as_str()) {
            directives.push(format!("{name}{}", written(&sources)));
        }
        proptest::prop_assert_eq!(rendered.to_str().unwrap(), directives.join("; "));
    }
}

/// The plain algorithm `Config::apply` must agree with: drop `Server` and
/// `X-Powered-By`, then set each header unless the response has it (always
/// with `overwrite`), the policy unless the response has a policy of either
/// kind.
fn reference(config: &Config, headers: &mut HeaderMap) {
    headers.remove(header::SERVER);
    headers.remove(X_POWERED_BY);
    let own_csp = headers.contains_key(header::CONTENT_SECURITY_POLICY)
        || headers.contains_key(CSP_REPORT_ONLY);
    let csp_name = config.csp.as_ref().map(|c| c.name.clone());
    for (name, value) in &config.template {
        let set = if Some(name) == csp_name.as_ref() {
            config.overwrite || !own_csp
        } else {
            config.overwrite || !headers.contains_key(name)
        };
        if set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Every name with its values in order, names sorted: header order across
/// names carries no meaning.
fn normalised(headers: &HeaderMap) -> Vec<(String, Vec<HeaderValue>)> {
    let mut out: Vec<_> = headers
        .keys()
        .map(|k| {
            let values = headers.get_all(k).iter().cloned().collect();
            (k.as_str().to_owned(), values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

proptest::proptest! {
    /// Any mix of response headers — ones the layer sets, policies of both
    /// kinds, repeated names, `Server` — comes out as the plain algorithm
    /// would have it, for each mode.
    #[test]
    fn merging_into_the_template_matches_the_plain_algorithm(
        response in proptest::collection::vec((0usize..9, 0usize..3), 0..10),
        mode in 0usize..3,
    ) {
        let names = [
            "cache-control", "x-frame-options", "content-security-policy",
            "content-security-policy-report-only", "server", "x-powered-by",
            "set-cookie", "content-type", "permissions-policy",
        ];
        let values = ["a", "b", "c"];
        let builder = match mode {
            0 => SecurityHeaders::api(),
            1 => SecurityHeaders::api().overwrite(true),
            _ => SecurityHeaders::api()
                .content_security_policy(
                    ContentSecurityPolicy::api().directive("report-uri", ["/csp-reports"]),
                )
                .csp_report_only(true),
        };
        let config = builder.build().unwrap().config;
        let mut headers = HeaderMap::new();
        for (n, v) in response {
            headers.append(names[n], HeaderValue::from_static(values[v]));
        }
        let mut expected = headers.clone();
        reference(&config, &mut expected);
        config.apply(&mut headers, None);
        proptest::prop_assert_eq!(normalised(&headers), normalised(&expected));
    }
}

#[test]
fn configured_headers_are_made_static_once_per_distinct_value() {
    let first = intern("max-age=123; test-only");
    let again = intern(&String::from("max-age=123; test-only"));
    assert!(std::ptr::eq(first, again), "one leak per distinct value");
    let (name, value) = interned(
        &HeaderName::from_bytes(b"X-Test-Only").unwrap(),
        &HeaderValue::from_str("a b").unwrap(),
    );
    assert_eq!(name, "x-test-only");
    assert_eq!(value, "a b");
    // Not visible ASCII: kept as it was.
    let odd = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
    assert_eq!(interned(&name, &odd).1, odd);
}
