//! Which URLs a webhook may be delivered to: the guard against server-side request forgery
//! (SSRF), where a partner registers a URL that makes the gateway call into our own network.
//!
//! The policy:
//! - A URL ([`check_url`]) is at most [`MAX_URL_LEN`] characters, `https://` (or `http://` too
//!   when `allow_insecure`), has a host, and carries no user name or password. Any port.
//! - Every address the host stands for must be public ([`check_addrs`], [`classify`]): not
//!   loopback, private, link-local (the cloud metadata address 169.254.169.254 among them),
//!   shared (CGNAT), unspecified, multicast, broadcast, documentation, benchmarking, reserved,
//!   IPv6 unique-local or site-local, nor outside IPv6's global unicast `2000::/3`. An IPv4
//!   address inside an IPv6 one (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//!   NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged as that IPv4 address, since that is what
//!   the connection reaches.
//! - A host that is an IP address is checked by [`check_url`] itself; a domain is checked after
//!   resolving it ([`resolve_and_check`]), and *all* its addresses must pass, so a name cannot
//!   hide one private address among public ones.
//! - `allow_insecure` (`gateway.webhooks.allow_insecure_targets`, for development and tests
//!   only) accepts `http://` and loopback addresses, nothing else: never the metadata address,
//!   never private ranges.
//!
//! The check runs at registration (a refusal is a 422 problem whose `detail` is the
//! [`UrlRefusal`]'s message) and again before every delivery attempt, after resolving the host,
//! because DNS answers change: a name that resolved to a public address at registration may
//! resolve to `127.0.0.1` now ("DNS rebinding").
//!
//! # Connecting to the checked addresses only
//!
//! Checking addresses and then letting the HTTP client resolve the name again would leave a
//! window for rebinding between the two lookups. The delivery must connect to the addresses
//! [`resolve_and_check`] returned, and nothing else. With reqwest, per delivery attempt:
//!
//! ```ignore
//! let target = check_url(&endpoint.url, allow_insecure)?;
//! let addrs = resolve_and_check(&target, allow_insecure, dns_timeout).await?;
//! let mut client = reqwest::Client::builder()
//!     .redirect(reqwest::redirect::Policy::none()) // a redirect would go unchecked
//!     .no_proxy() // a proxy would resolve the name itself
//!     .timeout(delivery_timeout);
//! if let TargetHost::Domain(domain) = target.host() {
//!     // reqwest connects to these addresses (with the URL's port) instead of resolving.
//!     client = client.resolve_to_addrs(domain, &addrs);
//! }
//! let response = client.build()?.post(target.url().clone()).body(body).send().await;
//! ```
//!
//! Equivalently, one shared client can install a `reqwest::dns::Resolve` implementation
//! (`ClientBuilder::dns_resolver`) that resolves, runs [`check_addrs`] and returns only checked
//! addresses: then every new connection is checked when it is made (a pooled connection was
//! checked when it was opened). Either way, keep redirects off and proxies off, and keep
//! [`check_url`] before the request: a URL whose host is an IP address never goes through a
//! resolver, so only [`check_url`] guards it.

use std::{
    fmt,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    pin::Pin,
    time::Duration,
};

use url::{Host, Url};

/// The longest URL an endpoint may have, in characters.
pub const MAX_URL_LEN: usize = 2048;

/// A URL that passed [`check_url`]: where deliveries go, before its host is resolved.
///
/// Its query may carry a partner's token: log [`Target::host`] rather than the whole URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL, normalised by the `url` crate (lower-case scheme and host, punycode, IPv4 in
    /// dotted decimal): what requests are sent to and what is stored.
    url: Url,
    /// The host, split into a name to resolve or an address to connect to.
    host: TargetHost,
    /// The port to connect to: the URL's, or the scheme's default.
    port: u16,
}

/// The host of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetHost {
    /// A name, to resolve (and check) before each delivery.
    Domain(String),
    /// An address, already checked by [`check_url`].
    Ip(IpAddr),
}

impl Target {
    /// The URL to send deliveries to.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The normalised URL as text, to store and to show back to the partner.
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The host: a domain to resolve, or an IP address.
    pub fn host(&self) -> &TargetHost {
        &self.host
    }

    /// The port deliveries connect to.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(domain) => f.write_str(domain),
            Self::Ip(ip) => ip.fmt(f),
        }
    }
}

