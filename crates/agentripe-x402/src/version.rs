//! The two protocol versions, and everything that differs between them but the wire types: which
//! headers carry the payment and the settlement, how networks are named, how requirements are written.

use serde::{Deserialize, Serialize};

use crate::{Network, Offer, PaymentRequirements, headers, v1, v2};

/// An x402 protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Version {
    /// Requirements in the 402 JSON body, payment in `X-PAYMENT`, networks by short name.
    V1,
    /// Requirements in `PAYMENT-REQUIRED`, payment in `PAYMENT-SIGNATURE`, CAIP-2 networks.
    V2,
}

impl Version {
    /// Both, newest first: the order in which a request's headers are read.
    pub const ALL: [Self; 2] = [Self::V2, Self::V1];

    /// `x402Version` as the wire writes it.
    pub const fn number(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The request header that carries a client's payment.
    pub const fn payment_header(self) -> &'static str {
        match self {
            Self::V1 => headers::X_PAYMENT,
            Self::V2 => headers::PAYMENT_SIGNATURE,
        }
    }

    /// The response header that carries the settlement.
    pub const fn response_header(self) -> &'static str {
        match self {
            Self::V1 => headers::X_PAYMENT_RESPONSE,
            Self::V2 => headers::PAYMENT_RESPONSE,
        }
    }

    /// How this version names a network.
    pub fn network_name(self, network: Network) -> String {
        match self {
            Self::V1 => network.v1_name(),
            Self::V2 => network.caip2(),
        }
    }

    /// The requirements of an offer for `resource`, as this version writes them.
    pub fn requirements(self, offer: &Offer, resource: &v2::ResourceInfo) -> PaymentRequirements {
        match self {
            Self::V1 => PaymentRequirements::V1(v1::PaymentRequirements::for_offer(
                offer,
                &resource.url,
                resource.description.as_deref().unwrap_or_default(),
            )),
            Self::V2 => PaymentRequirements::V2(v2::PaymentRequirements::for_offer(offer)),
        }
    }
}

impl From<Version> for u8 {
    fn from(version: Version) -> u8 {
        version.number()
    }
}

impl TryFrom<u8> for Version {
    type Error = String;

    fn try_from(number: u8) -> Result<Self, String> {
        match number {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            other => Err(format!("unsupported x402Version {other}")),
        }
    }
}
