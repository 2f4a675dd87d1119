//! Client IP resolution behind trusted reverse proxies.
//!
//! The address a rate limiter, a lockout, an allowlist or a log line uses must
//! be one the client cannot choose. [`ClientIpResolver`] starts from the TCP
//! peer address. Only when that peer is a trusted proxy does it read the
//! configured forwarding header (`X-Forwarded-For` or RFC 7239 `Forwarded`,
//! never both: mixing them lets a client forge the one the proxy does not
//! rewrite), walking it from the right and stopping at the first address that
//! is not a trusted proxy. Entries to the left of that one were written by the
//! client and are never read: garbage there changes nothing.
//!
//! # A malformed chain is refused
//!
//! When the walk reaches a hop that is not an address while every hop to its
//! right (and the peer) is a trusted proxy, [`ClientIpResolver::resolve`]
//! returns [`MalformedForwarding`] and [`ClientIpLayer`] answers
//! `400 Bad Request` (problem+json, rejection reason `forwarded_header`). Only
//! the client itself or a broken proxy can have written that hop, so there is
//! no client address to trust. Falling back to the last trusted hop, as a
//! lenient resolver would, turns the client into its own proxy: it passes
//! allowlists and rate-limit exemptions meant for the proxy network and shares
//! the proxy's bucket with every other client. Not an address, here, means
//! anything but an IP literal with an optional port: host names, zone ids
//! (`fe80::1%eth0`), empty entries, bytes that are not UTF-8, and RFC 7239's
//! `unknown` and obfuscated identifiers (`for=_hidden`), which name no address
//! either. A `Forwarded` element without `for`, with `for` twice, or with a
//! syntax error (an unterminated quote, an unquoted port or IPv6 address) is
//! malformed too.
//!
//! `Forwarded` lines are read from the right, element by element, like
//! `X-Forwarded-For`, so a client-written prefix (even one with an open quote)
//! cannot hide the element its proxy appended. Quoted values are unescaped;
//! IPv6 nodes must be bracketed and may carry a port
//! (`for="[2001:db8::1]:4711"`); `for` and the other parameter names match case
//! insensitively; several header lines combine in order.
//!
//! Two kinds of request from a trusted peer do resolve to a trusted address,
//! on purpose: one without the header is the peer's own (a health check, an
//! internal call), and one whose header is a valid chain of trusted addresses
//! only comes from inside the trusted networks; its client is the leftmost
//! address. Both rely on what trusting a proxy means: it appends to (or
//! rewrites) the header and never passes a client's header on untouched. A
//! proxy that does pass it on lets its clients write any address, trusted
//! ones included, and no resolver can tell.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are resolved to IPv4, and
//! [`ClientIp::key`] groups IPv6 clients by network prefix (/64 by default) so
//! that one host cannot spread its requests over the 2^64 addresses it owns.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use palisade_core::client_ip::{ClientIpResolver, ForwardedHeader};
//!
//! let resolver = ClientIpResolver::builder()
//!     .trusted_proxy("10.0.0.0/8")
//!     .build()
//!     .unwrap();
//! let proxy = "10.1.2.3".parse().unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.3".parse().unwrap());
//!
//! // From the trusted proxy: the rightmost address that is not a proxy.
//! let ip = resolver.resolve(proxy, &headers).unwrap();
//! assert_eq!(ip.ip().to_string(), "203.0.113.9");
//! // From anyone else: the header is ignored.
//! let ip = resolver.resolve("198.51.100.7".parse().unwrap(), &headers).unwrap();
//! assert_eq!(ip.ip().to_string(), "198.51.100.7");
//!
//! // Garbage where the client should be is refused, never read as the proxy.
//! headers.insert("x-forwarded-for", "203.0.113.9, garbage, 10.0.0.3".parse().unwrap());
//! let err = resolver.resolve(proxy, &headers).unwrap_err();
//! assert_eq!(err.header(), ForwardedHeader::XForwardedFor);
//! // Garbage to the left of the client does not matter.
//! headers.insert("x-forwarded-for", "garbage, 203.0.113.9, 10.0.0.3".parse().unwrap());
//! assert_eq!(resolver.resolve(proxy, &headers).unwrap().ip().to_string(), "203.0.113.9");
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{FORWARDED, HeaderName};
use http::{HeaderMap, Request, Response};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tower_layer::Layer;
use tower_service::Service;

