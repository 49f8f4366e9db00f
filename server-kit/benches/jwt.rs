//! Micro-benchmark of bearer-token verification: [`Authenticator::verify`] of an HS256 token
//! (signature, `exp`/`nbf`, the `sub` parsed into a user id), valid and with a bad signature,
//! with the verified-token cache off (`token_cache_capacity = 0`, every request verified), and
//! a valid token answered from the cache (`verify_hs256_cached`: the SHA-256 of the token, one
//! lookup, `exp`/`nbf` checked against the clock).
//!
//! Run: `cargo bench -p server-kit --bench jwt`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use server_kit::auth::{AuthConfig, Authenticator, Secret, dev_token};
use shared_clients::UserId;

const SECRET: &str = "bench-secret-that-is-at-least-32-bytes-long";

fn jwt_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = AuthConfig {
        hs256_secret: Some(Secret::new(SECRET)),
        token_cache_capacity: 0,
        ..AuthConfig::default()
    };
    let authenticator = Authenticator::new(&config).expect("authenticator");
    let cached = Authenticator::new(&AuthConfig {
        token_cache_capacity: 10_000,
        ..config
    })
    .expect("authenticator");
    let user = UserId::parse("u-0001").expect("user id");
    let token = dev_token(
        &Secret::new(SECRET),
        &user,
        Duration::from_secs(3600),
        None,
        None,
    )
    .expect("token");
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    rt.block_on(authenticator.verify(&token)).expect("valid");
    rt.block_on(cached.verify(&token))
        .expect("valid, now remembered");
    assert!(rt.block_on(authenticator.verify(&forged)).is_err());

    let mut group = c.benchmark_group("jwt");
    group.bench_function("verify_hs256_valid", |b| {
        b.to_async(&rt)
            .iter(|| async { authenticator.verify(&token).await.expect("valid") });
    });
    group.bench_function("verify_hs256_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.verify(&token).await.expect("valid") });
    });
    group.bench_function("verify_hs256_bad_signature", |b| {
        b.to_async(&rt)
            .iter(|| async { authenticator.verify(&forged).await.is_err() });
    });
    group.finish();
}

criterion_group!(benches, jwt_benches);
criterion_main!(benches);
