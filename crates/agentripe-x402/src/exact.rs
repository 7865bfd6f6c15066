//! The `exact` scheme on EVM: the buyer signs an EIP-3009 `TransferWithAuthorization` for exactly the
//! price, to exactly `payTo`, under the token's EIP-712 domain; anyone may submit it.

use alloy::{
    primitives::{Address, B256, Bytes, Signature, U256},
    sol,
    sol_types::{Eip712Domain, SolStruct},
};
use serde::{Deserialize, Serialize};

use crate::{ErrorReason, Network};

sol! {
    /// The EIP-3009 message the buyer signs.
    #[derive(Debug)]
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }
}

/// How much longer than `maxTimeoutSeconds` an authorization may stay valid: the buyer's clock may run
/// ahead of ours.
pub const CLOCK_SKEW_SECONDS: u64 = 30;

/// The least time left on an authorization for its settlement to be mined before it expires.
pub const MIN_SETTLEMENT_WINDOW_SECONDS: u64 = 6;

/// The parameters of `transferWithAuthorization`, as x402 carries them (numbers as decimal or 0x strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// The payer.
    #[serde(with = "crate::checksum")]
    pub from: Address,
    /// The payee; must be the offer's `payTo`.
    #[serde(with = "crate::checksum")]
    pub to: Address,
    /// Token units; must be exactly the price.
    #[serde(with = "crate::amount::string")]
    pub value: U256,
    /// Not valid at or before this UNIX time.
    #[serde(with = "crate::amount::string")]
    pub valid_after: U256,
    /// Not valid at or after this UNIX time.
    #[serde(with = "crate::amount::string")]
    pub valid_before: U256,
    /// The payer's one-time EIP-3009 nonce.
    pub nonce: B256,
}

impl Authorization {
    /// The EIP-3009 message this authorization is, as signed under the token's EIP-712 domain.
    pub fn message(&self) -> TransferWithAuthorization {
        TransferWithAuthorization {
            from: self.from,
            to: self.to,
            value: self.value,
            validAfter: self.valid_after,
            validBefore: self.valid_before,
            nonce: self.nonce,
        }
    }
}

/// The `payload` of an `exact` EVM payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    /// The 65-byte ECDSA signature over the authorization.
    pub signature: Bytes,
    /// What was signed.
    pub authorization: Authorization,
}

impl ExactEvmPayload {
    /// The signature as the token checks it: 65 bytes with v in {27, 28}. Clients that write v as 0 or
    /// 1 sign validly, but the token would refuse the bytes as they sent them. Unparseable bytes (an
    /// ERC-1271 wallet's signature) are passed on as they are.
    pub fn signature_for_chain(&self) -> Bytes {
        match Signature::try_from(self.signature.as_ref()) {
            Ok(signature) if self.signature.len() == 65 => Bytes::from(signature.as_bytes().to_vec()),
            _ => self.signature.clone(),
        }
    }
}

/// What the server asks for one purchase: the terms every payment is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer {
    /// The chain.
    pub network: Network,
    /// The token (USDC).
    pub asset: Address,
    /// Who is paid: the escrow contract.
    pub pay_to: Address,
    /// The exact price in token units.
    pub amount: U256,
    /// The longest an authorization may stay valid.
    pub max_timeout_seconds: u64,
    /// The token's EIP-712 domain name ("USDC" for USDC on most chains).
    pub token_name: String,
    /// The token's EIP-712 domain version ("2" for USDC).
    pub token_version: String,
}

impl Offer {
    /// The token's EIP-712 domain, under which the buyer signs.
    pub fn token_domain(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.token_name.clone().into()),
            Some(self.token_version.clone().into()),
            Some(U256::from(self.network.chain_id)),
            Some(self.asset),
            None,
        )
    }

    /// `extra` of the payment requirements: what a client needs to build the token's EIP-712 domain.
    pub fn extra(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.token_name, "version": self.token_version })
    }
}

/// A payment whose signature and terms are good; the chain still has a say (balance, nonce, simulation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedPayment {
    /// The payer, proven by the signature.
    pub payer: Address,
    /// The authorization to submit.
    pub authorization: Authorization,
    /// Its signature, normalized to 65 bytes (r, s, v with v in {27, 28}).
    pub signature: Bytes,
}

