//! `POST /agents/register`: the caller signs, the server mints and hands the agent over.

use agentripe_chain::bindings::IdentityRegistry;
use agentripe_server::{
    on_both_engines,
    testing::{key, now, vendor_headers},
};
use alloy::primitives::U256;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

fn data() -> Value {
    json!({
        "name": "My Translation Agent",
        "description": "Translates text between 50+ languages",
        "x402Support": true,
        "services": [{ "name": "x402", "endpoint": "/", "catalog": [
            { "path": "translate", "price": "$0.10", "type": "async", "description": "Translate text between languages" }
        ]}]
    })
}

on_both_engines!(an_agent_registered_through_the_api_belongs_to_its_caller, |market| async move {
    let server = market.start().await;
    let vendor = key(&market.anvil, 6);
    let register = |body: Value, headers| {
        let http = server.http.clone();
        let url = format!("{}/agents/register", server.base);
        async move {
            let response = http.post(url).headers(headers).json(&body).send().await.expect("request");
            (response.status().as_u16(), response.json::<Value>().await.expect("json"))
        }
    };
    let headers = || vendor_headers(&vendor, U256::ZERO, now());

    let (status, created) = register(json!({ "data": data() }), headers()).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["walletSet"], false);
    let agent = U256::from(created["agentId"].as_u64().expect("a number, as in the guide"));
    assert!(created["transactionHash"].as_str().is_some_and(|hash| hash.len() == 66));

    // The caller owns its agent; the registration file points buyers at this server.
    let identity = IdentityRegistry::new(market.deployment.identity_registry, &market.provider);
    assert_eq!(identity.ownerOf(agent).call().await.expect("owner"), vendor.address());
    assert_eq!(
        identity.getAgentWallet(agent).call().await.expect("wallet"),
        alloy::primitives::Address::ZERO,
        "payouts go to the owner"
    );
    let uri = identity.tokenURI(agent).call().await.expect("uri");
    let file: Value = serde_json::from_slice(
        &STANDARD
            .decode(uri.strip_prefix("data:application/json;base64,").expect("data URI"))
            .expect("base64"),
    )
    .expect("JSON");
    assert_eq!(file["services"][0]["endpoint"], server.base);
    assert_eq!(file["name"], "My Translation Agent");

    // It sells at once, and its owner works its tasks.
    let sold = server.http.get(format!("{}/{agent}/translate", server.base)).send().await.expect("get");
    assert_eq!(sold.status(), 402);
    let listed = server
        .http
        .get(format!("{}/vendor/tasks", server.base))
        .headers(vendor_headers(&vendor, agent, now()))
        .send()
        .await
        .expect("get");
    assert_eq!(listed.status(), 200);

    // Refusals name what is wrong.
    let mut nameless = data();
    nameless.as_object_mut().map(|object| object.remove("name"));
    let (status, error) = register(json!({ "data": nameless }), headers()).await;
    assert_eq!((status, error["error"].as_str()), (400, Some("invalid_field")));
    assert!(error["message"].as_str().is_some_and(|m| m.starts_with("data.name")), "{error}");
    let (status, error) = register(
        json!({ "data": data(), "wallet": { "address": "0x0000000000000000000000000000000000000001" } }),
        headers(),
    )
    .await;
    assert_eq!((status, error["error"].as_str()), (400, Some("wallet_unsupported")));
    let (status, _) =
        register(json!({ "data": data() }), vendor_headers(&vendor, U256::ZERO, now() - 3600)).await;
    assert_eq!(status, 401, "a stale signature proves nothing");
});

