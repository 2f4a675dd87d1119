use super::*;
use http::HeaderValue;
use proptest::prelude::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn xff(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
    }
    headers
}

fn forwarded(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(FORWARDED, HeaderValue::from_str(v).unwrap());
    }
    headers
}

fn behind_proxies() -> ClientIpResolver {
    ClientIpResolver::builder()
        .trusted_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
        .build()
        .unwrap()
}

#[test]
fn untrusted_peer_headers_are_ignored() {
    let r = behind_proxies();
    let spoof = xff(&["1.1.1.1"]);
    assert_eq!(r.resolve(ip("203.0.113.1"), &spoof).ip(), ip("203.0.113.1"));
    let spoof = forwarded(&["for=1.1.1.1"]);
    assert_eq!(r.resolve(ip("203.0.113.1"), &spoof).ip(), ip("203.0.113.1"));
    // No proxy configured at all: never read.
    assert_eq!(
        ClientIpResolver::default()
            .resolve(ip("10.0.0.1"), &xff(&["1.1.1.1"]))
            .ip(),
        ip("10.0.0.1")
    );
}

#[test]
fn rightmost_untrusted_entry_wins() {
    let r = behind_proxies();
    // The client prepended a fake address; the proxy appended the real one.
    let h = xff(&["6.6.6.6, 203.0.113.9"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("203.0.113.9"));
    // Two proxy hops.
    let h = xff(&["6.6.6.6, 203.0.113.9, 10.9.9.9"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("203.0.113.9"));
    // Split over several header lines, in order.
    let h = xff(&["6.6.6.6", "203.0.113.9", "10.9.9.9"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("203.0.113.9"));
}

#[test]
fn all_trusted_gives_leftmost() {
    let r = behind_proxies();
    let h = xff(&["10.1.1.1, 10.2.2.2"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("10.1.1.1"));
}

#[test]
fn missing_header_from_proxy_gives_proxy() {
    let r = behind_proxies();
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &HeaderMap::new()).ip(),
        ip("10.0.0.2")
    );
}

#[test]
fn malformed_hop_stops_at_last_trusted() {
    let r = behind_proxies();
    for bad in [
        "garbage",
        "",
        "999.1.1.1",
        "fe80::1%eth0",
        "1.2.3.4:99999",
        "[::1",
        "unknown",
    ] {
        let h = xff(&[&format!("6.6.6.6, {bad}")]);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &h).ip(),
            ip("10.0.0.2"),
            "{bad:?}"
        );
        let h = xff(&[&format!("6.6.6.6, {bad}, 10.3.3.3")]);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &h).ip(),
            ip("10.3.3.3"),
            "{bad:?}"
        );
    }
    // A garbage prefix written by the client does not matter.
    let h = xff(&["not an ip, [[[, 203.0.113.9"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("203.0.113.9"));
}

#[test]
fn non_utf8_header_is_a_malformed_hop() {
    let r = behind_proxies();
    let mut h = HeaderMap::new();
    h.append(
        X_FORWARDED_FOR,
        HeaderValue::from_bytes(b"1.1.1.1, \xff").unwrap(),
    );
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), ip("10.0.0.2"));
}

#[test]
fn ports_and_brackets() {
    let r = behind_proxies();
    let cases = [
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:4711", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("\t203.0.113.9 ", "203.0.113.9"),
    ];
    for (entry, want) in cases {
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &xff(&[entry])).ip(),
            ip(want),
            "{entry}"
        );
    }
}

#[test]
fn ipv4_mapped_addresses_are_ipv4() {
    let r = behind_proxies();
    // A dual-stack socket reports the proxy as ::ffff:10.0.0.2; it is still trusted.
    let got = r.resolve(ip("::ffff:10.0.0.2"), &xff(&["::ffff:203.0.113.9"]));
    assert_eq!(got.ip(), ip("203.0.113.9"));
    // A mapped trusted network in the configuration is understood as IPv4.
    let r = ClientIpResolver::builder()
        .trusted_proxy("::ffff:10.0.0.0/104")
        .build()
        .unwrap();
    assert_eq!(
        r.trusted_proxies(),
        &["10.0.0.0/8".parse::<IpNet>().unwrap()]
    );
}

