//! The chain writer's waits. In a fee spike a transaction priced under the chain's base fee is replaced
//! with higher fees (same nonce, same call), within the configured cap, and the call happens once; and
//! when several waiters wait on one nonce, none takes for dropped what another made or saw mined.

use std::time::Duration;

use agentripe_chain::bindings::IdentityRegistry;
use agentripe_server::{
    chain_writer::{ChainWriter, Confirmation, FeePolicy, WriteError},
    on_both_engines,
    testing::LaggingRpc,
};
use agentripe_store::{ChainTxStatus, Store};
use alloy::{
    consensus::TxEnvelope,
    eips::Decodable2718,
    primitives::{Address, Bytes, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::TransactionReceipt,
    sol_types::SolCall,
};
use serde_json::Value;

async fn anvil<P: serde::Serialize + Clone + std::fmt::Debug + Send + Sync + Unpin + 'static>(
    provider: &DynProvider,
    method: &'static str,
    params: P,
) {
    provider
        .raw_request::<_, Value>(method.into(), params)
        .await
        .unwrap_or_else(|error| panic!("{method}: {error}"));
}

/// A call the writers send in these tests: one identity registered to the operator each time it lands.
fn register_call() -> Bytes {
    IdentityRegistry::register_2Call { agentURI: "data:application/json,{}".into() }.abi_encode().into()
}

/// `writer` sends [`register_call`] to `registry` for `subject` and waits for it, on a task of its own.
fn register_in_background(
    writer: ChainWriter,
    registry: Address,
    subject: &'static str,
) -> tokio::task::JoinHandle<Result<TransactionReceipt, WriteError>> {
    tokio::spawn(async move { writer.send_and_confirm("test", subject, registry, register_call()).await })
}

/// How many identities the operator holds: how many times [`register_call`] happened.
async fn registrations(market: &agentripe_server::testing::Market) -> U256 {
    IdentityRegistry::new(market.deployment.identity_registry, &market.provider)
        .balanceOf(market.operator.address())
        .call()
        .await
        .expect("balance")
}

/// What became of each transaction stored for `subject` (purpose "test"), oldest first.
async fn statuses_of(store: &Store, subject: &str) -> Vec<ChainTxStatus> {
    let txs = store.txs_for("test", subject).await.expect("txs");
    txs.iter().map(|tx| tx.status().expect("status")).collect()
}

/// The transaction stored for `subject` (purpose "test"), once a writer on another task has stored it.
async fn stored_for(store: &Store, subject: &str) -> agentripe_store::ChainTx {
    loop {
        match store.txs_for("test", subject).await.expect("txs").pop() {
            Some(stored) => return stored,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn mine_every_300_ms(provider: &DynProvider) -> tokio::task::JoinHandle<()> {
    let provider = provider.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            anvil(&provider, "evm_mine", ()).await;
        }
    })
}

fn max_fee_of(raw_tx: &str) -> u128 {
    let raw = alloy::primitives::hex::decode(raw_tx).expect("hex");
    match TxEnvelope::decode_2718(&mut raw.as_slice()).expect("a transaction") {
        TxEnvelope::Eip1559(signed) => signed.tx().max_fee_per_gas,
        other => panic!("not EIP-1559: {other:?}"),
    }
}

const BUMP_AFTER: Duration = Duration::from_millis(500);

async fn writer(
    market: &agentripe_server::testing::Market,
    store: &Store,
    max_fee_per_gas: u128,
    bump_after: Duration,
) -> ChainWriter {
    writer_through(market.provider.clone(), market, store, max_fee_per_gas, bump_after).await
}

async fn writer_through(
    provider: DynProvider,
    market: &agentripe_server::testing::Market,
    store: &Store,
    max_fee_per_gas: u128,
    bump_after: Duration,
) -> ChainWriter {
    let confirmation = Confirmation {
        confirmations: 0,
        poll_interval: Duration::from_millis(20),
        timeout: Duration::from_secs(30),
        rpc_lag: Duration::from_secs(1),
    };
    let fees = FeePolicy { bump_after, max_fee_per_gas };
    ChainWriter::new(
        market.operator.clone(),
        provider,
        store.clone(),
        market.deployment.chain_id,
        confirmation,
        fees,
    )
    .await
    .expect("writer")
}

on_both_engines!(a_stuck_transaction_is_replaced_with_higher_fees_and_happens_once, |market| async move {
    let store = Store::connect(&market.database_url).await.expect("store");
    let writer = writer(&market, &store, 1_000_000_000_000, BUMP_AFTER).await;
    let provider = market.provider.clone();
    let registry = market.deployment.identity_registry;

    // Blocks come only when the test mines them; the base fee jumps above what the transaction offers.
    market.hold_blocks().await;
    let stuck = writer.send("test", &["stuck"], None, registry, register_call()).await.expect("sent");
    let offered = max_fee_of(&stuck.raw_tx);
    anvil(&provider, "anvil_setNextBlockBaseFeePerGas", (U256::from(offered * 10),)).await;
    anvil(&provider, "evm_mine", ()).await;
    assert!(
        provider.get_transaction_receipt(stuck.tx_hash.parse().expect("hash")).await.expect("rpc").is_none(),
        "left out"
    );

    let miner = mine_every_300_ms(&provider);
    let receipt = writer.confirm(&stuck).await.expect("mined, replaced");
    miner.abort();
    market.resume_mining().await;

    assert!(receipt.status());
    assert_ne!(format!("{:#x}", receipt.transaction_hash), stuck.tx_hash, "the replacement was mined");
    let txs = store.txs_for("test", "stuck").await.expect("txs");
    assert_eq!(txs.len(), 2, "the transaction and one replacement");
    assert!(txs.iter().all(|tx| tx.nonce == stuck.nonce), "same nonce");
    assert!(max_fee_of(&txs[1].raw_tx) > offered, "higher fees");
    let statuses: Vec<ChainTxStatus> = txs.iter().map(|tx| tx.status().expect("status")).collect();
    assert_eq!(statuses, vec![ChainTxStatus::Dropped, ChainTxStatus::Mined]);
    assert_eq!(registrations(&market).await, U256::from(1), "the call happened once");
});

