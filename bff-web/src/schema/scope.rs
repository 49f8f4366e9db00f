//! What each request brings to the resolvers ([`RequestScope`]) and what the whole schema shares
//! ([`Services`]).
//!
//! Imports point one way: the scope builds the request's [`ProductLoader`] and holds its
//! [`Staleness`] (a leaf, `super::staleness`), which the loader records into.

use std::sync::Arc;

use async_graphql::{Context, dataloader::DataLoader};
use server_kit::auth::AuthError;
use shared_clients::{Downstream, OrderPlacement, RequestContext, UserId};

use super::{contents::Contents, error, loader::ProductLoader, staleness::Staleness};

/// Who is asking, as the transport established it before the request ran (a request whose token
/// is refused never reaches the schema).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were sent: catalog fields work, viewer fields are `UNAUTHENTICATED`.
    Anonymous,
    /// A verified user; cart and order calls act for them.
    User(UserId),
}

/// Per-request data: the downstream context, the identity and the request's loaders. Built by the
/// transport for each request and put into the request's data, so loaders never outlive it (their
/// batches and memo are per request and per identity).
pub struct RequestScope {
    /// Propagated on every downstream call (request id, trace, deadline).
    pub context: RequestContext,
    /// Who is asking.
    pub identity: Identity,
    /// Batches product lookups of this request: one catalog batch call per tick.
    pub products: DataLoader<ProductLoader>,
    /// Which parts of the answer were served stale from the cache; the transport reports them
    /// in the response's `extensions`.
    pub staleness: Arc<Staleness>,
    /// What the answer is made of, for the response cache.
    pub contents: Arc<Contents>,
}

impl RequestScope {
    /// A scope for one request.
    pub fn new(services: &Services, context: RequestContext, identity: Identity) -> Self {
        let staleness = Arc::new(Staleness::default());
        let contents = Arc::new(Contents::default());
        let loader = ProductLoader::new(
            services.downstream.clone(),
            context.clone(),
            Arc::clone(&staleness),
            Arc::clone(&contents),
        );
        // The loader's batches run in tasks of their own: in the request's span, so that their
        // downstream calls (and the links of a batch shared with other requests) are traced
        // with the request.
        let span = tracing::Span::current();
        let spawn = move |batch| tokio::spawn(tracing::Instrument::instrument(batch, span.clone()));
        Self {
            context,
            identity,
            products: DataLoader::new(loader, spawn).delay(services.batch_delay),
            staleness,
            contents,
        }
    }

    /// The request's scope, from a resolver's context.
    pub fn of<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a RequestScope> {
        ctx.data::<RequestScope>()
    }

    /// The signed-in user, or `UNAUTHENTICATED`. Asking makes the answer private: it is never
    /// shared through the response cache, whoever asks.
    pub fn user(&self) -> async_graphql::Result<&UserId> {
        self.contents.unshareable();
        match &self.identity {
            Identity::User(user) => Ok(user),
            Identity::Anonymous => Err(error::unauthenticated(AuthError::Missing)),
        }
    }
}

/// Marks a long-lived operation (a subscription, anything over a WebSocket or an event stream):
/// each value it resolves gets a [`RequestScope`] of its own, with a deadline `budget` from when
/// it is resolved (the operation itself has none: it lasts as long as the client follows).
#[derive(Debug, Clone)]
pub struct LiveScope {
    /// The operation's context (request id, trace; no deadline).
    pub context: RequestContext,
    /// Who follows.
    pub identity: Identity,
    /// The budget of each value's downstream calls (`downstream.deadline`).
    pub budget: std::time::Duration,
}

impl LiveScope {
    /// The long-lived operation's scope, from a resolver's context.
    pub fn of<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a LiveScope> {
        ctx.data::<LiveScope>()
    }

    /// The signed-in user, or `UNAUTHENTICATED`.
    pub fn user(&self) -> async_graphql::Result<&UserId> {
        match &self.identity {
            Identity::User(user) => Ok(user),
            Identity::Anonymous => Err(error::unauthenticated(AuthError::Missing)),
        }
    }
}

/// What every request shares: the downstream clients and the gateway's settings.
#[derive(Clone)]
pub struct Services {
    /// The downstream facade (caches and connection pools are process-wide).
    pub downstream: Downstream,
    /// Places orders (checkout), remembering attempts so retries get the same order.
    pub placement: OrderPlacement,
    /// Page sizes.
    pub pages: PageSizes,
    /// How long the product loader collects ids before its batch call (`gateway.batch_delay`).
    pub batch_delay: std::time::Duration,
    /// How often a followed resource is polled while its change events are not read
    /// (`gateway.subscriptions.poll_interval`).
    pub live_poll_interval: std::time::Duration,
}

impl Services {
    /// The shared services, from a resolver's context.
    pub fn of<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Services> {
        ctx.data::<Services>()
    }
}

/// How large list pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSizes {
    /// Without `first`.
    pub default: u32,
    /// The largest `first` accepted.
    pub max: u32,
}

impl PageSizes {
    /// The page size for `first`, or `BAD_USER_INPUT` when it is out of range.
    pub fn resolve(&self, first: Option<i32>) -> async_graphql::Result<u32> {
        match first {
            None => Ok(self.default),
            Some(n) if n >= 1 && u32::try_from(n).is_ok_and(|n| n <= self.max) => {
                Ok(u32::try_from(n).unwrap_or(self.default))
            }
            Some(_) => Err(error::bad_input(
                "first",
                &format!("`first` must be between 1 and {}.", self.max),
            )),
        }
    }

    /// How many items a list asked for with `first` is counted as before anything is resolved
    /// (its complexity): the page [`resolve`](Self::resolve) fetches, with a `first` out of range
    /// clamped into `1..=max` (resolving refuses it later).
    pub fn counted(&self, first: Option<i32>) -> u32 {
        match first {
            None => self.default,
            Some(n) => u32::try_from(n.max(1)).unwrap_or(1).min(self.max),
        }
    }
}
