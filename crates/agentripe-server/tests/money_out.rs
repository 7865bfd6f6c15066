//! Money out when things go wrong: expiry, a buyer reclaiming on chain, a crash between the decision
//! and its chain write, and a give-back of a stray transfer cut off half-way. The chain is the truth; the database follows it.

use agentripe_chain::bindings::Agentripe;
use agentripe_server::{
    on_both_engines,
    testing::{Market, PRICE, key, now, vendor_headers},
};
use agentripe_store::Store;
use alloy::{
    primitives::{B256, U256},
    providers::{Provider, ProviderBuilder},
};
use serde_json::{Value, json};

/// Waits past a deposit's expiry on chain time; anvil stamps the next block with the wall clock.
async fn wait_until_expired(market: &Market, task: &str) {
    let expires_at = Agentripe::new(market.deployment.agentripe, &market.provider)
        .depositExpiresAt(task.parse::<B256>().expect("hash"))
        .call()
        .await
        .expect("expiry");
    let wait = u64::try_from(expires_at).expect("u64").saturating_sub(now()) + 1;
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_reclaim() {
    for engine in [agentripe_store::testing::Engine::Sqlite, agentripe_store::testing::Engine::Postgres] {
        let Some(market) = Market::with_deposit_timeout(engine, "expiry_and_reclaim", 3).await else {
            continue;
        };

        // The server refunds a deposit nobody worked on once it expires.
        let server = market.start().await;
        let (buyer, task) = server.purchase(&market, &json!({})).await;
        wait_until_expired(&market, &task).await;
        let body = server.escrow_status_eventually(&task, "refunded").await;
        assert_eq!(body["task"]["status"], "failed");
        assert!(body["task"]["errorMessage"].as_str().is_some_and(|m| m.contains("expired")), "{body}");
        assert!(body["task"]["escrowTx"].is_string(), "our refund transaction: {body}");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));

        // Work started but not approved before the expiry is refunded too.
        let (_, late) = server.purchase(&market, &json!({})).await;
        let start = server
            .http
            .post(format!("{}/vendor/tasks/{late}/start", server.base))
            .headers(vendor_headers(&market.vendor, market.agent_id, now()))
            .send()
            .await
            .expect("start");
        assert_eq!(start.status(), 200);
        wait_until_expired(&market, &late).await;
        let body = server.escrow_status_eventually(&late, "refunded").await;
        assert_eq!(body["task"]["status"], "failed", "{body}");

        // With the server down, the deposit is reclaimed on chain (anyone may, for the buyer); back
        // up, the server notices and follows the chain.
        server.crash();
        let restarted = market.start().await;
        restarted.running.reconciler.abort();
        let (buyer, reclaimed) = restarted.purchase(&market, &json!({})).await;
        restarted.crash();
        wait_until_expired(&market, &reclaimed).await;
        let as_buyer =
            ProviderBuilder::new().wallet(key(&market.anvil, 8)).connect_http(market.anvil.endpoint_url());
        Agentripe::new(market.deployment.agentripe, &as_buyer)
            .reclaimExpired(reclaimed.parse().expect("hash"))
            .send()
            .await
            .expect("reclaim")
            .watch()
            .await
            .expect("mined");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));
        let back = market.start().await;
        let body = back.escrow_status_eventually(&reclaimed, "refunded").await;
        assert!(body["task"]["escrowTx"].is_null(), "not our transaction: {body}");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "refunded once");

        // Our refund of an expired deposit and the buyer's reclaim land in one block, the reclaim
        // first: ours moves nothing, so the task names no transaction of ours.
        let (buyer, raced) = back.purchase(&market, &json!({})).await;
        let store = Store::connect(&market.database_url).await.expect("store");
        market.hold_blocks().await;
        wait_until_expired(&market, &raced).await;
        let mut ours = Vec::new();
        for _ in 0..400 {
            ours = store.txs_for("refund", &raced).await.expect("txs");
            if !ours.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(ours.len(), 1, "our refund waits in the pool");
        let gwei = 1_000_000_000;
        let reclaim = *Agentripe::new(market.deployment.agentripe, &as_buyer)
            .reclaimExpired(raced.parse().expect("hash"))
            .gas(200_000)
            .max_priority_fee_per_gas(1_000 * gwei)
            .max_fee_per_gas(2_000 * gwei)
            .send()
            .await
            .expect("reclaim")
            .tx_hash();
        market.resume_mining().await;
        let body = back.escrow_status_eventually(&raced, "refunded").await;
        let provider = &market.provider;
        let receipt = async |hash: B256| {
            provider.get_transaction_receipt(hash).await.expect("rpc").expect("mined").status()
        };
        assert!(receipt(reclaim).await, "the reclaim went first");
        assert!(!receipt(ours[0].tx_hash.parse().expect("hash")).await, "ours found it refunded");
        assert!(body["task"]["escrowTx"].is_null(), "not our transaction: {body}");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "refunded once");
    }
}

