//! Starts a real gateway for a test, in front of the given upstreams, with three users whose
//! password is [`PASSWORD`].

use std::{collections::BTreeMap, net::SocketAddr};

use oms_saga::config::Secret;
use uuid::Uuid;

use crate::{
    GatewayConfig,
    auth::{self, Role},
    config::{RouteConfig, UserConfig},
};

pub const PASSWORD: &str = "test-password";
pub const SECRET: &str = "a test signing key of at least thirty-two bytes";

#[derive(Debug)]
pub struct TestGateway {
    pub addr: SocketAddr,
    pub config: GatewayConfig,
    pub alice: Uuid,
    pub bob: Uuid,
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
        config.jwt.secret = Some(Secret::new(SECRET));
        config.trace = oms_saga::testing::trace_config();
        customise(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::run(config.clone(), listener, std::future::pending()));
        Self {
            addr,
            config,
            alice,
            bob,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Logs `username` in and returns the access token.
    pub async fn login(&self, username: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({ "username": username, "password": PASSWORD }))
            .send()
            .await
            .expect("login");
        assert_eq!(response.status(), 200, "login of {username}");
        let body: crate::http::TokenResponse = response.json().await.expect("token");
        body.access_token
    }
}
