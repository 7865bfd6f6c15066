//! The x402 protocol as Agentripe speaks it: the wire types of versions 1 and 2, their base64 header
//! encodings, and verification of `exact`-scheme payments on EVM chains (an EIP-3009
//! `transferWithAuthorization` signed by the buyer).
//!
//! Everything here is pure: no network, no chain. What needs the chain (balance, nonce state,
//! simulation, settlement) is the facilitator's job and lives with it.

mod checksum;
mod codec;
mod error;
pub mod exact;
mod network;
pub mod v1;
pub mod v2;

pub use codec::{DecodeError, decode_header, encode_header};
pub use error::ErrorReason;
pub use exact::{Authorization, ExactEvmPayload, Offer, VerifiedPayment, verify};
pub use network::Network;

use serde::{Deserialize, Serialize};

/// HTTP headers of both protocol versions.
pub mod headers {
    /// v2: the server's requirements (base64 JSON `PaymentRequired`) on a 402.
    pub const PAYMENT_REQUIRED: &str = "payment-required";
    /// v2: the client's payment (base64 JSON `PaymentPayload`).
    pub const PAYMENT_SIGNATURE: &str = "payment-signature";
    /// v2: the settlement result (base64 JSON `SettleResponse`).
    pub const PAYMENT_RESPONSE: &str = "payment-response";
    /// v1: the client's payment (base64 JSON `PaymentPayload`).
    pub const X_PAYMENT: &str = "x-payment";
    /// v1: the settlement result (base64 JSON `SettleResponse`).
    pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
}

/// The result of settling a payment, sent back in `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` and by
/// facilitators from `POST /settle`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether the payment was settled.
    pub success: bool,
    /// Why not, when it was not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<ErrorReason>,
    /// The paying wallet.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "checksum::option")]
    pub payer: Option<alloy::primitives::Address>,
    /// The settlement transaction hash (empty when settlement failed).
    pub transaction: String,
    /// The network, in the caller's protocol version's naming.
    pub network: String,
}

/// A facilitator's answer to `POST /verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment would settle.
    pub is_valid: bool,
    /// Why not, when it would not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<ErrorReason>,
    /// The paying wallet.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "checksum::option")]
    pub payer: Option<alloy::primitives::Address>,
}

/// A payment as received from a client, in either protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentPayload {
    /// From an `X-PAYMENT` header.
    V1(Box<v1::PaymentPayload>),
    /// From a `PAYMENT-SIGNATURE` header.
    V2(Box<v2::PaymentPayload>),
}

impl PaymentPayload {
    /// The protocol version the client spoke, which the answer must use too.
    pub fn version(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) => 2,
        }
    }

    /// The signed EIP-3009 authorization.
    pub fn exact(&self) -> &ExactEvmPayload {
        match self {
            Self::V1(payload) => &payload.payload,
            Self::V2(payload) => &payload.payload,
        }
    }
}

impl PaymentPayload {
    /// Reads a payment from its header: `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
    pub fn from_header(version: u8, header: &str) -> Result<Self, DecodeError> {
        Ok(if version == 1 {
            Self::V1(Box::new(decode_header(header)?))
        } else {
            Self::V2(Box::new(decode_header(header)?))
        })
    }

    /// Verifies the payment against the offer at UNIX time `now`, everything the chain is not needed
    /// for: the accepted requirements, then the signed terms and signature.
    pub fn verify(&self, offer: &Offer, now: u64) -> Result<VerifiedPayment, ErrorReason> {
        match self {
            Self::V1(payload) => payload.check_against(offer)?,
            Self::V2(payload) => payload.check_against(offer)?,
        }
        verify(self.exact(), offer, now)
    }
}
