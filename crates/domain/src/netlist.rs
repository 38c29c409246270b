//! IP address lists (a customer's allow-list, the trusted proxies) and the
//! rule that finds a request's client address behind proxies.
//!
//! Lists are written as comma-separated addresses or CIDR blocks
//! (`203.0.113.7, 10.0.0.0/8, 2001:db8::/32`). IPv4 addresses mapped into
//! IPv6 (`::ffff:203.0.113.7`, as a dual-stack socket reports them) are
//! compared as the IPv4 address they carry.

use ipnet::IpNet;
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Vec<IpNet>);

/// `::ffff:a.b.c.d` → `a.b.c.d`; other addresses unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl IpList {
    /// Parses `a, b/n, …`; an empty text is the empty list.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => {
                    let ip: IpAddr = item
                        .parse()
                        .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))?;
                    IpNet::from(canonical_ip(ip))
                }
            };
            nets.push(net.trunc());
        }
        Ok(IpList(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The canonical text form, as stored.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The client's address: the socket peer, unless the peer is a trusted
/// proxy, in which case `X-Forwarded-For` is read from the right, skipping
/// trusted hops, and the first untrusted address is the client. A header
/// from an untrusted peer is ignored (anyone can write it).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &IpList) -> IpAddr {
    let peer = canonical_ip(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let hops: Vec<IpAddr> = header
        .split(',')
        .map(str::trim)
        .filter_map(|h| h.parse::<IpAddr>().ok().map(canonical_ip))
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn lists_parse_match_and_print() {
        let list = IpList::parse(" 203.0.113.7, 10.0.0.0/8 ,2001:db8::/32, ::ffff:198.51.100.1").unwrap();
        assert!(list.contains(ip("203.0.113.7")));
        assert!(list.contains(ip("::ffff:203.0.113.7")), "mapped IPv4 matches");
        assert!(list.contains(ip("10.200.3.4")));
        assert!(list.contains(ip("198.51.100.1")));
        assert!(list.contains(ip("2001:db8::1")));
        assert!(!list.contains(ip("203.0.113.8")));
        assert_eq!(list.to_text(), "203.0.113.7,10.0.0.0/8,2001:db8::/32,198.51.100.1");
        assert_eq!(IpList::parse(&list.to_text()).unwrap(), list);
        assert!(IpList::parse("").unwrap().is_empty());
        assert!(IpList::parse("10.0.0.300").is_err());
        assert!(IpList::parse("nope").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxies = IpList::parse("10.0.0.0/8").unwrap();
        let header = Some("198.51.100.9, 203.0.113.7, 10.1.1.1");
        assert_eq!(client_ip(ip("10.2.2.2"), header, &proxies), ip("203.0.113.7"));
        assert_eq!(
            client_ip(ip("192.0.2.1"), header, &proxies),
            ip("192.0.2.1"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(ip("10.2.2.2"), None, &proxies), ip("10.2.2.2"));
        assert_eq!(
            client_ip(ip("::ffff:10.2.2.2"), Some("garbage, 203.0.113.7"), &proxies),
            ip("203.0.113.7")
        );
        assert_eq!(client_ip(ip("10.2.2.2"), Some("10.3.3.3"), &proxies), ip("10.3.3.3"));
    }
}