on_both_engines!(a_crash_between_approval_and_release_pays_once, |market| async move {
    let headers = || vendor_headers(&market.vendor, market.agent_id, now());
    let healthy = market.start().await;
    let (_, task) = healthy.purchase(&market, &json!({})).await;
    let start = healthy
        .http
        .post(format!("{}/vendor/tasks/{task}/start", healthy.base))
        .headers(headers())
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), 200);
    healthy.crash();

    // A life that approves and stores the decision, but whose release cannot reach the chain (the
    // escrow's owner rotated the operator key away under it), and that dies before any reconciler pass.
    let mut short = market.config();
    short.chain_timeout = std::time::Duration::from_secs(2);
    let crashing = market.start_with(short).await;
    crashing.running.reconciler.abort();
    market.appoint_operator(key(&market.anvil, 5).address()).await;
    let done: Value = crashing
        .http
        .post(format!("{}/vendor/tasks/{task}/complete", crashing.base))
        .headers(headers())
        .json(&json!({ "result": "done" }))
        .send()
        .await
        .expect("complete")
        .json()
        .await
        .expect("json");
    assert_eq!(done["escrowAction"], "releasing", "decided, not yet on chain: {done}");
    crashing.crash();
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1);
    market.appoint_operator(market.operator.address()).await;

    // The next life's reconciler releases it; another restart pays nothing more.
    let next = market.start().await;
    next.escrow_status_eventually(&task, "released").await;
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 2);
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(PRICE));
    next.crash();
    let last = market.start().await;
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(PRICE), "paid exactly once");
    last.crash();
});

/// What a give-back run does first, and then dies: claims the stray transfer `transfer` of `sender` and
/// records it under its hash, through the operator's key, as `agentripe refund-unrecorded` would.
async fn record_for_give_back(
    market: &Market,
    store: &Store,
    transfer: B256,
    sender: alloy::primitives::Address,
) {
    use agentripe_server::{escrow_audit::RECORD_UNRECORDED, util::hex};
    use agentripe_store::TransferHolder;
    use alloy::sol_types::SolCall;

    let claimed = store.claim_transfer(&hex(transfer), TransferHolder::GiveBack, 0).await.expect("claim");
    assert_eq!(claimed, TransferHolder::GiveBack);
    let operator = market.operator_writer(store).await;
    let record = Agentripe::recordDepositCall {
        depositId: transfer,
        agentId: market.agent_id,
        buyer: sender,
        amount: U256::from(PRICE),
    };
    let input = record.abi_encode().into();
    let recorded = operator
        .send_and_confirm(RECORD_UNRECORDED, &hex(transfer), market.deployment.agentripe, input)
        .await
        .expect("recorded");
    assert!(recorded.status());
    assert_eq!(market.deposit(transfer).await.status, 1);
}

on_both_engines!(a_give_back_cut_off_after_its_record_is_finished_by_the_next_run, |market| async move {
    use agentripe_server::{escrow_audit::refund_unrecorded, util::hex};

    let config = market.config();
    let server = market.start().await;
    // A purchase's deposit is never the operator's to give back.
    let (_, task) = server.purchase(&market, &json!({})).await;
    let task: B256 = task.parse().expect("hash");
    let refused = refund_unrecorded(&config, task, Some(market.agent_id)).await;
    assert!(refused.as_ref().is_err_and(|error| error.contains("not an unrecorded transfer")), "{refused:?}");
    assert_eq!(market.deposit(task).await.status, 1, "still the vendor's to earn");

    // A stranger sends USDC straight to the escrow. A give-back records it under the transfer's hash and
    // dies before its refund: the deposit is now a liability like any other, so the audit no longer
    // counts it as unrecorded, and only the give-back's own record says whose it is.
    let stranger = market.buyer(PRICE).await;
    let transfer = market.transfer_to_escrow(&stranger, PRICE).await.transaction_hash;
    let store = Store::connect(&market.database_url).await.expect("store");
    record_for_give_back(&market, &store, transfer, stranger.address()).await;

    // The next run finishes it (no agent named, and none needed): refunded to the stranger, once.
    let refunded = refund_unrecorded(&config, transfer, None).await.expect("given back");
    assert_eq!((refunded.sender, refunded.amount), (stranger.address(), U256::from(PRICE)));
    assert_eq!(market.usdc_balance(stranger.address()).await, U256::from(PRICE), "its sender has it back");
    assert_eq!(market.deposit(transfer).await.status, 3, "refunded");
    let again = refund_unrecorded(&config, transfer, None).await;
    assert!(again.as_ref().is_err_and(|error| error.contains("already given back")), "{again:?}");
    let refunds = store.txs_for("refund_unrecorded", &hex(transfer)).await.expect("txs");
    assert_eq!(refunds.len(), 1, "one refund sent");
    server.crash();
});

on_both_engines!(a_deposit_being_given_back_pays_for_no_purchase, |market| async move {
    use agentripe_server::{escrow_audit::refund_unrecorded, util::hex};

    // A buyer settles its own authorization straight into the escrow: to the audit, a stray transfer.
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let settlement = market.submit_header(3, &header).await.transaction_hash;
    let store = Store::connect(&market.database_url).await.expect("store");
    let purchase = async || {
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
        (response.status().as_u16(), response.json::<Value>().await.expect("json"))
    };

    // A give-back records it and dies before its refund. The buyer then presents that authorization as
    // a purchase: the deposit is being returned to it, so it buys nothing (had it been taken, the next
    // run would refund it from under the vendor's task).
    record_for_give_back(&market, &store, settlement, buyer.address()).await;
    let (status, body) = purchase().await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("invalid_exact_evm_payload_authorization_nonce_used")),
        "{body}"
    );
    assert!(
        store.task(&hex(settlement)).await.expect("task").is_none(),
        "no task on a deposit being given back"
    );

    // The operator's next run finishes the give-back; presenting the authorization again after it buys
    // nothing either (a task on a refunded deposit would be work that can never be paid).
    refund_unrecorded(&market.config(), settlement, None).await.expect("given back");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "the buyer has it back");
    let (status, body) = purchase().await;
    assert_eq!(status, 402, "{body}");
    assert!(store.task(&hex(settlement)).await.expect("task").is_none());
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);
    server.crash();
});
