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

/// Header lines as raw bytes (obs-text allowed), for the configured header.
fn lines_of(kind: ForwardedHeader, lines: &[Vec<u8>]) -> HeaderMap {
    let name = match kind {
        ForwardedHeader::XForwardedFor => X_FORWARDED_FOR,
        ForwardedHeader::Forwarded => FORWARDED,
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(name.clone(), HeaderValue::from_bytes(line).unwrap());
    }
    headers
}

fn behind_proxies() -> ClientIpResolver {
    resolver(ForwardedHeader::XForwardedFor)
}

fn resolver(kind: ForwardedHeader) -> ClientIpResolver {
    ClientIpResolver::builder()
        .trusted_proxies(["10.0.0.0/8", "2001:db8:ffff::/48"])
        .header(kind)
        .build()
        .unwrap()
}

fn malformed(kind: ForwardedHeader) -> Result<ClientIp, MalformedForwarding> {
    Err(MalformedForwarding { header: kind })
}

// --- The attack: a client posing as its own trusted proxy. -------------------

/// A well-behaved proxy adds its own `Forwarded` line after the client's. The
/// client's line is broken on purpose; a resolver that distrusts the whole
/// header then falls back to the peer, i.e. the proxy, which allowlists and
/// rate-limit exemptions of the proxy network let through.
#[test]
fn attack_broken_forwarded_line_does_not_make_the_client_its_proxy() {
    let r = resolver(ForwardedHeader::Forwarded);
    let proxy = ip("10.0.0.2");
    for client_line in ["for=\"", "for=\"10.0.0.7", "garbage", "for=unknown", ""] {
        // The proxy appends a line...
        let h = forwarded(&[client_line, "for=203.0.113.9"]);
        assert_eq!(
            r.resolve(proxy, &h).map(|c| c.ip()),
            Ok(ip("203.0.113.9")),
            "{client_line:?}"
        );
        // ...or an element to the client's line.
        let h = forwarded(&[&format!("{client_line}, for=203.0.113.9")]);
        assert_eq!(
            r.resolve(proxy, &h).map(|c| c.ip()),
            Ok(ip("203.0.113.9")),
            "{client_line:?}"
        );
    }
}

/// A proxy that passes a client's header on (or a client talking to the
/// service through a path where the trusted hop is the last one written) puts
/// garbage right at the trust boundary: it must be refused, never resolved to
/// the trusted proxy.
#[test]
fn attack_garbage_at_the_trust_boundary_is_refused_not_resolved_to_the_proxy() {
    let r = behind_proxies();
    let proxy = ip("10.0.0.2");
    assert_eq!(
        r.resolve(proxy, &xff(&["garbage"])),
        malformed(ForwardedHeader::XForwardedFor)
    );
    assert_eq!(
        r.resolve(proxy, &xff(&["garbage, 10.3.3.3"])),
        malformed(ForwardedHeader::XForwardedFor)
    );
    let r = resolver(ForwardedHeader::Forwarded);
    assert_eq!(
        r.resolve(proxy, &forwarded(&["for=_hidden, for=10.3.3.3"])),
        malformed(ForwardedHeader::Forwarded)
    );
}

// --- Resolution. -------------------------------------------------------------

#[test]
fn untrusted_peer_headers_are_ignored() {
    let r = behind_proxies();
    let peer = ip("203.0.113.1");
    assert_eq!(r.resolve(peer, &xff(&["1.1.1.1"])).unwrap().ip(), peer);
    // Even a malformed header from an untrusted peer is never read.
    assert_eq!(r.resolve(peer, &xff(&["garbage"])).unwrap().ip(), peer);
    let r = resolver(ForwardedHeader::Forwarded);
    assert_eq!(
        r.resolve(peer, &forwarded(&["for=1.1.1.1"])).unwrap().ip(),
        peer
    );
    assert_eq!(r.resolve(peer, &forwarded(&["for=\""])).unwrap().ip(), peer);
    // No proxy configured at all: never read.
    assert_eq!(
        ClientIpResolver::default()
            .resolve(ip("10.0.0.1"), &xff(&["1.1.1.1"]))
            .unwrap()
            .ip(),
        ip("10.0.0.1")
    );
}

#[test]
fn rightmost_untrusted_entry_wins() {
    let r = behind_proxies();
    // The client prepended a fake address; the proxy appended the real one.
    let h = xff(&["6.6.6.6, 203.0.113.9"]);
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &h).unwrap().ip(),
        ip("203.0.113.9")
    );
    // Two proxy hops.
    let h = xff(&["6.6.6.6, 203.0.113.9, 10.9.9.9"]);
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &h).unwrap().ip(),
        ip("203.0.113.9")
    );
    // Split over several header lines, in order.
    let h = xff(&["6.6.6.6", "203.0.113.9", "10.9.9.9"]);
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &h).unwrap().ip(),
        ip("203.0.113.9")
    );
}