/// Why an address is not public, in the words of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// `127.0.0.0/8`, `::1`: this machine.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918), and IPv6 site-local
    /// `fec0::/10` (deprecated, still routed inside some networks).
    Private,
    /// `169.254.0.0/16`, `fe80::/10`: the local link.
    LinkLocal,
    /// A cloud provider's instance metadata service (`169.254.169.254`, AWS's IPv6
    /// `fd00:ec2::254`, Alibaba's `100.100.100.200`): credentials live there.
    CloudMetadata,
    /// `100.64.0.0/10` (RFC 6598): carrier-grade NAT, the provider's network.
    SharedAddressSpace,
    /// `0.0.0.0/8` ("this network"; connecting to `0.0.0.0` reaches this machine) and `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`: benchmarking networks.
    Benchmarking,
    /// `240.0.0.0/4`, `192.0.0.0/24`, `192.88.99.0/24`, `2001::/23`, and IPv6 outside
    /// `2000::/3` (the global unicast space): reserved or special-purpose.
    Reserved,
    /// `fc00::/7` (RFC 4193): IPv6's private networks.
    UniqueLocal,
}

impl AddressKind {
    /// The kind with its article, as a refusal says it ("a loopback", "an unspecified").
    fn with_article(self) -> &'static str {
        match self {
            Self::Loopback => "a loopback",
            Self::Private => "a private",
            Self::LinkLocal => "a link-local",
            Self::CloudMetadata => "a cloud metadata",
            Self::SharedAddressSpace => "a shared (carrier-grade NAT)",
            Self::Unspecified => "an unspecified",
            Self::Multicast => "a multicast",
            Self::Broadcast => "a broadcast",
            Self::Documentation => "a documentation",
            Self::Benchmarking => "a benchmarking",
            Self::Reserved => "a reserved",
            Self::UniqueLocal => "a unique-local",
        }
    }
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "a loopback" → "loopback".
        let phrase = self.with_article();
        f.write_str(phrase.split_once(' ').map_or(phrase, |(_, kind)| kind))
    }
}

/// Why a webhook URL is refused. The message suits a 422 problem's `detail`: it names what is
/// wrong with the URL and never internal details (a resolver's error text stays the `source`).
#[derive(Debug, thiserror::Error)]
pub enum UrlRefusal {
    /// Longer than [`MAX_URL_LEN`].
    #[error("the URL is {0} characters long; at most {MAX_URL_LEN} are accepted")]
    TooLong(usize),
    /// Not an absolute URL.
    #[error("the URL is not valid: {0}")]
    Invalid(url::ParseError),
    /// Not `https` (nor `http` when insecure targets are allowed).
    #[error("the URL's scheme is `{scheme}`; only {allowed} URLs are accepted")]
    Scheme {
        /// The URL's scheme.
        scheme: String,
        /// The schemes accepted, as the message says them.
        allowed: &'static str,
    },
    /// Has a user name or password (`https://user:password@host/`).
    #[error("the URL must not carry a user name or password")]
    Credentials,
    /// Has no host.
    #[error("the URL has no host")]
    NoHost,
    /// The host is, or resolves to, an address that is not public.
    #[error("the URL resolves to {} address ({address})", kind.with_article())]
    Address {
        /// The first refused address.
        address: IpAddr,
        /// Why it is refused.
        kind: AddressKind,
    },
    /// The host's name could not be resolved.
    #[error("the URL's host ({host}) could not be resolved")]
    Unresolved {
        /// The name.
        host: String,
        /// The resolver's error, for logs.
        #[source]
        error: io::Error,
    },
    /// Resolving the host's name took longer than allowed.
    #[error("the URL's host ({host}) was not resolved within {timeout:?}")]
    ResolveTimeout {
        /// The name.
        host: String,
        /// How long resolving may take.
        timeout: Duration,
    },
    /// The host's name resolves to no address at all.
    #[error("the URL's host resolves to no address")]
    NoAddress,
}

impl UrlRefusal {
    /// Whether resolving the host failed (rather than the URL or an address being refused): at
    /// delivery time, a failure worth retrying on the schedule, not a property of the URL.
    pub fn is_resolution_failure(&self) -> bool {
        matches!(
            self,
            Self::Unresolved { .. } | Self::ResolveTimeout { .. } | Self::NoAddress
        )
    }
}

