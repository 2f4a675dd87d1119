//! Client IP resolution behind trusted reverse proxies.
//!
//! The address a rate limiter, a lockout, an allowlist or a log line uses must
//! be one the client cannot choose. [`ClientIpResolver`] starts from the TCP
//! peer address. Only when that peer is a trusted proxy does it read the
//! configured forwarding header (`X-Forwarded-For` or RFC 7239 `Forwarded`,
//! never both: mixing them lets a client forge the one the proxy does not
//! rewrite), walking it from the right and stopping at the first address that
//! is not a trusted proxy. Entries to the left of that one were written by the
//! client and are never read. A malformed entry stops the walk at the last
//! trusted hop.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are resolved to IPv4, and
//! [`ClientIp::key`] groups IPv6 clients by network prefix (/64 by default) so
//! that one host cannot spread its requests over the 2^64 addresses it owns.
//!
//! # Example
//!
//! ```
//! use http::HeaderMap;
//! use palisade_core::client_ip::ClientIpResolver;
//!
//! let resolver = ClientIpResolver::builder()
//!     .trusted_proxy("10.0.0.0/8")
//!     .build()
//!     .unwrap();
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.3".parse().unwrap());
//!
//! // From the trusted proxy: the rightmost address that is not a proxy.
//! let ip = resolver.resolve("10.1.2.3".parse().unwrap(), &headers);
//! assert_eq!(ip.ip().to_string(), "203.0.113.9");
//! // From anyone else: the header is ignored.
//! let ip = resolver.resolve("198.51.100.7".parse().unwrap(), &headers);
//! assert_eq!(ip.ip().to_string(), "198.51.100.7");
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

    /// Resolves the client address of a request from `peer`.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientIp {
        let ip = self.resolve_ip(canonical(peer), headers);
        ClientIp {
            ip,
            key: group(ip, self.ipv6_prefix),
        }
    }

    fn resolve_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return peer;
        }
        match self.header {
            ForwardedHeader::XForwardedFor => {
                // Header lines combine in order; walk lines and entries from the right.
                let hops = headers
                    .get_all(X_FORWARDED_FOR)
                    .iter()
                    .rev()
                    // Split on bytes, so no line is collected: an entry that is
                    // not UTF-8 is a malformed hop like any other.
                    .flat_map(|line| {
                        line.as_bytes()
                            .rsplit(|b| *b == b',')
                            .map(|entry| std::str::from_utf8(entry).ok().and_then(parse_node))
                    });
                self.walk(peer, hops)
            }
            ForwardedHeader::Forwarded => {
                let mut hops = Vec::new();
                for line in headers.get_all(FORWARDED) {
                    match line.to_str().ok().and_then(parse_forwarded) {
                        Some(mut nodes) => hops.append(&mut nodes),
                        // A malformed header cannot be split reliably: trust none of it.
                        None => return peer,
                    }
                }
                self.walk(peer, hops.into_iter().rev())
            }
        }
    }

    /// Walks hops from the right; stops at the first untrusted address, or at a
    /// malformed hop (returning the last trusted one).
    fn walk(&self, peer: IpAddr, hops: impl Iterator<Item = Option<IpAddr>>) -> IpAddr {
        let mut client = peer;
        for hop in hops {
            let Some(ip) = hop.map(canonical) else {
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
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
/// `[2001:db8::1]:80`). Zone ids, host names and anything else are `None`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches([' ', '\t']);
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !after.strip_prefix(':').is_some_and(valid_port) {
            return None;
        }
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = s.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port: a decimal number up to 65535, or an RFC 7239 obfuscated port (`_` + token chars).
fn valid_port(port: &str) -> bool {
    let bytes = port.as_bytes();
    match bytes.split_first() {
        Some((b'_', rest)) => rest
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
        _ => bytes.iter().all(u8::is_ascii_digit) && port.parse::<u16>().is_ok(),
    }
}

/// Parses one `Forwarded` header line (RFC 7239 §4) into the `for` node of each
/// element; `None` for an element whose `for` is absent, `unknown`, obfuscated
/// or not an address. Returns `None` when the line itself is malformed.
fn parse_forwarded(line: &str) -> Option<Vec<Option<IpAddr>>> {
    let mut nodes = Vec::new();
    let mut rest = line;
    loop {
        // One element: pairs separated by ';'.
        let mut node: Option<Option<IpAddr>> = None;
        loop {
            rest = rest.trim_start_matches([' ', '\t']);
            let eq = rest.find('=')?;
            let (name, after) = rest.split_at(eq);
            let name = name.trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.bytes().all(is_tchar) {
                return None;
            }
            let (value, after) = parse_value(after.get(1..)?)?;
            if name.eq_ignore_ascii_case("for") {
                if node.is_some() {
                    return None; // a parameter may occur once per element
                }
                node = Some(parse_node(&value));
            }
            rest = after.trim_start_matches([' ', '\t']);
            match rest.as_bytes().first() {
                Some(b';') => rest = rest.get(1..)?,
                _ => break,
            }
        }
        nodes.push(node.flatten());
        match rest.as_bytes().first() {
            None => return Some(nodes),
            Some(b',') => rest = rest.get(1..)?,
            Some(_) => return None,
        }
    }
}

/// A token or a quoted string; returns the unescaped value and the rest.
fn parse_value(s: &str) -> Option<(String, &str)> {
    if let Some(quoted) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => return Some((value, quoted.get(i + 1..)?)),
                '\\' => value.push(chars.next()?.1),
                c if c.is_control() && c != '\t' => return None,
                c => value.push(c),
            }
        }
        None // unterminated
    } else {
        let end = s
            .find(|c: char| !c.is_ascii() || !is_tchar(c as u8))
            .unwrap_or(s.len());
        if end == 0 {
            return None;
        }
        Some((s.get(..end)?.to_owned(), s.get(end..)?))
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A layer that resolves [`ClientIp`] for every request and inserts it into the
/// request's extensions.
///
/// The peer address comes from axum's `ConnectInfo<SocketAddr>` (feature `axum`;
/// serve with `into_make_service_with_connect_info::<SocketAddr>()`) or from a
/// [`PeerAddr`] extension. A request with neither is answered 500: resolving
/// nothing would silently put every client in one rate-limit bucket.
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

fn peer_of(extensions: &http::Extensions) -> Option<IpAddr> {
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
        let client = self.resolver.resolve(peer, req.headers());
        req.extensions_mut().insert(client);
        ResponseFuture::inner(self.inner.call(req))
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
