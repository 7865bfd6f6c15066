//! Each paid authorization ends up recorded exactly once: under duplicates, a front-runner, a crash with
//! its settlement in flight, and a crash between settlement and recording.

use std::collections::BTreeSet;

use agentripe_server::{
    on_both_engines,
    testing::{LaggingRpc, Market, PRICE, key, now},
};
use agentripe_store::testing::{Engine, TableLock};
use agentripe_x402::decode_header;
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
    // Someone who saw the authorization submits it first, from their own account.
    let receipt = market.submit_header(3, &header).await;
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

on_both_engines!(a_payment_settled_blocks_before_it_arrives_is_found, |market| async move {
    use alloy::providers::Provider;
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    // Settled by someone else, then twenty blocks pass before the buyer's request reaches us.
    let receipt = market.submit_header(3, &header).await;
    for _ in 0..20 {
        let _: serde_json::Value = market.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    }
    let task_id = task_id_of(server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(task_id, receipt.transaction_hash, "found behind the head, and recorded under it");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});

on_both_engines!(a_crash_between_settlement_and_recording_is_finished_after_restart, |market| async move {
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // First life: it settles, but cannot record (the escrow's owner rotated the operator key away
    // under it), then dies.
    let mut short = market.config();
    short.chain_timeout = std::time::Duration::from_secs(2);
    let first = market.start_with(short).await;
    market.appoint_operator(key(&market.anvil, 5).address()).await;
    let response = first.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 503, "settled but not recorded: the buyer is told to retry");
    assert!(response.headers().contains_key("retry-after"));
    first.crash();
    assert_eq!(
        market.usdc_balance(market.deployment.agentripe).await,
        U256::from(PRICE),
        "the money is in escrow"
    );
    market.appoint_operator(market.operator.address()).await;

    // Second life, same database: the reconciler records it at start-up, without any request.
    let second = market.start().await;
    let settled = market.settlement_of(&header).await;
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

on_both_engines!(a_deposit_recorded_behind_our_back_is_taken_as_it_is, |market| async move {
    use agentripe_chain::bindings::Agentripe;
    use alloy::providers::ProviderBuilder;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // First life: it settles, but cannot record (the operator key was rotated away), then dies.
    let mut short = market.config();
    short.chain_timeout = std::time::Duration::from_secs(2);
    let first = market.start_with(short).await;
    let interim = key(&market.anvil, 5);
    market.appoint_operator(interim.address()).await;
    let response = first.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 503);
    first.crash();

    // The interim operator records the deposit itself, with the payment's terms; then our key is back.
    let settled = market.settlement_of(&header).await;
    let as_interim = ProviderBuilder::new().wallet(interim).connect_http(market.anvil.endpoint_url());
    let recorded = Agentripe::new(market.deployment.agentripe, &as_interim)
        .recordDeposit(settled, market.agent_id, buyer.address(), U256::from(PRICE))
        .send()
        .await
        .expect("record")
        .get_receipt()
        .await
        .expect("mined");
    assert!(recorded.status());
    market.appoint_operator(market.operator.address()).await;

    // Second life: the payment is finished from the chain's record, and the server signs nothing for it.
    let second = market.start().await;
    let task_id = task_id_of(second.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(task_id, settled);
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    assert_eq!(store.txs_for("record", "1").await.expect("txs"), vec![], "no record transaction of ours");
    assert_eq!(market.deposit(settled).await.status, 1);
    let (stored, on_chain) = market.expiries(settled).await;
    assert_eq!(stored, on_chain, "the task expires with the deposit as the interim operator recorded it");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});

on_both_engines!(one_authorization_cannot_pay_for_two_purchases, |market| async move {
    let server = market.start().await;
    let other_agent =
        market.register_agent(&format!("data:application/json;base64,{}", base64_catalog())).await;
    let buyer = market.buyer(10 * PRICE).await;
    let header = market.pay_v2(&buyer);
    let task_id = task_id_of(server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;

    // The same header for another agent, or for the same agent with another request: refused, naming
    // the task the payment already bought, and nothing charged again.
    for (agent, body) in [(other_agent, ""), (market.agent_id, r#"{"task_detail":"something else"}"#)] {
        let response = server.buy(agent, ("PAYMENT-SIGNATURE", &header), body).await;
        assert_eq!(response.status(), 409, "agent {agent}, body {body:?}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"], "payment_already_used");
        let message = answer["message"].as_str().expect("message");
        assert!(message.contains(&format!("{task_id:#x}")), "names the task it bought: {message}");
    }
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(9 * PRICE), "charged once");

    // The purchase it did pay for still answers with its task.
    let again = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(task_id_of(again).await, task_id);
});

on_both_engines!(a_live_holder_keeps_its_short_lease_and_a_dead_ones_runs_out, |market| async move {
    let lease = std::time::Duration::from_secs(1);
    let mut config = market.config();
    config.payment_lease = lease;
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let stalled =
        async || store.stalled_payments(agentripe_server::util::now_ms(), 10).await.expect("stalled");

    // A live holder whose settlement waits in the mempool (no blocks mined) for three leases keeps the
    // payment: it renews its lease, so no other instance's reconciler may take it.
    let server = market.start_with(config.clone()).await;
    let buyer = market.buyer(2 * PRICE).await;
    market.hold_blocks().await;
    let buying = {
        let url = server.purchase_url(market.agent_id);
        let header = market.pay_v2(&buyer);
        tokio::spawn(async move {
            reqwest::Client::new().post(url).header("PAYMENT-SIGNATURE", header).send().await
        })
    };
    while store.payment(1).await.expect("read").is_none() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..15 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(stalled().await, Vec::<i64>::new(), "a live holder's lease never runs out");
    }
    market.resume_mining().await;
    assert_eq!(buying.await.expect("join").expect("answer").status(), 200);
    server.crash();

    // A process killed right after leasing a payment never renews nor returns its lease: the payment
    // waits one short lease, then another instance finishes it without any request.
    let header = market.pay_v2(&buyer);
    let first = market.start_with(config.clone()).await;
    market.appoint_operator(key(&market.anvil, 5).address()).await;
    assert_eq!(first.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await.status(), 503);
    first.crash();
    market.appoint_operator(market.operator.address()).await;
    let now = agentripe_server::util::now_ms();
    let held = stalled().await;
    assert_eq!(held.len(), 1);
    assert!(store.lease_payment(held[0], "killed", now, now + 1_000).await.expect("lease").is_some());
    let second = market.start_with(config).await;
    let settled = market.settlement_of(&header).await;
    let mut recorded = false;
    for _ in 0..80 {
        let response =
            second.http.get(format!("{}/tasks/{settled:#x}", second.base)).send().await.expect("get");
        if response.status() == 200 {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recorded, "taken over within seconds of the holder's death");
    assert_eq!(
        market.usdc_balance(market.deployment.agentripe).await,
        U256::from(2 * PRICE),
        "charged once each"
    );
});

on_both_engines!(
    a_holder_whose_lease_is_taken_over_answers_with_its_successors_outcome,
    |market| async move {
        use std::time::Duration;
        let mut config = market.config();
        config.payment_lease = Duration::from_secs(1);
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        let server = market.start_with(config).await;
        let buyer = market.buyer(PRICE).await;
        let header = market.pay_v2(&buyer);

        market.hold_blocks().await;
        let buying = tokio::spawn({
            let (url, header) = (server.purchase_url(market.agent_id), header.clone());
            async move { reqwest::Client::new().post(url).header("PAYMENT-SIGNATURE", header).send().await }
        });
        while store.txs_for("settle", "1").await.expect("txs").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // While its settlement waits in the pool, the claimant's lease goes to a rival (as to a reconciler,
        // from a holder stalled past its lease) that then dies: the claimant's next renewal fails, and the
        // reconciler takes the payment up once the rival's lease runs out.
        agentripe_store::testing::execute(&store, "UPDATE payments SET lease_holder = 'rival' WHERE id = 1")
            .await;
        while store.payment(1).await.expect("read").expect("payment").leases < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        market.resume_mining().await;

        // The claimant's buyer is answered with the task its successor recorded, not a 503.
        let response = buying.await.expect("join").expect("answer");
        assert_eq!(task_id_of(response).await, market.settlement_of(&header).await, "its task, settled once");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
    }
);

on_both_engines!(
    a_holder_whose_payment_was_failed_meanwhile_does_not_sign_its_settlement,
    |market| async move {
        use agentripe_chain::bindings::IERC3009;
        use alloy::sol_types::SolCall;
        let rpc = LaggingRpc::start(market.anvil.endpoint(), std::time::Duration::ZERO).await;
        // The claimant's simulation passed; then it stalled past its lease, and a successor whose own
        // simulation reverted (the buyer's funds were gone) failed the payment. The buyer was told
        // "refused", topped up, and may sign anew: the claimant must not go on to sign its settlement.
        let rival = {
            let database_url = market.database_url.clone();
            async move {
                let store = agentripe_store::Store::connect(&database_url).await.expect("store");
                agentripe_store::testing::execute(
                    &store,
                    "UPDATE payments SET status = 'failed', failure = 'insufficient_funds', \
                     lease_holder = 'rival', lease_until = NULL WHERE id = 1",
                )
                .await;
            }
        };
        let selector = IERC3009::transferWithAuthorization_0Call::SELECTOR;
        rpc.around_estimating(selector, std::future::ready(()), rival);
        let mut config = market.config();
        config.rpc_url = rpc.url.clone();
        let server = market.start_with(config).await;
        let buyer = market.buyer(PRICE).await;

        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
        assert_eq!(response.status(), 402);
        assert_eq!(response.json::<Value>().await.expect("json")["error"], "insufficient_funds");
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        assert_eq!(store.txs_for("settle", "1").await.expect("txs"), vec![], "nothing signed");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing charged");
    }
);

on_both_engines!(
    a_holder_whose_simulation_was_refused_does_not_fail_a_payment_its_successor_settles,
    |market| async move {
        use agentripe_chain::bindings::IERC3009;
        use alloy::sol_types::SolCall;
        use std::{sync::Arc, time::Duration};
        use tokio::time::timeout;
        // The claimant's simulation is refused (its buyer blacklisted for a moment); then it stalls past
        // its lease, and a successor (the buyer cleared) signs the settlement, which waits in the pool.
        // The claimant must not fail the payment: its buyer would be told "refused" and charged, with no
        // task, and the successor, its lease gone with the failure, would never record it.
        let rpc = LaggingRpc::start(market.anvil.endpoint(), Duration::ZERO).await;
        // Each step holds the simulation until the test has taken its own.
        let turn = Arc::new(tokio::sync::Barrier::new(2));
        let step = || {
            let turn = turn.clone();
            async move {
                turn.wait().await;
                turn.wait().await;
            }
        };
        let take_turn = async || {
            timeout(Duration::from_secs(30), turn.wait()).await.expect("the claimant simulates");
        };
        rpc.around_estimating(IERC3009::transferWithAuthorization_0Call::SELECTOR, step(), step());
        let mut config = market.config();
        config.rpc_url = rpc.url.clone();
        // A stalled process renews nothing: with its renewals far apart, the claimant misses the takeover;
        // and its own reconciler does not take the payment up in the successor's place.
        config.payment_lease = Duration::from_secs(600);
        config.reconcile_interval = Duration::from_secs(3600);
        config.purchase_timeout = Duration::from_secs(5);
        let claimant = market.start_with(config).await;
        let successor = market.start().await;
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        let buyer = market.buyer(PRICE).await;
        let header = market.pay_v2(&buyer);
        let buying = tokio::spawn({
            let (url, header) = (claimant.purchase_url(market.agent_id), header.clone());
            async move { reqwest::Client::new().post(url).header("PAYMENT-SIGNATURE", header).send().await }
        });

        take_turn().await;
        market.blacklist(buyer.address()).await;
        take_turn().await;
        take_turn().await;
        market.unblacklist(buyer.address()).await;
        market.hold_blocks().await;
        agentripe_store::testing::execute(&store, "UPDATE payments SET lease_until = 0 WHERE id = 1").await;
        let signed = async {
            while store.txs_for("settle", "1").await.expect("txs").is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(Duration::from_secs(30), signed).await.expect("the successor signs its settlement");
        take_turn().await;

        let response = buying.await.expect("join").expect("answered");
        assert_eq!(response.status(), 503, "in doubt, never refused");
        let body: Value = response.json().await.expect("json");
        let follow = body["payment"]["follow"].as_str().expect("follow");
        market.resume_mining().await;
        successor.payment_eventually(follow, "recorded").await;
        let task = task_id_of(successor.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
        assert_eq!(task, market.settlement_of(&header).await, "the buyer's retry gets the task");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
    }
);

on_both_engines!(a_settlement_in_flight_at_a_crash_is_taken_up, |market| async move {
    use agentripe_store::PaymentStatus;
    use std::time::Duration;
    let mut config = market.config();
    config.payment_lease = Duration::from_secs(1);
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let settlements = async || store.txs_for("settle", "1").await.expect("txs");

    // The settlement is signed, stored and broadcast, and waits in the node's pool when the process dies.
    let first = market.start_with(config.clone()).await;
    market.hold_blocks().await;
    let buying = tokio::spawn({
        let (url, header) = (first.purchase_url(market.agent_id), header.clone());
        async move { reqwest::Client::new().post(url).header("PAYMENT-SIGNATURE", header).send().await }
    });
    while settlements().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.crash();
    assert!(buying.await.expect("join").is_err(), "the buyer's connection died with the server");

    // Another instance takes the payment over once the dead holder's lease runs out, and waits for
    // that settlement. Settling afresh would go wrong either way: a node that simulates against its
    // pool refuses the authorization as spent, while the chain says it is unused, and the payment
    // would be failed with its money on the way; one that simulates against the last block would pass
    // a second settlement, which reverts once mined, at the operator's expense.
    let second = market.start_with(config).await;
    let payment = async || store.payment(1).await.expect("read").expect("payment");
    for _ in 0..100 {
        if payment().await.leases >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = payment().await;
    assert_eq!((waiting.leases, waiting.status), (2, PaymentStatus::Verified), "taken over, still settling");
    market.resume_mining().await;
    let settled = market.settlement_of(&header).await;
    for _ in 0..100 {
        if payment().await.status == PaymentStatus::Recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(payment().await.status, PaymentStatus::Recorded, "recorded without any request");
    assert_eq!(settlements().await.len(), 1, "one settlement was ever signed");
    let task = task_id_of(second.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(task, settled, "the buyer's retry gets the task");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE), "charged once");
});

alloy::sol!(
    #[sol(rpc)]
    #[derive(Debug)]
    BatchSettler,
    "../../out/BatchSettler.sol/BatchSettler.json"
);

on_both_engines!(two_payments_settled_in_one_transaction_get_a_deposit_each, |market| async move {
    use alloy::{primitives::keccak256, providers::ProviderBuilder, sol_types::SolValue};
    let server = market.start().await;
    let buyers = [market.buyer(PRICE).await, market.buyer(PRICE).await];
    let headers: Vec<String> = buyers.iter().map(|buyer| market.pay_v2(buyer)).collect();
    let payloads: Vec<agentripe_x402::ExactEvmPayload> = headers
        .iter()
        .map(|header| decode_header::<agentripe_x402::v2::PaymentPayload>(header).expect("v2").payload)
        .collect();

    // A batching facilitator settles both authorizations in one transaction, before either request.
    let as_settler =
        ProviderBuilder::new().wallet(key(&market.anvil, 3)).connect_http(market.anvil.endpoint_url());
    let settler = BatchSettler::deploy(&as_settler).await.expect("deploy BatchSettler");
    let batch: Vec<BatchSettler::SignedAuthorization> = payloads
        .iter()
        .map(|payload| {
            let a = &payload.authorization;
            BatchSettler::SignedAuthorization {
                from: a.from,
                to: a.to,
                value: a.value,
                validAfter: a.valid_after,
                validBefore: a.valid_before,
                nonce: a.nonce,
                signature: payload.signature_for_chain(),
            }
        })
        .collect();
    let receipt = settler
        .settleAll(market.deployment.usdc, batch)
        .send()
        .await
        .expect("settle both")
        .get_receipt()
        .await
        .expect("mined");
    assert!(receipt.status());
    // The operator has started giving back a transfer of that transaction (`refund-unrecorded` takes it
    // for a stray, under the transaction's hash): that claims no payment's deposit.
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let give_back = agentripe_store::TransferHolder::GiveBack;
    let transaction = format!("{:#x}", receipt.transaction_hash);
    assert_eq!(store.claim_transfer(&transaction, give_back, 0).await.expect("claim"), give_back);

    // Each payment becomes a task of its own, keyed keccak256(abi.encode(txHash, payer, nonce)), and
    // each buyer is told the transaction that moved its money.
    let mut tasks = BTreeSet::new();
    for (header, payload) in headers.iter().zip(&payloads) {
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", header), "").await;
        let settled: agentripe_x402::SettleResponse =
            decode_header(response.headers()["payment-response"].to_str().expect("ascii"))
                .expect("PAYMENT-RESPONSE");
        assert_eq!(settled.transaction, format!("{:#x}", receipt.transaction_hash));
        let task_id = task_id_of(response).await;
        let authorization = &payload.authorization;
        let expected =
            keccak256((receipt.transaction_hash, authorization.from, authorization.nonce).abi_encode());
        assert_eq!(task_id, expected);
        let deposit = market.deposit(task_id).await;
        assert_eq!(
            (deposit.buyer, deposit.amount, deposit.status),
            (authorization.from, U256::from(PRICE), 1)
        );
        tasks.insert(task_id);
    }
    assert_eq!(tasks.len(), 2, "a deposit each");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(2 * PRICE));
});

on_both_engines!(a_purchase_is_answered_at_its_timeout_while_the_chain_takes_longer, |market| async move {
    use std::time::Duration;
    let mut config = market.config();
    config.purchase_timeout = Duration::from_secs(2);
    config.chain_timeout = Duration::from_secs(60);
    let server = market.start_with(config).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // The settlement waits in the node's pool far longer than the buyer is to wait for its answer.
    market.hold_blocks().await;
    let asked = tokio::time::Instant::now();
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    let waited = asked.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert!(
        waited < Duration::from_secs(30),
        "answered at the purchase's timeout, not the chain's: {waited:?}"
    );
    assert!(body["message"].as_str().is_some_and(|m| m.contains("being settled")), "{body}");
    let follow = body["payment"]["follow"].as_str().expect("a payment to follow").to_owned();

    // The payment went on without the request: once mined, it is recorded, and the same header gets the task.
    market.resume_mining().await;
    let followed = server.payment_eventually(&follow, "recorded").await;
    let task_id = task_id_of(server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;
    assert_eq!(task_id, market.settlement_of(&header).await);
    assert_eq!(followed["taskId"].as_str().map(str::parse), Some(Ok(task_id)));
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
});

/// A buyer who hangs up while its payment's claim is being stored does not leave the payment leased to
/// no one until the lease runs out: the claim and the advance go on without the request. PostgreSQL
/// only: a table lock holds the claim's insert, and `pg_stat_activity` shows when it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_who_hangs_up_while_its_claim_is_stored_is_settled_and_recorded_at_once() {
    use std::time::Duration;
    let Some(market) = Market::new(Engine::Postgres, "hang_up_during_claim").await else {
        return;
    };
    let mut config = market.config();
    // A claim orphaned by the hang-up would wait out this lease before the reconciler took it over.
    config.payment_lease = Duration::from_secs(600);
    let server = market.start_with(config).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    let mut lock = TableLock::writes(&market.database_url, "payments").await;
    tokio::select! {
        response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "") => {
            panic!("answered {} while the claim could not be stored", response.status())
        }
        () = async {
            while !lock.blocks("INSERT INTO payments").await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    // The request is dropped, so its connection is closed: the server reads the hang-up and drops the
    // request's handler, while the insert it sent waits on.
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.release().await;

    let payment: agentripe_x402::v2::PaymentPayload = decode_header(&header).expect("decodes");
    let follow = format!("/payments/{}/{}", buyer.address(), payment.payload.authorization.nonce);
    // Recorded without a retry, not left leased to no one.
    let last = server.payment_eventually(&follow, "recorded").await;
    let task_id: B256 = last["taskId"].as_str().expect("taskId").parse().expect("hash");
    assert_eq!(task_id, market.settlement_of(&header).await, "settled once, under its deposit id");
    assert_eq!(market.deposit(task_id).await.status, 1);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
}

/// A claim whose insert waited behind a lock longer than its lease is stored with that lease already run
/// out; its claimant renews it before settling, so that the reconciler does not take the payment up
/// alongside it. PostgreSQL only, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_stored_after_its_lease_ran_out_renews_it_first() {
    use std::time::Duration;
    let Some(market) = Market::new(Engine::Postgres, "claim_stored_late").await else {
        return;
    };
    let mut config = market.config();
    // Renewed every second; no reconciler pass after start-up, so that only the claimant holds it.
    config.payment_lease = Duration::from_secs(3);
    config.reconcile_interval = Duration::from_secs(3_600);
    let server = market.start_with(config).await;
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    let (lock, buying) = buy_behind_a_locked_claim(&server, &market, &header).await;
    // The lease the insert carries runs out while it waits; its settlement then waits in the pool.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    market.hold_blocks().await;
    lock.release().await;
    while store.payment(1).await.expect("read").is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Well before its first renewal on the timer, the lease is live again: no reconciler would take it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled = store.stalled_payments(agentripe_server::util::now_ms(), 10).await.expect("stalled");
    assert_eq!(stalled, Vec::<i64>::new(), "renewed before its first step");
    market.resume_mining().await;

    let response = buying.await.expect("join").expect("answer");
    assert_eq!(task_id_of(response).await, market.settlement_of(&header).await, "its task, settled once");
    assert_eq!(
        store.payment(1).await.expect("read").expect("payment").leases,
        1,
        "held by its claimant alone"
    );
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
}

/// A retry of a refused payment whose reopening waits past the purchase's timeout is not told "refused"
/// from the row it is about to reopen: it would sign anew and pay twice. PostgreSQL only, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_past_its_timeout_is_not_refused_by_the_row_it_reopens() {
    use std::time::Duration;
    let Some(market) = Market::new(Engine::Postgres, "retry_past_timeout").await else {
        return;
    };
    let mut config = market.config();
    config.purchase_timeout = Duration::from_secs(2);
    let server = market.start_with(config).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    market.pause_token().await;
    let refused = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(refused.status(), 402, "a paused token refuses it, and the refusal is stored");
    market.unpause_token().await;

    // The retry's claim (which reopens the refused row) waits behind a lock past the purchase's timeout.
    let lock = TableLock::writes(&market.database_url, "payments").await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 503, "in doubt, not refused: {body}");
    assert!(body["payment"]["follow"].is_string(), "{body}");
    lock.release().await;

    server.payment_eventually(body["payment"]["follow"].as_str().expect("follow"), "recorded").await;
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
}

/// A claim whose connection to the database is cut while it stores the payment (a database restarting or
/// failing over) is answered as in doubt, with the payment to follow and "resend this same request":
/// a buyer told only "internal error" might sign a new authorization, and pay twice. The same header
/// then buys once. PostgreSQL only, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_database_connection_is_cut_is_in_doubt_and_its_retry_buys_once() {
    let Some(market) = Market::new(Engine::Postgres, "claim_connection_cut").await else {
        return;
    };
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    let (mut lock, buying) = buy_behind_a_locked_claim(&server, &market, &header).await;
    assert_eq!(lock.terminate_blocked("INSERT INTO payments").await, 1, "the claim's connection is cut");
    let response = buying.await.expect("join").expect("answer");
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 503, "in doubt, not an internal error: {body}");
    assert!(retry_after.is_some(), "{body}");
    assert!(body["payment"]["follow"].is_string(), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("database failed") && message.contains("never a new signature"), "{body}");
    lock.release().await;
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let stored = store.payments_in_flight(&format!("{:#x}", buyer.address()), 10).await.expect("read");
    assert!(stored.is_empty(), "the cut insert stored nothing: {stored:?}");

    let retried = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(task_id_of(retried).await, market.settlement_of(&header).await, "bought with the same header");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
}

