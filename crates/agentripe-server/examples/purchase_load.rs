//! Load run: paid purchases per second through the real server into the real escrow on anvil, over
//! loopback, with latency percentiles. Every purchase is two chain writes (settle, record) from one key.
//!
//!     cargo run --release -p agentripe-server --features testing --example purchase_load -- [PURCHASES] [CLIENTS] [sqlite|postgres] [rpc-calls]
//!
//! With `rpc-calls`, the server reaches anvil through a counting proxy on loopback (an extra hop, so its
//! throughput is not comparable) and the run reports the RPC calls per purchase, by method.

use std::time::{Duration, Instant};

use agentripe_server::testing::{LaggingRpc, Market, PRICE};
use agentripe_store::testing::Engine;
use alloy::primitives::U256;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let purchases: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(400);
    let clients: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(32);
    let engine = match args.get(3).map(String::as_str) {
        Some("postgres") => Engine::Postgres,
        _ => Engine::Sqlite,
    };
    let market = Market::new(engine, "purchase_load").await.expect("PostgreSQL is reachable");

    // Fund the buyers and sign every payment before the clock starts: only the server is measured.
    let per_client = purchases.div_ceil(clients);
    let mut work = Vec::new();
    for _ in 0..clients {
        let buyer = market.buyer(PRICE * per_client as u64).await;
        work.push((0..per_client).map(|_| market.pay_v2(&buyer)).collect::<Vec<_>>());
    }
    let counter = match args.get(4).map(String::as_str) {
        Some("rpc-calls") => Some(LaggingRpc::start(market.anvil.endpoint(), Duration::ZERO).await),
        _ => None,
    };
    let mut config = market.config();
    if let Some(counter) = &counter {
        config.rpc_url = counter.url.clone();
    }
    config.poll_interval = Duration::from_millis(5);
    config.chain_timeout = Duration::from_secs(60);
    config.purchase_timeout = Duration::from_secs(60);
    let server = std::sync::Arc::new(market.start_with(config).await);

    let calls_before = counter.as_ref().map(LaggingRpc::calls).unwrap_or_default();
    let started = Instant::now();
    let handles: Vec<_> = work
        .into_iter()
        .map(|headers| {
            let server = server.clone();
            let agent = market.agent_id;
            tokio::spawn(async move {
                let mut results = Vec::new();
                for header in headers {
                    let sent = Instant::now();
                    let status = server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await.status();
                    results.push((status.as_u16(), sent.elapsed()));
                }
                results
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failures = 0;
    for handle in handles {
        for (status, latency) in handle.await.expect("client") {
            if status == 200 { latencies.push(latency) } else { failures += 1 }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)]
    };
    let total = latencies.len() + failures;
    println!(
        "purchase load: {total} purchases, {clients} clients, {engine:?}, anvil automine, 2 chain writes each"
    );
    println!(
        "  throughput  {:.1} purchases/s over {:.2} s",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  latency     p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        percentile(1.0)
    );
    println!("  non-200     {failures}");
    if let Some(counter) = &counter {
        let per_purchase = |count: u64| count as f64 / total as f64;
        let calls: Vec<(String, u64)> = counter
            .calls()
            .into_iter()
            .map(|(method, count)| {
                let before = calls_before.get(&method).copied().unwrap_or(0);
                (method, count - before)
            })
            .filter(|(_, count)| *count > 0)
            .collect();
        let all: u64 = calls.iter().map(|(_, count)| count).sum();
        println!("  RPC calls   {:.2} per purchase", per_purchase(all));
        for (method, count) in calls {
            println!("    {method:<28} {:.2}", per_purchase(count));
        }
    }
    let escrow = market.usdc_balance(market.deployment.agentripe).await;
    assert_eq!(
        escrow,
        U256::from(PRICE * latencies.len() as u64),
        "every 200 is exactly one deposit in escrow"
    );
    println!("  escrow holds exactly {} deposits", latencies.len());
}
