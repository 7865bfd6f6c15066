//! Settlement through a remote x402 facilitator: a real HTTP server on loopback with scripted
//! behaviour, which really submits the payment on anvil with its own key.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use agentripe_chain::bindings::IERC3009;
use agentripe_server::{
    FacilitatorConfig, StartError,
    money_in::facilitator::settlement_call,
    on_both_engines,
    testing::{Market, PRICE, key},
};
use agentripe_x402::{ErrorReason, SettleResponse, v2};
use alloy::{
    primitives::{Address, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
};
use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde_json::Value;

#[derive(Clone, Copy, PartialEq)]
enum Script {
    /// Settles and says so.
    Honest,
    /// Settles, then answers 500 as if it crashed or timed out.
    SettlesThenFails,
    /// Refuses without touching the chain.
    Refuses,
    /// Settles, but answers with the hash of another transaction (`decoy`).
    AnswersAnotherHash,
    /// Never answers a settlement: the payment stays in flight.
    Hangs,
    /// Answers once its transaction is in the node's pool, not mined; one it cannot submit (the node
    /// refuses a nonce its pool has spent) it refuses as spent.
    AnswersBeforeMined,
    /// Puts its transaction in the node's pool, then answers 500 without naming it (it crashed or timed
    /// out); one it cannot submit it refuses as spent.
    SubmitsThenFails,
    /// Puts its transaction in the node's pool, then answers a refusal that names it (as one whose wait
    /// for the receipt timed out).
    RefusesNamingItsTransaction,
    /// Answers its first `/verify` 503 (unreadable: the server cannot tell what it checked), then
    /// refuses every payment.
    VerifyFailsThenRefuses,
    /// While it verifies payment 1, a rival holder takes the payment's lease over and fails it (as a
    /// successor whose own ask was refused would); then it answers valid, and settles honestly.
    FailedByARivalDuringVerify,
}

struct Facilitator {
    script: Script,
    provider: DynProvider,
    usdc: Address,
    /// The chain it says it settles on.
    chain_id: u64,
    /// What a lying facilitator answers.
    decoy: Option<alloy::primitives::B256>,
    verifications: AtomicUsize,
    /// The server's database, for a script that plays a rival holder.
    database_url: String,
}

async fn supported(State(facilitator): State<Arc<Facilitator>>) -> Json<Value> {
    let network = format!("eip155:{}", facilitator.chain_id);
    Json(serde_json::json!({
        "kinds": [
            { "x402Version": 1, "scheme": "exact", "network": network },
            { "x402Version": 2, "scheme": "exact", "network": network },
        ],
        "extensions": [],
        "signers": {},
    }))
}

/// A facilitator checks what it will settle; this one checks the payer's balance, as real ones do.
async fn verify(
    State(facilitator): State<Arc<Facilitator>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    let first = facilitator.verifications.fetch_add(1, Ordering::SeqCst) == 0;
    if facilitator.script == Script::VerifyFailsThenRefuses && first {
        return (StatusCode::SERVICE_UNAVAILABLE, "upstream timeout").into_response();
    }
    if facilitator.script == Script::FailedByARivalDuringVerify {
        let store = agentripe_store::Store::connect(&facilitator.database_url).await.expect("store");
        agentripe_store::testing::execute(
            &store,
            "UPDATE payments SET status = 'failed', failure = 'insufficient_funds', lease_holder = 'rival', \
             lease_until = NULL WHERE id = 1",
        )
        .await;
    }
    let payment: v2::PaymentPayload =
        serde_json::from_value(body["paymentPayload"].clone()).expect("a v2 payload");
    let authorization = &payment.payload.authorization;
    let balance = IERC3009::new(facilitator.usdc, &facilitator.provider)
        .balanceOf(authorization.from)
        .call()
        .await
        .expect("balance");
    let refuses = matches!(facilitator.script, Script::Refuses | Script::VerifyFailsThenRefuses);
    Json(if balance >= authorization.value && !refuses {
        serde_json::json!({ "isValid": true, "payer": authorization.from })
    } else {
        serde_json::json!({ "isValid": false, "invalidReason": "insufficient_funds", "payer": authorization.from })
    })
    .into_response()
}

async fn settle(
    State(facilitator): State<Arc<Facilitator>>,
    Json(body): Json<Value>,
) -> axum::response::Response {
    assert_eq!(body["x402Version"], 2);
    let payment: v2::PaymentPayload =
        serde_json::from_value(body["paymentPayload"].clone()).expect("a v2 payload");
    let requirements: v2::PaymentRequirements =
        serde_json::from_value(body["paymentRequirements"].clone()).expect("v2 requirements");
    assert_eq!(payment.accepted, requirements, "the server sends the requirements the payment accepted");
    if facilitator.script == Script::Hangs {
        std::future::pending::<()>().await;
    }
    let authorization = &payment.payload.authorization;
    let refusal = |reason| {
        let (payer, network) = (Some(authorization.from), requirements.network.clone());
        let refused = SettleResponse {
            success: false,
            error_reason: Some(reason),
            payer,
            transaction: String::new(),
            network,
        };
        Json(refused).into_response()
    };
    if facilitator.script == Script::Refuses {
        return refusal(ErrorReason::InsufficientFunds);
    }
    let token = IERC3009::new(facilitator.usdc, &facilitator.provider);
    let call = token.call_builder(&settlement_call(&payment.payload));
    if facilitator.script == Script::RefusesNamingItsTransaction {
        let pending = call.send().await.expect("submit");
        let (payer, network) = (Some(authorization.from), requirements.network);
        let transaction = format!("{:#x}", pending.tx_hash());
        let error_reason = Some(ErrorReason::UnexpectedSettleError);
        return Json(SettleResponse { success: false, error_reason, payer, transaction, network })
            .into_response();
    }
    if matches!(facilitator.script, Script::AnswersBeforeMined | Script::SubmitsThenFails) {
        let Ok(pending) = call.send().await else {
            return refusal(ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed);
        };
        if facilitator.script == Script::SubmitsThenFails {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream timeout").into_response();
        }
        let (payer, network) = (Some(authorization.from), requirements.network);
        let transaction = format!("{:#x}", pending.tx_hash());
        return Json(SettleResponse { success: true, error_reason: None, payer, transaction, network })
            .into_response();
    }
    let receipt = call.send().await.expect("submit").get_receipt().await.expect("mined");
    if facilitator.script == Script::SettlesThenFails {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream timeout").into_response();
    }
    let transaction = facilitator.decoy.unwrap_or(receipt.transaction_hash);
    Json(SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(authorization.from),
        transaction: format!("{transaction:#x}"),
        network: requirements.network,
    })
    .into_response()
}

