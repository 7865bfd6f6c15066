//! A chain that comes back behind what the server saw mined (a node restarted behind its head, a reorg
//! deeper than CONFIRMATIONS): the vanished transactions are sent again, the nonce gap closes, and the
//! buyer's deposit is on chain again, once.

use std::time::Duration;

use agentripe_server::{on_both_engines, testing::PRICE};
use alloy::{
    primitives::{B256, U256},
    providers::Provider,
};
use serde_json::Value;

on_both_engines!(transactions_a_rolled_back_chain_lost_are_redone_once, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let snapshot: U256 = market.provider.raw_request("evm_snapshot".into(), ()).await.expect("snapshot");

    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let task: B256 = answer["taskId"].as_str().expect("taskId").parse().expect("task id");
    assert_eq!(market.deposit(task).await.amount, U256::from(PRICE));

    // The chain goes back to before the purchase: settlement and record are gone, the buyer's USDC is back.
    let reverted: bool = market.provider.raw_request("evm_revert".into(), (snapshot,)).await.expect("revert");
    assert!(reverted);
    assert_eq!(market.deposit(task).await.amount, U256::ZERO, "rolled back");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));

    // The reconciler sends both again: the same deposit, charged once.
    let mut healed = false;
    for _ in 0..150 {
        if market.deposit(task).await.amount == U256::from(PRICE) {
            healed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healed, "the deposit is on chain again under the same id");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));

    // No nonce gap holds later writes back: the next purchase goes through at once.
    let (_, next) = server.purchase(&market, &serde_json::json!({})).await;
    let next: B256 = next.parse().expect("task id");
    assert_eq!(market.deposit(next).await.amount, U256::from(PRICE));
    let task_view: Value = server.task(&format!("{task:#x}")).await;
    assert!(task_view["task"].is_object(), "{task_view}");
});
