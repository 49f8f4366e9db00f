//! What a webhook says: its event types, the ones an endpoint subscribes to, and the body sent.
//!
//! The policy:
//! - The event types ([`EventType`]) are `order.created`, `order.status_changed` and `ping`. An
//!   endpoint subscribes to a non-empty set of the first two ([`EventSet::parse`]); `ping` is
//!   sent only when the partner tests the endpoint, whatever it subscribes to, so it cannot be
//!   subscribed to. An unknown name is refused with the list of the allowed ones.
//! - The body ([`Envelope`]) is the Standard Webhooks envelope, one JSON object:
//!   `{"type": …, "timestamp": …, "data": {…}}`, where `timestamp` is when the event happened
//!   (RFC 3339, UTC, `Z`), not when the attempt is made (that is the `webhook-timestamp`
//!   header), and `data` is an object: for order events, the order as `/v2` shows it (with its
//!   `version`, so a receiver can drop an older state arriving after a newer one).
//! - The body is serialized deterministically ([`Envelope::to_body`]): compact, fields in the
//!   order `type`, `timestamp`, `data`, object keys inside `data` sorted (serde_json's map is
//!   ordered by key). The bytes are made once per delivery and every attempt sends (and signs)
//!   the same bytes: store the body, not the envelope.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use time::{OffsetDateTime, UtcOffset};

/// What happened, as the `type` of a webhook and the names an endpoint subscribes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    /// A partner's order was placed.
    #[serde(rename = "order.created")]
    OrderCreated,
    /// A partner's order moved to another status (confirmed, shipped, cancelled, …).
    #[serde(rename = "order.status_changed")]
    OrderStatusChanged,
    /// The partner asked for a test delivery; `data` is empty.
    #[serde(rename = "ping")]
    Ping,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 3] = [Self::OrderCreated, Self::OrderStatusChanged, Self::Ping];

    /// The event types an endpoint may subscribe to.
    pub const SUBSCRIBABLE: [EventType; 2] = [Self::OrderCreated, Self::OrderStatusChanged];

    /// The type's name, as in the body and in an endpoint's `events`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OrderCreated => "order.created",
            Self::OrderStatusChanged => "order.status_changed",
            Self::Ping => "ping",
        }
    }

    /// Whether an endpoint may subscribe to it (all but `ping`).
    pub fn is_subscribable(self) -> bool {
        Self::SUBSCRIBABLE.contains(&self)
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = EventsError;

    /// The type named `name` (exactly, case included).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|event| event.as_str() == name)
            .ok_or_else(|| EventsError::Unknown(name.to_owned()))
    }
}

/// The event types an endpoint subscribes to: at least one, each subscribable, without
/// duplicates. Serialized as a list of names in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct EventSet {
    /// The types; ordered, so the set always serializes the same.
    events: BTreeSet<EventType>,
}

/// Why an endpoint's `events` are refused. The message suits a 422 problem's `detail` and lists
/// the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventsError {
    /// No event type at all.
    #[error("`events` needs at least one event type; allowed: {}", allowed())]
    Empty,
    /// A name that is no event type (as given, cut to 64 characters in the message).
    #[error("unknown event type `{}`; allowed: {}", shown(.0), allowed())]
    Unknown(String),
    /// An event type that is sent without a subscription (`ping`).
    #[error(
        "`{}` cannot be subscribed to: it is sent when the endpoint is tested; allowed: {}",
        .0,
        allowed()
    )]
    NotSubscribable(EventType),
}

/// The subscribable names, as errors list them.
fn allowed() -> String {
    EventType::SUBSCRIBABLE.map(EventType::as_str).join(", ")
}

/// `name` cut to 64 characters, so an error does not echo a huge input.
fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &name[..cut]),
        None => name.to_owned(),
    }
}

