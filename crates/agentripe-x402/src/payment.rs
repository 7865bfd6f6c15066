//! A payment in either protocol version, dispatched on its `x402Version` in one place: reading it from
//! a request's headers, verifying it, storing it, and sending it to a facilitator.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::Value;

use crate::{
    ErrorReason, ExactEvmPayload, Offer, VerifiedPayment, Version, codec::decode_header, v1, v2, verify,
};

/// A payment as received from a client, in either protocol version. Serialized as the wire writes it
/// (both carry `x402Version`); deserialized by that field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentPayload {
    /// From an `X-PAYMENT` header.
    V1(Box<v1::PaymentPayload>),
    /// From a `PAYMENT-SIGNATURE` header.
    V2(Box<v2::PaymentPayload>),
}

impl PaymentPayload {
    /// The protocol version the client spoke, which the answer must use too.
    pub fn version(&self) -> Version {
        match self {
            Self::V1(_) => Version::V1,
            Self::V2(_) => Version::V2,
        }
    }

    /// The signed EIP-3009 authorization.
    pub fn exact(&self) -> &ExactEvmPayload {
        match self {
            Self::V1(payload) => &payload.payload,
            Self::V2(payload) => &payload.payload,
        }
    }

    /// The payment a request carries: `PAYMENT-SIGNATURE` (v2), else `X-PAYMENT` (v1); `None` when it
    /// carries neither. A header that cannot be read is refused with the x402 reason.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Result<Self, ErrorReason>> {
        Version::ALL.into_iter().find_map(|version| {
            let header = headers.get(version.payment_header())?;
            Some(
                header
                    .to_str()
                    .map_err(|_| ErrorReason::InvalidPayload)
                    .and_then(|text| Self::decode(version, text)),
            )
        })
    }

    /// Reads a payment header of `version`. A payload of another version in it is refused as
    /// `invalid_x402_version`, one that is not a payment as `invalid_payload`.
    pub fn decode(version: Version, header: &str) -> Result<Self, ErrorReason> {
        let value: Value = decode_header(header).map_err(|_| ErrorReason::InvalidPayload)?;
        match value.get("x402Version").and_then(Value::as_u64) {
            Some(number) if number == u64::from(version.number()) => {}
            Some(_) => return Err(ErrorReason::InvalidX402Version),
            None => return Err(ErrorReason::InvalidPayload),
        }
        serde_json::from_value(value).map_err(|_| ErrorReason::InvalidPayload)
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

impl Serialize for PaymentPayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::V1(payload) => payload.serialize(serializer),
            Self::V2(payload) => payload.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for PaymentPayload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let version = value
            .get("x402Version")
            .and_then(Value::as_u64)
            .ok_or_else(|| D::Error::missing_field("x402Version"))?;
        match u8::try_from(version).map_err(|_| version.to_string()).and_then(Version::try_from) {
            Ok(Version::V1) => serde_json::from_value(value).map(|p| Self::V1(Box::new(p))),
            Ok(Version::V2) => serde_json::from_value(value).map(|p| Self::V2(Box::new(p))),
            Err(error) => return Err(D::Error::custom(error)),
        }
        .map_err(D::Error::custom)
    }
}

/// Payment requirements in either version. They carry no version of their own: whoever reads them
/// knows it (a facilitator request's `x402Version`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PaymentRequirements {
    V1(v1::PaymentRequirements),
    V2(v2::PaymentRequirements),
}

impl PaymentRequirements {
    /// Reads requirements written in `version`.
    pub fn from_value(version: Version, value: Value) -> Result<Self, serde_json::Error> {
        Ok(match version {
            Version::V1 => Self::V1(serde_json::from_value(value)?),
            Version::V2 => Self::V2(serde_json::from_value(value)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use alloy::primitives::{Address, B256, U256};

    use super::*;
    use crate::{Authorization, encode_header};

    fn exact() -> ExactEvmPayload {
        ExactEvmPayload {
            signature: vec![1; 65].into(),
            authorization: Authorization {
                from: Address::repeat_byte(1),
                to: Address::repeat_byte(2),
                value: U256::from(5),
                valid_after: U256::ZERO,
                valid_before: U256::from(10),
                nonce: B256::repeat_byte(3),
            },
        }
    }

    fn v1_payload(version: u8) -> v1::PaymentPayload {
        v1::PaymentPayload {
            x402_version: version,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: exact(),
        }
    }

    #[test]
    fn reads_the_header_of_each_version_and_dispatches_on_x402_version() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(PaymentPayload::from_headers(&headers), None);
        headers.insert("x-payment", encode_header(&v1_payload(1)).parse().expect("header"));
        let read = PaymentPayload::from_headers(&headers).expect("a payment").expect("valid");
        assert_eq!(read.version(), Version::V1);
        assert_eq!(read, PaymentPayload::V1(Box::new(v1_payload(1))));

        // Stored and read back as the wire writes it.
        let stored = serde_json::to_value(&read).expect("serializes");
        assert_eq!(stored["x402Version"], 1);
        assert_eq!(serde_json::from_value::<PaymentPayload>(stored).expect("reads back"), read);
    }

    #[test]
    fn refuses_a_header_that_is_not_its_versions_payment() {
        let v1_in_v2_header = encode_header(&v1_payload(1));
        assert_eq!(
            PaymentPayload::decode(Version::V2, &v1_in_v2_header),
            Err(ErrorReason::InvalidX402Version)
        );
        let version_3 = encode_header(&v1_payload(3));
        assert_eq!(PaymentPayload::decode(Version::V1, &version_3), Err(ErrorReason::InvalidX402Version));
        assert_eq!(PaymentPayload::decode(Version::V1, "not base64!"), Err(ErrorReason::InvalidPayload));
        let no_version = encode_header(&serde_json::json!({ "scheme": "exact" }));
        assert_eq!(PaymentPayload::decode(Version::V1, &no_version), Err(ErrorReason::InvalidPayload));

        let mut headers = http::HeaderMap::new();
        headers.insert("payment-signature", http::HeaderValue::from_bytes(b"\xff").expect("opaque bytes"));
        assert_eq!(PaymentPayload::from_headers(&headers), Some(Err(ErrorReason::InvalidPayload)));
    }

    #[test]
    fn requirements_are_read_in_the_version_given() {
        let offer = crate::exact::test_offer();
        let resource = v2::ResourceInfo { url: "u".into(), description: Some("d".into()), mime_type: None };
        for version in Version::ALL {
            let requirements = version.requirements(&offer, &resource);
            let value = serde_json::to_value(&requirements).expect("serializes");
            assert_eq!(PaymentRequirements::from_value(version, value).expect("reads"), requirements);
        }
    }
}
