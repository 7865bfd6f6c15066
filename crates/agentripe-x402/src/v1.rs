//! x402 version 1: requirements in the 402 JSON body, payment in `X-PAYMENT`, network short names.

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::{ErrorReason, ExactEvmPayload, Network, Offer};

/// One way to pay, as v1 describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` here.
    pub scheme: String,
    /// The v1 network name (`base-sepolia`).
    pub network: String,
    /// The price in token units (for `exact`, the exact amount).
    pub max_amount_required: String,
    /// The URL being paid for.
    pub resource: String,
    /// What the purchase is.
    pub description: String,
    /// The response's content type.
    pub mime_type: String,
    /// Who is paid: the escrow.
    #[serde(with = "crate::checksum")]
    pub pay_to: Address,
    /// The longest an authorization may stay valid.
    pub max_timeout_seconds: u64,
    /// The token.
    #[serde(with = "crate::checksum")]
    pub asset: Address,
    /// The token's EIP-712 domain name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// The body of a v1 402 answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 1.
    pub x402_version: u8,
    /// Why payment is (still) required.
    pub error: String,
    /// The ways to pay.
    pub accepts: Vec<PaymentRequirements>,
}

/// The decoded `X-PAYMENT` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Must be 1.
    pub x402_version: u8,
    /// Must be `exact`.
    pub scheme: String,
    /// Must be the offer's network.
    pub network: String,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
}

impl PaymentRequirements {
    /// The v1 requirements for an offer.
    pub fn for_offer(offer: &Offer, resource: &str, description: &str) -> Self {
        Self {
            scheme: "exact".into(),
            network: offer.network.v1_name(),
            max_amount_required: offer.amount.to_string(),
            resource: resource.into(),
            description: description.into(),
            mime_type: "application/json".into(),
            pay_to: offer.pay_to,
            max_timeout_seconds: offer.max_timeout_seconds,
            asset: offer.asset,
            extra: Some(offer.extra()),
        }
    }
}

impl PaymentRequired {
    /// A 402 body offering `requirements`, saying why payment is (still) required.
    pub fn new(requirements: PaymentRequirements, error: &str) -> Self {
        Self { x402_version: 1, error: error.into(), accepts: vec![requirements] }
    }
}

impl PaymentPayload {
    /// Whether this payment answers the offer: version, scheme and network. The terms inside the
    /// signed authorization are checked by [`crate::verify`].
    pub fn check_against(&self, offer: &Offer) -> Result<(), ErrorReason> {
        if self.x402_version != 1 {
            return Err(ErrorReason::InvalidX402Version);
        }
        if self.scheme != "exact" {
            return Err(ErrorReason::UnsupportedScheme);
        }
        if Network::parse(&self.network) != Some(offer.network) {
            return Err(ErrorReason::InvalidNetwork);
        }
        Ok(())
    }
}
