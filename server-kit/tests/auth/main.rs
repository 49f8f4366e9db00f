//! End-user authentication over real HTTP: a gateway on port 0 using the auth extractors, and a
//! JWKS endpoint the tests control (and whose fetches they count).

mod helpers;

use std::{net::SocketAddr, time::Duration};

use futures::FutureExt;
use helpers::{
    AUDIENCE, EC_KID, ISSUER, JwksMode, JwksServer, ROTATED_KID, RSA_KID, SECRET, TestApp, advance,
    assert_unauthorized, claims, ec_key, hs256, hs256_config, jwks_config, now, raw_token,
    rotated_rsa_key, rsa_key, rsa_public_pem, sign,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};
use serde_json::json;
use server_kit::{
    ConfigError, GatewayConfig,
    auth::{AuthConfig, AuthError, Authenticator, Secret, dev_token},
    config::load_from,
};
use shared_clients::UserId;

// ---- HS256 (development secret) and the extractors ----

#[tokio::test]
async fn a_valid_hs256_token_is_accepted_with_its_user_id() {
    let app = TestApp::spawn(&hs256_config()).await;
    app.assert_accepted(&hs256(&claims("u-0001")), "u-0001")
        .await;
}

#[tokio::test]
async fn a_request_without_a_token_gets_401_with_a_bearer_challenge() {
    let app = TestApp::spawn(&hs256_config()).await;
    let response = app.get_with("/me", None).await;
    assert_unauthorized(response, "missing_token").await;
}

#[tokio::test]
async fn optional_user_without_a_header_is_anonymous() {
    let app = TestApp::spawn(&hs256_config()).await;
    let response = app.get_with("/maybe", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "anonymous");
}

#[tokio::test]
async fn optional_user_with_a_valid_token_is_that_user() {
    let app = TestApp::spawn(&hs256_config()).await;
    let response = app.get("/maybe", &hs256(&claims("u-0002"))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "u-0002");
}

#[tokio::test]
async fn optional_user_with_an_invalid_token_is_refused_not_anonymous() {
    let app = TestApp::spawn(&hs256_config()).await;
    let expired = hs256(&json!({ "sub": "u-0001", "exp": now() - 3600 }));
    assert_unauthorized(app.get("/maybe", &expired).await, "token_expired").await;
    let response = app.get_with("/maybe", Some("Basic dXNlcjpwYXNz")).await;
    assert_unauthorized(response, "invalid_token").await;
}

#[tokio::test]
async fn garbage_tokens_and_malformed_headers_are_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    for token in ["garbage", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9.e30"] {
        app.assert_refused(token, AuthError::Malformed).await;
    }
    let valid = hs256(&claims("u-0001"));
    for header in [
        String::new(),
        "Bearer".to_owned(),
        format!("Basic {valid}"),
        format!("Bearer {valid} {valid}"),
        format!("Bearer {valid},x"),
    ] {
        let response = app.get_with("/me", Some(&header)).await;
        assert_unauthorized(response, "invalid_token").await;
    }
    // The scheme is case-insensitive.
    let response = app.get_with("/me", Some(&format!("bearer {valid}"))).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_larger_than_the_limit_is_refused_unread() {
    let config = AuthConfig {
        max_token_bytes: 64,
        ..hs256_config()
    };
    let app = TestApp::spawn(&config).await;
    let token = hs256(&claims("u-0001"));
    assert!(token.len() > 64);
    app.assert_refused(&token, AuthError::Malformed).await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    let other = EncodingKey::from_secret(b"another-secret-0123456789-abcdefghij");
    let token = sign(Algorithm::HS256, None, &claims("u-0001"), &other);
    app.assert_refused(&token, AuthError::BadSignature).await;

    // A valid signature over other claims does not carry over.
    let genuine = hs256(&claims("u-0001"));
    let forged_claims = hs256(&claims("admin"));
    let (_, signature) = genuine.rsplit_once('.').expect("three parts");
    let (message, _) = forged_claims.rsplit_once('.').expect("three parts");
    app.assert_refused(&format!("{message}.{signature}"), AuthError::BadSignature)
        .await;
}

