//! Against an RPC whose receipts and logs trail its state (as load-balanced providers do), a charged
//! buyer is never told its payment was refused: a used authorization whose settlement is not visible
//! yet is in doubt (503, with the payment to follow), and resending the same payment gets the task.

use std::{collections::BTreeSet, time::Duration};

use agentripe_server::{
    on_both_engines,
    testing::{LaggingRpc, Market, PRICE, Server},
};
use alloy::primitives::{B256, U256};
use serde_json::Value;

/// Sends the same payment until it is answered with a task; a refusal of a charged payment fails.
async fn buy_until_recorded(server: &Server, market: &Market, header: &str) -> (B256, usize) {
    let mut in_doubt = 0;
    for _ in 0..60 {
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", header), "").await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("json");
        match status {
            200 => return (body["taskId"].as_str().expect("taskId").parse().expect("hash"), in_doubt),
            503 => {
                assert!(
                    body["payment"]["follow"].is_string(),
                    "an in-doubt answer says where to follow: {body}"
                );
                in_doubt += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("a charged payment was answered {other}: {body}"),
        }
    }
    panic!("never recorded");
}

async fn lagging_server(market: &Market) -> Server {
    let rpc = LaggingRpc::start(market.anvil.endpoint(), Duration::from_millis(500)).await;
    let mut config = market.config();
    config.rpc_url = rpc.url;
    market.start_with(config).await
}

on_both_engines!(a_lagging_rpc_never_turns_a_paid_purchase_into_a_refusal, |market| async move {
    let server = lagging_server(&market).await;
    let mut tasks = BTreeSet::new();
    for _ in 0..4 {
        let buyer = market.buyer(PRICE).await;
        let (task, _) = buy_until_recorded(&server, &market, &market.pay_v2(&buyer)).await;
        tasks.insert(task);
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
    }
    assert_eq!(tasks.len(), 4);
    for task in &tasks {
        assert_eq!(market.deposit(*task).await.status, 1);
    }
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(4 * PRICE));

    // And the server's record of what it sent agrees with the chain: nothing mined was taken for dropped.
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    for payment in 1..=4 {
        for purpose in ["settle", "record"] {
            let sent = store.txs_for(purpose, &payment.to_string()).await.expect("txs");
            let statuses: Vec<_> = sent.iter().map(|tx| tx.status().expect("status")).collect();
            assert_eq!(
                statuses,
                vec![agentripe_store::ChainTxStatus::Mined],
                "{purpose} of payment {payment}"
            );
        }
    }
});

on_both_engines!(
    a_settlement_the_lagging_rpc_does_not_show_yet_is_in_doubt_not_refused,
    |market| async move {
        let server = lagging_server(&market).await;
        let buyer = market.buyer(PRICE).await;
        let header = market.pay_v2(&buyer);
        // Someone settles the authorization just before the request: the lagging RPC shows its nonce used
        // at once, and its AuthorizationUsed log only half a second later.
        let receipt = market.submit_header(3, &header).await;
        let (task, in_doubt) = buy_until_recorded(&server, &market, &header).await;
        assert!(in_doubt > 0, "the first answer was in doubt, not a refusal");
        assert_eq!(task, receipt.transaction_hash, "recorded under the settlement that moved the money");
        assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
    }
);

on_both_engines!(a_deposits_expiry_comes_from_its_record_or_from_the_escrow, |market| async move {
    use agentripe_chain::bindings::Agentripe;
    use alloy::sol_types::SolCall;

    let selector = |call: [u8; 4]| format!("eth_call 0x{}", alloy::primitives::hex::encode(call));
    let asked_of_escrow =
        [selector(Agentripe::getDepositCall::SELECTOR), selector(Agentripe::depositExpiresAtCall::SELECTOR)];
    // A node that stamps logs with their block's time (as anvil does) tells the expiry through the
    // record's own receipt: the escrow is not asked. One that does not is asked; the expiry is the same.
    for (rpc, asks) in [
        (LaggingRpc::start(market.anvil.endpoint(), Duration::ZERO).await, false),
        (LaggingRpc::start_unstamped(market.anvil.endpoint(), Duration::ZERO).await, true),
    ] {
        let mut config = market.config();
        config.rpc_url = rpc.url.clone();
        let server = market.start_with(config).await;
        // Asked, a node behind the one that found the deposit says it expires at 0: that is no expiry
        // (a task stored with it would never expire), and it is asked again.
        rpc.answer_zero_expiries(1);
        let buyer = market.buyer(PRICE).await;
        let (task, _) = buy_until_recorded(&server, &market, &market.pay_v2(&buyer)).await;
        let (stored, on_chain) = market.expiries(task).await;
        assert_eq!(stored, on_chain, "the task expires with its deposit");
        let calls = rpc.calls();
        let asked: Vec<u64> =
            asked_of_escrow.iter().map(|call| calls.get(call).copied().unwrap_or(0)).collect();
        let expected = |count: u64| if asks { count > 0 } else { count == 0 };
        assert!(
            asked.iter().all(|&count| expected(count)),
            "getDeposit, depositExpiresAt: {asked:?} of {calls:?}"
        );
        server.crash();
    }
});
