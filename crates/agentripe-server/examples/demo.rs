//! The marketplace end to end, for `scripts/demo.sh`: a local chain with the real contracts, the real
//! server on SQLite over loopback HTTP, a registered vendor agent, and two purchases paid over x402:
//! one approved (the vendor is paid in the release itself), one rejected five times (the buyer is
//! refunded in the refund itself: neither needs ETH). Every check fails the demo loudly; Ctrl-C stops
//! everything it started.

use agentripe_server::catalog::format_price;
use agentripe_server::testing::{LlmAnswer, Market, PRICE, ScriptedLlm, Server};
use agentripe_store::testing::Engine;
use alloy::{
    primitives::{Address, U256},
    signers::local::PrivateKeySigner,
};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tokio::select! {
        outcome = run() => match outcome {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("\ndemo failed: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        // Returning (rather than exiting) drops anvil and the servers: nothing is left running.
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\ninterrupted; stopping everything the demo started");
            std::process::ExitCode::from(130)
        }
    }
}

fn check(condition: bool, what: impl std::fmt::Display) -> Result<(), String> {
    if condition { Ok(()) } else { Err(what.to_string()) }
}

async fn purchase(market: &Market, server: &Server, buyer: &PrivateKeySigner) -> Result<String, String> {
    let body = json!({
        "task_detail": "Translate 'Hello, world' to Japanese",
        "task_metadata": { "source_lang": "en", "target_lang": "ja" },
        "reviewer_request": "Verify the translation is accurate Japanese",
    });
    let response =
        server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(buyer)), &body.to_string()).await;
    check(response.status() == 200, format!("purchase answered {}", response.status()))?;
    let json: Value = response.json().await.map_err(|e| e.to_string())?;
    json["taskId"].as_str().map(str::to_owned).ok_or_else(|| format!("no taskId in {json}"))
}

async fn run() -> Result<(), String> {
    println!("== Starting anvil, deploying the contracts, registering a vendor agent");
    let market = Market::new(Engine::Sqlite, "demo").await.ok_or("no market")?;
    println!(
        "  chain {}  escrow {}  agent #{}",
        market.anvil.endpoint(),
        market.deployment.agentripe,
        market.agent_id
    );

    println!("\n== The reviewer: a LOCAL SCRIPTED OpenAI-compatible server, not a real model.");
    println!("   Its verdicts are fixed for this demo: approve the first result, reject the next five.");
    let approve = LlmAnswer::verdict(true, "Accurate, natural Japanese");
    let reject = || LlmAnswer::verdict(false, "This is not Japanese");
    let llm = ScriptedLlm::start(vec![approve, reject(), reject(), reject(), reject(), reject()]).await;

    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;
    println!("\n== The server runs on SQLite at {}", server.base);

    let (alice, bob) = (market.buyer(PRICE).await, market.buyer(PRICE).await);
    let accounts: [(&str, Address); 3] =
        [("buyer A", alice.address()), ("buyer B", bob.address()), ("vendor", market.vendor.address())];
    let mut before = Vec::new();
    for (_, address) in accounts {
        before.push(market.usdc_balance(address).await);
    }

    println!("\n== Purchase 1: buyer A pays $0.10 over x402; the vendor delivers; the review approves");
    let first = purchase(&market, &server, &alice).await?;
    println!("  taskId (= x402 settlement tx = escrow deposit id) {first}");
    server.vendor(&market, "start", &first, json!({})).await;
    let (status, done) =
        server.vendor(&market, "complete", &first, json!({ "result": "こんにちは、世界" })).await;
    check(status == 200 && done["escrowAction"] == "released", format!("approval: {done}"))?;
    println!("  review: {}  escrow: released", done["review"]["reason"]);
    let release = server.task(&first).await["task"]["escrowTx"].as_str().unwrap_or_default().to_owned();

    println!("\n== Purchase 2: buyer B pays; the vendor's result is rejected five times");
    let second = purchase(&market, &server, &bob).await?;
    println!("  taskId {second}");
    server.vendor(&market, "start", &second, json!({})).await;
    let mut last = Value::Null;
    for attempt in 1..=5 {
        let (status, reply) = server
            .vendor(
                &market,
                "complete",
                &second,
                json!({ "result": format!("Hello, world (attempt {attempt})") }),
            )
            .await;
        check(status == 200, format!("attempt {attempt}: {reply}"))?;
        println!(
            "  attempt {attempt}: rejected ({}), escrow {}",
            reply["review"]["reason"], reply["escrowAction"]
        );
        last = reply;
    }
    check(last["escrowAction"] == "refunded", format!("the fifth rejection refunds: {last}"))?;
    let refund = server.task(&second).await["task"]["escrowTx"].as_str().unwrap_or_default().to_owned();

    println!("\n== What happened on chain");
    println!("  purchase 1  settle {first}");
    println!("              release {release} (pays the vendor)");
    println!("  purchase 2  settle {second}");
    println!("              refund {refund} (pays buyer B back)");
    println!("\n  USDC        before      after");
    for ((name, address), before) in accounts.iter().zip(before) {
        let after = market.usdc_balance(*address).await;
        println!("  {name:<9} {:>9}  {:>9}", format_price(before, 6), format_price(after, 6));
    }
    check(
        market.usdc_balance(market.vendor.address()).await == U256::from(PRICE),
        "the vendor holds the first price",
    )?;
    check(market.usdc_balance(bob.address()).await == U256::from(PRICE), "buyer B has its money back")?;
    check(market.usdc_balance(alice.address()).await == U256::ZERO, "buyer A paid once")?;
    check(market.usdc_balance(market.deployment.agentripe).await == U256::ZERO, "the escrow owes nothing")?;
    println!("\ndemo: ok");
    Ok(())
}
