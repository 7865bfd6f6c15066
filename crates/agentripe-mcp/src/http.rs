//! Streamable HTTP: the tools at `/mcp`. Whoever reaches this endpoint spends within the wallet's
//! policy, so it answers only requests carrying the bearer token, and rmcp's Host check refuses
//! DNS-rebinding from browsers.

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rmcp::transport::{
    StreamableHttpServerConfig, StreamableHttpService,
    streamable_http_server::session::local::LocalSessionManager,
};
use tokio::net::TcpListener;

use crate::MarketTools;

/// Serves `tools` on `listener` at `/mcp` until the process ends. `token`: the bearer token every
/// request must carry; `allowed_hosts`: the Host values accepted beyond loopback.
pub async fn serve_http(
    tools: MarketTools,
    listener: TcpListener,
    token: String,
    allowed_hosts: Vec<String>,
) -> Result<(), String> {
    let mut config = StreamableHttpServerConfig::default();
    config.allowed_hosts.extend(allowed_hosts);
    let service: StreamableHttpService<MarketTools, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(tools.clone()), Default::default(), config);
    let expected: Arc<str> = format!("Bearer {token}").into();
    let router = Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let expected = expected.clone();
            async move { authorized(&expected, request, next).await }
        },
    ));
    axum::serve(listener, router).await.map_err(|error| error.to_string())
}

async fn authorized(expected: &str, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).map(|value| value.as_bytes());
    if presented.is_some_and(|presented| constant_time_eq(presented, expected.as_bytes())) {
        return next.run(request).await;
    }
    let body = r#"{"error":"unauthorized","message":"send Authorization: Bearer <AGENTRIPE_MCP_TOKEN>"}"#;
    (StatusCode::UNAUTHORIZED, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Compares without stopping at the first difference, so timing does not reveal the token.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len() && left.iter().zip(right).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}
