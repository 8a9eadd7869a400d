//! Who a request came from, as the server may believe it: the client's address, and the scheme
//! and host the client addressed.
//!
//! tenantry has no TLS listener, so in production it sits behind a proxy (nginx, HAProxy, a
//! cloud load balancer), and the peer of every connection is that proxy. The proxies named in
//! `trusted_proxies` (addresses or CIDR ranges) are believed about the client: `Forwarded`
//! (RFC 7239) or, without it, `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host`.
//! From any other peer these headers are ignored, since anyone can send them; the peer is then
//! the client, the scheme is `http` and the host is the `Host` header.
//!
//! The client is the rightmost address of the forwarding chain that is not a trusted proxy: each
//! proxy appends the address it received the request from, so what stands left of the first
//! untrusted hop was written by the client itself and proves nothing.
//!
//! [`resolve`] runs once per request, before everything else, and leaves the [`Client`] in the
//! request's extensions: rate limits, audit records, logs, cookies and the URLs the server
//! writes all take it from there.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;

use actix_web::HttpMessage as _;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{FORWARDED, HOST, HeaderMap};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, web};
use ipnet::IpNet;

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or the one a trusted proxy forwarded.
    pub address: Option<IpAddr>,
    /// `http` or `https`, as the client reached the server (`https` only through a trusted
    /// proxy that says so: the server itself speaks plain HTTP).
    pub scheme: &'static str,
    /// `host[:port]` the client addressed.
    pub host: String,
}

impl Client {
    /// The client of `req`, as [`resolve`] left it (worked out again where it did not run).
    pub fn of(req: &HttpRequest) -> Client {
        if let Some(client) = req.extensions().get::<Client>() {
            return client.clone();
        }
        let trusted = req.app_data::<web::Data<TrustedProxies>>();
        work_out(
            req.peer_addr(),
            req.headers(),
            req.uri(),
            trusted.map(|t| t.get_ref()),
        )
    }

    /// The client's address as text (audit records, rate-limit keys).
    pub fn address_text(&self) -> Option<String> {
        self.address.map(|a| a.to_string())
    }

    /// `scheme://host` of the request, as the client addressed it.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }
}

/// The client of a request that middleware holds.
pub fn of_service_request(req: &ServiceRequest) -> Client {
    if let Some(client) = req.extensions().get::<Client>() {
        return client.clone();
    }
    let trusted = req.app_data::<web::Data<TrustedProxies>>();
    work_out(
        req.peer_addr(),
        req.headers(),
        req.uri(),
        trusted.map(|t| t.get_ref()),
    )
}

