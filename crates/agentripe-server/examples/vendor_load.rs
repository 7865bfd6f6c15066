//! Load run: authenticated `GET /vendor/tasks` from many clients on loopback, next to the single-core
//! rate of the EIP-191 recovery every request pays (the server never caches signature checks).
//!
//!     cargo run --release -p agentripe-server --features testing --example vendor_load -- [REQUESTS] [CLIENTS]

use std::time::{Duration, Instant};

use agentripe_server::{
    testing::{Market, PRICE, now, vendor_headers},
    vendor_auth::verify_signed_headers,
};
use agentripe_store::testing::Engine;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let requests: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let market = Market::new(Engine::Sqlite, "vendor_load").await.expect("market");
    let server = std::sync::Arc::new(market.start().await);
    for _ in 0..10 {
        let buyer = market.buyer(PRICE).await;
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
        assert_eq!(response.status(), 200);
    }

    // The signature check alone, on one core.
    let headers = vendor_headers(&market.vendor, market.agent_id, now());
    let mut axum_headers = axum::http::HeaderMap::new();
    for (name, value) in &headers {
        axum_headers.insert(
            name.as_str().parse::<axum::http::HeaderName>().expect("name"),
            value.to_str().expect("ascii").parse().expect("value"),
        );
    }
    let rounds = 5_000;
    let started = Instant::now();
    for _ in 0..rounds {
        verify_signed_headers(std::hint::black_box(&axum_headers), now()).expect("valid");
    }
    let recover_rate = f64::from(rounds) / started.elapsed().as_secs_f64();

    let per_client = requests.div_ceil(clients);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let server = server.clone();
            let headers = vendor_headers(&market.vendor, market.agent_id, now());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let sent = Instant::now();
                    let response = server
                        .http
                        .get(format!("{}/vendor/tasks", server.base))
                        .headers(headers.clone())
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await.expect("body");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("client"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    println!(
        "vendor task list load: {} requests, {clients} clients, 10 pending tasks, SQLite",
        latencies.len()
    );
    println!(
        "  throughput  {rate:.0} requests/s ({:.0}% of one core's signature checks)",
        100.0 * rate / recover_rate
    );
    println!("  latency     p50 {:?}  p99 {:?}  max {:?}", at(0.50), at(0.99), at(1.0));
    println!("  one core    {recover_rate:.0} signature checks/s (EIP-191 recovery + header parsing)");
}
