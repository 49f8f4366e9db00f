//! Integration tests of the reference services over real HTTP: each test starts the three
//! services on ephemeral ports and checks them against the contract
//! (`contracts/downstream.openapi.yaml` at the repository root), validating every body against its schemas,
//! and, with a private `redis-server`, the change events they publish against the events contract
//! (`contracts/events.asyncapi.yaml`), also on a Redis Cluster and through Sentinel.

mod admin;
mod back_office;
mod bus;
mod carts;
mod conventions;
mod events;
mod helpers;
mod orders;
mod products;
mod seeding;
mod topologies;