async fn start_facilitator(market: &Market, script: Script) -> String {
    start_facilitator_on(market, script, market.deployment.chain_id, None).await
}

async fn start_facilitator_on(
    market: &Market,
    script: Script,
    chain_id: u64,
    decoy: Option<alloy::primitives::B256>,
) -> String {
    let provider = ProviderBuilder::new()
        .wallet(key(&market.anvil, 4))
        .connect_http(market.anvil.endpoint_url())
        .erased();
    let usdc = market.deployment.usdc;
    let state = Arc::new(Facilitator {
        script,
        provider,
        usdc,
        chain_id,
        decoy,
        verifications: AtomicUsize::new(0),
        database_url: market.database_url.clone(),
    });
    let app = Router::new()
        .route("/supported", get(supported))
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn server_with(market: &Market, script: Script) -> agentripe_server::testing::Server {
    server_tuned(market, script, |_| {}).await
}

/// [`server_with`], its configuration tuned first (shorter timeouts or leases).
async fn server_tuned(
    market: &Market,
    script: Script,
    tune: impl FnOnce(&mut agentripe_server::Config),
) -> agentripe_server::testing::Server {
    let mut config = market.config();
    config.facilitator = FacilitatorConfig::Remote(start_facilitator(market, script).await);
    tune(&mut config);
    market.start_with(config).await
}

on_both_engines!(a_remote_facilitator_settles_into_the_escrow, |market| async move {
    let server = server_with(&market, Script::Honest).await;
    let buyer = market.buyer(PRICE).await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
    assert_eq!(response.status(), 200);
    let task_id = response.json::<Value>().await.expect("json")["taskId"]
        .as_str()
        .expect("taskId")
        .parse()
        .expect("hash");
    let receipt =
        market.provider.get_transaction_receipt(task_id).await.expect("rpc").expect("a transaction");
    assert_eq!(
        receipt.from,
        key(&market.anvil, 4).address(),
        "the facilitator's transaction is the deposit id"
    );
    assert_eq!(market.deposit(task_id).await.status, 1);
});

on_both_engines!(a_facilitator_that_fails_after_settling_loses_nothing, |market| async move {
    let server = server_with(&market, Script::SettlesThenFails).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(first.status(), 503, "the outcome is unknown to the server at first");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "but the money moved");

    // The chain tells the reconciler what the facilitator did not; the retry gets the task.
    let mut answer = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let retry = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
        if retry.status() == 200 {
            answer = Some(retry.json::<Value>().await.expect("json"));
            break;
        }
    }
    let answer = answer.expect("the payment is recorded after the facilitator's failure");
    let task_id = answer["taskId"].as_str().expect("taskId").parse().expect("hash");
    assert_eq!(market.deposit(task_id).await.status, 1);
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE), "charged once");
});

