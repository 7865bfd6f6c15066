//! The x402 protocol as Agentripe speaks it, split the way x402-rs splits it:
//! - the wire types of versions 1 and 2 ([`v1`], [`v2`]) and their base64 header encoding;
//! - one dispatch on `x402Version` ([`Version`], [`PaymentPayload`], [`PaymentRequirements`]), so no
//!   caller matches on versions by hand;
//! - the facilitator API ([`FacilitatorRequest`], [`VerifyResponse`], [`SettleResponse`],
//!   [`SupportedResponse`]);
//! - verification of `exact`-scheme payments on EVM chains (an EIP-3009 `transferWithAuthorization`
//!   signed by the buyer) for the server, and signing them ([`client`]) for buyers.
//!
//! Everything here is pure: no network, no chain. What needs the chain (balance, nonce state,
//! simulation, settlement) is the facilitator's job and lives with it.

mod amount;
mod checksum;
pub mod client;
mod codec;
mod error;
pub mod exact;
mod facilitator;
mod network;
mod payment;
pub mod v1;
pub mod v2;
mod version;

pub use amount::parse_amount;
pub use codec::{DecodeError, decode_header, encode_header};
pub use error::ErrorReason;
pub use exact::{Authorization, ExactEvmPayload, Offer, VerifiedPayment, verify};
pub use facilitator::{FacilitatorRequest, SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
pub use network::Network;
pub use payment::{PaymentPayload, PaymentRequirements};
pub use version::Version;

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
