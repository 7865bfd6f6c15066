//! Each paid authorization ends up recorded exactly once: under duplicates, a front-runner, and a
//! crash between settlement and recording.

use std::collections::BTreeSet;

use agentripe_chain::bindings::TestUSDC;
use agentripe_server::{
    on_both_engines,
    testing::{PRICE, key},
};
use agentripe_x402::{PaymentPayload, decode_header};
use alloy::primitives::{B256, U256};
use serde_json::Value;

async fn task_id_of(response: reqwest::Response) -> B256 {
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.expect("json");
    json["taskId"].as_str().expect("taskId").parse().expect("hash")
}

on_both_engines!(fifty_copies_of_one_payment_settle_once, |market| async move {
    let server = std::sync::Arc::new(market.start().await);
    let buyer = market.buyer(10 * PRICE).await;
    let header = market.pay_v2(&buyer);
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let server = server.clone();
            let header = header.clone();
            let agent = market.agent_id;
            tokio::spawn(async move { server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for request in requests {
        ids.insert(task_id_of(request.await.expect("join")).await);
    }
    assert_eq!(ids.len(), 1, "every copy gets the same taskId");
    let task_id = *ids.first().expect("one id");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(9 * PRICE), "charged once");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
    assert_eq!(market.deposit(task_id).await.status, 1);

    // And once more, later.
    let again = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(task_id_of(again).await, task_id);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(9 * PRICE));
});

on_both_engines!(a_front_run_payment_is_recorded_under_the_front_runners_transaction, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let PaymentPayload::V2(payment) = PaymentPayload::from_header(2, &header).expect("decodes") else {
        panic!()
    };
    // Someone who saw the authorization submits it first, from their own account.
    let receipt = market.submit_payment(3, &payment.payload).await;
    assert!(receipt.status());

    let task_id = task_id_of(server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(
        task_id, receipt.transaction_hash,
        "the deposit is keyed by the transaction that moved the money"
    );
    let deposit = market.deposit(task_id).await;
    assert_eq!((deposit.buyer, deposit.amount, deposit.status), (buyer.address(), U256::from(PRICE), 1));
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});

on_both_engines!(a_crash_between_settlement_and_recording_is_finished_after_restart, |market| async move {
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // First life: it settles, but cannot record (its operator key is not the escrow's), then dies.
    let mut broken = market.config();
    broken.facilitator = agentripe_server::FacilitatorConfig::BuiltIn(Some(market.operator.clone()));
    broken.operator_key = key(&market.anvil, 5);
    broken.chain_timeout = std::time::Duration::from_secs(2);
    let first = market.start_with(broken).await;
    let response = first.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 503, "settled but not recorded: the buyer is told to retry");
    assert!(response.headers().contains_key("retry-after"));
    first.running.abort();
    assert_eq!(
        market.usdc_balance(market.deployment.agentripe).await,
        U256::from(PRICE),
        "the money is in escrow"
    );

    // Second life, same database: the reconciler records it at start-up, without any request.
    let second = market.start().await;
    let settled = find_settlement(&market, &header).await;
    let mut task = None;
    for _ in 0..100 {
        let response =
            second.http.get(format!("{}/tasks/{settled:#x}", second.base)).send().await.expect("get");
        if response.status() == 200 {
            task = Some(response.json::<Value>().await.expect("json"));
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let task = task.expect("the reconciler recorded the deposit and created the task");
    assert_eq!(task["task"]["escrowStatus"], "deposited");
    assert_eq!(market.deposit(settled).await.status, 1, "a task exists only for a recorded deposit");

    // The buyer's retry gets the task, and is not charged again.
    let task_id = task_id_of(second.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(task_id, settled);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO);
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});

/// The settlement transaction of a payment, found from its `AuthorizationUsed` log.
async fn find_settlement(market: &agentripe_server::testing::Market, header: &str) -> B256 {
    use alloy::{providers::Provider, rpc::types::Filter, sol_types::SolEvent};
    let payment: agentripe_x402::v2::PaymentPayload = decode_header(header).expect("decodes");
    let filter = Filter::new()
        .address(market.deployment.usdc)
        .event_signature(TestUSDC::AuthorizationUsed::SIGNATURE_HASH)
        .topic1(payment.payload.authorization.from.into_word())
        .topic2(payment.payload.authorization.nonce)
        .from_block(0);
    let logs = market.provider.get_logs(&filter).await.expect("logs");
    assert_eq!(logs.len(), 1, "settled exactly once");
    logs[0].transaction_hash.expect("mined")
}
