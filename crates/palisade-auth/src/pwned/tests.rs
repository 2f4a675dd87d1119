use super::*;
use proptest::prelude::*;

#[test]
fn the_range_key_is_the_sha1_split_five_and_thirty_five() {
    // SHA-1("password") = 5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8
    let (prefix, suffix) = range_key("password");
    assert_eq!(prefix, "5BAA6");
    assert_eq!(suffix, "1E4C9B93F3F0682250B6CF8331B7EE68FD8");
}

#[test]
fn counts_are_read_and_padding_is_ignored() {
    let suffix = "1E4C9B93F3F0682250B6CF8331B7EE68FD8";
    let body = format!(
        "003D68EB55068C33ACE09247EE4C639306B:3\r\n{}:0\n{}:12\r\n",
        suffix, "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    );
    assert_eq!(breached_count(&body, suffix), None, "a padded line");
    let body = format!("garbage\r\n:\r\n{}:42\r\n", suffix.to_lowercase());
    assert_eq!(breached_count(&body, suffix), Some(42), "case-insensitive");
    assert_eq!(breached_count(&format!("{suffix}:x"), suffix), None);
    assert_eq!(breached_count("", suffix), None);
}

#[test]
fn urls_are_checked() {
    for bad in [
        "",
        "not a url",
        "ftp://example.com",
        "example.com/range",
        "http://",
        "http://user:pw@example.com",
        "https://example.com/?q=1",
        "https://example.com/#x",
    ] {
        assert_eq!(
            parse_url(bad).unwrap_err(),
            PwnedUrlError::Malformed,
            "{bad:?}"
        );
    }
    for good in [
        "http://127.0.0.1:9000",
        "https://api.pwnedpasswords.com/",
        "http://[::1]:80/mirror",
    ] {
        assert!(parse_url(good).is_ok(), "{good}");
    }
    let loopback = |u: &str| is_loopback(&parse_url(u).unwrap());
    assert!(loopback("http://127.0.0.1:9000"));
    assert!(loopback("http://[::1]:9000"));
    assert!(loopback("http://LOCALHOST"));
    assert!(!loopback("http://10.0.0.1"));
    assert!(!loopback("http://127.0.0.1.example.com"));
}

proptest! {
    #[test]
    fn the_parser_never_panics_and_finds_what_is_there(
        lines in proptest::collection::vec("[0-9A-F]{35}:[0-9]{1,6}", 0..20),
        junk in "\\PC{0,200}",
        count in 1u64..1_000_000,
    ) {
        let suffix = "ABCDEABCDEABCDEABCDEABCDEABCDEABCDE";
        let _ = breached_count(&junk, suffix);
        let mut body = lines.join("\r\n");
        body = format!("{body}\r\n{suffix}:{count}\r\n");
        let found = breached_count(&body, suffix);
        // An earlier random line could hold the same suffix (odds ~16^-35).
        prop_assert!(found.is_some());
    }
}

#[tokio::test]
async fn https_needs_the_tls_feature() {
    let built = PwnedCheck::new("https://api.pwnedpasswords.com");
    #[cfg(feature = "pwned-tls")]
    assert!(built.is_ok());
    #[cfg(not(feature = "pwned-tls"))]
    assert_eq!(built.unwrap_err(), PwnedUrlError::TlsUnavailable);
}