on_both_engines!(strangers_cannot_make_the_operator_mint_without_bound, |market| async move {
    use agentripe_server::testing::Server;
    use alloy::{providers::Provider, signers::local::PrivateKeySigner};

    let mut config = market.config();
    config.registration.per_signer_per_day = 2;
    let server = market.start_with(config).await;
    async fn register(
        server: &Server,
        signer: &PrivateKeySigner,
        timestamp: u64,
        body: &Value,
    ) -> (u16, Value) {
        let response = server
            .http
            .post(format!("{}/agents/register", server.base))
            .headers(vendor_headers(signer, U256::ZERO, timestamp))
            .json(body)
            .send()
            .await
            .expect("request");
        (response.status().as_u16(), response.json().await.expect("json"))
    }
    let body = json!({ "data": data() });
    let operator_nonce =
        async || market.provider.get_transaction_count(market.operator.address()).await.expect("nonce");

    // A captured set of headers registers once.
    let stranger = PrivateKeySigner::random();
    let at = now();
    assert_eq!(register(&server, &stranger, at, &body).await.0, 201);
    let before = operator_nonce().await;
    let (status, replayed) = register(&server, &stranger, at, &body).await;
    assert_eq!((status, replayed["error"].as_str()), (401, Some("signature_used")), "{replayed}");

    // Two a day per signer; the third is refused before anything is sent.
    assert_eq!(register(&server, &stranger, at - 1, &body).await.0, 201);
    let before_third = operator_nonce().await;
    let (status, limited) = register(&server, &stranger, at - 2, &body).await;
    assert_eq!((status, limited["error"].as_str()), (429, Some("rate_limited")), "{limited}");
    assert_eq!(operator_nonce().await, before_third, "nothing sent for a refused registration");
    assert_eq!(before_third, before + 2, "one mint and one transfer for the one admitted in between");

    // A file too large to mint cheaply is refused before anything is sent.
    let mut large = data();
    large["description"] = json!("x".repeat(4096));
    let (status, too_large) =
        register(&server, &PrivateKeySigner::random(), now(), &json!({ "data": large })).await;
    assert_eq!((status, too_large["error"].as_str()), (413, Some("registration_too_large")), "{too_large}");
    assert_eq!(operator_nonce().await, before_third);
});

on_both_engines!(the_operators_daily_gas_for_registrations_is_bounded, |market| async move {
    use alloy::{providers::Provider, signers::local::PrivateKeySigner};

    // Enough for one registration (its mint's estimate and a transfer), not two.
    let mut config = market.config();
    config.registration.gas_per_day = 1_000_000;
    let server = market.start_with(config).await;
    let register = async || {
        let response = server
            .http
            .post(format!("{}/agents/register", server.base))
            .headers(vendor_headers(&PrivateKeySigner::random(), U256::ZERO, now()))
            .json(&json!({ "data": data() }))
            .send()
            .await
            .expect("request");
        let retry_after = response.headers().get("retry-after").is_some();
        (response.status().as_u16(), retry_after, response.json::<Value>().await.expect("json"))
    };
    assert_eq!(register().await.0, 201);
    let before = market.provider.get_transaction_count(market.operator.address()).await.expect("nonce");
    let (status, retry_after, spent) = register().await;
    assert_eq!((status, retry_after), (503, true), "{spent}");
    assert!(spent["message"].as_str().is_some_and(|m| m.contains("gas budget")), "{spent}");
    assert_eq!(
        market.provider.get_transaction_count(market.operator.address()).await.expect("nonce"),
        before
    );
});

