use std::fmt;

/// An EVM network, named the v1 way (`base-sepolia`) or the v2 way (CAIP-2, `eip155:84532`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Network {
    /// The EIP-155 chain id.
    pub chain_id: u64,
}

/// The v1 names x402 clients use for the networks they know.
const V1_NAMES: &[(&str, u64)] = &[
    ("base", 8453),
    ("base-sepolia", 84532),
    ("avalanche", 43114),
    ("avalanche-fuji", 43113),
    ("polygon", 137),
    ("polygon-amoy", 80002),
    ("sei", 1329),
    ("sei-testnet", 1328),
    ("iotex", 4689),
];

impl Network {
    /// A network by chain id.
    pub const fn new(chain_id: u64) -> Self {
        Self { chain_id }
    }

    /// The CAIP-2 name, as v2 spells networks.
    pub fn caip2(self) -> String {
        format!("eip155:{}", self.chain_id)
    }

    /// The v1 name: x402's short name where it has one, the CAIP-2 name otherwise (local chains).
    pub fn v1_name(self) -> String {
        V1_NAMES
            .iter()
            .find(|(_, id)| *id == self.chain_id)
            .map_or_else(|| self.caip2(), |(name, _)| (*name).into())
    }

    /// Parses either naming.
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(id) = name.strip_prefix("eip155:") {
            return id.parse().ok().map(Self::new);
        }
        V1_NAMES.iter().find(|(known, _)| *known == name).map(|(_, id)| Self::new(*id))
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.caip2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_both_ways() {
        let sepolia = Network::new(84532);
        assert_eq!(sepolia.caip2(), "eip155:84532");
        assert_eq!(sepolia.v1_name(), "base-sepolia");
        assert_eq!(Network::parse("base-sepolia"), Some(sepolia));
        assert_eq!(Network::parse("eip155:84532"), Some(sepolia));
        assert_eq!(Network::new(31337).v1_name(), "eip155:31337");
        assert_eq!(Network::parse("eip155:not-a-number"), None);
        assert_eq!(Network::parse("solana"), None);
    }
}
