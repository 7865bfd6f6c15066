//! A chain that comes back behind what the server saw mined (a node restarted behind its head, a reorg
//! deeper than CONFIRMATIONS): the vanished transactions are sent again, the nonce gap closes, and the
//! buyer's deposit is on chain again, once; a refused payment's settlement is not sent again.

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

on_both_engines!(
    a_refused_payments_settlement_a_rolled_back_chain_lost_is_not_sent_again,
    |market| async move {
        use agentripe_server::testing::InBlock;
        use agentripe_store::{ChainTxStatus, VOID};
        use tokio::time::timeout;
        // The reconciler's passes far enough apart that the settlement is back in the pool before one
        // finds it gone.
        let mut config = market.config();
        config.reconcile_interval = Duration::from_secs(2);
        let server = market.start_with(config).await;
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        let buyer = market.buyer(PRICE).await;
        let snapshot: U256 = market.provider.raw_request("evm_snapshot".into(), ()).await.expect("snapshot");

        // Our settlement waits in the pool, and the buyer is blacklisted ahead of it in the same block: it
        // reverts, and the payment is refused.
        market.hold_blocks().await;
        let buying = tokio::spawn({
            let (url, header) = (server.purchase_url(market.agent_id), market.pay_v2(&buyer));
            async move { reqwest::Client::new().post(url).header("PAYMENT-SIGNATURE", header).send().await }
        });
        let signed = async {
            loop {
                if let [settlement] = &store.txs_for("settle", "1").await.expect("txs")[..] {
                    return settlement.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let settlement = timeout(Duration::from_secs(30), signed).await.expect("the settlement is signed");
        market.blacklist_in_pool(buyer.address(), InBlock::First).await;
        market.resume_mining().await;
        let response = buying.await.expect("join").expect("answered");
        assert_eq!(response.status(), 402, "refused: its settlement reverted");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));

        // The chain goes back to before that block: the blacklisting and the reverted settlement are gone,
        // and the settlement is back in the pool, as nodes do with a reorg's transactions.
        market.hold_blocks().await;
        let reverted: bool =
            market.provider.raw_request("evm_revert".into(), (snapshot,)).await.expect("revert");
        assert!(reverted);
        let raw = alloy::primitives::hex::decode(&settlement.raw_tx).expect("hex");
        let _pending = market.provider.send_raw_transaction(&raw).await.expect("back in the pool");

        // Its nonce is taken by a transfer of nothing that replaces it in the pool: the buyer, told
        // "refused", is never charged, and no nonce gap holds later writes back.
        let voided = async {
            loop {
                if let [void] = &store.txs_for(VOID, &settlement.tx_hash).await.expect("txs")[..] {
                    return void.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let void = timeout(Duration::from_secs(30), voided).await.expect("the settlement is voided");
        assert_eq!(void.nonce, settlement.nonce);
        market.resume_mining().await;
        let void_mined = async {
            while store.txs_for(VOID, &settlement.tx_hash).await.expect("txs")[0].status().expect("status")
                != ChainTxStatus::Mined
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(Duration::from_secs(30), void_mined).await.expect("the void is mined");
        let hash: B256 = settlement.tx_hash.parse().expect("hash");
        assert!(market.provider.get_transaction_receipt(hash).await.expect("rpc").is_none(), "never landed");
        let stored = store.txs_for("settle", "1").await.expect("txs");
        assert_eq!(stored[0].status().expect("status"), ChainTxStatus::Dropped, "never sent again");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "never charged");
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
        assert_eq!(response.status(), 200, "its next payment goes through at once");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once, for that one");
    }
);

on_both_engines!(
    a_transaction_no_step_waits_on_is_watched_until_mined_after_a_restart,
    |market| async move {
        use agentripe_store::{ChainTxStatus, SignedTx};
        use alloy::{
            consensus::{SignableTransaction, TxEip1559, TxEnvelope},
            eips::Encodable2718,
            network::TxSignerSync,
            primitives::TxKind,
        };
        // A transaction of ours stored pending, never broadcast, that no step will come round to (a recorded
        // payment's settlement sent again after a reorg, when its process died): the restart sends it, and
        // watches it until mined.
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        let operator = market.operator.address();
        let signer = format!("{operator:#x}");
        let nonce = market.provider.get_transaction_count(operator).await.expect("nonce");
        store.sync_nonce(&signer, nonce as i64).await.expect("sync");
        let fees = market.provider.estimate_eip1559_fees().await.expect("fees");
        let sign = |nonce: u64| {
            let mut tx = TxEip1559 {
                chain_id: market.deployment.chain_id,
                nonce,
                gas_limit: 21_000,
                max_fee_per_gas: fees.max_fee_per_gas,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                to: TxKind::Call(operator),
                ..Default::default()
            };
            let signature =
                market.operator.sign_transaction_sync(&mut tx).map_err(|error| error.to_string())?;
            let envelope = TxEnvelope::from(tx.into_signed(signature));
            let raw_tx = format!("0x{}", alloy::primitives::hex::encode(envelope.encoded_2718()));
            Ok::<_, String>(SignedTx { tx_hash: format!("{:#x}", envelope.tx_hash()), raw_tx })
        };
        let stored =
            store.sign_and_store(&signer, "settle", &["earlier"], None, 0, sign).await.expect("store");
        assert_eq!(stored.expect("signed").nonce, nonce as i64);

        let _server = market.start().await;
        let watched = async {
            while store.txs_for("settle", "earlier").await.expect("txs")[0].status().expect("status")
                != ChainTxStatus::Mined
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), watched).await.expect("seen mined");
        assert_eq!(market.provider.get_transaction_count(operator).await.expect("nonce"), nonce + 1);
    }
);

on_both_engines!(
    a_settlement_a_rolled_back_chain_lost_is_left_to_its_payments_live_holder,
    |market| async move {
        use agentripe_store::ChainTxStatus;
        use tokio::time::timeout;
        let server = market.start().await;
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        let buyer = market.buyer(PRICE).await;
        let snapshot: U256 = market.provider.raw_request("evm_snapshot".into(), ()).await.expect("snapshot");
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
        assert_eq!(response.status(), 200);

        // Its payment is, as far as the database says, still a live holder's: one that holds the
        // settlement's reverted receipt, say, and is about to refuse the payment. Then the chain goes back.
        agentripe_store::testing::execute(
        &store,
        "UPDATE payments SET status = 'verified', lease_holder = 'live', lease_until = 9000000000000 WHERE id = 1",
    )
    .await;
        let reverted: bool =
            market.provider.raw_request("evm_revert".into(), (snapshot,)).await.expect("revert");
        assert!(reverted);
        let settlement = store.txs_for("settle", "1").await.expect("txs").remove(0);
        let hash: B256 = settlement.tx_hash.parse().expect("hash");

        // The reconciler leaves it to that holder: it is neither sent again nor voided.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let untouched = store.txs_for("settle", "1").await.expect("txs").remove(0);
        assert_eq!(untouched.status().expect("status"), ChainTxStatus::Mined, "left to its holder");
        assert!(
            market.provider.get_transaction_receipt(hash).await.expect("rpc").is_none(),
            "not sent again"
        );

        // The holder refuses the payment: the settlement is voided, and the buyer never charged.
        agentripe_store::testing::execute(
        &store,
        "UPDATE payments SET status = 'failed', failure = 'invalid_transaction_state', lease_until = NULL WHERE id = 1",
    )
    .await;
        let voided = async {
            while store.txs_for("settle", "1").await.expect("txs")[0].status().expect("status")
                != ChainTxStatus::Dropped
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(Duration::from_secs(30), voided).await.expect("voided once refused");
        assert!(market.provider.get_transaction_receipt(hash).await.expect("rpc").is_none(), "never landed");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "never charged");
    }
);