use crate::ConfigError;
use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::problem::{ProblemDetails, ProblemType};

/// The default IPv6 grouping prefix: one /64 is what a single host or LAN gets.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The forwarding header the trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de facto standard).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name as written in documentation and messages
    /// (`X-Forwarded-For`, `Forwarded`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "X-Forwarded-For",
            Self::Forwarded => "Forwarded",
        }
    }
}

/// The forwarding header is malformed where the client address should be: the
/// walk from the right reached a hop that is not an address while every hop to
/// its right, and the peer, is a trusted proxy.
///
/// Only the client or a broken proxy can have written such a hop, so the
/// request has no client address that can be trusted; [`ClientIpLayer`]
/// answers it `400 Bad Request`. The error never contains the header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct MalformedForwarding {
    header: ForwardedHeader,
}

impl MalformedForwarding {
    /// The header that is malformed.
    pub fn header(&self) -> ForwardedHeader {
        self.header
    }

    const fn message(self) -> &'static str {
        match self.header {
            ForwardedHeader::XForwardedFor => {
                "the X-Forwarded-For header is malformed where the client address should be"
            }
            ForwardedHeader::Forwarded => {
                "the Forwarded header is malformed where the client address should be"
            }
        }
    }
}

impl From<MalformedForwarding> for ProblemDetails {
    /// A 400 problem whose detail names the malformed header.
    fn from(err: MalformedForwarding) -> Self {
        ProblemDetails::new(ProblemType::BAD_REQUEST).with_detail(err.message())
    }
}

/// The resolved client address of a request, inserted into the request's
/// extensions by [`ClientIpLayer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp {
    ip: IpAddr,
    key: IpNet,
}

impl ClientIp {
    /// The client's address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The network to use as a limiter key: the address itself for IPv4, its
    /// prefix (/64 by default) for IPv6.
    pub fn key(&self) -> IpNet {
        self.key
    }
}

impl fmt::Display for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.ip.fmt(f)
    }
}

/// The TCP peer address of a connection, for servers that do not use axum's
/// `ConnectInfo`. Insert it into each request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Resolves [`ClientIp`] from a peer address and headers.
#[derive(Debug, Clone)]
pub struct ClientIpResolver {
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
    ipv6_prefix: u8,
}

impl Default for ClientIpResolver {
    /// No trusted proxies: the client is always the TCP peer.
    fn default() -> Self {
        Self {
            trusted: Arc::new([]),
            header: ForwardedHeader::default(),
            ipv6_prefix: DEFAULT_IPV6_PREFIX,
        }
    }
}

impl ClientIpResolver {
    /// A builder; with no trusted proxy configured, forwarding headers are ignored.
    pub fn builder() -> ClientIpResolverBuilder {
        ClientIpResolverBuilder::default()
    }

    /// The trusted proxy networks.
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Resolves the client address of a request from `peer`, its TCP peer
    /// address.
    ///
    /// When `peer` is not a trusted proxy, the result is `peer` and the headers
    /// are not read. Otherwise the configured forwarding header is walked from
    /// the right to the first address that is not a trusted proxy; a chain of
    /// trusted addresses only resolves to its leftmost one, and no header at
    /// all to `peer`.
    ///
    /// # Errors
    ///
    /// [`MalformedForwarding`] when the walk reaches a hop that is not an
    /// address (see the [module documentation](self)). A malformed hop to the
    /// left of the client is never read and is no error.
    pub fn resolve(
        &self,
        peer: IpAddr,
        headers: &HeaderMap,
    ) -> Result<ClientIp, MalformedForwarding> {
        let ip = self.resolve_ip(canonical(peer), headers)?;
        Ok(ClientIp {
            ip,
            key: group(ip, self.ipv6_prefix),
        })
    }

    fn resolve_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, MalformedForwarding> {
        if !self.is_trusted(peer) {
            return Ok(peer);
        }
        // Header lines combine in order: walk lines, then hops, from the right.
        // Both walks work on bytes and allocate nothing (but for a `Forwarded`
        // value with quoted-pairs): a hop that is not UTF-8 is malformed like
        // any other, and only if the walk reaches it.
        match self.header {
            ForwardedHeader::XForwardedFor => {
                let hops = headers
                    .get_all(X_FORWARDED_FOR)
                    .iter()
                    .rev()
                    .flat_map(|line| {
                        line.as_bytes()
                            .rsplit(|b| *b == b',')
                            .map(|entry| parse_node(trim_ows(entry), true))
                    });
                self.walk(peer, hops)
            }
            ForwardedHeader::Forwarded => {
                let hops = headers
                    .get_all(FORWARDED)
                    .iter()
                    .rev()
                    .flat_map(|line| ForwardedNodes::new(line.as_bytes()));
                self.walk(peer, hops)
            }
        }
    }

