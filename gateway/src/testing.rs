//! Starts a real gateway for a test, in front of the given upstreams, with three users whose
//! password is [`PASSWORD`], a signing key of its own (kid [`KID`]), and a database of its own.

use std::{collections::BTreeMap, net::SocketAddr};

use oms_saga::config::Secret;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    GatewayConfig,
    auth::{self, Role},
    config::{Rate, RouteConfig, UserConfig},
    keys::KeyConfig,
};

pub const PASSWORD: &str = "test-password";
pub const KID: &str = "test-key";

#[derive(Debug)]
pub struct TestGateway {
    pub addr: SocketAddr,
    pub config: GatewayConfig,
    pub alice: Uuid,
    pub bob: Uuid,
    /// Its own database, of sessions and the audit log.
    pub db: oms_saga::testing::TestDatabase,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::Error>>,
}

impl TestGateway {
    pub async fn spawn(routes: BTreeMap<String, RouteConfig>) -> Self {
        Self::spawn_with(routes, |_| {}).await
    }

    /// A gateway whose config `customise` adjusted first.
    pub async fn spawn_with(
        routes: BTreeMap<String, RouteConfig>,
        customise: impl FnOnce(&mut GatewayConfig),
    ) -> Self {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let db = oms_saga::testing::database(&crate::MIGRATOR).await;
        let hash = Secret::new(auth::hash_password(PASSWORD).expect("hash"));
        let user = |name: &str, role, customer_id| UserConfig {
            username: name.into(),
            password_hash: hash.clone(),
            role,
            customer_id,
        };
        let mut config = GatewayConfig {
            users: vec![
                user("admin", Role::Admin, None),
                user("alice", Role::User, Some(alice)),
                user("bob", Role::User, Some(bob)),
            ],
            routes,
            ..GatewayConfig::default()
        };
        config.jwt.keys = vec![KeyConfig {
            kid: KID.into(),
            pem: Some(Secret::new(crate::keys::generate().expect("key"))),
            pem_file: None,
        }];
        config.database.url = Secret::new(db.url.clone());
        // Tests call often, from one address; the limits have tests of their own.
        let plenty = Rate::per_second(10_000, 10_000);
        config.limits.per_client = plenty;
        config.limits.unauthenticated = plenty;
        config.limits.login_per_user = plenty;
        config.limits.login_per_address = plenty;
        config.trace = oms_saga::testing::trace_config();
        customise(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(crate::run(
            config.clone(),
            listener,
            stop.clone().cancelled_owned(),
        ));
        Self {
            addr,
            config,
            alice,
            bob,
            db,
            stop,
            task,
        }
    }

    /// Stops it the way SIGTERM does: it stops accepting, and drains what is in flight.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("gateway task")
            .expect("gateway exit");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The signing key's private PEM.
    pub fn private_key(&self) -> &str {
        self.config.jwt.keys[0]
            .pem
            .as_ref()
            .expect("inline key")
            .expose()
    }

    /// Logs `username` in and returns the access token.
    pub async fn login(&self, username: &str) -> String {
        self.session(username).await.access_token
    }

    /// Logs `username` in and returns the session's tokens.
    pub async fn session(&self, username: &str) -> crate::http::TokenResponse {
        let response = reqwest::Client::new()
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": PASSWORD }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200, "login of {username}");
        response.json().await.expect("tokens")
    }
}
