//! `GET /agents/{id}`: catalog, owner, payout address, the platform's feedback and task outcomes.

use agentripe_chain::bindings::ReputationRegistry;
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

    // Counted from the server's records; the platform's feedback is on chain, tagged with the outcome.
    let record = server.get_json(&format!("/agents/{}", market.agent_id)).await;
    assert_eq!(record["agentId"], market.agent_id.to_string());
    assert_eq!(record["owner"], market.vendor.address().to_checksum(None));
    assert_eq!(record["payoutAddress"], market.vendor.address().to_checksum(None));
    assert_eq!(record["data"]["name"], "Translator");
    assert_eq!(record["data"]["services"][0]["catalog"][0]["path"], "translate");
    assert_eq!(
        record["tasks"],
        json!({ "completed": 1, "refunded": 1,
                "outcomes": { "released": 1, "rejected": 0, "failed": 1, "expired": 0 } })
    );
    assert_eq!(record["reputation"]["client"], market.operator.address().to_checksum(None));
    let reputation = ReputationRegistry::new(market.deployment.reputation_registry, &market.provider);
    let mut tags = Vec::new();
    for _ in 0..100 {
        let last =
            reputation.getLastIndex(market.agent_id, market.operator.address()).call().await.expect("index");
        if last == 2 {
            for index in 1..=2 {
                let feedback = reputation
                    .readFeedback(market.agent_id, market.operator.address(), index)
                    .call()
                    .await
                    .expect("read");
                tags.push((feedback.value, feedback.tag1, feedback.tag2));
            }
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tags.sort();
    assert_eq!(
        tags,
        vec![(-1, "escrow".to_owned(), "failed".to_owned()), (1, "escrow".to_owned(), "released".to_owned())],
        "why each deposit ended, tagged"
    );

    for unknown in ["999", "abc"] {
        let response =
            server.http.get(format!("{}/agents/{unknown}", server.base)).send().await.expect("get");
        assert_eq!(response.status(), 404, "{unknown}");
    }
});

on_both_engines!(agents_are_indexed_listed_searched_and_discoverable, |market| async move {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    let server = market.start().await;
    // Registered while the server runs: the index follows the registry's logs.
    let summarizer = r#"{"name":"Summarizer","description":"Short summaries","services":[{"name":"x402","endpoint":"/","catalog":[{"path":"summarize","price":"$0.25","type":"async","description":"Summarize a text"}]}]}"#;
    let second =
        market.register_agent(&format!("data:application/json;base64,{}", STANDARD.encode(summarizer))).await;
    market.register_agent("data:application/json,not-json").await;

    let listed = server.agents_eventually(2).await;
    assert_eq!(listed["total"], 2, "the unreadable registration is not listed: {listed}");
    let ids: Vec<&str> =
        listed["agents"].as_array().expect("agents").iter().filter_map(|a| a["agentId"].as_str()).collect();
    assert_eq!(ids, vec![market.agent_id.to_string(), second.to_string()]);
    assert_eq!(listed["agents"][1]["data"]["name"], "Summarizer");

    let get = |path: String| {
        let http = server.http.clone();
        async move {
            let response = http.get(path).send().await.expect("get");
            (response.status().as_u16(), response.json::<Value>().await.expect("json"))
        }
    };
    let (_, found) = get(format!("{}/agents?q=SUMMAR%20text", server.base)).await;
    assert_eq!(
        (found["total"].as_u64(), found["agents"][0]["agentId"].as_str()),
        (Some(1), Some(second.to_string().as_str()))
    );
    let (_, none) = get(format!("{}/agents?q=weather", server.base)).await;
    assert_eq!(none["total"], 0);
    let (_, inside) = get(format!("{}/agents?q=marizer", server.base)).await;
    assert_eq!(inside["total"], 0, "words are found by their start, as an index finds them");
    let (status, long) = get(format!("{}/agents?q=a%20b%20c%20d%20e%20f%20g%20h%20i", server.base)).await;
    assert_eq!((status, long["error"].as_str()), (400, Some("bad_query")));
    let (_, found) = get(format!("{}/discovery/resources?q=summarize", server.base)).await;
    assert_eq!(found["pagination"]["total"], 1, "discovery searches the same index");
    let (_, page) = get(format!("{}/agents?limit=1&offset=1", server.base)).await;
    assert_eq!((page["agents"].as_array().map(Vec::len), page["total"].as_u64()), (Some(1), Some(2)));
    let (status, bad) = get(format!("{}/agents?limit=0", server.base)).await;
    assert_eq!((status, bad["error"].as_str()), (400, Some("bad_page")));

    let (_, discovery) = get(format!("{}/discovery/resources", server.base)).await;
    assert_eq!(discovery["x402Version"], 2);
    assert_eq!(discovery["pagination"]["total"], 2);
    let items = discovery["items"].as_array().expect("items");
    assert_eq!(items[0]["resource"], format!("{}/{}/translate", server.base, market.agent_id));
    assert_eq!(items[1]["resource"], format!("{}/{second}/summarize", server.base));
    assert_eq!(items[1]["accepts"][0]["amount"], "250000");
    assert_eq!(items[1]["accepts"][0]["payTo"], market.deployment.agentripe.to_checksum(None));
    assert_eq!(items[1]["metadata"]["description"], "Summarize a text");

    // What discovery lists is what the purchase endpoint asks for.
    let (status, required) = get(items[1]["resource"].as_str().expect("url").to_owned()).await;
    assert_eq!(status, 402);
    assert_eq!(required["accepts"][0]["maxAmountRequired"], "250000");
});

on_both_engines!(an_unreachable_or_hanging_agent_does_not_stop_the_index, |market| async move {
    use base64::{Engine as _, engine::general_purpose::STANDARD};
    // A host that accepts connections and never answers, and a port nobody listens on.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hanging_uri = format!("http://{}/agent.json", hanging.local_addr().expect("address"));
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((connection, _)) = hanging.accept().await {
            held.push(connection);
        }
    });
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_uri = format!("http://{}/agent.json", closed.local_addr().expect("address"));
    drop(closed);

    let server = market.start().await;
    market.register_agent(&hanging_uri).await;
    market.register_agent(&closed_uri).await;
    let later = market
        .register_agent(&format!("data:application/json;base64,{}", STANDARD.encode(r#"{"name":"Later"}"#)))
        .await;

    // The hanging fetch times out after 5 s; the pass records both as unreadable and moves on.
    let listed = server.agents_eventually(2).await;
    let ids: Vec<&str> =
        listed["agents"].as_array().expect("agents").iter().filter_map(|a| a["agentId"].as_str()).collect();
    assert_eq!(ids, vec![market.agent_id.to_string(), later.to_string()], "{listed}");
    holder.abort();
});