    /// Walks hops (`None`: malformed) from the right to the first untrusted
    /// address. Reaching a malformed hop is an error: everything to its right
    /// is a trusted proxy, so the client would be one.
    fn walk(
        &self,
        peer: IpAddr,
        hops: impl Iterator<Item = Option<IpAddr>>,
    ) -> Result<IpAddr, MalformedForwarding> {
        let mut client = peer;
        for hop in hops {
            let ip = canonical(hop.ok_or(MalformedForwarding {
                header: self.header,
            })?);
            if !self.is_trusted(ip) {
                return Ok(ip);
            }
            client = ip;
        }
        // Every hop is a trusted proxy: the request comes from inside.
        Ok(client)
    }
}

/// Builder of [`ClientIpResolver`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientIpResolverBuilder {
    trusted: Vec<String>,
    header: ForwardedHeader,
    ipv6_prefix: Option<u8>,
}

impl ClientIpResolverBuilder {
    /// Trusts a proxy network, in CIDR form (`10.0.0.0/8`) or as one address.
    pub fn trusted_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.trusted.push(cidr.into());
        self
    }

    /// Trusts several proxy networks.
    pub fn trusted_proxies<I, S>(mut self, cidrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted.extend(cidrs.into_iter().map(Into::into));
        self
    }

    /// Trusts proxy networks already parsed (e.g. from a typed setting).
    pub fn trusted_networks(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted
            .extend(networks.into_iter().map(|net| net.to_string()));
        self
    }

    /// Selects the forwarding header the proxies write (default `X-Forwarded-For`).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Sets the IPv6 grouping prefix of [`ClientIp::key`] (1–128, default 64).
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = Some(prefix);
        self
    }

    /// Validates and builds the resolver.
    pub fn build(self) -> Result<ClientIpResolver, ConfigError> {
        let ipv6_prefix = self.ipv6_prefix.unwrap_or(DEFAULT_IPV6_PREFIX);
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(ConfigError::new(
                "client_ip.ipv6_prefix",
                "must be between 1 and 128",
            ));
        }
        let trusted = self
            .trusted
            .iter()
            .map(|s| parse_network(s, "client_ip.trusted_proxies"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientIpResolver {
            trusted: trusted.into(),
            header: self.header,
            ipv6_prefix,
        })
    }
}

/// Parses a network in CIDR form (`10.0.0.0/8`) or a single address (as a /32
/// or /128), for allowlists and proxy lists. IPv4-mapped IPv6 networks become
/// IPv4 networks; host bits are cleared. The error names `setting`, never the value.
pub fn parse_network(s: &str, setting: &'static str) -> Result<IpNet, ConfigError> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>().ok()
    } else {
        s.parse::<IpAddr>().ok().map(IpNet::from)
    };
    let net = net.ok_or_else(|| {
        ConfigError::new(
            setting,
            "each entry must be an IP address or a CIDR network",
        )
    })?;
    // Store the network address, and map v4-mapped v6 networks to v4.
    Ok(match net {
        IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
            Some(v4) if v6.prefix_len() >= 96 => IpNet::V4(
                Ipv4Net::new(v4, v6.prefix_len() - 96)
                    .map_err(|_| ConfigError::new(setting, "invalid prefix length"))?,
            )
            .trunc(),
            _ => net.trunc(),
        },
        IpNet::V4(_) => net.trunc(),
    })
}

/// IPv4-mapped IPv6 addresses are the IPv4 client of a dual-stack socket.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

fn group(ip: IpAddr, ipv6_prefix: u8) -> IpNet {
    match ip {
        IpAddr::V4(v4) => IpNet::V4(Ipv4Net::from(v4)),
        IpAddr::V6(v6) => Ipv6Net::new(v6, ipv6_prefix)
            .map_or_else(|_| IpNet::V6(Ipv6Net::from(v6)), |n| IpNet::V6(n.trunc())),
    }
}