impl EventSet {
    /// The set named by `names` (an endpoint's `events`): refused when empty, when a name is
    /// unknown, or when it names `ping`. A name given twice counts once.
    pub fn parse<I, S>(names: I) -> Result<Self, EventsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut events = BTreeSet::new();
        for name in names {
            let event: EventType = name.as_ref().parse()?;
            if !event.is_subscribable() {
                return Err(EventsError::NotSubscribable(event));
            }
            events.insert(event);
        }
        if events.is_empty() {
            return Err(EventsError::Empty);
        }
        Ok(Self { events })
    }

    /// Whether events of type `event` are delivered to the endpoint (a `ping` never is by
    /// subscription: it is sent on request).
    pub fn contains(&self, event: EventType) -> bool {
        self.events.contains(&event)
    }

    /// The types, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = EventType> + '_ {
        self.events.iter().copied()
    }
}

impl TryFrom<Vec<String>> for EventSet {
    type Error = EventsError;

    fn try_from(names: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(names)
    }
}

impl Serialize for EventSet {
    /// A list of names: `["order.created", "order.status_changed"]`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(&self.events)
    }
}

/// The body of a webhook: `{"type", "timestamp", "data"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// What happened; receivers dispatch on it.
    #[serde(rename = "type")]
    event_type: EventType,
    /// When it happened, in UTC (not when it is delivered: retries keep it).
    #[serde(with = "time::serde::rfc3339")]
    timestamp: OffsetDateTime,
    /// The event's subject: for order events, the order in its `/v2` shape.
    data: Map<String, Value>,
}

/// Why an envelope could not be made or serialized.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// `data` did not serialize to a JSON object.
    #[error("webhook data must serialize to a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// Serializing failed (a timestamp outside years 0 to 9999, or the data's own `Serialize`).
    #[error("serializing the webhook payload failed")]
    Json(#[from] serde_json::Error),
}

impl Envelope {
    /// The envelope of an event of type `event_type` that happened at `timestamp` (converted to
    /// UTC), about `data`.
    pub fn new(event_type: EventType, timestamp: OffsetDateTime, data: Map<String, Value>) -> Self {
        Self {
            event_type,
            timestamp: timestamp.to_offset(UtcOffset::UTC),
            data,
        }
    }

    /// [`Envelope::new`] with `data` given as anything serializing to a JSON object (the `/v2`
    /// order).
    pub fn from_data<T: Serialize>(
        event_type: EventType,
        timestamp: OffsetDateTime,
        data: &T,
    ) -> Result<Self, PayloadError> {
        match serde_json::to_value(data)? {
            Value::Object(data) => Ok(Self::new(event_type, timestamp, data)),
            Value::Null => Err(PayloadError::NotAnObject("null")),
            Value::Bool(_) => Err(PayloadError::NotAnObject("a boolean")),
            Value::Number(_) => Err(PayloadError::NotAnObject("a number")),
            Value::String(_) => Err(PayloadError::NotAnObject("a string")),
            Value::Array(_) => Err(PayloadError::NotAnObject("an array")),
        }
    }

    /// The test delivery's envelope: a `ping` at `timestamp`, with empty `data`.
    pub fn ping(timestamp: OffsetDateTime) -> Self {
        Self::new(EventType::Ping, timestamp, Map::new())
    }

    /// The event's type.
    pub fn event_type(&self) -> EventType {
        self.event_type
    }

    /// When the event happened, in UTC.
    pub fn timestamp(&self) -> OffsetDateTime {
        self.timestamp
    }

    /// The event's data.
    pub fn data(&self) -> &Map<String, Value> {
        &self.data
    }

