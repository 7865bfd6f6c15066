//! Every way a payment can be wrong gets a 402 with the x402 reason, and moves no money.

use agentripe_chain::bindings::IERC3009;
use agentripe_server::{
    on_both_engines,
    testing::{Market, PRICE, now},
};
use agentripe_x402::{decode_header, encode_header, v2};
use alloy::{
    primitives::{Address, U256},
    signers::{SignerSync, local::PrivateKeySigner},
    sol,
    sol_types::SolStruct,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::Value;

/// Sends `header` as PAYMENT-SIGNATURE and checks the 402 names `reason` in both versions' places.
async fn refused(server: &agentripe_server::testing::Server, market: &Market, header: &str, reason: &str) {
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", header), "").await;
    assert_eq!(response.status(), 402, "{reason}");
    let required: v2::PaymentRequired =
        decode_header(response.headers()["payment-required"].to_str().expect("ascii"))
            .expect("PAYMENT-REQUIRED");
    assert_eq!(required.error.as_deref(), Some(reason));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], reason);
    assert_eq!(
        body["accepts"][0]["maxAmountRequired"],
        PRICE.to_string(),
        "the terms come back with the refusal"
    );
}

on_both_engines!(each_bad_term_is_refused_with_its_reason, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(1_000_000).await;
    let offer = market.offer();
    let accepted = v2::PaymentRequirements::for_offer(&offer);
    let signed = |edit: &dyn Fn(&mut agentripe_x402::Authorization)| {
        let mut authorization = market.authorization(&buyer);
        edit(&mut authorization);
        market.v2_header(market.sign(&buyer, &offer, authorization), accepted.clone())
    };

    let cases: Vec<(&str, String)> = vec![
        ("invalid_exact_evm_payload_authorization_value", signed(&|a| a.value = U256::from(PRICE - 1))),
        ("invalid_exact_evm_payload_authorization_value", signed(&|a| a.value = U256::from(PRICE + 1))),
        ("invalid_exact_evm_payload_recipient_mismatch", signed(&|a| a.to = Address::repeat_byte(0x42))),
        (
            "invalid_exact_evm_payload_authorization_valid_after",
            signed(&|a| a.valid_after = U256::from(now() + 3600)),
        ),
        // Not valid for a short while yet: the token would refuse it, so it is refused before the chain. (Not
        // seconds: these headers are signed up front and a busy machine could reach this case after they passed.)
        (
            "invalid_exact_evm_payload_authorization_valid_after",
            signed(&|a| a.valid_after = U256::from(now() + 60)),
        ),
        (
            "invalid_exact_evm_payload_authorization_valid_before",
            signed(&|a| a.valid_before = U256::from(now() - 1)),
        ),
        (
            "invalid_exact_evm_payload_authorization_valid_before",
            signed(&|a| a.valid_before = U256::from(now() + 2)),
        ),
        (
            "invalid_exact_evm_payload_authorization_valid_before",
            signed(&|a| a.valid_before = U256::from(now() + 3600)),
        ),
    ];
    for (reason, header) in cases {
        refused(&server, &market, &header, reason).await;
    }

    // Signed by someone else, or under another chain's domain.
    let impostor = PrivateKeySigner::random();
    let forged = market.sign(&impostor, &offer, market.authorization(&buyer));
    refused(
        &server,
        &market,
        &market.v2_header(forged, accepted.clone()),
        "invalid_exact_evm_payload_signature",
    )
    .await;
    let other_chain = agentripe_x402::Offer { network: agentripe_x402::Network::new(1), ..offer.clone() };
    let cross = market.sign(&buyer, &other_chain, market.authorization(&buyer));
    refused(
        &server,
        &market,
        &market.v2_header(cross, accepted.clone()),
        "invalid_exact_evm_payload_signature",
    )
    .await;

    // Accepted requirements that are not the offer.
    let good = || market.sign(&buyer, &offer, market.authorization(&buyer));
    let wrong_asset = v2::PaymentRequirements { asset: Address::repeat_byte(1), ..accepted.clone() };
    refused(&server, &market, &market.v2_header(good(), wrong_asset), "invalid_payment_requirements").await;
    let wrong_amount = v2::PaymentRequirements { amount: "1".into(), ..accepted.clone() };
    refused(&server, &market, &market.v2_header(good(), wrong_amount), "invalid_payment_requirements").await;
    let wrong_network = v2::PaymentRequirements { network: "eip155:1".into(), ..accepted.clone() };
    refused(&server, &market, &market.v2_header(good(), wrong_network), "invalid_network").await;
    let wrong_scheme = v2::PaymentRequirements { scheme: "upto".into(), ..accepted.clone() };
    refused(&server, &market, &market.v2_header(good(), wrong_scheme), "unsupported_scheme").await;
    let v3 = encode_header(&v2::PaymentPayload {
        x402_version: 3,
        resource: None,
        accepted: accepted.clone(),
        payload: good(),
        extensions: None,
    });
    refused(&server, &market, &v3, "invalid_x402_version").await;

    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(1_000_000), "nothing was charged");
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::ZERO);
});