#[tokio::test]
async fn a_facilitator_is_checked_for_our_network_at_start() {
    let Some(market) = Market::new(agentripe_store::testing::Engine::Sqlite, "facilitator_network").await
    else {
        return;
    };
    let start_with = async |url: String| {
        let mut config = market.config();
        config.facilitator = FacilitatorConfig::Remote(url);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        agentripe_server::start(config, listener).await
    };
    let elsewhere = start_facilitator_on(&market, Script::Honest, 84532, None).await;
    let refused = start_with(elsewhere).await.expect_err("it does not settle on our chain");
    assert!(matches!(refused, StartError::Facilitator(_)), "{refused}");
    let local = format!("eip155:{}", market.deployment.chain_id);
    assert!(refused.to_string().contains(&local), "names the network: {refused}");

    let unreachable = start_with("http://127.0.0.1:9".into()).await.expect_err("nobody answers");
    assert!(matches!(unreachable, StartError::Facilitator(_)), "{unreachable}");

    let ours = start_facilitator(&market, Script::Honest).await;
    start_with(ours).await.expect("a facilitator of our network is accepted").abort();
}

on_both_engines!(a_facilitators_refusal_is_passed_on, |market| async move {
    let server = server_with(&market, Script::Refuses).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 402);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "insufficient_funds");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));
    let (status, payment) = follow(&server, &header).await;
    assert_eq!(status, 200);
    assert_eq!(
        (payment["status"].as_str(), payment["reason"].as_str()),
        (Some("refused"), Some("insufficient_funds"))
    );
    // A retry is asked afresh and refused as clearly: the refusal answered the first ask, so nothing of
    // it can be waiting in a pool.
    let retry = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(retry.status(), 402);
    assert_eq!(retry.json::<Value>().await.expect("json")["error"], "insufficient_funds");
});

/// `GET /payments/{payer}/{nonce}` of the payment in a v2 header.
async fn follow(server: &agentripe_server::testing::Server, header: &str) -> (u16, Value) {
    let response =
        server.http.get(format!("{}{}", server.base, follow_path(header))).send().await.expect("get");
    (response.status().as_u16(), response.json().await.expect("json"))
}

/// `/payments/{payer}/{nonce}` of the payment in a v2 header.
fn follow_path(header: &str) -> String {
    let payment: v2::PaymentPayload = agentripe_x402::decode_header(header).expect("a v2 payment");
    let authorization = &payment.payload.authorization;
    format!("/payments/{:#x}/{:#x}", authorization.from, authorization.nonce)
}

