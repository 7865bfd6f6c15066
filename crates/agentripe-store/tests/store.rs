//! The storage promises, each checked on SQLite and on PostgreSQL.

use std::collections::BTreeSet;

use agentripe_store::{
    Claim, EscrowStatus, NewPayment, NewTask, Payment, PaymentLease, PaymentStatus, SignedTx, Store,
    StoreError, Submission, TaskStatus, Verdict,
    testing::{Engine, fresh_store, store_upgraded_from},
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

/// The holder of the payments [`claim_held`] claims.
const HOLDER: &str = "a";

/// Claims `new` (a new authorization) under a lease of [`HOLDER`]'s.
async fn claim_held(store: &Store, new: &NewPayment) -> Payment {
    match store.claim_payment(new, Some((HOLDER, NOW + 30_000)), NOW).await.expect("claim") {
        Claim::New(payment) => payment,
        Claim::Existing(_) => panic!("a new authorization was claimed before"),
    }
}

/// [`HOLDER`]'s lease of `payment`.
fn held(payment: &Payment) -> PaymentLease<'static> {
    payment.leased_by(HOLDER)
}

/// Whether `result` is a step refused because `payment` was not the stepper's to move on.
fn overtaken<T>(result: Result<T, StoreError>, payment: &Payment) -> bool {
    matches!(result, Err(StoreError::Overtaken(id)) if id == payment.id)
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
        expires_at: NOW + 7 * 24 * 3600 * 1000,
    }
}

on_both_engines!(a_payment_is_claimed_once, |store| async move {
    let first = store.claim_payment(&payment("0x01"), None, NOW).await.expect("claim");
    let Claim::New(claimed) = first else { panic!("first claim must be new: {first:?}") };
    assert_eq!(claimed.status, PaymentStatus::Verified);
    assert_eq!(claimed.new, payment("0x01"));

    let again = store.claim_payment(&payment("0x01"), None, NOW + 1).await.expect("claim again");
    assert_eq!(again, Claim::Existing(claimed.clone()));

    let other = store.claim_payment(&payment("0x02"), None, NOW).await.expect("another nonce");
    assert!(matches!(other, Claim::New(ref p) if p.id != claimed.id));
});

