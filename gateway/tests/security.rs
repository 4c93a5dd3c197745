//! The gateway under attack and in daily use: forged tokens, sessions that end, keys that
//! rotate, rate limits, bounds on requests, CORS, the console's headers and the audit log. Each
//! runs a real gateway, with sessions in the real Redis, mostly in front of a real order API.

mod common;

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use common::{echo_upstream, http, order_for, problem, stack};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use oms_gateway::{
    auth::{Claims, Role},
    config::{Rate, RouteConfig},
    keys::{self, KeyConfig},
    testing::{KID, TestGateway},
};
use oms_saga::config::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn claims_of(token: &str) -> Claims {
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("claims")
}

fn sign(claims: &Claims, alg: Algorithm, kid: Option<&str>, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

fn ed_key(pem: &str) -> EncodingKey {
    EncodingKey::from_ed_pem(pem.as_bytes()).expect("key")
}

fn inline_key(kid: &str, pem: String) -> KeyConfig {
    KeyConfig {
        kid: kid.into(),
        pem: Some(Secret::new(pem)),
        pem_file: None,
    }
}

async fn status_of(request: reqwest::RequestBuilder) -> StatusCode {
    request.send().await.expect("send").status()
}

#[tokio::test]
async fn every_forged_expired_unsigned_or_foreign_token_gets_401() {
    let (_api, gateway) = stack().await;
    let orders = gateway.url("/api/orders");
    // A real session's claims, so that only the token's own faults are refused below.
    let real = gateway.login("alice").await;
    let valid = claims_of(&real);
    // Used once, so that the gateway has verified it: an altered copy must not pass for it.
    assert_eq!(
        status_of(http().get(&orders).bearer_auth(&real)).await,
        StatusCode::OK
    );
    let parts: Vec<&str> = real.split('.').collect();
    let mut signature = parts[2].to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let altered_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(signature).expect("ascii")
    );
    let mut admin = valid.clone();
    admin.role = Role::Admin;
    let altered_claims = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&admin).expect("claims")),
        parts[2]
    );
    let ours = ed_key(gateway.private_key());
    let public_pem = keys::public_pem(gateway.private_key()).expect("public");
    let stranger = ed_key(&keys::generate().expect("key"));
    let with = |change: &dyn Fn(&mut Claims)| {
        let mut claims = valid.clone();
        change(&mut claims);
        sign(&claims, Algorithm::EdDSA, Some(KID), &ours)
    };
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT","kid":"test-key"}"#),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&valid).expect("claims"))
    );
    let cases = [
        ("malformed", "not.a.jwt".to_owned()),
        ("a used token with its signature altered", altered_signature),
        ("a used token with its claims altered", altered_claims),
        ("alg none", unsigned),
        (
            "HS256 keyed with the public key",
            sign(
                &valid,
                Algorithm::HS256,
                Some(KID),
                &EncodingKey::from_secret(public_pem.as_bytes()),
            ),
        ),
        (
            "signed by another key under our kid",
            sign(&valid, Algorithm::EdDSA, Some(KID), &stranger),
        ),
        (
            "unknown kid",
            sign(&valid, Algorithm::EdDSA, Some("2019-key"), &ours),
        ),
        (
            "kid as a path",
            sign(
                &valid,
                Algorithm::EdDSA,
                Some("../../../../dev/null"),
                &ours,
            ),
        ),
        ("no kid", sign(&valid, Algorithm::EdDSA, None, &ours)),
        ("expired", with(&|c| c.exp = c.iat - 3600)),
        ("wrong audience", with(&|c| c.aud = "someone-else".into())),
        ("wrong issuer", with(&|c| c.iss = "someone-else".into())),
        ("user without customer", with(&|c| c.customer_id = None)),
        (
            "a session that never was",
            with(&|c| c.sid = uuid::Uuid::new_v4()),
        ),
    ];
    problem(http().get(&orders), StatusCode::UNAUTHORIZED).await;
    problem(
        http()
            .get(&orders)
            .header("authorization", "Basic YWxpY2U6cHc="),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    for (what, token) in cases {
        let response = http()
            .get(&orders)
            .bearer_auth(&token)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what} token");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{what} token"
        );
    }
    // The same claims, properly signed, pass: the refusals above are about the token alone.
    let ok = status_of(http().get(&orders).bearer_auth(with(&|_| {}))).await;
    assert_eq!(ok, StatusCode::OK);
}

