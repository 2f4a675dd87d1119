//! `reference-backend --health-check`: the probe of a container's
//! `HEALTHCHECK` (exec form), for images that have no shell and no curl.
//!
//! It sends `GET /health` to the service's own listen address — an
//! unspecified address (`0.0.0.0`, `::`) is reached on the loopback address
//! of its family — and succeeds on a 200 within [`HEALTH_CHECK_TIMEOUT`]:
//! connecting, sending and receiving the response head all count. Any other
//! answer, a refused or hung connection, or no port to call is a failure,
//! which the binary turns into exit status 1 (Docker's "unhealthy").

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

/// How long the whole probe may take: under the `--timeout` of the image's
/// `HEALTHCHECK`, so the probe reports its own reason before Docker kills it.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the service is not healthy.
#[derive(Debug)]
pub enum Unhealthy {
    /// The listen address has port 0: there is no port to call.
    NoPort,
    /// The TCP connection could not be made.
    Connect(std::io::Error),
    /// The exchange failed (connection closed, not HTTP/1.1).
    Http(hyper::Error),
    /// `/health` answered with another status than 200.
    Status(StatusCode),
    /// No response head within the deadline.
    Timeout(Duration),
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPort => f.write_str("the listen address has port 0: nothing to call"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Http(e) => write!(f, "the exchange failed: {e}"),
            Self::Status(status) => write!(f, "/health answered {status}"),
            Self::Timeout(after) => write!(f, "no answer within {} ms", after.as_millis()),
        }
    }
}

impl std::error::Error for Unhealthy {}

/// The address the probe calls for a listen address: the same one, with an
/// unspecified IP replaced by the loopback address of its family.
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Calls `GET /health` on the service listening at `listen`; `Ok` when it
/// answers 200 within `timeout`.
pub async fn health_check(listen: SocketAddr, timeout: Duration) -> Result<(), Unhealthy> {
    let addr = probe_addr(listen);
    if addr.port() == 0 {
        return Err(Unhealthy::NoPort);
    }
    match tokio::time::timeout(timeout, probe(addr)).await {
        Ok(Ok(StatusCode::OK)) => Ok(()),
        Ok(Ok(status)) => Err(Unhealthy::Status(status)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Unhealthy::Timeout(timeout)),
    }
}

async fn probe(addr: SocketAddr) -> Result<StatusCode, Unhealthy> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(Unhealthy::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Unhealthy::Http)?;
    // The connection is driven on its own task while the request waits; it
    // ends with the probe (the process exits right after).
    let connection = tokio::spawn(connection);
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.uri_mut() = Uri::from_static("/health");
    // An address is always a valid header value.
    if let Ok(host) = HeaderValue::try_from(addr.to_string()) {
        request.headers_mut().insert(header::HOST, host);
    }
    let response = sender.send_request(request).await;
    connection.abort();
    Ok(response.map_err(Unhealthy::Http)?.status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    /// A server on a free loopback port whose `/health` answers `status`
    /// (every other path 404).
    async fn server(status: StatusCode) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/health", get(move || async move { status }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn healthy_on_200_from_health_and_through_the_unspecified_address() {
        let addr = server(StatusCode::OK).await;
        health_check(addr, HEALTH_CHECK_TIMEOUT).await.unwrap();
        // A container listens on 0.0.0.0: the probe calls loopback.
        let any = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        health_check(any, HEALTH_CHECK_TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn unhealthy_on_any_other_status() {
        for status in [
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::NO_CONTENT,
        ] {
            let addr = server(status).await;
            match health_check(addr, HEALTH_CHECK_TIMEOUT).await {
                Err(Unhealthy::Status(s)) => assert_eq!(s, status),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn unhealthy_when_nothing_listens_or_there_is_no_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(matches!(
            health_check(addr, HEALTH_CHECK_TIMEOUT).await,
            Err(Unhealthy::Connect(_))
        ));
        assert!(matches!(
            health_check("0.0.0.0:0".parse().unwrap(), HEALTH_CHECK_TIMEOUT).await,
            Err(Unhealthy::NoPort)
        ));
    }

    /// A server that accepts and never answers: the probe gives up at its
    /// deadline (paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn unhealthy_when_the_answer_does_not_come_in_time() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(stream);
        });
        let err = health_check(addr, HEALTH_CHECK_TIMEOUT).await.unwrap_err();
        assert!(matches!(err, Unhealthy::Timeout(t) if t == HEALTH_CHECK_TIMEOUT));
        assert_eq!(err.to_string(), "no answer within 2000 ms");
        hold.abort();
    }

    #[test]
    fn the_probe_calls_loopback_for_unspecified_addresses_only() {
        let cases = [
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("[::]:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("192.0.2.7:9000", "192.0.2.7:9000"),
            ("[2001:db8::1]:80", "[2001:db8::1]:80"),
        ];
        for (listen, called) in cases {
            assert_eq!(
                probe_addr(listen.parse().unwrap()).to_string(),
                called,
                "{listen}"
            );
        }
    }
}
