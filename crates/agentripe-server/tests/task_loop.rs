//! The vendor's loop and money out, over real HTTP on the real escrow, with the reviewer a scripted
//! OpenAI-compatible server on loopback; on SQLite and PostgreSQL.

use agentripe_chain::bindings::ReputationRegistry;
use agentripe_server::{
    on_both_engines,
    testing::{LlmAnswer, Market, PRICE, ScriptedLlm, Server, get_as_buyer, now, vendor_headers},
};
use alloy::primitives::{B256, U256};
use serde_json::{Value, json};

async fn reviewed_server(market: &Market, llm: &ScriptedLlm) -> Server {
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    market.start_with(config).await
}

const REVIEWED: &str = "Verify translation accuracy";

fn request() -> Value {
    json!({ "task_detail": "Translate to Japanese", "task_metadata": { "source_lang": "en" }, "reviewer_request": REVIEWED })
}

on_both_engines!(an_approved_result_pays_the_vendor, |market| async move {
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Translation is accurate")]).await;
    let server = reviewed_server(&market, &llm).await;
    let (buyer, task) = server.purchase(&market, &request()).await;

    let listed: Value = server
        .http
        .get(format!("{}/vendor/tasks", server.base))
        .headers(vendor_headers(&market.vendor, market.agent_id, now()))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let tasks = listed["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], task);
    assert_eq!(tasks[0]["status"], "pending");
    assert_eq!(tasks[0]["reviewerRequest"], REVIEWED);

    let (status, started) = server.vendor(&market, "start", &task, json!({})).await;
    assert_eq!((status, started["task"]["status"].as_str()), (200, Some("processing")));
    let (status, done) =
        server.vendor(&market, "complete", &task, json!({ "result": "こんにちは世界" })).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["review"], json!({ "approved": true, "reason": "Translation is accurate" }));
    assert_eq!(done["escrowAction"], "released");
    assert_eq!(done["task"]["status"], "completed");
    assert_eq!(done["task"]["reviewRejectCount"], 0);

    // The reviewer saw the buyer's criteria and the deliverable, as data.
    let sent = llm.requests.lock().expect("lock")[0].clone();
    let user: Value =
        serde_json::from_str(sent["messages"][1]["content"].as_str().expect("user message")).expect("JSON");
    assert_eq!(user["reviewer_request"], REVIEWED);
    assert_eq!(user["deliverable"], "こんにちは世界");
    assert_eq!(sent["response_format"]["type"], "json_schema");

    // The money: released on chain, withdrawable by the vendor, the buyer's result final.
    let deposit: B256 = task.parse().expect("hash");
    assert_eq!(market.deposit(deposit).await.status, 2);
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(PRICE));
    let (status, result) = get_as_buyer(&server, &buyer, &format!("/tasks/{task}/result")).await;
    assert_eq!(status, 200);
    assert_eq!(
        (result["result"].as_str(), result["escrowAction"].as_str()),
        (Some("こんにちは世界"), Some("released"))
    );

    // The verdict is on record, with what produced it, for the buyer and the vendor.
    let detail: Value = server.task(&task).await;
    let review = &detail["task"]["reviews"][0];
    assert_eq!(review["attempt"], 1);
    assert_eq!(review["approved"], true);
    assert_eq!(review["reason"], "Translation is accurate");
    assert_eq!(review["model"], "scripted-reviewer");
    assert_eq!(review["promptVersion"], "review-v1");
    assert_eq!(review["totalTokens"], 120);
    assert!(review["inputHash"].as_str().is_some_and(|hash| hash.len() == 66), "{review}");
    assert!(review["latencyMs"].as_i64().is_some_and(|ms| ms >= 0), "{review}");

    // And the platform's reputation feedback follows: +1, with the deposit as proof of payment.
    let reputation = ReputationRegistry::new(market.deployment.reputation_registry, &market.provider);
    let mut summary = None;
    for _ in 0..100 {
        let found = reputation
            .getSummary(market.agent_id, vec![market.operator.address()], "escrow".into(), "".into())
            .call()
            .await
            .expect("summary");
        if found.count == 1 {
            summary = Some(found);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let summary = summary.expect("feedback posted");
    assert_eq!(summary.summaryValue, 1);
    let feedback =
        reputation.readFeedback(market.agent_id, market.operator.address(), 1).call().await.expect("read");
    assert_eq!(feedback.tag2, "released");
});

on_both_engines!(without_reviewer_request_the_result_is_approved_unreviewed, |market| async move {
    let llm = ScriptedLlm::start(vec![]).await;
    let server = reviewed_server(&market, &llm).await;
    let (_, task) = server.purchase(&market, &json!({ "task_detail": "anything" })).await;
    server.vendor(&market, "start", &task, json!({})).await;
    let (status, done) = server.vendor(&market, "complete", &task, json!({ "result": "done" })).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["escrowAction"], "released");
    assert_eq!(done["review"]["approved"], true);
    assert!(llm.requests.lock().expect("lock").is_empty(), "no review was asked for, none was made");
});

