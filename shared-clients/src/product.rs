//! The raw client of the catalog service: one typed method per operation, no caching.
//!
//! Reads return a [`Fetched`] value carrying the response's caching metadata, which the
//! [`Catalog`](crate::Catalog) uses to decide how long to keep it. Most callers want the cached
//! [`Catalog`](crate::Catalog) instead of this client.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::cache_control::{CacheControl, ETag};
use crate::config::ServiceConfig;
use crate::context::RequestContext;
use crate::error::{BuildError, ClientError, Failure, Service};
use crate::id::ProductId;
use crate::model::product::{Category, Product, ProductBatch, ProductPage, ProductQuery};
use crate::transport::{Call, Reply, Transport};

/// Most ids one batch call may ask for (the contract's limit).
pub const MAX_BATCH: usize = 100;

/// A catalog answer with the metadata a cache needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched<T> {
    /// The decoded answer.
    pub value: T,
    /// The response's caching directives, which bound how long it may be reused.
    pub cache_control: CacheControl,
    /// The response's entity tag, for later revalidation (single products only).
    pub etag: Option<ETag>,
}

impl<T> Fetched<T> {
    fn new(value: T, reply: &Reply) -> Self {
        Self {
            value,
            cache_control: CacheControl::from_headers(&reply.headers),
            etag: ETag::from_headers(&reply.headers),
        }
    }
}

/// The answer to a conditional read.
#[derive(Debug, Clone, PartialEq)]
pub enum Revalidated<T> {
    /// The resource changed (or the tag did not match): here is the new version.
    Modified(Fetched<T>),
    /// The cached version is still current (304); its freshness is renewed by these directives.
    NotModified {
        /// The renewed caching directives.
        cache_control: CacheControl,
        /// The current entity tag, normally the one sent.
        etag: Option<ETag>,
    },
}

/// Client of the catalog service (products and categories).
#[derive(Debug, Clone)]
pub struct ProductClient {
    /// Connection, base URL and error classification for the catalog service.
    transport: Transport,
}

impl ProductClient {
    /// Builds the client from the catalog service's configuration.
    pub fn new(config: &ServiceConfig) -> Result<Self, BuildError> {
        Transport::new(Service::Product, config).map(|transport| Self { transport })
    }

    /// `GET /products/{id}`: one product with its `Cache-Control` and `ETag`.
    pub async fn get(
        &self,
        ctx: &RequestContext,
        id: &ProductId,
    ) -> Result<Fetched<Arc<Product>>, ClientError> {
        let path = ["products", id.as_str()];
        let reply = self
            .send(ctx, Call::new("getProduct", Method::GET, &path))
            .await?;
        Ok(Fetched::new(Arc::new(reply.json()?), &reply))
    }

    /// `GET /products/{id}` with `If-None-Match: etag`: [`Revalidated::NotModified`] when the
    /// product still has that tag, else the current product.
    pub async fn get_if_none_match(
        &self,
        ctx: &RequestContext,
        id: &ProductId,
        etag: &ETag,
    ) -> Result<Revalidated<Arc<Product>>, ClientError> {
        let path = ["products", id.as_str()];
        let call = Call::new("getProduct", Method::GET, &path)
            .header("if-none-match", etag.header_value().clone())
            .accept_not_modified();
        let reply = self.send(ctx, call).await?;
        if reply.status == StatusCode::NOT_MODIFIED {
            return Ok(Revalidated::NotModified {
                cache_control: CacheControl::from_headers(&reply.headers),
                etag: ETag::from_headers(&reply.headers),
            });
        }
        Ok(Revalidated::Modified(Fetched::new(
            Arc::new(reply.json()?),
            &reply,
        )))
    }

    /// `GET /products?ids=…`: up to [`MAX_BATCH`] products by id, in the order asked, plus the ids
    /// that do not exist. More ids is an [`Invalid`](crate::ErrorKind::Invalid) error (split the
    /// list, or use [`Catalog::products`](crate::Catalog::products), which does); no ids answers
    /// an empty batch without a call.
    ///
    /// The answer is checked against the question: every id asked is either found or missing
    /// (else [`BadResponse`](crate::ErrorKind::BadResponse)); products not asked for are dropped.
    pub async fn batch(
        &self,
        ctx: &RequestContext,
        ids: &[ProductId],
    ) -> Result<Fetched<ProductBatch>, ClientError> {
        if ids.len() > MAX_BATCH {
            return Err(self.transport.error(Failure::Rejected(
                "a batch asks for more than 100 product ids",
            )));
        }
        if ids.is_empty() {
            return Ok(Fetched {
                value: ProductBatch {
                    items: Vec::new(),
                    missing: Vec::new(),
                },
                cache_control: CacheControl::default(),
                etag: None,
            });
        }
        let joined = ids
            .iter()
            .map(ProductId::as_str)
            .collect::<Vec<_>>()
            .join(",");
        let call = Call::new("listProducts", Method::GET, &["products"]).query("ids", joined);
        let reply = self.send(ctx, call).await?;
        let mut batch: ProductBatch = reply.json()?;

        let asked: HashSet<&str> = ids.iter().map(ProductId::as_str).collect();
        batch.items.retain(|p| asked.contains(p.id.as_str()));
        batch.missing.retain(|id| asked.contains(id.as_str()));
        let answered: HashSet<&str> = batch
            .items
            .iter()
            .map(|p| p.id.as_str())
            .chain(batch.missing.iter().map(ProductId::as_str))
            .collect();
        if asked.iter().any(|id| !answered.contains(id)) {
            return Err(self.transport.error(Failure::Contract(
                "answered a batch without accounting for every id asked",
            )));
        }
        Ok(Fetched::new(batch, &reply))
    }

    /// `GET /products`: one page of the catalog, filtered by `query`.
    pub async fn list(
        &self,
        ctx: &RequestContext,
        query: &ProductQuery,
    ) -> Result<Fetched<ProductPage>, ClientError> {
        let call = Call::new("listProducts", Method::GET, &["products"])
            .query_opt("category", query.category.as_ref().map(|c| c.as_str()))
            .query_opt("q", query.q.as_deref())
            .query_opt("cursor", query.cursor.as_deref())
            .query_opt("limit", query.limit.map(|l| l.to_string()));
        let reply = self.send(ctx, call).await?;
        Ok(Fetched::new(reply.json()?, &reply))
    }

    /// `GET /categories`: every category.
    pub async fn categories(
        &self,
        ctx: &RequestContext,
    ) -> Result<Fetched<Vec<Category>>, ClientError> {
        /// The `/categories` body.
        #[derive(serde::Deserialize)]
        struct Categories {
            items: Vec<Category>,
        }
        let call = Call::new("listCategories", Method::GET, &["categories"]);
        let reply = self.send(ctx, call).await?;
        let categories: Categories = reply.json()?;
        Ok(Fetched::new(categories.items, &reply))
    }

    /// `GET /health`, bounded by `timeout`: `Ok` when the service says it is ready.
    pub async fn health(&self, timeout: Duration) -> Result<(), ClientError> {
        let call = Call::new("health", Method::GET, &["health"]).probe(timeout);
        self.transport
            .execute(&RequestContext::new(), call)
            .await
            .map(drop)
    }

    /// The service's call counters and breaker state.
    pub(crate) fn metrics(&self) -> crate::metrics::ServiceMetricsSnapshot {
        self.transport.metrics()
    }

    /// Sends one call to the catalog service.
    async fn send(&self, ctx: &RequestContext, call: Call<'_>) -> Result<Reply, ClientError> {
        self.transport.execute(ctx, call).await
    }
}
