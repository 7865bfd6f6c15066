//! The paying side: what a client needs to pay a server's 402 answer with an `exact` payment, the one
//! signing path of the CLI, the wallet, the test harness and the load generators.

use alloy::{
    primitives::{Address, B256, U256},
    signers::{Signer, SignerSync},
};

use crate::{Authorization, ExactEvmPayload, Network, Offer, amount::parse_amount, v2};

/// Why a 402 answer cannot be paid.
#[derive(Debug, thiserror::Error)]
pub enum PayError {
    /// The requirements are not an `exact` EVM payment this client understands.
    #[error("unusable payment requirements: {0}")]
    Requirements(String),
    /// The key could not sign.
    #[error("cannot sign the payment: {0}")]
    Sign(#[from] alloy::signers::Error),
}

impl Offer {
    /// The terms a server's v2 requirements ask to be paid on (to be checked against what the payer
    /// trusts before signing).
    pub fn from_requirements(accepted: &v2::PaymentRequirements) -> Result<Self, PayError> {
        let bad = |what: String| PayError::Requirements(what);
        if accepted.scheme != "exact" {
            return Err(bad(format!("scheme {:?} is not exact", accepted.scheme)));
        }
        let network = Network::parse(&accepted.network)
            .ok_or_else(|| bad(format!("unknown network {}", accepted.network)))?;
        let amount =
            parse_amount(&accepted.amount).ok_or_else(|| bad(format!("amount {:?}", accepted.amount)))?;
        let extra = accepted.extra.as_ref();
        let domain_field = |field: &str| {
            extra
                .and_then(|extra| extra.get(field))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(format!("extra.{field} (the token's EIP-712 domain) is missing")))
        };
        Ok(Self {
            network,
            asset: accepted.asset,
            pay_to: accepted.pay_to,
            amount,
            max_timeout_seconds: accepted.max_timeout_seconds,
            token_name: domain_field("name")?,
            token_version: domain_field("version")?,
        })
    }
}

impl Authorization {
    /// A fresh authorization (random nonce) for `payer` to pay exactly `offer`, valid from now until
    /// `now + valid_for` seconds.
    pub fn for_offer(payer: Address, offer: &Offer, now: u64, valid_for: u64) -> Self {
        Self {
            from: payer,
            to: offer.pay_to,
            value: offer.amount,
            valid_after: U256::ZERO,
            valid_before: U256::from(now.saturating_add(valid_for)),
            nonce: B256::random(),
        }
    }
}

impl ExactEvmPayload {
    /// Signs `authorization` under the offer's token domain.
    pub fn sign(
        signer: &impl SignerSync,
        offer: &Offer,
        authorization: Authorization,
    ) -> Result<Self, alloy::signers::Error> {
        let signature = signer.sign_typed_data_sync(&authorization.message(), &offer.token_domain())?;
        Ok(Self { signature: signature.as_bytes().to_vec().into(), authorization })
    }
}

impl v2::PaymentPayload {
    /// A v2 payment of `payload` accepting `accepted`.
    pub fn new(
        accepted: v2::PaymentRequirements,
        resource: Option<v2::ResourceInfo>,
        payload: ExactEvmPayload,
    ) -> Self {
        Self { x402_version: 2, resource, accepted, payload, extensions: None }
    }
}

/// Signs a payment of exactly what `accepted` asks, by `signer`, valid for as long as the server
/// allows: the payment to send in `PAYMENT-SIGNATURE`. Callers decide first whether to pay at all.
pub fn pay(
    signer: &(impl SignerSync + Signer),
    accepted: &v2::PaymentRequirements,
    resource: Option<v2::ResourceInfo>,
    now: u64,
) -> Result<v2::PaymentPayload, PayError> {
    let offer = Offer::from_requirements(accepted)?;
    let authorization = Authorization::for_offer(signer.address(), &offer, now, offer.max_timeout_seconds);
    let payload = ExactEvmPayload::sign(signer, &offer, authorization)?;
    Ok(v2::PaymentPayload::new(accepted.clone(), resource, payload))
}

#[cfg(test)]
mod tests {
    use alloy::signers::local::PrivateKeySigner;

    use super::*;
    use crate::PaymentPayload;
    use crate::exact::test_offer as offer;

    const NOW: u64 = 1_700_000_000;

    #[test]
    fn a_payment_of_what_the_server_asks_verifies() {
        let buyer = PrivateKeySigner::random();
        let accepted = v2::PaymentRequirements::for_offer(&offer());
        assert_eq!(Offer::from_requirements(&accepted).expect("usable"), offer());
        let payment = pay(&buyer, &accepted, None, NOW).expect("signs");
        let verified = PaymentPayload::V2(Box::new(payment.clone())).verify(&offer(), NOW).expect("valid");
        assert_eq!(verified.payer, buyer.address());
        assert_eq!(payment.payload.authorization.valid_before, U256::from(NOW + 300));

        let again = pay(&buyer, &accepted, None, NOW).expect("signs");
        assert_ne!(again.payload.authorization.nonce, payment.payload.authorization.nonce, "fresh nonces");
    }

    #[test]
    fn refuses_requirements_it_cannot_pay() {
        let good = v2::PaymentRequirements::for_offer(&offer());
        let cases = [
            v2::PaymentRequirements { scheme: "upto".into(), ..good.clone() },
            v2::PaymentRequirements { network: "solana".into(), ..good.clone() },
            v2::PaymentRequirements { amount: "1.5".into(), ..good.clone() },
            v2::PaymentRequirements { extra: None, ..good.clone() },
        ];
        for bad in cases {
            assert!(matches!(Offer::from_requirements(&bad), Err(PayError::Requirements(_))), "{bad:?}");
        }
    }
}
