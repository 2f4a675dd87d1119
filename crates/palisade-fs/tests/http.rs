//! The traversal corpus through HTTP handlers built on the crate the way the
//! crate docs show (`PUT/GET/DELETE /files/{*path}`): zero escapes, zero 5xx,
//! and a 400 for every payload the rules refuse.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::result_large_err
)] // test code

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::Farm;
use http::{Request, StatusCode, Uri};
use palisade_fs::{PathRules, SafeRoot, UploadPolicy, serve};
use tower::ServiceExt;

#[derive(Clone)]
struct Files {
    root: SafeRoot,
}

fn path_of(files: &Files, uri: &Uri) -> Result<palisade_fs::SafePath, Response> {
    let raw = uri.path().strip_prefix("/files/").unwrap_or_default();
    files
        .root
        .rules()
        .parse_encoded(raw)
        .map_err(|e| e.problem().into_response())
}

async fn get_file(State(files): State<Files>, uri: Uri) -> Response {
    let path = match path_of(&files, &uri) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match serve::download(&files.root, &path).await {
        Ok(response) => response.map(Body::new),
        Err(e) => e.problem().into_response(),
    }
}

async fn put_file(State(files): State<Files>, uri: Uri, body: Body) -> Response {
    let path = match path_of(&files, &uri) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match UploadPolicy::new()
        .store(&files.root, &path, None, body)
        .await
    {
        Ok(_) => StatusCode::CREATED.into_response(),
        Err(e) => e.problem().into_response(),
    }
}

async fn delete_file(State(files): State<Files>, uri: Uri) -> Response {
    let path = match path_of(&files, &uri) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match files
        .root
        .blocking(move |root| root.remove_file(&path))
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.problem().into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_http_never_escapes_nor_fails_with_5xx() {
    let farm = Farm::new();
    let rules = PathRules::new();
    let mut sent = 0;
    for (config, root) in farm.roots() {
        let app = Router::new()
            .route(
                "/files/{*path}",
                get(get_file).put(put_file).delete(delete_file),
            )
            .with_state(Files { root });
        for line in palisade_testkit::corpus::traversal() {
            let target = format!("/files/{}", palisade_testkit::corpus::request_path(line));
            let Ok(uri) = target.parse::<Uri>() else {
                continue;
            };
            // Only characters that cannot be raw in a URI were escaped, and the
            // handler decodes them back: it sees the payload the rules see.
            let refused = rules.parse_encoded(line).is_err();
            for method in ["GET", "PUT", "DELETE"] {
                let req = Request::builder()
                    .method(method)
                    .uri(uri.clone())
                    .body(Body::from("plain text"))
                    .unwrap();
                let res = app.clone().oneshot(req).await.unwrap();
                let status = res.status();
                assert!(
                    !status.is_server_error(),
                    "{config} {method} {line:?}: {status}"
                );
                if method == "GET" && status == StatusCode::OK {
                    let body = axum::body::to_bytes(res.into_body(), 1 << 20)
                        .await
                        .unwrap();
                    assert_ne!(&body[..], common::SECRET, "{config} {line:?}");
                }
                if refused {
                    assert_eq!(
                        status,
                        StatusCode::BAD_REQUEST,
                        "{config} {method} {line:?}"
                    );
                }
                sent += 1;
            }
            farm.assert_outside_untouched();
        }
    }
    assert!(sent > 1500, "{sent}");
}
