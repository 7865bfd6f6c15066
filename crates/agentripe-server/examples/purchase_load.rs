//! Load run: paid purchases per second through the real server into the real escrow on anvil, over
//! loopback, with latency percentiles, next to the settlement step alone on the same chain.
//!
//!     cargo run --release -p agentripe-server --features testing --example purchase_load -- [PURCHASES] [CLIENTS] [sqlite|postgres] [rpc-calls]
//!     cargo run --release -p agentripe-server --features testing --example purchase_load -- growth [ROWS] [sqlite|postgres]
//!
//! First the same number of authorizations are settled through a plain x402 facilitator on loopback,
//! by as many clients: one HTTP request per payment, which it decodes and verifies (EIP-712 recovery
//! against the offer), then settles with `transferWithAuthorization` from its own key through an alloy
//! provider (cached nonces, receipts polled every 5 ms, as the server polls), answering once the
//! receipt is in. (x402-rs's facilitator takes two requests, /verify and /settle, and reads the chain
//! before settling: this one is cheaper.) Then the full purchases: verify, settle, record, task,
//! answer. The ratio of the two rates is what the escrow costs on top of settlement. Both runs report
//! the CPU time per purchase of this process (server and clients), of anvil and of PostgreSQL, and how
//! busy the machine's cores were. On PostgreSQL the full run also reports the database transactions per
//! purchase as PostgreSQL counts them (`pg_stat_database`, read once its counts are published).
//!
//! With `rpc-calls`, the server reaches anvil through a counting proxy on loopback (an extra hop, so its
//! throughput is not comparable) and the run reports the RPC calls per purchase, by method.
//!
//! `growth` asks whether the database slows the server down as it fills: 1,000 purchases on a fresh
//! chain and a fresh database, then 1,000 on another fresh chain with a database already holding ROWS
//! (default 10,000) earlier purchases. The earlier purchases are written through the store's own
//! functions, as the server writes them (claim, settle, two signed transactions, task), by a retired
//! operator key; a fresh chain for each half keeps the chain's own growth out of the figure.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use agentripe_server::{
    money_in::facilitator::settlement_call,
    testing::{LaggingRpc, Market, PRICE, key, now},
    util::now_ms,
};
use agentripe_store::{
    Claim, NewPayment, NewTask, SignedTx, Store,
    testing::{Engine, postgres_transactions},
};
use agentripe_x402::{Offer, PaymentPayload, Version, client, encode_header, v2};
use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionRequest,
    sol_types::SolCall,
};
use axum::extract::State;

const CLIENTS: usize = 32;
/// How long PostgreSQL may take to publish a connection's statistics (an idle one's within 10 s).
const STATISTICS_PUBLISHED: Duration = Duration::from_secs(11);
const GROWTH_SAMPLE: usize = 1_000;
/// The anvil account that settles in the plain run: no key of the server's.
const SETTLER: usize = 8;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine = |arg: Option<&String>| match arg.map(String::as_str) {
        Some("postgres") => Engine::Postgres,
        _ => Engine::Sqlite,
    };
    if args.first().map(String::as_str) == Some("growth") {
        let rows = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
        return growth(engine(args.get(2)), rows).await;
    }
    let purchases = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let clients = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(CLIENTS);
    let engine = engine(args.get(2));
    let count_calls = args.get(3).map(String::as_str) == Some("rpc-calls");
    let market = Market::for_load(engine, "purchase_load").await.expect("PostgreSQL is reachable");
    // The proxy's extra hop would make the two rates incomparable: no plain run then.
    let settled = if count_calls { None } else { Some(settle_only(&market, purchases, clients).await) };
    let run = Run::on(&market, engine, purchases, clients, 0, count_calls).await;
    run.report();
    if let Some((rate, cpu)) = settled {
        println!(
            "  settlement alone, through a plain facilitator on the same chain: {rate:.1} /s, CPU {cpu}"
        );
        println!("  full purchases at {:.2} of that rate", run.rate() / rate);
    }
}

/// The rate on a fresh database next to the rate on one that holds `rows` earlier purchases.
async fn growth(engine: Engine, rows: usize) {
    let market = Market::for_load(engine, "purchase_load").await.expect("PostgreSQL is reachable");
    let fresh = Run::on(&market, engine, GROWTH_SAMPLE, CLIENTS, 0, false).await;
    fresh.report();
    drop(market);
    let market = Market::for_load(engine, "purchase_load").await.expect("PostgreSQL is reachable");
    let grown = Run::on(&market, engine, GROWTH_SAMPLE, CLIENTS, rows, false).await;
    grown.report();
    println!(
        "growth: {:.1} purchases/s on a fresh database, {:.1} with {rows} earlier purchases: ratio {:.2}",
        fresh.rate(),
        grown.rate(),
        grown.rate() / fresh.rate()
    );
}