/// Waits until the payment in `header` is in flight: claimed, its settlement not yet known.
async fn until_settling(server: &agentripe_server::testing::Server, header: &str) {
    for _ in 0..100 {
        let (status, payment) = follow(server, header).await;
        if status == 200 && payment["status"] == "settling" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the payment never was in flight");
}

on_both_engines!(a_buyer_follows_an_in_doubt_payment_instead_of_paying_again, |market| async move {
    // Official x402 clients sign anew on every call: after a 503 the buyer follows the payment it made.
    let server = server_with(&market, Script::SettlesThenFails).await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);
    let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(first.status(), 503);
    let answer: Value = first.json().await.expect("json");
    assert_eq!(answer["payment"]["payer"], format!("{:#x}", buyer.address()));
    let path = answer["payment"]["follow"].as_str().expect("a path to follow").to_owned();

    let mut recorded = None;
    for _ in 0..100 {
        let (status, payment) = follow(&server, &header).await;
        assert_eq!(status, 200);
        assert_eq!(
            server.http.get(format!("{}{path}", server.base)).send().await.expect("get").status(),
            200
        );
        if payment["status"] == "recorded" {
            recorded = Some(payment);
            break;
        }
        assert!(
            ["settling", "recording"].contains(&payment["status"].as_str().unwrap_or_default()),
            "{payment}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let recorded = recorded.expect("the reconciler records it, and the buyer sees its task");
    let task_id = recorded["taskId"].as_str().expect("taskId").parse().expect("hash");

    // Or, knowing nothing but its key, the buyer lists its own tasks and finds it there.
    let (status, mine) = agentripe_server::testing::get_as_buyer(&server, &buyer, "/buyer/tasks").await;
    assert_eq!(status, 200);
    assert_eq!(mine["tasks"][0]["id"], recorded["taskId"], "{mine}");
    assert_eq!(mine["paymentsInFlight"], serde_json::json!([]));
    let unsigned = server.http.get(format!("{}/buyer/tasks", server.base)).send().await.expect("get");
    assert_eq!(unsigned.status(), 401);
    assert_eq!(market.deposit(task_id).await.status, 1);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");

    let unknown = format!("{}/payments/{:#x}/0x{}", server.base, buyer.address(), "01".repeat(32));
    assert_eq!(server.http.get(unknown).send().await.expect("get").status(), 404);
});

on_both_engines!(a_facilitators_hash_must_be_this_authorizations_settlement, |market| async move {
    // The buyer also sends the escrow the same amount in a plain transfer; a facilitator answers with
    // that transaction's hash. It moved the right amount from the right payer into the escrow, but it
    // did not spend this authorization: the deposit is keyed by the settlement that did.
    let buyer = market.buyer(2 * PRICE).await;
    let stray = market.transfer_to_escrow(&buyer, PRICE).await.transaction_hash;
    let url =
        start_facilitator_on(&market, Script::AnswersAnotherHash, market.deployment.chain_id, Some(stray))
            .await;
    let mut config = market.config();
    config.facilitator = FacilitatorConfig::Remote(url);
    let server = market.start_with(config).await;

    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
    assert_eq!(response.status(), 200);
    let task_id: alloy::primitives::B256 = response.json::<Value>().await.expect("json")["taskId"]
        .as_str()
        .expect("taskId")
        .parse()
        .expect("hash");
    assert_ne!(task_id, stray, "not the decoy");
    let settlement =
        market.provider.get_transaction_receipt(task_id).await.expect("rpc").expect("a transaction");
    assert_eq!(settlement.from, key(&market.anvil, 4).address(), "the facilitator's own settlement");
    assert_eq!(market.deposit(task_id).await.status, 1);
    assert_eq!(market.deposit(stray).await.status, 0, "the stray transfer is no deposit");
});

on_both_engines!(a_balance_pays_once_however_many_authorizations_are_in_flight, |market| async move {
    // The first payment hangs at the facilitator, not yet settled; the buyer's balance covers only it.
    let server = std::sync::Arc::new(server_with(&market, Script::Hangs).await);
    let buyer = market.buyer(PRICE).await;
    let first = market.pay_v2(&buyer);
    let in_flight = tokio::spawn({
        let (server, agent, first) = (server.clone(), market.agent_id, first.clone());
        async move { server.buy(agent, ("PAYMENT-SIGNATURE", &first), "").await.status() }
    });
    until_settling(&server, &first).await;

    // A second authorization against the same balance is refused at once, and takes no row.
    let second = market.pay_v2(&buyer);
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &second), "").await;
    assert_eq!(response.status(), 402);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "insufficient_funds");
    assert_eq!(follow(&server, &second).await.0, 404, "nothing stored for it");
    in_flight.abort();
});

