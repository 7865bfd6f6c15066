//! Purchases over real HTTP into the real escrow on anvil, on SQLite and PostgreSQL.

use agentripe_server::{on_both_engines, testing::PRICE};
use agentripe_x402::{SettleResponse, decode_header, v2};
use alloy::primitives::{B256, U256};
use serde_json::Value;

on_both_engines!(a_v2_purchase_locks_the_payment_in_escrow, |market| async move {
    // A reviewer is configured: this purchase asks for a review.
    let llm = agentripe_server::testing::ScriptedLlm::start(vec![]).await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;
    let buyer = market.buyer(1_000_000).await;
    let body = r#"{"task_detail":"Translate to Japanese","task_metadata":{"source_lang":"en"},"reviewer_request":"accurate","text":"hello"}"#;
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), body).await;
    assert_eq!(response.status(), 200);
    let settle: SettleResponse =
        decode_header(response.headers()["payment-response"].to_str().expect("ascii"))
            .expect("PAYMENT-RESPONSE");
    let json: Value = response.json().await.expect("json");
    let task_id: B256 = json["taskId"].as_str().expect("taskId").parse().expect("hash");
    assert_eq!(json["message"], "Task created. Poll /tasks/:taskId/result for results.");
    assert!(settle.success);
    assert_eq!(settle.transaction, json["taskId"]);
    assert_eq!(settle.network, format!("eip155:{}", market.deployment.chain_id));
    assert_eq!(settle.payer, Some(buyer.address()));

    // depositId = taskId = settlement transaction hash, locked for the agent and the buyer.
    let deposit = market.deposit(task_id).await;
    assert_eq!(
        (deposit.agentId, deposit.buyer, deposit.amount, deposit.status),
        (market.agent_id, buyer.address(), U256::from(PRICE), 1)
    );
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(1_000_000 - PRICE));
    let receipt = market
        .provider
        .get_transaction_receipt(task_id)
        .await
        .expect("rpc")
        .expect("the task id is a transaction");
    assert!(receipt.status());

    let path = format!("/tasks/{}", json["taskId"].as_str().unwrap_or_default());
    let (_, task) = agentripe_server::testing::get_as_buyer(&server, &buyer, &path).await;
    assert_eq!(task["task"]["status"], "pending");
    assert_eq!(task["task"]["taskDetail"], "Translate to Japanese");
    assert_eq!(task["task"]["taskMetadata"], r#"{"source_lang":"en"}"#);
    assert_eq!(task["task"]["reviewerRequest"], "accurate");
    assert_eq!(task["task"]["requestPayload"], r#"{"text":"hello"}"#);
    assert_eq!(task["task"]["productId"], "translate");
    assert_eq!(task["task"]["buyerAddress"], format!("{:#x}", buyer.address()));
    let result = server
        .http
        .get(format!("{}/tasks/{}/result", server.base, json["taskId"].as_str().unwrap_or_default()))
        .send()
        .await
        .expect("get");
    assert_eq!(result.status(), 202, "open until the escrow moves");
});

on_both_engines!(a_v1_purchase_answers_in_v1, |market| async move {
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let header = market.v1_header(market.sign(&buyer, &market.offer(), market.authorization(&buyer)));
    let response = server.buy(market.agent_id, ("X-PAYMENT", &header), "").await;
    assert_eq!(response.status(), 200);
    let settle: SettleResponse =
        decode_header(response.headers()["x-payment-response"].to_str().expect("ascii"))
            .expect("X-PAYMENT-RESPONSE");
    assert!(response.headers().get("payment-response").is_none());
    let json: Value = response.json().await.expect("json");
    let task_id: B256 = json["taskId"].as_str().expect("taskId").parse().expect("hash");
    assert_eq!(settle.transaction, json["taskId"]);
    assert_eq!(market.deposit(task_id).await.status, 1);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO);
});

use alloy::providers::Provider;

on_both_engines!(without_payment_the_requirements_come_in_both_versions, |market| async move {
    let server = market.start().await;
    let response = server.http.get(server.purchase_url(market.agent_id)).send().await.expect("get");
    assert_eq!(response.status(), 402);
    let required: v2::PaymentRequired =
        decode_header(response.headers()["payment-required"].to_str().expect("ascii"))
            .expect("PAYMENT-REQUIRED");
    assert_eq!(required.x402_version, 2);
    assert_eq!(required.accepts, vec![v2::PaymentRequirements::for_offer(&market.offer())]);
    assert_eq!(required.resource.url, server.purchase_url(market.agent_id));
    let body: Value = response.json().await.expect("v1 body");
    assert_eq!(body["x402Version"], 1);
    let accepts = &body["accepts"][0];
    assert_eq!(accepts["scheme"], "exact");
    assert_eq!(accepts["maxAmountRequired"], PRICE.to_string());
    assert_eq!(accepts["payTo"], market.deployment.agentripe.to_checksum(None));
    assert_eq!(accepts["asset"], market.deployment.usdc.to_checksum(None));
    assert_eq!(accepts["extra"]["name"], "USDC");
    assert_eq!(accepts["extra"]["version"], "2");
    assert_eq!(accepts["resource"], server.purchase_url(market.agent_id));
});

on_both_engines!(a_catalog_served_over_http_is_read_and_checked, |market| async move {
    use axum::{Router, http::StatusCode, routing::get};
    let catalog = r#"{"name":"Summarizer","services":[{"name":"x402","endpoint":"/","catalog":[{"path":"summarize","price":"$0.25","type":"async","description":"Summarize a text"}]}]}"#;
    let app = Router::new()
        .route("/agent.json", get(move || async move { catalog }))
        .route("/broken.json", get(|| async { "not json" }))
        .route("/gone.json", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let host = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let served = market.register_agent(&format!("{host}/agent.json")).await;
    let broken = market.register_agent(&format!("{host}/broken.json")).await;
    let gone = market.register_agent(&format!("{host}/gone.json")).await;
    let unset = market.register_agent("").await;

    let server = market.start().await;
    let response = server.http.get(format!("{}/{served}/summarize", server.base)).send().await.expect("get");
    assert_eq!(response.status(), 402);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["accepts"][0]["maxAmountRequired"], "250000");
    assert_eq!(body["accepts"][0]["description"], "Summarize a text");

    for agent in [broken, gone, unset] {
        let response =
            server.http.get(format!("{}/{agent}/summarize", server.base)).send().await.expect("get");
        assert_eq!(response.status(), 404, "agent {agent}");
        let body: Value = response.json().await.expect("json");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("registration file")), "{body}");
    }
});

on_both_engines!(a_signature_with_v_0_or_1_is_settled, |market| async move {
    // Some signers write v as 0/1 rather than 27/28: the signature is valid, and the token must get 27/28.
    let server = market.start().await;
    let buyer = market.buyer(PRICE).await;
    let offer = market.offer();
    let mut payload = market.sign(&buyer, &offer, market.authorization(&buyer));
    let mut signature = payload.signature.to_vec();
    signature[64] -= 27;
    payload.signature = signature.into();
    let header = market.v2_header(payload, v2::PaymentRequirements::for_offer(&offer));
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &header), "").await;
    assert_eq!(response.status(), 200);
    assert_eq!(market.usdc_balance(market.deployment.agentripe).await, U256::from(PRICE));
});
