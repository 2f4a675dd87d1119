use super::*;
use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::Request;
use serde::Deserialize;
use tower::ServiceExt;
use validator::Validate;

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct Signup {
    #[validate(email(code = "invalid_email", message = "not an email address"))]
    email: String,
    #[validate(length(min = 8, code = "too_short"))]
    password: String,
    #[validate(nested)]
    #[serde(default)]
    address: Option<Address>,
    #[validate(nested)]
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
struct Address {
    #[validate(length(min = 1, code = "required"))]
    city: String,
}

#[derive(Debug, Deserialize, Validate)]
struct Tag {
    #[validate(length(max = 3, code = "too_long"))]
    name: String,
    /// Free-form JSON: parsed (so nested) as deep as the client sends it.
    #[serde(default)]
    #[allow(dead_code)] // read by serde only
    meta: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Order {
    kind: Kind,
    #[serde(default)]
    count: u8,
    #[serde(default)]
    labels: std::collections::HashMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Small,
    Large,
}

impl Validate for Order {
    fn validate(&self) -> Result<(), ValidationErrors> {
        Ok(())
    }
}

fn app() -> Router {
    Router::new()
        .route(
            "/orders",
            post(|ValidatedJson(o): ValidatedJson<Order>| async move {
                format!("{:?} {} {}", o.kind, o.count, o.labels.len())
            }),
        )
        .route(
            "/",
            post(|ValidatedJson(s): ValidatedJson<Signup>| async move { s.email }),
        )
        .route(
            "/tiny",
            post(|ValidatedJson(s): ValidatedJson<Signup, 64>| async move { s.email }),
        )
        .route(
            "/small",
            post(|ValidatedJson(s): ValidatedJson<Signup, SMALL>| async move { s.email }),
        )
}

/// The cap of the `/small` route.
const SMALL: usize = 512;

async fn post_json(
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (u16, serde_json::Value, String) {
    let mut b = Request::post(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    let res = app().oneshot(b.body(body.into()).unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        text,
    )
}

const JSON: Option<&str> = Some("application/json");

#[tokio::test]
async fn valid_body_passes() {
    let (status, _, text) = post_json(
        "/",
        JSON,
        r#"{"email":"a@example.com","password":"long enough"}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(text, "a@example.com");
    let (status, _, _) = post_json(
        "/",
        Some("application/merge-patch+json; charset=utf-8"),
        r#"{"email":"a@example.com","password":"long enough"}"#,
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn wrong_media_type_is_415() {
    for ct in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/jsonp"),
    ] {
        let (status, json, _) = post_json("/", ct, "{}").await;
        assert_eq!(status, 415, "{ct:?}");
        assert_eq!(json["type"], "urn:palisade:problem:unsupported-media-type");
    }
}

#[tokio::test]
async fn malformed_json_is_400_with_position() {
    for body in [
        "{",
        r#"{"email":"#,
        "not json",
        r#"{"email":"a@b.c","password":"12345678"} trailing"#,
        "\u{0}",
    ] {
        let (status, json, _) = post_json("/", JSON, body).await;
        assert_eq!(status, 400, "{body:?}");
        assert!(
            json["detail"].as_str().unwrap().contains("line 1 column"),
            "{json}"
        );
    }
}

#[tokio::test]
async fn type_errors_are_422_and_never_echo_values() {
    let secret = "hunter2-very-secret";
    let body = format!(r#"{{"email":"a@example.com","password":["{secret}"]}}"#);
    let (status, json, text) = post_json("/", JSON, body).await;
    assert_eq!(status, 422);
    assert_eq!(json["errors"][0]["field"], "password");
    assert_eq!(json["errors"][0]["code"], "invalid_type");
    assert!(
        !text.contains(secret) && !text.contains("hunter2"),
        "{text}"
    );

    let (status, json, _) = post_json("/", JSON, r#"{"email":"a@example.com"}"#).await;
    assert_eq!(status, 422);
    assert_eq!(json["errors"][0]["field"], "password");
    assert_eq!(json["errors"][0]["code"], "required");

    let (status, json, _) = post_json(
        "/",
        JSON,
        r#"{"email":"a@example.com","password":"12345678","admin":true}"#,
    )
    .await;
    assert_eq!(status, 422);
    // Reported at its parent (the root) with its position, never by name.
    assert_eq!(json["errors"][0]["field"], "");
    assert_eq!(json["errors"][0]["code"], "unknown_field");
    assert!(
        json["errors"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("at line 1 column 54"),
        "{json}"
    );

    let (status, json, _) = post_json(
        "/",
        JSON,
        r#"{"email":"a@example.com","password":"12345678","address":{"city":7}}"#,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(json["errors"][0]["field"], "address.city");
}

#[tokio::test]
async fn validation_errors_list_every_field() {
    let body = r#"{"email":"nope","password":"sh0rt!","address":{"city":""},"tags":[{"name":"ok"},{"name":"toolong"}]}"#;
    let (status, json, text) = post_json("/", JSON, body).await;
    assert_eq!(status, 422, "{text}");
    assert_eq!(json["type"], "urn:palisade:problem:validation");
    let errors: Vec<(String, String)> = json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_owned(),
                e["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("address.city".to_owned(), "required".to_owned()),
            ("email".to_owned(), "invalid_email".to_owned()),
            ("password".to_owned(), "too_short".to_owned()),
            ("tags[1].name".to_owned(), "too_long".to_owned()),
        ]
    );
    assert_eq!(json["errors"][1]["message"], "not an email address");
    assert!(
        !text.contains("sh0rt!") && !text.contains("nope"),
        "values are not echoed: {text}"
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let body = format!(
        r#"{{"email":"a@example.com","password":"{}"}}"#,
        "p".repeat(100)
    );
    let (status, json, _) = post_json("/tiny", JSON, body).await;
    assert_eq!(status, 413);
    assert_eq!(json["status"], 413);
}

/// Issue 17, finding 5: with `deny_unknown_fields`, serde's message and
/// path carry the attacker's field name; neither may reach the response.
#[tokio::test]
async fn unknown_field_names_are_never_echoed() {
    let long = format!("zz{}zz", "A".repeat(10_000));
    let names = [
        "<script>alert(document.cookie)</script>".to_owned(),
        "\"><img src=x onerror=alert(1)>".to_owned(),
        "javascript:alert('x')".to_owned(),
        long.clone(),
    ];
    for name in &names {
        let key = serde_json::to_string(name).unwrap();
        for (body, field) in [
            (
                format!(r#"{{"email":"a@example.com","password":"12345678",{key}:1}}"#),
                "",
            ),
            (
                format!(
                    r#"{{"email":"a@example.com","password":"12345678","address":{{"city":"x",{key}:true}}}}"#
                ),
                "address",
            ),
        ] {
            let (status, json, text) = post_json("/", JSON, body).await;
            assert_eq!(status, 422, "{text}");
            assert_eq!(json["errors"][0]["code"], "unknown_field", "{text}");
            assert_eq!(json["errors"][0]["field"], field, "{text}");
            let message = json["errors"][0]["message"].as_str().unwrap();
            assert!(message.contains("line 1 column"), "{text}");
            for fragment in [
                "script",
                "alert",
                "onerror",
                "img",
                "javascript",
                "AAAAAAAA",
                "zz",
            ] {
                assert!(!text.contains(fragment), "{fragment} echoed: {text}");
            }
            assert!(text.len() < 512, "the answer does not grow with the name");
        }
    }
}

/// Issue 17, finding 5: serde's messages quote unknown variants, invalid
/// values and map keys; none of it reaches the response.
#[tokio::test]
async fn serde_messages_and_map_keys_carrying_input_are_never_echoed() {
    for (body, field) in [
        (r#"{"kind":"<script>alert(1)</script>"}"#, "kind"),
        (r#"{"kind":{"<svg/onload=alert(1)>":null}}"#, "kind"),
        (r#"{"kind":"small","count":31337}"#, "count"),
        (r#"{"kind":"small","count":"s3cr3t-value"}"#, "count"),
        (
            r#"{"kind":"small","labels":{"<img src=x onerror=alert(1)>":"s3cr3t-value"}}"#,
            "labels.?",
        ),
        (
            r#"{"kind":"small","labels":{"hunter2 hunter2":-31337}}"#,
            "labels.?",
        ),
        (
            r#"{"kind":"small","labels":{"plain_key":-31337}}"#,
            "labels.plain_key",
        ),
        (r#"{"<b>bold</b>":1,"kind":"small"}"#, ""),
    ] {
        let (status, json, text) = post_json("/orders", JSON, body).await;
        assert_eq!(status, 422, "{body}: {text}");
        assert_eq!(json["errors"][0]["field"], field, "{body}: {text}");
        for fragment in [
            "script", "svg", "alert", "31337", "s3cr3t", "img", "hunter2", "bold",
        ] {
            assert!(
                !text.contains(fragment),
                "{fragment} echoed for {body}: {text}"
            );
        }
    }
    let (status, _, text) =
        post_json("/orders", JSON, r#"{"kind":"large","labels":{"a":1}}"#).await;
    assert_eq!((status, text.as_str()), (200, "Large 0 1"));
}

/// One field of a generated [`Signup`] body.
#[derive(Debug, Clone)]
enum EmailSpec {
    Valid(u16),
    NoAt(u16),
    Number,
    Missing,
}

#[derive(Debug, Clone)]
enum PasswordSpec {
    /// `n` characters: 8 or more pass, fewer are `too_short`.
    Chars(usize),
    Array,
    Missing,
}

#[derive(Debug, Clone)]
enum AddressSpec {
    Absent,
    /// A city of `n` characters: 0 is `required`.
    City(usize),
    CityNumber,
}

/// A tag whose name has `name` characters (more than 3 is `too_long`),
/// with a value nested `depth` arrays deep: in `meta` (parsed) or in an
/// unknown field (skipped without building anything).
#[derive(Debug, Clone)]
struct TagSpec {
    name: usize,
    depth: usize,
    parsed: bool,
}

/// Nesting the parser accepts, and nesting far beyond its recursion limit
/// (128), never near the edge.
const SHALLOW: std::ops::Range<usize> = 0..60;
const DEEP: std::ops::Range<usize> = 200..400;

#[derive(Debug, Clone)]
struct BodySpec {
    email: EmailSpec,
    password: PasswordSpec,
    address: AddressSpec,
    tags: Vec<TagSpec>,
    /// Spaces after the opening brace: the body crosses the route's cap.
    padding: usize,
}

fn body_spec() -> impl proptest::strategy::Strategy<Value = BodySpec> {
    use proptest::prelude::*;
    let email = prop_oneof![
        4 => any::<u16>().prop_map(EmailSpec::Valid),
        1 => any::<u16>().prop_map(EmailSpec::NoAt),
        1 => Just(EmailSpec::Number),
        1 => Just(EmailSpec::Missing),
    ];
    let password = prop_oneof![
        4 => (8usize..24).prop_map(PasswordSpec::Chars),
        1 => (0usize..8).prop_map(PasswordSpec::Chars),
        1 => Just(PasswordSpec::Array),
        1 => Just(PasswordSpec::Missing),
    ];
    let address = prop_oneof![
        2 => Just(AddressSpec::Absent),
        2 => (1usize..8).prop_map(AddressSpec::City),
        1 => Just(AddressSpec::City(0)),
        1 => Just(AddressSpec::CityNumber),
    ];
    let tag = (
        0usize..6,
        prop_oneof![6 => SHALLOW, 1 => DEEP],
        any::<bool>(),
    )
        .prop_map(|(name, depth, parsed)| TagSpec {
            name,
            depth,
            parsed,
        });
    (
        email,
        password,
        address,
        proptest::collection::vec(tag, 0..4),
        prop_oneof![3 => Just(0usize), 1 => 0usize..600],
    )
        .prop_map(|(email, password, address, tags, padding)| BodySpec {
            email,
            password,
            address,
            tags,
            padding,
        })
}

impl BodySpec {
    fn email_text(&self) -> Option<String> {
        match self.email {
            EmailSpec::Valid(n) => Some(format!("user{n}@example.com")),
            EmailSpec::NoAt(n) => Some(format!("user{n}.example.com")),
            EmailSpec::Number | EmailSpec::Missing => None,
        }
    }

    fn render(&self) -> String {
        let mut fields = Vec::new();
        match (&self.email, self.email_text()) {
            (_, Some(text)) => fields.push(format!(r#""email":"{text}""#)),
            (EmailSpec::Number, _) => fields.push(r#""email":42"#.to_owned()),
            _ => {}
        }
        match self.password {
            PasswordSpec::Chars(n) => fields.push(format!(r#""password":"{}""#, "p".repeat(n))),
            PasswordSpec::Array => fields.push(r#""password":["p"]"#.to_owned()),
            PasswordSpec::Missing => {}
        }
        match self.address {
            AddressSpec::Absent => {}
            AddressSpec::City(n) => {
                fields.push(format!(r#""address":{{"city":"{}"}}"#, "c".repeat(n)));
            }
            AddressSpec::CityNumber => fields.push(r#""address":{"city":7}"#.to_owned()),
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self
                .tags
                .iter()
                .map(|t| {
                    format!(
                        r#"{{"name":"{}","{}":{}0{}}}"#,
                        "t".repeat(t.name),
                        if t.parsed { "meta" } else { "x" },
                        "[".repeat(t.depth),
                        "]".repeat(t.depth)
                    )
                })
                .collect();
            fields.push(format!(r#""tags":[{}]"#, tags.join(",")));
        }
        format!("{{{}{}}}", " ".repeat(self.padding), fields.join(","))
    }

    /// The answer, from how the body was built: 413 over the cap; the first
    /// type error in document order (422), a parsed value nested beyond the
    /// parser's limit (400; a skipped one is no error), a missing field
    /// (422, in declaration order); else every validation error (422,
    /// sorted) or 200 with the email.
    fn expected(&self, body_len: usize) -> (u16, Vec<(String, String)>) {
        let one = |field: &str, code: &str| (422, vec![(field.to_owned(), code.to_owned())]);
        if body_len > SMALL {
            return (413, Vec::new());
        }
        if matches!(self.email, EmailSpec::Number) {
            return one("email", "invalid_type");
        }
        if matches!(self.password, PasswordSpec::Array) {
            return one("password", "invalid_type");
        }
        if matches!(self.address, AddressSpec::CityNumber) {
            return one("address.city", "invalid_type");
        }
        if self
            .tags
            .iter()
            .any(|t| t.parsed && DEEP.contains(&t.depth))
        {
            return (400, Vec::new());
        }
        if matches!(self.email, EmailSpec::Missing) {
            return one("email", "required");
        }
        if matches!(self.password, PasswordSpec::Missing) {
            return one("password", "required");
        }
        let mut errors = Vec::new();
        if let EmailSpec::NoAt(_) = self.email {
            errors.push(("email".to_owned(), "invalid_email".to_owned()));
        }
        if let PasswordSpec::Chars(n) = self.password
            && n < 8
        {
            errors.push(("password".to_owned(), "too_short".to_owned()));
        }
        if let AddressSpec::City(0) = self.address {
            errors.push(("address.city".to_owned(), "required".to_owned()));
        }
        for (i, t) in self.tags.iter().enumerate() {
            if t.name > 3 {
                errors.push((format!("tags[{i}].name"), "too_long".to_owned()));
            }
        }
        errors.sort();
        if errors.is_empty() {
            (200, errors)
        } else {
            (422, errors)
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_bodies_never_cause_a_5xx(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (status, _, _) = rt.block_on(post_json("/", JSON, body));
        proptest::prop_assert!([200, 400, 413, 422].contains(&status), "{status}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Generated bodies that reach every answer — 200, 413 (over the route's
    /// cap), 400 (nesting beyond the parser's limit), 422 (wrong types,
    /// missing fields, validation) — get exactly the answer and the field
    /// errors the body's structure calls for.
    #[test]
    fn structured_bodies_get_the_answer_their_structure_calls_for(spec in body_spec()) {
        let body = spec.render();
        let (want_status, want_errors) = spec.expected(body.len());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (status, json, text) = rt.block_on(post_json("/small", JSON, body.clone()));
        proptest::prop_assert_eq!(status, want_status, "{} -> {}", body, text);
        if status == 200 {
            proptest::prop_assert_eq!(Some(text), spec.email_text());
        } else if status == 422 {
            let errors: Vec<(String, String)> = json["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["field"].as_str().unwrap().to_owned(),
                        e["code"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            proptest::prop_assert_eq!(errors, want_errors, "{}", body);
        }
    }
}
