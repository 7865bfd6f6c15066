//! Fetching a registration file from a URL a stranger chose, without becoming their tool: the server
//! connects only to public addresses (a DNS name that resolves to loopback, a private range, link-local
//! or a cloud metadata address is refused, and so is such an IP written in the URL or in a redirect),
//! reads at most a hard cap of bytes as they stream in, and gives up quickly.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use reqwest::{
    Url,
    dns::{Addrs, Name, Resolve, Resolving},
    redirect,
};

/// Whether the server may connect to `ip` on a stranger's behalf.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(mapped) => is_public_v4(mapped),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, cloud metadata included
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || ip.to_ipv4().is_some_and(|v4| !is_public_v4(v4)))
}

/// Whether `url` names a host the server may reach: an IP written in it must be public; a name is
/// checked when it resolves ([`PublicOnly`]).
pub fn host_allowed(url: &Url, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_public(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_public(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => true,
        None => false,
    }
}

/// A resolver that keeps only public addresses, so no name leads to a private one.
#[derive(Debug)]
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let public: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The client that fetches registration files: public addresses only (unless `allow_private`, for
/// local development), each redirect re-checked, at most three, and `timeout` for the whole exchange.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    let policy = redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 3 {
            attempt.error("too many redirects")
        } else if host_allowed(attempt.url(), allow_private) {
            attempt.follow()
        } else {
            attempt.error("a redirect to a private address")
        }
    });
    let builder = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).redirect(policy);
    let builder = if allow_private { builder } else { builder.dns_resolver(Arc::new(PublicOnly)) };
    builder.build().expect("a TLS client builds")
}

/// The body of `response`, refused as soon as it passes `cap` bytes (never read whole first).
pub async fn body_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Read(reqwest::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_reachable() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "255.255.255.255",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private} must be refused");
        }
        for public in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().expect("ip")), "{public} must be allowed");
        }
    }

    #[test]
    fn ip_literals_in_urls_are_checked() {
        let url = |text: &str| Url::parse(text).expect("url");
        assert!(!host_allowed(&url("http://169.254.169.254/latest/meta-data"), false));
        assert!(!host_allowed(&url("http://[::1]:8080/"), false));
        assert!(
            host_allowed(&url("https://agents.example/a.json"), false),
            "names are checked when resolved"
        );
        assert!(host_allowed(&url("http://127.0.0.1/"), true), "unless private addresses are allowed");
    }
}