/// A valid chain of trusted addresses only: the request comes from inside the
/// trusted networks, and its client is the leftmost address (documented).
#[test]
fn all_trusted_gives_leftmost() {
    let r = behind_proxies();
    let h = xff(&["10.1.1.1, 10.2.2.2"]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).unwrap().ip(), ip("10.1.1.1"));
    let r = resolver(ForwardedHeader::Forwarded);
    let h = forwarded(&["for=10.1.1.1", "for=\"[2001:db8:ffff::1]\""]);
    assert_eq!(r.resolve(ip("10.0.0.2"), &h).unwrap().ip(), ip("10.1.1.1"));
}

#[test]
fn missing_header_from_proxy_gives_proxy() {
    let r = behind_proxies();
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &HeaderMap::new()).unwrap().ip(),
        ip("10.0.0.2")
    );
}

/// Before this fix a malformed hop stopped the walk at the last trusted hop,
/// which made the client a trusted proxy. Now it is an error when reached, and
/// irrelevant when the client was found before it.
#[test]
fn malformed_hop_at_the_boundary_is_an_error_and_irrelevant_beyond_it() {
    let r = behind_proxies();
    let err = malformed(ForwardedHeader::XForwardedFor);
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
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), err, "{bad:?}");
        let h = xff(&[&format!("6.6.6.6, {bad}, 10.3.3.3")]);
        assert_eq!(r.resolve(ip("10.0.0.2"), &h), err, "{bad:?}");
        let h = xff(&[&format!("{bad}, 203.0.113.9, 10.3.3.3")]);
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &h).unwrap().ip(),
            ip("203.0.113.9"),
            "{bad:?}"
        );
    }
    // A garbage prefix written by the client does not matter.
    let h = xff(&["not an ip, [[[, 203.0.113.9"]);
    assert_eq!(
        r.resolve(ip("10.0.0.2"), &h).unwrap().ip(),
        ip("203.0.113.9")
    );
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
        ("[2001:db8::1]:_port", "2001:db8::1"),
    ];
    for (entry, want) in cases {
        assert_eq!(
            r.resolve(ip("10.0.0.2"), &xff(&[entry])).unwrap().ip(),
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
    assert_eq!(got.unwrap().ip(), ip("203.0.113.9"));
    // A mapped trusted hop is a trusted hop, not the client.
    let got = r.resolve(ip("10.0.0.2"), &xff(&["203.0.113.9, ::ffff:10.3.3.3"]));
    assert_eq!(got.unwrap().ip(), ip("203.0.113.9"));
    // ...also in `Forwarded`, bracketed.
    let got = resolver(ForwardedHeader::Forwarded).resolve(
        ip("10.0.0.2"),
        &forwarded(&["for=203.0.113.9, for=\"[::ffff:10.3.3.3]:80\""]),
    );
    assert_eq!(got.unwrap().ip(), ip("203.0.113.9"));
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
        r.resolve(ip("2001:db8:ffff::2"), &h).unwrap().ip(),
        ip("2001:db8:1::5")
    );
    let h = xff(&["2001:db8:1::5"]);
    assert_eq!(
        r.resolve(ip("2001:db8:fffe::2"), &h).unwrap().ip(),
        ip("2001:db8:fffe::2")
    );
}

