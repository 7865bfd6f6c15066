//! The operator's writes go out in batches: deposits recorded, released and refunded at about the same
//! time share a transaction, within the batch's bounds, and each is still written exactly once: after a
//! crash that left a batch stored but never broadcast, and when one entry spoils its batch.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use agentripe_chain::bindings::Agentripe::DepositRecord;
use agentripe_server::{
    batching::{BatchPolicy, Batcher},
    chain_writer::WriteError,
    money_in::Record,
    on_both_engines,
    testing::{InBlock, Market, PRICE, Server, key, now, vendor_headers},
};
use agentripe_store::{ChainTxStatus, PaymentStatus, Store};
use alloy::{
    primitives::{Address, B256, U256},
    providers::Provider,
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The hashes of the transactions stored for `purpose` on each of `subjects`, one list per subject.
async fn stored(store: &Store, purpose: &str, subjects: &[String]) -> Vec<Vec<String>> {
    let mut hashes = Vec::new();
    for subject in subjects {
        let txs = store.txs_for(purpose, subject).await.expect("txs");
        hashes.push(txs.into_iter().map(|tx| tx.tx_hash).collect());
    }
    hashes
}

/// `POST /vendor/tasks/{task}/{action}` as the market's vendor, from a task of its own.
async fn as_vendor(server: &Server, task: &str, action: &str, body: Value) -> (u16, Value) {
    let (vendor, agent) = &server.vendor;
    let response = server
        .http
        .post(format!("{}/vendor/tasks/{task}/{action}", server.base))
        .headers(vendor_headers(vendor, *agent, now()))
        .json(&body)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json().await.expect("json"))
}

/// Whether the transaction `hash` was mined and did not revert.
async fn succeeded(market: &Market, hash: &str) -> bool {
    let hash = hash.parse().expect("hash");
    market.provider.get_transaction_receipt(hash).await.expect("rpc").expect("mined").status()
}

/// The market's vendor starts `task` and then does `action` with `body`, on a task of its own; the
/// answer to `action`.
fn start_and(
    server: &Arc<Server>,
    task: &str,
    action: &'static str,
    body: Value,
) -> JoinHandle<(u16, Value)> {
    let (server, task) = (server.clone(), task.to_owned());
    tokio::spawn(async move {
        let (status, _) = as_vendor(&server, &task, "start", json!({})).await;
        assert_eq!(status, 200);
        as_vendor(&server, &task, action, body).await
    })
}

fn batching(max_size: usize, max_wait_ms: u64) -> BatchPolicy {
    BatchPolicy { max_size, max_wait: Duration::from_millis(max_wait_ms) }
}

