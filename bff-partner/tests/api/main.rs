//! Integration tests of `bff-partner` over real HTTP, against the reference services.

mod helpers;

mod auth;
mod catalog;
mod compression;
mod errors;
mod events;
mod openapi;
mod operating;
mod orders;
mod quota;
mod replicas;
mod revalidation;
mod throttle;
mod versions;
mod webhook_delivery;
mod webhooks;