/// Checks an `exact` EVM payment against the offer at UNIX time `now`, without touching the chain:
/// recipient, exact value, validity window, and the payer's EIP-712 signature. The caller has already
/// checked that the payment's accepted requirements are the offer's.
pub fn verify(payload: &ExactEvmPayload, offer: &Offer, now: u64) -> Result<VerifiedPayment, ErrorReason> {
    let authorization = &payload.authorization;
    if authorization.to != offer.pay_to {
        return Err(ErrorReason::InvalidExactEvmPayloadRecipientMismatch);
    }
    if authorization.value != offer.amount {
        return Err(ErrorReason::InvalidExactEvmPayloadAuthorizationValue);
    }
    // The token takes it only once the block's time is past validAfter: one that is not valid yet
    // would be refused on chain after a round trip, so it is refused here.
    if authorization.valid_after >= U256::from(now) {
        return Err(ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter);
    }
    let earliest_expiry = U256::from(now + MIN_SETTLEMENT_WINDOW_SECONDS);
    let latest_expiry = U256::from(now + offer.max_timeout_seconds + CLOCK_SKEW_SECONDS);
    if authorization.valid_before < earliest_expiry || authorization.valid_before > latest_expiry {
        return Err(ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore);
    }

    let signature = parse_signature(&payload.signature)?;
    let message = authorization.message();
    let digest = message.eip712_signing_hash(&offer.token_domain());
    let signer = signature
        .recover_address_from_prehash(&digest)
        .map_err(|_| ErrorReason::InvalidExactEvmPayloadSignature)?;
    if signer != authorization.from {
        return Err(ErrorReason::InvalidExactEvmPayloadSignature);
    }
    Ok(VerifiedPayment {
        payer: signer,
        authorization: authorization.clone(),
        signature: Bytes::from(signature.as_bytes().to_vec()),
    })
}

/// A 65-byte signature with a low s, as the token's ECDSA check demands: the high-s twin of a valid
/// signature would be refused on chain, so it is refused here.
fn parse_signature(bytes: &[u8]) -> Result<Signature, ErrorReason> {
    let signature = Signature::try_from(bytes).map_err(|_| ErrorReason::InvalidExactEvmPayloadSignature)?;
    if bytes.len() != 65 || signature.normalize_s().is_some() {
        return Err(ErrorReason::InvalidExactEvmPayloadSignature);
    }
    Ok(signature)
}