#[tokio::test]
async fn the_published_keys_verify_the_gateways_tokens() {
    let (_api, gateway) = stack().await;
    let jwks: jsonwebtoken::jwk::JwkSet = http()
        .get(gateway.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("a JWK set");
    assert_eq!(jwks.keys.len(), 1);
    let jwk = jwks.find(KID).expect("the signing key is published");
    let token = gateway.login("bob").await;
    let header = jsonwebtoken::decode_header(&token).expect("header");
    assert_eq!(
        (header.alg, header.kid.as_deref()),
        (Algorithm::EdDSA, Some(KID))
    );
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[&gateway.config.jwt.audience]);
    let claims = jsonwebtoken::decode::<Claims>(
        &token,
        &DecodingKey::from_jwk(jwk).expect("key"),
        &validation,
    )
    .expect("verifies with the published key alone")
    .claims;
    assert_eq!((claims.sub.as_str(), claims.role), ("bob", Role::User));
    assert_eq!(claims.customer_id, Some(gateway.bob));
}

#[tokio::test]
async fn refresh_tokens_work_once_and_logout_ends_the_session() {
    let (_api, gateway) = stack().await;
    let orders = gateway.url("/api/orders");
    let refresh = |token: &str| {
        http()
            .post(gateway.url("/auth/refresh"))
            .json(&json!({ "refresh_token": token }))
    };

    let first = gateway.session("alice").await;
    assert_eq!(first.expires_in, gateway.config.jwt.ttl.as_secs());
    let second: oms_gateway::http::TokenResponse = refresh(&first.refresh_token)
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("tokens");
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(
        claims_of(&second.access_token).sid,
        claims_of(&first.access_token).sid,
        "the same session goes on"
    );
    for token in [&first.access_token, &second.access_token] {
        assert_eq!(
            status_of(http().get(&orders).bearer_auth(token)).await,
            StatusCode::OK
        );
    }
    // The first refresh token again: it was copied, so the whole session ends.
    problem(refresh(&first.refresh_token), StatusCode::UNAUTHORIZED).await;
    problem(refresh(&second.refresh_token), StatusCode::UNAUTHORIZED).await;
    problem(
        http().get(&orders).bearer_auth(&second.access_token),
        StatusCode::UNAUTHORIZED,
    )
    .await;

    // Logout ends a session's access and refresh tokens at once; other sessions go on.
    let (session, other) = (
        gateway.session("alice").await,
        gateway.session("alice").await,
    );
    let logout = |token: &str| http().post(gateway.url("/auth/logout")).bearer_auth(token);
    assert_eq!(
        status_of(logout(&session.access_token)).await,
        StatusCode::NO_CONTENT
    );
    problem(
        http().get(&orders).bearer_auth(&session.access_token),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    problem(refresh(&session.refresh_token), StatusCode::UNAUTHORIZED).await;
    problem(logout(&session.access_token), StatusCode::UNAUTHORIZED).await;
    assert_eq!(
        status_of(http().get(&orders).bearer_auth(&other.access_token)).await,
        StatusCode::OK
    );
    for garbage in [
        "",
        "no-dot",
        "not-a-uuid.secret",
        "1f0e6d4c-0000-4000-8000-000000000000.x",
    ] {
        problem(refresh(garbage), StatusCode::UNAUTHORIZED).await;
    }
}

#[tokio::test]
async fn a_rotated_key_verifies_until_it_is_removed() {
    let old = TestGateway::spawn(BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(echo_upstream().await),
    )]))
    .await;
    let routes = old.config.routes.clone();
    let old_token = old.login("alice").await;
    let new_pem = keys::generate().expect("key");
    let old_public = keys::public_pem(old.private_key()).expect("public");
    // The rotated gateway shares the old one's sessions, as a second instance would.
    let database = old.config.database.url.clone();
    let rotated = TestGateway::spawn_with(routes.clone(), |c| {
        c.jwt.keys = vec![
            inline_key(KID, old_public.clone()),
            inline_key("new", new_pem.clone()),
        ];
        c.database.url = database.clone();
    })
    .await;
    let orders = rotated.url("/api/orders");
    assert_eq!(
        status_of(http().get(&orders).bearer_auth(&old_token)).await,
        StatusCode::OK,
        "a token of the old key still works"
    );
    let new_token = rotated.login("alice").await;
    let kid = jsonwebtoken::decode_header(&new_token).expect("header").kid;
    assert_eq!(kid.as_deref(), Some("new"), "the new key signs");
    let jwks: Value = http()
        .get(rotated.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert_eq!(kids, [KID, "new"]);

    // Once the old key is removed, its tokens are refused; the new key's still pass.
    let after = TestGateway::spawn_with(routes, |c| {
        c.jwt.keys = vec![inline_key("new", new_pem.clone())];
        c.database.url = database.clone();
    })
    .await;
    let orders = after.url("/api/orders");
    problem(
        http().get(&orders).bearer_auth(&old_token),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(
        status_of(http().get(&orders).bearer_auth(&new_token)).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_login_brute_force_is_cut_off_per_user_and_per_address() {
    let (_api, gateway) = stack().await;
    let gateway = TestGateway::spawn_with(gateway.config.routes.clone(), |c| {
        c.limits.login_per_user = Rate::per_minute(1, 5);
        c.limits.login_per_address = Rate::per_minute(1, 8);
    })
    .await;
    let login = |user: &str, password: &str| {
        http()
            .post(gateway.url("/auth/login"))
            .json(&json!({ "username": user, "password": password }))
    };
    for guess in 0..5 {
        problem(
            login("alice", &format!("guess-{guess}")),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    // The limit is on attempts: even the right password must wait now.
    let response = login("alice", oms_gateway::testing::PASSWORD)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (50..=60).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    let body: Value = response.json().await.expect("problem");
    assert_eq!(body["type"], "https://oms.dev/problems/rate-limited");
    // Spreading the guesses over users does not help: the address has its own limit.
    problem(login("bob", "guess"), StatusCode::UNAUTHORIZED).await;
    problem(login("admin", "guess"), StatusCode::UNAUTHORIZED).await;
    problem(login("mallory", "guess"), StatusCode::TOO_MANY_REQUESTS).await;
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_429_while_other_callers_and_routes_do_not() {
    let echo = echo_upstream().await;
    let gateway = TestGateway::spawn_with(
        BTreeMap::from([
            ("/api/orders".into(), RouteConfig::Upstream(echo.clone())),
            ("/api/inventory".into(), RouteConfig::Upstream(echo)),
        ]),
        |c| {
            c.limits.per_client = Rate::per_minute(1, 3);
            c.limits.unauthenticated = Rate::per_minute(1, 2);
        },
    )
    .await;
    let (alice, bob) = (gateway.login("alice").await, gateway.login("bob").await);
    let orders = gateway.url("/api/orders");
    for _ in 0..3 {
        assert_eq!(
            status_of(http().get(&orders).bearer_auth(&alice)).await,
            StatusCode::OK
        );
    }
    let response = http()
        .get(&orders)
        .bearer_auth(&alice)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        status_of(http().get(&orders).bearer_auth(&bob)).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(
            http()
                .get(gateway.url("/api/inventory"))
                .bearer_auth(&alice)
        )
        .await,
        StatusCode::OK
    );
    // An address that keeps sending bad tokens is slowed down too.
    for _ in 0..2 {
        problem(
            http().get(&orders).bearer_auth("junk"),
            StatusCode::UNAUTHORIZED,
        )
        .await;
    }
    problem(
        http().get(&orders).bearer_auth("junk"),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused_with_a_clear_4xx() {
    let (_api, gateway) = stack().await;
    let token = gateway.login("alice").await;
    let orders = gateway.url("/api/orders");
    let big = "x".repeat(gateway.config.max_body_bytes + 1);
    let body = problem(
        http()
            .post(&orders)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(big),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(body["status"], 413);
    let mut many = http().get(&orders).bearer_auth(&token);
    for i in 0..gateway.config.max_headers {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    problem(many, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE).await;
    let long = "y".repeat(gateway.config.max_header_bytes);
    problem(
        http()
            .get(&orders)
            .bearer_auth(&token)
            .header("x-long", long),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    )
    .await;
    // Within the bounds, the same request passes.
    assert_eq!(
        status_of(
            http()
                .post(&orders)
                .bearer_auth(&token)
                .json(&order_for(gateway.alice))
        )
        .await,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn cors_is_closed_by_default_and_open_to_configured_origins_only() {
    let routes = BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(echo_upstream().await),
    )]);
    let preflight = |gateway: &TestGateway, origin: &str| {
        http()
            .request(reqwest::Method::OPTIONS, gateway.url("/api/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
    };
    let closed = TestGateway::spawn(routes.clone()).await;
    let response = preflight(&closed, "https://shop.example")
        .send()
        .await
        .expect("send");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin"),
        "closed by default: {:?}",
        response.headers()
    );

    let open = TestGateway::spawn_with(routes, |c| {
        c.cors.allowed_origins = vec!["https://shop.example".into()];
    })
    .await;
    let response = preflight(&open, "https://shop.example")
        .send()
        .await
        .expect("send");
    assert!(response.status().is_success());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(allowed.contains("authorization"), "{allowed}");
    let response = preflight(&open, "https://evil.example")
        .send()
        .await
        .expect("send");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin")
    );
}

#[tokio::test]
async fn the_console_page_forbids_framing_inline_script_and_foreign_origins() {
    let gateway = TestGateway::spawn(BTreeMap::new()).await;
    for path in ["/console/", "/console/console.js", "/console/console.css"] {
        let response = http().get(gateway.url(path)).send().await.expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().expect("ascii");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
}

#[tokio::test]
async fn every_admin_action_and_every_refused_attempt_is_audited() {
    let (_api, gateway) = stack().await;
    let (admin, alice) = (gateway.login("admin").await, gateway.login("alice").await);
    let order: Value = http()
        .post(gateway.url("/api/orders"))
        .bearer_auth(&alice)
        .json(&order_for(gateway.alice))
        .send()
        .await
        .expect("place")
        .json()
        .await
        .expect("order");
    let path = format!("/api/orders/{}/status", order["id"].as_str().expect("id"));
    let change = |token: &str| {
        http()
            .put(gateway.url(&path))
            .bearer_auth(token)
            .header("x-request-id", format!("audit-{}", token.len() % 7))
            .json(&json!({ "status": "RESERVED" }))
    };
    problem(change(&alice), StatusCode::FORBIDDEN).await;
    assert_eq!(status_of(change(&admin)).await, StatusCode::OK);
    // Reading is not an admin action.
    http()
        .get(gateway.url("/api/orders"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("list");

    problem(
        http().get(gateway.url("/admin/audit")).bearer_auth(&alice),
        StatusCode::FORBIDDEN,
    )
    .await;
    let entries: Vec<oms_gateway::audit::Entry> = http()
        .get(gateway.url("/admin/audit?limit=10"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("audit")
        .json()
        .await
        .expect("entries");
    let seen: Vec<(&str, &str, &str, i16)> = entries
        .iter()
        .map(|e| (e.who.as_str(), e.method.as_str(), e.path.as_str(), e.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("admin", "PUT", path.as_str(), 200),
            ("alice", "PUT", path.as_str(), 403),
        ],
        "newest first"
    );
    let newest = &entries[0];
    assert_eq!(newest.role, "admin");
    assert_eq!(newest.address, "127.0.0.1");
    assert!(newest.request_id.starts_with("audit-"), "{newest:?}");
    let age = chrono::Utc::now() - newest.at;
    assert!(age.num_seconds() < 60, "{}", newest.at);
    problem(
        http()
            .get(gateway.url("/admin/audit?limit=0"))
            .bearer_auth(&admin),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn without_its_database_the_gateway_refuses_with_503_rather_than_trusting() {
    let gateway = TestGateway::spawn_with(
        BTreeMap::from([(
            "/api/orders".into(),
            RouteConfig::Upstream(echo_upstream().await),
        )]),
        |c| {
            c.database.url = Secret::new(format!(
                "postgres://postgres@127.0.0.1:{}/none",
                oms_saga::testing::free_port()
            ));
            c.database.acquire_timeout = std::time::Duration::from_millis(500);
        },
    )
    .await;
    let body = problem(
        http()
            .post(gateway.url("/auth/login"))
            .json(&json!({ "username": "alice", "password": oms_gateway::testing::PASSWORD })),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("Sessions")
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gateway = TestGateway::spawn_with(
        BTreeMap::from([(
            "/api/orders".into(),
            RouteConfig::Upstream(echo_upstream().await),
        )]),
        |c| c.request_timeout = std::time::Duration::from_millis(300),
    )
    .await;
    let token = gateway.login("alice").await;
    // Promises 100 bytes, sends 2, then waits: a slow-loris upload.
    let mut socket = tokio::net::TcpStream::connect(gateway.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/orders HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\""
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0_u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered before the client gave up")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

/// Each instance remembers the sessions it found open and hears of their ends through
/// PostgreSQL notifications: an end at one instance reaches the others, an end it did not hear
/// of is trusted no further than its listening connection, and when that connection drops it
/// forgets everything and asks again.
#[tokio::test]
async fn an_ended_session_is_refused_by_every_instance_that_remembered_it() {
    let routes = BTreeMap::from([(
        "/api/orders".into(),
        RouteConfig::Upstream(echo_upstream().await),
    )]);
    let first = TestGateway::spawn(routes.clone()).await;
    let database = first.config.database.url.clone();
    let second = TestGateway::spawn_with(routes, |c| {
        c.database.url = database.clone();
        c.jwt.keys = first.config.jwt.keys.clone();
    })
    .await;
    let db = sqlx::PgPool::connect(database.expose())
        .await
        .expect("gateway database");
    let listeners = "SELECT pid FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'LISTEN%'";
    oms_saga::testing::eventually(
        std::time::Duration::from_secs(10),
        "both instances to listen",
        || async {
            let pids: Vec<i32> = sqlx::query_scalar(listeners)
                .fetch_all(&db)
                .await
                .expect("activity");
            (pids.len() == 2).then_some(())
        },
    )
    .await;
    let orders = second.url("/api/orders");
    let answer = |token: String| {
        let request = http().get(&orders).bearer_auth(token);
        async move { status_of(request).await }
    };
    let refused_soon = |token: String, what: &'static str| {
        oms_saga::testing::eventually(std::time::Duration::from_secs(5), what, move || {
            let response = answer(token.clone());
            async move { (response.await == StatusCode::UNAUTHORIZED).then_some(()) }
        })
    };
    let end_silently = |sid: uuid::Uuid| {
        sqlx::query("UPDATE sessions SET ended_at = now(), end_reason = 'test' WHERE id = $1")
            .bind(sid)
            .execute(&db)
    };

    // A logout at the first instance reaches the second, which had found the session open.
    let session = first.session("alice").await;
    assert_eq!(answer(session.access_token.clone()).await, StatusCode::OK);
    assert_eq!(
        status_of(
            http()
                .post(first.url("/auth/logout"))
                .bearer_auth(&session.access_token)
        )
        .await,
        StatusCode::NO_CONTENT
    );
    refused_soon(
        session.access_token,
        "the logout to reach the second instance",
    )
    .await;

    // An end nobody announced is not heard of: the second instance trusts what it remembered
    // until the announcement comes.
    let session = first.session("alice").await;
    let sid = claims_of(&session.access_token).sid;
    assert_eq!(answer(session.access_token.clone()).await, StatusCode::OK);
    end_silently(sid).await.expect("end");
    assert_eq!(
        answer(session.access_token.clone()).await,
        StatusCode::OK,
        "remembered, not asked again"
    );
    sqlx::query("SELECT pg_notify('oms_session_ended', $1::text)")
        .bind(sid)
        .execute(&db)
        .await
        .expect("notify");
    refused_soon(session.access_token, "the announced end to be heard").await;

    // Without its listening connection an instance cannot hear of ends, so it forgets what it
    // remembered and asks the database.
    let session = first.session("alice").await;
    assert_eq!(answer(session.access_token.clone()).await, StatusCode::OK);
    end_silently(claims_of(&session.access_token).sid)
        .await
        .expect("end");
    sqlx::query(&format!(
        "SELECT pg_terminate_backend(pid) FROM ({listeners}) l"
    ))
    .execute(&db)
    .await
    .expect("terminate");
    refused_soon(session.access_token, "the instance to forget and ask again").await;
}