// A header resent once its authorization is too close to expiry to settle (a 503 tells its buyer to
// resend the same request, for as long as that takes) answers with what became of its payment, not
// "payment required", on which its buyer would sign again and pay twice. The same header with another
// body is that other purchase's 409; a stranger's signature over the same authorization learns nothing.
on_both_engines!(a_header_resent_near_its_expiry_answers_with_its_payment, |market| async move {
    use agentripe_x402::exact::MIN_SETTLEMENT_WINDOW_SECONDS;
    let server = market.start().await;
    let buyer = market.buyer(2 * PRICE).await;
    let offer = market.offer();
    let accepted = agentripe_x402::v2::PaymentRequirements::for_offer(&offer);
    let valid_before = now() + MIN_SETTLEMENT_WINDOW_SECONDS + 8;
    let authorization = agentripe_x402::Authorization {
        valid_before: U256::from(valid_before),
        ..market.authorization(&buyer)
    };
    let signed = market.sign(&buyer, &offer, authorization.clone());
    let header = market.v2_header(signed.clone(), accepted.clone());
    let task = task_id_of(server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await).await;

    while now() + MIN_SETTLEMENT_WINDOW_SECONDS <= valid_before {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let resent = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert!(resent.headers().contains_key("payment-response"), "{:?}", resent.headers());
    assert_eq!(task_id_of(resent).await, task, "its task, not a 402");
    let as_v1 = market.v1_header(signed);
    let resent_as_v1 = server.buy(market.agent_id, ("X-PAYMENT", &as_v1), "").await;
    assert_eq!(task_id_of(resent_as_v1).await, task, "the same authorization in a v1 header");

    let other_body = r#"{"task_detail":"another purchase"}"#;
    let other = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), other_body).await;
    assert_eq!(other.status(), 409, "{}", other.text().await.unwrap_or_default());
    let stranger = alloy::signers::local::PrivateKeySigner::random();
    let forged = market.v2_header(market.sign(&stranger, &offer, authorization), accepted);
    let refused = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &forged), "").await;
    assert_eq!(refused.status(), 402, "a stranger's signature is refused as it always was");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "charged once");
});

/// Buys with `header` from a task of its own while the payments table is locked for writes, and returns
/// once the purchase's claim waits behind the lock: the lock, and the purchase's answer to come.
async fn buy_behind_a_locked_claim(
    server: &agentripe_server::testing::Server,
    market: &Market,
    header: &str,
) -> (TableLock, tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>>) {
    let mut lock = TableLock::writes(&market.database_url, "payments").await;
    let request =
        reqwest::Client::new().post(server.purchase_url(market.agent_id)).header("PAYMENT-SIGNATURE", header);
    let buying = tokio::spawn(request.send());
    while !lock.blocks("INSERT INTO payments").await {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (lock, buying)
}

fn base64_catalog() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(agentripe_server::testing::CATALOG)
}
