//! Settlement through a remote x402 facilitator: a real HTTP server on loopback with scripted
//! behaviour, which really submits the payment on anvil with its own key.

use std::sync::Arc;

use agentripe_chain::bindings::TestUSDC;
use agentripe_server::{
    FacilitatorConfig,
    facilitator::{RemoteFacilitator, settlement_call},
};
use agentripe_server::{
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
}

struct Facilitator {
    script: Script,
    provider: DynProvider,
    usdc: Address,
    chain_id: u64,
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
async fn verify(State(facilitator): State<Arc<Facilitator>>, Json(body): Json<Value>) -> Json<Value> {
    let payment: v2::PaymentPayload =
        serde_json::from_value(body["paymentPayload"].clone()).expect("a v2 payload");
    let authorization = &payment.payload.authorization;
    let balance = TestUSDC::new(facilitator.usdc, &facilitator.provider)
        .balanceOf(authorization.from)
        .call()
        .await
        .expect("balance");
    let valid = balance >= authorization.value && facilitator.script != Script::Refuses;
    Json(if valid {
        serde_json::json!({ "isValid": true, "payer": authorization.from })
    } else {
        serde_json::json!({ "isValid": false, "invalidReason": "insufficient_funds", "payer": authorization.from })
    })
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
    if facilitator.script == Script::Refuses {
        return Json(SettleResponse {
            success: false,
            error_reason: Some(ErrorReason::InsufficientFunds),
            payer: Some(payment.payload.authorization.from),
            transaction: String::new(),
            network: requirements.network,
        })
        .into_response();
    }
    let authorization = &payment.payload.authorization;
    let receipt = TestUSDC::new(facilitator.usdc, &facilitator.provider)
        .call_builder(&settlement_call(&payment.payload))
        .send()
        .await
        .expect("submit")
        .get_receipt()
        .await
        .expect("mined");
    if facilitator.script == Script::SettlesThenFails {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream timeout").into_response();
    }
    Json(SettleResponse {
        success: true,
        error_reason: None,
        payer: Some(authorization.from),
        transaction: format!("{:#x}", receipt.transaction_hash),
        network: requirements.network,
    })
    .into_response()
}

async fn start_facilitator(market: &Market, script: Script) -> String {
    let provider = ProviderBuilder::new()
        .wallet(key(&market.anvil, 4))
        .connect_http(market.anvil.endpoint_url())
        .erased();
    let state = Arc::new(Facilitator {
        script,
        provider,
        usdc: market.deployment.usdc,
        chain_id: market.deployment.chain_id,
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
    let mut config = market.config();
    config.facilitator = FacilitatorConfig::Remote(start_facilitator(market, script).await);
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
    let timeout = std::time::Duration::from_secs(5);
    let local = agentripe_x402::Network::new(market.deployment.chain_id);
    let remote = RemoteFacilitator::new(&start_facilitator(&market, Script::Honest).await, timeout);
    assert_eq!(remote.check_supported(local).await, Ok(()));
    let error =
        remote.check_supported(agentripe_x402::Network::new(84532)).await.expect_err("not its network");
    assert!(error.contains("eip155:84532"), "{error}");
    let unreachable = RemoteFacilitator::new("http://127.0.0.1:9", timeout);
    assert!(unreachable.check_supported(local).await.is_err());
}

on_both_engines!(a_facilitators_refusal_is_passed_on, |market| async move {
    let server = server_with(&market, Script::Refuses).await;
    let buyer = market.buyer(PRICE).await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
    assert_eq!(response.status(), 402);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "insufficient_funds");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));
});
