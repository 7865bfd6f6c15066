//! The storage promises, each checked on SQLite and on PostgreSQL.

use std::collections::BTreeSet;

use agentripe_store::{
    Claim, EscrowStatus, NewPayment, NewTask, PaymentStatus, SignedTx, Store, TaskStatus,
    testing::{Engine, fresh_store},
};

const NOW: i64 = 1_700_000_000_000;

/// Runs `test` on a fresh store of each engine (PostgreSQL skipped loudly when unreachable outside CI).
macro_rules! on_both_engines {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for engine in [Engine::Sqlite, Engine::Postgres] {
                if let Some(store) = fresh_store(engine, stringify!($name)).await {
                    let test: fn(Store) -> _ = $body;
                    test(store).await;
                }
            }
        }
    };
}

fn payment(nonce: &str) -> NewPayment {
    NewPayment {
        chain_id: 31337,
        asset: "0xaaaa".into(),
        payer: "0xbbbb".into(),
        nonce: nonce.into(),
        amount: "100000".into(),
        agent_id: "1".into(),
        service_path: "translate".into(),
        x402_version: 2,
        payment: "{}".into(),
        valid_before: 1_700_000_300,
        request: "{}".into(),
        search_from_block: 7,
    }
}

fn task(id: &str) -> NewTask {
    NewTask {
        id: id.into(),
        agent_id: "1".into(),
        product_id: "translate".into(),
        buyer: "0xbbbb".into(),
        amount: "100000".into(),
        request_payload: Some(r#"{"extra":1}"#.into()),
        task_detail: Some("Translate to Japanese".into()),
        task_metadata: Some(r#"{"source_lang":"en"}"#.into()),
        reviewer_request: None,
    }
}

on_both_engines!(a_payment_is_claimed_once, |store| async move {
    let first = store.claim_payment(&payment("0x01"), NOW).await.expect("claim");
    let Claim::New(claimed) = first else { panic!("first claim must be new: {first:?}") };
    assert_eq!(claimed.status, PaymentStatus::Verified);
    assert_eq!(claimed.new, payment("0x01"));

    let again = store.claim_payment(&payment("0x01"), NOW + 1).await.expect("claim again");
    assert_eq!(again, Claim::Existing(claimed.clone()));

    let other = store.claim_payment(&payment("0x02"), NOW).await.expect("another nonce");
    assert!(matches!(other, Claim::New(ref p) if p.id != claimed.id));
});

on_both_engines!(fifty_concurrent_claims_make_one_new, |store| async move {
    let claims = futures_join_all((0..50).map(|_| {
        let store = store.clone();
        async move { store.claim_payment(&payment("0xc0ffee"), NOW).await.expect("claim") }
    }))
    .await;
    let new: Vec<_> = claims.iter().filter(|claim| matches!(claim, Claim::New(_))).collect();
    assert_eq!(new.len(), 1, "exactly one claim wins");
    let ids: BTreeSet<i64> = claims
        .iter()
        .map(|claim| match claim {
            Claim::New(p) | Claim::Existing(p) => p.id,
        })
        .collect();
    assert_eq!(ids.len(), 1, "every copy sees the same payment");
});

on_both_engines!(a_lease_is_exclusive_until_it_runs_out, |store| async move {
    let Claim::New(p) = store.claim_payment(&payment("0x01"), NOW).await.expect("claim") else { panic!() };
    assert!(store.lease_payment(p.id, NOW, NOW + 30_000).await.expect("lease"));
    assert!(!store.lease_payment(p.id, NOW + 1_000, NOW + 31_000).await.expect("lease held"));
    assert_eq!(store.stalled_payments(NOW + 1_000, 10).await.expect("stalled"), Vec::<i64>::new());
    assert_eq!(store.stalled_payments(NOW + 30_001, 10).await.expect("stalled"), vec![p.id]);
    assert!(store.lease_payment(p.id, NOW + 30_001, NOW + 60_000).await.expect("lease expired"));
    store.unlease_payment(p.id).await.expect("unlease");
    assert!(store.lease_payment(p.id, NOW + 30_002, NOW + 60_000).await.expect("lease after unlease"));
});

on_both_engines!(only_an_unsettled_payment_can_fail, |store| async move {
    let Claim::New(p) = store.claim_payment(&payment("0x01"), NOW).await.expect("claim") else { panic!() };
    assert!(store.fail_payment(p.id, "insufficient_funds", NOW).await.expect("fail"));
    let failed = store.payment(p.id).await.expect("read").expect("exists");
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert_eq!(failed.failure.as_deref(), Some("insufficient_funds"));
    assert!(store.reopen_payment(p.id, NOW).await.expect("reopen"));
    assert!(!store.reopen_payment(p.id, NOW).await.expect("reopen twice"), "only a failed payment reopens");

    store.mark_payment_settled(p.id, "0xdeposit", NOW).await.expect("settle");
    assert!(
        !store.fail_payment(p.id, "unexpected_settle_error", NOW).await.expect("fail"),
        "money is in escrow"
    );
    let settled = store.payment(p.id).await.expect("read").expect("exists");
    assert_eq!(settled.status, PaymentStatus::Settled);
    assert_eq!(settled.deposit_id.as_deref(), Some("0xdeposit"));
});

on_both_engines!(recording_creates_the_task_once, |store| async move {
    let Claim::New(p) = store.claim_payment(&payment("0x01"), NOW).await.expect("claim") else { panic!() };
    assert_eq!(store.task("0xdeposit").await.expect("read"), None, "no task before the deposit is recorded");
    store.mark_payment_settled(p.id, "0xdeposit", NOW).await.expect("settle");
    store.record_payment(p.id, &task("0xdeposit"), NOW + 5).await.expect("record");
    store.record_payment(p.id, &task("0xdeposit"), NOW + 9).await.expect("recording twice is harmless");

    let stored = store.task("0xdeposit").await.expect("read").expect("task exists");
    assert_eq!(stored.new, task("0xdeposit"));
    assert_eq!(stored.status, TaskStatus::Pending);
    assert_eq!(stored.escrow_status, EscrowStatus::Deposited);
    assert_eq!(stored.review_reject_count, 0);
    assert_eq!(stored.created_at, NOW + 5);
    assert_eq!(store.payment(p.id).await.expect("read").expect("exists").status, PaymentStatus::Recorded);
    assert_eq!(store.stalled_payments(NOW + 100_000, 10).await.expect("stalled"), Vec::<i64>::new());
});

on_both_engines!(nonces_are_handed_out_once_and_never_lost, |store| async move {
    store.sync_nonce("0xsigner", 5).await.expect("sync");
    let signed = futures_join_all((0..20).map(|i| {
        let store = store.clone();
        async move {
            store
                .sign_and_store("0xsigner", "settle", &i.to_string(), NOW, |nonce| {
                    Ok::<_, ()>(SignedTx {
                        tx_hash: format!("0xhash{nonce}"),
                        raw_tx: format!("0xraw{nonce}"),
                    })
                })
                .await
                .expect("store")
                .expect("sign")
        }
    }))
    .await;
    let nonces: BTreeSet<i64> = signed.iter().map(|tx| tx.nonce).collect();
    assert_eq!(nonces, (5..25).collect(), "20 distinct consecutive nonces from the chain's");

    let refused =
        store.sign_and_store("0xsigner", "record", "x", NOW, |_| Err("cannot sign")).await.expect("store");
    assert_eq!(refused, Err("cannot sign"));
    let next = store
        .sign_and_store("0xsigner", "record", "x", NOW, |nonce| {
            Ok::<_, ()>(SignedTx { tx_hash: "0xnext".into(), raw_tx: format!("0x{nonce}") })
        })
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(next.nonce, 25, "a failed signing does not use up its nonce");

    store.sync_nonce("0xsigner", 3).await.expect("sync lower");
    store.sync_nonce("0xsigner", 40).await.expect("sync higher");
    let after_sync = store
        .sign_and_store("0xsigner", "record", "y", NOW, |_| {
            Ok::<_, ()>(SignedTx { tx_hash: "0xafter".into(), raw_tx: "0x".into() })
        })
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(after_sync.nonce, 40, "syncing only ever raises the counter");

    assert_eq!(store.pending_txs("0xsigner").await.expect("pending").len(), 22);
    store.mark_tx("0xafter", agentripe_store::ChainTxStatus::Mined, NOW).await.expect("mark");
    assert_eq!(store.pending_txs("0xsigner").await.expect("pending").len(), 21);
    let for_x = store.txs_for("record", "x").await.expect("by subject");
    assert_eq!(for_x.len(), 1);
    assert_eq!(for_x[0].tx_hash, "0xnext");
});

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}
