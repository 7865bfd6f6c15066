//! The buyer's commands: buy through the wallet, follow a task, withdraw a refund.

use std::time::Duration;

use agentripe_agent::{Market, Purchased, Wallet, market::MarketError};
use alloy::{primitives::Address, signers::local::PrivateKeySigner};
use serde_json::{Map, Value, json};

use crate::output::{self, Output};

/// The purchase body, Agentripe's fields.
pub fn body(
    detail: Option<String>,
    metadata: Option<String>,
    review: Option<String>,
) -> Result<Value, String> {
    let mut body = Map::new();
    if let Some(detail) = detail {
        body.insert("task_detail".into(), Value::String(detail));
    }
    if let Some(metadata) = metadata {
        let parsed: Value =
            serde_json::from_str(&metadata).map_err(|error| format!("--metadata is not JSON: {error}"))?;
        body.insert("task_metadata".into(), parsed);
    }
    if let Some(review) = review {
        body.insert("reviewer_request".into(), Value::String(review));
    }
    Ok(Value::Object(body))
}

/// Buys through the wallet: the spend policy decides before anything is signed.
pub async fn buy(
    market: &Market,
    out: Output,
    wallet: &Wallet<PrivateKeySigner>,
    agent: &str,
    path: &str,
    body: &Value,
) -> Result<(), String> {
    match market.buy(wallet, agent, path, body).await.map_err(|error| error.to_string())? {
        Purchased::Bought(bought) => {
            let shown = json!({ "outcome": "bought", "taskId": bought.task_id, "amount": bought.amount, "answer": bought.answer });
            out.show(&shown, || {
                format!("paid {} for {agent}/{path}\ntask {}", output::usdc(&bought.amount), bought.task_id)
            });
            Ok(())
        }
        Purchased::Refused(refusal) => Err(format!(
            "the wallet refused to pay ({}): {}\n{}",
            refusal.rule.name(),
            refusal.reason,
            refusal.remedy
        )),
        Purchased::Queued(queued) => Err(format!(
            "not paid: waiting for a person's approval #{} ({}); `agentripe approvals approve {}`, then buy again",
            queued.approval_id, queued.reason, queued.approval_id
        )),
    }
}

/// A task, or with `wait` its result once the escrow has moved.
pub async fn task(
    market: &Market,
    out: Output,
    id: &str,
    wait: Option<u64>,
    key: Option<&PrivateKeySigner>,
) -> Result<(), String> {
    let Some(timeout) = wait else {
        let shown = market.task(id, key).await.map_err(|error| error.to_string())?;
        out.show(&shown, || output::describe(&shown["task"]));
        return Ok(());
    };
    let spinner = ['|', '/', '-', '\\'];
    let mut turn = 0;
    let waited = market
        .wait(id, key, Duration::from_secs(timeout), |status| {
            out.progress(&format!("{} waiting for task {id}: {status}", spinner[turn % 4]));
            turn += 1;
        })
        .await;
    if turn > 0 {
        out.end_progress();
    }
    let (done, result) = waited.map_err(|error| error.to_string())?;
    if !done {
        return Err(format!("task {id} still open after {timeout} s (status {})", result["status"]));
    }
    out.show(&result, || output::outcome(id, &result));
    Ok(())
}

/// Pulls this key's credit from the escrow the server pays into (or the wallet's pinned one).
pub async fn withdraw(
    market: &Market,
    out: Output,
    key: &PrivateKeySigner,
    rpc_url: &str,
    pinned: Option<Address>,
) -> Result<(), String> {
    let escrow = match pinned {
        Some(escrow) => escrow,
        None => market.escrow().await.map_err(|error: MarketError| error.to_string())?.0,
    };
    match agentripe_agent::chain::withdraw(rpc_url, escrow, key).await? {
        None => {
            out.show(&json!({ "withdrawn": "0" }), || format!("{} has nothing to withdraw", key.address()));
        }
        Some((credit, transaction)) => {
            let shown =
                json!({ "withdrawn": credit.to_string(), "transactionHash": format!("{transaction:#x}") });
            out.show(&shown, || {
                format!(
                    "withdrew {} to {}\ntransaction {transaction:#x}",
                    output::usdc(&credit.to_string()),
                    key.address()
                )
            });
        }
    }
    Ok(())
}
