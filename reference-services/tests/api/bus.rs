//! Plumbing of the event tests: a private `redis-server`, the services publishing to it, reading
//! a stream back (`XRANGE`), and checking every event read against the message schemas of the
//! events contract (`contracts/events.asyncapi.yaml` at the repository root), loaded from the file.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use redis::{aio::MultiplexedConnection, streams::StreamRangeReply};
use reference_services::{Config, EventsConfig, LocalRedis};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

/// The events contract, as JSON.
fn contract() -> &'static Value {
    static CONTRACT: OnceLock<Value> = OnceLock::new();
    CONTRACT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../contracts/events.asyncapi.yaml"
        );
        let text = std::fs::read_to_string(path).expect("the events contract is readable");
        serde_yaml::from_str(&text).expect("the events contract is valid YAML")
    })
}

/// A validator for one message's payload (`components.messages.<name>.payload`), compiled once:
/// the payload schema as the document, with the contract's `components` beside it so that its
/// `$ref`s (`#/components/schemas/CloudEvent`, ...) resolve to the contract's own schemas.
fn validator(message: &str) -> Arc<jsonschema::Validator> {
    static VALIDATORS: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        OnceLock::new();
    let cache = VALIDATORS.get_or_init(Default::default);
    let mut cache = cache.lock().expect("validator cache lock");
    cache
        .entry(message.to_owned())
        .or_insert_with(|| {
            let components = &contract()["components"];
            let mut document = components["messages"][message]["payload"].clone();
            assert!(document.is_object(), "the contract has message {message}");
            document["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
            document["components"] = components.clone();
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&document)
                .expect("the contract's message schemas compile");
            Arc::new(validator)
        })
        .clone()
}

/// The messages a channel of the contract carries (`catalog`: productChanged, ...).
pub fn channel_messages(channel: &str) -> Vec<String> {
    let messages = contract()["channels"][channel]["messages"]
        .as_object()
        .unwrap_or_else(|| panic!("the contract has channel {channel}"));
    messages
        .values()
        .map(|message| {
            let reference = message["$ref"].as_str().expect("messages are references");
            reference
                .rsplit('/')
                .next()
                .expect("a message name")
                .to_owned()
        })
        .collect()
}

/// The stream a channel is appended to, from the contract (`bff:events:catalog`).
pub fn channel_address(channel: &str) -> String {
    contract()["channels"][channel]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("channel {channel} has an address"))
        .to_owned()
}

/// Why `event` does not match message `message`'s payload schema (empty when it does).
pub fn schema_errors(message: &str, event: &Value) -> Vec<String> {
    validator(message)
        .iter_errors(event)
        .map(|error| format!("{error} at {}", error.instance_path()))
        .collect()
}

/// The one message of `channel` whose schema `event` matches, or every message's errors.
pub fn matching_message(channel: &str, event: &Value) -> Result<String, String> {
    let mut matching = Vec::new();
    let mut errors = Vec::new();
    for message in channel_messages(channel) {
        let found = schema_errors(&message, event);
        if found.is_empty() {
            matching.push(message);
        } else {
            errors.push(format!("{message}: {found:?}"));
        }
    }
    match matching.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(errors.join("\n")),
        several => Err(format!("matches several messages: {several:?}")),
    }
}

/// Asserts that `event` is one of `channel`'s messages; returns which.
#[track_caller]
pub fn assert_event(channel: &str, event: &Value) -> String {
    matching_message(channel, event).unwrap_or_else(|errors| {
        panic!("event does not match any message of channel {channel}:\n{errors}\nevent: {event:#}")
    })
}

/// The services publishing to a private Redis, and a connection to read the streams.
pub struct Bus {
    /// The services (HTTP), as in every other test.
    pub app: TestApp,
    /// The Redis they publish to; stopped when the test ends.
    pub redis: LocalRedis,
    /// For reading streams back (a new connection per read, so that a test can restart Redis).
    client: redis::Client,
    /// The streams' prefix the services were given.
    prefix: String,
}

/// Starts a Redis and the services (small world) publishing to it on the contract's streams.
pub async fn spawn_bus() -> Bus {
    spawn_bus_with(|config| config).await
}

/// Starts a Redis and the services publishing to it, with the config `adjust` makes of the
/// usual small one (which already names the Redis).
pub async fn spawn_bus_with(adjust: impl FnOnce(Config) -> Config) -> Bus {
    let redis = LocalRedis::start().await.expect("redis-server starts");
    let config = adjust(Config {
        products: 1_000,
        users: 60,
        events: Some(EventsConfig::new(redis.url())),
        ..Config::default()
    });
    let prefix = config
        .events
        .as_ref()
        .map(|events| events.stream_prefix.clone())
        .expect("the services publish");
    let app = spawn_app_with(config).await;
    let client = redis::Client::open(redis.url()).expect("a Redis URL");
    Bus {
        app,
        redis,
        client,
        prefix,
    }
}

impl Bus {
    /// A fresh connection to the Redis.
    async fn connection(&self) -> MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis answers")
    }

    /// Every event in a channel's stream (`catalog`, `cart`, `order`), oldest first, each checked:
    /// one field named `event`, holding JSON that matches one of the channel's messages.
    pub async fn events(&self, channel: &str) -> Vec<Value> {
        let key = format!("{}{channel}", self.prefix);
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.connection().await)
            .await
            .expect("XRANGE answers");
        reply
            .ids
            .iter()
            .map(|entry| {
                let fields: Vec<&String> = entry.map.keys().collect();
                assert_eq!(fields, vec!["event"], "one field, `event`, in {key}");
                let text: String = entry.get("event").expect("the field is a string");
                let event: Value = serde_json::from_str(&text).expect("the event is JSON");
                assert_event(channel, &event);
                event
            })
            .collect()
    }

    /// The events of a channel about one resource (`subject`), oldest first.
    pub async fn events_of(&self, channel: &str, subject: &str) -> Vec<Value> {
        self.events(channel)
            .await
            .into_iter()
            .filter(|event| event["subject"] == subject)
            .collect()
    }

    /// The last event of a channel; fails when there is none.
    pub async fn last(&self, channel: &str) -> Value {
        self.events(channel)
            .await
            .pop()
            .unwrap_or_else(|| panic!("an event in {channel}"))
    }

    /// Every key in the Redis (to check that nothing else was written).
    pub async fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut self.connection().await)
            .await
            .expect("KEYS answers")
    }
}

/// The `data.version`s of events, in order.
pub fn versions(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|event| event["data"]["version"].as_u64().expect("a version"))
        .collect()
}
