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