on_both_engines!(a_settlement_mined_before_its_answer_is_no_stray, |market| async move {
    use agentripe_server::escrow_audit::EscrowAudit;

    // The facilitator has settled on chain but not answered yet: the tokens are in the escrow and we do
    // not know the settlement's hash. To the audit it is a transfer without a deposit; it is not one to
    // give back, and the operator is not told to. The same buyer's plain transfer meanwhile is a stray:
    // a payment settling hides its own settlement, nothing else of its payer's.
    let server = std::sync::Arc::new(server_with(&market, Script::Hangs).await);
    let buyer = market.buyer(2 * PRICE).await;
    let header = market.pay_v2(&buyer);
    let in_flight = tokio::spawn({
        let (server, agent, header) = (server.clone(), market.agent_id, header.clone());
        async move { server.buy(agent, ("PAYMENT-SIGNATURE", &header), "").await.status() }
    });
    until_settling(&server, &header).await;
    let settlement = market.submit_header(4, &header).await.transaction_hash;
    let plain = market.transfer_to_escrow(&buyer, PRICE).await.transaction_hash;

    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    let audit = EscrowAudit::new(store, market.provider.clone(), &market.deployment, 1_000);
    let unrecorded: Vec<_> = audit.unrecorded().await.expect("audit").iter().map(|t| t.transaction).collect();
    assert_eq!(
        unrecorded,
        vec![settlement, plain],
        "no deposit and no known settlement account for them yet"
    );
    let strays: Vec<_> = audit.strays().await.expect("audit").iter().map(|t| t.transaction).collect();
    assert_eq!(strays, vec![plain], "the settling payment's own settlement is no stray");
    let refused = agentripe_server::escrow_audit::refund_unrecorded(&market.config(), settlement, None).await;
    assert!(refused.as_ref().is_err_and(|error| error.contains("still settling here")), "{refused:?}");
    in_flight.abort();
});

