//! The served OpenAPI document is the one in the repository, and every operation it documents is
//! routed on a live server (not the fallback, not 405).

use agentripe_server::testing::Market;
use agentripe_store::testing::Engine;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let market = Market::new(Engine::Sqlite, "openapi").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let served: Value = server
        .http
        .get(format!("{}/openapi.json", server.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let file: Value = serde_json::from_str(include_str!("../openapi.json")).expect("JSON");
    assert_eq!(served, file);

    let task = format!("0x{}", "ab".repeat(32));
    for (path, item) in file["paths"].as_object().expect("paths") {
        let concrete = path
            .replace("{agentId}", &market.agent_id.to_string())
            .replace("{servicePath}", "translate")
            .replace("{taskId}", &task);
        for method in ["get", "post"].iter().filter(|method| item.get(**method).is_some()) {
            let request = match *method {
                "get" => server.http.get(format!("{}{concrete}", server.base)),
                _ => server.http.post(format!("{}{concrete}", server.base)).json(&serde_json::json!({})),
            };
            let response = request.send().await.expect("request");
            let status = response.status();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_ne!(status, 405, "{method} {path}");
            assert_ne!(body["message"], "no such endpoint", "{method} {path} is documented but not routed");
        }
    }
}