on_both_engines!(fifty_concurrent_claims_make_one_new, |store| async move {
    let claims = futures_join_all((0..50).map(|_| {
        let store = store.clone();
        async move { store.claim_payment(&payment("0xc0ffee"), None, NOW).await.expect("claim") }
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

on_both_engines!(stalled_payments_take_turns, |store| async move {
    // Three payments whose claimants died, the first two in doubt for hours: each attempt touches its
    // payment, so the third is not held back behind them however small the reconciler's batch.
    let mut ids = Vec::new();
    for (nonce, at) in [("0x01", NOW), ("0x02", NOW + 1), ("0x03", NOW + 2)] {
        let Claim::New(p) = store.claim_payment(&payment(nonce), None, at).await.expect("claim") else {
            panic!()
        };
        ids.push(p.id);
    }
    let stalled = async |now| store.stalled_payments(now, 2).await.expect("stalled");
    assert_eq!(stalled(NOW + 10).await, [ids[0], ids[1]], "the ones left alone longest");
    for &id in &ids[..2] {
        store.lease_payment(id, "reconciler", NOW + 10, NOW + 30_010).await.expect("lease").expect("leased");
        store.unlease_payment(id, "reconciler").await.expect("still in doubt: given back");
    }
    assert_eq!(stalled(NOW + 20).await, [ids[2], ids[0]], "the third's turn");
});

on_both_engines!(a_lease_is_exclusive_until_it_runs_out, |store| async move {
    let Claim::New(p) = store.claim_payment(&payment("0x01"), None, NOW).await.expect("claim") else {
        panic!()
    };
    assert_eq!(p.leases, 0, "claimed, not leased");
    let leased = store.lease_payment(p.id, "a", NOW, NOW + 30_000).await.expect("lease").expect("leased");
    assert_eq!((leased.id, leased.leases), (p.id, 1), "the payment as leased, by its first holder");
    assert!(store.lease_payment(p.id, "b", NOW + 1_000, NOW + 31_000).await.expect("lease held").is_none());
    assert!(store.renew_payment_lease(p.id, "a", NOW + 30_000).await.expect("renewed by its holder"));
    assert!(!store.renew_payment_lease(p.id, "b", NOW + 30_000).await.expect("not by another"));
    store.unlease_payment(p.id, "b").await.expect("another's unlease");
    assert!(store.lease_payment(p.id, "b", NOW + 2_000, NOW + 31_000).await.expect("still a's").is_none());
    assert_eq!(store.stalled_payments(NOW + 1_000, 10).await.expect("stalled"), Vec::<i64>::new());
    assert_eq!(store.stalled_payments(NOW + 30_001, 10).await.expect("stalled"), vec![p.id]);
    let taken_over = store.lease_payment(p.id, "b", NOW + 30_001, NOW + 60_000).await.expect("lease expired");
    assert_eq!(taken_over.map(|payment| payment.leases), Some(2), "its second holder");
    assert!(!store.renew_payment_lease(p.id, "a", NOW + 90_000).await.expect("a lost it"));
    store.unlease_payment(p.id, "b").await.expect("unlease");
    assert!(
        store
            .lease_payment(p.id, "c", NOW + 30_002, NOW + 60_000)
            .await
            .expect("lease after unlease")
            .is_some()
    );
});

on_both_engines!(a_payment_claimed_with_a_lease_is_its_claimants, |store| async move {
    let claim = store.claim_payment(&payment("0x01"), Some(("a", NOW + 30_000)), NOW).await.expect("claim");
    let Claim::New(p) = claim else { panic!("new") };
    assert_eq!(p.leases, 1, "its claimant is its first holder");
    assert!(store.lease_payment(p.id, "b", NOW + 1_000, NOW + 31_000).await.expect("lease held").is_none());
    assert_eq!(store.stalled_payments(NOW + 1_000, 10).await.expect("stalled"), Vec::<i64>::new());
    assert!(store.renew_payment_lease(p.id, "a", NOW + 40_000).await.expect("renewed by its claimant"));
    let again = store.claim_payment(&payment("0x01"), Some(("c", NOW + 60_000)), NOW + 2_000).await;
    assert_eq!(again.expect("claim again"), Claim::Existing(p.clone()), "a retry leases nothing");
    assert!(store.lease_payment(p.id, "c", NOW + 39_999, NOW + 60_000).await.expect("still a's").is_none());
    let taken_over = store.lease_payment(p.id, "b", NOW + 40_001, NOW + 70_000).await.expect("lease expired");
    assert_eq!(taken_over.map(|payment| payment.leases), Some(2), "its second holder");
});

on_both_engines!(an_unanswered_ask_to_settle_is_kept_until_the_payment_fails, |store| async move {
    let claimed = store.claim_payment(&payment("0x01"), Some(("a", NOW + 30_000)), NOW).await;
    let Claim::New(p) = claimed.expect("claim") else { panic!() };
    assert_eq!(p.settle_asked_at, None);
    let ask = async |holder, now| store.note_settle_asked(p.leased_by(holder), now).await;
    assert!(overtaken(ask("b", NOW + 1).await, &p), "only its holder asks");
    ask("a", NOW + 1).await.expect("note");
    ask("a", NOW + 2).await.expect("note again");
    let read = async || store.payment(p.id).await.expect("read").expect("exists");
    assert_eq!(read().await.settle_asked_at, Some(NOW + 1), "the first unanswered ask");
    store.fail_payment(held(&p), "insufficient_funds", NOW + 3).await.expect("fail");
    assert_eq!(read().await.settle_asked_at, None, "a refusal answered it");
    assert!(overtaken(ask("a", NOW + 4).await, &p), "a failed payment is not asked");
    assert!(store.reopen_payment(p.id, NOW + 4).await.expect("reopen"));
    assert_eq!(read().await.settle_asked_at, None, "a retry is asked afresh");
});

on_both_engines!(only_an_unsettled_payment_can_fail, |store| async move {
    let p = claim_held(&store, &payment("0x01")).await;
    store.fail_payment(held(&p), "insufficient_funds", NOW).await.expect("fail");
    let failed = store.payment(p.id).await.expect("read").expect("exists");
    assert_eq!(failed.status, PaymentStatus::Failed);
    assert_eq!(failed.failure.as_deref(), Some("insufficient_funds"));
    assert!(store.reopen_payment(p.id, NOW).await.expect("reopen"));
    assert!(!store.reopen_payment(p.id, NOW).await.expect("reopen twice"), "only a failed payment reopens");
    assert!(
        overtaken(store.fail_payment(held(&p), "insufficient_funds", NOW).await, &p),
        "failing gave the lease back: a reopened payment is leased afresh"
    );

    store.lease_payment(p.id, HOLDER, NOW + 1, NOW + 30_000).await.expect("lease").expect("leased");
    store.mark_payment_settled(held(&p), "0xdeposit", "0xdeposit", NOW + 2).await.expect("settle");
    assert!(
        overtaken(store.fail_payment(held(&p), "unexpected_settle_error", NOW + 3).await, &p),
        "money is in escrow"
    );
    let settled = store.payment(p.id).await.expect("read").expect("exists");
    assert_eq!(settled.status, PaymentStatus::Settled);
    assert_eq!(settled.deposit_id.as_deref(), Some("0xdeposit"));
});

on_both_engines!(only_its_lease_holder_fails_or_settles_a_payment, |store| async move {
    let p = claim_held(&store, &payment("0x01")).await;
    let stranger = p.leased_by("b");
    assert!(overtaken(store.fail_payment(stranger, "insufficient_funds", NOW).await, &p), "not b's to fail");
    assert!(overtaken(store.mark_payment_settled(stranger, "0xd", "0xd", NOW).await, &p), "nor to settle");

    // Its holder's simulation was refused, and it stalled past its lease; its successor (the buyer had
    // topped up) settles. The stale holder must not tell the buyer "refused" meanwhile.
    store.lease_payment(p.id, "b", NOW + 30_001, NOW + 60_000).await.expect("lease").expect("taken over");
    assert!(overtaken(store.fail_payment(held(&p), "insufficient_funds", NOW + 30_002).await, &p));
    assert!(overtaken(store.mark_payment_settled(held(&p), "0xd", "0xd", NOW + 30_002).await, &p));
    assert_eq!(store.payment(p.id).await.expect("read").expect("exists").status, PaymentStatus::Verified);
    store.mark_payment_settled(stranger, "0xdeposit", "0xdeposit", NOW + 30_003).await.expect("settle");
    assert_eq!(store.payment(p.id).await.expect("read").expect("exists").status, PaymentStatus::Settled);

    // A lease run out but taken by no one still holds: its holder stalled, and no one acted instead.
    let r = claim_held(&store, &payment("0x03")).await;
    store.fail_payment(held(&r), "insufficient_funds", NOW + 40_000).await.expect("fail");

    // A lease given back holds no more: its holder asked the reconciler to take the payment up.
    let q = claim_held(&store, &payment("0x02")).await;
    store.unlease_payment(q.id, HOLDER).await.expect("unlease");
    let given_back = store.fail_payment(held(&q), "insufficient_funds", NOW).await;
    assert!(overtaken(given_back, &q));
});

on_both_engines!(only_an_unsettled_payment_is_marked_settled, |store| async move {
    let p = claim_held(&store, &payment("0x01")).await;
    // A holder whose payment was failed meanwhile is told so, and records no task beside a refusal.
    store.fail_payment(held(&p), "insufficient_funds", NOW).await.expect("fail");
    let marked = store.mark_payment_settled(held(&p), "0xdeposit", "0xdeposit", NOW + 1).await;
    assert!(overtaken(marked, &p), "a failed payment is not settled by a stale holder");
    assert_eq!(store.payment(p.id).await.expect("read").expect("exists").status, PaymentStatus::Failed);
    // A retry of its authorization reopens it, and its settlement (found on chain) settles it once.
    assert!(store.reopen_payment(p.id, NOW + 2).await.expect("reopen"));
    store.lease_payment(p.id, HOLDER, NOW + 2, NOW + 30_000).await.expect("lease").expect("leased");
    store.mark_payment_settled(held(&p), "0xdeposit", "0xdeposit", NOW + 3).await.expect("settle");
    let again = store.mark_payment_settled(held(&p), "0xdeposit", "0xdeposit", NOW + 4).await;
    assert!(overtaken(again, &p), "settled once");
});

on_both_engines!(recording_creates_the_task_once, |store| async move {
    let p = claim_held(&store, &payment("0x01")).await;
    assert_eq!(store.task("0xdeposit").await.expect("read"), None, "no task before the deposit is recorded");
    store.mark_payment_settled(held(&p), "0xdeposit", "0xdeposit", NOW).await.expect("settle");
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
                .sign_and_store("0xsigner", "settle", &[&i.to_string()], None, NOW, |nonce| {
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

    let refused = store
        .sign_and_store("0xsigner", "record", &["x"], None, NOW, |_| Err("cannot sign"))
        .await
        .expect("store");
    assert_eq!(refused, Err("cannot sign"));
    let next = store
        .sign_and_store("0xsigner", "record", &["x"], None, NOW, |nonce| {
            Ok::<_, ()>(SignedTx { tx_hash: "0xnext".into(), raw_tx: format!("0x{nonce}") })
        })
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(next.nonce, 25, "a failed signing does not use up its nonce");

    store.sync_nonce("0xsigner", 3).await.expect("sync lower");
    store.sync_nonce("0xsigner", 40).await.expect("sync higher");
    let after_sync = store
        .sign_and_store("0xsigner", "record", &["y"], None, NOW, |_| {
            Ok::<_, ()>(SignedTx { tx_hash: "0xafter".into(), raw_tx: "0x".into() })
        })
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(after_sync.nonce, 40, "syncing only ever raises the counter");

    store.mark_mined("0xsigner", after_sync.nonce, "0xafter", NOW).await.expect("mark");
    let for_y = store.txs_for("record", "y").await.expect("by subject");
    assert_eq!(for_y[0].status().expect("status"), agentripe_store::ChainTxStatus::Mined);
    let for_x = store.txs_for("record", "x").await.expect("by subject");
    assert_eq!(for_x.len(), 1);
    assert_eq!(for_x[0].tx_hash, "0xnext");
});

on_both_engines!(a_takeover_waits_for_a_settlement_being_signed_and_then_finds_it, |store| async move {
    use std::time::Duration;
    store.sync_nonce("0xsigner", 0).await.expect("sync");
    let p = claim_held(&store, &payment("0x01")).await;
    // The holder is signing (its lease checked, its database transaction open) when its lease runs out
    // and another instance tries to take the payment over. On PostgreSQL the lease's check holds the
    // payment's row (a plain read would not: this fails with one); on SQLite the write lock does.
    let (entered, signing) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = tokio::spawn({
        let (store, lease) = (store.clone(), held(&p));
        async move {
            let subject = lease.payment.to_string();
            store
                .sign_and_store("0xsigner", "settle", &[&subject], Some(lease), NOW, move |_| {
                    entered.send(()).expect("entered");
                    released.recv().expect("released");
                    Ok::<_, ()>(SignedTx { tx_hash: "0xa".into(), raw_tx: "0x01".into() })
                })
                .await
        }
    });
    tokio::task::spawn_blocking(move || signing.recv().expect("signing")).await.expect("join");
    let takeover = tokio::spawn({
        let (store, id) = (store.clone(), p.id);
        async move { store.lease_payment(id, "b", NOW + 30_001, NOW + 60_000).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!takeover.is_finished(), "the takeover waits for the payment's row");
    release.send(()).expect("release");
    let signed = holder.await.expect("join").expect("store").expect("sign");
    let taken = takeover.await.expect("join").expect("lease").expect("taken over once the signer is done");
    assert_eq!(taken.leases, 2);
    let found = store.txs_for("settle", &p.id.to_string()).await.expect("txs");
    assert_eq!(found, [signed], "its successor finds the settlement to wait for");
});

on_both_engines!(a_settlement_is_signed_only_under_its_payments_lease, |store| async move {
    store.sync_nonce("0xsigner", 0).await.expect("sync");
    let claimed = store.claim_payment(&payment("0x01"), Some(("a", NOW + 30_000)), NOW).await;
    let Claim::New(p) = claimed.expect("claim") else { panic!() };
    let subject = p.id.to_string();
    let sign = async |holder, hash: &str| {
        let lease = Some(p.leased_by(holder));
        let signed = SignedTx { tx_hash: hash.into(), raw_tx: "0x01".into() };
        store.sign_and_store("0xsigner", "settle", &[&subject], lease, NOW, |_| Ok::<_, ()>(signed)).await
    };
    assert!(overtaken(sign("b", "0xb").await, &p), "only its holder signs");
    assert_eq!(sign("a", "0xa").await.expect("store").expect("sign").nonce, 0, "no nonce used up before");

    // Its lease ran out and went to another: the stale holder signs nothing more, nor does anyone once
    // the payment failed.
    assert!(store.lease_payment(p.id, "b", NOW + 60_000, NOW + 90_000).await.expect("lease").is_some());
    assert!(overtaken(sign("a", "0xa2").await, &p), "a holder taken over does not sign");
    store.fail_payment(p.leased_by("b"), "insufficient_funds", NOW + 60_001).await.expect("fail");
    assert!(overtaken(sign("b", "0xb2").await, &p), "a failed payment is not settled");

    let stored = store.txs_for("settle", &subject).await.expect("txs");
    assert_eq!(stored.iter().map(|tx| tx.tx_hash.as_str()).collect::<Vec<_>>(), ["0xa"]);
    let next = store
        .sign_and_store("0xsigner", "record", &["x"], None, NOW, |_| {
            Ok::<_, ()>(SignedTx { tx_hash: "0xnext".into(), raw_tx: "0x02".into() })
        })
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(next.nonce, 1, "a write refused for its lease uses up no nonce");
});

on_both_engines!(a_batch_transaction_is_found_by_each_of_its_members, |store| async move {
    store.sync_nonce("0xsigner", 0).await.expect("sync");
    let signed = |hash: &str| SignedTx { tx_hash: hash.into(), raw_tx: "0x01".into() };
    let batch = store
        .sign_and_store("0xsigner", "record", &["1", "2", "3"], None, NOW, |_| Ok::<_, ()>(signed("0xbatch")))
        .await
        .expect("store")
        .expect("sign");
    assert_eq!(batch.subject, "batch of 3: 1 .. 3");
    let alone = store
        .sign_and_store("0xsigner", "record", &["4"], None, NOW, |_| Ok::<_, ()>(signed("0xalone")))
        .await
        .expect("store")
        .expect("sign");
    assert_eq!((alone.subject.as_str(), alone.nonce), ("4", batch.nonce + 1));
    // A fee-bumped replacement shares the batch's nonce, so it serves the same members.
    let bumped = store.store_replacement(&batch, &signed("0xbumped"), NOW).await.expect("replace");
    // Two members resuming the batch at once may bump it with the same fees, signing the same bytes.
    let bumped_again = store.store_replacement(&batch, &signed("0xbumped"), NOW).await.expect("again");
    assert_eq!(bumped_again.id, bumped.id, "one row for one transaction");
    for member in ["1", "2", "3"] {
        let txs = store.txs_for("record", member).await.expect("by member");
        let hashes: Vec<&str> = txs.iter().map(|tx| tx.tx_hash.as_str()).collect();
        assert_eq!(hashes, ["0xbatch", "0xbumped"], "member {member}");
    }
    assert_eq!(store.txs_for("record", "4").await.expect("alone").len(), 1);
    assert!(store.txs_for("record", "5").await.expect("not a member").is_empty());
    assert!(store.txs_for("release", "1").await.expect("another purpose").is_empty());
});

on_both_engines!(a_vanished_transaction_is_taken_up_once, |store| async move {
    use agentripe_store::ChainTxStatus;
    store.sync_nonce("0xsigner", 0).await.expect("sync");
    let sign = async |purpose, hash: &str| {
        let signed = SignedTx { tx_hash: hash.into(), raw_tx: "0x01".into() };
        let stored =
            store.sign_and_store("0xsigner", purpose, &["1"], None, NOW, |_| Ok::<_, ()>(signed)).await;
        let stored = stored.expect("store").expect("sign");
        store.mark_mined("0xsigner", stored.nonce, hash, NOW).await.expect("mined");
        store.txs_for(purpose, "1").await.expect("txs").remove(0)
    };
    let status = async |purpose, subject| {
        let txs = store.txs_for(purpose, subject).await.expect("txs");
        txs.iter().map(|tx| tx.status().expect("status")).collect::<Vec<_>>()
    };
    let void = SignedTx { tx_hash: "0xvoid".into(), raw_tx: "0x02".into() };

    // Sent again: by one caller only, and then no longer to be voided.
    let record = sign("record", "0xrecord").await;
    assert!(store.mark_vanished(&record, NOW).await.expect("mark"));
    assert!(!store.mark_vanished(&record, NOW).await.expect("mark again"), "taken up already");
    assert_eq!(store.void_vanished(&record, &void, NOW).await.expect("void"), None);
    assert_eq!(status("record", "1").await, [ChainTxStatus::Pending]);

    // Voided: its nonce goes to a transaction of nothing.
    let settlement = sign("settle", "0xsettle").await;
    let stored = store.void_vanished(&settlement, &void, NOW).await.expect("void").expect("voided");
    assert_eq!(
        (stored.nonce, stored.purpose.as_str(), stored.subject.as_str()),
        (settlement.nonce, "void", "0xsettle")
    );
    assert_eq!(status("settle", "1").await, [ChainTxStatus::Dropped], "never broadcast again");
    assert_eq!(status("void", "0xsettle").await, [ChainTxStatus::Pending]);
    let other_void = SignedTx { tx_hash: "0xvoid2".into(), raw_tx: "0x03".into() };
    assert_eq!(store.void_vanished(&settlement, &other_void, NOW).await.expect("void again"), None);
    assert!(!store.mark_vanished(&settlement, NOW).await.expect("mark"), "never sent again once voided");
});

on_both_engines!(a_mined_transaction_drops_every_other_of_its_nonce, |store| async move {
    use agentripe_store::ChainTxStatus::{Dropped, Mined, Pending};

    store.sync_nonce("0xsigner", 0).await.expect("sync");
    let signed = |hash: &str| SignedTx { tx_hash: hash.into(), raw_tx: "0x01".into() };
    let original = store
        .sign_and_store("0xsigner", "record", &["x"], None, NOW, |_| Ok::<_, ()>(signed("0xoriginal")))
        .await
        .expect("store")
        .expect("sign");
    let next = store
        .sign_and_store("0xsigner", "record", &["y"], None, NOW, |_| Ok::<_, ()>(signed("0xnext")))
        .await
        .expect("store")
        .expect("sign");
    // Bumped by a waiter that then gave up; the original is mined after all.
    store.store_replacement(&original, &signed("0xbumped"), NOW).await.expect("replace");
    store.mark_mined("0xsigner", original.nonce, "0xoriginal", NOW).await.expect("mark");

    let statuses = |txs: Vec<agentripe_store::ChainTx>| -> Vec<(String, agentripe_store::ChainTxStatus)> {
        txs.into_iter().map(|tx| (tx.tx_hash.clone(), tx.status().expect("status"))).collect()
    };
    let of_x = statuses(store.txs_for("record", "x").await.expect("txs"));
    assert_eq!(of_x, [("0xoriginal".into(), Mined), ("0xbumped".into(), Dropped)]);
    let of_y = statuses(store.txs_for("record", "y").await.expect("txs"));
    assert_eq!(of_y, [(next.tx_hash, Pending)], "another nonce is left alone");
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

/// Applies `verdict` to `result` of `task_id` under the review claim taken at `claimed_at_ms`, with no
/// review on record and the fifth rejection refunding.
async fn apply(
    store: &Store,
    task_id: &str,
    claimed_at_ms: i64,
    result: &str,
    verdict: &Verdict,
    now_ms: i64,
) -> Option<i32> {
    let submission = Submission { task_id, claimed_at_ms, result };
    store.apply_verdict(submission, verdict, None, 5, now_ms).await.expect("apply a verdict")
}

async fn recorded_task(store: &Store, id: &str, nonce: &str) {
    let p = claim_held(store, &payment(nonce)).await;
    store.mark_payment_settled(held(&p), id, id, NOW).await.expect("settle");
    store.record_payment(p.id, &task(id), NOW).await.expect("record");
}

fn status(task: &agentripe_store::Task) -> (TaskStatus, EscrowStatus, i32) {
    (task.status, task.escrow_status, task.review_reject_count)
}

on_both_engines!(the_task_state_machine_moves_one_way_at_a_time, |store| async move {
    recorded_task(&store, "0xt1", "0x01").await;
    let read = |id: &'static str| {
        let store = store.clone();
        async move { store.task(id).await.expect("read").expect("exists") }
    };
    let reject = Verdict { approved: false, reason: "wrong language".into() };
    let approve = Verdict { approved: true, reason: "accurate".into() };

    assert!(!store.begin_review("0xt1", NOW, NOW).await.expect("review"), "pending work cannot be reviewed");
    assert!(store.start_task("0xt1", NOW + 1).await.expect("start"));
    assert!(!store.start_task("0xt1", NOW + 2).await.expect("start twice"), "already processing");

    // One review at a time; a claim renewed holds, and a crashed review's can be taken over once stale.
    assert!(store.begin_review("0xt1", NOW + 10, NOW).await.expect("review"));
    assert!(!store.begin_review("0xt1", NOW + 11, NOW).await.expect("second review"));
    assert!(!store.fail_task("0xt1", "gave up", NOW + 12).await.expect("fail"), "not while under review");
    assert!(store.renew_review("0xt1", NOW + 10, NOW + 13).await.expect("renew"));
    assert!(!store.begin_review("0xt1", NOW + 14, NOW + 12).await.expect("review"), "renewed, not stale");
    assert!(store.begin_review("0xt1", NOW + 20, NOW + 15).await.expect("stale review taken over"));
    assert!(!store.renew_review("0xt1", NOW + 13, NOW + 21).await.expect("renew"), "taken over");
    let stale = Verdict { approved: true, reason: "from the review taken over".into() };
    let stale_review = agentripe_store::ReviewRecord::new(
        "0xt1",
        1,
        "model",
        "v1",
        "0xhash",
        true,
        &stale.reason,
        5,
        None,
        NOW + 21,
    );
    let taken_over = Submission { task_id: "0xt1", claimed_at_ms: NOW + 13, result: "v0" };
    assert_eq!(
        store.apply_verdict(taken_over, &stale, Some(&stale_review), 5, NOW + 21).await.expect("verdict"),
        None,
        "a claim taken over applies nothing"
    );
    assert_eq!(store.reviews("0xt1").await.expect("reviews"), vec![], "and stores no review either");
    store.abandon_review("0xt1", NOW + 13).await.expect("abandon");
    assert!(!store.begin_review("0xt1", NOW + 22, NOW).await.expect("review"), "its taker's claim stands");
    store.abandon_review("0xt1", NOW + 20).await.expect("abandon");
    assert_eq!(
        status(&read("0xt1").await),
        (TaskStatus::Processing, EscrowStatus::Deposited, 0),
        "an outage counts for nothing"
    );

    // Four rejections leave the money locked; the fifth decides the refund.
    for round in 1..=4 {
        assert!(store.begin_review("0xt1", NOW + 30, NOW).await.expect("review"));
        assert_eq!(apply(&store, "0xt1", NOW + 30, "v1", &reject, NOW + 31).await, Some(round));
        assert_eq!(status(&read("0xt1").await), (TaskStatus::Rejected, EscrowStatus::Deposited, round));
    }
    assert!(store.begin_review("0xt1", NOW + 40, NOW).await.expect("review"));
    assert_eq!(apply(&store, "0xt1", NOW + 40, "v5", &reject, NOW + 41).await, Some(5));
    let refunding = read("0xt1").await;
    assert_eq!(status(&refunding), (TaskStatus::Rejected, EscrowStatus::Refunding, 5));
    assert_eq!(refunding.review_reason.as_deref(), Some("wrong language"));
    assert!(!store.begin_review("0xt1", NOW + 50, NOW).await.expect("review"), "decided: no more reviews");
    assert!(!store.start_task("0xt1", NOW + 50).await.expect("start"), "decided: no more work");
    assert!(
        store
            .confirm_escrow("0xt1", EscrowStatus::Refunded, Some("0xrefund"), NOW + 60)
            .await
            .expect("confirm")
    );
    assert!(
        !store
            .confirm_escrow("0xt1", EscrowStatus::Released, Some("0xother"), NOW + 61)
            .await
            .expect("again"),
        "final"
    );
    let refunded = read("0xt1").await;
    assert_eq!(status(&refunded), (TaskStatus::Rejected, EscrowStatus::Refunded, 5));
    assert_eq!(refunded.escrow_tx.as_deref(), Some("0xrefund"));

    // Approval after rejections.
    recorded_task(&store, "0xt2", "0x02").await;
    assert!(store.start_task("0xt2", NOW).await.expect("start"));
    assert!(store.begin_review("0xt2", NOW, NOW).await.expect("review"));
    apply(&store, "0xt2", NOW, "v1", &reject, NOW).await;
    assert!(store.begin_review("0xt2", NOW + 1, NOW).await.expect("review"));
    assert_eq!(apply(&store, "0xt2", NOW + 1, "v2", &approve, NOW + 2).await, Some(1));
    let releasing = read("0xt2").await;
    assert_eq!(
        status(&releasing),
        (TaskStatus::Processing, EscrowStatus::Releasing, 1),
        "completed only once the chain confirms"
    );
    assert_eq!(releasing.result.as_deref(), Some("v2"));
    assert_eq!(
        store.tasks_to_reconcile(NOW, 10).await.expect("reconcile").len(),
        1,
        "the release is in flight"
    );
    assert!(
        store
            .confirm_escrow("0xt2", EscrowStatus::Released, Some("0xrelease"), NOW + 3)
            .await
            .expect("confirm")
    );
    assert_eq!(status(&read("0xt2").await), (TaskStatus::Completed, EscrowStatus::Released, 1));
    let feedback: BTreeSet<String> =
        store.tasks_awaiting_feedback(10).await.expect("feedback").into_iter().map(|t| t.new.id).collect();
    assert_eq!(feedback, BTreeSet::from(["0xt1".to_string(), "0xt2".to_string()]));
    store.finish_feedback("0xt1", true).await.expect("sent");
    assert_eq!(store.tasks_awaiting_feedback(10).await.expect("feedback").len(), 1);

    // The vendor gives up; an untouched deposit expires.
    recorded_task(&store, "0xt3", "0x03").await;
    assert!(store.fail_task("0xt3", "unsupported language pair", NOW).await.expect("fail"));
    let failed = read("0xt3").await;
    assert_eq!(status(&failed), (TaskStatus::Failed, EscrowStatus::Refunding, 0));
    assert_eq!(failed.error_message.as_deref(), Some("unsupported language pair"));
    recorded_task(&store, "0xt4", "0x04").await;
    let expiry = task("0xt4").expires_at;
    assert!(!store.expire_task("0xt4", expiry - 1).await.expect("early"));
    assert!(store.expire_task("0xt4", expiry).await.expect("expired"));
    assert_eq!(status(&read("0xt4").await).1, EscrowStatus::Refunding);

    let pending: Vec<String> = store
        .agent_tasks("1", &[TaskStatus::Failed, TaskStatus::Pending], 10)
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.new.id)
        .collect();
    assert_eq!(pending, vec!["0xt3".to_string(), "0xt4".to_string()]);
    assert!(
        store.agent_tasks("2", &[TaskStatus::Pending], 10).await.expect("list").is_empty(),
        "another agent's"
    );
});

on_both_engines!(refused_payments_are_forgotten_once_expired_and_nothing_else_is, |store| async move {
    let claimed = |nonce: &'static str, valid_before: i64| {
        let store = store.clone();
        async move {
            let new = NewPayment { valid_before, ..payment(nonce) };
            claim_held(&store, &new).await
        }
    };
    let (expired_refusal, recent_refusal) = (claimed("0x01", 1_000).await, claimed("0x02", 5_000).await);
    let expired_in_flight = claimed("0x03", 1_000).await.id;
    for refused in [&expired_refusal, &recent_refusal] {
        store.fail_payment(held(refused), "insufficient_funds", NOW).await.expect("fail");
    }
    let (expired_refusal, recent_refusal) = (expired_refusal.id, recent_refusal.id);
    assert_eq!(store.prune_failed_payments(2_000).await.expect("prune"), 1);
    assert_eq!(store.payment(expired_refusal).await.expect("read"), None);
    assert!(
        store.payment(recent_refusal).await.expect("read").is_some(),
        "its authorization may still be retried"
    );
    assert!(
        store.payment(expired_in_flight).await.expect("read").is_some(),
        "a payment in flight is never pruned"
    );

    // What a payer has authorized and not yet settled: the payment in flight, not the refusals; and
    // whether the authorization at hand is a payment already, refused or not.
    let outlook = |chain_id: i64, asset: &'static str, nonce: &'static str| {
        let store = store.clone();
        async move { store.payer_outlook(chain_id, asset, "0xbbbb", nonce).await.expect("outlook") }
    };
    let in_flight = vec!["100000".to_owned()];
    let new = outlook(31337, "0xaaaa", "0x09").await;
    assert_eq!((new.known, &new.not_yet_settled), (false, &in_flight));
    let refused = outlook(31337, "0xaaaa", "0x02").await;
    assert_eq!((refused.known, &refused.not_yet_settled), (true, &in_flight));
    let itself = outlook(31337, "0xaaaa", "0x03").await;
    assert_eq!((itself.known, &itself.not_yet_settled), (true, &in_flight));
    let other_chain = outlook(1, "0xaaaa", "0x03").await;
    assert!(!other_chain.known, "the same nonce on another chain is another authorization");
    assert!(
        other_chain.not_yet_settled.is_empty(),
        "another chain's balance covers another chain's payments"
    );
    let other_token = outlook(31337, "0xcccc", "0x03").await;
    assert_eq!((other_token.known, other_token.not_yet_settled.len()), (false, 0));
});

on_both_engines!(agents_are_found_by_the_start_of_any_of_their_words, |store| async move {
    use agentripe_store::IndexedAgent;
    let agent = |id: &str| IndexedAgent {
        agent_id: id.into(),
        owner: "0xowner".into(),
        uri: "data:".into(),
        data: Some("{}".into()),
        problem: None,
        updated_at: NOW,
    };
    let words = |list: &[&str]| list.iter().map(|word| (*word).to_owned()).collect::<Vec<_>>();
    store.index_agent(&agent("1"), &words(&["summarizer", "text", "日本語"]), &[]).await.expect("index");
    store.index_agent(&agent("2"), &words(&["translator", "text", "émigré"]), &[]).await.expect("index");
    let found = async |query: &[&str]| {
        let (agents, total) = store.search_agents(&words(query), 10, 0).await.expect("search");
        (agents.into_iter().map(|agent| agent.agent_id).collect::<Vec<_>>(), total)
    };
    assert_eq!(found(&["summ"]).await, (vec!["1".to_owned()], 1));
    assert_eq!(found(&["text"]).await, (vec!["1".to_owned(), "2".to_owned()], 2));
    assert_eq!(found(&["日本"]).await, (vec!["1".to_owned()], 1));
    assert_eq!(found(&["émi", "tr"]).await, (vec!["2".to_owned()], 1));
    assert_eq!(found(&["mari"]).await, (vec![], 0), "by the start of a word only");
    assert_eq!(found(&[]).await.1, 2, "no words: every listed agent");
    let (past_the_end, total) = store.search_agents(&[], 10, 5).await.expect("search");
    assert_eq!((past_the_end.len(), total), (0, 2), "a page past the end still counts");
});

on_both_engines!(the_audits_lookup_finds_our_settlements_among_many, |store| async move {
    // One payment settled by 0xsettled, one still settling.
    let settled = claim_held(&store, &payment("0x01")).await;
    store.mark_payment_settled(held(&settled), "0xsettled", "0xsettled", NOW).await.expect("settle");
    store.claim_payment(&payment("0x02"), None, NOW).await.expect("claim");

    // More values than one statement takes at a time (500), with the known ones past the first chunk.
    let mut hashes: Vec<String> = (0..1_200).map(|n| format!("0x{n:064x}")).collect();
    hashes.insert(700, "0xsettled".into());
    let found = store.settlements_among(&hashes).await.expect("settlements");
    assert_eq!(found, ["0xsettled".to_owned()].into(), "only the settlement of ours");
    assert!(store.settlements_among(&[]).await.expect("none").is_empty());
});

on_both_engines!(a_transfer_is_held_by_whoever_claims_it_first, |store| async move {
    use agentripe_store::TransferHolder::{GiveBack, Payment};

    // A give-back and a purchase race for each of twenty transfers: exactly one of them holds each, and
    // every later claim, by either, is told who.
    futures_join_all((0..20).map(|round| {
        let store = store.clone();
        async move {
            let transfer = format!("0x{round:064x}");
            let (give_back, purchase) = tokio::join!(
                store.claim_transfer(&transfer, GiveBack, NOW),
                store.claim_transfer(&transfer, Payment(round), NOW)
            );
            let (give_back, purchase) = (give_back.expect("claim"), purchase.expect("claim"));
            assert_eq!(give_back, purchase, "both see the same holder of {transfer}");
            assert!([GiveBack, Payment(round)].contains(&give_back));
            let later = store.claim_transfer(&transfer, Payment(round + 100), NOW).await.expect("claim");
            assert_eq!(later, give_back, "the first claim stands");
        }
    }))
    .await;
    // Holders are told apart: a payment's id round-trips.
    assert_eq!(
        store.claim_transfer("0xother", Payment(i64::MAX), NOW).await.expect("claim"),
        Payment(i64::MAX)
    );
});

/// Give-backs stored before migration 0021 made transfers claimable: one fee-bumped (two records of one
/// transfer), and a purchase's settlement, which is not a give-back.
const GIVE_BACKS_BEFORE_CLAIMS: &str = "
INSERT INTO chain_txs (signer, nonce, purpose, subject, tx_hash, raw_tx, status, created_at, updated_at) VALUES
 ('0xop', 1, 'record_unrecorded', '0xgiven', '0xr1', '0x', 'dropped', 1, 1),
 ('0xop', 1, 'record_unrecorded', '0xgiven', '0xr2', '0x', 'mined', 1, 1),
 ('0xop', 2, 'refund', '0xgiven', '0xr3', '0x', 'mined', 1, 1),
 ('0xop', 3, 'settle', '0xbought', '0xr4', '0x', 'mined', 1, 1);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_give_back_stored_before_claims_holds_its_transfer_after_the_upgrade() {
    use agentripe_store::TransferHolder::{GiveBack, Payment};

    for engine in [Engine::Sqlite, Engine::Postgres] {
        let label = "give_back_before_claims";
        let Some(store) = store_upgraded_from(engine, label, 20, GIVE_BACKS_BEFORE_CLAIMS).await else {
            continue;
        };
        // A purchase presenting the given-back transfer's authorization after the upgrade is refused.
        let holder = store.claim_transfer("0xgiven", Payment(1), NOW).await.expect("claim");
        assert_eq!(holder, GiveBack, "{engine:?}: the give-back holds its transfer");
        let holder = store.claim_transfer("0xbought", Payment(2), NOW).await.expect("claim");
        assert_eq!(holder, Payment(2), "{engine:?}: a settlement of ours was no give-back");
    }
}

/// Payments stored before migration 0025 stored asks of a remote facilitator: one in flight, one
/// refused, one recorded.
const PAYMENTS_BEFORE_ASKS: &str = "
INSERT INTO payments (chain_id, asset, payer, nonce, amount, agent_id, service_path, x402_version, payment,
    valid_before, request, search_from_block, status, deposit_id, failure, created_at, updated_at) VALUES
 (31337, '0xaaaa', '0xbbbb', '0x01', '1', '1', 'translate', 2, '{}', 9, '{}', 7, 'verified', NULL, NULL, 1, 11),
 (31337, '0xaaaa', '0xbbbb', '0x02', '1', '1', 'translate', 2, '{}', 9, '{}', 7, 'failed', NULL,
    'insufficient_funds', 1, 12),
 (31337, '0xaaaa', '0xbbbb', '0x03', '1', '1', 'translate', 2, '{}', 9, '{}', 7, 'recorded', '0xd', NULL, 1, 13);";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_flight_at_the_upgrade_counts_as_asked() {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let label = "payments_before_asks";
        let Some(store) = store_upgraded_from(engine, label, 24, PAYMENTS_BEFORE_ASKS).await else {
            continue;
        };
        // The server before the upgrade may have asked a remote facilitator without storing it: a refusal
        // of the next ask must not be final while what it submitted may still land.
        let asked = |id| {
            let store = store.clone();
            async move { store.payment(id).await.expect("read").expect("payment").settle_asked_at }
        };
        assert_eq!(asked(1).await, Some(11), "{engine:?}: the payment in flight");
        assert_eq!(asked(2).await, None, "{engine:?}: a refused payment's retry is asked afresh");
        assert_eq!(asked(3).await, None, "{engine:?}: a recorded payment is asked nothing more");
    }
}

on_both_engines!(a_lease_after_a_holder_that_did_not_count_is_not_the_first, |store| async move {
    // An instance from before leases were counted leases a payment and dies: the next holder must look
    // for what it may have sent, so it is not the first.
    let Claim::New(p) = store.claim_payment(&payment("0x01"), None, NOW).await.expect("claim") else {
        panic!()
    };
    agentripe_store::testing::execute(&store, "UPDATE payments SET lease_holder = 'old', lease_until = 1")
        .await;
    let leased = store.lease_payment(p.id, "new", NOW, NOW + 30_000).await.expect("lease").expect("leased");
    assert_eq!(leased.leases, 2);
});