/// Settles `count` authorizations through a plain facilitator (see the module's docs) on loopback, from
/// `clients` clients; returns the settlements per second and the CPU they took.
async fn settle_only(market: &Market, count: usize, clients: usize) -> (f64, CpuPer) {
    // Paid to an account of no one's: tokens arriving in the escrow unannounced would be the server's
    // business in the run that follows.
    let offer = Offer { pay_to: Address::repeat_byte(0x5e), ..market.offer() };
    let accepted = v2::PaymentRequirements::for_offer(&offer);
    let per_client = count.div_ceil(clients);
    let mut buyers = Vec::new();
    for _ in 0..clients {
        buyers.push(market.buyer(PRICE * per_client as u64).await);
    }
    let provider = ProviderBuilder::new()
        .with_cached_nonce_management()
        .wallet(key(&market.anvil, SETTLER))
        .connect_http(market.anvil.endpoint_url());
    provider.client().set_poll_interval(Duration::from_millis(5));
    let facilitator =
        Arc::new(PlainFacilitator { provider: provider.erased(), offer, usdc: market.deployment.usdc });
    let app = axum::Router::new().route("/settle", axum::routing::post(settle)).with_state(facilitator);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let url = format!("http://{}/settle", listener.local_addr().expect("address"));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let cpu = Cpu::now(market);
    let started = Instant::now();
    let handles: Vec<_> = buyers
        .into_iter()
        .map(|buyer| {
            let (http, url, accepted) = (http.clone(), url.clone(), accepted.clone());
            tokio::spawn(async move {
                for _ in 0..per_client {
                    let header = encode_header(&client::pay(&buyer, &accepted, None, now()).expect("sign"));
                    let response =
                        http.post(&url).header("PAYMENT-SIGNATURE", header).send().await.expect("request");
                    assert_eq!(response.status(), 200, "settled");
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.expect("client");
    }
    let settled = per_client * clients;
    let rate = settled as f64 / started.elapsed().as_secs_f64();
    let cpu = cpu.per(market, settled);
    serving.abort();
    (rate, cpu)
}

/// What a plain x402 facilitator does for one payment, in one request: verify, settle, await the receipt.
struct PlainFacilitator {
    provider: DynProvider,
    offer: Offer,
    usdc: Address,
}

async fn settle(
    State(facilitator): State<Arc<PlainFacilitator>>,
    headers: axum::http::HeaderMap,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let Some(header) = headers.get("payment-signature").and_then(|value| value.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(payment) = PaymentPayload::decode(Version::V2, header) else { return StatusCode::BAD_REQUEST };
    if payment.verify(&facilitator.offer, now()).is_err() {
        return StatusCode::PAYMENT_REQUIRED;
    }
    let call = settlement_call(payment.exact()).abi_encode();
    let request = TransactionRequest::default().to(facilitator.usdc).input(call.into());
    let Ok(pending) = facilitator.provider.send_transaction(request).await else {
        return StatusCode::BAD_GATEWAY;
    };
    match pending.get_receipt().await {
        Ok(receipt) if receipt.status() => StatusCode::OK,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// CPU time (user and system) so far of this process (the server and the load's clients), of anvil and
/// of every PostgreSQL process on the machine (its cluster serves the run; with SQLite it idles), and
/// the machine's busy and total time over all its cores.
struct Cpu {
    ours: Duration,
    anvil: Duration,
    postgres: Duration,
    machine: (u64, u64),
}

/// CPU time per purchase, in milliseconds, and the share of the machine's cores that were busy.
#[derive(Clone, Copy)]
struct CpuPer {
    ours: f64,
    anvil: f64,
    postgres: f64,
    busy: f64,
}

impl std::fmt::Display for CpuPer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.2} ms here (server and clients) + {:.2} ms anvil + {:.2} ms PostgreSQL per purchase; cores {:.0}% busy",
            self.ours,
            self.anvil,
            self.postgres,
            self.busy * 100.0
        )
    }
}

impl Cpu {
    fn now(market: &Market) -> Self {
        Self {
            ours: cpu_time("self"),
            anvil: cpu_time(&market.anvil.child().id().to_string()),
            postgres: postgres_cpu_time(),
            machine: machine_ticks(),
        }
    }

    fn per(&self, market: &Market, count: usize) -> CpuPer {
        let now = Self::now(market);
        let ms = |spent: Duration| spent.as_secs_f64() * 1_000.0 / count as f64;
        let (busy, total) = (now.machine.0 - self.machine.0, now.machine.1 - self.machine.1);
        CpuPer {
            ours: ms(now.ours - self.ours),
            anvil: ms(now.anvil - self.anvil),
            postgres: ms(now.postgres.saturating_sub(self.postgres)),
            busy: busy as f64 / total.max(1) as f64,
        }
    }
}

/// The CPU time of every process named `postgres` (the postmaster and its backends).
fn postgres_cpu_time() -> Duration {
    let Ok(processes) = std::fs::read_dir("/proc") else { return Duration::ZERO };
    processes
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().bytes().all(|byte| byte.is_ascii_digit()))
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("comm")).is_ok_and(|name| name.trim() == "postgres")
        })
        .map(|entry| cpu_time(&entry.file_name().to_string_lossy()))
        .sum()
}