#[tokio::test]
async fn an_expired_token_is_refused_beyond_the_leeway_only() {
    let app = TestApp::spawn(&hs256_config()).await;
    let expired = hs256(&json!({ "sub": "u-0001", "exp": now() - 120 }));
    app.assert_refused(&expired, AuthError::Expired).await;
    // Ten seconds late is within the default 30s leeway (clock skew).
    let just_expired = hs256(&json!({ "sub": "u-0001", "exp": now() - 10 }));
    app.assert_accepted(&just_expired, "u-0001").await;
}

#[tokio::test]
async fn a_token_whose_nbf_is_in_the_future_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    let early = hs256(&json!({ "sub": "u-0001", "exp": now() + 600, "nbf": now() + 120 }));
    app.assert_refused(&early, AuthError::NotYetValid).await;
    let within_leeway = hs256(&json!({ "sub": "u-0001", "exp": now() + 600, "nbf": now() + 10 }));
    app.assert_accepted(&within_leeway, "u-0001").await;
}

#[tokio::test]
async fn a_token_without_exp_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    app.assert_refused(&hs256(&json!({ "sub": "u-0001" })), AuthError::Malformed)
        .await;
    let text_exp = hs256(&json!({ "sub": "u-0001", "exp": "tomorrow" }));
    app.assert_refused(&text_exp, AuthError::Malformed).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let config = AuthConfig {
        issuer: Some("https://idp.example".into()),
        audience: Some("bff-web".into()),
        ..hs256_config()
    };
    let app = TestApp::spawn(&config).await;
    let with = |iss: Option<&str>, aud: Option<serde_json::Value>| {
        let mut claims = claims("u-0001");
        let fields = claims.as_object_mut().expect("claims object");
        match iss {
            Some(iss) => fields.insert("iss".into(), json!(iss)),
            None => fields.remove("iss"),
        };
        match aud {
            Some(aud) => fields.insert("aud".into(), aud),
            None => fields.remove("aud"),
        };
        hs256(&claims)
    };
    let iss = Some("https://idp.example");
    app.assert_accepted(&with(iss, Some(json!("bff-web"))), "u-0001")
        .await;
    app.assert_accepted(&with(iss, Some(json!(["other", "bff-web"]))), "u-0001")
        .await;

    let wrong_issuer = with(Some("https://evil.example"), Some(json!("bff-web")));
    app.assert_refused(&wrong_issuer, AuthError::WrongIssuer)
        .await;
    let no_issuer = with(None, Some(json!("bff-web")));
    app.assert_refused(&no_issuer, AuthError::WrongIssuer).await;
    let wrong_audience = with(iss, Some(json!("bff-partner")));
    app.assert_refused(&wrong_audience, AuthError::WrongAudience)
        .await;
    let no_audience = with(iss, None);
    app.assert_refused(&no_audience, AuthError::WrongAudience)
        .await;
}

