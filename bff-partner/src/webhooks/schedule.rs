//! When a delivery is retried, when it has failed for good, and what an attempt's answer means.
//!
//! The policy:
//! - The first attempt goes at once. After attempt `n` fails, attempt `n + 1` waits the `n`-th
//!   delay of the [`Schedule`], by default ([`DEFAULT_DELAYS`]) 5 s, 1 min, 5 min, 30 min, 2 h,
//!   8 h, 24 h: 8 attempts over about 35 hours. A configured schedule is any non-empty list of
//!   positive delays (`["10s", "1m"]` in configuration).
//! - Each delay is jittered by up to ±[`JITTER_PERCENT`] % (uniformly: 5 s becomes 4 to 6 s), so
//!   the deliveries that failed together during a receiver's outage do not all come back at
//!   the same instant.
//! - An attempt ([`AttemptResult`], judged by [`Schedule::outcome`]) is
//!   [`Delivered`](Outcome::Delivered) on any `2xx`. `410 Gone` is [`Outcome::Gone`]: the
//!   receiver wants no more, the endpoint is disabled at once (and the delivery not retried).
//!   Anything else is retried: another status (`3xx` too: redirects are not followed), a
//!   timeout, no connection (DNS, a refused address, TLS, a reset).
//! - On `429 Too Many Requests` and `503 Service Unavailable`, a `Retry-After` header
//!   ([`parse_retry_after`]: seconds or an HTTP date) can make the wait *longer* than the
//!   schedule's, up to [`MAX_RETRY_AFTER`] (24 h), never shorter: a receiver cannot make us retry
//!   faster than the schedule, nor park a delivery for days. It still counts as an attempt, so
//!   the number of attempts stays bounded. An unreadable `Retry-After` is ignored.
//! - When the schedule is exhausted, the delivery is [`Outcome::Failed`] (shown in the delivery
//!   log, redeliverable by hand). If no delivery to the endpoint succeeded since this one's
//!   first attempt, the endpoint has failed for a whole schedule and is disabled
//!   ([`disables_endpoint`]); a partner re-enables it.
//!
//! Randomness is passed in (`rng`), so tests are deterministic with a seeded `StdRng`; so is
//! the current time, for `Retry-After` dates.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use rand::Rng;
use serde::{Deserialize, Serialize, Serializer};

/// The default delays before attempts 2 to 8: 5 s, 1 min, 5 min, 30 min, 2 h, 8 h, 24 h.
pub const DEFAULT_DELAYS: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(8 * 3600),
    Duration::from_secs(24 * 3600),
];

/// How far, in percent, a scheduled delay may be moved either way at random.
pub const JITTER_PERCENT: u64 = 20;

/// The longest wait a `Retry-After` header can ask for; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The retry schedule: the delays between attempts (configured as human durations, `"5s"`,
/// `"2h"`), validated non-empty and positive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<humantime_serde::Serde<Duration>>")]
pub struct Schedule {
    /// The wait after attempt `n` (1-based) is `delays[n - 1]`; after the last, the delivery has
    /// failed.
    delays: Vec<Duration>,
}

/// Why a configured schedule is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No delay at all: deliveries would never be retried.
    #[error("the retry schedule needs at least one delay")]
    Empty,
    /// A delay of zero (1-based position): retries would hammer the receiver.
    #[error("delay {0} of the retry schedule is zero; every delay must be positive")]
    ZeroDelay(usize),
}

/// What came back from one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult<'a> {
    /// The receiver answered.
    Response {
        /// Its status.
        status: StatusCode,
        /// Its `Retry-After` header, if it has one and it is text.
        retry_after: Option<&'a str>,
    },
    /// No answer within the delivery timeout.
    Timeout,
    /// No answer at all: the name did not resolve, the target address was refused (the SSRF
    /// guard), the connection was refused or reset, TLS failed.
    ConnectionFailed,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered (`2xx`): done.
    Delivered,
    /// `410 Gone`: disable the endpoint; the delivery is not retried.
    Gone,
    /// Failed, to be attempted again after this long.
    Retry(Duration),
    /// Failed, and the schedule is exhausted: the delivery has failed (see
    /// [`disables_endpoint`] for its endpoint).
    Failed,
}

