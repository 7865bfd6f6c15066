//! x402 writes addresses EIP-55 checksummed; any case is accepted on input.

use alloy::primitives::Address;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(address: &Address, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&address.to_checksum(None))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Address, D::Error> {
    Address::deserialize(deserializer)
}

/// The same for optional addresses.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(address: &Option<Address>, serializer: S) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => super::serialize(address, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Address>, D::Error> {
        Option::<Address>::deserialize(deserializer)
    }
}
