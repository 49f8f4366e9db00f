//! Integration tests of the reference services over real HTTP: each test starts the three
//! services on ephemeral ports and checks them against the contract
//! (`contracts/downstream.openapi.yaml` at the repository root), validating every body against its schemas.

mod admin;
mod carts;
mod conventions;
mod helpers;
mod orders;
mod products;
mod seeding;