impl Default for Schedule {
    /// [`DEFAULT_DELAYS`].
    fn default() -> Self {
        Self {
            delays: DEFAULT_DELAYS.to_vec(),
        }
    }
}

impl Schedule {
    /// A schedule of `delays` (the wait after attempt 1, after attempt 2, …): at least one, each
    /// positive.
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(zero) = delays.iter().position(Duration::is_zero) {
            return Err(ScheduleError::ZeroDelay(zero + 1));
        }
        Ok(Self { delays })
    }

    /// The delays, unjittered.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets: the first, then one after each delay.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The wait before the next attempt once `attempts` attempts were made (the last one
    /// failed): zero before the first, the jittered `attempts`-th delay after that, `None` when
    /// the schedule is exhausted (the delivery has failed).
    pub fn next_delay(&self, attempts: u32, rng: &mut impl Rng) -> Option<Duration> {
        let Some(index) = attempts.checked_sub(1) else {
            return Some(Duration::ZERO);
        };
        let delay = *self.delays.get(usize::try_from(index).ok()?)?;
        Some(jittered(delay, rng))
    }

    /// The wait before the next attempt once `attempts` attempts were made and the last was
    /// answered with `status` and `retry_after` (the `Retry-After` header's text), at `now`.
    ///
    /// On 429 and 503, a `Retry-After` longer than [`Schedule::next_delay`] wins, cut to
    /// [`MAX_RETRY_AFTER`]; otherwise (a shorter or unreadable one, or another status) the
    /// schedule's. `None` when the schedule is exhausted, whatever `Retry-After` says.
    pub fn retry_after(
        &self,
        attempts: u32,
        status: StatusCode,
        retry_after: Option<&str>,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let scheduled = self.next_delay(attempts, rng)?;
        if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
            return Some(scheduled);
        }
        let asked = retry_after
            .and_then(|value| parse_retry_after(value, now))
            .map(|asked| asked.min(MAX_RETRY_AFTER));
        Some(asked.map_or(scheduled, |asked| asked.max(scheduled)))
    }

    /// What to do after attempt number `attempts` (1-based) got `result`, at `now`.
    pub fn outcome(
        &self,
        attempts: u32,
        result: &AttemptResult<'_>,
        now: SystemTime,
        rng: &mut impl Rng,
    ) -> Outcome {
        let delay = match *result {
            AttemptResult::Response { status, .. } if status.is_success() => {
                return Outcome::Delivered;
            }
            AttemptResult::Response { status, .. } if status == StatusCode::GONE => {
                return Outcome::Gone;
            }
            AttemptResult::Response {
                status,
                retry_after,
            } => self.retry_after(attempts, status, retry_after, now, rng),
            AttemptResult::Timeout | AttemptResult::ConnectionFailed => {
                self.next_delay(attempts, rng)
            }
        };
        delay.map_or(Outcome::Failed, Outcome::Retry)
    }
}

impl TryFrom<Vec<humantime_serde::Serde<Duration>>> for Schedule {
    type Error = ScheduleError;

    fn try_from(delays: Vec<humantime_serde::Serde<Duration>>) -> Result<Self, Self::Error> {
        Self::new(
            delays
                .into_iter()
                .map(humantime_serde::Serde::into_inner)
                .collect(),
        )
    }
}

impl Serialize for Schedule {
    /// As configured: a list of human durations (`["5s", "1m", …]`).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.delays.iter().map(humantime_serde::Serde::from))
    }
}