/// Checks a webhook URL: its length, scheme, credentials and host, and, when the host is an IP
/// address, that address ([`check_addrs`]). A domain is checked by [`resolve_and_check`].
pub fn check_url(url: &str, allow_insecure: bool) -> Result<Target, UrlRefusal> {
    let length = url.chars().count();
    if length > MAX_URL_LEN {
        return Err(UrlRefusal::TooLong(length));
    }
    let url = Url::parse(url).map_err(UrlRefusal::Invalid)?;
    // Normalising can lengthen it (an internationalised name becomes punycode).
    let normalised = url.as_str().chars().count();
    if normalised > MAX_URL_LEN {
        return Err(UrlRefusal::TooLong(normalised));
    }
    match (url.scheme(), allow_insecure) {
        ("https", _) | ("http", true) => {}
        (scheme, _) => {
            return Err(UrlRefusal::Scheme {
                scheme: scheme.to_owned(),
                allowed: if allow_insecure {
                    "https:// and http://"
                } else {
                    "https://"
                },
            });
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Credentials);
    }
    let host = match url.host() {
        None | Some(Host::Domain("")) => return Err(UrlRefusal::NoHost),
        Some(Host::Domain(domain)) => TargetHost::Domain(domain.to_owned()),
        Some(Host::Ipv4(ip)) => TargetHost::Ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => TargetHost::Ip(IpAddr::V6(ip)),
    };
    if let TargetHost::Ip(ip) = host {
        check_addrs(&[ip], allow_insecure)?;
    }
    let port = url.port_or_known_default().ok_or(UrlRefusal::NoHost)?;
    Ok(Target { url, host, port })
}

/// Checks the addresses a target's host stands for: all must be public ([`classify`]), or
/// loopback when `allow_insecure`. The refusal names the first one that is not. No address at
/// all is refused too.
pub fn check_addrs(addrs: &[IpAddr], allow_insecure: bool) -> Result<(), UrlRefusal> {
    if addrs.is_empty() {
        return Err(UrlRefusal::NoAddress);
    }
    for &address in addrs {
        match classify(address) {
            None => {}
            Some(AddressKind::Loopback) if allow_insecure => {}
            Some(kind) => return Err(UrlRefusal::Address { address, kind }),
        }
    }
    Ok(())
}

/// Resolves `target`'s host (within `timeout`) and checks every address ([`check_addrs`]),
/// returning them (with the target's port, without duplicates) for the delivery to connect to:
/// see the module's documentation for how. A host that is an IP address is returned as is
/// (after checking it again), without a lookup.
pub async fn resolve_and_check(
    target: &Target,
    allow_insecure: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, UrlRefusal> {
    resolve_and_check_with(&SystemResolver, target, allow_insecure, timeout).await
}

/// [`resolve_and_check`], looking the host up with `resolver`.
pub async fn resolve_and_check_with(
    resolver: &dyn Resolver,
    target: &Target,
    allow_insecure: bool,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, UrlRefusal> {
    resolve_with(target, allow_insecure, timeout, |host, port| async move {
        resolver.lookup(&host, port).await
    })
    .await
}

/// What a [`Resolver`] answers: the addresses a host stands for.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Looks host names up for the checks: [`SystemResolver`] in the gateway; tests give their own,
/// to make a name resolve to what they need (a public address at registration, a loopback one
/// at delivery: DNS rebinding) without a DNS server.
pub trait Resolver: fmt::Debug + Send + Sync + 'static {
    /// The addresses `host` stands for, each with `port`.
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a>;
}

/// The system's resolver (`getaddrinfo`, through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> Lookup<'a> {
        Box::pin(async move {
            tokio::net::lookup_host((host, port))
                .await
                .map(Iterator::collect)
        })
    }
}

/// [`resolve_and_check`] with its resolver given (tests resolve without DNS).
async fn resolve_with<F, Fut>(
    target: &Target,
    allow_insecure: bool,
    timeout: Duration,
    lookup: F,
) -> Result<Vec<SocketAddr>, UrlRefusal>
where
    F: FnOnce(String, u16) -> Fut,
    Fut: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let domain = match &target.host {
        TargetHost::Ip(ip) => {
            check_addrs(&[*ip], allow_insecure)?;
            return Ok(vec![SocketAddr::new(*ip, target.port)]);
        }
        TargetHost::Domain(domain) => domain,
    };
    let found = tokio::time::timeout(timeout, lookup(domain.clone(), target.port))
        .await
        .map_err(|_| UrlRefusal::ResolveTimeout {
            host: domain.clone(),
            timeout,
        })?
        .map_err(|error| UrlRefusal::Unresolved {
            host: domain.clone(),
            error,
        })?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(found.len());
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    check_addrs(&ips, allow_insecure)?;
    Ok(addrs)
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn classify(ip: IpAddr) -> Option<AddressKind> {
    match ip {
        IpAddr::V4(ip) => classify_v4(ip),
        IpAddr::V6(ip) => classify_v6(ip),
    }
}

