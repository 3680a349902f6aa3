//! Which address a request comes from, for the per-IP rate limit of calls
//! without a token.
//!
//! Without configuration it is the socket's peer. Behind reverse proxies it is
//! read from the header they append to, `X-Forwarded-For` or the standard
//! `Forwarded` (RFC 7239), in one of two ways:
//! - **trusted proxies** (`limits.rate.trusted_proxies`, addresses or CIDR
//!   blocks): only when the peer is one of them is the header read at all, and
//!   the client is the first address from the right that is not a trusted
//!   proxy. Entries further left were written by the client and prove nothing;
//! - **a hop count** (`limits.rate.trusted_proxy_hops`): the address the
//!   outermost of that many proxies saw, for proxies whose addresses are not fixed.
//!
//! An entry that names no address (`unknown`, an obfuscated `_name`, garbage)
//! stops the walk: the client is then the proxy that wrote it.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use axum::http::HeaderMap;

use crate::config::RateSettings;

/// Which header the proxies append to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    fn parse(name: &str) -> anyhow::Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            _ => bail!("limits.rate.forwarded_header must be `x-forwarded-for` or `forwarded`"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    base: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses an address or a CIDR block.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let base: IpAddr = addr.parse().with_context(|| format!("`{text}` is not an address or CIDR block"))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).with_context(|| format!("`{text}`: bad prefix"))?,
            None => max,
        };
        Ok(IpNet { base, prefix })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.base, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(net.to_bits()), u128::from(ip.to_bits()), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => masked(net.to_bits(), ip.to_bits(), 128, self.prefix),
            _ => false,
        }
    }
}

/// Whether the top `prefix` of `bits` bits agree.
fn masked(a: u128, b: u128, bits: u32, prefix: u8) -> bool {
    let shift = bits - u32::from(prefix);
    shift >= bits || (a >> shift) == (b >> shift)
}

/// How the client's address is found; built once from the settings.
#[derive(Debug, Clone)]
pub struct ClientIp {
    header: ForwardedHeader,
    trusted: Vec<IpNet>,
    hops: usize,
}