/// `delay` moved at random by up to ±[`JITTER_PERCENT`] %, uniformly, to the nanosecond (a delay
/// beyond 2^64 ns, 584 years, counts as 584 years).
fn jittered(delay: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
    let spread = nanos / 100 * JITTER_PERCENT + nanos % 100 * JITTER_PERCENT / 100;
    Duration::from_nanos(nanos - spread + rng.random_range(0..=2 * spread))
}

/// The wait a `Retry-After` header's `value` asks for, at `now`: delta-seconds (`120`) or an
/// HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`, or the obsolete RFC 850 and asctime forms),
/// zero for a date already past. `None` when it is neither.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim_matches([' ', '\t']);
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is "very long": capped by the caller.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a delivery that just ended [`Outcome::Failed`] disables its endpoint: when no
/// delivery to the endpoint succeeded since this one's first attempt (`first_attempt_at`), the
/// endpoint has failed for a whole schedule. `last_success_at` is the endpoint's most recent
/// [`Outcome::Delivered`], if any.
pub fn disables_endpoint(
    first_attempt_at: SystemTime,
    last_success_at: Option<SystemTime>,
) -> bool {
    last_success_at.is_none_or(|success| success < first_attempt_at)
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(22)
    }

    /// 2015-10-21T07:28:00Z, the date of RFC 9110's `Retry-After` example.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + secs(1_445_412_480)
    }

    fn response(status: u16, retry_after: Option<&str>) -> AttemptResult<'_> {
        AttemptResult::Response {
            status: StatusCode::from_u16(status).expect("a status"),
            retry_after,
        }
    }

    #[test]
    fn the_default_schedule_is_5s_1m_5m_30m_2h_8h_24h_for_8_attempts() {
        let schedule = Schedule::default();
        assert_eq!(
            schedule.delays(),
            [
                secs(5),
                secs(60),
                secs(300),
                secs(1800),
                secs(7200),
                secs(28_800),
                secs(86_400)
            ]
        );
        assert_eq!(schedule.max_attempts(), 8);
    }

    #[test]
    fn the_first_attempt_is_immediate_and_each_retry_is_its_delay_within_20_percent() {
        let schedule = Schedule::default();
        let mut rng = rng();
        assert_eq!(schedule.next_delay(0, &mut rng), Some(Duration::ZERO));
        for _ in 0..200 {
            for (attempts, &delay) in (1..).zip(schedule.delays()) {
                let got = schedule
                    .next_delay(attempts, &mut rng)
                    .expect("in schedule");
                assert!(
                    got >= delay.mul_f64(0.8) && got <= delay.mul_f64(1.2),
                    "after attempt {attempts}: {got:?} for {delay:?}"
                );
            }
        }
    }

    #[test]
    fn after_the_last_delay_the_schedule_is_exhausted() {
        let schedule = Schedule::default();
        let mut rng = rng();
        assert!(schedule.next_delay(7, &mut rng).is_some());
        assert_eq!(schedule.next_delay(8, &mut rng), None);
        assert_eq!(schedule.next_delay(u32::MAX, &mut rng), None);
    }

    #[test]
    fn jitter_is_the_same_for_the_same_seed_and_spreads_over_the_range() {
        let schedule = Schedule::default();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=7)
                .map(|n| schedule.next_delay(n, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));

        // Over many draws, both ends of 4 s to 6 s are reached, and the mean is near 5 s.
        let mut rng = rng();
        let draws: Vec<Duration> = (0..2000)
            .map(|_| schedule.next_delay(1, &mut rng).expect("delay"))
            .collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(4_100)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(5_900)));
        let mean = draws.iter().sum::<Duration>() / 2000;
        assert!(mean > Duration::from_millis(4_900) && mean < Duration::from_millis(5_100));
    }

    #[test]
    fn tiny_delays_are_jittered_without_overflow_or_underflow() {
        let schedule = Schedule::new(vec![
            Duration::from_nanos(1),
            Duration::from_millis(10),
            Duration::MAX,
        ])
        .expect("valid");
        let mut rng = rng();
        assert_eq!(
            schedule.next_delay(1, &mut rng),
            Some(Duration::from_nanos(1))
        );
        let ten = schedule.next_delay(2, &mut rng).expect("delay");
        assert!(ten >= Duration::from_millis(8) && ten <= Duration::from_millis(12));
        // Delays beyond u64 nanoseconds (584 years) are taken as 584 years.
        let huge = schedule.next_delay(3, &mut rng).expect("delay");
        assert!(huge > secs(400 * 365 * 86_400) && huge < secs(700 * 365 * 86_400));
    }

    #[test]
    fn a_configured_schedule_is_non_empty_and_positive() {
        assert_eq!(Schedule::new(vec![]), Err(ScheduleError::Empty));
        assert_eq!(
            Schedule::new(vec![secs(1), Duration::ZERO]),
            Err(ScheduleError::ZeroDelay(2))
        );
        let schedule = Schedule::new(vec![secs(1), secs(2)]).expect("valid");
        assert_eq!(schedule.max_attempts(), 3);
    }

    #[test]
    fn a_schedule_is_configured_as_human_durations() {
        let schedule: Schedule =
            serde_json::from_str(r#"["100ms", "5s", "1m", "2h", "1day"]"#).expect("a schedule");
        assert_eq!(
            schedule.delays(),
            [
                Duration::from_millis(100),
                secs(5),
                secs(60),
                secs(7200),
                secs(86_400)
            ]
        );
        assert_eq!(
            serde_json::to_string(&Schedule::default()).expect("json"),
            r#"["5s","1m","5m","30m","2h","8h","1day"]"#
        );

        let empty = serde_json::from_str::<Schedule>("[]").expect_err("empty");
        assert!(empty.to_string().contains("at least one delay"), "{empty}");
        let zero = serde_json::from_str::<Schedule>(r#"["5s", "0s"]"#).expect_err("zero");
        assert!(zero.to_string().contains("delay 2"), "{zero}");
        assert!(serde_json::from_str::<Schedule>(r#"["soon"]"#).is_err());
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        for (value, expected) in [
            ("120", Some(secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            ("\t7", Some(secs(7))),
            ("99999999999999999999999", Some(secs(u64::MAX))),
            ("Wed, 21 Oct 2015 07:28:00 GMT", Some(Duration::ZERO)),
            ("Wed, 21 Oct 2015 07:30:00 GMT", Some(secs(120))),
            ("Wednesday, 21-Oct-15 08:28:00 GMT", Some(secs(3600))),
            ("Wed Oct 21 07:29:00 2015", Some(secs(60))),
            ("Tue, 20 Oct 2015 07:28:00 GMT", Some(Duration::ZERO)),
            ("", None),
            ("-5", None),
            ("1.5", None),
            ("+5", None),
            ("5s", None),
            ("soon", None),
            ("Wed, 21 Oct 2015 07:28:00 CET", None),
        ] {
            assert_eq!(parse_retry_after(value, now()), expected, "{value:?}");
        }
    }

    #[test]
    fn retry_after_on_429_or_503_lengthens_the_wait_up_to_24h() {
        let schedule = Schedule::default();
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let after =
                |attempts, value| schedule.retry_after(attempts, status, value, now(), &mut rng());
            // Longer than the scheduled ~5 s: honoured, as seconds or as a date.
            assert_eq!(after(1, Some("600")), Some(secs(600)));
            assert_eq!(
                after(1, Some("Wed, 21 Oct 2015 07:38:00 GMT")),
                Some(secs(600))
            );
            // Longer than 24 h: cut to 24 h.
            assert_eq!(after(1, Some("1000000")), Some(MAX_RETRY_AFTER));
            // Shorter than the schedule, unreadable or absent: the schedule's.
            let scheduled = schedule.next_delay(2, &mut rng());
            assert_eq!(after(2, Some("1")), scheduled);
            assert_eq!(after(2, Some("later")), scheduled);
            assert_eq!(after(2, None), scheduled);
            // Exhausted: given up, whatever the header says.
            assert_eq!(after(8, Some("60")), None);
        }
    }

    #[test]
    fn retry_after_is_ignored_on_other_statuses() {
        let schedule = Schedule::default();
        for status in [500, 502, 504, 404, 301] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(
                schedule.retry_after(1, status, Some("600"), now(), &mut rng()),
                schedule.next_delay(1, &mut rng()),
                "{status}"
            );
        }
    }

    #[test]
    fn any_2xx_is_delivered() {
        let schedule = Schedule::default();
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(
                schedule.outcome(1, &response(status, None), now(), &mut rng()),
                Outcome::Delivered,
                "{status}"
            );
        }
        // Even on the last attempt.
        assert_eq!(
            schedule.outcome(8, &response(200, None), now(), &mut rng()),
            Outcome::Delivered
        );
    }

    #[test]
    fn gone_disables_the_endpoint_at_once() {
        let schedule = Schedule::default();
        for attempts in [1, 8] {
            assert_eq!(
                schedule.outcome(attempts, &response(410, None), now(), &mut rng()),
                Outcome::Gone
            );
        }
    }

    #[test]
    fn other_statuses_timeouts_and_connection_failures_are_retried_on_the_schedule() {
        let schedule = Schedule::default();
        let expected = Outcome::Retry(schedule.next_delay(3, &mut rng()).expect("delay"));
        for result in [
            response(500, None),
            response(502, None),
            response(404, None),
            response(400, None),
            response(301, None),
            response(100, None),
            response(500, Some("600")),
            AttemptResult::Timeout,
            AttemptResult::ConnectionFailed,
        ] {
            assert_eq!(
                schedule.outcome(3, &result, now(), &mut rng()),
                expected,
                "{result:?}"
            );
        }
        assert_eq!(
            schedule.outcome(3, &response(503, Some("7200")), now(), &mut rng()),
            Outcome::Retry(secs(7200))
        );
    }

    #[test]
    fn a_failure_after_the_last_attempt_fails_the_delivery() {
        let schedule = Schedule::new(vec![secs(1), secs(2)]).expect("valid");
        for result in [
            response(500, None),
            response(429, Some("60")),
            AttemptResult::Timeout,
            AttemptResult::ConnectionFailed,
        ] {
            assert!(matches!(
                schedule.outcome(2, &result, now(), &mut rng()),
                Outcome::Retry(_)
            ));
            assert_eq!(
                schedule.outcome(3, &result, now(), &mut rng()),
                Outcome::Failed,
                "{result:?}"
            );
        }
    }

    #[test]
    fn a_receiver_failing_twice_then_succeeding_gets_three_attempts() {
        let schedule = Schedule::new(vec![Duration::from_millis(10), Duration::from_millis(20)])
            .expect("valid");
        let answers = [
            response(500, None),
            AttemptResult::Timeout,
            response(204, None),
        ];
        let mut rng = rng();
        let outcomes: Vec<Outcome> = (1..)
            .zip(&answers)
            .map(|(attempts, answer)| schedule.outcome(attempts, answer, now(), &mut rng))
            .collect();
        assert!(matches!(
            outcomes[..],
            [Outcome::Retry(_), Outcome::Retry(_), Outcome::Delivered]
        ));
    }

    #[test]
    fn an_endpoint_is_disabled_only_when_nothing_succeeded_during_the_failed_delivery() {
        let start = now();
        assert!(disables_endpoint(start, None));
        assert!(disables_endpoint(start, Some(start - secs(1))));
        assert!(!disables_endpoint(start, Some(start)));
        assert!(!disables_endpoint(start, Some(start + secs(3600))));
    }
}