    /// The body to send and sign: compact JSON, always the same bytes for the same envelope.
    pub fn to_body(&self) -> Result<Vec<u8>, PayloadError> {
        Ok(serde_json::to_vec(self)?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn event_types_have_their_dotted_names() {
        for (event, name) in [
            (EventType::OrderCreated, "order.created"),
            (EventType::OrderStatusChanged, "order.status_changed"),
            (EventType::Ping, "ping"),
        ] {
            assert_eq!(event.as_str(), name);
            assert_eq!(event.to_string(), name);
            assert_eq!(name.parse::<EventType>(), Ok(event));
            assert_eq!(
                serde_json::to_value(event).expect("json"),
                Value::String(name.into())
            );
            assert_eq!(
                serde_json::from_value::<EventType>(Value::String(name.into())).expect("json"),
                event
            );
        }
        assert_eq!(EventType::ALL.len(), 3);
    }

    #[test]
    fn names_are_exact() {
        for name in [
            "Order.Created",
            "order_created",
            " order.created",
            "order.*",
            "",
            "pings",
        ] {
            assert_eq!(
                name.parse::<EventType>(),
                Err(EventsError::Unknown(name.into())),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_subscription_is_parsed_deduplicated_and_ordered() {
        let events = EventSet::parse(["order.status_changed", "order.created", "order.created"])
            .expect("valid");
        assert_eq!(
            events.iter().collect::<Vec<_>>(),
            [EventType::OrderCreated, EventType::OrderStatusChanged]
        );
        assert!(events.contains(EventType::OrderCreated));
        assert!(!events.contains(EventType::Ping));
        assert_eq!(
            serde_json::to_string(&events).expect("json"),
            r#"["order.created","order.status_changed"]"#
        );

        let one = EventSet::parse(vec!["order.created".to_owned()]).expect("valid");
        assert!(!one.contains(EventType::OrderStatusChanged));
    }

    #[test]
    fn an_unknown_event_is_refused_with_the_allowed_names() {
        let error = EventSet::parse(["order.created", "order.shipped"]).expect_err("unknown");
        assert_eq!(error, EventsError::Unknown("order.shipped".into()));
        assert_eq!(
            error.to_string(),
            "unknown event type `order.shipped`; allowed: order.created, order.status_changed"
        );
    }

    #[test]
    fn a_long_unknown_name_is_cut_in_the_message() {
        let name = "x".repeat(10_000);
        let message = EventSet::parse([&name]).expect_err("unknown").to_string();
        assert!(
            message.contains(&format!("`{}…`", "x".repeat(64))),
            "{message}"
        );
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn ping_and_empty_subscriptions_are_refused() {
        let error = EventSet::parse(["ping"]).expect_err("ping");
        assert_eq!(error, EventsError::NotSubscribable(EventType::Ping));
        assert_eq!(
            error.to_string(),
            "`ping` cannot be subscribed to: it is sent when the endpoint is tested; \
             allowed: order.created, order.status_changed"
        );
        let error = EventSet::parse(Vec::<String>::new()).expect_err("empty");
        assert_eq!(error, EventsError::Empty);
        assert_eq!(
            error.to_string(),
            "`events` needs at least one event type; allowed: order.created, order.status_changed"
        );
    }

    #[test]
    fn a_subscription_deserializes_through_the_same_checks() {
        let events: EventSet =
            serde_json::from_str(r#"["order.created"]"#).expect("a subscription");
        assert!(events.contains(EventType::OrderCreated));
        let error = serde_json::from_str::<EventSet>(r#"["order.deleted"]"#).expect_err("unknown");
        assert!(
            error.to_string().contains("allowed: order.created"),
            "{error}"
        );
        assert!(serde_json::from_str::<EventSet>("[]").is_err());
        assert!(serde_json::from_str::<EventSet>(r#""order.created""#).is_err());
    }

    #[test]
    fn the_body_is_compact_json_with_type_timestamp_data_and_sorted_keys() {
        let data = object(json!({"version": 3, "status": "shipped", "id": "o-1",
            "lines": [{"sku": "p-2", "qty": 1}]}));
        let envelope = Envelope::new(
            EventType::OrderStatusChanged,
            datetime!(2024-05-01 12:00:00 UTC),
            data,
        );
        assert_eq!(
            String::from_utf8(envelope.to_body().expect("body")).expect("utf-8"),
            r#"{"type":"order.status_changed","timestamp":"2024-05-01T12:00:00Z","data":{"id":"o-1","lines":[{"qty":1,"sku":"p-2"}],"status":"shipped","version":3}}"#
        );
    }

    #[test]
    fn the_same_envelope_always_gives_the_same_bytes() {
        let a = object(json!({"b": 1, "a": {"d": 2, "c": 3}}));
        let mut b = Map::new();
        b.insert("a".into(), json!({"c": 3, "d": 2}));
        b.insert("b".into(), json!(1));
        let at = datetime!(2024-05-01 12:00:00.5 UTC);
        let first = Envelope::new(EventType::OrderCreated, at, a)
            .to_body()
            .expect("body");
        let second = Envelope::new(EventType::OrderCreated, at, b)
            .to_body()
            .expect("body");
        assert_eq!(first, second);
    }

    #[test]
    fn the_timestamp_is_rfc3339_in_utc() {
        for (at, text) in [
            (
                datetime!(2024-05-01 14:00:00 +02:00),
                "2024-05-01T12:00:00Z",
            ),
            (
                datetime!(2024-12-31 23:30:00 -01:00),
                "2025-01-01T00:30:00Z",
            ),
            (
                datetime!(2024-05-01 12:00:00.25 UTC),
                "2024-05-01T12:00:00.25Z",
            ),
            (
                datetime!(2022-11-03 20:26:10.344522 UTC),
                "2022-11-03T20:26:10.344522Z",
            ),
        ] {
            let envelope = Envelope::ping(at);
            assert_eq!(envelope.timestamp(), at);
            assert_eq!(envelope.timestamp().offset(), UtcOffset::UTC);
            let body: Value =
                serde_json::from_slice(&envelope.to_body().expect("body")).expect("json");
            assert_eq!(body["timestamp"], Value::String(text.into()), "{at}");
        }
    }

    #[test]
    fn a_ping_has_empty_data() {
        let envelope = Envelope::ping(datetime!(2024-05-01 12:00:00 UTC));
        assert_eq!(envelope.event_type(), EventType::Ping);
        assert!(envelope.data().is_empty());
        assert_eq!(
            envelope.to_body().expect("body"),
            br#"{"type":"ping","timestamp":"2024-05-01T12:00:00Z","data":{}}"#
        );
    }

    #[test]
    fn data_from_a_serializable_value_must_be_an_object() {
        #[derive(Serialize)]
        struct Order {
            id: &'static str,
            version: u64,
        }
        let at = datetime!(2024-05-01 12:00:00 UTC);
        let envelope = Envelope::from_data(
            EventType::OrderCreated,
            at,
            &Order {
                id: "o-1",
                version: 1,
            },
        )
        .expect("an object");
        assert_eq!(envelope.data(), &object(json!({"id": "o-1", "version": 1})));

        for (data, what) in [
            (json!(null), "null"),
            (json!([1]), "an array"),
            (json!("o-1"), "a string"),
            (json!(1), "a number"),
            (json!(true), "a boolean"),
        ] {
            let error = Envelope::from_data(EventType::OrderCreated, at, &data).expect_err(what);
            assert_eq!(
                error.to_string(),
                format!("webhook data must serialize to a JSON object, not {what}")
            );
        }
    }

    #[test]
    fn a_body_reads_back_as_the_same_envelope() {
        let envelope = Envelope::new(
            EventType::OrderCreated,
            datetime!(2024-05-01 12:00:00.123 UTC),
            object(json!({"id": "o-1"})),
        );
        let body = envelope.to_body().expect("body");
        let read: Envelope = serde_json::from_slice(&body).expect("an envelope");
        assert_eq!(read, envelope);
    }

    #[test]
    fn a_timestamp_rfc3339_cannot_write_is_an_error_not_a_panic() {
        let envelope = Envelope::ping(datetime!(-0001-01-01 00:00:00 UTC));
        assert!(matches!(envelope.to_body(), Err(PayloadError::Json(_))));
    }
}