/// The IPv4 ranges that are not public, the most specific first (the first match names the
/// kind).
const V4_RANGES: &[(Ipv4Addr, u8, AddressKind)] = &[
    (
        Ipv4Addr::new(169, 254, 169, 254),
        32,
        AddressKind::CloudMetadata,
    ),
    (
        Ipv4Addr::new(100, 100, 100, 200),
        32,
        AddressKind::CloudMetadata,
    ),
    (
        Ipv4Addr::new(255, 255, 255, 255),
        32,
        AddressKind::Broadcast,
    ),
    (Ipv4Addr::new(0, 0, 0, 0), 8, AddressKind::Unspecified),
    (Ipv4Addr::new(10, 0, 0, 0), 8, AddressKind::Private),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        AddressKind::SharedAddressSpace,
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, AddressKind::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, AddressKind::LinkLocal),
    (Ipv4Addr::new(172, 16, 0, 0), 12, AddressKind::Private),
    (Ipv4Addr::new(192, 0, 0, 0), 24, AddressKind::Reserved),
    (Ipv4Addr::new(192, 0, 2, 0), 24, AddressKind::Documentation),
    (Ipv4Addr::new(192, 88, 99, 0), 24, AddressKind::Reserved),
    (Ipv4Addr::new(192, 168, 0, 0), 16, AddressKind::Private),
    (Ipv4Addr::new(198, 18, 0, 0), 15, AddressKind::Benchmarking),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        AddressKind::Documentation,
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        AddressKind::Documentation,
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, AddressKind::Multicast),
    (Ipv4Addr::new(240, 0, 0, 0), 4, AddressKind::Reserved),
];

/// The IPv6 ranges inside or beside global unicast that are not public, the most specific first.
/// Everything outside `2000::/3` is [`AddressKind::Reserved`] unless listed here.
const V6_RANGES: &[(Ipv6Addr, u8, AddressKind)] = &[
    (
        Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
        128,
        AddressKind::CloudMetadata,
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressKind::LinkLocal,
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        AddressKind::Private,
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        AddressKind::UniqueLocal,
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        AddressKind::Multicast,
    ),
    (
        Ipv6Addr::new(0x2001, 0x0db8, 0, 0, 0, 0, 0, 0),
        32,
        AddressKind::Documentation,
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        AddressKind::Documentation,
    ),
    (
        Ipv6Addr::new(0x2001, 0x0002, 0, 0, 0, 0, 0, 0),
        48,
        AddressKind::Benchmarking,
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        AddressKind::Reserved,
    ),
];

fn classify_v4(ip: Ipv4Addr) -> Option<AddressKind> {
    V4_RANGES
        .iter()
        .find(|&&(network, length, _)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
            ip.to_bits() & mask == network.to_bits() & mask
        })
        .map(|&(_, _, kind)| kind)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressKind> {
    if ip.is_unspecified() {
        return Some(AddressKind::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressKind::Loopback);
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    let listed = V6_RANGES
        .iter()
        .find(|&&(network, length, _)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(length)).unwrap_or(0);
            ip.to_bits() & mask == network.to_bits() & mask
        })
        .map(|&(_, _, kind)| kind);
    let global_unicast = ip.to_bits() >> 125 == 0b001;
    listed.or((!global_unicast).then_some(AddressKind::Reserved))
}

