//! `agentripe mcp` with a standard MCP client (rmcp's): a buyer agent over stdio buys from a vendor on
//! anvil through the real server, the vendor agent over Streamable HTTP completes the task with its
//! tools, the buyer sees the money released, and the wallet's refusal reaches the model as a tool
//! result.

use std::process::Stdio;

use agentripe_agent::Policy;
use agentripe_server::testing::{LlmAnswer, Market, ScriptedLlm};
use agentripe_store::testing::Engine;
use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use rmcp::{
    ServiceExt,
    model::{CallToolRequestParams, CallToolResult},
    service::{RoleClient, RunningService},
    transport::{
        ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

type Client = RunningService<RoleClient, ()>;

fn hex_key(signer: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::primitives::hex::encode(signer.to_bytes()))
}

async fn call(client: &Client, tool: &str, arguments: Value) -> CallToolResult {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: {error}"))
}

fn content(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(Value::Null)
}

/// A wallet that trusts the test market: $0.10 a payment and an hour, no new-agent brake.
fn wallet_for(market: &Market, dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let trust = agentripe_agent::policy::Trust {
        chain_id: market.deployment.chain_id,
        escrow: market.deployment.agentripe,
        asset: market.deployment.usdc,
        token_name: "USDC".into(),
        token_version: "2".into(),
        rpc_url: market.anvil.endpoint(),
    };
    let policy = Policy::template(&trust)
        .replace(r#"per_payment = "$1.00""#, r#"per_payment = "$0.10""#)
        .replace(r#"hourly = "$5.00""#, r#"hourly = "$0.10""#)
        .replace("new_agent = true", "new_agent = false");
    std::fs::create_dir_all(dir).expect("wallet dir");
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).expect("policy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("read-only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_buys_and_a_vendor_sells_through_mcp() {
    let market = Market::new(Engine::Sqlite, "mcp").await.expect("SQLite needs no set-up");
    let llm = ScriptedLlm::start(vec![LlmAnswer::verdict(true, "Accurate")]).await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;
    let base = server.base.clone();
    let agent = market.agent_id.to_string();
    server.agents_eventually(1, std::time::Duration::from_secs(5)).await;

    // The buyer's agent: MCP over stdio, a wallet with a $0.10 hourly budget.
    let buyer = market.buyer(1_000_000).await;
    let wallet = std::env::temp_dir().join(format!("agentripe-mcp-wallet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&wallet);
    wallet_for(&market, &wallet);
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe")).configure(|command| {
            command
                .args(["--server", &base, "--wallet", wallet.to_str().expect("path"), "mcp"])
                .env("AGENTRIPE_PRIVATE_KEY", hex_key(&buyer));
        }),
    )
    .expect("spawns");
    let buyer_agent: Client = ().serve(transport).await.expect("an MCP session over stdio");

    let tools = buyer_agent.list_all_tools().await.expect("tools");
    let names: Vec<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    for expected in [
        "search_services",
        "show_agent",
        "buy_service",
        "get_task",
        "balances",
        "withdraw",
        "list_payments",
        "vendor_list_tasks",
        "vendor_start_task",
        "vendor_complete_task",
        "vendor_fail_task",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    let buy = tools.iter().find(|tool| tool.name == "buy_service").expect("buy_service");
    let hints = buy.annotations.as_ref().expect("annotations");
    assert_eq!((hints.read_only_hint, hints.destructive_hint), (Some(false), Some(true)), "it spends money");
    assert!(buy.description.as_deref().unwrap_or_default().contains("SPENDS USDC"));
    assert!(buy.input_schema.get("properties").and_then(|p| p.get("reviewer_request")).is_some());
    let search = tools.iter().find(|tool| tool.name == "search_services").expect("search");
    assert_eq!(search.annotations.as_ref().and_then(|hints| hints.read_only_hint), Some(true));

    // Discovery and the purchase.
    let found = call(&buyer_agent, "search_services", json!({ "query": "translate" })).await;
    assert_eq!(content(&found)["agents"][0]["agentId"], agent, "{found:?}");
    let bought = call(
        &buyer_agent,
        "buy_service",
        json!({
            "agent_id": agent,
            "service_path": "translate",
            "task_detail": "Translate 'hello' into Japanese",
            "reviewer_request": "Accurate Japanese",
        }),
    )
    .await;
    assert_ne!(bought.is_error, Some(true), "{bought:?}");
    let task = content(&bought)["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(900_000));

    // The vendor's agent: MCP over Streamable HTTP, behind a bearer token.
    let mut vendor_process = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe"))
        .args(["--server", &base, "mcp", "--http", "127.0.0.1:0", "--agent", &agent])
        .env("AGENTRIPE_PRIVATE_KEY", hex_key(&market.vendor))
        .env("AGENTRIPE_MCP_TOKEN", "vendor-secret")
        .env("AGENTRIPE_WALLET", std::env::temp_dir().join("agentripe-mcp-no-wallet"))
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(vendor_process.stderr.take().expect("stderr")).lines();
    let mut endpoint = String::new();
    while let Some(line) = lines.next_line().await.expect("reads") {
        if let Some(url) = line.strip_prefix("serving MCP on ") {
            endpoint = url.to_owned();
            break;
        }
    }
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let stranger = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(stranger.status(), 401, "no token, no tools");
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(endpoint.as_str()).auth_header("vendor-secret"),
    );
    let vendor_agent: Client = ().serve(transport).await.expect("an MCP session over HTTP");

    let listed = call(&vendor_agent, "vendor_list_tasks", json!({})).await;
    assert_eq!(content(&listed)["tasks"][0]["id"], task, "{listed:?}");
    let started = call(&vendor_agent, "vendor_start_task", json!({ "task_id": task })).await;
    assert_ne!(started.is_error, Some(true), "{started:?}");
    let completed =
        call(&vendor_agent, "vendor_complete_task", json!({ "task_id": task, "result": "こんにちは" })).await;
    assert_eq!(content(&completed)["review"]["approved"], true, "{completed:?}");

    // The buyer follows the task to its end: the money went to the vendor.
    let finished = call(&buyer_agent, "get_task", json!({ "task_id": task, "wait_seconds": 30 })).await;
    let finished = content(&finished);
    assert_eq!(finished["finished"], true, "{finished}");
    assert_eq!(
        (finished["result"]["escrowAction"].as_str(), finished["result"]["result"].as_str()),
        (Some("released"), Some("こんにちは"))
    );

    // The hourly budget is spent: the wallet refuses, and the model hears why, as a tool result.
    let refused =
        call(&buyer_agent, "buy_service", json!({ "agent_id": agent, "service_path": "translate" })).await;
    assert_eq!(refused.is_error, Some(true));
    let refusal = content(&refused);
    assert_eq!(
        (refusal["outcome"].as_str(), refusal["rule"].as_str()),
        (Some("refused"), Some("hourly_budget")),
        "{refusal}"
    );
    assert!(refusal["remedy"].as_str().is_some_and(|remedy| !remedy.is_empty()));
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(900_000), "nothing more was paid");

    let balances = content(&call(&buyer_agent, "balances", json!({})).await);
    assert_eq!(
        (balances["usdc"].as_str(), balances["signedLastHour"].as_str()),
        (Some("900000"), Some("100000")),
        "{balances}"
    );
    let payments = content(&call(&buyer_agent, "list_payments", json!({})).await);
    assert_eq!(payments["payments"][0]["taskId"], task.as_str(), "{payments}");

    // A vendor tool on a server started without --agent says so.
    let off = call(&buyer_agent, "vendor_list_tasks", json!({})).await;
    assert_eq!((off.is_error, content(&off)["error"].as_str()), (Some(true), Some("vendor_tools_off")));

    buyer_agent.cancel().await.expect("closes");
    vendor_agent.cancel().await.expect("closes");
    std::fs::remove_dir_all(&wallet).expect("cleanup");
}