/// Waits until a transaction is stored for `purpose` on each of `subjects`.
async fn until_stored(store: &Store, purpose: &str, subjects: &[String]) {
    for _ in 0..400 {
        if stored(store, purpose, subjects).await.iter().all(|txs| !txs.is_empty()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no {purpose} transactions stored for {subjects:?}");
}

/// The distinct transactions among `stored`, each with how many subjects it serves.
fn batches(stored: &[Vec<String>]) -> BTreeMap<&String, usize> {
    let mut batches = BTreeMap::new();
    for hash in stored.iter().flatten() {
        *batches.entry(hash).or_default() += 1;
    }
    batches
}

on_both_engines!(records_that_arrive_while_one_is_in_flight_go_together, |market| async move {
    let mut config = market.config();
    config.batching = batching(5, 2_000);
    let server = Arc::new(market.start_with(config).await);
    let store = Store::connect(&market.database_url).await.expect("store");
    let mut buyers = Vec::new();
    for _ in 0..7 {
        buyers.push(market.buyer(PRICE).await);
    }
    // Seven settlements land in one block; the first record goes out alone at once and stays in the
    // pool, the six behind it gather: five (the bound) and then one.
    market.hold_blocks().await;
    let purchases: Vec<_> = buyers
        .iter()
        .map(|buyer| {
            let (server, header, agent) = (server.clone(), market.pay_v2(buyer), market.agent_id);
            tokio::spawn(async move { server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await.status() })
        })
        .collect();
    let payments: Vec<String> = (1..=7).map(|id: i64| id.to_string()).collect();
    until_stored(&store, "settle", &payments).await;
    let _: Value = market.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    until_stored(&store, "record", &payments).await;
    market.resume_mining().await;
    for purchase in purchases {
        assert_eq!(purchase.await.expect("join"), 200);
    }

    let records = stored(&store, "record", &payments).await;
    assert!(records.iter().all(|txs| txs.len() == 1), "one record transaction per payment: {records:?}");
    let batches = batches(&records);
    assert!((2..=3).contains(&batches.len()), "seven records in two or three transactions: {batches:?}");
    assert!(batches.values().all(|members| *members <= 5), "at most five per batch: {batches:?}");
    for hash in batches.keys() {
        assert!(succeeded(&market, hash).await, "{hash}");
    }
    for id in 1..=7 {
        let payment = store.payment(id).await.expect("read").expect("payment");
        let deposit: B256 = payment.deposit_id.expect("deposit").parse().expect("hash");
        let on_chain = market.deposit(deposit).await;
        assert_eq!((on_chain.status, on_chain.amount), (1, U256::from(PRICE)), "payment {id}");
    }
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(7 * PRICE));
});

on_both_engines!(payouts_decided_together_go_out_together, |market| async move {
    let mut config = market.config();
    config.batching = batching(50, 2_000);
    let server = Arc::new(market.start_with(config).await);
    let store = Store::connect(&market.database_url).await.expect("store");
    let mut tasks = Vec::new();
    for _ in 0..6 {
        tasks.push(server.purchase(&market, &json!({})).await);
    }
    // Three tasks completed (released to the vendor) and three failed (refunded), all at once, while no
    // block is mined: of each kind, the first goes alone and the two behind it together.
    market.hold_blocks().await;
    let decisions: Vec<_> = tasks
        .iter()
        .enumerate()
        .map(|(i, (_, task))| match i {
            0..3 => start_and(&server, task, "complete", json!({ "result": "done" })),
            _ => start_and(&server, task, "fail", json!({ "errorMessage": "cannot" })),
        })
        .collect();
    let ids: Vec<String> = tasks.iter().map(|(_, task)| task.clone()).collect();
    until_stored(&store, "release", &ids[..3]).await;
    until_stored(&store, "refund", &ids[3..]).await;
    market.resume_mining().await;
    for decision in decisions {
        let (status, body) = decision.await.expect("join");
        assert_eq!(status, 200, "{body}");
    }
    for (i, task) in ids.iter().enumerate() {
        server.escrow_status_eventually(task, if i < 3 { "released" } else { "refunded" }).await;
    }

    for (purpose, tasks) in [("release", &ids[..3]), ("refund", &ids[3..])] {
        let sent = stored(&store, purpose, tasks).await;
        assert!(sent.iter().all(|txs| txs.len() == 1), "one {purpose} transaction per task: {sent:?}");
        assert_eq!(batches(&sent).len(), 2, "three {purpose}s in two transactions: {sent:?}");
    }
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(3 * PRICE));
    for (buyer, _) in &tasks[3..] {
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "refunded in full");
    }
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);
});

