//! Vendor authentication over HTTP: each way to get it wrong is a clear 401, 403 or 404.

use std::path::PathBuf;

use agentripe_chain::bindings::IdentityRegistry;
use agentripe_server::{
    on_both_engines,
    testing::{PRICE, Server, key, now, vendor_headers},
};
use alloy::{primitives::U256, providers::ProviderBuilder, signers::local::PrivateKeySigner};
use reqwest::header::HeaderMap;
use serde_json::Value;

async fn list(server: &Server, headers: HeaderMap) -> (u16, Value) {
    let response = server
        .http
        .get(format!("{}/vendor/tasks", server.base))
        .headers(headers)
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.json().await.expect("json"))
}

on_both_engines!(bad_credentials_are_refused_clearly, |market| async move {
    let server = market.start().await;
    let agent = market.agent_id;
    let vendor = &market.vendor;

    let (status, _) = list(&server, vendor_headers(vendor, agent, now())).await;
    assert_eq!(status, 200);

    let cases: Vec<(&str, HeaderMap, u16)> = vec![
        // Well outside the 5-minute window: the server reads its clock later than this test, on a busy machine
        // seconds later, so a timestamp a second past the edge could be back inside when it arrives.
        ("stale timestamp", vendor_headers(vendor, agent, now() - 3600), 401),
        ("future timestamp", vendor_headers(vendor, agent, now() + 3600), 401),
        (
            "signer is someone else",
            {
                let mut headers = vendor_headers(&PrivateKeySigner::random(), agent, now());
                headers
                    .insert("x-vendor-address", vendor.address().to_checksum(None).parse().expect("value"));
                headers
            },
            401,
        ),
        (
            "malformed signature hex",
            {
                let mut headers = vendor_headers(vendor, agent, now());
                headers.insert("x-signature", "0xzz".parse().expect("value"));
                headers
            },
            401,
        ),
        (
            "missing header",
            {
                let mut headers = vendor_headers(vendor, agent, now());
                headers.remove("x-timestamp");
                headers
            },
            401,
        ),
        ("no headers at all", HeaderMap::new(), 401),
        ("a stranger for this agent", vendor_headers(&PrivateKeySigner::random(), agent, now()), 403),
        ("an agent that does not exist", vendor_headers(vendor, U256::from(999), now()), 404),
    ];
    for (name, headers, expected) in cases {
        let (status, body) = list(&server, headers).await;
        assert_eq!(status, expected, "{name}: {body}");
        assert!(
            body["error"].is_string() && body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
    }
});

on_both_engines!(vendors_touch_only_their_own_agents_tasks, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
    let task = response.json::<Value>().await.expect("json")["taskId"].as_str().expect("taskId").to_owned();

    // Another vendor with an agent of its own.
    let other = key(&market.anvil, 6);
    let as_other = ProviderBuilder::new().wallet(other.clone()).connect_http(market.anvil.endpoint_url());
    let receipt = IdentityRegistry::new(market.deployment.identity_registry, &as_other)
        .register_0()
        .send()
        .await
        .expect("register")
        .get_receipt()
        .await
        .expect("mined");
    let other_agent = receipt.decoded_log::<IdentityRegistry::Registered>().expect("Registered").agentId;

    let (status, listed) = list(&server, vendor_headers(&other, other_agent, now())).await;
    assert_eq!(status, 200);
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(0), "it sees none of the first agent's tasks");
    for action in ["start", "complete", "fail"] {
        let response = server
            .http
            .post(format!("{}/vendor/tasks/{task}/{action}", server.base))
            .headers(vendor_headers(&other, other_agent, now()))
            .json(&serde_json::json!({ "result": "x", "errorMessage": "x" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 403, "{action}");
        assert_eq!(response.json::<Value>().await.expect("json")["error"], "forbidden", "{action}");
    }

    // An operator the owner approves may act for the agent.
    let owner =
        ProviderBuilder::new().wallet(market.vendor.clone()).connect_http(market.anvil.endpoint_url());
    let worker = key(&market.anvil, 7);
    IdentityRegistry::new(market.deployment.identity_registry, &owner)
        .setApprovalForAll(worker.address(), true)
        .send()
        .await
        .expect("approve")
        .watch()
        .await
        .expect("mined");
    let response = server
        .http
        .post(format!("{}/vendor/tasks/{task}/start", server.base))
        .headers(vendor_headers(&worker, market.agent_id, now()))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
});

on_both_engines!(a_signature_from_cast_wallet_sign_works, |market| async move {
    let server = market.start().await;
    let cast = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/cast");
    let address = market.vendor.address().to_checksum(None);
    let timestamp = now().to_string();
    let key = format!("0x{}", alloy::primitives::hex::encode(market.vendor.to_bytes()));
    // Agentripe's guide signs "$ADDRESS:$TIMESTAMP" with `cast wallet sign`. cast 1.x reads a message
    // starting with 0x as hex, so the same UTF-8 bytes go through `cast from-utf8` first.
    let run = |args: &[&str]| {
        let output = std::process::Command::new(&cast).args(args).output().expect("cast runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).expect("utf8").trim().to_owned()
    };
    let message = run(&["from-utf8", &format!("{address}:{timestamp}")]);
    let signature = run(&["wallet", "sign", "--private-key", &key, &message]);
    let mut headers = HeaderMap::new();
    headers.insert("x-vendor-address", address.parse().expect("value"));
    headers.insert("x-agent-id", market.agent_id.to_string().parse().expect("value"));
    headers.insert("x-timestamp", timestamp.parse().expect("value"));
    headers.insert("x-signature", signature.parse().expect("value"));
    let (status, body) = list(&server, headers).await;
    assert_eq!(status, 200, "{body}");
});