#[tokio::test]
async fn without_a_configured_audience_aud_is_not_checked() {
    let app = TestApp::spawn(&hs256_config()).await;
    let mut claims = claims("u-0001");
    claims["aud"] = json!("anything");
    claims["iss"] = json!("anyone");
    app.assert_accepted(&hs256(&claims), "u-0001").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    for alg in ["none", "None", "NONE", ""] {
        let unsigned = raw_token(&json!({ "alg": alg, "typ": "JWT" }), &claims("u-0001"), "");
        app.assert_refused(&unsigned, AuthError::AlgorithmNotAllowed)
            .await;
    }
    // Nor an HMAC size other than the configured HS256.
    let hs512 = sign(
        Algorithm::HS512,
        None,
        &claims("u-0001"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    app.assert_refused(&hs512, AuthError::AlgorithmNotAllowed)
        .await;
}

#[tokio::test]
async fn a_token_with_a_critical_header_extension_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    let valid = hs256(&claims("u-0001"));
    let (_, rest) = valid.split_once('.').expect("three parts");
    let header = raw_token(
        &json!({ "alg": "HS256", "crit": ["exp-ext"] }),
        &json!({}),
        "",
    );
    let (crit_header, _) = header.split_once('.').expect("three parts");
    app.assert_refused(&format!("{crit_header}.{rest}"), AuthError::Malformed)
        .await;
}

#[tokio::test]
async fn a_missing_or_invalid_sub_is_refused() {
    let app = TestApp::spawn(&hs256_config()).await;
    let exp = now() + 300;
    for claims in [
        json!({ "exp": exp }),
        json!({ "sub": "", "exp": exp }),
        json!({ "sub": "u 1", "exp": exp }),
        json!({ "sub": "../admin", "exp": exp }),
        json!({ "sub": "u".repeat(65), "exp": exp }),
        json!({ "sub": 42, "exp": exp }),
        json!({ "sub": null, "exp": exp }),
    ] {
        app.assert_refused(&hs256(&claims), AuthError::InvalidSubject)
            .await;
    }
}

#[tokio::test]
async fn with_nothing_configured_every_token_is_refused() {
    let app = TestApp::spawn(&AuthConfig::default()).await;
    app.assert_refused(&hs256(&claims("u-0001")), AuthError::AlgorithmNotAllowed)
        .await;
    let rs256 = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_refused(&rs256, AuthError::AlgorithmNotAllowed)
        .await;
}

#[tokio::test]
async fn dev_token_mints_a_token_a_matching_authenticator_accepts() {
    let config = AuthConfig {
        issuer: Some("bff-dev".into()),
        audience: Some("bff-mobile".into()),
        ..hs256_config()
    };
    let app = TestApp::spawn(&config).await;
    let user = UserId::parse("u-0042").expect("user id");
    let secret = Secret::new(SECRET);
    let ttl = Duration::from_secs(3600);
    let token = dev_token(&secret, &user, ttl, Some("bff-dev"), Some("bff-mobile")).expect("token");
    app.assert_accepted(&token, "u-0042").await;

    let without_audience = dev_token(&secret, &user, ttl, Some("bff-dev"), None).expect("token");
    app.assert_refused(&without_audience, AuthError::WrongAudience)
        .await;
    let other_secret = Secret::new("x".repeat(40));
    let forged = dev_token(
        &other_secret,
        &user,
        ttl,
        Some("bff-dev"),
        Some("bff-mobile"),
    )
    .expect("token");
    app.assert_refused(&forged, AuthError::BadSignature).await;
}

// ---- Algorithm confusion ----

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_refused_without_a_secret() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let public_key_as_secret = EncodingKey::from_secret(&rsa_public_pem());
    let forged = sign(
        Algorithm::HS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &public_key_as_secret,
    );
    app.assert_refused(&forged, AuthError::AlgorithmNotAllowed)
        .await;
    assert_eq!(jwks.fetches(), 0, "an HS256 token never reaches the JWKS");
}

#[tokio::test]
async fn an_hs256_token_signed_with_the_public_key_is_checked_against_the_secret_only() {
    let jwks = JwksServer::start().await;
    let config = AuthConfig {
        hs256_secret: hs256_config().hs256_secret,
        ..jwks_config(&jwks)
    };
    let app = TestApp::spawn(&config).await;
    let public_key_as_secret = EncodingKey::from_secret(&rsa_public_pem());
    let forged = sign(
        Algorithm::HS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &public_key_as_secret,
    );
    app.assert_refused(&forged, AuthError::BadSignature).await;
    assert_eq!(jwks.fetches(), 0, "an HS256 token never reaches the JWKS");
    // Both kinds of token work side by side.
    app.assert_accepted(&hs256(&claims("u-0001")), "u-0001")
        .await;
    let rs256 = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0002"),
        &rsa_key(),
    );
    app.assert_accepted(&rs256, "u-0002").await;
}

// ---- RS256 / ES256 via JWKS ----

#[tokio::test]
async fn rs256_and_es256_tokens_are_verified_with_keys_fetched_once() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    assert_eq!(jwks.fetches(), 0, "nothing is fetched before it is needed");
    let rs256 = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-rsa"),
        &rsa_key(),
    );
    let es256 = sign(Algorithm::ES256, Some(EC_KID), &claims("u-ec"), &ec_key());
    for _ in 0..5 {
        app.assert_accepted(&rs256, "u-rsa").await;
        app.assert_accepted(&es256, "u-ec").await;
    }
    assert_eq!(
        jwks.fetches(),
        1,
        "keys are cached, never fetched per request"
    );
}