/// Parses one node: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`); a bare IPv6 address only when `bare_ipv6` (RFC 7239
/// requires brackets). Zone ids, host names, `unknown`, obfuscated identifiers
/// and anything else are `None`.
fn parse_node(node: &[u8], bare_ipv6: bool) -> Option<IpAddr> {
    let s = std::str::from_utf8(node).ok()?;
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(valid_port) {
            return None;
        }
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(v4) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    if bare_ipv6 && let Ok(v6) = s.parse::<Ipv6Addr>() {
        return Some(IpAddr::V6(v6));
    }
    let (host, port) = s.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port: a decimal number up to 65535, or an RFC 7239 obfuscated port (`_`
/// and one or more of ALPHA, DIGIT, `.`, `_`, `-`).
fn valid_port(port: &str) -> bool {
    let bytes = port.as_bytes();
    match bytes.split_first() {
        Some((b'_', rest)) => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        _ => bytes.iter().all(u8::is_ascii_digit) && port.parse::<u16>().is_ok(),
    }
}

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !is_ows(*b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !is_ows(*b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The index after the optional whitespace that ends `line[..end]`.
fn trim_ows_back(line: &[u8], end: usize) -> usize {
    line.get(..end)
        .and_then(|s| s.iter().rposition(|b| !is_ows(*b)))
        .map_or(0, |i| i + 1)
}

/// The start of the (possibly empty) run of token characters that ends `line[..end]`.
fn token_start(line: &[u8], end: usize) -> usize {
    line.get(..end)
        .and_then(|s| s.iter().rposition(|b| !is_tchar(*b)))
        .map_or(0, |i| i + 1)
}

/// Whether the byte at `i` is escaped: preceded by an odd run of backslashes.
/// Inside a quoted string the run before any byte starts on a quoted-pair
/// boundary, so its parity tells an escaped quote from a closing one.
fn escaped(line: &[u8], i: usize) -> bool {
    line.get(..i)
        .is_some_and(|s| s.iter().rev().take_while(|b| **b == b'\\').count() % 2 == 1)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A `Forwarded` parameter value: a token, or the content of a quoted string
/// with its quoted-pairs still escaped.
enum Value<'a> {
    Token(&'a [u8]),
    Quoted(&'a [u8]),
}

impl Value<'_> {
    /// The address this value names, if it is a `for` node.
    fn node(&self) -> Option<IpAddr> {
        match *self {
            Value::Token(token) => parse_node(token, false),
            Value::Quoted(content) if !content.contains(&b'\\') => parse_node(content, false),
            Value::Quoted(content) => {
                // Quoted-pairs are legal but no proxy writes them: the rare
                // case may allocate.
                let mut unescaped = Vec::with_capacity(content.len());
                let mut bytes = content.iter();
                while let Some(&b) = bytes.next() {
                    unescaped.push(if b == b'\\' { *bytes.next()? } else { b });
                }
                parse_node(&unescaped, false)
            }
        }
    }
}

/// The value (token or quoted string) that ends exactly at `end`, and its start.
fn value_back(line: &[u8], end: usize) -> Option<(Value<'_>, usize)> {
    let close = end.checked_sub(1)?;
    if line.get(close) == Some(&b'"') {
        if escaped(line, close) {
            return None; // `\"` cannot end a quoted string
        }
        // The opening quote is the nearest unescaped one to the left.
        let mut search = close;
        loop {
            let open = line.get(..search)?.iter().rposition(|b| *b == b'"')?;
            if !escaped(line, open) {
                return Some((Value::Quoted(line.get(open + 1..close)?), open));
            }
            search = open;
        }
    }
    let start = token_start(line, end);
    if start == end {
        return None;
    }
    Some((Value::Token(line.get(start..end)?), start))
}

/// One `Forwarded` element that ends at `end` (RFC 7239 §4:
/// `token=value` pairs separated by `;`), read from the right.
///
/// Returns the element's `for` node (`None` when it is absent or not an
/// address) and the index of the `,` before the element, if any; `None` when
/// the element is not well formed (a syntax error, an empty element or pair,
/// `for` twice).
fn element_back(line: &[u8], end: usize) -> Option<(Option<IpAddr>, Option<usize>)> {
    let mut end = end;
    let mut node: Option<Option<IpAddr>> = None;
    loop {
        let (value, value_start) = value_back(line, trim_ows_back(line, end))?;
        let eq = value_start.checked_sub(1)?;
        if line.get(eq) != Some(&b'=') {
            return None;
        }
        let name_start = token_start(line, eq);
        let name = line.get(name_start..eq)?;
        if name.is_empty() {
            return None;
        }
        if name.eq_ignore_ascii_case(b"for") {
            if node.is_some() {
                return None; // a parameter may occur once per element
            }
            node = Some(value.node());
        }
        let before = trim_ows_back(line, name_start);
        let Some(separator) = before.checked_sub(1) else {
            return Some((node.flatten(), None));
        };
        match line.get(separator) {
            Some(b';') => end = separator,
            Some(b',') => return Some((node.flatten(), Some(separator))),
            _ => return None,
        }
    }
}

/// The `for` nodes of one `Forwarded` line, element by element from the right;
/// `None` for an element that is malformed or has no address, after which the
/// line is not read further (its elements cannot be told apart any more, and
/// the walk stops there anyway).
struct ForwardedNodes<'a> {
    line: &'a [u8],
    end: Option<usize>,
}

impl<'a> ForwardedNodes<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self {
            line,
            end: Some(line.len()),
        }
    }
}

impl Iterator for ForwardedNodes<'_> {
    type Item = Option<IpAddr>;

    fn next(&mut self) -> Option<Self::Item> {
        let end = self.end.take()?;
        let element = element_back(self.line, end);
        if let Some((Some(_), separator)) = element {
            self.end = separator;
        }
        Some(element.and_then(|(node, _)| node))
    }
}

