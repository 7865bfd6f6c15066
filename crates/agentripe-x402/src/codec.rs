use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use serde::{Serialize, de::DeserializeOwned};

/// Why a header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The header is not base64.
    #[error("the header is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded bytes are not the expected JSON.
    #[error("the header is not a valid x402 JSON object: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes a value as an x402 header: standard base64 of its JSON.
pub fn encode_header(value: &impl Serialize) -> String {
    STANDARD.encode(serde_json::to_vec(value).expect("x402 types always serialize"))
}

/// Decodes an x402 header. Standard base64 is the norm; URL-safe unpadded base64 is accepted too,
/// since some clients produce it.
pub fn decode_header<T: DeserializeOwned>(header: &str) -> Result<T, DecodeError> {
    let header = header.trim();
    let bytes = STANDARD.decode(header).or_else(|error| URL_SAFE_NO_PAD.decode(header).map_err(|_| error))?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SettleResponse, VerifyResponse};

    #[test]
    fn round_trips() {
        let response = SettleResponse {
            success: true,
            error_reason: None,
            payer: None,
            transaction: "0xabc".into(),
            network: "eip155:84532".into(),
        };
        let header = encode_header(&response);
        assert_eq!(decode_header::<SettleResponse>(&header).expect("decodes"), response);
    }

    #[test]
    fn accepts_url_safe_base64() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"isValid":true}"#);
        assert!(decode_header::<VerifyResponse>(&header).expect("decodes").is_valid);
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(matches!(decode_header::<VerifyResponse>("not base64 !"), Err(DecodeError::Base64(_))));
        let not_json = STANDARD.encode(b"hello");
        assert!(matches!(decode_header::<VerifyResponse>(&not_json), Err(DecodeError::Json(_))));
    }
}