on_both_engines!(fees_are_never_raised_past_the_cap, |market| async move {
    let store = Store::connect(&market.database_url).await.expect("store");
    let provider = market.provider.clone();
    let registry = market.deployment.identity_registry;
    // A cap at what the chain asks now: the spike cannot be met, so the transaction waits as it is.
    let asked = provider.estimate_eip1559_fees().await.expect("fees").max_fee_per_gas;
    let writer = writer(&market, &store, asked, BUMP_AFTER).await;
    market.hold_blocks().await;
    let stuck = writer.send("test", &["capped"], None, registry, register_call()).await.expect("sent");
    anvil(&provider, "anvil_setNextBlockBaseFeePerGas", (U256::from(asked * 10),)).await;
    anvil(&provider, "evm_mine", ()).await;
    let waited = tokio::time::timeout(Duration::from_secs(3), writer.confirm(&stuck)).await;
    market.resume_mining().await;
    assert!(waited.is_err(), "still waiting for fees to fall");
    let txs = store.txs_for("test", "capped").await.expect("txs");
    assert_eq!(txs.len(), 1, "no replacement above the cap");
});

on_both_engines!(a_wait_sees_the_replacement_another_waiter_made, |market| async move {
    let store = Store::connect(&market.database_url).await.expect("store");
    let provider = market.provider.clone();
    let registry = market.deployment.identity_registry;
    // The sender never raises fees itself; a second waiter of the same transaction (a resumed step) does.
    let sender = writer(&market, &store, 1_000_000_000_000, Duration::from_secs(600)).await;
    let resumer = writer(&market, &store, 1_000_000_000_000, BUMP_AFTER).await;

    market.hold_blocks().await;
    let sending = register_in_background(sender, registry, "shared");
    let stuck = stored_for(&store, "shared").await;
    anvil(&provider, "anvil_setNextBlockBaseFeePerGas", (U256::from(max_fee_of(&stuck.raw_tx) * 10),)).await;
    anvil(&provider, "evm_mine", ()).await;

    let miner = mine_every_300_ms(&provider);
    let replaced = resumer.confirm(&stuck).await.expect("mined, replaced");
    let sent = sending.await.expect("join").expect("the sender's wait ends with the replacement");
    miner.abort();
    market.resume_mining().await;

    assert_ne!(format!("{:#x}", replaced.transaction_hash), stuck.tx_hash, "the replacement was mined");
    assert_eq!(
        sent.transaction_hash, replaced.transaction_hash,
        "the sender saw it, though it never made it"
    );
    let statuses = statuses_of(&store, "shared").await;
    assert_eq!(statuses, vec![ChainTxStatus::Dropped, ChainTxStatus::Mined], "nothing signed anew");
    assert_eq!(registrations(&market).await, U256::from(1), "the call happened once");
});

on_both_engines!(a_wait_behind_a_lagging_rpc_trusts_a_receipt_another_waiter_saw, |market| async move {
    let store = Store::connect(&market.database_url).await.expect("store");
    let provider = market.provider.clone();
    let registry = market.deployment.identity_registry;
    // The sender's node shows receipts 4 s late, past the writers' allowance for lag (1 s); the other
    // waiter's node shows them at once. Neither raises fees.
    let rpc = LaggingRpc::start(market.anvil.endpoint(), Duration::from_secs(4)).await;
    let lagging = ProviderBuilder::new().connect_http(rpc.url.parse().expect("url")).erased();
    let never = Duration::from_secs(600);
    let sender = writer_through(lagging, &market, &store, 1_000_000_000_000, never).await;
    let watcher = writer(&market, &store, 1_000_000_000_000, never).await;

    market.hold_blocks().await;
    let sending = register_in_background(sender, registry, "lagged");
    let stored = stored_for(&store, "lagged").await;
    let miner = mine_every_300_ms(&provider);
    let seen = watcher.confirm(&stored).await.expect("mined");
    let sent = sending.await.expect("join").expect("the sender's wait ends with that receipt");
    miner.abort();
    market.resume_mining().await;

    assert_eq!(sent.transaction_hash, seen.transaction_hash, "nothing signed anew");
    let statuses = statuses_of(&store, "lagged").await;
    assert_eq!(statuses, vec![ChainTxStatus::Mined]);
    assert_eq!(registrations(&market).await, U256::from(1), "the call happened once");
});