on_both_engines!(payouts_that_revert_on_chain_are_sent_again, |market| async move {
    let mut config = market.config();
    config.batching = batching(50, 2_000);
    let server = Arc::new(market.start_with(config).await);
    let store = Store::connect(&market.database_url).await.expect("store");
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(server.purchase(&market, &json!({})).await);
    }
    // Three approvals at once while no block is mined: the first release goes alone, the two behind it
    // together. Each passes its estimate; then the owner rotates the operator key away ahead of them in
    // their block, so all of them revert on chain.
    market.hold_blocks().await;
    let decisions: Vec<_> = tasks
        .iter()
        .map(|(_, task)| start_and(&server, task, "complete", json!({ "result": "done" })))
        .collect();
    let ids: Vec<String> = tasks.iter().map(|(_, task)| task.clone()).collect();
    until_stored(&store, "release", &ids).await;
    let reverted = stored(&store, "release", &ids).await;
    assert_eq!(batches(&reverted).len(), 2, "one release alone and a batch of two: {reverted:?}");
    market.appoint_operator_in_pool(key(&market.anvil, 5).address(), InBlock::First).await;
    let _: Value = market.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    for hash in batches(&reverted).keys() {
        assert!(!succeeded(&market, hash).await, "{hash} reverted on chain");
    }
    market.resume_mining().await;
    market.appoint_operator(market.operator.address()).await;
    for decision in decisions {
        let (status, body) = decision.await.expect("join");
        assert_eq!(status, 200, "{body}");
    }

    // A reverted write is as good as none: each deposit is released in the end, once.
    for task in &ids {
        server.escrow_status_eventually(task, "released").await;
    }
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(3 * PRICE));
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);
    for (task, first) in ids.iter().zip(&reverted) {
        let sent = store.txs_for("release", task).await.expect("txs");
        assert_eq!(sent[0].tx_hash, first[0], "the reverted transaction first");
        let last = &sent.last().expect("sent again").tx_hash;
        assert!(succeeded(&market, last).await, "{task} released by {last}");
    }
});

on_both_engines!(a_payout_that_keeps_reverting_is_not_sent_forever, |market| async move {
    let server = Arc::new(market.start().await);
    let store = Store::connect(&market.database_url).await.expect("store");
    let (_, task) = server.purchase(&market, &json!({})).await;
    let (status, _) = as_vendor(&server, &task, "start", json!({})).await;
    assert_eq!(status, 200);
    // Each time the release is sent, it passes its estimate and then reverts in its block: the owner
    // rotates the operator key away ahead of it, and back after it.
    market.hold_blocks().await;
    let completing = {
        let (server, task) = (server.clone(), task.clone());
        tokio::spawn(async move { as_vendor(&server, &task, "complete", json!({ "result": "done" })).await })
    };
    let stranger = key(&market.anvil, 5).address();
    for sent in 1..=3 {
        for _ in 0..400 {
            if store.txs_for("release", &task).await.expect("txs").len() == sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(store.txs_for("release", &task).await.expect("txs").len(), sent, "release {sent} sent");
        // Both in the release's block: the rotation ahead of it, the return behind it.
        market.appoint_operator_in_pool(stranger, InBlock::First).await;
        market.appoint_operator_in_pool(market.operator.address(), InBlock::Last).await;
        let _: Value = market.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    }
    market.resume_mining().await;
    let (status, body) = completing.await.expect("join");
    assert_eq!(status, 200, "{body}");

    // Three reverted releases, each paid for in gas: no fourth, however many reconciler passes go by.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = store.txs_for("release", &task).await.expect("txs");
    assert_eq!(sent.len(), 3, "{sent:?}");
    for tx in &sent {
        assert!(!succeeded(&market, &tx.tx_hash).await, "{} reverted", tx.tx_hash);
    }
    assert_eq!(server.task(&task).await["task"]["escrowStatus"], "releasing");
    assert_eq!(server.get_json("/health").await["escrow"]["payoutsStuck"], 1, "the operator is told");
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1, "still in the escrow");
});

