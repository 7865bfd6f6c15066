//! Abuse run: honest buyers keep buying while strangers flood the server with registrations, purchases
//! from empty wallets, searches and SSRF attempts, all at once, for a bounded time. Printed: the
//! operator's gas spent on the flood, the process's RSS, honest throughput and p99 against a quiet run
//! of the same length, and what every attack request was answered.
//!
//! Every client has a loopback address of its own (127.0.1.x honest, 127.0.2.x attackers), so the
//! per-address rate limits apply as they would on the internet.
//!
//!     cargo run --release -p agentripe-server --features testing --example abuse_load -- [SECONDS]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use agentripe_server::{
    Config,
    testing::{Market, PRICE, Server, now},
    vendor_auth::signed_headers,
};
use agentripe_store::{Store, testing::Engine};
use alloy::{primitives::U256, providers::Provider, signers::local::PrivateKeySigner};
use serde_json::{Value, json};

const HONEST_CLIENTS: u8 = 8;
const ATTACKERS_PER_KIND: u8 = 4;

fn client_at(address: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::V4(address)).build().expect("client")
}

/// Buys as fast as answers come, from one address per buyer; returns each purchase's latency.
async fn honest_buyers(market: &Arc<Market>, server: &Arc<Server>, seconds: u64) -> Vec<Duration> {
    let mut buyers = Vec::new();
    for i in 0..HONEST_CLIENTS {
        let payments = 40 * seconds as usize;
        let buyer = market.buyer(PRICE * payments as u64).await;
        let headers: Vec<String> = (0..payments).map(|_| market.pay_v2(&buyer)).collect();
        buyers.push((client_at(Ipv4Addr::new(127, 0, 1, i + 1)), headers));
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let url = server.purchase_url(market.agent_id);
    let handles: Vec<_> = buyers
        .into_iter()
        .map(|(http, headers)| {
            let url = url.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for header in headers {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let sent = Instant::now();
                    let response = http.post(&url).header("PAYMENT-SIGNATURE", header).send().await;
                    if response.is_ok_and(|response| response.status() == 200) {
                        latencies.push(sent.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.expect("buyer"));
    }
    latencies.sort();
    latencies
}

/// One kind of attack from its own addresses until the deadline; counts answers by status, and how many
/// were not the API's JSON error.
async fn attack<F, Fut>(kind: u8, deadline: Instant, request: F) -> (BTreeMap<u16, usize>, usize)
where
    F: Fn(reqwest::Client, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send,
{
    let handles: Vec<_> = (0..ATTACKERS_PER_KIND)
        .map(|i| {
            let (http, request) = (client_at(Ipv4Addr::new(127, 0, 2, kind * 16 + i + 1)), request.clone());
            tokio::spawn(async move {
                let (mut statuses, mut not_json) = (BTreeMap::new(), 0);
                let mut n = 0;
                while Instant::now() < deadline {
                    n += 1;
                    let Ok(response) = request(http.clone(), n).await else { continue };
                    let status = response.status().as_u16();
                    *statuses.entry(status).or_insert(0) += 1;
                    let body: Option<Value> = response.json().await.ok();
                    let is_error =
                        body.is_some_and(|body| body["error"].is_string() && body["message"].is_string());
                    // 402s carry x402 requirements, 201s a registration: only 4xx/5xx must be the error shape.
                    if status >= 400 && status != 402 && !is_error {
                        not_json += 1;
                    }
                }
                (statuses, not_json)
            })
        })
        .collect();
    let (mut statuses, mut not_json) = (BTreeMap::new(), 0);
    for handle in handles {
        let (counted, bad) = handle.await.expect("attacker");
        for (status, count) in counted {
            *statuses.entry(status).or_insert(0) += count;
        }
        not_json += bad;
    }
    (statuses, not_json)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn report(label: &str, latencies: &[Duration], seconds: u64) {
    let p = |q: f64| {
        latencies[((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)]
    };
    println!(
        "  {label:<7} {} purchases, {:.1} /s, p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        p(0.5),
        p(0.99)
    );
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(15);
    let market = Arc::new(Market::new(Engine::Sqlite, "abuse_load").await.expect("SQLite"));
    // The test market turns the limits per client off; this run has them as a public server would.
    let defaults =
        Config::new(String::new(), market.deployment.clone(), market.operator.clone(), String::new());
    let mut config = market.config();
    config.rate_limit = defaults.rate_limit;
    config.http.max_connections_per_client = defaults.http.max_connections_per_client;
    config.catalog_allow_private = false;
    config.poll_interval = Duration::from_millis(5);
    config.purchase_timeout = Duration::from_secs(60);
    let server = Arc::new(market.start_with(config).await);
    let store = Store::connect(&market.database_url).await.expect("store");

    // Agents whose registration files point at internal addresses, registered on chain by a stranger.
    let mut ssrf_agents = Vec::new();
    for uri in
        ["http://169.254.169.254/latest/meta-data/", "http://127.0.0.1:5432/", "http://10.0.0.1/agent.json"]
    {
        ssrf_agents.push(market.register_agent(uri).await);
    }

    println!(
        "abuse run: {seconds} s each, SQLite, anvil automine, {HONEST_CLIENTS} honest buyers, {ATTACKERS_PER_KIND} addresses per attack"
    );
    let rss_before = rss_mib();
    let quiet = honest_buyers(&market, &server, seconds).await;
    let rss_quiet = rss_mib();

    let operator = market.operator.address();
    let eth_before = market.provider.get_balance(operator).await.expect("balance");
    let flood_started = agentripe_server::util::now_ms();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let base = server.base.clone();
    let data = json!({ "data": serde_json::from_str::<Value>(agentripe_server::testing::CATALOG).expect("catalog") });
    let registrations = tokio::spawn(attack(0, deadline, {
        let (base, data) = (base.clone(), data.clone());
        move |http: reqwest::Client, _| {
            let headers = signed_headers(&PrivateKeySigner::random(), None, now()).expect("sign");
            http.post(format!("{base}/agents/register")).headers(headers).json(&data).send()
        }
    }));
    let empty_wallets = tokio::spawn(attack(1, deadline, {
        let (market, url) = (market.clone(), server.purchase_url(market.agent_id));
        move |http: reqwest::Client, _| {
            let header = market.pay_v2(&PrivateKeySigner::random());
            http.post(&url).header("PAYMENT-SIGNATURE", header).send()
        }
    }));
    let searches = tokio::spawn(attack(2, deadline, {
        let base = base.clone();
        move |http: reqwest::Client, n| {
            let path = if n.is_multiple_of(2) {
                format!("agents?q=tr{n}%20text")
            } else {
                format!("discovery/resources?q=trans&offset={n}")
            };
            http.get(format!("{base}/{path}")).send()
        }
    }));
    let ssrf = tokio::spawn(attack(3, deadline, {
        let base = base.clone();
        move |http: reqwest::Client, n| {
            let agent = ssrf_agents[n % ssrf_agents.len()];
            let path =
                if n.is_multiple_of(2) { format!("agents/{agent}") } else { format!("{agent}/translate") };
            http.get(format!("{base}/{path}")).send()
        }
    }));
    let under_attack = honest_buyers(&market, &server, seconds).await;
    let rss_attack = rss_mib();
    let attacks = [
        ("registration flood", registrations.await.expect("attack")),
        ("purchases from empty wallets", empty_wallets.await.expect("attack")),
        ("search flood", searches.await.expect("attack")),
        ("SSRF attempts", ssrf.await.expect("attack")),
    ];
    // Registrations admitted before the budget ran out finish in the background: let them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Each admitted registration reserves its mint's estimate and a transfer: at least what it spent.
    let flood_gas = store.registration_gas_since(flood_started).await.expect("gas");
    let eth_after = market.provider.get_balance(operator).await.expect("balance");

    println!("honest purchases:");
    report("quiet", &quiet, seconds);
    report("attack", &under_attack, seconds);
    println!("attacks (status: count):");
    for (name, (statuses, not_json)) in &attacks {
        println!("  {name:<30} {statuses:?}, answers not a JSON error: {not_json}");
    }
    println!(
        "operator: {flood_gas} gas reserved by the registration flood (budget {} a day); ETH spent in the attack run, honest purchases included: {} wei",
        defaults.registration.gas_per_day,
        eth_before.saturating_sub(eth_after)
    );
    println!(
        "process RSS (server and clients): {rss_before:.0} MiB at start, {rss_quiet:.0} after the quiet run, {rss_attack:.0} after the attack run"
    );
    let escrow = market.usdc_balance(market.deployment.agentripe).await;
    assert_eq!(
        escrow,
        U256::from(PRICE * (quiet.len() + under_attack.len()) as u64),
        "every honest 200 is one deposit"
    );
}