impl ClientIp {
    /// From `limits.rate`; refuses unparsable blocks and both ways at once.
    pub fn from_settings(rate: &RateSettings) -> anyhow::Result<Self> {
        let trusted = rate
            .trusted_proxies
            .iter()
            .map(|t| IpNet::parse(t))
            .collect::<anyhow::Result<Vec<_>>>()
            .context("limits.rate.trusted_proxies")?;
        if !trusted.is_empty() && rate.trusted_proxy_hops > 0 {
            bail!("set limits.rate.trusted_proxies or limits.rate.trusted_proxy_hops, not both");
        }
        Ok(ClientIp { header: ForwardedHeader::parse(&rate.forwarded_header)?, trusted, hops: rate.trusted_proxy_hops })
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn of(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.trusted.is_empty() && self.hops == 0 {
            return peer;
        }
        let values = headers.get_all(self.header.name()).iter().filter_map(|v| v.to_str().ok());
        let entries: Vec<Option<IpAddr>> = match self.header {
            ForwardedHeader::XForwardedFor => values.flat_map(|v| v.split(',')).map(address).collect(),
            ForwardedHeader::Forwarded => values.flat_map(|v| v.split(',')).map(forwarded_for).collect(),
        };
        if self.trusted.is_empty() {
            // The hops-th entry from the right; too few entries: the peer.
            return entries.len().checked_sub(self.hops).and_then(|i| entries[i]).unwrap_or(peer);
        }
        let trusted = |ip: IpAddr| self.trusted.iter().any(|net| net.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let mut last = peer;
        for entry in entries.iter().rev() {
            match entry {
                Some(ip) if trusted(*ip) => last = *ip,
                Some(ip) => return *ip,
                None => return last,
            }
        }
        last
    }
}

/// An address as proxies write it: `203.0.113.9`, `10.0.0.1:5000`, `[2001:db8::1]:443`.
fn address(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    t.parse::<IpAddr>()
        .ok()
        .or_else(|| t.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).and_then(|a| a.parse().ok()))
}

/// The `for=` address of one `Forwarded` element (`for=192.0.2.43;proto=https`),
/// or `None` for `unknown`, an obfuscated name or no `for` at all.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim().eq_ignore_ascii_case("for"))
        .and_then(|(_, value)| address(value))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, HeaderValue::from_static(v));
        }
        h
    }

    fn settings(trusted: &[&str], hops: usize, header: &str) -> RateSettings {
        RateSettings {
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            trusted_proxy_hops: hops,
            forwarded_header: header.to_string(),
            ..RateSettings::default()
        }
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")) && !net.contains(ip("11.0.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 is IPv4");
        assert!(!net.contains(ip("2001:db8::1")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        assert!(IpNet::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!IpNet::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        for bad in ["10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "proxy.local", "10.0.0.0/x"] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_elements_name_their_for_address() {
        assert_eq!(forwarded_for("for=192.0.2.43"), Some(ip("192.0.2.43")));
        assert_eq!(forwarded_for(" For=\"[2001:db8:cafe::17]:4711\";proto=https"), Some(ip("2001:db8:cafe::17")));
        assert_eq!(forwarded_for("proto=http;for=198.51.100.17:8080;by=203.0.113.43"), Some(ip("198.51.100.17")));
        assert_eq!(forwarded_for("for=unknown"), None);
        assert_eq!(forwarded_for("for=_hidden"), None);
        assert_eq!(forwarded_for("proto=https"), None);
    }

    #[test]
    fn without_configuration_the_peer_is_the_client_whatever_the_headers_say() {
        let c = ClientIp::from_settings(&settings(&[], 0, "x-forwarded-for")).unwrap();
        assert_eq!(c.of(ip("198.51.100.1"), &headers("x-forwarded-for", &["203.0.113.9"])), ip("198.51.100.1"));
    }

    #[test]
    fn a_hop_count_takes_what_the_outermost_proxy_saw() {
        let c = ClientIp::from_settings(&settings(&[], 1, "x-forwarded-for")).unwrap();
        let peer = ip("10.0.0.2");
        let h = headers("x-forwarded-for", &["203.0.113.9, 198.51.100.7"]);
        assert_eq!(c.of(peer, &h), ip("198.51.100.7"));
        let two = ClientIp::from_settings(&settings(&[], 2, "x-forwarded-for")).unwrap();
        assert_eq!(two.of(peer, &h), ip("203.0.113.9"));
        let three = ClientIp::from_settings(&settings(&[], 3, "x-forwarded-for")).unwrap();
        assert_eq!(three.of(peer, &h), peer, "fewer entries than proxies: the peer");
        let split = headers("x-forwarded-for", &["1.2.3.4", "10.0.0.1:5000"]);
        assert_eq!(c.of(peer, &split), ip("10.0.0.1"));
        assert_eq!(c.of(peer, &headers("x-forwarded-for", &["not-an-ip"])), peer);
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right_and_only_a_trusted_peer_is_believed() {
        let c = ClientIp::from_settings(&settings(&["10.0.0.0/8", "192.0.2.1"], 0, "forwarded")).unwrap();
        let chain = headers("forwarded", &["for=198.51.100.66, for=203.0.113.9", "for=10.1.1.1;proto=https"]);
        assert_eq!(c.of(ip("10.0.0.2"), &chain), ip("203.0.113.9"), "the client's own entry (left) is not believed");
        assert_eq!(c.of(ip("198.51.100.200"), &chain), ip("198.51.100.200"), "an untrusted peer's header is ignored");
        let all_ours = headers("forwarded", &["for=192.0.2.1, for=10.9.9.9"]);
        assert_eq!(c.of(ip("10.0.0.2"), &all_ours), ip("192.0.2.1"), "every hop trusted: the leftmost");
        let hidden = headers("forwarded", &["for=203.0.113.9, for=unknown, for=10.1.1.1"]);
        assert_eq!(c.of(ip("10.0.0.2"), &hidden), ip("10.1.1.1"), "an unknown hop: the proxy that wrote it");
        assert_eq!(c.of(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"), "no header: the peer");
        let v6 = headers("forwarded", &["for=\"[2001:db8::5]:4711\""]);
        assert_eq!(c.of(ip("10.0.0.2"), &v6), ip("2001:db8::5"));
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        assert!(ClientIp::from_settings(&settings(&["10.0.0.0/8"], 1, "forwarded")).is_err(), "both ways");
        assert!(ClientIp::from_settings(&settings(&["10.0.0.0/40"], 0, "forwarded")).is_err());
        assert!(ClientIp::from_settings(&settings(&[], 0, "x-real-ip")).is_err());
        assert!(ClientIp::from_settings(&settings(&["10.0.0.0/8"], 0, "Forwarded")).is_ok());
    }
}
