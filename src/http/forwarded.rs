//! The caller's address behind proxies: `X-Forwarded-For` and RFC 7239 `Forwarded`.
//!
//! Each proxy appends the address it received the request from, so the header lists the
//! hops from the client (left) to the last proxy (right), and the peer of our connection
//! is the last proxy. Anyone can put anything at the left, so the list is read from the
//! right: past the peer and every address that is a trusted proxy, the first address that
//! is not one is the caller. An entry that names no address (RFC 7239's `unknown` and
//! obfuscated identifiers such as `_hidden`, or garbage) ends the walk: the caller is then
//! the trusted hop that reported it, the nearest address known. Requests whose peer is not
//! a trusted proxy are taken at the peer's address, whatever headers they carry.
//!
//! Pure and bounded: no allocation grows with the header beyond its entries, only the
//! [`MAX_HOPS`] rightmost entries are considered, and no input panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::{ForwardedHeader, ProxyRange};

/// At most this many entries (from the right) are walked; a longer chain of trusted
/// proxies ends at the last one walked.
pub const MAX_HOPS: usize = 32;

/// Whom to believe about forwarded addresses.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// Trust whatever connects to us as one proxy (the deprecated `trust_forwarded_for`).
    pub peer: bool,
    /// Addresses and ranges of trusted proxies (`trusted_proxies`).
    pub proxies: &'a [ProxyRange],
    /// The header they maintain.
    pub header: ForwardedHeader,
}

impl Trust<'_> {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.proxies.iter().any(|r| r.contains(ip))
    }

    /// Are forwarding headers read at all?
    pub fn any(&self) -> bool {
        self.peer || !self.proxies.is_empty()
    }
}

/// The caller's address: `peer` is the connection's, `values` the forwarding header's
/// values in the order received (several header lines make one list).
pub fn client_addr<'v>(
    peer: Option<IpAddr>,
    trust: &Trust<'_>,
    values: impl Iterator<Item = &'v str>,
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    if !(trust.peer || trust.trusts(peer)) {
        return Some(peer);
    }
    let hops = match trust.header {
        ForwardedHeader::XForwardedFor => rightmost(values.flat_map(|v| v.split(',')).map(node)),
        ForwardedHeader::Forwarded => rightmost(values.flat_map(forwarded_for)),
    };
    let mut nearest = peer;
    for hop in hops.into_iter().rev() {
        let Some(ip) = hop else {
            return Some(nearest);
        };
        let ip = ip.to_canonical();
        if !trust.trusts(ip) {
            return Some(ip);
        }
        nearest = ip;
    }
    Some(nearest)
}