/// A layer that resolves [`ClientIp`] for every request and inserts it into the
/// request's extensions.
///
/// The peer address comes from axum's `ConnectInfo<SocketAddr>` (feature `axum`;
/// serve with `into_make_service_with_connect_info::<SocketAddr>()`) or from a
/// [`PeerAddr`] extension. A request with neither is answered 500: resolving
/// nothing would silently put every client in one rate-limit bucket.
///
/// A request whose forwarding header is malformed where the client address
/// should be ([`MalformedForwarding`]) is answered `400 Bad Request`
/// (problem+json naming the header, rejection reason `forwarded_header`) and
/// never reaches the inner service.
#[derive(Debug, Clone, Default)]
pub struct ClientIpLayer {
    resolver: Arc<ClientIpResolver>,
}

impl ClientIpLayer {
    /// A layer using `resolver`.
    pub fn new(resolver: ClientIpResolver) -> Self {
        Self {
            resolver: Arc::new(resolver),
        }
    }
}

impl<S> Layer<S> for ClientIpLayer {
    type Service = ClientIpService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientIpService {
            inner,
            resolver: self.resolver.clone(),
        }
    }
}

/// The service of [`ClientIpLayer`].
#[derive(Debug, Clone)]
pub struct ClientIpService<S> {
    inner: S,
    resolver: Arc<ClientIpResolver>,
}

/// The TCP peer address of a request: its [`PeerAddr`] extension, or axum's
/// `ConnectInfo<SocketAddr>` (feature `axum`). Not the client behind a
/// proxy: for rules about the socket itself.
pub fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
    if let Some(PeerAddr(addr)) = extensions.get::<PeerAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ClientIpService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let Some(peer) = peer_of(req.extensions()) else {
            tracing::error!(
                "no peer address on the request: serve with into_make_service_with_connect_info::<SocketAddr>() or insert PeerAddr"
            );
            return ResponseFuture::early(
                ProblemDetails::new(ProblemType::INTERNAL)
                    .with_request_id_from(req.extensions())
                    .rejection("no_peer_address"),
            );
        };
        match self.resolver.resolve(peer, req.headers()) {
            Ok(client) => {
                req.extensions_mut().insert(client);
                ResponseFuture::inner(self.inner.call(req))
            }
            Err(err) => {
                tracing::info!(
                    reason = "forwarded_header",
                    header = err.header().name(),
                    peer = %peer,
                    "request rejected"
                );
                ResponseFuture::early(
                    ProblemDetails::from(err)
                        .with_request_id_from(req.extensions())
                        .rejection("forwarded_header"),
                )
            }
        }
    }
}

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = ProblemDetails;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().copied().ok_or_else(|| {
            tracing::error!("ClientIp extractor used without ClientIpLayer");
            ProblemDetails::new(ProblemType::INTERNAL).with_request_id_from(&parts.extensions)
        })
    }
}

#[cfg(test)]
mod tests;
