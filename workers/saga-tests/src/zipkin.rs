//! A stand-in for Zipkin's span intake: it takes what `POST /api/v2/spans` would (Zipkin v2 JSON)
//! and keeps it for the test to look at. No Zipkin server runs here; the exporter cannot tell the
//! difference, since it only speaks this one endpoint.

use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;

#[derive(Debug)]
pub struct ZipkinReceiver {
    url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl ZipkinReceiver {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/api/v2/spans", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/api/v2/spans",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, spans }
    }

    /// The endpoint to export to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().expect("spans").clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Value>>>>,
    Json(batch): Json<Vec<Value>>,
) -> StatusCode {
    spans.lock().expect("spans").extend(batch);
    StatusCode::ACCEPTED
}