on_both_engines!(a_batch_stored_but_never_broadcast_is_sent_after_a_restart, |market| async move {
    let mut config = market.config();
    config.batching = batching(50, 2_000);
    config.payment_lease = Duration::from_secs(1);
    let store = Store::connect(&market.database_url).await.expect("store");

    // First life: three purchases settle in one block; their records are signed and stored (the first
    // alone, the two behind it as a batch), then the process dies and the node forgets them, as if
    // they had never been broadcast.
    let first = Arc::new(market.start_with(config.clone()).await);
    let mut buyers = Vec::new();
    for _ in 0..3 {
        buyers.push(market.buyer(PRICE).await);
    }
    market.hold_blocks().await;
    let requests: Vec<_> = buyers
        .iter()
        .map(|buyer| {
            let (server, header, agent) = (first.clone(), market.pay_v2(buyer), market.agent_id);
            tokio::spawn(async move { server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await })
        })
        .collect();
    let payments: Vec<String> = (1..=3).map(|id: i64| id.to_string()).collect();
    until_stored(&store, "settle", &payments).await;
    let _: Value = market.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    until_stored(&store, "record", &payments).await;
    first.crash();
    for request in requests {
        request.abort();
    }
    let records = stored(&store, "record", &payments).await;
    assert!(records.iter().all(|txs| txs.len() == 1), "{records:?}");
    assert!(batches(&records).values().any(|members| *members == 2), "a batch among them: {records:?}");
    let _: Value = market.provider.raw_request("anvil_dropAllTransactions".into(), ()).await.expect("drop");
    market.resume_mining().await;

    // Second life, same database: the reconciler finds each payment's stored transaction, the batch
    // included, and sends the same signed bytes; nothing new is signed for them.
    let second = market.start_with(config).await;
    for id in 1..=3 {
        let mut recorded = false;
        for _ in 0..200 {
            let payment = store.payment(id).await.expect("read").expect("payment");
            if payment.status == PaymentStatus::Recorded {
                let deposit: B256 = payment.deposit_id.expect("deposit").parse().expect("hash");
                assert_eq!(market.deposit(deposit).await.status, 1);
                recorded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(recorded, "payment {id} recorded after the restart");
    }
    assert_eq!(stored(&store, "record", &payments).await, records, "the stored transactions, nothing new");
    for id in &payments {
        let tx = &store.txs_for("record", id).await.expect("txs")[0];
        assert_eq!(tx.status().expect("status"), ChainTxStatus::Mined);
    }
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(3 * PRICE));
    second.crash();
});

on_both_engines!(an_entry_that_spoils_its_batch_is_written_alone, |market| async move {
    let store = Store::connect(&market.database_url).await.expect("store");
    let writer = market.operator_writer(&store).await;
    let records = Arc::new(Batcher::<Record>::start(writer, market.deployment.agentripe, batching(10, 300)));
    let write = |subject: &str, entry: &DepositRecord| {
        let (records, subject, entry) = (records.clone(), subject.to_owned(), entry.clone());
        tokio::spawn(async move { records.write(subject, entry).await })
    };
    // Three payments' tokens are in the escrow; one more entry names an agent that does not exist, which
    // recordDeposits refuses for the whole batch.
    market.mint(market.deployment.agentripe, 3 * PRICE).await;
    let entry = |agent: U256| DepositRecord {
        depositId: B256::random(),
        agentId: agent,
        buyer: Address::random(),
        amount: U256::from(PRICE),
    };
    let [first, other, last] = [(); 3].map(|_| entry(market.agent_id));
    let spoiler = entry(U256::from(999));

    // The first write goes alone and waits in the pool; the rest gather behind it (one asked twice),
    // and their batch would revert.
    market.hold_blocks().await;
    let written_first = write("first", &first);
    until_stored(&store, "record", &["first".to_owned()]).await;
    let behind =
        [write("other", &other), write("other", &other), write("spoiler", &spoiler), write("last", &last)];
    until_stored(&store, "record", &["other".to_owned(), "last".to_owned()]).await;
    market.resume_mining().await;

    assert!(written_first.await.expect("join").is_ok());
    let [other_once, other_twice, spoiled, written_last] = behind;
    for written in [other_once, other_twice, written_last] {
        assert!(written.await.expect("join").is_ok());
    }
    let spoiled = spoiled.await.expect("join");
    assert!(matches!(spoiled, Err(WriteError::WouldRevert(_))), "{spoiled:?}");
    for good in [&first, &other, &last] {
        assert_eq!(market.deposit(good.depositId).await.status, 1);
    }
    assert_eq!(market.deposit(spoiler.depositId).await.status, 0);
    // The refused batch was never signed; each of its good entries went alone, once.
    let subjects = ["first", "other", "last", "spoiler"].map(str::to_owned);
    let sent = stored(&store, "record", &subjects).await;
    assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 1, 0], "{sent:?}");
    assert_eq!(batches(&sent).len(), 3, "three transactions of one deposit each: {sent:?}");
});
