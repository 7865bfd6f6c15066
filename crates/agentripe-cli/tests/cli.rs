//! The real `agentripe` binary against a real server on anvil: buy, work as a vendor, follow the
//! task, withdraw.

use agentripe_server::testing::{LlmAnswer, Market, ScriptedLlm};
use agentripe_store::testing::Engine;
use alloy::{primitives::U256, signers::local::PrivateKeySigner};
use serde_json::Value;

fn hex_key(signer: &PrivateKeySigner) -> String {
    format!("0x{}", alloy::primitives::hex::encode(signer.to_bytes()))
}

/// Runs `agentripe --server URL --json ARGS` with `key` in the environment; returns (success, stdout JSON or text).
async fn agentripe(server: &str, key: Option<&PrivateKeySigner>, args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agentripe"));
    command.args(["--server", server, "--json"]).args(args).env_remove("AGENTRIPE_PRIVATE_KEY");
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

    // The buyer pays over x402 from the 402 answer alone.
    let buyer = market.buyer(100_000).await;
    let (ok, out) = agentripe(
        base,
        Some(&buyer),
        &["buy", &agent, "translate", "--detail", "Translate 'hello'", "--review", "Accurate Japanese"],
    )
    .await;
    assert!(ok, "{out}");
    let task = json(&out)["taskId"].as_str().expect("taskId").to_owned();
    assert_eq!(market.deposit(task.parse().expect("hash")).await.status, 1);

    // The vendor's worker: the first output is rejected, the command sees why and does better.
    let worker = r#"if [ -n "$REVIEW_REASON" ]; then echo "こんにちは"; else echo "hello"; fi"#;
    for _ in 0..2 {
        let (ok, out) = agentripe(
            base,
            Some(&market.vendor),
            &["vendor", "--agent", &agent, "work", "--exec", worker, "--once"],
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
    let (ok, out) = agentripe(base, None, &["task", &task, "--wait", "--timeout", "30"]).await;
    assert!(ok, "{out}");
    let result = json(&out);
    assert_eq!(
        (result["escrowAction"].as_str(), result["result"].as_str()),
        (Some("released"), Some("こんにちは"))
    );

    // The vendor withdraws, with its key in a file this time.
    market.fund_gas(market.vendor.address()).await;
    let file = std::env::temp_dir().join(format!("agentripe-cli-key-{}", std::process::id()));
    std::fs::write(&file, hex_key(&market.vendor)).expect("key file");
    let escrow = market.deployment.agentripe.to_string();
    let rpc = market.anvil.endpoint();
    let (ok, out) = agentripe(
        base,
        None,
        &["--key-file", file.to_str().expect("path"), "withdraw", "--rpc-url", &rpc, "--escrow", &escrow],
    )
    .await;
    std::fs::remove_file(&file).expect("cleanup");
    assert!(ok, "{out}");
    assert_eq!(json(&out)["withdrawn"], "100000");
    assert_eq!(market.usdc_balance(market.vendor.address()).await, U256::from(100_000));
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
}