on_both_engines!(a_failed_task_refunds_the_buyer, |market| async move {
    let server = market.start().await;
    let (buyer, task) = server.purchase(&market, &json!({ "task_detail": "Translate to Japanese" })).await;
    let (status, failed) =
        server.vendor(&market, "fail", &task, json!({ "errorMessage": "Unsupported language pair" })).await;
    assert_eq!(status, 200, "{failed}");
    assert_eq!(failed["task"]["status"], "failed");
    assert_eq!(failed["task"]["errorMessage"], "Unsupported language pair");
    assert_eq!(failed["escrowAction"], "refunded");
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 3);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::ZERO);

    let (status, again) = server.vendor(&market, "complete", &task, json!({ "result": "too late" })).await;
    assert_eq!((status, again["error"].as_str()), (409, Some("invalid_state")), "final is final");
});

on_both_engines!(the_fifth_rejection_refunds_and_four_then_approval_pays, |market| async move {
    let rejection = || LlmAnswer::verdict(false, "Not Japanese");
    let llm = ScriptedLlm::start(vec![rejection(), rejection(), rejection(), rejection(), rejection()]).await;
    let server = reviewed_server(&market, &llm).await;
    let (buyer, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    for round in 1..=5 {
        let (status, reply) =
            server.vendor(&market, "complete", &task, json!({ "result": format!("attempt {round}") })).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["review"]["approved"], false);
        assert_eq!(reply["task"]["reviewRejectCount"], round);
        assert_eq!(reply["task"]["status"], "rejected");
        assert_eq!(reply["escrowAction"], if round < 5 { "none" } else { "refunded" }, "round {round}");
    }
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE));

    // Another purchase: four rejections, then the fixed result is approved.
    llm.push([rejection(), rejection(), rejection(), rejection(), LlmAnswer::verdict(true, "Now correct")]);
    let (buyer, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    for round in 1..=4 {
        let (_, reply) =
            server.vendor(&market, "complete", &task, json!({ "result": format!("try {round}") })).await;
        assert_eq!(reply["escrowAction"], "none");
    }
    let (status, reply) = server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        (reply["escrowAction"].as_str(), reply["task"]["reviewRejectCount"].as_i64()),
        (Some("released"), Some(4))
    );
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(PRICE));
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::ZERO);
});

