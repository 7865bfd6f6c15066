//! A marketplace strangers cannot game: each attack of the outside review (issue 11), performed on
//! anvil, fails.

use agentripe_server::{
    on_both_engines,
    testing::{LlmAnswer, Market, PRICE, ScriptedLlm, Server, get_as_buyer, key, now, vendor_headers},
};
use agentripe_x402::{decode_header, v2};
use alloy::primitives::U256;
use serde_json::{Value, json};

async fn reviewed_server(market: &Market, llm: &ScriptedLlm, public: bool) -> Server {
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    config.public_task_results = public;
    market.start_with(config).await
}

async fn get(server: &Server, path: &str) -> (u16, Value) {
    let response = server.http.get(format!("{}{path}", server.base)).send().await.expect("get");
    (response.status().as_u16(), response.json().await.expect("json"))
}

on_both_engines!(free_work_rejected_drafts_never_reach_the_buyer, |market| async move {
    // An impossible review: five drafts, five rejections, a refund. The buyer reads its task after
    // every rejection and gets the reviewer's reasons, never a draft.
    let llm =
        ScriptedLlm::start((1..=5).map(|n| LlmAnswer::verdict(false, &format!("Reason {n}"))).collect())
            .await;
    let server = reviewed_server(&market, &llm, false).await;
    let request = json!({ "task_detail": "Write a poem", "reviewer_request": "Impossible criteria" });
    let (buyer, task) = server.purchase(&market, &request).await;
    let path = format!("/tasks/{task}");
    for n in 1..=5 {
        server.vendor(&market, "start", &task, json!({})).await;
        let draft = format!("draft {n}");
        let (status, answer) = server.vendor(&market, "complete", &task, json!({ "result": draft })).await;
        assert_eq!(status, 200, "{answer}");
        let (_, seen) = get_as_buyer(&server, &buyer, &path).await;
        assert_eq!(seen["task"]["result"], Value::Null, "the buyer never sees draft {n}");
        assert_eq!(seen["task"]["reviewReason"], format!("Reason {n}"), "but it sees why it was rejected");
        assert!(!seen.to_string().contains(&draft), "no draft anywhere in the buyer's view");
    }
    let (status, result) = get_as_buyer(&server, &buyer, &format!("{path}/result")).await;
    assert_eq!((status, result["escrowAction"].as_str()), (200, Some("refunded")));
    assert_eq!(result["result"], Value::Null, "refunded: the last draft is not the buyer's either");
    assert!(!result.to_string().contains("draft 5"));
    // The vendor keeps its own drafts.
    assert_eq!(server.task(&task).await["task"]["result"], "draft 5");
});

on_both_engines!(strangers_read_status_and_money_but_nothing_private, |market| async move {
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Good")]).await;
    let server = reviewed_server(&market, &llm, false).await;
    let request =
        json!({ "task_detail": "Secret instructions", "reviewer_request": "Good", "extra": "payload" });
    let (buyer, task) = server.purchase(&market, &request).await;
    server.vendor(&market, "start", &task, json!({})).await;
    server.vendor(&market, "complete", &task, json!({ "result": "secret deliverable" })).await;

    // Anyone who learns the task id (it is on chain) gets the status and the money, and how to sign.
    let (status, seen) = get(&server, &format!("/tasks/{task}")).await;
    assert_eq!(status, 200);
    for field in ["taskDetail", "requestPayload", "reviewerRequest", "result", "reviewReason"] {
        assert_eq!(seen["task"][field], Value::Null, "{field} is private");
    }
    assert_eq!(seen["task"]["escrowStatus"], "released");
    assert!(seen["message"].as_str().is_some_and(|m| m.contains("X-Buyer-Address")), "{seen}");
    let (status, result) = get(&server, &format!("/tasks/{task}/result")).await;
    assert_eq!(
        (status, result["escrowAction"].as_str()),
        (200, Some("released")),
        "Agentripe's status codes"
    );
    assert_eq!(result["result"], Value::Null);
    assert!(!result.to_string().contains("secret"), "{result}");

    // Another buyer, or a vendor of another agent, is refused; the buyer reads its result.
    let (status, _) = get_as_buyer(&server, &key(&market.anvil, 7), &format!("/tasks/{task}")).await;
    assert_eq!(status, 403);
    let other_agent = market.register_agent("data:application/json,%7B%7D").await;
    let response = server
        .http
        .get(format!("{}/tasks/{task}", server.base))
        .headers(vendor_headers(&market.vendor, other_agent, now()))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 403);
    let (status, result) = get_as_buyer(&server, &buyer, &format!("/tasks/{task}/result")).await;
    assert_eq!((status, result["result"].as_str()), (200, Some("secret deliverable")));
    let (_, seen) = get_as_buyer(&server, &buyer, &format!("/tasks/{task}")).await;
    assert_eq!(seen["task"]["taskDetail"], "Secret instructions");
});