on_both_engines!(the_chain_has_a_say_too, |market| async move {
    let server = market.start().await;
    // No funds: refused, and nothing stored for a stranger's unfunded authorization.
    let broke = market.buyer(PRICE - 1).await;
    let unfunded = market.pay_v2(&broke);
    refused(&server, &market, &unfunded, "insufficient_funds").await;
    assert_eq!(market.usdc_balance(broke.address()).await, U256::from(PRICE - 1));
    let payment: agentripe_x402::v2::PaymentPayload = agentripe_x402::decode_header(&unfunded).expect("v2");
    let authorization = &payment.payload.authorization;
    let url = format!("{}/payments/{:#x}/{:#x}", server.base, authorization.from, authorization.nonce);
    assert_eq!(server.http.get(url).send().await.expect("get").status(), 404, "no row for it");

    // A nonce the buyer cancelled on chain.
    let buyer = market.buyer(PRICE).await;
    let authorization = market.authorization(&buyer);
    sol! {
        struct CancelAuthorization { address authorizer; bytes32 nonce; }
    }
    let cancel = CancelAuthorization { authorizer: buyer.address(), nonce: authorization.nonce };
    let signature =
        buyer.sign_hash_sync(&cancel.eip712_signing_hash(&market.offer().token_domain())).expect("sign");
    IERC3009::new(market.deployment.usdc, &market.provider)
        .cancelAuthorization_1(buyer.address(), authorization.nonce, signature.as_bytes().into())
        .send()
        .await
        .expect("cancel")
        .watch()
        .await
        .expect("mined");
    let header = market.v2_header(
        market.sign(&buyer, &market.offer(), authorization),
        v2::PaymentRequirements::for_offer(&market.offer()),
    );
    refused(&server, &market, &header, "invalid_exact_evm_payload_authorization_nonce_used").await;
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));

    // A refused payment can be retried once fixed: the same authorization after a top-up settles.
    let header = market.pay_v2(&broke);
    refused(&server, &market, &header, "insufficient_funds").await;
    market.mint(broke.address(), 1).await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(market.usdc_balance(broke.address()).await, U256::ZERO);
});

on_both_engines!(malformed_input_gets_a_clear_error_and_no_charge, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;

    refused(&server, &market, "%%% not base64 %%%", "invalid_payload").await;
    refused(&server, &market, &STANDARD.encode("not json"), "invalid_payload").await;
    refused(&server, &market, &STANDARD.encode(r#"{"x402Version":2}"#), "invalid_payload").await;
    let v1 = server.buy(market.agent_id, ("X-PAYMENT", &STANDARD.encode("[]")), "").await;
    assert_eq!(v1.status(), 402);
    assert_eq!(v1.json::<Value>().await.expect("json")["error"], "invalid_payload");

    // A good payment with a broken body is refused before anything is settled.
    for (body, code) in
        [("{", "bad_json"), (r#"{"task_detail":42}"#, "bad_field"), (r#"{"task_metadata":"x"}"#, "bad_field")]
    {
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), body).await;
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(json["error"], code, "{body}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let huge = format!(r#"{{"task_detail":"{}"}}"#, "x".repeat(100 * 1024));
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), &huge).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "body_too_large");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing was charged");
});

on_both_engines!(unknown_agents_and_paths_are_404, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    for path in ["999/translate", "abc/translate", &format!("{}/summarize", market.agent_id), "-1/translate"]
    {
        let response = server
            .http
            .post(format!("{}/{path}", server.base))
            .header("PAYMENT-SIGNATURE", market.pay_v2(&buyer))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 404, "{path}");
        let json: Value = response.json().await.expect("json");
        assert_eq!(json["error"], "not_found", "{path}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{path}");
    }
    for path in ["/tasks/0x1234", "/tasks/not-a-hash/result", &format!("/tasks/0x{}", "ab".repeat(32))] {
        let response = server.http.get(format!("{}{path}", server.base)).send().await.expect("request");
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(response.json::<Value>().await.expect("json")["error"], "not_found", "{path}");
    }
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));
});