/// The machine's busy and total CPU ticks over all cores, from the first line of `/proc/stat` (idle and
/// iowait are the 4th and 5th numbers).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    let idle = ticks.iter().skip(3).take(2).sum::<u64>();
    (total - idle, total)
}

/// A process's CPU time from `/proc/PID/stat` (utime and stime, in Linux's 100 ticks a second); zero
/// where there is no /proc.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis start at the 3rd; utime and stime are the 14th
    // and 15th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.iter().skip(11).take(2).filter_map(|field| field.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// One load run's answers.
struct Run {
    engine: Engine,
    clients: usize,
    earlier: usize,
    elapsed: Duration,
    /// Latencies of the 200 answers.
    latencies: Vec<Duration>,
    /// How many answers of each status.
    statuses: BTreeMap<u16, usize>,
    /// RPC calls by method, when counted.
    calls: Option<BTreeMap<String, u64>>,
    /// PostgreSQL transactions (statements outside one count as one) per purchase, on PostgreSQL.
    transactions: Option<f64>,
    cpu: CpuPer,
}

impl Run {
    async fn on(
        market: &Market,
        engine: Engine,
        purchases: usize,
        clients: usize,
        earlier: usize,
        count_calls: bool,
    ) -> Self {
        if earlier > 0 {
            let store = Store::connect(&market.database_url).await.expect("database");
            let filling = Instant::now();
            write_earlier_purchases(&store, market, earlier).await;
            println!("wrote {earlier} earlier purchases in {:.1} s", filling.elapsed().as_secs_f64());
        }
        // Fund the buyers before the clock starts. Each payment is signed just before it is sent, so a
        // long run never presents an authorization that has expired.
        let per_client = purchases.div_ceil(clients);
        let mut buyers = Vec::new();
        for _ in 0..clients {
            buyers.push(market.buyer(PRICE * per_client as u64).await);
        }
        let counter = match count_calls {
            true => Some(LaggingRpc::start(market.anvil.endpoint(), Duration::ZERO).await),
            false => None,
        };
        let mut config = market.config();
        if let Some(counter) = &counter {
            config.rpc_url = counter.url.clone();
        }
        config.poll_interval = Duration::from_millis(5);
        config.chain_timeout = Duration::from_secs(60);
        config.purchase_timeout = Duration::from_secs(60);
        let server = Arc::new(market.start_with(config).await);
        let offer = v2::PaymentRequirements::for_offer(&market.offer());

        let calls_before = counter.as_ref().map(LaggingRpc::calls).unwrap_or_default();
        // PostgreSQL publishes a connection's counts once it is idle, within ten seconds.
        let postgres = match engine {
            Engine::Postgres => Some(Store::connect(&market.database_url).await.expect("database")),
            Engine::Sqlite => None,
        };
        let transactions_before = match &postgres {
            Some(store) => {
                tokio::time::sleep(STATISTICS_PUBLISHED).await;
                postgres_transactions(store).await
            }
            None => 0,
        };
        let cpu = Cpu::now(market);
        let started = Instant::now();
        let handles: Vec<_> = buyers
            .into_iter()
            .map(|buyer| {
                let (server, offer, agent) = (server.clone(), offer.clone(), market.agent_id);
                tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for _ in 0..per_client {
                        let header = encode_header(&client::pay(&buyer, &offer, None, now()).expect("sign"));
                        let sent = Instant::now();
                        let status = server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await.status();
                        answers.push((status.as_u16(), sent.elapsed()));
                    }
                    answers
                })
            })
            .collect();
        let mut run = Run {
            engine,
            clients,
            earlier,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
            statuses: BTreeMap::new(),
            calls: None,
            transactions: None,
            cpu: CpuPer { ours: 0.0, anvil: 0.0, postgres: 0.0, busy: 0.0 },
        };
        for handle in handles {
            for (status, latency) in handle.await.expect("client") {
                *run.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    run.latencies.push(latency);
                }
            }
        }
        run.elapsed = started.elapsed();
        run.cpu = cpu.per(market, run.total());
        // Stopped before the wait for PostgreSQL's counts, so that its idle reconciler passes meanwhile
        // are not counted as the purchases'.
        server.crash();
        if let Some(store) = &postgres {
            tokio::time::sleep(STATISTICS_PUBLISHED).await;
            let transactions = postgres_transactions(store).await - transactions_before;
            run.transactions = Some(transactions as f64 / run.total() as f64);
        }
        run.latencies.sort();
        run.calls = counter.map(|counter| {
            let mut calls = counter.calls();
            for (method, count) in &mut calls {
                *count -= calls_before.get(method).copied().unwrap_or(0);
            }
            calls.retain(|_, count| *count > 0);
            calls
        });

        // Every 200 is a deposit in escrow; an answer that gave up waiting (504) may still be one, as its
        // purchase goes on and is recorded later. Nothing else is charged.
        let deposits = market.usdc_balance(market.deployment.agentripe).await / U256::from(PRICE);
        let answered = U256::from(run.latencies.len());
        let charged_at_most = answered + U256::from(run.statuses.get(&504).copied().unwrap_or(0));
        assert!(
            answered <= deposits && deposits <= charged_at_most,
            "{deposits} deposits for {answered} purchases answered 200 ({:?})",
            run.statuses
        );
        run
    }

    fn total(&self) -> usize {
        self.statuses.values().sum()
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn report(&self) {
        let latencies = &self.latencies;
        let percentile = |p: f64| {
            latencies
                [((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1).min(latencies.len() - 1)]
        };
        println!(
            "purchase load: {} purchases, {} clients, {:?} holding {} earlier purchases, anvil automine",
            self.total(),
            self.clients,
            self.engine,
            self.earlier
        );
        println!("  throughput  {:.1} purchases/s over {:.2} s", self.rate(), self.elapsed.as_secs_f64());
        println!(
            "  latency     p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
            percentile(0.50),
            percentile(0.90),
            percentile(0.99),
            percentile(1.0)
        );
        println!("  answers     {:?}", self.statuses);
        println!("  CPU         {}", self.cpu);
        if let Some(transactions) = self.transactions {
            println!(
                "  PostgreSQL  {transactions:.1} transactions per purchase (a statement outside one counts as one)"
            );
        }
        if let Some(calls) = &self.calls {
            let per_purchase = |count: u64| count as f64 / self.total() as f64;
            println!("  RPC calls   {:.2} per purchase", per_purchase(calls.values().sum()));
            for (method, count) in calls {
                println!("    {method:<28} {:.2}", per_purchase(*count));
            }
        }
    }
}

/// Writes `count` purchases into the database as the server would have: claimed, settled, recorded as
/// a task, with a settlement and a record transaction each, signed by a retired operator key (so the
/// running server's nonces are untouched).
async fn write_earlier_purchases(store: &Store, market: &Market, count: usize) {
    const HOLDER: &str = "earlier";
    let retired = format!("{:#x}", Address::repeat_byte(0x7e));
    store.sync_nonce(&retired, 0).await.expect("nonce counter");
    let asset = format!("{:#x}", market.deployment.usdc);
    for i in 0..count {
        let payer = format!("{:#x}", Address::random());
        let deposit = format!("{:#x}", B256::random());
        let new = NewPayment {
            chain_id: market.deployment.chain_id as i64,
            asset: asset.clone(),
            payer: payer.clone(),
            nonce: format!("{:#x}", B256::random()),
            amount: PRICE.to_string(),
            agent_id: market.agent_id.to_string(),
            service_path: "/earlier".into(),
            x402_version: 2,
            payment: "{}".into(),
            valid_before: i64::MAX,
            request: "{}".into(),
            search_from_block: i as i64,
        };
        let lease = Some((HOLDER, i64::MAX));
        let Claim::New(payment) = store.claim_payment(&new, lease, now_ms()).await.expect("claim") else {
            panic!("a random authorization was claimed before")
        };
        for (purpose, subject) in [("settle", payment.id.to_string()), ("record", payment.id.to_string())] {
            let signed = SignedTx { tx_hash: format!("{:#x}", B256::random()), raw_tx: "0x".into() };
            store
                .sign_and_store(&retired, purpose, &[&subject], None, now_ms(), |_| Ok::<_, ()>(signed))
                .await
                .expect("store")
                .expect("signed");
        }
        let lease = payment.leased_by(HOLDER);
        store.mark_payment_settled(lease, &deposit, &deposit, now_ms()).await.expect("settled");
        let task = NewTask {
            id: deposit,
            agent_id: new.agent_id,
            product_id: new.service_path,
            buyer: payer,
            amount: new.amount,
            request_payload: None,
            task_detail: None,
            task_metadata: None,
            reviewer_request: None,
            expires_at: i64::MAX,
        };
        store.record_payment(payment.id, &task, now_ms()).await.expect("recorded");
    }
}
