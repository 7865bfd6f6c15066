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
    ClientHandler, ErrorData, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ElicitRequestParams,
        ElicitResult, ElicitationAction, Implementation,
    },
    service::{RequestContext, RoleClient, RunningService},
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

async fn call<H: ClientHandler>(
    client: &RunningService<RoleClient, H>,
    tool: &str,
    arguments: Value,
) -> CallToolResult {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    client
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments))
        .await
        .unwrap_or_else(|error| panic!("{tool}: {error}"))
}

fn content(result: &CallToolResult) -> Value {
    result.structured_content.clone().unwrap_or(Value::Null)
}

/// A wallet that trusts the test market: $0.10 a payment and an hour, no new-agent brake, approvals
/// above $0.50 (none at this price) unless `edit` changes it.
fn wallet_for(market: &Market, dir: &std::path::Path) {
    wallet_with(market, dir, |policy| policy);
}

fn wallet_with(market: &Market, dir: &std::path::Path, edit: impl FnOnce(String) -> String) {
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
    let policy = edit(policy);
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
    server.agents_eventually(1).await;

    // The buyer's agent: MCP over stdio, a wallet with a $0.10 hourly budget.
    let buyer = market.buyer(1_000_000).await;
    let wallet = std::env::temp_dir().join(format!("agentripe-mcp-wallet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&wallet);
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

    // No policy yet: buying says so; a person writes one, and the running server buys under it.
    let early =
        call(&buyer_agent, "buy_service", json!({ "agent_id": agent, "service_path": "translate" })).await;
    assert_eq!(
        (early.is_error, content(&early)["error"].as_str()),
        (Some(true), Some("no_wallet")),
        "{early:?}"
    );
    wallet_for(&market, &wallet);

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
        .env("AGENTRIPE_MCP_TOKEN", "vendor-secret-0123456789")
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
        StreamableHttpClientTransportConfig::with_uri(endpoint.as_str())
            .auth_header("vendor-secret-0123456789"),
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

/// An MCP client whose person answers every payment question with `approve`, and remembers them.
#[derive(Clone, Debug)]
struct Person {
    approve: bool,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ClientHandler for Person {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_elicitation().build(),
            Implementation::new("a-person-at-a-client", "1"),
        )
    }

    async fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, ErrorData> {
        self.asked.lock().expect("lock").push(format!("{request:?}"));
        Ok(ElicitResult::new(ElicitationAction::Accept).with_content(json!({ "approve": self.approve })))
    }
}

async fn stdio_agent<H: ClientHandler>(
    handler: H,
    base: &str,
    wallet: &std::path::Path,
    key: &PrivateKeySigner,
) -> RunningService<RoleClient, H> {
    let transport = TokioChildProcess::new(
        tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe")).configure(|command| {
            command
                .args(["--server", base, "--wallet", wallet.to_str().expect("path"), "mcp"])
                .env("AGENTRIPE_PRIVATE_KEY", hex_key(key));
        }),
    )
    .expect("spawns");
    handler.serve(transport).await.expect("an MCP session over stdio")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_above_the_threshold_wait_for_a_person_at_the_client_or_the_command_line() {
    let market = Market::new(Engine::Sqlite, "mcp_approval").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let base = server.base.clone();
    let agent = market.agent_id.to_string();
    server.agents_eventually(1).await;
    let buyer = market.buyer(1_000_000).await;
    let wallet = std::env::temp_dir().join(format!("agentripe-mcp-approval-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&wallet);
    wallet_with(&market, &wallet, |policy| {
        policy
            .replace(r#"above = "$0.50""#, r#"above = "$0.05""#)
            .replace("ask_through_mcp = false", "ask_through_mcp = true")
            .replace(r#"hourly = "$0.10""#, r#"hourly = "$1.00""#)
    });
    let buy = json!({ "agent_id": agent, "service_path": "translate", "task_detail": "hello" });

    // A client that shows the question to a person: they say no, then yes; the wallet signs once.
    let refusing = Person { approve: false, asked: Default::default() };
    let client = stdio_agent(refusing.clone(), &base, &wallet, &buyer).await;
    let declined = call(&client, "buy_service", buy.clone()).await;
    assert_eq!(
        (declined.is_error, content(&declined)["outcome"].as_str()),
        (Some(true), Some("queued")),
        "{declined:?}"
    );
    assert_eq!(refusing.asked.lock().expect("lock").len(), 1);
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(1_000_000), "a person said no");
    client.cancel().await.expect("closes");

    let approving = Person { approve: true, asked: Default::default() };
    let client = stdio_agent(approving.clone(), &base, &wallet, &buyer).await;
    let bought = call(&client, "buy_service", buy.clone()).await;
    assert_eq!(content(&bought)["outcome"], "bought", "{bought:?}");
    let asked = approving.asked.lock().expect("lock").clone();
    assert!(asked.len() == 1 && asked[0].contains("translate"), "{asked:?}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(900_000));
    client.cancel().await.expect("closes");

    // A client without elicitation: the payment waits in the queue for `agentripe approvals`.
    let client: Client = stdio_agent((), &base, &wallet, &buyer).await;
    let queued = call(&client, "buy_service", buy.clone()).await;
    let approval = content(&queued)["approvalId"].as_i64().expect("an approval id");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(900_000));
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe"))
        .args([
            "--wallet",
            wallet.to_str().expect("path"),
            "--json",
            "approvals",
            "approve",
            &approval.to_string(),
        ])
        .output()
        .await
        .expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bought = call(&client, "buy_service", buy.clone()).await;
    assert_eq!(content(&bought)["outcome"], "bought", "{bought:?}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(800_000));
    let again = call(&client, "buy_service", buy).await;
    assert_eq!(content(&again)["outcome"], "queued", "an approval signs once: {again:?}");
    client.cancel().await.expect("closes");

    let log = agentripe_agent::Ledger::open(&wallet.join("ledger.sqlite")).await.expect("ledger");
    let decided: Vec<(String, String)> = log
        .events(100)
        .await
        .expect("events")
        .into_iter()
        .filter(|event| matches!(event.kind.as_str(), "approved" | "rejected"))
        .map(|event| (event.kind, event.rule.split(':').next().unwrap_or_default().to_owned()))
        .rev()
        .collect();
    let decided: Vec<(&str, &str)> = decided.iter().map(|(kind, by)| (kind.as_str(), by.as_str())).collect();
    assert_eq!(
        decided,
        [("rejected", "mcp-elicitation"), ("approved", "mcp-elicitation"), ("approved", "cli")]
    );
    std::fs::remove_dir_all(&wallet).expect("cleanup");
}