on_both_engines!(a_registration_that_cannot_be_minted_fails_and_blocks_no_other, |market| async move {
    use agentripe_store::{RegistrationStatus, Store};

    // Stuck rows as an older server left them: a URI no block can hold, begun long ago, many of them.
    let store = Store::connect(&market.database_url).await.expect("store");
    let unmintable = format!("data:application/json,{}", "x".repeat(200_000));
    let long_ago = agentripe_server::util::now_ms() - 3_600_000;
    let mut stuck = Vec::new();
    for _ in 0..3 {
        stuck.push(
            store
                .begin_registration(
                    "0x0000000000000000000000000000000000000001",
                    &unmintable,
                    0,
                    None,
                    long_ago,
                )
                .await
                .expect("row")
                .id,
        );
    }
    let server = market.start().await;

    // The reconciler ends each with a reason; a new registration goes through meanwhile.
    let response = server
        .http
        .post(format!("{}/agents/register", server.base))
        .headers(vendor_headers(&key(&market.anvil, 6), U256::ZERO, now()))
        .json(&json!({ "data": data() }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 201);
    for id in stuck {
        let mut registration = store.registration(id).await.expect("read").expect("row");
        for _ in 0..100 {
            if registration.status().expect("status") == RegistrationStatus::Failed {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            registration = store.registration(id).await.expect("read").expect("row");
        }
        assert_eq!(registration.status().expect("status"), RegistrationStatus::Failed, "registration {id}");
        assert!(registration.problem.is_some_and(|why| !why.is_empty()), "registration {id} says why");
    }
});

on_both_engines!(a_registration_fee_is_collected_over_x402_before_anything_is_minted, |market| async move {
    use agentripe_x402::{Authorization, decode_header, v2};
    use alloy::{
        primitives::{B256, U256},
        providers::Provider,
        signers::local::PrivateKeySigner,
    };

    const FEE: u64 = 500_000; // $0.50
    let mut config = market.config();
    config.registration.fee = Some(U256::from(FEE));
    let server = market.start_with(config).await;
    let operator = market.operator.address();
    let register = async |signer: &PrivateKeySigner, timestamp: u64, payment: Option<&str>| {
        let mut request = server
            .http
            .post(format!("{}/agents/register", server.base))
            .headers(vendor_headers(signer, U256::ZERO, timestamp))
            .json(&json!({ "data": data() }));
        if let Some(payment) = payment {
            request = request.header("PAYMENT-SIGNATURE", payment);
        }
        let response = request.send().await.expect("request");
        let required =
            response.headers().get("payment-required").map(|value| value.to_str().expect("ascii").to_owned());
        (response.status().as_u16(), required, response.json::<Value>().await.expect("json"))
    };

    // Unpaid: 402 with the terms, payable to the operator; nothing sent.
    // Distinct timestamps: signed headers register once, and a paid registration takes about a second.
    let at = now();
    let registrant = market.buyer(FEE).await;
    let nonce_before = market.provider.get_transaction_count(operator).await.expect("nonce");
    let (status, required, _) = register(&registrant, at, None).await;
    assert_eq!(status, 402);
    let required: v2::PaymentRequired =
        decode_header(&required.expect("PAYMENT-REQUIRED")).expect("v2 terms");
    let accepted = required.accepts[0].clone();
    assert_eq!((accepted.pay_to, accepted.amount.as_str()), (operator, "500000"));
    assert_eq!(market.provider.get_transaction_count(operator).await.expect("nonce"), nonce_before);

    // Paid: the fee moves to the operator, then the agent is minted for the registrant.
    let offer = agentripe_x402::Offer { pay_to: operator, amount: U256::from(FEE), ..market.offer() };
    let authorization = Authorization {
        from: registrant.address(),
        to: operator,
        value: U256::from(FEE),
        valid_after: U256::ZERO,
        valid_before: U256::from(now() + 120),
        nonce: B256::random(),
    };
    let payment = market.v2_header(market.sign(&registrant, &offer, authorization), accepted);
    let operator_usdc = market.usdc_balance(operator).await;
    let (status, _, created) = register(&registrant, at - 1, Some(&payment)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(market.usdc_balance(operator).await, operator_usdc + U256::from(FEE));
    assert_eq!(market.usdc_balance(registrant.address()).await, U256::ZERO);

    // The same payment again, with fresh headers: refused before anything is sent.
    let nonce_before = market.provider.get_transaction_count(operator).await.expect("nonce");
    let (status, _, reused) = register(&registrant, at - 2, Some(&payment)).await;
    assert_eq!((status, reused["error"].as_str()), (402, Some("registration_fee_unpaid")), "{reused}");
    assert_eq!(market.provider.get_transaction_count(operator).await.expect("nonce"), nonce_before);
});