on_both_engines!(a_facilitators_settlement_still_in_the_pool_is_waited_for, |market| async move {
    use agentripe_store::{PaymentStatus, Store};
    use std::time::Duration;
    let server = server_tuned(&market, Script::AnswersBeforeMined, |config| {
        config.chain_timeout = Duration::from_secs(1);
        config.payment_lease = Duration::from_secs(1);
    })
    .await;
    let store = Store::connect(&market.database_url).await.expect("store");
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // The facilitator's settlement waits in the node's pool longer than the server waits for it: the
    // buyer is told to follow its payment. Attempts go on in the background, a lease after another;
    // asking the facilitator again would get the nonce refused as spent while the chain says unused.
    market.hold_blocks().await;
    let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(first.status(), 503);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let waiting = store.payment(1).await.expect("read").expect("payment");
    assert!(waiting.leases >= 2, "attempted again: {}", waiting.leases);
    assert_eq!(waiting.status, PaymentStatus::Verified, "still settling, never refused");

    // Once mined it is recorded without any request, and the buyer's retry gets the task.
    market.resume_mining().await;
    for _ in 0..100 {
        if store.payment(1).await.expect("read").expect("payment").status == PaymentStatus::Recorded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});

on_both_engines!(
    a_settlement_a_facilitator_never_named_is_waited_for_while_it_may_land,
    |market| async move {
        use agentripe_store::{PaymentStatus, Store};
        use std::time::Duration;
        let server = server_tuned(&market, Script::SubmitsThenFails, |config| {
            config.payment_lease = Duration::from_secs(1);
        })
        .await;
        let store = Store::connect(&market.database_url).await.expect("store");
        let buyer = market.buyer(PRICE).await;
        let header = market.pay_v2(&buyer);

        // The facilitator puts the settlement in the node's pool and fails to answer: the buyer is told to
        // follow its payment. Asked again (the reconciler, a lease after another), it refuses the nonce as
        // spent while the chain still says unused: the payment must not be refused while that settlement
        // may still be mined, or a buyer told so would sign anew and pay twice.
        market.hold_blocks().await;
        let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
        assert_eq!(first.status(), 503);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let waiting = store.payment(1).await.expect("read").expect("payment");
        assert!(waiting.leases >= 2, "attempted again: {}", waiting.leases);
        assert_eq!(waiting.status, PaymentStatus::Verified, "in doubt, never refused");
        let (status, payment) = follow(&server, &header).await;
        assert_eq!((status, payment["status"].as_str()), (200, Some("settling")), "{payment}");

        // Once mined it is recorded without any request, and the buyer's retry gets the task.
        market.resume_mining().await;
        server.payment_eventually(&follow_path(&header), "recorded").await;
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
        assert_eq!(response.status(), 200);
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
        assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
    }
);

on_both_engines!(a_verification_that_got_no_answer_leaves_a_refusal_final, |market| async move {
    use std::time::Duration;
    let server = server_tuned(&market, Script::VerifyFailsThenRefuses, |config| {
        config.payment_lease = Duration::from_secs(1);
    })
    .await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // `/verify` submits nothing: when it fails, no settlement can be waiting in a pool, so the refusal
    // that answers the next attempt (the reconciler's) is final at once, not once the authorization
    // expires.
    let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(first.status(), 503);
    server.payment_eventually(&follow_path(&header), "refused").await;
    let (_, payment) = follow(&server, &header).await;
    assert_eq!(payment["reason"], "insufficient_funds", "{payment}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing charged");
});

on_both_engines!(
    a_holder_whose_payment_was_failed_meanwhile_does_not_ask_to_settle_it,
    |market| async move {
        let server = server_with(&market, Script::FailedByARivalDuringVerify).await;
        let buyer = market.buyer(PRICE).await;
        let header = market.pay_v2(&buyer);

        // The claimant stalled during `/verify` past its lease, and a successor failed the payment: the
        // buyer was told "refused" and may sign anew. The claimant must not go on to ask for the settlement.
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
        assert_eq!(response.status(), 402);
        assert_eq!(response.json::<Value>().await.expect("json")["error"], "insufficient_funds");
        let (_, payment) = follow(&server, &header).await;
        assert_eq!(payment["status"], "refused", "{payment}");
        assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing charged");
    }
);

on_both_engines!(a_refusal_that_names_its_transaction_is_waited_for, |market| async move {
    use std::time::Duration;
    let server = server_tuned(&market, Script::RefusesNamingItsTransaction, |config| {
        config.chain_timeout = Duration::from_secs(1);
    })
    .await;
    let buyer = market.buyer(PRICE).await;
    let header = market.pay_v2(&buyer);

    // The facilitator gave up waiting for its transaction and says "refused", naming it: while it waits in
    // the pool the buyer is told to follow its payment, not to pay again.
    market.hold_blocks().await;
    let first = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(first.status(), 503);
    let (status, payment) = follow(&server, &header).await;
    assert_eq!((status, payment["status"].as_str()), (200, Some("settling")), "{payment}");

    market.resume_mining().await;
    server.payment_eventually(&follow_path(&header), "recorded").await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO, "charged once");
});
