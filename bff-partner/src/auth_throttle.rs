//! Throttling failed authentication per client address, so API keys cannot be guessed at speed.
//!
//! Each client address has a budget of failed authentications (requests with an unknown key):
//! `gateway.auth_failure_limit.burst` at once, one more per `refill_every`. Once it is spent,
//! every request from the address is refused with 429 and `Retry-After` *before its key is looked
//! at*, so a throttled guesser cannot tell a right key from a wrong one. Requests with a known key
//! cost nothing, and neither do requests without a key (they guess nothing); a successful
//! authentication does not refill the budget either.
//!
//! The budget is a GCRA (the token bucket of [`crate::rate_limit`] kept as one instant per
//! address): each failure pushes the address's `clear_at` one `refill_every` further into the
//! future (from now at the earliest), and an address is throttled while `clear_at` is more than
//! `(burst - 1) × refill_every` away. That bucket is not reused as is because this one must be
//! consulted before the key is known and charged only after it proved unknown, and must bound its
//! memory against addresses chosen by clients.
//!
//! **The client address** ([`ThrottleKey`]):
//! - by default, the peer of the TCP connection, which the server puts in every request's
//!   extensions as `ConnectInfo<SocketAddr>`;
//! - with `gateway.client_ip_header` (e.g. `x-forwarded-for`), the rightmost address of that
//!   header, the one the nearest proxy saw (what a client writes to its left is ignored); the peer
//!   when the header is missing or not an address. Set it only behind a proxy that always sets or
//!   appends the header, or clients choose their own address;
//! - IPv6 addresses count by their /64 (what one subscriber usually gets), IPv4-mapped IPv6
//!   addresses as IPv4;
//! - a request whose peer is not known (a server that does not provide `ConnectInfo`, such as a
//!   test calling the router directly) counts as one shared client, `unknown`.
//!
//! Behind a proxy without `client_ip_header`, every client shares the proxy's address and so one
//! budget: a guesser there blocks everyone behind that proxy for a while. That is the price of
//! refusing before the key is checked.
//!
//! **Memory** is bounded by `max_addresses` entries (an address and an instant each). An entry
//! whose failures are all forgiven is worth nothing and is dropped when room is needed; if every
//! entry is still indebted, the sixteenth of them closest to being forgiven (the fullest buckets)
//! is forgotten at once, so each eviction's scan is paid for by many insertions. Forgetting an
//! address only ever gives it back its full budget.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use axum::extract::ConnectInfo;
use http::{HeaderName, request::Parts};
use tokio::time::Instant;

use crate::config::{AuthFailureLimitConfig, PartnerConfig};

/// Whose failures are counted together: one client address (an IPv6 /64), or every request whose
/// address is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// An IPv4 address, or the first 64 bits of an IPv6 address (the rest zero).
    Address(IpAddr),
    /// No address known: one budget shared by all such requests.
    Unknown,
}

impl ThrottleKey {
    /// The key of `address`.
    fn of(address: IpAddr) -> Self {
        Self::Address(match address {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
            },
        })
    }
}

impl fmt::Display for ThrottleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(IpAddr::V6(block)) => write!(f, "{block}/64"),
            Self::Address(address) => address.fmt(f),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The failed-authentication budgets of client addresses.
#[derive(Debug)]
pub struct AuthThrottle {
    /// One failure is forgiven per this much time.
    interval: Duration,
    /// How far in the future an address's `clear_at` may be without it being throttled:
    /// `(burst - 1) × interval`.
    tolerance: Duration,
    /// Most addresses tracked at once.
    max_addresses: usize,
    /// Where a proxy puts the client's address (`gateway.client_ip_header`), if one does.
    client_ip_header: Option<HeaderName>,
    /// Address → when all its failures are forgiven. Entries in the past are as good as absent.
    clear_at: Mutex<HashMap<ThrottleKey, Instant>>,
}