on_both_engines!(public_results_show_what_the_buyer_sees_and_no_more, |market| async move {
    // The operator's setting for Agentripe's public results: no signature needed, drafts still private.
    let llm =
        ScriptedLlm::start(vec![LlmAnswer::verdict(false, "No"), LlmAnswer::verdict(true, "Yes")]).await;
    let server = reviewed_server(&market, &llm, true).await;
    let (_, task) =
        server.purchase(&market, &json!({ "task_detail": "Public", "reviewer_request": "Yes" })).await;
    server.vendor(&market, "start", &task, json!({})).await;
    server.vendor(&market, "complete", &task, json!({ "result": "rejected draft" })).await;
    let (_, seen) = get(&server, &format!("/tasks/{task}")).await;
    assert_eq!(seen["task"]["taskDetail"], "Public");
    assert_eq!(seen["task"]["result"], Value::Null, "a rejected draft stays the vendor's");
    server.vendor(&market, "start", &task, json!({})).await;
    server.vendor(&market, "complete", &task, json!({ "result": "approved work" })).await;
    let (_, result) = get(&server, &format!("/tasks/{task}/result")).await;
    assert_eq!(result["result"], "approved work");
});

on_both_engines!(a_review_that_cannot_happen_is_refused_before_any_charge, |market| async move {
    // No reviewer on this server: a purchase that asks for a review would lock the buyer's money.
    let server = market.start().await;
    let buyer = market.buyer(2 * PRICE).await;
    let body = json!({ "task_detail": "Translate", "reviewer_request": "Accurate" }).to_string();
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), &body).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<Value>().await.expect("json")["error"], "review_unavailable");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(2 * PRICE), "nothing charged");

    // The 402 and the agent say so beforehand; a purchase without review goes through.
    let unpaid = server.http.get(server.purchase_url(market.agent_id)).send().await.expect("get");
    let required: v2::PaymentRequired =
        decode_header(unpaid.headers()["payment-required"].to_str().expect("ascii"))
            .expect("PAYMENT-REQUIRED");
    assert_eq!(required.extensions.expect("extensions")["agentripe"]["reviewedPurchases"], false);
    assert_eq!(
        unpaid.json::<Value>().await.expect("json")["extensions"]["agentripe"]["reviewedPurchases"],
        false
    );
    let (_, agent) = get(&server, &format!("/agents/{}", market.agent_id)).await;
    assert_eq!(agent["reviewedPurchases"], false);
    server.purchase(&market, &json!({ "task_detail": "no review" })).await;
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_after_expiry_is_refused() {
    for engine in [agentripe_store::testing::Engine::Sqlite, agentripe_store::testing::Engine::Postgres] {
        let Some(market) = Market::with_deposit_timeout(engine, "work_after_expiry", 4).await else {
            continue;
        };
        let mut config = market.config();
        // The reconciler would refund the expired deposits at once; this test looks at the vendor's side.
        config.reconcile_interval = std::time::Duration::from_secs(3600);
        let server = market.start_with(config).await;
        let (_, unstarted) = server.purchase(&market, &json!({})).await;
        let (_, started) = server.purchase(&market, &json!({})).await;
        assert_eq!(server.vendor(&market, "start", &started, json!({})).await.0, 200);
        let listed = server
            .http
            .get(format!("{}/vendor/tasks?status=all", server.base))
            .headers(vendor_headers(&market.vendor, market.agent_id, now()))
            .send()
            .await
            .expect("list")
            .json::<Value>()
            .await
            .expect("json");
        assert!(
            listed["tasks"][0]["expiresAt"].is_string(),
            "vendors see when the money stops waiting: {listed}"
        );

        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        let (status, answer) = server.vendor(&market, "start", &unstarted, json!({})).await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("expired")), "{answer}");
        let (status, answer) =
            server.vendor(&market, "complete", &started, json!({ "result": "late" })).await;
        assert_eq!((status, answer["error"].as_str()), (409, Some("expired")), "{answer}");
        assert!(
            answer["message"].as_str().is_some_and(|m| m.contains("expired at")),
            "names the expiry: {answer}"
        );
        assert_eq!(market.deposit(started.parse().expect("hash")).await.status, 1, "no release after expiry");
    }
}

