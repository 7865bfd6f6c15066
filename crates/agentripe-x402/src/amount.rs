//! x402 numbers: decimal strings, or hex strings with a 0x prefix. One parser for every amount the
//! protocol carries (signed authorizations, requirements), always written back as decimal.

use alloy::primitives::U256;

/// Parses an x402 number: `"10000"` or `"0x2710"`. Nothing else (no sign, no fraction, no spaces).
pub fn parse_amount(text: &str) -> Option<U256> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() => U256::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            U256::from_str_radix(text, 10).ok()
        }
        None => None,
    }
}

/// Serde for a `U256` written as an x402 number.
pub(crate) mod string {
    use alloy::primitives::U256;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &U256, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<U256, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_amount(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a 256-bit decimal or 0x-hex number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_or_hex_and_nothing_else() {
        assert_eq!(parse_amount("10000"), Some(U256::from(10_000)));
        assert_eq!(parse_amount("0x2710"), Some(U256::from(10_000)));
        assert_eq!(parse_amount("0X2710"), Some(U256::from(10_000)));
        assert_eq!(parse_amount(&U256::MAX.to_string()), Some(U256::MAX));
        for bad in ["", "0x", "12a", "-1", "1.5", "0xzz", " 1", "1e3", "+5"] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
        let too_big = format!("{}0", U256::MAX);
        assert_eq!(parse_amount(&too_big), None, "a 257-bit number");
    }
}