#[test]
fn ipv6_keys_group_by_prefix() {
    let r = ClientIpResolver::default();
    let none = HeaderMap::new();
    let a = r.resolve(ip("2001:db8:1:2:aaaa::1"), &none).unwrap();
    let b = r.resolve(ip("2001:db8:1:2:bbbb::9"), &none).unwrap();
    let c = r.resolve(ip("2001:db8:1:3::1"), &none).unwrap();
    assert_eq!(a.key(), b.key());
    assert_ne!(a.key(), c.key());
    assert_eq!(a.key().to_string(), "2001:db8:1:2::/64");
    let v4 = r.resolve(ip("192.0.2.1"), &none).unwrap();
    assert_eq!(v4.key().to_string(), "192.0.2.1/32");

    let r48 = ClientIpResolver::builder().ipv6_prefix(48).build().unwrap();
    assert_eq!(
        r48.resolve(ip("2001:db8:1:3::1"), &none)
            .unwrap()
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
    let r = resolver(ForwardedHeader::Forwarded);
    let peer = ip("10.0.0.2");
    let cases: &[(&[&str], &str)] = &[
        (&["for=203.0.113.9"], "203.0.113.9"),
        (&["For=\"[2001:db8:cafe::17]:4711\""], "2001:db8:cafe::17"),
        (&["FOR=\"[2001:db8:cafe::17]:_obf\""], "2001:db8:cafe::17"),
        (&["for=192.0.2.60;proto=http;by=203.0.113.43"], "192.0.2.60"),
        (&["proto=http;by=\"[::1]\";for=192.0.2.60"], "192.0.2.60"),
        (&["for=6.6.6.6, for=203.0.113.9"], "203.0.113.9"),
        (
            &["for=6.6.6.6,for=203.0.113.9 ,\tfor=10.1.1.1"],
            "203.0.113.9",
        ),
        (&["for=192.0.2.60 ; proto=http"], "192.0.2.60"),
        (
            &["for=6.6.6.6", "for=203.0.113.9;proto=https, for=10.4.4.4"],
            "203.0.113.9",
        ),
        // A quoted string may hold commas and `for=`: it is one value.
        (
            &["for=\"6.6.6.6, for=7.7.7.7\", for=203.0.113.9"],
            "203.0.113.9",
        ),
        (&["for=\"203.0.113.9:80\""], "203.0.113.9"),
        // Quoted-pairs are unescaped.
        (&["for=\"203.0.113.\\9\""], "203.0.113.9"),
        (&["for=203.0.113.9;host=\"a\\\"b\""], "203.0.113.9"),
        // The client's broken element is never read.
        (&["for=\"unterminated, for=203.0.113.9"], "203.0.113.9"),
        (&["for=1.1.1.1;for=2.2.2.2, for=203.0.113.9"], "203.0.113.9"),
    ];
    for (lines, want) in cases {
        assert_eq!(
            r.resolve(peer, &forwarded(lines)).map(|c| c.ip()),
            Ok(ip(want)),
            "{lines:?}"
        );
    }
    // X-Forwarded-For is ignored when Forwarded is the configured header.
    assert_eq!(r.resolve(peer, &xff(&["203.0.113.9"])).unwrap().ip(), peer);
}

#[test]
fn error_names_the_header_not_the_value() {
    let err = MalformedForwarding {
        header: ForwardedHeader::Forwarded,
    };
    assert_eq!(err.header(), ForwardedHeader::Forwarded);
    assert_eq!(
        err.to_string(),
        "the Forwarded header is malformed where the client address should be"
    );
    let problem = ProblemDetails::from(MalformedForwarding {
        header: ForwardedHeader::XForwardedFor,
    });
    assert_eq!(problem.status, 400);
    assert_eq!(problem.type_uri, ProblemType::BAD_REQUEST.uri());
    assert!(problem.detail.unwrap().contains("X-Forwarded-For"));
}

// --- One test per malformed form that reaches the trust boundary. ------------

const CLIENT: &str = "203.0.113.9";
const PROXY_PEER: &str = "10.0.0.2";

/// A valid hop for `addr`, as the proxies write it.
fn valid_hop(kind: ForwardedHeader, addr: &str) -> Vec<u8> {
    match (kind, ip(addr)) {
        (ForwardedHeader::XForwardedFor, _) => addr.as_bytes().to_vec(),
        (ForwardedHeader::Forwarded, IpAddr::V4(_)) => format!("for={addr}").into_bytes(),
        (ForwardedHeader::Forwarded, IpAddr::V6(_)) => format!("for=\"[{addr}]\"").into_bytes(),
    }
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&b", "[..])
}