#[tokio::test]
async fn jwks_tokens_get_the_same_claim_checks() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let mut expired = claims("u-0001");
    expired["exp"] = json!(now() - 120);
    let token = sign(Algorithm::RS256, Some(RSA_KID), &expired, &rsa_key());
    app.assert_refused(&token, AuthError::Expired).await;
    let mut other_tenant = claims("u-0001");
    other_tenant["iss"] = json!("https://idp.example/other-tenant");
    let token = sign(Algorithm::ES256, Some(EC_KID), &other_tenant, &ec_key());
    app.assert_refused(&token, AuthError::WrongIssuer).await;
    let mut other_app = claims("u-0001");
    other_app["aud"] = json!("another-app");
    let token = sign(Algorithm::ES256, Some(EC_KID), &other_app, &ec_key());
    app.assert_refused(&token, AuthError::WrongAudience).await;
    let token = sign(Algorithm::RS256, Some(RSA_KID), &claims("u 1"), &rsa_key());
    app.assert_refused(&token, AuthError::InvalidSubject).await;
}

#[tokio::test]
async fn with_allow_any_audience_jwks_tokens_of_any_audience_are_accepted_but_the_issuer_is_checked()
 {
    let jwks = JwksServer::start().await;
    let config = AuthConfig {
        audience: None,
        allow_any_audience: true,
        ..jwks_config(&jwks)
    };
    let app = TestApp::spawn(&config).await;
    let mut other_app = claims("u-0001");
    other_app["aud"] = json!("another-app");
    let token = sign(Algorithm::RS256, Some(RSA_KID), &other_app, &rsa_key());
    app.assert_accepted(&token, "u-0001").await;
    let mut no_audience = claims("u-0002");
    no_audience.as_object_mut().expect("object").remove("aud");
    let token = sign(Algorithm::ES256, Some(EC_KID), &no_audience, &ec_key());
    app.assert_accepted(&token, "u-0002").await;

    let mut other_tenant = claims("u-0001");
    other_tenant["iss"] = json!("https://idp.example/other-tenant");
    let token = sign(Algorithm::RS256, Some(RSA_KID), &other_tenant, &rsa_key());
    app.assert_refused(&token, AuthError::WrongIssuer).await;
}

#[tokio::test]
async fn a_jwks_token_signed_by_another_key_or_for_another_key_type_is_refused() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    // Signed with the (unpublished) rotated key but claiming the published kid.
    let wrong_key = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rotated_rsa_key(),
    );
    app.assert_refused(&wrong_key, AuthError::BadSignature)
        .await;
    // An RS256 token naming the EC key.
    let mismatched = sign(
        Algorithm::RS256,
        Some(EC_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_refused(&mismatched, AuthError::AlgorithmNotAllowed)
        .await;
    // No kid at all.
    let no_kid = sign(Algorithm::RS256, None, &claims("u-0001"), &rsa_key());
    app.assert_refused(&no_kid, AuthError::UnknownKey).await;
}

#[tokio::test]
async fn an_unknown_kid_refetches_once_for_20_concurrent_requests_and_rotation_is_accepted() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let old = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-old"),
        &rsa_key(),
    );
    app.assert_accepted(&old, "u-old").await;
    assert_eq!(jwks.fetches(), 1);

    // The identity provider rotates; a token of the new key arrives once re-fetching is allowed.
    jwks.rotate();
    advance(Duration::from_secs(31)).await;
    let new = sign(
        Algorithm::RS256,
        Some(ROTATED_KID),
        &claims("u-new"),
        &rotated_rsa_key(),
    );
    let requests = (0..20).map(|_| app.get("/me", &new));
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), "u-new");
    }
    assert_eq!(jwks.fetches(), 2, "one re-fetch for all 20 requests");
    app.assert_accepted(&old, "u-old").await;
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let known = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_accepted(&known, "u-0001").await;

    let unknown = sign(
        Algorithm::RS256,
        Some("nope"),
        &claims("u-0001"),
        &rsa_key(),
    );
    for _ in 0..5 {
        app.assert_refused(&unknown, AuthError::UnknownKey).await;
    }
    assert_eq!(
        jwks.fetches(),
        1,
        "no re-fetch within jwks_min_refresh_interval"
    );

    advance(Duration::from_secs(30)).await;
    app.assert_refused(&unknown, AuthError::UnknownKey).await;
    assert_eq!(
        jwks.fetches(),
        2,
        "one re-fetch once the interval has passed"
    );
    app.assert_refused(&unknown, AuthError::UnknownKey).await;
    assert_eq!(jwks.fetches(), 2);

    // A rotated key published meanwhile is found at the next allowed re-fetch.
    jwks.rotate();
    let rotated = sign(
        Algorithm::RS256,
        Some(ROTATED_KID),
        &claims("u-0002"),
        &rotated_rsa_key(),
    );
    app.assert_refused(&rotated, AuthError::UnknownKey).await;
    assert_eq!(jwks.fetches(), 2);
    advance(Duration::from_secs(30)).await;
    app.assert_accepted(&rotated, "u-0002").await;
    assert_eq!(jwks.fetches(), 3);
}

