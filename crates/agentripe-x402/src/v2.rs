//! x402 version 2: requirements in the `PAYMENT-REQUIRED` header, payment in `PAYMENT-SIGNATURE`
//! carrying the exact requirements it accepted, CAIP-2 network names.

use alloy::primitives::Address;
use serde::{Deserialize, Serialize};

use crate::{ErrorReason, ExactEvmPayload, Network, Offer, amount::parse_amount};

/// The resource being paid for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// Its URL.
    pub url: String,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The response's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// One way to pay, as v2 describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` here.
    pub scheme: String,
    /// CAIP-2 network (`eip155:84532`).
    pub network: String,
    /// The price in token units.
    pub amount: String,
    /// The token.
    #[serde(with = "crate::checksum")]
    pub asset: Address,
    /// Who is paid: the escrow.
    #[serde(with = "crate::checksum")]
    pub pay_to: Address,
    /// The longest an authorization may stay valid.
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain name and version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// The decoded `PAYMENT-REQUIRED` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequired {
    /// Always 2.
    pub x402_version: u8,
    /// Why payment is (still) required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What is being paid for.
    pub resource: ResourceInfo,
    /// The ways to pay.
    pub accepts: Vec<PaymentRequirements>,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
}

/// The decoded `PAYMENT-SIGNATURE` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// Must be 2.
    pub x402_version: u8,
    /// What the client believes it pays for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    /// The requirements the client accepted; must be the offer's.
    pub accepted: PaymentRequirements,
    /// The signed authorization.
    pub payload: ExactEvmPayload,
    /// Protocol extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Value>,
}

impl PaymentRequirements {
    /// The v2 requirements for an offer.
    pub fn for_offer(offer: &Offer) -> Self {
        Self {
            scheme: "exact".into(),
            network: offer.network.caip2(),
            amount: offer.amount.to_string(),
            asset: offer.asset,
            pay_to: offer.pay_to,
            max_timeout_seconds: offer.max_timeout_seconds,
            extra: Some(offer.extra()),
        }
    }
}

impl PaymentRequired {
    /// A `PAYMENT-REQUIRED` offering `requirements` for `resource`, saying why payment is (still) required.
    pub fn new(resource: ResourceInfo, requirements: PaymentRequirements, error: &str) -> Self {
        Self {
            x402_version: 2,
            error: Some(error.into()),
            resource,
            accepts: vec![requirements],
            extensions: None,
        }
    }
}

impl PaymentPayload {
    /// Whether this payment accepted exactly what was offered. The terms inside the signed
    /// authorization are checked by [`crate::verify`].
    pub fn check_against(&self, offer: &Offer) -> Result<(), ErrorReason> {
        if self.x402_version != 2 {
            return Err(ErrorReason::InvalidX402Version);
        }
        let accepted = &self.accepted;
        if accepted.scheme != "exact" {
            return Err(ErrorReason::UnsupportedScheme);
        }
        if Network::parse(&accepted.network) != Some(offer.network) {
            return Err(ErrorReason::InvalidNetwork);
        }
        let same_terms = parse_amount(&accepted.amount) == Some(offer.amount)
            && accepted.asset == offer.asset
            && accepted.pay_to == offer.pay_to
            && accepted.max_timeout_seconds == offer.max_timeout_seconds
            && accepted.extra.as_ref() == Some(&offer.extra());
        if !same_terms {
            return Err(ErrorReason::InvalidPaymentRequirements);
        }
        Ok(())
    }
}
