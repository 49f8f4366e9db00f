//! [`AppState`]: what the endpoint's handlers share, built once by [`crate::build`] from the
//! settings, over the downstream clients.
//!
//! The schema's own shared data ([`Services`]: downstream, checkout, page sizes) lives in the
//! schema, which knows nothing of HTTP; this state holds the schema and what the transport needs
//! around it.

use std::{collections::HashSet, sync::Arc, time::Duration};

use server_kit::{auth::Authenticator, live::LiveLimiter};
use shared_clients::{Downstream, OrderPlacement};

use crate::{
    BuildError, WebSettings,
    apq::PersistedQueries,
    config::{CorsConfig, TrustedMode},
    documents::ParsedDocuments,
    response_cache::ResponseCache,
    schema::{self, PageSizes, SchemaOptions, Services, WebSchema, limits::Limits},
    trusted::{OperationLabels, TrustedDocuments},
};

/// What the endpoint's handlers share (the router keeps it behind one `Arc`: axum copies the
/// state for every request).
#[derive(Clone)]
pub struct AppState {
    /// The executable schema.
    pub schema: WebSchema,
    /// The same schema, validating only what depends on a request's variables: what trusted
    /// documents (validated in full when loaded) run on. The same as `schema` while
    /// `gateway.trusted_documents.mode` is `off`.
    pub trusted_schema: WebSchema,
    /// The documents of the manifests (`gateway.trusted_documents`), reloaded while serving.
    pub trusted: TrustedDocuments,
    /// The SDL served at `<path>/schema.graphql`, when introspection or `schema_endpoint` is on.
    pub sdl: Option<Arc<str>>,
    /// The limits checked on each parsed document before the schema sees it.
    pub limits: Limits,
    /// What every request's scope is built from.
    pub services: Services,
    /// Verifies bearer tokens.
    pub auth: Authenticator,
    /// Automatic persisted queries.
    pub apq: PersistedQueries,
    /// Parsed documents by text, so a repeated query is parsed once.
    pub documents: ParsedDocuments,
    /// Whole answers of public queries (`gateway.response_cache`).
    pub responses: ResponseCache,
    /// Whether browsers get GraphiQL.
    pub graphiql: bool,
    /// Where the endpoint is mounted (GraphiQL posts there).
    pub path: Arc<str>,
    /// The time budget of one request's downstream calls.
    pub deadline: Duration,
    /// The operation names the metrics label by name (`gateway.metrics.operation_names` and the
    /// manifests' names).
    pub metric_names: Arc<OperationLabels>,
    /// Which browser origins may call the endpoint; the router's CORS layer is built from it.
    pub cors: CorsConfig,
    /// The limits on live streams (`gateway.subscriptions`).
    pub live: LiveLimiter,
    /// Largest WebSocket message accepted (`server.max_body_bytes`, as for a `POST` body).
    pub max_message_bytes: usize,
}

impl AppState {
    /// The state for `settings`, over an already built `downstream`.
    pub fn new(settings: &WebSettings, downstream: Downstream) -> Result<Self, BuildError> {
        let config = &settings.gateway;
        let shared = downstream.shared().clone();
        let services = Services {
            placement: OrderPlacement::new(downstream.clone(), &config.checkout),
            downstream,
            pages: PageSizes {
                default: config.limits.default_page_size,
                max: config.limits.max_page_size,
            },
            batch_delay: config.batch_delay,
            live_poll_interval: config.subscriptions.poll_interval,
        };
        let limits = Limits {
            max_depth: config.limits.max_depth,
            max_complexity: config.limits.max_complexity,
            max_aliases: config.limits.max_aliases,
            max_root_fields: config.limits.max_root_fields,
            max_expanded_selections: config.limits.max_expanded_selections,
            pages: services.pages,
        };
        let options = SchemaOptions {
            limits,
            introspection: config.introspection,
            full_validation: true,
        };
        let schema = schema::build(services.clone(), options);
        let responses = ResponseCache::new(&config.response_cache, &services.downstream);
        let trusted = TrustedDocuments::load(&config.trusted_documents, schema.clone(), limits)?;
        trusted.watch();
        let trusted_schema = if config.trusted_documents.mode == TrustedMode::Off {
            schema.clone()
        } else {
            schema::build(
                services.clone(),
                SchemaOptions {
                    full_validation: false,
                    ..options
                },
            )
        };
        Ok(Self {
            sdl: (config.introspection || config.schema_endpoint)
                .then(|| Arc::from(schema::sdl().as_str())),
            schema,
            trusted_schema,
            limits,
            services,
            auth: Authenticator::new(&config.auth)?,
            apq: PersistedQueries::new(config.apq.enabled, config.apq.max_bytes).shared(
                shared,
                config.apq.shared_ttl,
                settings.server.max_body_bytes,
            ),
            documents: ParsedDocuments::new(config.document_cache_max_bytes),
            responses,
            graphiql: config.graphiql,
            path: Arc::from(config.path.as_str()),
            deadline: settings.downstream.deadline,
            metric_names: Arc::new(OperationLabels {
                configured: config
                    .metrics
                    .operation_names
                    .iter()
                    .map(|name| Box::from(name.as_str()))
                    .collect::<HashSet<_>>(),
                trusted: trusted.clone(),
            }),
            trusted,
            cors: config.cors.clone(),
            live: LiveLimiter::new(&config.subscriptions),
            max_message_bytes: settings.server.max_body_bytes,
        })
    }
}