/// `bad` where the client would be is refused, through `resolve` and through
/// the layer; `bad` to the left of the client changes nothing; and from an
/// untrusted peer it is never read.
async fn assert_refused_at_the_boundary(kind: ForwardedHeader, bad: &[u8]) {
    let r = resolver(kind);
    let proxy = ip(PROXY_PEER);
    let client = valid_hop(kind, CLIENT);
    let trusted = valid_hop(kind, "10.3.3.3");
    let trusted6 = valid_hop(kind, "2001:db8:ffff::3");
    let refused: [Vec<Vec<u8>>; 5] = [
        vec![bad.to_vec()],
        vec![join(&[&client, bad])],
        vec![join(&[&client, bad, &trusted])],
        vec![client.clone(), bad.to_vec(), join(&[&trusted6, &trusted])],
        vec![join(&[&client, bad]), trusted.clone()],
    ];
    for lines in &refused {
        assert_eq!(
            r.resolve(proxy, &lines_of(kind, lines)),
            malformed(kind),
            "{kind:?} {:?}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }
    let ignored: [Vec<Vec<u8>>; 4] = [
        vec![join(&[bad, &client])],
        vec![join(&[bad, &client, &trusted])],
        vec![bad.to_vec(), client.clone()],
        vec![bad.to_vec(), join(&[&client, &trusted6]), trusted.clone()],
    ];
    for lines in &ignored {
        assert_eq!(
            r.resolve(proxy, &lines_of(kind, lines)).map(|c| c.ip()),
            Ok(ip(CLIENT)),
            "{kind:?} {:?}",
            lines
                .iter()
                .map(|l| String::from_utf8_lossy(l))
                .collect::<Vec<_>>()
        );
    }
    // From an untrusted peer the header is not read at all.
    let stranger = ip("198.51.100.7");
    assert_eq!(
        r.resolve(stranger, &lines_of(kind, &refused[2]))
            .map(|c| c.ip()),
        Ok(stranger)
    );

    // Through the layer: 400, problem+json naming the header, counted as a rejection.
    let res = layer::call(r.clone(), PROXY_PEER, lines_of(kind, &refused[2])).await;
    layer::assert_bad_request(res, kind).await;
    let res = layer::call(r, PROXY_PEER, lines_of(kind, &ignored[1])).await;
    assert_eq!(res.status(), http::StatusCode::OK);
    assert_eq!(layer::body(res).await, CLIENT);
}

macro_rules! refused_at_the_boundary {
    ($($name:ident: $kind:ident, $bad:expr;)*) => {$(
        #[tokio::test]
        async fn $name() {
            assert_refused_at_the_boundary(ForwardedHeader::$kind, $bad).await;
        }
    )*};
}

refused_at_the_boundary! {
    xff_garbage_is_refused: XForwardedFor, b"garbage";
    xff_empty_entry_is_refused: XForwardedFor, b"";
    xff_blank_entry_is_refused: XForwardedFor, b" \t ";
    xff_out_of_range_octet_is_refused: XForwardedFor, b"999.1.1.1";
    xff_leading_zero_octet_is_refused: XForwardedFor, b"010.0.0.1";
    xff_truncated_ipv4_is_refused: XForwardedFor, b"10.1";
    xff_zone_id_is_refused: XForwardedFor, b"fe80::1%eth0";
    xff_port_out_of_range_is_refused: XForwardedFor, b"203.0.113.7:99999";
    xff_empty_port_is_refused: XForwardedFor, b"203.0.113.7:";
    xff_empty_obfuscated_port_is_refused: XForwardedFor, b"203.0.113.7:_";
    xff_unclosed_bracket_is_refused: XForwardedFor, b"[2001:db8::1";
    xff_bracketed_ipv4_is_refused: XForwardedFor, b"[203.0.113.7]";
    xff_unknown_is_refused: XForwardedFor, b"unknown";
    xff_obfuscated_is_refused: XForwardedFor, b"_hidden";
    xff_host_name_is_refused: XForwardedFor, b"proxy.example";
    xff_quoted_address_is_refused: XForwardedFor, b"\"203.0.113.7\"";
    xff_not_utf8_is_refused: XForwardedFor, b"203.0.113.7\xff";
    fwd_unknown_is_refused: Forwarded, b"for=unknown";
    fwd_obfuscated_is_refused: Forwarded, b"for=_hidden";
    fwd_obfuscated_with_port_is_refused: Forwarded, b"for=\"_hidden:4711\"";
    fwd_missing_for_is_refused: Forwarded, b"proto=https;by=10.0.0.1";
    fwd_duplicate_for_is_refused: Forwarded, b"for=203.0.113.7;for=203.0.113.8";
    fwd_empty_element_is_refused: Forwarded, b"";
    fwd_empty_pair_is_refused: Forwarded, b"for=203.0.113.7;";
    fwd_empty_value_is_refused: Forwarded, b"for=";
    fwd_empty_quoted_value_is_refused: Forwarded, b"for=\"\"";
    fwd_missing_name_is_refused: Forwarded, b"=203.0.113.7";
    fwd_name_without_value_is_refused: Forwarded, b"for";
    fwd_space_around_equals_is_refused: Forwarded, b"for = 203.0.113.7";
    fwd_unterminated_quote_is_refused: Forwarded, b"for=\"203.0.113.7";
    fwd_escaped_closing_quote_is_refused: Forwarded, b"for=\"203.0.113.7\\\"";
    fwd_unquoted_port_is_refused: Forwarded, b"for=203.0.113.7:4711";
    fwd_unquoted_ipv6_is_refused: Forwarded, b"for=[2001:db8::7]";
    fwd_unbracketed_ipv6_is_refused: Forwarded, b"for=\"2001:db8::7\"";
    fwd_port_out_of_range_is_refused: Forwarded, b"for=\"203.0.113.7:99999\"";
    fwd_empty_obfuscated_port_is_refused: Forwarded, b"for=\"[2001:db8::7]:_\"";
    fwd_zone_id_is_refused: Forwarded, b"for=\"[fe80::1%25eth0]\"";
    fwd_host_name_is_refused: Forwarded, b"for=proxy.example";
    fwd_trailing_garbage_is_refused: Forwarded, b"for=203.0.113.7 x";
    fwd_not_utf8_is_refused: Forwarded, b"for=\"203.0.113.7\xff\"";
}

// --- Properties. ---------------------------------------------------------------

/// An independent reading of a node, for the reference model.
fn reference_node(bytes: &[u8], bare_ipv6: bool) -> Option<IpAddr> {
    let s = std::str::from_utf8(bytes).ok()?;
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(v4.into());
    }
    if bare_ipv6 && let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Some(v6.into());
    }
    let bracketed = |h: &str| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .map(IpAddr::V6)
    };
    if let Some(v6) = bracketed(s) {
        return Some(v6);
    }
    let (host, port) = s.rsplit_once(':')?;
    let port_ok = if let Some(obf) = port.strip_prefix('_') {
        !obf.is_empty()
            && obf
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    } else {
        !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok()
    };
    if !port_ok {
        return None;
    }
    bracketed(host).or_else(|| host.parse::<Ipv4Addr>().ok().map(IpAddr::V4))
}