on_both_engines!(reputation_cannot_be_farmed_by_buying_from_oneself, |market| async move {
    // The vendor buys its own service, unreviewed, and so does a key it approved for all its agents:
    // released, paid, and no platform feedback for either.
    let server = market.start().await;
    let operator_of_vendor = key(&market.anvil, 6);
    let as_vendor = alloy::providers::ProviderBuilder::new()
        .wallet(market.vendor.clone())
        .connect_http(market.anvil.endpoint_url());
    agentripe_chain::bindings::IdentityRegistry::new(market.deployment.identity_registry, &as_vendor)
        .setApprovalForAll(operator_of_vendor.address(), true)
        .send()
        .await
        .expect("approve")
        .watch()
        .await
        .expect("mined");
    let mut tasks = Vec::new();
    for buyer in [market.vendor.clone(), operator_of_vendor] {
        market.mint(buyer.address(), PRICE).await;
        let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), "").await;
        assert_eq!(response.status(), 200);
        let task =
            response.json::<Value>().await.expect("json")["taskId"].as_str().expect("taskId").to_owned();
        server.vendor(&market, "start", &task, json!({})).await;
        let (_, done) = server.vendor(&market, "complete", &task, json!({ "result": "self-serve" })).await;
        assert_eq!(done["escrowAction"], "released");
        tasks.push(task);
    }
    let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
    for _ in 0..100 {
        if store.tasks_awaiting_feedback(10).await.expect("awaiting").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(store.tasks_awaiting_feedback(10).await.expect("awaiting").is_empty(), "feedback decided");
    let reputation = agentripe_chain::bindings::ReputationRegistry::new(
        market.deployment.reputation_registry,
        &market.provider,
    );
    let posted =
        reputation.getLastIndex(market.agent_id, market.operator.address()).call().await.expect("index");
    assert_eq!(posted, 0, "no +1 for buying from oneself");
});

on_both_engines!(dust_prices_are_refused_at_registration_and_at_purchase, |market| async move {
    let server = market.start().await;
    let dust = r#"{"name":"Dust","services":[{"name":"x402","endpoint":"/","catalog":[{"path":"dust","price":"$0.000001","type":"async","description":"d"}]}]}"#;
    let registrant = key(&market.anvil, 6);
    let response = server
        .http
        .post(format!("{}/agents/register", server.base))
        .headers(agentripe_server::vendor_auth::signed_headers(&registrant, None, now()).expect("sign"))
        .json(&json!({ "data": serde_json::from_str::<Value>(dust).expect("json") }))
        .send()
        .await
        .expect("register");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("json");
    let message = answer["message"].as_str().expect("message");
    assert!(
        message.contains("price") && message.contains("$0.01"),
        "names the price and the minimum: {message}"
    );

    // Registered on chain directly, it is still not for sale here.
    use base64::Engine as _;
    let uri =
        format!("data:application/json;base64,{}", base64::engine::general_purpose::STANDARD.encode(dust));
    let agent = market.register_agent(&uri).await;
    let (status, answer) = get(&server, &format!("/{agent}/dust")).await;
    assert_eq!(status, 404);
    assert!(answer["message"].as_str().is_some_and(|m| m.contains("minimum")), "{answer}");
});
