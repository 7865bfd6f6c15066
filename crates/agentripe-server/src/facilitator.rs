//! Who submits the buyer's authorization: the server itself (built-in, through its durable chain
//! writer), or a remote x402 facilitator (`POST /settle`). Either way the chain has the last word:
//! the pipeline confirms the USDC `Transfer` into the escrow in the settlement's receipt.

use std::time::Duration;

use agentripe_chain::bindings::TestUSDC;
use agentripe_x402::{
    ErrorReason, ExactEvmPayload, Network, PaymentPayload, SettleResponse, VerifyResponse, v1, v2,
};
use alloy::{
    primitives::{Address, B256},
    rpc::types::TransactionReceipt,
};
use serde_json::json;

use crate::chain_writer::{ChainWriter, WriteError};

/// How settlement is done.
#[derive(Clone, Debug)]
pub enum Facilitator {
    /// The server submits `transferWithAuthorization` with this key.
    BuiltIn(Box<ChainWriter>),
    /// A remote x402 facilitator.
    Remote(RemoteFacilitator),
}

/// The result of one settlement attempt.
#[derive(Debug)]
pub enum Attempt {
    /// Our own settlement transaction was mined (successfully or not: the receipt says).
    Mined(Box<TransactionReceipt>),
    /// A remote facilitator submitted this transaction: confirm it.
    Submitted(B256),
    /// The facilitator refused.
    Refused(ErrorReason),
    /// The outcome is unknown (timeout, network): the chain will tell later.
    Unknown(String),
}

/// A remote facilitator speaking the x402 facilitator API.
#[derive(Clone, Debug)]
pub struct RemoteFacilitator {
    base_url: String,
    http: reqwest::Client,
}

impl RemoteFacilitator {
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder().timeout(timeout).build().expect("a TLS client builds"),
        }
    }

    /// Checks with `GET /supported` that the facilitator settles `exact` payments on `network`, in
    /// both protocol versions we accept.
    pub async fn check_supported(&self, network: Network) -> Result<(), String> {
        let url = format!("{}/supported", self.base_url);
        let supported: serde_json::Value = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| format!("{url}: {error}"))?
            .json()
            .await
            .map_err(|error| format!("{url} answered something that is not JSON: {error}"))?;
        let kinds = supported["kinds"].as_array().cloned().unwrap_or_default();
        let supports = |version: u64| {
            kinds.iter().any(|kind| {
                kind["x402Version"].as_u64() == Some(version)
                    && kind["scheme"] == "exact"
                    && kind["network"].as_str().and_then(Network::parse) == Some(network)
            })
        };
        match (supports(1), supports(2)) {
            (true, true) => Ok(()),
            (v1, v2) => Err(format!(
                "{url} does not settle exact payments on {network} for x402 v1 ({v1}) and v2 ({v2})"
            )),
        }
    }

    fn body(payment: &PaymentPayload, requirements: serde_json::Value) -> serde_json::Value {
        json!({
            "x402Version": payment.version(),
            "paymentPayload": match payment {
                PaymentPayload::V1(payload) => serde_json::to_value(payload),
                PaymentPayload::V2(payload) => serde_json::to_value(payload),
            }.unwrap_or_default(),
            "paymentRequirements": requirements,
        })
    }

    /// `POST /verify` then `POST /settle`: the facilitator's own checks come on top of ours.
    async fn settle(&self, payment: &PaymentPayload, requirements: serde_json::Value) -> Attempt {
        let body = Self::body(payment, requirements);
        let verified = self.http.post(format!("{}/verify", self.base_url)).json(&body).send().await;
        match verified {
            Ok(response) => match response.json::<VerifyResponse>().await {
                Ok(verdict) if verdict.is_valid => {}
                Ok(verdict) => {
                    return Attempt::Refused(
                        verdict.invalid_reason.unwrap_or(ErrorReason::UnexpectedVerifyError),
                    );
                }
                Err(error) => {
                    return Attempt::Unknown(format!(
                        "facilitator /verify answered an unreadable body: {error}"
                    ));
                }
            },
            // Nothing was submitted yet: a retry later is safe.
            Err(error) => return Attempt::Unknown(format!("facilitator unreachable: {error}")),
        }
        let response = match self.http.post(format!("{}/settle", self.base_url)).json(&body).send().await {
            Ok(response) => response,
            Err(error) => return Attempt::Unknown(format!("facilitator unreachable: {error}")),
        };
        let status = response.status();
        match response.json::<SettleResponse>().await {
            Ok(settled) if settled.success => match settled.transaction.parse() {
                Ok(hash) => Attempt::Submitted(hash),
                Err(_) => Attempt::Unknown(format!(
                    "facilitator returned a bad transaction hash {:?}",
                    settled.transaction
                )),
            },
            Ok(settled) => {
                Attempt::Refused(settled.error_reason.unwrap_or(ErrorReason::UnexpectedSettleError))
            }
            Err(error) => {
                Attempt::Unknown(format!("facilitator answered {status} with an unreadable body: {error}"))
            }
        }
    }
}

impl Facilitator {
    /// Submits the payment for settlement. `payment_id` names the attempt in the durable store.
    pub async fn settle(
        &self,
        payment_id: i64,
        payment: &PaymentPayload,
        asset: Address,
        requirements: serde_json::Value,
    ) -> Result<Attempt, WriteError> {
        match self {
            Self::BuiltIn(writer) => {
                let call = settlement_call(payment.exact());
                let input = alloy::sol_types::SolCall::abi_encode(&call).into();
                match writer.send_and_confirm("settle", &payment_id.to_string(), asset, input).await {
                    Ok(receipt) => Ok(Attempt::Mined(Box::new(receipt))),
                    Err(WriteError::WouldRevert(reason)) => {
                        tracing::info!(payment_id, %reason, "settlement simulation reverted");
                        Ok(Attempt::Refused(ErrorReason::InvalidTransactionState))
                    }
                    Err(error) => Err(error),
                }
            }
            Self::Remote(remote) => Ok(remote.settle(payment, requirements).await),
        }
    }
}

/// The token call that settles a payment: `transferWithAuthorization` with its bytes signature.
pub fn settlement_call(exact: &ExactEvmPayload) -> TestUSDC::transferWithAuthorization_0Call {
    let authorization = &exact.authorization;
    TestUSDC::transferWithAuthorization_0Call {
        from: authorization.from,
        to: authorization.to,
        value: authorization.value,
        validAfter: authorization.valid_after,
        validBefore: authorization.valid_before,
        nonce: authorization.nonce,
        signature: exact.signature.clone(),
    }
}

/// The requirements a remote facilitator is asked to settle against, in the payment's own version.
pub fn requirements_for(
    payment: &PaymentPayload,
    v1: &v1::PaymentRequirements,
    v2: &v2::PaymentRequirements,
) -> serde_json::Value {
    match payment {
        PaymentPayload::V1(_) => serde_json::to_value(v1),
        PaymentPayload::V2(_) => serde_json::to_value(v2),
    }
    .unwrap_or_default()
}
