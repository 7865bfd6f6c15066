//! `GET /agents/{id}`: catalog, owner, payout address, the platform's feedback and task outcomes.

use agentripe_server::{
    on_both_engines,
    testing::{LlmAnswer, ScriptedLlm},
};
use serde_json::{Value, json};

on_both_engines!(an_agents_record_shows_what_a_buyer_should_know, |market| async move {
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Accurate")]).await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;

    let (_, paid) = server.purchase(&market, &json!({ "reviewer_request": "accurate" })).await;
    server.vendor(&market, "start", &paid, json!({})).await;
    let (status, _) = server.vendor(&market, "complete", &paid, json!({ "result": "こんにちは" })).await;
    assert_eq!(status, 200);
    let (_, failed) = server.purchase(&market, &json!({})).await;
    let (status, _) = server.vendor(&market, "fail", &failed, json!({ "errorMessage": "cannot" })).await;
    assert_eq!(status, 200);

    let mut record = Value::Null;
    for _ in 0..100 {
        record = server
            .http
            .get(format!("{}/agents/{}", server.base, market.agent_id))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if record["reputation"]["count"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(record["agentId"], market.agent_id.to_string());
    assert_eq!(record["owner"], market.vendor.address().to_checksum(None));
    assert_eq!(record["payoutAddress"], market.vendor.address().to_checksum(None));
    assert_eq!(record["data"]["name"], "Translator");
    assert_eq!(record["data"]["services"][0]["catalog"][0]["path"], "translate");
    assert_eq!(record["tasks"], json!({ "completed": 1, "refunded": 1 }));
    assert_eq!(record["reputation"]["count"], 2, "{record}");
    assert_eq!(record["reputation"]["summaryValue"], "0", "one +1 and one -1");

    for unknown in ["999", "abc"] {
        let response =
            server.http.get(format!("{}/agents/{unknown}", server.base)).send().await.expect("get");
        assert_eq!(response.status(), 404, "{unknown}");
    }
});