/// The proxies whose forwarding headers are believed (`trusted_proxies`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`, `::1`) and CIDR ranges (`10.0.0.0/8`); the error names the
    /// entry that is neither.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| {
                        format!(
                            "`{entry}` is neither an IP address nor a CIDR range like 10.0.0.0/8"
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, address: &IpAddr) -> bool {
        let address = canonical(*address);
        self.0.iter().any(|net| net.contains(&address))
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.7`, as a dual-stack listener reports IPv4
/// peers) is the IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Middleware, outermost: works out the request's [`Client`] once and keeps it in the request.
pub async fn resolve(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let client = {
        let trusted = req.app_data::<web::Data<TrustedProxies>>();
        work_out(
            req.peer_addr(),
            req.headers(),
            req.uri(),
            trusted.map(|t| t.get_ref()),
        )
    };
    req.extensions_mut().insert(client);
    next.call(req).await
}

fn work_out(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    uri: &actix_web::http::Uri,
    trusted: Option<&TrustedProxies>,
) -> Client {
    let peer = peer.map(|p| canonical(p.ip()));
    let own_host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| valid_host(h))
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default();
    let direct = Client {
        address: peer,
        scheme: "http",
        host: own_host.clone(),
    };
    let Some(trusted) = trusted.filter(|t| !t.is_empty()) else {
        return direct;
    };
    if !peer.is_some_and(|p| trusted.contains(&p)) {
        return direct;
    }
    let forwarded = forwarded_hops(headers).or_else(|| x_forwarded_hops(headers));
    let Some(hops) = forwarded else {
        return direct;
    };
    // From the right: the first hop that is not a trusted proxy is the client. A chain of
    // trusted proxies only ends at its leftmost hop.
    let chosen = hops
        .iter()
        .rev()
        .find(|hop| !hop.address.is_some_and(|a| trusted.contains(&a)))
        .or_else(|| hops.first());
    let Some(hop) = chosen else {
        return direct;
    };
    Client {
        address: hop.address.or(peer),
        scheme: match hop.proto.as_deref() {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        },
        host: hop
            .host
            .clone()
            .filter(|h| valid_host(h))
            .unwrap_or(own_host),
    }
}

/// One hop of a forwarding chain.
struct Hop {
    /// `None` for `unknown` or an obfuscated identifier.
    address: Option<IpAddr>,
    proto: Option<String>,
    host: Option<String>,
}

/// The hops of `Forwarded` (every such header, in order); `None` without one, or when it does
/// not parse (a proxy that writes it writes it well; a broken one is not believed).
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for value in headers.get_all(FORWARDED) {
        let value = value.to_str().ok()?;
        for node in rfc7239::parse(value) {
            let node = node.ok()?;
            hops.push(Hop {
                address: match node.forwarded_for {
                    Some(rfc7239::NodeIdentifier {
                        name: rfc7239::NodeName::Ip(ip),
                        ..
                    }) => Some(canonical(ip)),
                    _ => None,
                },
                proto: node.protocol.map(str::to_owned),
                host: node.host.map(str::to_owned),
            });
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// The hops of `X-Forwarded-For`, with the first value of `X-Forwarded-Proto` and
/// `X-Forwarded-Host` on the client's hop (the outermost proxy writes them).
fn x_forwarded_hops(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut addresses = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let value = value.to_str().ok()?;
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            addresses.push(parse_forwarded_address(part));
        }
    }
    if addresses.is_empty() {
        return None;
    }
    let (proto, host) = (first("x-forwarded-proto"), first("x-forwarded-host"));
    Some(
        addresses
            .into_iter()
            .map(|address| Hop {
                address,
                proto: proto.clone(),
                host: host.clone(),
            })
            .collect(),
    )
}

/// `10.0.0.7`, `10.0.0.7:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_forwarded_address(text: &str) -> Option<IpAddr> {
    IpAddr::from_str(text)
        .ok()
        .or_else(|| SocketAddr::from_str(text).ok().map(|s| s.ip()))
        .map(canonical)
}

/// A host as a URL may carry it: `name`, `name:port`, `[v6]:port`, nothing else (no user
/// information, path or whitespace).
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && !host.contains('@')
        && actix_web::http::uri::Authority::from_str(host).is_ok_and(|a| a.as_str() == host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_str(name).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn client(peer: &str, pairs: &[(&str, &str)], trusted: &[&str]) -> Client {
        let trusted =
            TrustedProxies::parse(&trusted.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut all = vec![("host", "tenantry.example:8080")];
        all.extend_from_slice(pairs);
        work_out(
            Some(SocketAddr::from_str(peer).unwrap()),
            &headers(&all),
            &actix_web::http::Uri::from_static("/"),
            Some(&trusted),
        )
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let c = client(
            "203.0.113.9:5000",
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
                (
                    "forwarded",
                    "for=198.51.100.2;proto=https;host=evil.example",
                ),
            ],
            &["10.0.0.0/8"],
        );
        assert_eq!(c.address, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(c.scheme, "http");
        assert_eq!(c.host, "tenantry.example:8080");
    }

    #[test]
    fn a_trusted_proxy_names_the_rightmost_untrusted_hop() {
        let c = client(
            "10.0.0.7:5000",
            &[
                ("x-forwarded-for", "1.2.3.4, 198.51.100.1, 10.0.0.8"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "acme.tenantry.example"),
            ],
            &["10.0.0.0/8"],
        );
        assert_eq!(
            c.address,
            Some("198.51.100.1".parse().unwrap()),
            "not the spoofed 1.2.3.4"
        );
        assert_eq!(c.scheme, "https");
        assert_eq!(c.host, "acme.tenantry.example");
    }

    #[test]
    fn forwarded_comes_before_x_forwarded_for() {
        let c = client(
            "[::ffff:10.0.0.7]:5000",
            &[
                (
                    "forwarded",
                    "for=1.2.3.4, for=\"[2001:db8::1]:4711\";proto=https;host=a.example",
                ),
                ("x-forwarded-for", "198.51.100.1"),
            ],
            &["10.0.0.7"],
        );
        assert_eq!(c.address, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(c.scheme, "https");
        assert_eq!(c.host, "a.example");
    }

    #[test]
    fn a_bad_forwarded_host_is_not_believed() {
        let c = client(
            "10.0.0.7:5000",
            &[
                ("x-forwarded-for", "198.51.100.1"),
                ("x-forwarded-host", "evil.example/path@x"),
            ],
            &["10.0.0.0/8"],
        );
        assert_eq!(c.host, "tenantry.example:8080");
    }

    #[test]
    fn entries_that_are_not_addresses_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8".into(), "proxy.local".into()]).unwrap_err();
        assert!(err.contains("`proxy.local`"), "{err}");
        assert!(TrustedProxies::parse(&["::1".into(), "fd00::/8".into()]).is_ok());
    }
}