impl AuthThrottle {
    /// The budgets `config` describes (`auth_failure_limit`, `client_ip_header`), all full.
    pub fn new(config: &PartnerConfig) -> Self {
        let AuthFailureLimitConfig {
            burst,
            refill_every,
            max_addresses,
        } = config.auth_failure_limit;
        Self {
            interval: refill_every,
            tolerance: refill_every.saturating_mul(burst.saturating_sub(1)),
            max_addresses: max_addresses.max(1),
            // Validated with the configuration; an invalid name cannot get this far.
            client_ip_header: config
                .client_ip_header
                .as_deref()
                .and_then(|name| HeaderName::from_bytes(name.as_bytes()).ok()),
            clear_at: Mutex::new(HashMap::new()),
        }
    }

    /// Whose budget the request spends: see the module documentation.
    pub fn key(&self, parts: &Parts) -> ThrottleKey {
        let forwarded = self
            .client_ip_header
            .as_ref()
            .and_then(|name| parts.headers.get_all(name).iter().next_back())
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.rsplit(',').next())
            .and_then(parse_address);
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| peer.ip())
        };
        forwarded
            .or_else(peer)
            .map_or(ThrottleKey::Unknown, ThrottleKey::of)
    }

    /// `Err(retry_after)` when `key` has spent its budget: how long until one failure is
    /// forgiven. Takes nothing.
    pub fn check(&self, key: ThrottleKey) -> Result<(), Duration> {
        let now = Instant::now();
        let Some(&clear_at) = self.locked().get(&key) else {
            return Ok(());
        };
        let debt = clear_at.saturating_duration_since(now);
        match debt.checked_sub(self.tolerance) {
            Some(over) if !over.is_zero() => Err(over),
            _ => Ok(()),
        }
    }

    /// Records a failed authentication of `key`. Whether this failure spent the budget (the
    /// address's next requests are refused); logged once when it does.
    pub fn charge(&self, key: ThrottleKey) -> bool {
        let now = Instant::now();
        let mut clear_at = self.locked();
        if !clear_at.contains_key(&key) && clear_at.len() >= self.max_addresses {
            self.make_room(&mut clear_at, now);
        }
        let entry = clear_at.entry(key).or_insert(now);
        *entry = (*entry).max(now) + self.interval;
        let spent = entry.saturating_duration_since(now) > self.tolerance;
        let just_spent =
            spent && entry.saturating_duration_since(now) <= self.tolerance + self.interval;
        if just_spent {
            tracing::warn!(
                client = %key,
                "too many unknown API keys: requests from this client are refused for a while"
            );
        }
        spent
    }

    /// How many addresses are tracked (forgiven ones included until room is needed), for tests
    /// and metrics.
    pub fn tracked(&self) -> usize {
        self.locked().len()
    }

    /// Drops the forgiven entries, then, if still full, the sixteenth of the entries closest to
    /// being forgiven (at least one).
    fn make_room(&self, clear_at: &mut HashMap<ThrottleKey, Instant>, now: Instant) {
        clear_at.retain(|_, until| *until > now);
        if clear_at.len() < self.max_addresses {
            return;
        }
        let count = (self.max_addresses / 16).max(1);
        let mut entries: Vec<(Instant, ThrottleKey)> =
            clear_at.iter().map(|(key, until)| (*until, *key)).collect();
        entries.select_nth_unstable_by_key(count - 1, |(until, _)| *until);
        for (_, key) in &entries[..count] {
            clear_at.remove(key);
        }
    }

    /// The map, even if a panicking thread poisoned it (it holds nothing a panic can corrupt).
    fn locked(&self) -> MutexGuard<'_, HashMap<ThrottleKey, Instant>> {
        self.clear_at.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`).
fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|address| address.ip()))
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn throttle(burst: u32, max_addresses: usize, header: Option<&str>) -> AuthThrottle {
        AuthThrottle::new(&PartnerConfig {
            auth_failure_limit: AuthFailureLimitConfig {
                burst,
                refill_every: Duration::from_secs(2),
                max_addresses,
            },
            client_ip_header: header.map(str::to_owned),
            ..PartnerConfig::default()
        })
    }

    fn address(text: &str) -> ThrottleKey {
        ThrottleKey::of(text.parse().expect("an address"))
    }

    fn parts(peer: Option<&str>, forwarded: &[&str]) -> Parts {
        let mut request = Request::builder();
        for value in forwarded {
            request = request.header("x-forwarded-for", *value);
        }
        let (mut parts, ()) = request.body(()).expect("request").into_parts();
        if let Some(peer) = peer {
            parts
                .extensions
                .insert(ConnectInfo(peer.parse::<SocketAddr>().expect("peer")));
        }
        parts
    }

    #[tokio::test(start_paused = true)]
    async fn the_burst_of_failures_is_allowed_then_one_per_interval() {
        let throttle = throttle(3, 10, None);
        let client = address("192.0.2.1");
        for _ in 0..2 {
            assert_eq!(throttle.check(client), Ok(()));
            assert!(!throttle.charge(client));
        }
        assert_eq!(throttle.check(client), Ok(()));
        assert!(
            throttle.charge(client),
            "the third failure spends the budget"
        );
        assert_eq!(throttle.check(client), Err(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(throttle.check(client), Err(Duration::from_millis(1500)));
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(throttle.check(client), Ok(()), "one failure forgiven");
        assert!(throttle.charge(client));
        assert!(throttle.check(client).is_err());
        // Others are unaffected.
        assert_eq!(throttle.check(address("192.0.2.2")), Ok(()));
        // Fully forgiven after burst × interval.
        tokio::time::advance(Duration::from_secs(6)).await;
        for _ in 0..2 {
            assert!(!throttle.charge(client));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded_forgetting_forgiven_then_least_indebted_addresses() {
        let throttle = throttle(5, 32, None);
        let indebted = address("198.51.100.1");
        for _ in 0..5 {
            throttle.charge(indebted);
        }
        for n in 0..31_u8 {
            throttle.charge(address(&format!("192.0.2.{n}")));
        }
        assert_eq!(throttle.tracked(), 32);
        // Full of indebted addresses: the two (32 / 16) closest to forgiveness go.
        throttle.charge(address("203.0.113.1"));
        assert_eq!(throttle.tracked(), 31);
        assert!(
            throttle.check(indebted).is_err(),
            "the most indebted is kept"
        );
        for n in 0..1000_u32 {
            throttle.charge(ThrottleKey::of(IpAddr::V4(n.into())));
            assert!(throttle.tracked() <= 32);
        }
        assert!(throttle.check(indebted).is_err());

        // Forgiven entries are dropped first, all at once.
        let throttle = self::throttle(5, 4, None);
        for n in 0..4_u8 {
            throttle.charge(address(&format!("192.0.2.{n}")));
        }
        tokio::time::advance(Duration::from_secs(60)).await;
        throttle.charge(address("203.0.113.2"));
        assert_eq!(throttle.tracked(), 1);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_bit_prefix() {
        assert_eq!(address("2001:db8:1:2::1"), address("2001:db8:1:2:ffff::9"));
        assert_ne!(address("2001:db8:1:2::1"), address("2001:db8:1:3::1"));
        assert_eq!(address("::ffff:192.0.2.1"), address("192.0.2.1"));
        assert_eq!(address("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(ThrottleKey::Unknown.to_string(), "unknown");
    }

    #[test]
    fn the_client_is_the_peer_unless_a_proxy_header_is_configured() {
        let direct = throttle(3, 10, None);
        let peer = Some("192.0.2.1:5000");
        assert_eq!(
            direct.key(&parts(peer, &["203.0.113.7"])),
            address("192.0.2.1")
        );
        assert_eq!(direct.key(&parts(None, &[])), ThrottleKey::Unknown);

        let proxied = throttle(3, 10, Some("X-Forwarded-For"));
        let cases: [(&[&str], &str); 7] = [
            (&["203.0.113.7"][..], "203.0.113.7"),
            (&["198.51.100.9, 203.0.113.7"], "203.0.113.7"),
            (&["198.51.100.9", "10.0.0.1,203.0.113.7 "], "203.0.113.7"),
            (&["203.0.113.7:443"], "203.0.113.7"),
            (&["[2001:db8::1]:443"], "2001:db8::"),
            // Not an address: the peer.
            (&["203.0.113.7, unknown"], "192.0.2.1"),
            (&[], "192.0.2.1"),
        ];
        for (forwarded, expected) in cases {
            assert_eq!(
                proxied.key(&parts(peer, forwarded)),
                address(expected),
                "{forwarded:?}"
            );
        }
        assert_eq!(proxied.key(&parts(None, &["junk"])), ThrottleKey::Unknown);
    }
}
