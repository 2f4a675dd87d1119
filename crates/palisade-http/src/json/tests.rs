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
struct Address {
    #[validate(length(min = 1, code = "required"))]
    city: String,
}

#[derive(Debug, Deserialize, Validate)]
struct Tag {
    #[validate(length(max = 3, code = "too_long"))]
    name: String,
}

fn app() -> Router {
    Router::new()
        .route(
            "/",
            post(|ValidatedJson(s): ValidatedJson<Signup>| async move { s.email }),
        )
        .route(
            "/tiny",
            post(|ValidatedJson(s): ValidatedJson<Signup, 64>| async move { s.email }),
        )
}

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
    assert_eq!(json["errors"][0]["field"], "admin");
    assert_eq!(json["errors"][0]["code"], "unknown_field");

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

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn arbitrary_bodies_never_cause_a_5xx(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (status, _, _) = rt.block_on(post_json("/", JSON, body));
        proptest::prop_assert!([200, 400, 413, 422].contains(&status), "{status}");
    }
}
