//! What Circle's token can do to a purchase, on FiatTokenV2_2 itself (the market's token): a vendor
//! blacklisted before its payout, and a token paused when a buyer pays. No money may be lost or stuck
//! either way, and the buyer must not be charged for a purchase that could not be made.

use agentripe_chain::bindings::Agentripe;
use agentripe_server::testing::{LlmAnswer, Market, PRICE, ScriptedLlm};
use agentripe_store::testing::Engine;
use alloy::{primitives::U256, providers::ProviderBuilder};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisted_vendor_is_credited_and_collects_once_cleared() {
    let market = Market::new(Engine::Sqlite, "blacklisted_vendor").await.expect("SQLite needs no set-up");
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Done well")]).await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;
    let (_, task) = server.purchase(&market, &json!({ "task_detail": "Translate" })).await;

    market.blacklist(market.vendor.address()).await;
    let (status, _) = server.vendor(&market, "start", &task, json!({})).await;
    assert_eq!(status, 200);
    let (status, done) = server.vendor(&market, "complete", &task, json!({ "result": "Bonjour" })).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["escrowAction"], "released", "the verdict is final on chain: {done}");

    // The token refused the push; the escrow keeps the amount as the vendor's credit.
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 2);
    let escrow = Agentripe::new(market.deployment.agentripe, &market.provider);
    let vendor = market.vendor.address();
    assert_eq!(market.usdc_balance(vendor).await, U256::ZERO);
    assert_eq!(escrow.withdrawableBalance(vendor).call().await.expect("credit"), U256::from(PRICE));

    // Cleared by Circle, the vendor pulls it.
    market.unblacklist(vendor).await;
    let as_vendor =
        ProviderBuilder::new().wallet(market.vendor.clone()).connect_http(market.anvil.endpoint_url());
    Agentripe::new(market.deployment.agentripe, &as_vendor)
        .withdraw()
        .send()
        .await
        .expect("withdraw")
        .watch()
        .await
        .expect("mined");
    assert_eq!(market.usdc_balance(vendor).await, U256::from(PRICE));
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_token_charges_no_one_and_the_same_payment_goes_through_later() {
    let market = Market::new(Engine::Sqlite, "paused_token").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    market.pause_token().await;
    let refused = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "{}").await;
    let status = refused.status().as_u16();
    let body: serde_json::Value = refused.json().await.expect("json");
    assert_eq!(status, 402, "{body}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "not charged");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);

    // The authorization was never used: once the token runs again, the same header buys.
    market.unpause_token().await;
    let bought = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "{}").await;
    assert_eq!(bought.status(), 200);
    let task =
        bought.json::<serde_json::Value>().await.expect("json")["taskId"].as_str().expect("task").to_owned();
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO);
}
