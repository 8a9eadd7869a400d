//! Addresses the server will not reach on someone else's say-so: loopback, private, link-local
//! (the cloud metadata services among them), unique-local, carrier-grade NAT, unspecified,
//! broadcast and multicast, in IPv4 and IPv6 (and IPv4 written as IPv6). A plugin's HTTP and an
//! identity provider's URLs are resolved first and refused when they land on one, unless the
//! operator named that very address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `address` is internal (see the module).
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped().or_else(|| v6.to_ipv4()) {
            // `::ffff:a.b.c.d` and the deprecated `::a.b.c.d` (but not `::` or `::1`).
            Some(v4) if !v6.is_unspecified() && !v6.is_loopback() => internal_v4(v4),
            _ => internal_v6(v6),
        },
    }
}

fn internal_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, IETF protocol assignments.
        || (a == 192 && b == 0 && v4.octets()[2] == 0)
        // 198.18.0.0/15, benchmarking.
        || (a == 198 && (18..20).contains(&b))
        // 240.0.0.0/4, reserved.
        || a >= 240
}

fn internal_v6(v6: Ipv6Addr) -> bool {
    let first = v6.segments()[0];
    v6.is_loopback()
        || v6.is_unspecified()
        || v6.is_multicast()
        // fc00::/7, unique local (AWS's metadata service is fd00:ec2::254).
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local.
        || (first & 0xffc0) == 0xfe80
        // 64:ff9b:1::/48, local-use NAT64.
        || (first == 0x0064 && v6.segments()[1] == 0xff9b && v6.segments()[2] == 0x0001)
}

/// A resolver for reqwest that keeps only addresses the server may reach on someone else's
/// say-so (an identity provider a tenant's admin names): a name that resolves to an internal
/// address is an error; loopback is allowed only with `allow_loopback` (development). The
/// request goes to the addresses checked here (reqwest does not resolve again).
pub struct CheckedResolver {
    pub allow_loopback: bool,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_loopback = self.allow_loopback;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addresses
                .iter()
                .find(|a| !address_allowed(a.ip(), allow_loopback))
            {
                return Err(
                    format!("{host} resolves to an internal address ({})", bad.ip()).into(),
                );
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `address` may be reached (`allow_loopback`: loopback too).
pub fn address_allowed(address: std::net::IpAddr, allow_loopback: bool) -> bool {
    let loopback = match address {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    !crate::net::is_internal(address) || (allow_loopback && loopback)
}

/// Why `url` may not be fetched, when its host is an internal address written as such (a name
/// is checked when it is resolved, by [`CheckedResolver`]).
pub fn refused_address(url: &url::Url, allow_loopback: bool) -> Option<String> {
    let address = match url.host()? {
        url::Host::Ipv4(v4) => std::net::IpAddr::V4(v4),
        url::Host::Ipv6(v6) => std::net::IpAddr::V6(v6),
        url::Host::Domain(_) => return None,
    };
    (!address_allowed(address, allow_loopback)).then(|| format!("{address} is an internal address"))
}

#[cfg(test)]
mod tests {
    use super::is_internal;

    #[test]
    fn internal_addresses_are_known_in_every_spelling() {
        for internal in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.7",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().unwrap()), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public}");
        }
    }
}