/// The last [`MAX_HOPS`] items, in order.
fn rightmost<T>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut last = std::collections::VecDeque::with_capacity(MAX_HOPS);
    for item in items {
        if last.len() == MAX_HOPS {
            last.pop_front();
        }
        last.push_back(item);
    }
    last.into()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080`, with RFC 7239 obfuscated ports (`:_p1`)
/// allowed. `None` for anything else (`unknown`, `_hidden`, garbage).
fn node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        return (after.is_empty() || after.starts_with(':'))
            .then(|| inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (host, _port) = s.split_once(':')?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The `for=` node of each element of one `Forwarded` value (RFC 7239 §4): elements are
/// separated by commas, pairs by semicolons, values are tokens or quoted strings (which may
/// hold either separator). An element without exactly one `for` gives `None`.
fn forwarded_for(value: &str) -> Vec<Option<IpAddr>> {
    let mut nodes = Vec::new();
    let mut fors: Vec<String> = Vec::new();
    let mut pair = String::new();
    let mut chars = value.chars();
    let mut quoted = false;
    let end_pair = |pair: &mut String, fors: &mut Vec<String>| {
        if let Some((name, v)) = pair.split_once('=')
            && name.trim().eq_ignore_ascii_case("for")
        {
            fors.push(v.trim().to_string());
        }
        pair.clear();
    };
    let end_element = |fors: &mut Vec<String>, nodes: &mut Vec<Option<IpAddr>>| {
        nodes.push(match fors.as_slice() {
            [one] => node(one),
            _ => None,
        });
        fors.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(e) = chars.next() {
                    pair.push(e);
                }
            }
            ';' if !quoted => end_pair(&mut pair, &mut fors),
            ',' if !quoted => {
                end_pair(&mut pair, &mut fors);
                end_element(&mut fors, &mut nodes);
            }
            c => pair.push(c),
        }
    }
    end_pair(&mut pair, &mut fors);
    // A trailing empty element (`a,`) is not a hop; an empty value has none.
    if !fors.is_empty() || (!value.trim().is_empty() && !value.trim_end().ends_with(',')) {
        end_element(&mut fors, &mut nodes);
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &[&str]) -> Vec<ProxyRange> {
        list.iter().map(|s| s.parse().expect("range")).collect()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    fn xff<'a>(proxies: &'a [ProxyRange]) -> Trust<'a> {
        Trust {
            peer: false,
            proxies,
            header: ForwardedHeader::XForwardedFor,
        }
    }

    fn fwd<'a>(proxies: &'a [ProxyRange]) -> Trust<'a> {
        Trust {
            peer: false,
            proxies,
            header: ForwardedHeader::Forwarded,
        }
    }

    #[test]
    fn the_chain_is_walked_from_the_right_past_trusted_proxies() {
        let p = ranges(&["10.0.0.0/8", "127.0.0.1", "2001:db8:1::/48"]);
        let t = xff(&p);
        let get = |peer: &str, values: &[&str]| client_addr(ip(peer), &t, values.iter().copied());
        // The client spoofs an entry; two of our proxies appended theirs.
        assert_eq!(
            get("127.0.0.1", &["6.6.6.6, 203.0.113.7, 10.1.1.1", "10.2.2.2"]),
            ip("203.0.113.7")
        );
        assert_eq!(get("127.0.0.1", &["203.0.113.7"]), ip("203.0.113.7"));
        // An untrusted peer's header is ignored.
        assert_eq!(get("198.51.100.1", &["203.0.113.7"]), ip("198.51.100.1"));
        // No header, or only trusted hops: the leftmost trusted hop.
        assert_eq!(get("10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(get("10.0.0.1", &["10.9.9.9, 127.0.0.1"]), ip("10.9.9.9"));
        // Ports, brackets, IPv6 ranges, IPv4-mapped peers.
        assert_eq!(
            get("::ffff:127.0.0.1", &["[2001:db8:2::5]:443, 2001:db8:1::9"]),
            ip("2001:db8:2::5")
        );
        assert_eq!(get("127.0.0.1", &["203.0.113.7:51234"]), ip("203.0.113.7"));
        assert_eq!(get("127.0.0.1", &["::ffff:203.0.113.7"]), ip("203.0.113.7"));
        // Garbage reported by a trusted hop: that hop is the nearest known address.
        assert_eq!(
            get("127.0.0.1", &["203.0.113.7, junk, 10.3.3.3"]),
            ip("10.3.3.3")
        );
        assert_eq!(get("127.0.0.1", &["203.0.113.7, "]), ip("127.0.0.1"));
        assert_eq!(client_addr(None, &t, ["203.0.113.7"].into_iter()), None);
    }

    #[test]
    fn trusting_the_peer_takes_the_last_entry_as_before() {
        let t = Trust {
            peer: true,
            proxies: &[],
            header: ForwardedHeader::XForwardedFor,
        };
        let get = |values: &[&str]| client_addr(ip("192.0.2.50"), &t, values.iter().copied());
        assert_eq!(get(&["6.6.6.6, 203.0.113.7"]), ip("203.0.113.7"));
        assert_eq!(get(&[]), ip("192.0.2.50"));
        assert!(!xff(&[]).any() && t.any());
    }

    #[test]
    fn forwarded_for_values_are_read_as_rfc_7239_writes_them() {
        let p = ranges(&["10.0.0.0/8"]);
        let t = fwd(&p);
        let get = |values: &[&str]| client_addr(ip("10.0.0.1"), &t, values.iter().copied());
        assert_eq!(
            get(&["for=192.0.2.60;proto=http;by=203.0.113.43"]),
            ip("192.0.2.60")
        );
        assert_eq!(
            get(&["For=\"[2001:db8:cafe::17]:4711\"", "for=10.1.1.1"]),
            ip("2001:db8:cafe::17")
        );
        assert_eq!(
            get(&["for=198.51.100.17, for=192.0.2.43;by=\"[::1]\", for=10.0.0.9"]),
            ip("192.0.2.43")
        );
        // Quoted separators stay inside their value; escapes are undone.
        assert_eq!(
            get(&["for=192.0.2.1;x=\"a,b;c\\\"\", for=\"192.0.2.2:_p\""]),
            ip("192.0.2.2")
        );
        // Obfuscated or unknown nodes, elements without `for`, or with two: the hop that
        // reported them.
        for v in [
            "for=192.0.2.1, for=_hidden, for=10.3.3.3",
            "for=192.0.2.1, for=unknown, for=10.3.3.3",
            "for=192.0.2.1, proto=https, for=10.3.3.3",
            "for=192.0.2.1, for=192.0.2.2;for=192.0.2.3, for=10.3.3.3",
        ] {
            assert_eq!(get(&[v]), ip("10.3.3.3"), "{v}");
        }
        // X-Forwarded-For is not read when the proxies maintain Forwarded.
        assert_eq!(get(&[]), ip("10.0.0.1"));
    }

    #[test]
    fn long_chains_are_bounded() {
        let p = ranges(&["10.0.0.0/8"]);
        let t = xff(&p);
        let mut chain = vec!["203.0.113.7".to_string()];
        chain.extend((0..100).map(|i| format!("10.0.0.{}", i % 250)));
        let value = chain.join(",");
        let got = client_addr(ip("10.0.0.1"), &t, [value.as_str()].into_iter());
        assert!(got.is_some_and(|a| p[0].contains(a)), "{got:?}");
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::super::*;
        use crate::fuzz::{config, nasty_string};

        fn entry() -> impl Strategy<Value = String> {
            prop_oneof![
                nasty_string(),
                any::<IpAddr>().prop_map(|a| a.to_string()),
                (any::<Ipv6Addr>(), any::<u16>()).prop_map(|(a, p)| format!("\"[{a}]:{p}\"")),
                Just("for=".to_string()),
                Just("unknown".to_string()),
                Just("_obf".to_string()),
            ]
        }

        proptest! {
            #![proptest_config(config())]

            /// Any headers give the peer, an address from the headers, or (only with no
            /// peer) nothing; a peer that is not trusted is always the answer.
            #[test]
            fn any_header_gives_the_peer_or_an_address_it_names(
                entries in proptest::collection::vec((entry(), "[,;= ]{0,2}"), 0..8),
                peer in any::<IpAddr>(),
                forwarded in any::<bool>(),
                trusted in any::<bool>(),
            ) {
                let value: String = entries.iter().map(|(e, sep)| format!("{e}{sep}")).collect();
                let proxies: Vec<ProxyRange> = if trusted {
                    vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]
                } else {
                    Vec::new()
                };
                let t = Trust {
                    peer: false,
                    proxies: &proxies,
                    header: if forwarded { ForwardedHeader::Forwarded } else { ForwardedHeader::XForwardedFor },
                };
                let got = client_addr(Some(peer), &t, [value.as_str()].into_iter());
                prop_assert!(got.is_some());
                if !trusted {
                    prop_assert_eq!(got, Some(peer.to_canonical()));
                }
            }
        }
    }
}
