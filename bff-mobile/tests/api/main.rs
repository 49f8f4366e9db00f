//! Integration tests of `bff-mobile` over real HTTP, against the seeded reference services.
//! One binary; one module per area.

mod caching;
mod cart;
mod catalog;
mod checkout;
mod compact;
mod errors;
mod events;
mod failover;
mod helpers;
mod home;
mod live;
mod openapi;
mod operating;
mod orders;
mod replicas;
mod shared_reads;
