//! Buying over x402 and withdrawing: everything a buyer agent needs, with no RPC for buying (the
//! payment is a signature; the server settles it).

use std::time::Duration;

use agentripe_chain::bindings::Agentripe;
use agentripe_server::catalog::format_price;
use agentripe_x402::{Offer, client, decode_header, encode_header, v2};
use alloy::{primitives::Address, providers::ProviderBuilder, signers::local::PrivateKeySigner};
use serde_json::{Map, Value, json};

use crate::client::Client;

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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Asks the price (402), signs exactly that payment, and buys. A 503 (settlement in flight) is retried
/// with the same signed payment, which is never charged twice.
pub async fn buy(
    client: &Client,
    key: &PrivateKeySigner,
    agent: &str,
    path: &str,
    body: &Value,
) -> Result<(), String> {
    let url = format!("{}/{agent}/{path}", client.base);
    let unpaid =
        client.http.post(&url).json(body).send().await.map_err(|e| format!("server unreachable: {e}"))?;
    if unpaid.status() != 402 {
        let (status, answer) = Client::read(unpaid).await?;
        return Err(format!("expected 402 with payment requirements, got {status}: {answer}"));
    }
    let header = unpaid
        .headers()
        .get("payment-required")
        .and_then(|value| value.to_str().ok())
        .ok_or("the server's 402 has no PAYMENT-REQUIRED header")?
        .to_owned();
    let required: v2::PaymentRequired =
        decode_header(&header).map_err(|e| format!("bad PAYMENT-REQUIRED: {e}"))?;
    let accepted =
        required.accepts.into_iter().find(|r| r.scheme == "exact").ok_or("no exact payment offered")?;
    let amount = Offer::from_requirements(&accepted).map_err(|e| e.to_string())?.amount;
    let payment = encode_header(
        &client::pay(key, &accepted, Some(required.resource), now()).map_err(|e| e.to_string())?,
    );
    for _ in 0..10 {
        let response = client
            .http
            .post(&url)
            .header("PAYMENT-SIGNATURE", &payment)
            .json(body)
            .send()
            .await
            .map_err(|e| format!("server unreachable: {e}"))?;
        let status = response.status().as_u16();
        let retry =
            response.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(2);
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            200 => {
                let task = answer["taskId"].as_str().unwrap_or("?");
                client.show(&answer, || {
                    format!("paid {} for {agent}/{path}\ntask {task}", format_price(amount, 6))
                });
                return Ok(());
            }
            503 => tokio::time::sleep(Duration::from_secs(retry)).await,
            402 => return Err(format!("payment refused: {}", answer["error"].as_str().unwrap_or("?"))),
            _ => return Err(format!("{status}: {}", answer["message"].as_str().unwrap_or("?"))),
        }
    }
    Err("the server kept answering 503; the payment is safe to resend later with the same command".into())
}

/// Withdraws this key's credit from the escrow.
pub async fn withdraw(
    client: &Client,
    key: &PrivateKeySigner,
    rpc_url: &str,
    escrow: &str,
) -> Result<(), String> {
    let escrow: Address = escrow.parse().map_err(|_| format!("--escrow {escrow} is not an address"))?;
    let url = rpc_url.parse().map_err(|_| format!("bad RPC URL {rpc_url}"))?;
    let provider = ProviderBuilder::new().wallet(key.clone()).connect_http(url);
    let contract = Agentripe::new(escrow, &provider);
    let credit = contract.withdrawableBalance(key.address()).call().await.map_err(|e| e.to_string())?;
    if credit.is_zero() {
        client.show(&json!({ "withdrawn": "0" }), || format!("{} has nothing to withdraw", key.address()));
        return Ok(());
    }
    let receipt = contract
        .withdraw()
        .send()
        .await
        .map_err(|e| format!("withdraw: {e}"))?
        .get_receipt()
        .await
        .map_err(|e| format!("withdraw: {e}"))?;
    let answer = json!({ "withdrawn": credit.to_string(), "transactionHash": format!("{:#x}", receipt.transaction_hash) });
    client.show(&answer, || {
        format!(
            "withdrew {} to {}\ntransaction {:#x}",
            format_price(credit, 6),
            key.address(),
            receipt.transaction_hash
        )
    });
    Ok(())
}