#[test]
fn ipv6_peers_and_proxies() {
    let r = behind_proxies();
    let h = xff(&["2001:db8:1::5, 2001:db8:ffff::1"]);
    assert_eq!(
        r.resolve(ip("2001:db8:ffff::2"), &h).ip(),
        ip("2001:db8:1::5")
    );
    let h = xff(&["2001:db8:1::5"]);
    assert_eq!(
        r.resolve(ip("2001:db8:fffe::2"), &h).ip(),
        ip("2001:db8:fffe::2")
    );
}

#[test]
fn ipv6_keys_group_by_prefix() {
    let r = ClientIpResolver::default();
    let a = r.resolve(ip("2001:db8:1:2:aaaa::1"), &HeaderMap::new());
    let b = r.resolve(ip("2001:db8:1:2:bbbb::9"), &HeaderMap::new());
    let c = r.resolve(ip("2001:db8:1:3::1"), &HeaderMap::new());
    assert_eq!(a.key(), b.key());
    assert_ne!(a.key(), c.key());
    assert_eq!(a.key().to_string(), "2001:db8:1:2::/64");
    let v4 = r.resolve(ip("192.0.2.1"), &HeaderMap::new());
    assert_eq!(v4.key().to_string(), "192.0.2.1/32");

    let r48 = ClientIpResolver::builder().ipv6_prefix(48).build().unwrap();
    assert_eq!(
        r48.resolve(ip("2001:db8:1:3::1"), &HeaderMap::new())
            .key()
            .to_string(),
        "2001:db8:1::/48"
    );
}

#[test]
fn bad_configuration_is_an_error() {
    for bad in ["10.0.0.0/33", "not-a-net", "", "10.0.0.0/8/1", "::/129"] {
        let err = ClientIpResolver::builder()
            .trusted_proxy(bad)
            .build()
            .unwrap_err();
        assert_eq!(err.setting(), "client_ip.trusted_proxies");
        // The error never echoes the value.
        if !bad.is_empty() {
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }
    for bad in [0, 129, 255] {
        assert!(
            ClientIpResolver::builder()
                .ipv6_prefix(bad)
                .build()
                .is_err()
        );
    }
    let r = ClientIpResolver::builder()
        .trusted_proxy("10.1.2.3")
        .build()
        .unwrap();
    assert_eq!(r.trusted_proxies()[0].to_string(), "10.1.2.3/32");
}

#[test]
fn forwarded_header() {
    let r = ClientIpResolver::builder()
        .trusted_proxy("10.0.0.0/8")
        .header(ForwardedHeader::Forwarded)
        .build()
        .unwrap();
    let peer = ip("10.0.0.2");
    let cases: &[(&[&str], &str)] = &[
        (&["for=203.0.113.9"], "203.0.113.9"),
        (&["For=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17"),
        (&["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60"),
        (&["for=6.6.6.6, for=203.0.113.9"], "203.0.113.9"),
        (
            &["for=6.6.6.6", "for=203.0.113.9;proto=https, for=10.4.4.4"],
            "203.0.113.9",
        ),
        (
            &["for=\"6.6.6.6, for=7.7.7.7\", for=203.0.113.9"],
            "203.0.113.9",
        ),
        (&["for=\"203.0.113.9:80\""], "203.0.113.9"),
        // unknown / obfuscated / missing `for` stop at the last trusted hop
        (&["for=6.6.6.6, for=unknown"], "10.0.0.2"),
        (&["for=6.6.6.6, for=_hidden"], "10.0.0.2"),
        (&["for=6.6.6.6, proto=https"], "10.0.0.2"),
        // malformed lines are not trusted at all
        (&["for=\"unterminated, for=203.0.113.9"], "10.0.0.2"),
        (&["for=1.1.1.1;for=2.2.2.2"], "10.0.0.2"),
        (&["for"], "10.0.0.2"),
        (&["=1.1.1.1"], "10.0.0.2"),
        (&["for=1.1.1.1 x"], "10.0.0.2"),
        (&["for=1.1.1.1,"], "10.0.0.2"),
    ];
    for (lines, want) in cases {
        assert_eq!(
            r.resolve(peer, &forwarded(lines)).ip(),
            ip(want),
            "{lines:?}"
        );
    }
    // X-Forwarded-For is ignored when Forwarded is the configured header.
    assert_eq!(r.resolve(peer, &xff(&["203.0.113.9"])).ip(), peer);
}

fn hop() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|a| format!("[{a}]:443")),
        "[ -~]{0,20}",
    ]
}