/// The IPv4 address a connection to `ip` reaches: IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`, deprecated; `::` and `::1` are handled before), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`) addresses.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let low32 = Ipv4Addr::from_bits(bits as u32);
    match bits >> 32 {
        0 | 0xffff => return Some(low32),
        0x0064_ff9b_0000_0000_0000_0000 => return Some(low32),
        _ => {}
    }
    (bits >> 112 == 0x2002).then(|| Ipv4Addr::from_bits((bits >> 80) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    use AddressKind::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    /// Every refused range: its edges and a few addresses inside, with what a refusal calls them.
    const REFUSED: &[(&str, AddressKind)] = &[
        // IPv4 loopback.
        ("127.0.0.1", Loopback),
        ("127.0.0.0", Loopback),
        ("127.255.255.255", Loopback),
        ("127.1.2.3", Loopback),
        // RFC 1918.
        ("10.0.0.0", Private),
        ("10.0.0.5", Private),
        ("10.255.255.255", Private),
        ("172.16.0.0", Private),
        ("172.20.1.1", Private),
        ("172.31.255.255", Private),
        ("192.168.0.0", Private),
        ("192.168.1.1", Private),
        ("192.168.255.255", Private),
        // Link-local and the metadata services.
        ("169.254.0.0", LinkLocal),
        ("169.254.1.1", LinkLocal),
        ("169.254.255.255", LinkLocal),
        ("169.254.169.254", CloudMetadata),
        ("169.254.169.253", LinkLocal),
        ("100.100.100.200", CloudMetadata),
        // CGNAT.
        ("100.64.0.0", SharedAddressSpace),
        ("100.100.100.100", SharedAddressSpace),
        ("100.127.255.255", SharedAddressSpace),
        // "This network".
        ("0.0.0.0", Unspecified),
        ("0.1.2.3", Unspecified),
        ("0.255.255.255", Unspecified),
        // Multicast, broadcast.
        ("224.0.0.0", Multicast),
        ("224.0.0.251", Multicast),
        ("239.255.255.255", Multicast),
        ("255.255.255.255", Broadcast),
        // Documentation.
        ("192.0.2.0", Documentation),
        ("192.0.2.255", Documentation),
        ("198.51.100.7", Documentation),
        ("203.0.113.255", Documentation),
        // Benchmarking.
        ("198.18.0.0", Benchmarking),
        ("198.19.255.255", Benchmarking),
        // Reserved and special-purpose.
        ("240.0.0.0", Reserved),
        ("250.1.2.3", Reserved),
        ("255.255.255.254", Reserved),
        ("192.0.0.0", Reserved),
        ("192.0.0.8", Reserved),
        ("192.0.0.255", Reserved),
        ("192.88.99.1", Reserved),
        // IPv6 loopback and unspecified.
        ("::1", Loopback),
        ("::", Unspecified),
        // IPv6 link-local, unique-local, site-local, multicast.
        ("fe80::", LinkLocal),
        ("fe80::1", LinkLocal),
        ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal),
        ("fc00::", UniqueLocal),
        ("fd12:3456:789a::1", UniqueLocal),
        ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", UniqueLocal),
        ("fd00:ec2::254", CloudMetadata),
        ("fec0::1", Private),
        ("ff02::1", Multicast),
        ("ff0e::1", Multicast),
        // IPv6 documentation, benchmarking, IETF protocol assignments (Teredo among them).
        ("2001:db8::", Documentation),
        ("2001:db8:ffff::1", Documentation),
        ("3fff::1", Documentation),
        ("3fff:0fff:ffff::1", Documentation),
        ("2001:2::1", Benchmarking),
        ("2001::", Reserved),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Reserved),
        ("2001:1ff:ffff::1", Reserved),
        // IPv6 outside global unicast 2000::/3.
        ("100::1", Reserved),
        ("5f00::1", Reserved),
        ("4000::1", Reserved),
        ("1fff:ffff::1", Reserved),
        ("64:ff9b:1::a00:1", Reserved),
        ("::ffff:0:808:808", Reserved),
        // IPv4 inside IPv6: judged as the IPv4 address.
        ("::ffff:127.0.0.1", Loopback),
        ("::ffff:10.0.0.1", Private),
        ("::ffff:169.254.169.254", CloudMetadata),
        ("::ffff:0.0.0.0", Unspecified),
        ("::ffff:255.255.255.255", Broadcast),
        ("::127.0.0.1", Loopback),
        ("::192.168.0.1", Private),
        ("::0.0.0.2", Unspecified),
        ("64:ff9b::127.0.0.1", Loopback),
        ("64:ff9b::a9fe:a9fe", CloudMetadata),
        ("64:ff9b::10.1.2.3", Private),
        ("2002:7f00:1::1", Loopback),
        ("2002:a00:1::", Private),
        ("2002:a9fe:a9fe::1", CloudMetadata),
        ("2002:c0a8:101:1::1", Private),
    ];

    /// Public addresses, many just outside a refused range.
    const PUBLIC: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "93.184.215.14",
        "1.0.0.0",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "192.0.3.0",
        "192.88.98.255",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "198.51.99.255",
        "203.0.112.255",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001:82b::200e",
        "2001:200::1",
        "2001:db7:ffff::1",
        "2001:db9::1",
        "3ffe::1",
        "3fff:1000::1",
        "2000::1",
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::8.8.8.8",
        "2002:808:808::1",
    ];

    #[test]
    fn every_non_public_address_is_classified_with_its_kind() {
        let wrong: Vec<String> = REFUSED
            .iter()
            .filter(|&&(text, kind)| classify(ip(text)) != Some(kind))
            .map(|&(text, kind)| format!("{text}: {:?}, not {kind:?}", classify(ip(text))))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn public_addresses_are_not_classified() {
        let wrong: Vec<String> = PUBLIC
            .iter()
            .filter(|text| classify(ip(text)).is_some())
            .map(|text| format!("{text}: {:?}", classify(ip(text))))
            .collect();
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn every_non_public_address_is_refused_even_when_insecure_but_loopback() {
        for &(text, kind) in REFUSED {
            for insecure in [false, true] {
                let result = check_addrs(&[ip(text)], insecure);
                if insecure && kind == Loopback {
                    assert!(result.is_ok(), "{text} insecure: {result:?}");
                } else {
                    assert!(
                        matches!(result, Err(UrlRefusal::Address { address, kind: k })
                            if address == ip(text) && k == kind),
                        "{text} insecure={insecure}: {result:?}"
                    );
                }
            }
        }
        for text in PUBLIC {
            assert!(check_addrs(&[ip(text)], false).is_ok(), "{text}");
        }
    }

    #[test]
    fn the_metadata_address_is_refused_even_when_insecure() {
        for text in ["169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"] {
            let refusal = check_addrs(&[ip(text)], true).expect_err(text);
            assert!(
                matches!(
                    refusal,
                    UrlRefusal::Address {
                        kind: CloudMetadata,
                        ..
                    }
                ),
                "{text}: {refusal:?}"
            );
        }
    }

    #[test]
    fn every_address_must_pass_and_the_first_refused_is_named() {
        let refusal = check_addrs(&[ip("8.8.8.8"), ip("10.0.0.5"), ip("::1")], false)
            .expect_err("one is private");
        assert_eq!(
            refusal.to_string(),
            "the URL resolves to a private address (10.0.0.5)"
        );
        assert!(check_addrs(&[ip("8.8.8.8"), ip("2606:4700:4700::1111")], false).is_ok());
        assert!(matches!(check_addrs(&[], true), Err(UrlRefusal::NoAddress)));
    }

    #[test]
    fn refusals_read_as_problem_details() {
        let of = |text: &str| check_addrs(&[ip(text)], false).expect_err(text).to_string();
        assert_eq!(
            of("10.0.0.5"),
            "the URL resolves to a private address (10.0.0.5)"
        );
        assert_eq!(
            of("127.0.0.1"),
            "the URL resolves to a loopback address (127.0.0.1)"
        );
        assert_eq!(
            of("0.0.0.0"),
            "the URL resolves to an unspecified address (0.0.0.0)"
        );
        assert_eq!(
            of("169.254.169.254"),
            "the URL resolves to a cloud metadata address (169.254.169.254)"
        );
        assert_eq!(
            of("::ffff:127.0.0.1"),
            "the URL resolves to a loopback address (::ffff:127.0.0.1)"
        );
        assert_eq!(
            of("100.64.0.1"),
            "the URL resolves to a shared (carrier-grade NAT) address (100.64.0.1)"
        );
        assert_eq!(AddressKind::UniqueLocal.to_string(), "unique-local");
        assert_eq!(AddressKind::Unspecified.to_string(), "unspecified");
    }

    #[test]
    fn https_urls_with_a_public_or_named_host_are_accepted_on_any_port() {
        let target = check_url("https://hooks.example.com/orders?token=abc", false).expect("ok");
        assert_eq!(
            target.host(),
            &TargetHost::Domain("hooks.example.com".into())
        );
        assert_eq!(target.port(), 443);
        assert_eq!(
            target.as_str(),
            "https://hooks.example.com/orders?token=abc"
        );

        let target = check_url("HTTPS://Hooks.Example.COM:8443/x", false).expect("ok");
        assert_eq!(target.port(), 8443);
        assert_eq!(target.as_str(), "https://hooks.example.com:8443/x");

        let target = check_url("https://8.8.8.8/x", false).expect("ok");
        assert_eq!(target.host(), &TargetHost::Ip(ip("8.8.8.8")));

        let target = check_url("https://[2606:4700:4700::1111]:9000/", false).expect("ok");
        assert_eq!(target.host(), &TargetHost::Ip(ip("2606:4700:4700::1111")));
        assert_eq!(target.port(), 9000);

        let target = check_url("https://bücher.example/", false).expect("ok");
        assert_eq!(
            target.host(),
            &TargetHost::Domain("xn--bcher-kva.example".into())
        );
    }

    #[test]
    fn only_https_is_accepted_unless_insecure_targets_are_allowed() {
        for url in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "ws://hooks.example.com/",
            "file:///etc/passwd",
            "mailto:ops@example.com",
            "gopher://example.com/",
            "javascript:alert(1)",
        ] {
            let refusal = check_url(url, false).expect_err(url);
            assert!(
                matches!(refusal, UrlRefusal::Scheme { .. }),
                "{url}: {refusal:?}"
            );
        }
        assert_eq!(
            check_url("http://hooks.example.com/", false)
                .expect_err("http")
                .to_string(),
            "the URL's scheme is `http`; only https:// URLs are accepted"
        );
        let target = check_url("http://hooks.example.com/", true).expect("insecure");
        assert_eq!(target.port(), 80);
        assert_eq!(
            check_url("ftp://hooks.example.com/", true)
                .expect_err("ftp")
                .to_string(),
            "the URL's scheme is `ftp`; only https:// and http:// URLs are accepted"
        );
    }

    #[test]
    fn urls_with_credentials_are_refused() {
        for url in [
            "https://user@hooks.example.com/",
            "https://user:secret@hooks.example.com/",
            "https://:secret@hooks.example.com/",
            "https://8.8.8.8@127.0.0.1/",
        ] {
            let refusal = check_url(url, false).expect_err(url);
            assert!(
                matches!(refusal, UrlRefusal::Credentials),
                "{url}: {refusal:?}"
            );
        }
    }

    #[test]
    fn urls_without_a_host_or_not_urls_are_refused() {
        for url in [
            "",
            "hooks.example.com/x",
            "/webhooks",
            "https://",
            "https://[::1",
        ] {
            let refusal = check_url(url, false).expect_err(url);
            assert!(
                matches!(refusal, UrlRefusal::Invalid(_) | UrlRefusal::NoHost),
                "{url}: {refusal:?}"
            );
        }
        assert_eq!(
            check_url("/webhooks", false)
                .expect_err("relative")
                .to_string(),
            "the URL is not valid: relative URL without a base"
        );
    }

    #[test]
    fn urls_longer_than_2048_characters_are_refused() {
        let base = "https://hooks.example.com/";
        let at_limit = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(check_url(&at_limit, false).is_ok());
        // Punycode lengthens an internationalised name past the limit.
        let unicode = format!("https://{}.example/", "ü".repeat(60));
        let path = "a".repeat(MAX_URL_LEN - unicode.chars().count());
        assert!(matches!(
            check_url(&format!("{unicode}{path}"), false),
            Err(UrlRefusal::TooLong(n)) if n > MAX_URL_LEN
        ));
        let over = format!("{at_limit}a");
        let refusal = check_url(&over, false).expect_err("too long");
        assert_eq!(
            refusal.to_string(),
            "the URL is 2049 characters long; at most 2048 are accepted"
        );
    }

    #[test]
    fn a_literal_address_host_is_checked_in_every_spelling() {
        for (url, kind) in [
            ("https://127.0.0.1/", Loopback),
            ("https://127.1/", Loopback),
            ("https://0x7f.0.0.1/", Loopback),
            ("https://0177.0.0.1/", Loopback),
            ("https://2130706433/", Loopback),
            ("https://[::1]/", Loopback),
            ("https://[::ffff:127.0.0.1]/", Loopback),
            ("https://[::ffff:7f00:1]:8443/", Loopback),
            ("https://10.0.0.5/hook", Private),
            ("https://169.254.169.254/latest/meta-data/", CloudMetadata),
            ("https://[fd00:ec2::254]/", CloudMetadata),
            ("https://0.0.0.0:8080/", Unspecified),
            ("https://[64:ff9b::a00:5]/", Private),
            ("https://[fe80::1]/", LinkLocal),
        ] {
            let refusal = check_url(url, false).expect_err(url);
            assert!(
                matches!(refusal, UrlRefusal::Address { kind: k, .. } if k == kind),
                "{url}: {refusal:?}"
            );
        }
        // Insecure targets allow loopback (a local receiver), nothing else.
        assert!(check_url("http://127.0.0.1:9999/hook", true).is_ok());
        assert!(check_url("http://[::1]:9999/hook", true).is_ok());
        assert!(check_url("http://169.254.169.254/", true).is_err());
        assert!(check_url("http://192.168.1.10/", true).is_err());
    }

    fn target(url: &str) -> Target {
        check_url(url, true).expect("a valid URL")
    }

    fn socket(text: &str) -> SocketAddr {
        text.parse().expect("a socket address")
    }

    #[tokio::test]
    async fn a_resolved_public_name_gives_its_addresses_with_the_port_once_each() {
        let addrs = resolve_with(
            &target("https://hooks.example.com:8443/"),
            false,
            Duration::from_secs(1),
            |host, port| async move {
                assert_eq!((host.as_str(), port), ("hooks.example.com", 8443));
                Ok(vec![
                    socket("93.184.215.14:8443"),
                    socket("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443"),
                    socket("93.184.215.14:8443"),
                ])
            },
        )
        .await
        .expect("public");
        assert_eq!(
            addrs,
            [
                socket("93.184.215.14:8443"),
                socket("[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443")
            ]
        );
    }

    #[tokio::test]
    async fn a_name_with_one_private_address_among_public_ones_is_refused() {
        let refusal = resolve_with(
            &target("https://rebind.example.com/"),
            false,
            Duration::from_secs(1),
            |_, _| async { Ok(vec![socket("93.184.215.14:443"), socket("10.0.0.5:443")]) },
        )
        .await
        .expect_err("private");
        assert_eq!(
            refusal.to_string(),
            "the URL resolves to a private address (10.0.0.5)"
        );
        assert!(!refusal.is_resolution_failure());
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_insecure() {
        async fn loopback(_: String, _: u16) -> io::Result<Vec<SocketAddr>> {
            Ok(vec![socket("127.0.0.1:443"), socket("[::1]:443")])
        }
        let target = target("https://localhost.example.com/");
        assert!(matches!(
            resolve_with(&target, false, Duration::from_secs(1), loopback).await,
            Err(UrlRefusal::Address { kind: Loopback, .. })
        ));
        assert_eq!(
            resolve_with(&target, true, Duration::from_secs(1), loopback)
                .await
                .expect("insecure"),
            [socket("127.0.0.1:443"), socket("[::1]:443")]
        );
    }

    #[tokio::test]
    async fn failing_or_empty_resolutions_are_resolution_failures() {
        let target = target("https://nowhere.example.com/");
        let refusal = resolve_with(&target, false, Duration::from_secs(1), |_, _| async {
            Err(io::Error::other("no such host (resolver detail)"))
        })
        .await
        .expect_err("unresolved");
        assert!(refusal.is_resolution_failure());
        assert_eq!(
            refusal.to_string(),
            "the URL's host (nowhere.example.com) could not be resolved"
        );

        let refusal = resolve_with(&target, false, Duration::from_secs(1), |_, _| async {
            Ok(Vec::new())
        })
        .await
        .expect_err("empty");
        assert!(matches!(refusal, UrlRefusal::NoAddress));
        assert!(refusal.is_resolution_failure());
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolution_slower_than_the_timeout_is_refused() {
        let refusal = resolve_with(
            &target("https://slow.example.com/"),
            false,
            Duration::from_secs(2),
            |_, _| std::future::pending(),
        )
        .await
        .expect_err("timeout");
        assert!(refusal.is_resolution_failure());
        assert_eq!(
            refusal.to_string(),
            "the URL's host (slow.example.com) was not resolved within 2s"
        );
    }

    #[tokio::test]
    async fn a_literal_address_is_returned_without_a_lookup_and_checked_again() {
        async fn no_lookup(_: String, _: u16) -> io::Result<Vec<SocketAddr>> {
            Err(io::Error::other("an address is not looked up"))
        }
        assert_eq!(
            resolve_with(
                &target("https://8.8.8.8:8443/"),
                false,
                Duration::from_secs(1),
                no_lookup
            )
            .await
            .expect("public"),
            [socket("8.8.8.8:8443")]
        );
        // Accepted as an insecure target, then delivered without insecure targets allowed.
        assert!(matches!(
            resolve_with(
                &target("http://127.0.0.1:9000/"),
                false,
                Duration::from_secs(1),
                no_lookup
            )
            .await,
            Err(UrlRefusal::Address { kind: Loopback, .. })
        ));
    }

    #[tokio::test]
    async fn localhost_resolves_through_the_system_resolver_to_loopback() {
        let target = target("http://localhost:9000/hook");
        let refusal = resolve_and_check(&target, false, Duration::from_secs(5))
            .await
            .expect_err("loopback");
        assert!(
            matches!(refusal, UrlRefusal::Address { kind: Loopback, .. }),
            "{refusal:?}"
        );
        let addrs = resolve_and_check(&target, true, Duration::from_secs(5))
            .await
            .expect("insecure");
        assert!(!addrs.is_empty());
        assert!(
            addrs
                .iter()
                .all(|addr| addr.ip().is_loopback() && addr.port() == 9000)
        );
    }
}