/// RFC 7239 §4 read left to right, the obvious way: the `for` node of every
/// element (`None`: absent or not an address), or `None` for a malformed line.
fn reference_forwarded_line(line: &[u8]) -> Option<Vec<Option<IpAddr>>> {
    let ows = |i: &mut usize| {
        while matches!(line.get(*i), Some(b' ' | b'\t')) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while line.get(*i).is_some_and(|b| is_tchar(*b)) {
            *i += 1;
        }
        (*i > start).then(|| line[start..*i].to_vec())
    };
    let mut i = 0;
    let mut nodes = Vec::new();
    loop {
        let mut node = None;
        loop {
            ows(&mut i);
            let name = token(&mut i)?;
            if line.get(i) != Some(&b'=') {
                return None;
            }
            i += 1;
            let value = if line.get(i) == Some(&b'"') {
                i += 1;
                let mut value = Vec::new();
                loop {
                    match *line.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            i += 1;
                            value.push(*line.get(i)?);
                        }
                        b => value.push(b),
                    }
                    i += 1;
                }
                i += 1;
                value
            } else {
                token(&mut i)?
            };
            if name.eq_ignore_ascii_case(b"for") {
                if node.is_some() {
                    return None;
                }
                node = Some(reference_node(&value, false));
            }
            ows(&mut i);
            if line.get(i) == Some(&b';') {
                i += 1;
            } else {
                break;
            }
        }
        nodes.push(node.flatten());
        match line.get(i) {
            None => return Some(nodes),
            Some(b',') => i += 1,
            Some(_) => return None,
        }
    }
}

/// Every hop of the header, left to right, or `None` when a `Forwarded` line
/// is malformed as a whole.
fn reference_hops(kind: ForwardedHeader, lines: &[Vec<u8>]) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    for line in lines {
        match kind {
            ForwardedHeader::XForwardedFor => hops.extend(
                line.split(|b| *b == b',')
                    .map(|entry| reference_node(trim_ows(entry), true)),
            ),
            ForwardedHeader::Forwarded => hops.extend(reference_forwarded_line(line)?),
        }
    }
    Some(hops)
}

/// Whether `ip` is in the test resolver's trusted networks (`10.0.0.0/8`,
/// `2001:db8:ffff::/48`; an IPv4-mapped address as its IPv4 form), decided
/// from the address's own bytes: the oracle does not ask the resolver.
fn trusted(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.segments()[..3] == [0x2001, 0x0db8, 0xffff],
    }
}

/// The specification: untrusted peer → the peer; else from the right, the
/// first untrusted address, an error at a malformed hop, the leftmost when
/// every hop is trusted.
fn model(
    r: &ClientIpResolver,
    peer: IpAddr,
    hops: &[Option<IpAddr>],
) -> Result<IpAddr, MalformedForwarding> {
    let peer = IpAddr::to_canonical(&peer);
    if !trusted(peer) {
        return Ok(peer);
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        let ip = IpAddr::to_canonical(&hop.ok_or(MalformedForwarding { header: r.header })?);
        if !trusted(ip) {
            return Ok(ip);
        }
        client = ip;
    }
    Ok(client)
}

/// The trust invariant and the model, checked for one request.
fn check(r: &ClientIpResolver, peer: IpAddr, lines: &[Vec<u8>]) -> Result<(), TestCaseError> {
    let got = r.resolve(peer, &lines_of(r.header, lines)).map(|c| c.ip());
    let peer_trusted = trusted(peer);
    if !peer_trusted {
        prop_assert_eq!(
            got,
            Ok(IpAddr::to_canonical(&peer)),
            "an untrusted peer is the client"
        );
    }
    let reference = reference_hops(r.header, lines);
    if let Ok(client) = got
        && trusted(client)
    {
        // Only the internal case may resolve to a trusted address.
        prop_assert!(peer_trusted);
        let hops = reference.clone();
        prop_assert!(
            hops.as_ref()
                .is_some_and(|hops| hops.iter().all(|h| h.is_some_and(trusted))),
            "trusted result {} from a chain that is not all valid trusted hops: {:?}",
            client,
            hops
        );
    }
    match reference {
        Some(hops) => prop_assert_eq!(got, model(r, peer, &hops)),
        // A line malformed as a whole: refused, unless the client was found
        // to the right of the malformation.
        None => prop_assert!(got.is_err() || got.is_ok_and(|c| !trusted(c)), "{:?}", got),
    }
    Ok(())
}