#[tokio::test]
async fn keys_are_refreshed_after_the_refresh_interval_and_not_before() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let token = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_accepted(&token, "u-0001").await;
    advance(Duration::from_secs(9 * 60)).await;
    app.assert_accepted(&token, "u-0001").await;
    assert_eq!(jwks.fetches(), 1, "still within jwks_refresh_interval");
    advance(Duration::from_secs(60)).await;
    app.assert_accepted(&token, "u-0001").await;
    jwks.wait_for_fetches(2).await;
    assert_eq!(jwks.fetches(), 2, "refreshed after jwks_refresh_interval");
    app.assert_accepted(&token, "u-0001").await;
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_keys() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let token = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_accepted(&token, "u-0001").await;

    jwks.set_mode(JwksMode::Down);
    advance(Duration::from_secs(10 * 60)).await;
    app.assert_accepted(&token, "u-0001").await;
    jwks.wait_for_fetches(2).await;
    assert_eq!(jwks.fetches(), 2, "a refresh was attempted");
    app.assert_accepted(&token, "u-0001").await;
    assert_eq!(jwks.fetches(), 2, "and is not retried on every request");
}

#[tokio::test]
async fn stale_keys_answer_a_known_kid_at_once_while_one_background_refresh_runs() {
    let jwks = JwksServer::start().await;
    let config = AuthConfig {
        // Far longer than the test: a fetch ends when the test releases it, not by timing out.
        jwks_timeout: Duration::from_secs(60),
        ..jwks_config(&jwks)
    };
    let auth = Authenticator::new(&config).expect("valid config");
    let old = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-old"),
        &rsa_key(),
    );
    auth.verify(&old).await.expect("keys fetched");
    assert_eq!(jwks.fetches(), 1);

    // The keys grow old while the identity provider rotates and becomes slow to answer.
    jwks.rotate();
    jwks.hold();
    advance(Duration::from_secs(10 * 60)).await;
    for _ in 0..5 {
        let user = auth
            .verify(&old)
            .now_or_never()
            .expect("a known kid is answered at once, without waiting for the refresh")
            .expect("the old key still verifies");
        assert_eq!(user.user_id().to_string(), "u-old");
    }
    jwks.wait_for_fetches(2).await;
    assert_eq!(jwks.fetches(), 2, "one background refresh for all of them");

    // A token of the rotated key waits for that refresh rather than starting another.
    let new = sign(
        Algorithm::RS256,
        Some(ROTATED_KID),
        &claims("u-new"),
        &rotated_rsa_key(),
    );
    let waiting = tokio::spawn({
        let auth = auth.clone();
        async move { auth.verify(&new).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "an unknown kid waits for the fetch");
    jwks.release();
    let user = waiting
        .await
        .expect("task")
        .expect("the rotated key, from the background refresh");
    assert_eq!(user.user_id().to_string(), "u-new");
    assert_eq!(jwks.fetches(), 2, "the waiter used the running refresh");

    // The refreshed keys are fresh: answered at once, nothing fetched.
    auth.verify(&old)
        .now_or_never()
        .expect("answered at once")
        .expect("the old key is still published");
    assert_eq!(jwks.fetches(), 2);
}

#[tokio::test]
async fn a_remembered_token_stops_being_accepted_when_a_refresh_removes_its_key() {
    let jwks = JwksServer::start().await;
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let config = jwks_config(&jwks);
    assert!(config.token_cache_capacity > 0, "the token cache is on");
    let token = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    // Verified once, then answered from the token cache.
    app.assert_accepted(&token, "u-0001").await;
    app.assert_accepted(&token, "u-0001").await;
    assert_eq!(jwks.fetches(), 1);

    // The identity provider retires the key. Until a refresh, the old key set answers, with or
    // without the token cache: the token's entry is still used, and starts the refresh.
    jwks.remove(RSA_KID);
    advance(Duration::from_secs(10 * 60)).await;
    app.auth
        .verify(&token)
        .await
        .expect("the keys not yet refreshed");
    // A token of an unknown kid waits for the refresh that request started.
    let unknown = sign(
        Algorithm::RS256,
        Some("nope"),
        &claims("u-0001"),
        &rsa_key(),
    );
    assert_eq!(
        app.auth.verify(&unknown).await.err(),
        Some(AuthError::UnknownKey)
    );
    assert_eq!(jwks.fetches(), 2, "one refresh");

    // The refreshed set lacks the key: the remembered token is verified again, and refused.
    app.assert_refused(&token, AuthError::UnknownKey).await;
    assert_eq!(
        jwks.fetches(),
        2,
        "within jwks_min_refresh_interval: no fetch"
    );
}

#[tokio::test]
async fn a_down_jwks_gives_401_keys_unavailable_not_a_500() {
    let jwks = JwksServer::start().await;
    jwks.set_mode(JwksMode::Down);
    let app = TestApp::spawn(&jwks_config(&jwks)).await;
    let token = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    app.assert_refused(&token, AuthError::KeysUnavailable).await;
    assert_eq!(jwks.fetches(), 1, "a down JWKS is not hammered");

    // Once it is back (and the rate limit allows), tokens are accepted.
    jwks.set_mode(JwksMode::Up);
    advance(Duration::from_secs(30)).await;
    app.assert_accepted(&token, "u-0001").await;
}

#[tokio::test]
async fn an_unreachable_jwks_gives_keys_unavailable() {
    let closed: SocketAddr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let config = AuthConfig {
        jwks_url: Some(format!("http://{closed}/jwks.json")),
        issuer: Some(ISSUER.into()),
        audience: Some(AUDIENCE.into()),
        ..AuthConfig::default()
    };
    let app = TestApp::spawn(&config).await;
    let token = sign(Algorithm::ES256, Some(EC_KID), &claims("u-0001"), &ec_key());
    app.assert_refused(&token, AuthError::KeysUnavailable).await;
}

#[tokio::test]
async fn a_hanging_jwks_is_given_up_after_jwks_timeout() {
    let jwks = JwksServer::start().await;
    jwks.set_mode(JwksMode::Hanging);
    let config = AuthConfig {
        jwks_timeout: Duration::from_millis(200),
        ..jwks_config(&jwks)
    };
    let auth = Authenticator::new(&config).expect("valid config");
    let token = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), auth.verify(&token))
        .await
        .expect("verify gives up on its own");
    assert_eq!(outcome.err(), Some(AuthError::KeysUnavailable));
}

