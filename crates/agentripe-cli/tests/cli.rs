//! The real `agentripe` binary against a real server on anvil: trust a server, buy through the wallet
//! (and meet its brake), work as a vendor, follow the task and the payment, withdraw.

use agentripe_server::testing::{LlmAnswer, Market, ScriptedLlm};
use agentripe_store::testing::{Engine, fresh_database_url};
use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use serde_json::Value;

fn hex_key(signer: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::primitives::hex::encode(signer.to_bytes()))
}

/// Runs `agentripe --server URL --json ARGS` with `key` in the environment; returns (success, stdout JSON or text).
async fn agentripe(server: &str, key: Option<&PrivateKeySigner>, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe"));
    // No test touches a real ~/.agentripe: a wallet is where a test says (--wallet), or nowhere.
    command
        .args(["--server", server, "--json"])
        .args(args)
        .env_remove("AGENTRIPE_PRIVATE_KEY")
        .env_remove("AGENTRIPE_MCP_TOKEN")
        .env("AGENTRIPE_WALLET", std::env::temp_dir().join("agentripe-cli-no-wallet"));
    if let Some(key) = key {
        command.env("AGENTRIPE_PRIVATE_KEY", hex_key(key));
    }
    let output = command.output().await.expect("the binary runs");
    let text = if output.status.success() { output.stdout } else { output.stderr };
    (output.status.success(), String::from_utf8_lossy(&text).trim().to_owned())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_and_a_vendor_trade_through_the_cli() {
    let market = Market::new(Engine::Sqlite, "cli").await.expect("SQLite needs no set-up");
    let llm = ScriptedLlm::start(vec![
        LlmAnswer::verdict(false, "Not Japanese"),
        LlmAnswer::verdict(true, "Accurate"),
    ])
    .await;
    let mut config = market.config();
    config.reviewer = Some(llm.reviewer());
    let server = market.start_with(config).await;
    let base = server.base.as_str();
    let agent = market.agent_id.to_string();

    // Discovery.
    let mut listed = Value::Null;
    for _ in 0..50 {
        let (ok, out) = agentripe(base, None, &["agents", "--query", "translate"]).await;
        assert!(ok, "{out}");
        listed = json(&out);
        if listed["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listed["agents"][0]["agentId"], agent);

    // A person trusts the server's terms once (checked on the chain); the wallet then pays only them.
    let wallet_dir = std::env::temp_dir().join(format!("agentripe-cli-wallet-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&wallet_dir);
    let wallet = wallet_dir.to_str().expect("path");
    let rpc = market.anvil.endpoint();
    let (ok, out) =
        agentripe(base, None, &["--wallet", wallet, "wallet", "init", "--rpc-url", &rpc, "--yes"]).await;
    assert!(ok, "{out}");
    assert_eq!(json(&out)["escrow"], market.deployment.agentripe.to_checksum(None));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(wallet_dir.join("policy.toml")).expect("policy").permissions().mode();
        assert_eq!(mode & 0o777, 0o444, "the policy is written read-only");
    }

    // The buyer pays over x402 from the 402 answer, through the wallet: a first payment to an agent
    // pauses signing until a person resumes it.
    let buyer = market.buyer(1_000_000).await;
    let buy = [
        "--wallet",
        wallet,
        "buy",
        &agent,
        "translate",
        "--detail",
        "Translate 'hello'",
        "--review",
        "Accurate Japanese",
    ];
    let (ok, out) = agentripe(base, Some(&buyer), &buy).await;
    assert!(!ok && out.contains("new_agent_brake"), "{out}");
    assert_eq!(market.usdc_balance(buyer.address()).await, U256::from(1_000_000), "nothing paid");
    let (ok, out) = agentripe(base, None, &["--wallet", wallet, "wallet", "show"]).await;
    assert!(ok, "{out}");
    assert_eq!(json(&out)["paused"]["rule"], "new_agent_brake");
    let (ok, out) = agentripe(base, None, &["--wallet", wallet, "wallet", "resume"]).await;
    assert!(ok && json(&out)["resumed"] == true, "{out}");
    let (ok, out) = agentripe(base, Some(&buyer), &buy).await;
    assert!(ok, "{out}");
    let task = json(&out)["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1);

    // The wallet remembers the payment and what it became; the audit log says who decided what.
    let (ok, out) = agentripe(base, None, &["--wallet", wallet, "wallet", "payments"]).await;
    assert!(ok, "{out}");
    let payments = json(&out)["payments"].clone();
    assert_eq!(
        (payments[0]["outcome"].as_str(), payments[0]["taskId"].as_str()),
        (Some("recorded"), Some(task.as_str()))
    );
    let (ok, out) = agentripe(base, None, &["--wallet", wallet, "wallet", "log"]).await;
    assert!(ok, "{out}");
    let kinds: Vec<(String, String)> = json(&out)["events"]
        .as_array()
        .expect("events")
        .iter()
        .rev()
        .map(|event| {
            (event["kind"].as_str().unwrap_or("?").into(), event["rule"].as_str().unwrap_or("?").into())
        })
        .collect();
    let kinds: Vec<(&str, &str)> = kinds.iter().map(|(kind, rule)| (kind.as_str(), rule.as_str())).collect();
    assert_eq!(
        &kinds[..3],
        [("refused", "new_agent_brake"), ("paused", "new_agent_brake"), ("resumed", kinds[2].1)]
    );
    assert_eq!(&kinds[3..], [("signed", "within_policy"), ("outcome", "recorded")]);

    // The vendor's worker: the first output is rejected, the command sees why and does better.
    let worker = r#"if [ -n "$REVIEW_REASON" ]; then echo "こんにちは"; else echo "hello"; fi"#;
    for _ in 0..2 {
        let (ok, out) = agentripe(
            base,
            Some(&market.vendor),
            &["vendor", "work", "--exec", worker, "--once", "--agent", &agent],
        )
        .await;
        assert!(ok, "{out}");
    }
    let requests = llm.requests.lock().expect("lock").clone();
    let deliverables: Vec<String> = requests
        .iter()
        .map(|request| {
            let user: Value = serde_json::from_str(request["messages"][1]["content"].as_str().expect("user"))
                .expect("JSON");
            user["deliverable"].as_str().expect("deliverable").to_owned()
        })
        .collect();
    assert_eq!(deliverables, ["hello", "こんにちは"]);

    // The buyer follows the task to its end.
    let (ok, out) = agentripe(base, Some(&buyer), &["task", &task, "--wait", "--timeout", "30"]).await;
    assert!(ok, "{out}");
    let result = json(&out);
    assert_eq!(
        (result["escrowAction"].as_str(), result["result"].as_str()),
        (Some("released"), Some("こんにちは"))
    );

    // The release paid the vendor already; `withdraw` (key in a file, escrow named by the server) finds
    // nothing left to pull.
    let file = std::env::temp_dir().join(format!("agentripe-cli-key-{}", std::process::id()));
    std::fs::write(&file, hex_key(&market.vendor)).expect("key file");
    let (ok, out) =
        agentripe(base, None, &["--key-file", file.to_str().expect("path"), "withdraw", "--rpc-url", &rpc])
            .await;
    std::fs::remove_file(&file).expect("cleanup");
    assert!(ok, "{out}");
    assert_eq!(json(&out)["withdrawn"], "0");
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(100_000));
    std::fs::remove_dir_all(&wallet_dir).expect("cleanup");
}

#[tokio::test]
async fn errors_are_clear_and_keys_never_come_from_arguments() {
    let (ok, out) = agentripe("http://127.0.0.1:9", None, &["buy", "1", "translate"]).await;
    assert!(!ok);
    assert!(out.contains("AGENTRIPE_PRIVATE_KEY"), "{out}");
    let (ok, out) =
        agentripe("http://127.0.0.1:9", Some(&PrivateKeySigner::random()), &["task", "0x12"]).await;
    assert!(!ok);
    assert!(out.contains("server unreachable"), "{out}");
    let (ok, out) =
        agentripe("http://127.0.0.1:9", None, &["buy", "1", "translate", "--private-key", "0x1"]).await;
    assert!(!ok, "there is no --private-key option: {out}");

    // Signed payments never travel in the clear to another machine; an MCP endpoint always needs a token.
    let (ok, out) = agentripe("http://203.0.113.7:3000", None, &["agents"]).await;
    assert!(!ok && out.contains("plain http"), "{out}");
    let (ok, out) =
        agentripe("http://127.0.0.1:9", Some(&PrivateKeySigner::random()), &["mcp", "--http", "127.0.0.1:0"])
            .await;
    assert!(!ok && out.contains("AGENTRIPE_MCP_TOKEN"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_register_through_the_cli() {
    let market = Market::new(Engine::Sqlite, "cli_admin").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    let rpc = market.anvil.endpoint();
    let deployer = agentripe_server::testing::key(&market.anvil, 7);

    // A second escrow next to the market's, reusing its registries and token.
    let out = std::env::temp_dir().join(format!("agentripe-cli-deployment-{}.json", std::process::id()));
    let usdc = market.deployment.usdc.to_string();
    let identity = market.deployment.identity_registry.to_string();
    let reputation = market.deployment.reputation_registry.to_string();
    let (ok, text) = agentripe(
        &server.base,
        Some(&deployer),
        &[
            "deploy",
            "--rpc-url",
            &rpc,
            "--usdc",
            &usdc,
            "--identity-registry",
            &identity,
            "--reputation-registry",
            &reputation,
            "--deposit-timeout",
            "3600",
            "--out",
            out.to_str().expect("path"),
        ],
    )
    .await;
    assert!(ok, "{text}");
    let deployment = agentripe_chain::Deployment::load(&out).expect("the server can read what deploy wrote");
    std::fs::remove_file(&out).expect("cleanup");
    assert_eq!(
        (deployment.usdc, deployment.identity_registry, deployment.usdc_is_test_token),
        (market.deployment.usdc, market.deployment.identity_registry, false)
    );
    assert_eq!(deployment.operator, deployer.address());
    let escrow = agentripe_chain::bindings::Agentripe::new(deployment.agentripe, &market.provider);
    assert_eq!(escrow.depositTimeout().call().await.expect("deployed"), U256::from(3600));
    assert_eq!(escrow.token().call().await.expect("deployed"), market.deployment.usdc);

    // The market's agent is older than this escrow; a server on the new deployment lists it all the same.
    assert_eq!(deployment.start_block, 0, "a reused registry is indexed from its start");
    let mut config = market.config();
    config.deployment = deployment;
    config.operator_key = deployer.clone();
    config.database_url =
        fresh_database_url(Engine::Sqlite, "cli_admin_index").await.expect("SQLite needs no set-up");
    let second = market.start_with(config).await;
    let agents = second.agents_eventually(1).await;
    assert_eq!(agents["agents"][0]["agentId"], market.agent_id.to_string(), "{agents}");

    // A vendor registers through the server with a file.
    let vendor = agentripe_server::testing::key(&market.anvil, 6);
    let file = std::env::temp_dir().join(format!("agentripe-cli-agent-{}.json", std::process::id()));
    std::fs::write(&file, r#"{"name":"Summarizer","services":[{"name":"x402","endpoint":"/","catalog":[{"path":"summarize","price":"$0.25","type":"async","description":"Summarize"}]}]}"#).expect("file");
    let (ok, text) =
        agentripe(&server.base, Some(&vendor), &["register", file.to_str().expect("path")]).await;
    std::fs::remove_file(&file).expect("cleanup");
    assert!(ok, "{text}");
    let agent = U256::from(json(&text)["agentId"].as_u64().expect("agentId"));
    let identity = agentripe_chain::bindings::IdentityRegistry::new(
        market.deployment.identity_registry,
        &market.provider,
    );
    assert_eq!(identity.ownerOf(agent).call().await.expect("owner"), vendor.address());

    // Agentripe's registration body, {"data": ...}, is accepted as well.
    std::fs::write(&file, r#"{"data":{"name":"Second","services":[{"name":"x402","endpoint":"/","catalog":[{"path":"echo","price":"$0.10","type":"async","description":"Echo"}]}]}}"#).expect("file");
    let (ok, text) =
        agentripe(&server.base, Some(&vendor), &["register", file.to_str().expect("path")]).await;
    std::fs::remove_file(&file).expect("cleanup");
    assert!(ok, "{text}");
    let second = json(&text)["agentId"].to_string();
    let mut shown = Value::Null;
    for _ in 0..100 {
        let (ok, text) = agentripe(&server.base, None, &["agent", &second]).await;
        if ok {
            shown = json(&text);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(shown["data"]["name"], "Second", "the data inside {{\"data\": ...}} is the agent's: {shown}");

    let (ok, text) = agentripe(&server.base, Some(&vendor), &["register", "/nonexistent.json"]).await;
    assert!(!ok && text.contains("/nonexistent.json"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdc_sent_to_the_escrow_without_a_deposit_is_reported_and_given_back() {
    use agentripe_server::testing::PRICE;

    let market = Market::new(Engine::Sqlite, "cli_unrecorded").await.expect("SQLite needs no set-up");
    let server = market.start().await;
    // A stranger transfers USDC straight into the escrow: no payment, no deposit.
    let stranger = market.buyer(PRICE).await;
    let receipt = market.transfer_to_escrow(&stranger, PRICE).await;
    let unrecorded = async || -> Value { server.get_json("/health").await["escrow"]["unrecorded"].clone() };
    let expected = Value::String(PRICE.to_string());
    let mut reported = Value::Null;
    for _ in 0..100 {
        reported = unrecorded().await;
        if reported == expected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reported, expected, "reported on /health");

    // The operator gives it back with the server's own configuration.
    let deployment = std::env::temp_dir().join(format!("agentripe-unrecorded-{}.json", std::process::id()));
    std::fs::write(&deployment, serde_json::to_string(&market.deployment).expect("json"))
        .expect("deployment file");
    let refund = async || {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe"))
            .args(["--json", "refund-unrecorded", &format!("{:#x}", receipt.transaction_hash)])
            .env("DEPLOYMENTS_FILE", &deployment)
            .env("RPC_URL", market.anvil.endpoint())
            .env("OPERATOR_PRIVATE_KEY", hex_key(&market.operator))
            .env("DATABASE_URL", &market.database_url)
            .output()
            .await
            .expect("the binary runs");
        let text = if output.status.success() { output.stdout } else { output.stderr };
        (output.status.success(), String::from_utf8_lossy(&text).trim().to_owned())
    };
    let (ok, text) = refund().await;
    assert!(ok, "{text}");
    assert_eq!(json(&text)["sender"], stranger.address().to_checksum(None));
    assert_eq!(market.usdc_balance(stranger.address()).await, U256::from(PRICE), "its sender has it back");
    let (ok, text) = refund().await;
    assert!(!ok && text.contains("already given back"), "once: {text}");
    std::fs::remove_file(&deployment).expect("cleanup");
    for _ in 0..100 {
        if unrecorded().await == "0" {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the escrow still reports unrecorded money: {}", unrecorded().await);
}