fn kind() -> impl Strategy<Value = ForwardedHeader> {
    prop_oneof![
        Just(ForwardedHeader::XForwardedFor),
        Just(ForwardedHeader::Forwarded)
    ]
}

/// Addresses, two in three trusted (`10.0.0.0/8`, `2001:db8:ffff::/48`,
/// IPv4-mapped forms), so chains of several trusted hops are common; the
/// untrusted ones include near misses (`11.x`, `9.x`, `2001:db8:fffe::`).
fn address() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::from([10, a, b, c])),
        2 => any::<u128>().prop_map(|n| IpAddr::from(Ipv6Addr::from(
            (0x2001_0db8_ffff_u128 << 80) | (n & ((1 << 80) - 1))
        ))),
        2 => any::<[u8; 3]>()
            .prop_map(|[a, b, c]| IpAddr::V6(Ipv4Addr::new(10, a, b, c).to_ipv6_mapped())),
        1 => (prop::sample::select(vec![9u8, 11]), any::<[u8; 3]>())
            .prop_map(|(first, [a, b, c])| IpAddr::from([first, a, b, c])),
        1 => any::<u128>().prop_map(|n| IpAddr::from(Ipv6Addr::from(
            (0x2001_0db8_fffe_u128 << 80) | (n & ((1 << 80) - 1))
        ))),
        1 => any::<Ipv4Addr>().prop_map(IpAddr::V4),
        1 => any::<Ipv4Addr>().prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
        1 => any::<Ipv6Addr>().prop_map(IpAddr::V6),
    ]
}

fn untrusted_address() -> impl Strategy<Value = IpAddr> {
    address().prop_filter("untrusted", |a| !trusted(*a))
}

/// One valid hop for `addr`, in one of the forms proxies write.
fn render(kind: ForwardedHeader, addr: IpAddr, style: u8) -> Vec<u8> {
    let s = match (kind, addr) {
        (ForwardedHeader::XForwardedFor, IpAddr::V4(a)) => match style % 3 {
            0 => a.to_string(),
            1 => format!("{a}:{}", u16::from(style) * 97),
            _ => format!("\t{a} "),
        },
        (ForwardedHeader::XForwardedFor, IpAddr::V6(a)) => match style % 3 {
            0 => a.to_string(),
            1 => format!("[{a}]:{}", u16::from(style) * 97),
            _ => format!(" [{a}]"),
        },
        (ForwardedHeader::Forwarded, IpAddr::V4(a)) => match style % 4 {
            0 => format!("for={a}"),
            1 => format!("For=\"{a}:{}\";proto=https", u16::from(style) * 97),
            2 => format!("proto=http;by=\"[2001:db8::1]\" ; FOR={a}"),
            _ => format!("for=\"{a}:_p{style}\";host=\"x\\\"y\""),
        },
        (ForwardedHeader::Forwarded, IpAddr::V6(a)) => match style % 3 {
            0 => format!("for=\"[{a}]\""),
            1 => format!("for=\"[{a}]:{}\";proto=https", u16::from(style) * 97),
            _ => format!("by=_b;for=\"[{a}]:_obf\""),
        },
    };
    s.into_bytes()
}

const XFF_MALFORMED: &[&[u8]] = &[
    b"garbage",
    b"",
    b"  ",
    b"999.1.1.1",
    b"010.0.0.1",
    b"fe80::1%eth0",
    b"10.0.0.1:99999",
    b"[2001:db8::1",
    b"[10.0.0.1]",
    b"unknown",
    b"_hidden",
    b"\"10.0.0.1\"",
    b"10.0.0.1\xff",
];

const FORWARDED_MALFORMED: &[&[u8]] = &[
    b"for=unknown",
    b"for=_hidden",
    b"for=\"_hidden:80\"",
    b"proto=https",
    b"for=10.0.0.1;for=10.0.0.2",
    b"",
    b"for=10.0.0.1;",
    b"for=",
    b"for=\"\"",
    b"=10.0.0.1",
    b"for = 10.0.0.1",
    b"for=\"10.0.0.1",
    b"for=\"10.0.0.1\\\"",
    b"for=10.0.0.1:80",
    b"for=[2001:db8:ffff::1]",
    b"for=\"2001:db8:ffff::1\"",
    b"for=\"[fe80::1%25eth0]\"",
    b"for=10.0.0.1 x",
    b"for=\"10.0.0.1\xff\"",
];