proptest! {
    /// Whatever the client writes in front, the proxy-appended address wins.
    #[test]
    fn client_prefix_cannot_change_result(prefix in "[ -~]{0,200}", client in any::<std::net::Ipv4Addr>()) {
        let r = behind_proxies();
        prop_assume!(!r.is_trusted(IpAddr::V4(client)));
        let h = xff(&[&format!("{prefix}, {client}")]);
        prop_assert_eq!(r.resolve(ip("10.0.0.2"), &h).ip(), IpAddr::V4(client));
    }

    /// The result is the peer or an address present in the header, and never
    /// panics, whatever the header holds.
    #[test]
    fn xff_result_is_peer_or_listed(hops in proptest::collection::vec(hop(), 0..8)) {
        let r = behind_proxies();
        let line = hops.join(",");
        let Ok(value) = HeaderValue::from_str(&line) else { return Ok(()) };
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, value);
        let got = r.resolve(ip("10.0.0.2"), &h).ip();
        let listed: Vec<IpAddr> = line.split(',').filter_map(parse_node).map(canonical).collect();
        prop_assert!(got == ip("10.0.0.2") || listed.contains(&got));
    }

    #[test]
    fn forwarded_parser_never_panics(line in "[ -~]{0,200}") {
        let _ = parse_forwarded(&line);
    }

    #[test]
    fn forwarded_roundtrip(addrs in proptest::collection::vec(any::<std::net::IpAddr>(), 1..6)) {
        let line = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => format!("for={v4};proto=https"),
                IpAddr::V6(v6) => format!("for=\"[{v6}]:8080\""),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let parsed = parse_forwarded(&line).unwrap();
        prop_assert_eq!(parsed, addrs.iter().copied().map(Some).collect::<Vec<_>>());
    }
}

mod layer {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::{ServiceBuilder, ServiceExt};

    async fn echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        let ip = req
            .extensions()
            .get::<ClientIp>()
            .map(ToString::to_string)
            .unwrap_or_default();
        Ok(Response::new(Full::from(ip)))
    }

    #[tokio::test]
    async fn inserts_resolved_ip() {
        let svc = ServiceBuilder::new()
            .layer(ClientIpLayer::new(behind_proxies()))
            .service_fn(echo);
        let mut req = Request::new(Full::default());
        req.headers_mut().insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("1.1.1.1, 203.0.113.9"),
        );
        req.extensions_mut()
            .insert(PeerAddr("10.0.0.1:5000".parse().unwrap()));
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(
            res.into_body().collect().await.unwrap().to_bytes(),
            "203.0.113.9"
        );

        let mut req = Request::new(Full::default());
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo::<SocketAddr>(
                "[::1]:5000".parse().unwrap(),
            ));
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "::1");
    }

    #[tokio::test]
    async fn missing_peer_is_a_loud_500() {
        let svc = ServiceBuilder::new()
            .layer(ClientIpLayer::default())
            .service_fn(echo);
        let res = svc.oneshot(Request::new(Full::default())).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            res.headers()[http::header::CONTENT_TYPE],
            crate::problem::PROBLEM_JSON
        );
    }
}