/// What the unit tests of this crate pay: $0.10 of a token on Base Sepolia, into an escrow.
#[cfg(test)]
pub(crate) fn test_offer() -> Offer {
    Offer {
        network: Network::new(84532),
        asset: Address::repeat_byte(0xaa),
        pay_to: Address::repeat_byte(0xee),
        amount: U256::from(100_000),
        max_timeout_seconds: 300,
        token_name: "USDC".into(),
        token_version: "2".into(),
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::{SignerSync, local::PrivateKeySigner};

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn signed(
        buyer: &PrivateKeySigner,
        offer: &Offer,
        edit: impl FnOnce(&mut Authorization),
    ) -> ExactEvmPayload {
        let mut authorization = Authorization {
            from: buyer.address(),
            to: offer.pay_to,
            value: offer.amount,
            valid_after: U256::from(NOW - 10),
            valid_before: U256::from(NOW + 300),
            nonce: B256::repeat_byte(1),
        };
        edit(&mut authorization);
        let message = authorization.message();
        let signature = buyer.sign_typed_data_sync(&message, &offer.token_domain()).expect("signs");
        ExactEvmPayload { signature: signature.as_bytes().to_vec().into(), authorization }
    }

    #[test]
    fn accepts_a_good_payment() {
        let buyer = PrivateKeySigner::random();
        let payment = verify(&signed(&buyer, &test_offer(), |_| {}), &test_offer(), NOW).expect("valid");
        assert_eq!(payment.payer, buyer.address());
    }

    #[test]
    fn refuses_each_bad_term() {
        let buyer = PrivateKeySigner::random();
        let offer = test_offer();
        type Edit = Box<dyn Fn(&mut Authorization)>;
        let cases: [(&str, Edit, ErrorReason); 6] = [
            (
                "wrong payee",
                Box::new(|a| a.to = Address::repeat_byte(1)),
                ErrorReason::InvalidExactEvmPayloadRecipientMismatch,
            ),
            (
                "underpays",
                Box::new(|a| a.value = U256::from(99_999)),
                ErrorReason::InvalidExactEvmPayloadAuthorizationValue,
            ),
            (
                "overpays",
                Box::new(|a| a.value = U256::from(100_001)),
                ErrorReason::InvalidExactEvmPayloadAuthorizationValue,
            ),
            (
                "not yet valid",
                Box::new(|a| a.valid_after = U256::from(NOW)),
                ErrorReason::InvalidExactEvmPayloadAuthorizationValidAfter,
            ),
            (
                "expires before it can settle",
                Box::new(|a| a.valid_before = U256::from(NOW + 2)),
                ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore,
            ),
            (
                "valid for longer than maxTimeoutSeconds",
                Box::new(|a| a.valid_before = U256::from(NOW + 300 + CLOCK_SKEW_SECONDS + 1)),
                ErrorReason::InvalidExactEvmPayloadAuthorizationValidBefore,
            ),
        ];
        for (name, edit, reason) in cases {
            let payload = signed(&buyer, &offer, |a| edit(a));
            assert_eq!(verify(&payload, &offer, NOW), Err(reason), "{name}");
        }
    }

    #[test]
    fn refuses_bad_signatures() {
        let buyer = PrivateKeySigner::random();
        let offer = test_offer();

        let mut forged = signed(&PrivateKeySigner::random(), &offer, |_| {});
        forged.authorization.from = buyer.address();
        assert_eq!(
            verify(&forged, &offer, NOW),
            Err(ErrorReason::InvalidExactEvmPayloadSignature),
            "other signer"
        );

        let mut tampered = signed(&buyer, &offer, |_| {});
        tampered.authorization.nonce = B256::repeat_byte(2);
        assert_eq!(
            verify(&tampered, &offer, NOW),
            Err(ErrorReason::InvalidExactEvmPayloadSignature),
            "edited after"
        );

        let other_chain = Offer { network: Network::new(8453), ..offer.clone() };
        let cross_chain = signed(&buyer, &other_chain, |_| {});
        assert_eq!(
            verify(&cross_chain, &offer, NOW),
            Err(ErrorReason::InvalidExactEvmPayloadSignature),
            "chain"
        );

        let mut short = signed(&buyer, &offer, |_| {});
        short.signature = short.signature[..64].to_vec().into();
        assert_eq!(
            verify(&short, &offer, NOW),
            Err(ErrorReason::InvalidExactEvmPayloadSignature),
            "64 bytes"
        );
    }

    #[test]
    fn a_signature_with_v_0_or_1_verifies_and_goes_on_chain_as_27_or_28() {
        let buyer = PrivateKeySigner::random();
        let offer = test_offer();
        let mut payload = signed(&buyer, &offer, |_| {});
        let as_signed = payload.signature.clone();
        let mut bytes = as_signed.to_vec();
        bytes[64] -= 27;
        payload.signature = bytes.into();
        assert!(verify(&payload, &offer, NOW).is_ok(), "v = {}", payload.signature[64]);
        assert_eq!(payload.signature_for_chain(), as_signed);
        assert!([27, 28].contains(&payload.signature_for_chain()[64]));
    }

    #[test]
    fn refuses_the_high_s_twin() {
        let buyer = PrivateKeySigner::random();
        let offer = test_offer();
        let mut payload = signed(&buyer, &offer, |_| {});
        let signature = Signature::try_from(payload.signature.as_ref()).expect("65 bytes");
        // secp256k1's order n: (r, n - s, !v) recovers the same key, and tokens refuse it.
        let n = U256::from_str_radix("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
            .expect("n");
        let twin = Signature::new(signature.r(), n - signature.s(), !signature.v());
        payload.signature = twin.as_bytes().to_vec().into();
        assert_eq!(verify(&payload, &offer, NOW), Err(ErrorReason::InvalidExactEvmPayloadSignature));
    }

    #[test]
    fn numbers_parse_as_decimal_or_hex() {
        let json = serde_json::json!({
            "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
            "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
            "value": "0x2710",
            "validAfter": "1740672089",
            "validBefore": "1740672154",
            "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
        });
        let authorization: Authorization = serde_json::from_value(json).expect("parses");
        assert_eq!(authorization.value, U256::from(10_000));
        assert_eq!(serde_json::to_value(&authorization).expect("serializes")["value"], "10000");

        for bad in ["", "12a", "-1", "1.5", "0xzz"] {
            let json = serde_json::json!({
                "from": "0x857b06519E91e3A54538791bDbb0E22373e36b66",
                "to": "0x209693Bc6afc0C5328bA36FaF03C514EF312287C",
                "value": bad, "validAfter": "0", "validBefore": "1",
                "nonce": "0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480"
            });
            assert!(serde_json::from_value::<Authorization>(json).is_err(), "{bad:?} must not parse");
        }
    }
}