#[derive(Debug, Clone)]
enum Hop {
    Valid(IpAddr, u8),
    Malformed(usize),
}

fn hop() -> impl Strategy<Value = Hop> {
    prop_oneof![
        4 => (address(), any::<u8>()).prop_map(|(a, s)| Hop::Valid(a, s)),
        1 => any::<usize>().prop_map(Hop::Malformed),
    ]
}

/// Renders a chain, cut into header lines after the hops marked in `cuts`.
fn render_chain(kind: ForwardedHeader, hops: &[Hop], cuts: &[bool]) -> Vec<Vec<u8>> {
    let forms = match kind {
        ForwardedHeader::XForwardedFor => XFF_MALFORMED,
        ForwardedHeader::Forwarded => FORWARDED_MALFORMED,
    };
    let mut lines = Vec::new();
    let mut line: Vec<Vec<u8>> = Vec::new();
    for (i, hop) in hops.iter().enumerate() {
        line.push(match hop {
            Hop::Valid(a, s) => render(kind, *a, *s),
            Hop::Malformed(m) => forms[m % forms.len()].to_vec(),
        });
        if cuts.get(i).copied().unwrap_or(false) || i + 1 == hops.len() {
            lines.push(line.join(&b", "[..]));
            line.clear();
        }
    }
    lines
}

/// Header bytes: visible ASCII, space, tab and obs-text.
fn header_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            8 => 0x20u8..0x7f,
            1 => Just(b'\t'),
            1 => 0x80u8..=0xff,
        ],
        0..max,
    )
}

/// Near-miss syntax: pieces of addresses, parameters and quoting, glued together.
fn syntax_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"for="[..]),
        Just(&b"For="[..]),
        Just(&b"proto=https"[..]),
        Just(&b"\""[..]),
        Just(&b"\\"[..]),
        Just(&b","[..]),
        Just(&b", "[..]),
        Just(&b";"[..]),
        Just(&b"="[..]),
        Just(&b" "[..]),
        Just(&b"10.0.0.1"[..]),
        Just(&b"10.9.8.7"[..]),
        Just(&b"203.0.113.9"[..]),
        Just(&b"[2001:db8:ffff::1]"[..]),
        Just(&b"2001:db8::9"[..]),
        Just(&b"[::ffff:10.1.1.1]"[..]),
        Just(&b":80"[..]),
        Just(&b":_x"[..]),
        Just(&b"unknown"[..]),
        Just(&b"_hidden"[..]),
        Just(&b"\xff"[..]),
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        header_bytes(60),
        "[ -~]{0,60}".prop_map(String::into_bytes),
        syntax_soup(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Structured chains mixing valid, malformed, trusted and untrusted hops,
    /// over one or several lines, from a trusted or an untrusted peer: the
    /// result is exactly the model's, so it is never a trusted address unless
    /// the peer and every hop are valid trusted addresses.
    #[test]
    fn structured_chains_follow_the_model(
        kind in kind(),
        peer in address(),
        hops in proptest::collection::vec(hop(), 0..8),
        cuts in proptest::collection::vec(any::<bool>(), 8),
    ) {
        let r = resolver(kind);
        let lines = render_chain(kind, &hops, &cuts);
        let expected_hops: Vec<Option<IpAddr>> = hops
            .iter()
            .map(|h| match h {
                Hop::Valid(a, _) => Some(*a),
                Hop::Malformed(_) => None,
            })
            .collect();
        let got = r.resolve(peer, &lines_of(kind, &lines)).map(|c| c.ip());
        prop_assert_eq!(got, model(&r, peer, &expected_hops), "{:?}", lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>());
        check(&r, peer, &lines)?;
    }

    /// Arbitrary header values (strings, bytes, near-miss syntax), one or
    /// several lines: the trust invariant holds and, whenever the header reads
    /// as a chain left to right, the result is the model's.
    #[test]
    fn arbitrary_headers_keep_the_trust_boundary(
        kind in kind(),
        peer in address(),
        lines in proptest::collection::vec(any_line(), 1..4),
    ) {
        check(&resolver(kind), peer, &lines)?;
    }

    /// Whatever the client writes before its proxy appends the client's real
    /// (untrusted) address, on the same line or on lines of its own, the result
    /// is that address, as if the client had written nothing.
    #[test]
    fn client_written_prefix_never_changes_the_result(
        kind in kind(),
        prefix in proptest::collection::vec(any_line(), 1..3),
        client in untrusted_address(),
        style in any::<u8>(),
        proxies in proptest::collection::vec((address(), any::<u8>()), 0..3),
        peer in address(),
    ) {
        let r = resolver(kind);
        let peer = if trusted(peer) { peer } else { ip(PROXY_PEER) };
        let proxies: Vec<Vec<u8>> = proxies
            .iter()
            .filter(|(a, _)| trusted(*a))
            .map(|(a, s)| render(kind, *a, *s))
            .collect();
        let mut appended = vec![render(kind, client, style)];
        appended.extend(proxies);
        let appended = appended.join(&b", "[..]);

        let alone = r
            .resolve(peer, &lines_of(kind, std::slice::from_ref(&appended)))
            .map(|c| c.ip());
        prop_assert_eq!(alone, Ok(IpAddr::to_canonical(&client)));

        let mut same_line = prefix.clone();
        let last = same_line.pop().unwrap_or_default();
        same_line.push([&last[..], b", ", &appended].concat());
        let got = r.resolve(peer, &lines_of(kind, &same_line)).map(|c| c.ip());
        prop_assert_eq!(got, alone);

        let mut own_line = prefix;
        own_line.push(appended);
        let got = r.resolve(peer, &lines_of(kind, &own_line)).map(|c| c.ip());
        prop_assert_eq!(got, alone);
    }

    /// The `Forwarded` reader agrees with the left-to-right reference on every
    /// well-formed line it reads to the end.
    #[test]
    fn forwarded_reader_agrees_with_the_reference(
        line in prop_oneof![
            any_line(),
            proptest::collection::vec(hop(), 1..8).prop_map(|hops| {
                render_chain(ForwardedHeader::Forwarded, &hops, &[]).concat()
            }),
        ],
    ) {
        let reference = reference_forwarded_line(&line);
        let nodes: Vec<Option<IpAddr>> = ForwardedNodes::new(&line).collect();
        if let Some(mut reference) = reference {
            reference.reverse();
            // The reader stops after the first element without an address.
            let cut = reference.iter().position(Option::is_none).map_or(reference.len(), |i| i + 1);
            reference.truncate(cut);
            prop_assert_eq!(nodes, reference);
        } else {
            // Malformed as a whole: read up to a malformed element.
            prop_assert_eq!(nodes.last(), Some(&None));
        }
    }
}

