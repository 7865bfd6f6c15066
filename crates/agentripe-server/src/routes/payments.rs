//! `GET /payments/{payer}/{nonce}`: where a payment is, named by its authorization. A buyer whose
//! purchase answered 503 (or whose connection dropped) follows its payment here instead of signing a
//! new one, which official x402 clients do on every call and which would be a second charge.

use agentripe_store::{Payment, PaymentStatus};
use alloy::primitives::{Address, B256};
use axum::{
    Json,
    extract::{Path, State},
};
use serde_json::{Value, json};

use crate::{
    ApiError, AppState,
    util::{hex, to_i64},
};

/// Where a buyer follows a payment of `payer` with EIP-3009 `nonce` (0x hex, as stored).
pub fn follow_path(payer: &str, nonce: &str) -> String {
    format!("/payments/{payer}/{nonce}")
}

/// What a buyer may know of its payment.
pub fn payment_json(payment: &Payment) -> Value {
    let (status, meaning) = match payment.status {
        PaymentStatus::Verified => {
            ("settling", "being settled; the money may already have moved: never sign it again")
        }
        PaymentStatus::Settled => ("recording", "in the escrow under taskId; the deposit is being recorded"),
        PaymentStatus::Recorded => ("recorded", "recorded: the task exists"),
        PaymentStatus::Failed => ("refused", "refused; nothing was charged"),
    };
    json!({
        "payer": payment.new.payer,
        "nonce": payment.new.nonce,
        "agentId": payment.new.agent_id,
        "servicePath": payment.new.service_path,
        "status": status,
        "message": format!("The payment is {meaning}."),
        "taskId": payment.deposit_id,
        "reason": payment.failure,
        "follow": follow_path(&payment.new.payer, &payment.new.nonce),
    })
}

pub async fn show(
    State(state): State<AppState>,
    Path((payer, nonce)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let unknown = || {
        ApiError::not_found(format!(
            "no payment of {payer} with nonce {nonce} is stored here; one a purchase answered 503 for moments ago may still be being stored: ask again, or resend that same request"
        ))
    };
    // A malformed name is a payment that does not exist, as an agent id that is not a number is.
    let malformed = |what: &str| ApiError::not_found(format!("no payment is named so: {what}"));
    let payer_address: Address =
        payer.parse().map_err(|_| malformed("the payer must be a 0x-prefixed 20-byte address"))?;
    let nonce_word: B256 = nonce
        .parse()
        .map_err(|_| malformed("the nonce must be the authorization's 0x-prefixed 32-byte nonce"))?;
    let deployment = &state.config.deployment;
    let payment = state
        .store
        .payment_by_authorization(
            to_i64(deployment.chain_id),
            &hex(deployment.usdc),
            &hex(payer_address),
            &hex(nonce_word),
        )
        .await?
        .ok_or_else(unknown)?;
    Ok(Json(payment_json(&payment)))
}