on_both_engines!(a_reviewer_outage_is_never_a_rejection, |market| async move {
    let llm = ScriptedLlm::start(vec![
        LlmAnswer::Status(500),
        LlmAnswer::Status(429),
        LlmAnswer::Says("I think it is fine".into()),
        LlmAnswer::Says(r#"{"approved": true}"#.into()),
        LlmAnswer::Slow(std::time::Duration::from_secs(3), r#"{"approved":true,"reason":"late"}"#.into()),
    ])
    .await;
    let server = reviewed_server(&market, &llm).await;
    let (_, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    for outage in ["500", "429", "not JSON", "missing reason", "too slow"] {
        let response = server
            .http
            .post(format!("{}/vendor/tasks/{task}/complete", server.base))
            .headers(vendor_headers(&market.vendor, market.agent_id, now()))
            .json(&json!({ "result": "こんにちは" }))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 503, "{outage}");
        assert!(response.headers().contains_key("retry-after"), "{outage}");
        let task_now: Value = server.task(&task).await;
        assert_eq!(
            (task_now["task"]["status"].as_str(), task_now["task"]["reviewRejectCount"].as_i64()),
            (Some("processing"), Some(0)),
            "{outage}"
        );
    }
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1, "no money moved");

    llm.push([LlmAnswer::verdict(true, "Accurate")]);
    let (status, reply) = server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
    assert_eq!((status, reply["escrowAction"].as_str()), (200, Some("released")), "{reply}");
});

on_both_engines!(concurrent_completes_give_one_outcome, |market| async move {
    let slow = |approved| {
        LlmAnswer::Slow(
            std::time::Duration::from_millis(500),
            json!({ "approved": approved, "reason": "r" }).to_string(),
        )
    };
    let llm = ScriptedLlm::start(vec![slow(true), slow(false)]).await;
    let server = reviewed_server(&market, &llm).await;
    let (_, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    let (first, second) = tokio::join!(
        server.vendor(&market, "complete", &task, json!({ "result": "a" })),
        server.vendor(&market, "complete", &task, json!({ "result": "b" })),
    );
    let mut statuses = [first.0, second.0];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{first:?} {second:?}");
    let loser = if first.0 == 409 { &first.1 } else { &second.1 };
    assert_eq!(loser["error"], "review_in_progress");
    assert_eq!(llm.requests.lock().expect("lock").len(), 1, "one review");
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 2);
});

on_both_engines!(the_same_submission_is_never_reviewed_twice, |market| async move {
    let llm =
        ScriptedLlm::start(vec![LlmAnswer::verdict(false, "Not Japanese"), LlmAnswer::verdict(true, "Good")])
            .await;
    let server = reviewed_server(&market, &llm).await;
    let (_, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    let (_, first) = server.vendor(&market, "complete", &task, json!({ "result": "hello" })).await;
    assert_eq!(first["task"]["reviewRejectCount"], 1);
    let (status, again) = server.vendor(&market, "complete", &task, json!({ "result": "hello" })).await;
    assert_eq!((status, again["error"].as_str()), (409, Some("already_reviewed")), "{again}");
    assert!(again["message"].as_str().is_some_and(|m| m.contains("Not Japanese")), "{again}");
    assert_eq!(llm.requests.lock().expect("lock").len(), 1, "not sent to the reviewer again");
    let detail: Value = server.task(&task).await;
    assert_eq!(detail["task"]["reviewRejectCount"], 1, "and not counted again");
    let (status, revised) =
        server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
    assert_eq!((status, revised["escrowAction"].as_str()), (200, Some("released")), "{revised}");
    let detail: Value = server.task(&task).await;
    let attempts: Vec<_> = detail["task"]["reviews"]
        .as_array()
        .expect("reviews")
        .iter()
        .map(|r| r["approved"].clone())
        .collect();
    assert_eq!(attempts, vec![json!(false), json!(true)]);
});

on_both_engines!(an_outage_opens_the_circuit_and_recovery_closes_it, |market| async move {
    let llm = ScriptedLlm::start(vec![LlmAnswer::Status(500), LlmAnswer::Status(503)]).await;
    let mut config = market.config();
    let mut reviewer = llm.reviewer();
    reviewer.breaker_threshold = 2;
    reviewer.breaker_cooldown = std::time::Duration::from_secs(1);
    config.reviewer = Some(reviewer);
    let server = market.start_with(config).await;
    let (_, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    for _ in 0..3 {
        let (status, body) =
            server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(llm.requests.lock().expect("lock").len(), 2, "the open circuit spares the endpoint");

    llm.push([LlmAnswer::verdict(true, "Accurate")]);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, done) = server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
    assert_eq!((status, done["escrowAction"].as_str()), (200, Some("released")), "{done}");
    let detail: Value = server.task(&task).await;
    assert_eq!(
        detail["task"]["reviewRejectCount"], 0,
        "no task is rejected or refunded because of an outage"
    );
});

on_both_engines!(text_with_nul_is_refused_before_anything_moves, |market| async move {
    // PostgreSQL cannot store U+0000: it is refused on both engines before any money moves.
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Accurate")]).await;
    let server = reviewed_server(&market, &llm).await;
    let buyer = market.buyer(PRICE).await;
    let body = json!({ "task_detail": "Translate\u{0}", "reviewer_request": REVIEWED }).to_string();
    let response = server.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), &body).await;
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["error"], "bad_field");
    assert!(answer["message"].as_str().expect("message").starts_with("task_detail"), "{answer}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(PRICE), "nothing charged");

    let (_, task) = server.purchase(&market, &request()).await;
    assert_eq!(server.vendor(&market, "start", &task, json!({})).await.0, 200);
    let (status, answer) =
        server.vendor(&market, "complete", &task, json!({ "result": "こんにちは\u{0}" })).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_field")));
    let (status, _) = server.vendor(&market, "fail", &task, json!({ "errorMessage": "\u{0}" })).await;
    assert_eq!(status, 400);
    // Nothing was claimed by the refused submission: a clean one is reviewed at once.
    let (status, answer) = server.vendor(&market, "complete", &task, json!({ "result": "こんにちは" })).await;
    assert_eq!((status, answer["escrowAction"].as_str()), (200, Some("released")), "{answer}");
});

on_both_engines!(
    feedback_is_posted_once_even_when_its_transaction_was_taken_for_dropped,
    |market| async move {
        let server = market.start().await;
        let (_, task) = server.purchase(&market, &json!({})).await;
        server.vendor(&market, "start", &task, json!({})).await;
        let (status, done) = server.vendor(&market, "complete", &task, json!({ "result": "done" })).await;
        assert_eq!((status, done["escrowAction"].as_str()), (200, Some("released")));
        let reputation = ReputationRegistry::new(market.deployment.reputation_registry, &market.provider);
        let feedback_count = async || {
            reputation
                .getLastIndex(market.agent_id, market.operator.address())
                .call()
                .await
                .expect("last index")
        };
        for _ in 0..100 {
            if feedback_count().await == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(feedback_count().await, 1, "feedback posted");
        server.crash();

        // As after a receipt that lagged past our patience: the mined feedback is stored as dropped, and
        // the task as still awaiting feedback. The next life asks the chain before posting again.
        let store = agentripe_store::Store::connect(&market.database_url).await.expect("store");
        agentripe_store::testing::execute(
            &store,
            "UPDATE chain_txs SET status = 'dropped' WHERE purpose = 'feedback'",
        )
        .await;
        agentripe_store::testing::execute(&store, "UPDATE tasks SET feedback_status = 'pending'").await;
        let next = market.start().await;
        for _ in 0..40 {
            if store.tasks_awaiting_feedback(10).await.expect("awaiting").is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(store.tasks_awaiting_feedback(10).await.expect("awaiting").is_empty(), "feedback settled");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(feedback_count().await, 1, "posted once, not twice");
        next.crash();
    }
);

/// `POST /vendor/tasks/{task}/complete` as the market's vendor on `server`, from a task of its own.
fn complete_in_background(
    server: &Server,
    market: &Market,
    task: &str,
    give_up_after: std::time::Duration,
) -> tokio::task::JoinHandle<Result<reqwest::Response, reqwest::Error>> {
    let request = reqwest::Client::builder()
        .timeout(give_up_after)
        .build()
        .expect("client")
        .post(format!("{}/vendor/tasks/{task}/complete", server.base))
        .headers(vendor_headers(&market.vendor, market.agent_id, now()))
        .json(&json!({ "result": "こんにちは世界" }));
    tokio::spawn(request.send())
}

// A server that dies mid-review leaves its task claimed only until the review's lease runs out (the
// claim is renewed while the review runs, so a live review keeps it): the vendor's next submission is
// reviewed then, not ten minutes later.
on_both_engines!(a_review_cut_off_by_a_crash_is_taken_up_once_its_claim_runs_out, |market| async move {
    use std::time::{Duration, Instant};
    let llm = ScriptedLlm::start(vec![
        LlmAnswer::Slow(Duration::from_secs(60), "never heard".into()),
        LlmAnswer::verdict(true, "accurate"),
    ])
    .await;
    let mut config = market.config();
    config.reviewer =
        Some(agentripe_review::ReviewerConfig { timeout: Duration::from_secs(60), ..llm.reviewer() });
    config.review_lease = Duration::from_secs(3);
    let first = market.start_with(config.clone()).await;
    let (_buyer, task) = first.purchase(&market, &request()).await;
    first.vendor(&market, "start", &task, json!({})).await;
    let _cut_off = complete_in_background(&first, &market, &task, Duration::from_secs(120));
    while llm.requests.lock().expect("lock").is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past a lease, the review still running holds its claim.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, busy) = first.vendor(&market, "complete", &task, json!({ "result": "again" })).await;
    assert_eq!(status, 409, "{busy}");
    first.crash();

    let second = market.start_with(config).await;
    let restarted = Instant::now();
    let (status, done) = loop {
        let (status, body) =
            second.vendor(&market, "complete", &task, json!({ "result": "こんにちは世界" })).await;
        if status != 409 || restarted.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["review"], json!({ "approved": true, "reason": "accurate" }));
    assert_eq!(done["task"]["status"], "completed");
});

// A vendor that hangs up while its submission is reviewed leaves no claim behind: the review goes on
// without the request and its verdict is applied.
on_both_engines!(a_review_goes_on_when_its_vendor_hangs_up, |market| async move {
    use std::time::Duration;
    // Within the scripted reviewer's timeout (2 s), well past the vendor's patience.
    let llm = ScriptedLlm::start(vec![LlmAnswer::Slow(
        Duration::from_secs(1),
        json!({ "approved": true, "reason": "accurate" }).to_string(),
    )])
    .await;
    let server = reviewed_server(&market, &llm).await;
    let (_buyer, task) = server.purchase(&market, &request()).await;
    server.vendor(&market, "start", &task, json!({})).await;
    let hung_up = complete_in_background(&server, &market, &task, Duration::from_millis(300));
    assert!(hung_up.await.expect("join").is_err(), "the vendor gave up before the verdict");
    let released = server.escrow_status_eventually(&task, "released").await;
    assert_eq!(released["task"]["status"], "completed", "{released}");
});
