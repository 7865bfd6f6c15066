//! Crash campaign: the server runs as its own process and is killed with SIGKILL at random moments while
//! buyers purchase and the vendor completes or fails the tasks; each time it is started again at once.
//! When the load stops, the last server reconciles, and the chain is audited against the database:
//!   - every authorization the buyers signed is either unused, or settled into exactly one deposit on
//!     chain with exactly one task (and the buyer charged once);
//!   - every task is worked to its end: the vendor keeps working after the load stops, so a purchase
//!     answered late is not left pending;
//!   - no deposit moved twice, and the platform's feedback count equals the final tasks';
//!   - the escrow holds exactly its liabilities plus the unrecorded money it reports.
//!
//! Exits 1 on any violation. Run by `scripts/crash-campaign.sh`, which builds the server first.
//!
//!     crash_campaign [SECONDS] [sqlite|postgres]

use std::{
    collections::HashSet,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use agentripe_chain::bindings::{Agentripe, DepositStatus, IERC3009, ReputationRegistry};
use agentripe_server::testing::{Market, PRICE, now, vendor_headers};
use agentripe_store::{Store, TaskStatus, testing::Engine};
use agentripe_x402::v2;
use alloy::primitives::{B256, U256};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

const BUYERS: usize = 16;
const PURCHASES_PER_BUYER: usize = 20;

/// The server binary built beside this example (target/release/agentripe-server).
fn server_binary() -> std::path::PathBuf {
    let example = std::env::current_exe().expect("this example's path");
    example.parent().and_then(|examples| examples.parent()).expect("target dir").join("agentripe-server")
}

fn start_server(market: &Market, deployment: &std::path::Path, listen: &str) -> Child {
    Command::new(server_binary())
        .env("DEPLOYMENTS_FILE", deployment)
        .env("RPC_URL", market.anvil.endpoint())
        .env(
            "OPERATOR_PRIVATE_KEY",
            format!("0x{}", alloy::primitives::hex::encode(market.operator.to_bytes())),
        )
        .env("DATABASE_URL", &market.database_url)
        .env("LISTEN_ADDR", listen)
        .env("PUBLIC_URL", format!("http://{listen}"))
        .env("RATE_LIMIT_PER_SECOND", "0")
        .env("CATALOG_ALLOW_PRIVATE_ADDRESSES", "true")
        .env("RECONCILE_INTERVAL_SECONDS", "1")
        .env("PAYMENT_LEASE_SECONDS", "2")
        .env("POLL_INTERVAL_MS", "20")
        .env("RPC_LAG_MS", "500")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the server binary runs (scripts/crash-campaign.sh builds it)")
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let engine = if std::env::args().nth(2).as_deref() == Some("postgres") {
        Engine::Postgres
    } else {
        Engine::Sqlite
    };
    let market = Arc::new(Market::new(engine, "crash_campaign").await.expect("the database is reachable"));
    let d = &market.deployment;
    let deployment = std::env::temp_dir().join(format!("agentripe-crash-{}.json", std::process::id()));
    std::fs::write(&deployment, serde_json::to_string(d).expect("json")).expect("deployment file");
    let port =
        std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("port").port();
    let listen = format!("127.0.0.1:{port}");
    let base = format!("http://{listen}");

    // Every payment is signed before the clock starts; its buyer retries the same header until answered.
    let mut signed = Vec::new();
    for _ in 0..BUYERS {
        let buyer = market.buyer(PRICE * PURCHASES_PER_BUYER as u64).await;
        signed.push((
            buyer.address(),
            (0..PURCHASES_PER_BUYER).map(|_| market.pay_v2(&buyer)).collect::<Vec<_>>(),
        ));
    }
    let mut server = start_server(&market, &deployment, &listen);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let answered = Arc::new(AtomicUsize::new(0));

    let url = format!("{base}/{}/translate", market.agent_id);
    let buyers: Vec<_> = signed
        .iter()
        .map(|(_, headers)| {
            let (http, url, headers, answered) =
                (http.clone(), url.clone(), headers.clone(), answered.clone());
            tokio::spawn(async move {
                for header in headers {
                    while Instant::now() < deadline {
                        let response = http.post(&url).header("PAYMENT-SIGNATURE", &header).send().await;
                        if response
                            .is_ok_and(|response| matches!(response.status().as_u16(), 200 | 402 | 409))
                        {
                            answered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            })
        })
        .collect();
    // The vendor works until the audit, not only until the deadline: a purchase answered late (its buyer
    // retries until it is) still gets its task done.
    let vendor_working = Arc::new(AtomicBool::new(true));
    let vendor = tokio::spawn({
        let (http, base, market, working) =
            (http.clone(), base.clone(), market.clone(), vendor_working.clone());
        async move {
            let mut n = 0u64;
            while working.load(Ordering::Relaxed) {
                let headers = vendor_headers(&market.vendor, market.agent_id, now());
                let listed = http
                    .get(format!("{base}/vendor/tasks?status=pending,processing"))
                    .headers(headers)
                    .send()
                    .await;
                let tasks: Vec<String> = match listed {
                    Ok(response) => response.json::<Value>().await.ok().and_then(|body| {
                        body["tasks"].as_array().map(|tasks| {
                            tasks.iter().filter_map(|t| t["id"].as_str().map(str::to_owned)).collect()
                        })
                    }),
                    Err(_) => None,
                }
                .unwrap_or_default();
                for task in tasks {
                    n += 1;
                    let (action, body) = if n.is_multiple_of(4) {
                        ("fail", json!({ "errorMessage": "cannot" }))
                    } else {
                        ("complete", json!({ "result": "done" }))
                    };
                    let headers = vendor_headers(&market.vendor, market.agent_id, now());
                    let _ = http
                        .post(format!("{base}/vendor/tasks/{task}/start"))
                        .headers(headers.clone())
                        .json(&json!({}))
                        .send()
                        .await;
                    let _ = http
                        .post(format!("{base}/vendor/tasks/{task}/{action}"))
                        .headers(headers)
                        .json(&body)
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // The crashes: SIGKILL after a random 0.5-3 s of life, and a restart at once.
    let mut kills = 0;
    while Instant::now() < deadline {
        let life = Duration::from_millis(500 + (u64::from(B256::random()[0]) * 10));
        tokio::time::sleep(life.min(deadline.saturating_duration_since(Instant::now()))).await;
        if Instant::now() >= deadline {
            break;
        }
        server.kill().await.expect("SIGKILL");
        kills += 1;
        server = start_server(&market, &deployment, &listen);
    }
    for buyer in buyers {
        buyer.await.expect("buyer");
    }

    // The last server reconciles: wait until no payment is in flight and no task's money is moving.
    let store = Store::connect(&market.database_url).await.expect("store");
    let mut settled = false;
    for _ in 0..120 {
        let mut in_flight = 0;
        for (buyer, _) in &signed {
            in_flight +=
                store.payments_in_flight(&format!("{buyer:#x}"), 1000).await.expect("payments").len();
        }
        if in_flight == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let agent = market.agent_id.to_string();
    let mut unworked = 0;
    for _ in 0..60 {
        unworked = store
            .agent_tasks(&agent, &[TaskStatus::Pending, TaskStatus::Processing], 10_000)
            .await
            .expect("tasks")
            .len();
        if unworked == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    vendor_working.store(false, Ordering::Relaxed);
    vendor.await.expect("vendor");
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The audit.
    let mut violations = Vec::new();
    if !settled {
        violations.push("payments still in flight after two minutes of reconciliation".to_owned());
    }
    if unworked > 0 {
        violations.push(format!(
            "{unworked} tasks still pending or processing a minute after the payments settled"
        ));
    }
    let token = IERC3009::new(d.usdc, &market.provider);
    let escrow = Agentripe::new(d.agentripe, &market.provider);
    let (mut used, mut deposits) = (0, HashSet::new());
    for (buyer, headers) in &signed {
        let (mut charged, mut refunded) = (U256::ZERO, U256::ZERO);
        for header in headers {
            let payment: v2::PaymentPayload = agentripe_x402::decode_header(header).expect("v2");
            let authorization = &payment.payload.authorization;
            if !token.authorizationState(*buyer, authorization.nonce).call().await.expect("state") {
                continue;
            }
            used += 1;
            charged += authorization.value;
            let stored = store
                .payment_by_authorization(
                    i64::try_from(d.chain_id).expect("chain"),
                    &format!("{:#x}", d.usdc),
                    &format!("{buyer:#x}"),
                    &format!("{:#x}", authorization.nonce),
                )
                .await
                .expect("payment");
            let Some(deposit_id) = stored.as_ref().and_then(|payment| payment.deposit_id.clone()) else {
                violations.push(format!(
                    "{buyer:#x}'s authorization {:#x} is used but has no deposit here",
                    authorization.nonce
                ));
                continue;
            };
            let id: B256 = deposit_id.parse().expect("deposit id");
            if !deposits.insert(id) {
                violations.push(format!("deposit {id:#x} serves two authorizations"));
            }
            let on_chain = escrow.getDeposit(id).call().await.expect("deposit");
            if on_chain.status == 0 || on_chain.amount != authorization.value || on_chain.buyer != *buyer {
                violations.push(format!("deposit {id:#x} is not on chain as recorded here"));
            }
            if DepositStatus::try_from(on_chain.status) == Ok(DepositStatus::Refunded) {
                refunded += on_chain.amount;
            }
            if store.task(&deposit_id).await.expect("task").is_none() {
                violations.push(format!("deposit {id:#x} has no task"));
            }
        }
        // A refund is pushed back to its buyer; one the token refused waits as a credit.
        let credit = escrow.withdrawableBalance(*buyer).call().await.expect("credit");
        let spent = U256::from(PRICE * PURCHASES_PER_BUYER as u64)
            - token.balanceOf(*buyer).call().await.expect("balance");
        if spent + refunded != charged + credit {
            violations.push(format!(
                "{buyer:#x} paid {spent} for {charged} of used authorizations, {refunded} of them refunded \
                 ({credit} as a credit)"
            ));
        }
    }
    let final_tasks =
        store.agent_tasks(&agent, &[TaskStatus::Completed, TaskStatus::Failed], 10_000).await.expect("tasks");
    let feedback = ReputationRegistry::new(d.reputation_registry, &market.provider)
        .getLastIndex(market.agent_id, market.operator.address())
        .call()
        .await
        .expect("feedback");
    if feedback > final_tasks.len() as u64 {
        violations.push(format!(
            "{feedback} feedback entries for {} final tasks: some posted twice",
            final_tasks.len()
        ));
    }
    let balance = token.balanceOf(d.agentripe).call().await.expect("escrow balance");
    let liabilities = U256::from(escrow.totalLiabilities().call().await.expect("liabilities"));
    let health: Value =
        http.get(format!("{base}/health")).send().await.expect("health").json().await.expect("json");
    let unrecorded: U256 = health["escrow"]["unrecorded"].as_str().unwrap_or("0").parse().expect("units");
    if balance != liabilities + unrecorded {
        violations.push(format!(
            "the escrow holds {balance}, its liabilities are {liabilities}, reported unrecorded {unrecorded}"
        ));
    }
    let _ = server.kill().await;
    let _ = std::fs::remove_file(&deployment);

    println!(
        "crash campaign: {seconds} s, {engine:?}, {kills} SIGKILLs, {} purchases signed by {BUYERS} buyers",
        BUYERS * PURCHASES_PER_BUYER
    );
    println!(
        "  answered {} purchases; {used} authorizations used on chain, {} deposits, {} final tasks, {feedback} feedback entries",
        answered.load(Ordering::Relaxed),
        deposits.len(),
        final_tasks.len()
    );
    println!("  escrow {balance} = liabilities {liabilities} + unrecorded {unrecorded}");
    if violations.is_empty() {
        println!("  audit: every used authorization has one deposit and one task, nothing moved twice");
        std::process::ExitCode::SUCCESS
    } else {
        for violation in &violations {
            println!("  VIOLATION: {violation}");
        }
        std::process::ExitCode::FAILURE
    }
}
