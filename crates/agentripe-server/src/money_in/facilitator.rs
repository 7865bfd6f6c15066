//! Who submits the buyer's authorization: the server itself (built-in, through its durable chain
//! writer), or a remote x402 facilitator (`POST /verify`, then `POST /settle`). Either way the chain
//! has the last word: settlement confirms the token `Transfer` into the escrow in the receipt.

use std::time::Duration;

use agentripe_chain::bindings::IERC3009;
use agentripe_store::PaymentLease;
use agentripe_x402::{
    ErrorReason, ExactEvmPayload, FacilitatorRequest, Network, SettleResponse, SupportedResponse,
    VerifyResponse, Version,
};
use alloy::{
    primitives::{Address, B256},
    rpc::types::TransactionReceipt,
    sol_types::SolCall,
};

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

impl Facilitator {
    /// Our own signing key, when we settle ourselves: its in-flight attempts can be resumed.
    pub fn writer(&self) -> Option<&ChainWriter> {
        match self {
            Self::BuiltIn(writer) => Some(writer),
            Self::Remote(_) => None,
        }
    }

    /// Asks a remote facilitator whether it would settle the payment (`POST /verify`): `None` if it would,
    /// or if we settle ourselves (our simulation is the check), else the attempt's end. Nothing is
    /// submitted, so an ask that fails here leaves no settlement behind.
    pub async fn verify(&self, request: &FacilitatorRequest) -> Option<Attempt> {
        match self {
            Self::BuiltIn(_) => None,
            Self::Remote(remote) => remote.verify(request).await,
        }
    }

    /// Submits the payment for settlement. Our own is signed only while `lease`, the payment's, holds
    /// ([`StoreError::Overtaken`](agentripe_store::StoreError::Overtaken) otherwise), and stored under
    /// the payment's id.
    pub async fn settle(
        &self,
        lease: PaymentLease<'_>,
        request: &FacilitatorRequest,
        asset: Address,
    ) -> Result<Attempt, WriteError> {
        match self {
            Self::BuiltIn(writer) => {
                let input = settlement_call(request.payment_payload.exact()).abi_encode().into();
                let payment_id = lease.payment;
                match writer.send_and_confirm_leased("settle", lease, asset, input).await {
                    Ok(receipt) => Ok(Attempt::Mined(Box::new(receipt))),
                    Err(WriteError::WouldRevert(reason)) => {
                        tracing::info!(payment_id, %reason, "settlement simulation reverted");
                        Ok(Attempt::Refused(ErrorReason::InvalidTransactionState))
                    }
                    Err(error) => Err(error),
                }
            }
            Self::Remote(remote) => Ok(remote.settle(request).await),
        }
    }
}

/// The token call that settles a payment: `transferWithAuthorization` with its bytes signature (v
/// written as the token reads it).
pub fn settlement_call(exact: &ExactEvmPayload) -> IERC3009::transferWithAuthorization_0Call {
    let authorization = &exact.authorization;
    IERC3009::transferWithAuthorization_0Call {
        from: authorization.from,
        to: authorization.to,
        value: authorization.value,
        validAfter: authorization.valid_after,
        validBefore: authorization.valid_before,
        nonce: authorization.nonce,
        signature: exact.signature_for_chain(),
    }
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
        let supported: SupportedResponse = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| format!("{url}: {error}"))?
            .json()
            .await
            .map_err(|error| {
                format!("{url} answered something that is not a list of supported kinds: {error}")
            })?;
        let missing: Vec<String> = Version::ALL
            .into_iter()
            .filter(|version| !supported.supports_exact(*version, network))
            .map(|version| format!("x402 v{}", version.number()))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{url} does not settle exact payments on {network} for {}", missing.join(" and ")))
        }
    }

    /// `POST /verify`: `None` if the facilitator would settle the payment, else its refusal or why it could
    /// not be asked. Its own checks come on top of ours; nothing is submitted yet.
    async fn verify(&self, request: &FacilitatorRequest) -> Option<Attempt> {
        let response = match self.http.post(format!("{}/verify", self.base_url)).json(request).send().await {
            Ok(response) => response,
            Err(error) => return Some(Attempt::Unknown(format!("facilitator unreachable: {error}"))),
        };
        match response.json::<VerifyResponse>().await {
            Ok(verdict) if verdict.is_valid => None,
            Ok(verdict) => {
                Some(Attempt::Refused(verdict.invalid_reason.unwrap_or(ErrorReason::UnexpectedVerifyError)))
            }
            Err(error) => {
                Some(Attempt::Unknown(format!("facilitator /verify answered an unreadable body: {error}")))
            }
        }
    }

    /// `POST /settle`, once `/verify` let the payment through.
    async fn settle(&self, request: &FacilitatorRequest) -> Attempt {
        let response = match self.http.post(format!("{}/settle", self.base_url)).json(request).send().await {
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
            // A refusal that names a transaction (its receipt wait timed out, or it reverted) is not
            // final: that transaction may still be mined, and its receipt says.
            Ok(settled) => match settled.transaction.parse() {
                Ok(hash) => Attempt::Submitted(hash),
                Err(_) => {
                    Attempt::Refused(settled.error_reason.unwrap_or(ErrorReason::UnexpectedSettleError))
                }
            },
            Err(error) => {
                Attempt::Unknown(format!("facilitator answered {status} with an unreadable body: {error}"))
            }
        }
    }
}
