//! The x402 facilitator API: `POST /verify` and `POST /settle` take a [`FacilitatorRequest`] and
//! answer [`VerifyResponse`] and [`SettleResponse`]; `GET /supported` answers [`SupportedResponse`].
//! [`SettleResponse`] is also what a paid resource sends back in `PAYMENT-RESPONSE`.

use alloy::primitives::Address;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _, ser::SerializeStruct};
use serde_json::Value;

use crate::{ErrorReason, Network, Offer, PaymentPayload, PaymentRequirements, Version, checksum, v2};

/// A payment and the requirements it answers, in the payment's version: the body of `/verify` and
/// `/settle`, and what the server stores to settle a payment later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FacilitatorRequest {
    pub payment_payload: PaymentPayload,
    pub payment_requirements: PaymentRequirements,
}

impl FacilitatorRequest {
    /// The payment with the requirements of `offer` for `resource`, written in the payment's version.
    pub fn new(payment: PaymentPayload, offer: &Offer, resource: &v2::ResourceInfo) -> Self {
        let payment_requirements = payment.version().requirements(offer, resource);
        Self { payment_payload: payment, payment_requirements }
    }
}

impl Serialize for FacilitatorRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = serializer.serialize_struct("FacilitatorRequest", 3)?;
        body.serialize_field("x402Version", &self.payment_payload.version())?;
        body.serialize_field("paymentPayload", &self.payment_payload)?;
        body.serialize_field("paymentRequirements", &self.payment_requirements)?;
        body.end()
    }
}

impl<'de> Deserialize<'de> for FacilitatorRequest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The aliases read what earlier versions of the server stored.
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire {
            #[serde(alias = "x402_version")]
            x402_version: Version,
            #[serde(alias = "payload")]
            payment_payload: PaymentPayload,
            #[serde(alias = "requirements")]
            payment_requirements: Value,
        }
        let wire = Wire::deserialize(deserializer)?;
        if wire.payment_payload.version() != wire.x402_version {
            return Err(D::Error::custom("x402Version differs from the payment payload's"));
        }
        let payment_requirements =
            PaymentRequirements::from_value(wire.x402_version, wire.payment_requirements)
                .map_err(D::Error::custom)?;
        Ok(Self { payment_payload: wire.payment_payload, payment_requirements })
    }
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
    pub payer: Option<Address>,
    /// The settlement transaction hash (empty when settlement failed).
    pub transaction: String,
    /// The network, in the caller's protocol version's naming.
    pub network: String,
}

impl SettleResponse {
    /// A successful settlement by `payer` in `transaction`, as a client of `version` reads it.
    pub fn settled(version: Version, network: Network, payer: Address, transaction: String) -> Self {
        Self {
            success: true,
            error_reason: None,
            payer: Some(payer),
            transaction,
            network: version.network_name(network),
        }
    }
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
    pub payer: Option<Address>,
}

/// A facilitator's answer to `GET /supported`: what it settles.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedResponse {
    #[serde(default)]
    pub kinds: Vec<SupportedKind>,
}

/// One (version, scheme, network) a facilitator settles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
}

impl SupportedResponse {
    /// Whether `exact` payments of `version` on `network` are settled (in either naming of the network).
    pub fn supports_exact(&self, version: Version, network: Network) -> bool {
        self.kinds.iter().any(|kind| {
            kind.x402_version == version.number()
                && kind.scheme == "exact"
                && Network::parse(&kind.network) == Some(network)
        })
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{B256, U256};

    use super::*;
    use crate::exact::test_offer as offer;
    use crate::{Authorization, ExactEvmPayload, v1};

    fn v1_payment() -> PaymentPayload {
        PaymentPayload::V1(Box::new(v1::PaymentPayload {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: ExactEvmPayload {
                signature: vec![1; 65].into(),
                authorization: Authorization {
                    from: Address::repeat_byte(1),
                    to: Address::repeat_byte(0xee),
                    value: U256::from(100_000),
                    valid_after: U256::ZERO,
                    valid_before: U256::from(10),
                    nonce: B256::repeat_byte(3),
                },
            },
        }))
    }

    #[test]
    fn a_request_carries_the_requirements_in_the_payments_version() {
        let resource =
            v2::ResourceInfo { url: "https://m/1/a".into(), description: Some("A".into()), mime_type: None };
        let request = FacilitatorRequest::new(v1_payment(), &offer(), &resource);
        let body = serde_json::to_value(&request).expect("serializes");
        assert_eq!(body["x402Version"], 1);
        assert_eq!(body["paymentRequirements"]["maxAmountRequired"], "100000");
        assert_eq!(body["paymentRequirements"]["resource"], "https://m/1/a");
        assert_eq!(serde_json::from_value::<FacilitatorRequest>(body).expect("reads back"), request);
    }

    #[test]
    fn reads_what_earlier_servers_stored() {
        let resource = v2::ResourceInfo { url: "u".into(), description: None, mime_type: None };
        let request = FacilitatorRequest::new(v1_payment(), &offer(), &resource);
        let stored = serde_json::json!({
            "x402_version": 1,
            "payload": serde_json::to_value(&request.payment_payload).expect("payload"),
            "requirements": serde_json::to_value(&request.payment_requirements).expect("requirements"),
        });
        assert_eq!(serde_json::from_value::<FacilitatorRequest>(stored).expect("reads"), request);
    }

    #[test]
    fn refuses_a_version_that_is_not_the_payments() {
        let resource = v2::ResourceInfo { url: "u".into(), description: None, mime_type: None };
        let mut body = serde_json::to_value(FacilitatorRequest::new(v1_payment(), &offer(), &resource))
            .expect("serializes");
        body["x402Version"] = 2.into();
        assert!(serde_json::from_value::<FacilitatorRequest>(body).is_err());
    }

    #[test]
    fn supported_kinds_name_networks_either_way() {
        let supported: SupportedResponse = serde_json::from_value(serde_json::json!({
            "kinds": [
                { "x402Version": 1, "scheme": "exact", "network": "base-sepolia" },
                { "x402Version": 2, "scheme": "exact", "network": "eip155:84532" },
                { "x402Version": 2, "scheme": "upto", "network": "eip155:8453" },
            ],
            "extensions": [],
        }))
        .expect("parses");
        let sepolia = Network::new(84532);
        assert!(supported.supports_exact(Version::V1, sepolia));
        assert!(supported.supports_exact(Version::V2, sepolia));
        assert!(!supported.supports_exact(Version::V2, Network::new(8453)), "upto is not exact");
    }
}
