use serde::{Deserialize, Serialize};

/// Why a payment was refused, as the x402 strings that clients and facilitators exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The payer's token balance does not cover the payment.
    #[error("insufficient_funds")]
    InsufficientFunds,
    /// `validAfter` is still in the future.
    #[error("invalid_exact_evm_payload_authorization_valid_after")]
    InvalidExactEvmPayloadAuthorizationValidAfter,
    /// `validBefore` has passed, is too close to settle in time, or is further ahead than `maxTimeoutSeconds`.
    #[error("invalid_exact_evm_payload_authorization_valid_before")]
    InvalidExactEvmPayloadAuthorizationValidBefore,
    /// The authorized value is not exactly the price.
    #[error("invalid_exact_evm_payload_authorization_value")]
    InvalidExactEvmPayloadAuthorizationValue,
    /// The EIP-3009 nonce was already used or cancelled on chain.
    #[error("invalid_exact_evm_payload_authorization_nonce_used")]
    InvalidExactEvmPayloadAuthorizationNonceUsed,
    /// The signature is not the payer's over this authorization and token.
    #[error("invalid_exact_evm_payload_signature")]
    InvalidExactEvmPayloadSignature,
    /// The authorization pays someone other than `payTo`.
    #[error("invalid_exact_evm_payload_recipient_mismatch")]
    InvalidExactEvmPayloadRecipientMismatch,
    /// The network is not the one offered.
    #[error("invalid_network")]
    InvalidNetwork,
    /// The payment could not be decoded.
    #[error("invalid_payload")]
    InvalidPayload,
    /// The accepted requirements are not the ones offered.
    #[error("invalid_payment_requirements")]
    InvalidPaymentRequirements,
    /// The scheme is not `exact`.
    #[error("invalid_scheme")]
    InvalidScheme,
    /// The facilitator does not support the scheme.
    #[error("unsupported_scheme")]
    UnsupportedScheme,
    /// The protocol version is neither 1 nor 2.
    #[error("invalid_x402_version")]
    InvalidX402Version,
    /// The settlement would revert or did.
    #[error("invalid_transaction_state")]
    InvalidTransactionState,
    /// Verification failed for an unexpected reason (e.g. the chain was unreachable).
    #[error("unexpected_verify_error")]
    UnexpectedVerifyError,
    /// Settlement failed for an unexpected reason.
    #[error("unexpected_settle_error")]
    UnexpectedSettleError,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_the_x402_strings() {
        for (reason, text) in [
            (ErrorReason::InsufficientFunds, "insufficient_funds"),
            (ErrorReason::InvalidExactEvmPayloadSignature, "invalid_exact_evm_payload_signature"),
            (
                ErrorReason::InvalidExactEvmPayloadAuthorizationNonceUsed,
                "invalid_exact_evm_payload_authorization_nonce_used",
            ),
            (ErrorReason::InvalidX402Version, "invalid_x402_version"),
        ] {
            assert_eq!(serde_json::to_value(reason).expect("serializes"), text);
            assert_eq!(reason.to_string(), text);
            assert_eq!(serde_json::from_value::<ErrorReason>(text.into()).expect("parses"), reason);
        }
    }
}
