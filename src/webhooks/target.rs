//! Where a webhook may be sent: https only, and never to an address in a
//! private, loopback, link-local or otherwise internal range, checked on the
//! resolved address when an endpoint is saved and again on every attempt
//! ([`PublicOnly`] resolves for the HTTP client and drops such addresses, so
//! the connection goes to an address that was checked). Both rules are lifted
//! by `GATEHOUSE_WEBHOOKS_ALLOW_INSECURE`, for local receivers and tests.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Why a URL may not receive webhooks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL: {0}")]
    Malformed(String),
    #[error("the URL must use https")]
    NotHttps,
    #[error("the URL must not carry a user name or password")]
    Credentials,
    #[error("{host} resolves to {addr}, an internal address; webhooks go to public addresses only")]
    Internal { host: String, addr: IpAddr },
    #[error("{0} does not resolve")]
    Unresolvable(String),
}

/// Parses `raw` and checks its form: http(s), a host, no credentials; https
/// unless `allow_insecure`.
pub fn parse(raw: &str, allow_insecure: bool) -> Result<Url, TargetError> {
    let url = Url::parse(raw.trim()).map_err(|e| TargetError::Malformed(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure => {}
        _ => return Err(TargetError::NotHttps),
    }
    if url.host().is_none() {
        return Err(TargetError::Malformed("no host".into()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    Ok(url)
}

/// Resolves the URL's host and refuses it if any address is internal.
pub async fn check_resolved(url: &Url, allow_insecure: bool) -> Result<(), TargetError> {
    if allow_insecure {
        return Ok(());
    }
    let host = url
        .host_str()
        .ok_or_else(|| TargetError::Malformed("no host".into()))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
        _ => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| TargetError::Unresolvable(host.to_owned()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable(host.to_owned()));
    }
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(internal) => Err(TargetError::Internal {
            host: host.to_owned(),
            addr: internal.ip(),
        }),
        None => Ok(()),
    }
}

/// The check of a URL whose host is an IP literal, which the HTTP client
/// connects to without asking a resolver.
pub fn check_literal(url: &Url) -> Result<(), TargetError> {
    let addr: IpAddr = match url.host() {
        Some(Host::Ipv4(ip)) => ip.into(),
        Some(Host::Ipv6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    if is_public(addr) {
        Ok(())
    } else {
        Err(TargetError::Internal {
            host: addr.to_string(),
            addr,
        })
    }
}

/// False for every range a server-side request must not reach: loopback,
/// private, link-local (cloud metadata lives there), shared (CGNAT),
/// unspecified, broadcast, multicast, documentation, and their IPv6 kin.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unique_local()
                || v6.is_unicast_link_local()
                // NAT64 (64:ff9b::/96) reaches IPv4 space we cannot check here.
                || v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
                || v6.segments()[0] == 0x2001 && v6.segments()[1] == 0xdb8)
        }
    }
}

/// A resolver for the HTTP client that hands it public addresses only.
#[derive(Debug, Default)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| is_public(a.ip()))
                .collect();
            if public.is_empty() {
                let error = match found.first() {
                    Some(addr) => TargetError::Internal {
                        host,
                        addr: addr.ip(),
                    },
                    None => TargetError::Unresolvable(host),
                };
                return Err(Box::new(error) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_ranges_are_not_public() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(internal.parse().unwrap()), "{internal}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn only_https_without_credentials_unless_insecure() {
        assert!(parse("https://hooks.example.org/in", false).is_ok());
        assert_eq!(
            parse("http://hooks.example.org/in", false),
            Err(TargetError::NotHttps)
        );
        assert!(parse("http://127.0.0.1:9/in", true).is_ok());
        assert_eq!(
            parse("ftp://x.example.org", true),
            Err(TargetError::NotHttps)
        );
        assert_eq!(
            parse("https://u:p@hooks.example.org", false),
            Err(TargetError::Credentials)
        );
        let literal = parse("https://127.0.0.1/in", false).unwrap();
        assert!(check_literal(&literal).is_err());
    }
}