mod layer {
    use super::*;
    use crate::problem::{PROBLEM_JSON, Rejection};
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

    pub(super) async fn call(
        resolver: ClientIpResolver,
        peer: &str,
        headers: HeaderMap,
    ) -> Response<crate::body::ResponseBody<Full<Bytes>>> {
        let svc = ServiceBuilder::new()
            .layer(ClientIpLayer::new(resolver))
            .service_fn(echo);
        let mut req = Request::new(Full::default());
        *req.headers_mut() = headers;
        req.extensions_mut()
            .insert(PeerAddr(SocketAddr::new(ip(peer), 5000)));
        svc.oneshot(req).await.unwrap()
    }

    pub(super) async fn body(res: Response<crate::body::ResponseBody<Full<Bytes>>>) -> Bytes {
        res.into_body().collect().await.unwrap().to_bytes()
    }

    pub(super) async fn assert_bad_request(
        res: Response<crate::body::ResponseBody<Full<Bytes>>>,
        kind: ForwardedHeader,
    ) {
        assert_eq!(res.status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(res.headers()[http::header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            res.extensions().get::<Rejection>(),
            Some(&Rejection {
                reason: "forwarded_header"
            })
        );
        let json: serde_json::Value = serde_json::from_slice(&body(res).await).unwrap();
        assert_eq!(json["type"], ProblemType::BAD_REQUEST.uri());
        assert_eq!(json["status"], 400);
        let detail = json["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!("the {} header is malformed", kind.name())),
            "{detail}"
        );
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
    async fn malformed_forwarding_is_a_400_with_the_request_id() {
        let mut req = Request::new(Full::<Bytes>::default());
        req.headers_mut().insert(
            X_FORWARDED_FOR,
            HeaderValue::from_static("203.0.113.9, nope"),
        );
        req.extensions_mut()
            .insert(PeerAddr("10.0.0.1:5000".parse().unwrap()));
        req.extensions_mut()
            .insert(crate::request_id::RequestId::parse("req-7").unwrap());
        let svc = ServiceBuilder::new()
            .layer(ClientIpLayer::new(behind_proxies()))
            .service_fn(|_req: Request<Full<Bytes>>| async {
                panic!("a refused request must not reach the inner service");
                #[allow(unreachable_code)]
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            });
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), http::StatusCode::BAD_REQUEST);
        let json: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(json["request_id"], "req-7");
        // The problem never echoes the header's value.
        assert!(!json.to_string().contains("nope"), "{json}");
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
