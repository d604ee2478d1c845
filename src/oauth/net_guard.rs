//! Outbound fetches on behalf of clients (metadata documents, later `jwks_uri`) must not reach
//! the server's own network: refuse special-use addresses (RFC 6890 and the IANA
//! special-purpose registries), checked on the addresses a name actually resolves to, so a
//! DNS answer cannot smuggle a private address past a host-name check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use ipnet::{Ipv4Net, Ipv6Net};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use super::redirect_uri::is_loopback_host;

const V4_SPECIAL: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 31, 196, 0), 24),
    (Ipv4Addr::new(192, 52, 193, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    (Ipv4Addr::new(192, 175, 48, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(224, 0, 0, 0), 4),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// The IPv6 special-purpose registry's entries that lie inside global unicast (2000::/3);
/// everything outside it is refused anyway (see [`is_special_use`]).
const V6_SPECIAL: &[(Ipv6Addr, u8)] = &[
    // Teredo, benchmarking, AMT, ORCHID, drone identifiers (RFC 2928 and later).
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    // Documentation (RFC 3849, RFC 9637).
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    // 6to4 (RFC 3056): embeds an IPv4 address of any kind.
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
    // Direct Delegation AS112 service (RFC 7534).
    (Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0), 48),
];

/// Global unicast (RFC 4291 §2.4): the only IPv6 space we ever connect to. Outside it lie
/// the unspecified and loopback addresses, IPv4-mapped and IPv4-compatible addresses
/// (`::ffff:0:0/96`, `::/96`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), discard-only and
/// dummy prefixes (`100::/64`, `100:0:0:1::/64`), SRv6 SIDs (`5f00::/16`), unique-local
/// (`fc00::/7`), link-local (`fe80::/10`), the deprecated site-local (`fec0::/10`),
/// multicast (`ff00::/8`) and what is still reserved.
const V6_GLOBAL_UNICAST: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// Is `ip` in a special-use range (private, loopback, link-local, documentation, …) of the
/// IANA IPv4 and IPv6 special-purpose address registries (RFC 6890), or outside IPv6
/// global unicast?
pub fn is_special_use(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => V4_SPECIAL
            .iter()
            .any(|(net, len)| Ipv4Net::new(*net, *len).is_ok_and(|n| n.contains(&v4))),
        IpAddr::V6(v6) => {
            let within = |(net, len): &(Ipv6Addr, u8)| {
                Ipv6Net::new(*net, *len).is_ok_and(|n| n.contains(&v6))
            };
            !within(&V6_GLOBAL_UNICAST) || V6_SPECIAL.iter().any(within)
        }
    }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// May we connect to `ip`? Loopback only with the development flag; other special-use
/// addresses never.
pub fn address_allowed(ip: IpAddr, allow_loopback: bool) -> bool {
    if is_loopback(ip) {
        return allow_loopback;
    }
    !is_special_use(ip)
}

/// The error a refused address produces; found again in reqwest's error chain.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to the special-use address {ip}")]
pub struct RefusedAddress {
    pub host: String,
    pub ip: IpAddr,
}

/// A DNS resolver for reqwest that refuses names resolving to any forbidden address.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_loopback: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            // One forbidden answer poisons the name: refusing all is safer than picking.
            if let Some(bad) = addrs
                .iter()
                .find(|a| !address_allowed(a.ip(), allow_loopback))
            {
                return Err(Box::new(RefusedAddress { host, ip: bad.ip() })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Why an outbound fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("{0} must use https")]
    NotHttps(String),
    #[error("the host {0}; it is refused")]
    SpecialUseAddress(String),
    #[error("the URL answered with a redirect (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    #[error("the URL answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("fetching took longer than {0} ms")]
    Timeout(u64),
    #[error("the fetch failed: {0}")]
    Other(String),
}

/// An HTTP client for URLs that clients name: https only (plain http on loopback with the
/// development flag), no proxies, no redirects, a size cap, a timeout, and the address guard.
pub struct SafeFetcher {
    http: reqwest::Client,
    allow_loopback: bool,
    /// Addresses are checked (URLs that clients name); off for URLs the operator wrote.
    guarded: bool,
    timeout_ms: u64,
}

impl SafeFetcher {
    pub fn new(allow_loopback: bool, timeout_ms: u64) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms))
            // A proxy would resolve names itself, past the address guard.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver { allow_loopback }))
            .user_agent(concat!("Concierge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Other(e.to_string()))?;
        Ok(Self {
            http,
            allow_loopback,
            guarded: true,
            timeout_ms,
        })
    }

    /// A fetcher for URLs the operator configured (an upstream identity provider, which may
    /// well be on a private network): no address guard, https or plain http on a loopback
    /// host, still no redirects, the size caps and the timeout.
    pub fn for_operator_urls(timeout_ms: u64) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms))
            .user_agent(concat!("Concierge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Other(e.to_string()))?;
        Ok(Self {
            http,
            allow_loopback: true,
            guarded: false,
            timeout_ms,
        })
    }

    /// May this URL be fetched at all? (Scheme and address literals; names are checked when
    /// they resolve.)
    pub fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_loopback && is_loopback_host(url) => {}
            _ => return Err(FetchError::NotHttps(url.to_string())),
        }
        let literal = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal
            && self.guarded
            && !address_allowed(ip, self.allow_loopback)
        {
            return Err(FetchError::SpecialUseAddress(format!(
                "is the special-use address {ip}"
            )));
        }
        Ok(())
    }

    /// GET `url`; only a 200 whose body fits in `max_bytes` is a success.
    pub async fn get(
        &self,
        url: &Url,
        accept: &str,
        max_bytes: usize,
    ) -> Result<(HeaderMap, Vec<u8>), FetchError> {
        self.check_url(url)?;
        let req = self
            .http
            .get(url.clone())
            .header(http::header::ACCEPT, accept);
        match self.send(req, max_bytes).await? {
            (200, headers, body) => Ok((headers, body)),
            (status, _, _) => Err(FetchError::Status(status)),
        }
    }

    /// Send a request built from [`Self::client`] for a URL that passed [`Self::check_url`]:
    /// any status but a redirect, with its headers and a body that fits in `max_bytes`.
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        max_bytes: usize,
    ) -> Result<(u16, HeaderMap, Vec<u8>), FetchError> {
        let mut resp = req.send().await.map_err(|e| self.error(e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(FetchError::Redirect(status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let headers = resp.headers().clone();
        let mut body: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.error(e))? {
            if body.len() + chunk.len() > max_bytes {
                return Err(FetchError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status.as_u16(), headers, body))
    }

    /// The underlying client, to build a request for [`Self::send`].
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    fn error(&self, e: reqwest::Error) -> FetchError {
        if e.is_timeout() {
            return FetchError::Timeout(self.timeout_ms);
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(r) = s.downcast_ref::<RefusedAddress>() {
                return FetchError::SpecialUseAddress(r.to_string());
            }
            source = s.source();
        }
        FetchError::Other(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    /// Every range of the IANA special-purpose registries (and IPv6 outside global
    /// unicast), by an address inside it; then public addresses next to them.
    #[test]
    fn special_use_ranges() {
        for s in [
            // IPv4 special-purpose registry.
            "0.0.0.0",
            "0.255.255.255",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.9",
            "192.0.0.170",
            "192.0.2.1",
            "192.31.196.1",
            "192.52.193.1",
            "192.88.99.1",
            "192.168.1.1",
            "192.175.48.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.1",
            "203.0.113.1",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6 special-purpose registry.
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "::10.0.0.1",
            "::8.8.8.8",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:1::1",
            "2001:2::1",
            "2001:3::1",
            "2001:4:112::1",
            "2001:10::1",
            "2001:20::1",
            "2001:30::1",
            "2001:db8::1",
            "2002:a00:1::1",
            "2620:4f:8000::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            // Outside global unicast, reserved.
            "400::1",
            "1234::1",
            "4000::1",
            "e000::1",
        ] {
            assert!(is_special_use(ip(s)), "{s}");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450::1",
            "2001:200::1",
            "2620:4f:8001::1",
            "3ffe::1",
        ] {
            assert!(!is_special_use(ip(s)), "{s}");
        }
    }

    #[test]
    fn loopback_only_with_the_flag() {
        assert!(!address_allowed(ip("127.0.0.1"), false));
        assert!(address_allowed(ip("127.0.0.1"), true));
        assert!(address_allowed(ip("::1"), true));
        assert!(address_allowed(ip("::ffff:127.0.0.1"), true));
        assert!(!address_allowed(ip("10.0.0.1"), true));
        assert!(!address_allowed(ip("169.254.169.254"), true));
        assert!(address_allowed(ip("8.8.8.8"), false));
    }
}