// ---- Logging ----

/// Collects the log output of the current thread.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn refusals_are_logged_with_their_code_and_kid_but_never_the_token_or_secret() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let jwks = JwksServer::start().await;
    jwks.set_mode(JwksMode::Down);
    let config = AuthConfig {
        hs256_secret: hs256_config().hs256_secret,
        ..jwks_config(&jwks)
    };
    let auth = Authenticator::new(&config).expect("valid config");
    let forged = sign(
        Algorithm::HS256,
        None,
        &claims("u-0001"),
        &EncodingKey::from_secret(b"another-secret-0123456789-abcdefghij"),
    );
    let rs256 = sign(
        Algorithm::RS256,
        Some(RSA_KID),
        &claims("u-0001"),
        &rsa_key(),
    );
    assert_eq!(
        auth.verify(&forged).await.err(),
        Some(AuthError::BadSignature)
    );
    assert_eq!(
        auth.verify(&rs256).await.err(),
        Some(AuthError::KeysUnavailable)
    );
    assert!(auth.verify(&hs256(&claims("u-0001"))).await.is_ok());

    let text = logs.text();
    assert!(text.contains("bad_signature"), "{text}");
    assert!(text.contains("keys_unavailable"), "{text}");
    assert!(text.contains(RSA_KID), "{text}");
    assert!(text.contains("JWKS fetch failed"), "{text}");
    for secret in [forged.as_str(), rs256.as_str(), SECRET] {
        assert!(
            !text.contains(secret),
            "a token or secret was logged: {text}"
        );
    }
    // Not even one part of a token (its signature is the part worth stealing).
    let signature = forged.rsplit('.').next().expect("signature");
    assert!(!text.contains(signature), "{text}");
}

