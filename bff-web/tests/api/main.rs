//! Integration tests of `bff-web` over real HTTP against the reference services. One binary:
//! each module covers one area; `helpers` starts the gateway.

mod helpers;

mod auth;
mod catalog;
mod compression;
mod efficiency;
mod errors;
mod events;
mod http;
mod limits;
mod live;
mod mutations;
mod operating;
mod replicas;
mod response_cache;
mod schema;
mod shared_reads;
mod trusted_documents;
mod viewer;
