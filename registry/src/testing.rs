//! Starts a real registry for a test, on its own database and port.

use std::net::SocketAddr;

use oms_saga::testing;

#[derive(Debug)]
pub struct TestRegistry {
    pub addr: SocketAddr,
    pub db: testing::TestDatabase,
}

impl TestRegistry {
    pub async fn spawn() -> Self {
        let db = testing::database(&crate::MIGRATOR).await;
        let mut config = crate::RegistryConfig::default();
        config.database.url = oms_saga::config::Secret::new(db.url.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(crate::run(config, listener, std::future::pending()));
        Self { addr, db }
    }

    /// Serves the same registry (same database) on another port too, as if it came back there.
    pub async fn serve_at(&self, port: u16) {
        let mut config = crate::RegistryConfig::default();
        config.database.url = oms_saga::config::Secret::new(self.db.url.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind");
        tokio::spawn(crate::run(config, listener, std::future::pending()));
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