// ---- Configuration ----

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
struct TestGateway {
    auth: AuthConfig,
}

impl GatewayConfig for TestGateway {
    const DEFAULT_LISTEN_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8098);
    const DEFAULT_METRICS_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9198);

    fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate("gateway.auth")
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn auth_settings_load_from_the_environment_and_the_secret_never_prints() {
    let settings = load_from::<TestGateway>(
        None,
        env(&[
            ("BFF_GATEWAY__AUTH__HS256_SECRET", SECRET),
            ("BFF_GATEWAY__AUTH__LEEWAY", "10s"),
            ("BFF_GATEWAY__AUTH__AUDIENCE", "bff-web"),
        ]),
    )
    .expect("loads");
    let auth = &settings.gateway.auth;
    assert_eq!(
        auth.hs256_secret.as_ref().map(Secret::expose_secret),
        Some(SECRET)
    );
    assert_eq!(auth.leeway, Duration::from_secs(10));
    assert_eq!(auth.audience.as_deref(), Some("bff-web"));
    assert_eq!(auth.jwks_refresh_interval, Duration::from_secs(600));
    assert!(!format!("{settings:?}").contains(SECRET));
}

#[test]
fn a_short_secret_stops_the_gateway_naming_the_setting() {
    let error = load_from::<TestGateway>(
        None,
        env(&[("BFF_GATEWAY__AUTH__HS256_SECRET", "short-secret")]),
    )
    .expect_err("refused");
    let message = error.to_string();
    assert!(message.contains("gateway.auth.hs256_secret"), "{message}");
    assert!(!message.contains("short-secret"), "{message}");
}

#[test]
fn a_jwks_url_without_an_audience_or_an_issuer_stops_the_gateway_naming_the_setting() {
    let url = (
        "BFF_GATEWAY__AUTH__JWKS_URL",
        "https://idp.example/.well-known/jwks.json",
    );
    let issuer = ("BFF_GATEWAY__AUTH__ISSUER", ISSUER);
    let audience = ("BFF_GATEWAY__AUTH__AUDIENCE", AUDIENCE);
    for (pairs, missing) in [
        (vec![url], "gateway.auth.audience"),
        (vec![url, issuer], "gateway.auth.audience"),
        (vec![url, audience], "gateway.auth.issuer"),
    ] {
        let error = load_from::<TestGateway>(None, env(&pairs)).expect_err(missing);
        let message = error.to_string();
        assert!(message.contains(missing), "{message}");
        assert!(message.contains("jwks_url"), "says why: {message}");
    }
    load_from::<TestGateway>(None, env(&[url, issuer, audience])).expect("both are checked");
}

#[test]
fn allow_any_audience_waives_the_audience_but_not_the_issuer() {
    let url = (
        "BFF_GATEWAY__AUTH__JWKS_URL",
        "https://idp.example/.well-known/jwks.json",
    );
    let any_audience = ("BFF_GATEWAY__AUTH__ALLOW_ANY_AUDIENCE", "true");
    let settings = load_from::<TestGateway>(
        None,
        env(&[url, any_audience, ("BFF_GATEWAY__AUTH__ISSUER", ISSUER)]),
    )
    .expect("an explicit choice");
    assert!(settings.gateway.auth.allow_any_audience);
    let error = load_from::<TestGateway>(None, env(&[url, any_audience])).expect_err("refused");
    assert!(error.to_string().contains("gateway.auth.issuer"), "{error}");
}

#[test]
fn an_unknown_auth_setting_is_refused() {
    let error = load_from::<TestGateway>(None, env(&[("BFF_GATEWAY__AUTH__SECRET", "x")]))
        .expect_err("refused");
    assert!(error.to_string().contains("secret"), "{error}");
}
