//! The spend policy: what the wallet will pay, to whom, how much, and when a person must decide. It is
//! read from a file the agent cannot change through any of its tools; only a person edits it.

use std::{collections::BTreeSet, path::Path};

use agentripe_server::catalog::{format_price, parse_price};
use alloy::primitives::{Address, U256};
use serde::{Deserialize, Deserializer};

/// USDC's decimals: policy amounts are written as prices, `$0.10`.
pub const DECIMALS: u32 = 6;

/// An amount of USDC, written `$1.50` in the policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Usdc(pub U256);

impl<'de> Deserialize<'de> for Usdc {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_price(&text, DECIMALS).map(Usdc).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Usdc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format_price(self.0, DECIMALS))
    }
}

/// The whole policy. Every section but `trust` and `limits` may be left out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub trust: Trust,
    pub limits: Limits,
    #[serde(default)]
    pub agents: Lists,
    #[serde(default)]
    pub servers: Lists,
    #[serde(default)]
    pub approval: Approval,
    #[serde(default)]
    pub brakes: Brakes,
}

/// The one escrow, chain and token the wallet pays: a 402 answer naming anything else is refused.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trust {
    pub chain_id: u64,
    /// The escrow contract every payment goes to (`payTo`).
    pub escrow: Address,
    /// The token (USDC).
    pub asset: Address,
    /// The token's EIP-712 domain name and version, under which the wallet signs.
    pub token_name: String,
    pub token_version: String,
    /// A JSON-RPC endpoint of that chain: balances, the balance brake, withdrawals.
    pub rpc_url: String,
}

/// Spending limits in USDC; budgets are rolling windows over what the wallet signed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub per_payment: Usdc,
    pub hourly: Usdc,
    pub daily: Usdc,
}

/// An allowlist (when not empty, nothing else passes) and a denylist.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    #[serde(default)]
    pub allow: BTreeSet<String>,
    #[serde(default)]
    pub deny: BTreeSet<String>,
}

impl Lists {
    pub fn admits(&self, name: &str) -> Result<(), ListVerdict> {
        if self.deny.contains(name) {
            Err(ListVerdict::Denied)
        } else if !self.allow.is_empty() && !self.allow.contains(name) {
            Err(ListVerdict::NotAllowed)
        } else {
            Ok(())
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ListVerdict {
    Denied,
    NotAllowed,
}

/// Payments above `above` are queued for a person instead of signed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub above: Option<Usdc>,
    #[serde(default = "Approval::default_expiry")]
    pub expires_after_minutes: u64,
    /// Ask the person through the MCP client (elicitation), when it supports that, instead of only
    /// queueing: only for clients that show the question to a person.
    #[serde(default)]
    pub ask_through_mcp: bool,
}

impl Approval {
    fn default_expiry() -> u64 {
        60
    }
}

impl Default for Approval {
    fn default() -> Self {
        Self { above: None, expires_after_minutes: Self::default_expiry(), ask_through_mcp: false }
    }
}

/// Anomalies that pause all signing until a person resumes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Brakes {
    /// More than `payments` payments within `within_seconds`.
    pub burst: Option<Burst>,
    /// A first payment to an agent this wallet has never paid (and no one has acknowledged).
    #[serde(default = "enabled")]
    pub new_agent: bool,
    /// Within an hour, spending more than this share of the highest balance seen in that hour.
    #[serde(default = "Brakes::default_balance_share")]
    pub balance_share_per_hour: Option<f64>,
}

fn enabled() -> bool {
    true
}

impl Brakes {
    fn default_balance_share() -> Option<f64> {
        Some(0.5)
    }
}

impl Default for Brakes {
    fn default() -> Self {
        Self {
            burst: Some(Burst { payments: 10, within_seconds: 60 }),
            new_agent: true,
            balance_share_per_hour: Self::default_balance_share(),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Burst {
    pub payments: u32,
    pub within_seconds: u64,
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("no spend policy at {0}: a person creates it with `agentripe wallet init`")]
    Missing(String),
    #[error("cannot read the spend policy {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the spend policy {path} is not valid: {error}")]
    Invalid { path: String, error: String },
    #[error(
        "the spend policy {0}, or its directory, is writable by others than its owner: run `chmod 444` on it and `chmod go-w` on its directory (only a person may change the policy)"
    )]
    Writable(String),
}

impl Policy {
    /// Reads and checks the policy at `path`, refusing one that others than its owner could rewrite.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let shown = path.display().to_string();
        let metadata = std::fs::symlink_metadata(path).map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => PolicyError::Missing(shown.clone()),
            _ => PolicyError::Read { path: shown.clone(), error },
        })?;
        if !metadata.is_file() {
            return Err(PolicyError::Invalid {
                path: shown,
                error: "not a regular file (a symlink?)".into(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Neither the file nor its directory (where it could be replaced) may be writable by others.
            let directory = path.parent().map(std::fs::metadata).transpose().ok().flatten();
            let writable = |mode: u32| mode & 0o022 != 0;
            if writable(metadata.permissions().mode())
                || directory.is_some_and(|directory| writable(directory.permissions().mode()))
            {
                return Err(PolicyError::Writable(shown));
            }
        }
        let text = std::fs::read_to_string(path)
            .map_err(|error| PolicyError::Read { path: shown.clone(), error })?;
        Self::parse(&text).map_err(|error| PolicyError::Invalid { path: shown, error })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut policy: Self = toml::from_str(text).map_err(|error| error.to_string())?;
        // Servers are named by origin, as the wallet sees them: "https://x/" and "https://x:443" are "https://x".
        for list in [&mut policy.servers.allow, &mut policy.servers.deny] {
            *list = list
                .iter()
                .map(|entry| {
                    url::Url::parse(entry)
                        .ok()
                        .map(|url| url.origin())
                        .filter(url::Origin::is_tuple)
                        .map(|origin| origin.ascii_serialization())
                        .ok_or_else(|| {
                            format!(
                                "servers: {entry:?} is not a server URL such as \"https://market.example\""
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        let limits = &policy.limits;
        if limits.per_payment > limits.hourly || limits.hourly > limits.daily {
            return Err("limits must satisfy per_payment <= hourly <= daily".into());
        }
        if let Some(share) = policy.brakes.balance_share_per_hour
            && !(share > 0.0 && share <= 1.0)
        {
            return Err("brakes.balance_share_per_hour must be in (0, 1]".into());
        }
        if policy.brakes.burst.is_some_and(|burst| burst.payments == 0 || burst.within_seconds == 0) {
            return Err("brakes.burst needs payments and within_seconds above 0".into());
        }
        Ok(policy)
    }

    /// A policy file for `trust`, with conservative limits and every rule explained: what `agentripe
    /// wallet init` writes once a person has confirmed the terms.
    pub fn template(trust: &Trust) -> String {
        format!(
            r#"# agentripe wallet spend policy. The wallet reads it before every signature; the agent cannot change it
# (no tool writes it, and the wallet refuses it while anyone but its owner may write it). Amounts are USDC.

# What the wallet pays: only this escrow, on this chain, in this token. A 402 answer naming another
# payTo, asset, chain or token domain is refused, whatever the server says.
[trust]
chain_id = {chain_id}
escrow = "{escrow}"
asset = "{asset}"
token_name = "{token_name}"
token_version = "{token_version}"
# The chain's JSON-RPC endpoint: balances, the balance brake, withdrawals.
rpc_url = "{rpc_url}"

# Limits over what the wallet signed: one payment, the last 60 minutes, the last 24 hours.
[limits]
per_payment = "$1.00"
hourly = "$5.00"
daily = "$20.00"

# Agents (ids) and servers (origins such as "https://market.example") the wallet pays. A non-empty
# allow list admits nothing else; deny always wins.
[agents]
allow = []
deny = []

[servers]
allow = []
deny = []

# Payments above this amount are queued, not signed: a person approves them with
# `agentripe approvals approve ID` (once; an approval expires).
[approval]
above = "$0.50"
expires_after_minutes = 60
# Also ask through the MCP client (elicitation) when it supports that. Only for clients that show the
# question to a person: a client that answers by itself (or lets the model answer) approves for the agent.
ask_through_mcp = false

# Anomalies that pause all signing until a person runs `agentripe wallet resume`.
[brakes]
# More than 10 payments within 60 seconds.
burst = {{ payments = 10, within_seconds = 60 }}
# A first payment to an agent the wallet never paid before.
new_agent = true
# Spending more than half of the highest balance seen within the last hour.
balance_share_per_hour = 0.5
"#,
            chain_id = trust.chain_id,
            escrow = trust.escrow,
            asset = trust.asset,
            token_name = trust.token_name,
            token_version = trust.token_version,
            rpc_url = trust.rpc_url,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust() -> Trust {
        Trust {
            chain_id: 84532,
            escrow: Address::repeat_byte(1),
            asset: Address::repeat_byte(2),
            token_name: "USDC".into(),
            token_version: "2".into(),
            rpc_url: "http://127.0.0.1:8545".into(),
        }
    }

    #[test]
    fn the_template_is_a_valid_policy() {
        let policy = Policy::parse(&Policy::template(&trust())).expect("valid");
        assert_eq!(policy.trust.escrow, Address::repeat_byte(1));
        assert_eq!(policy.limits.per_payment, Usdc(U256::from(1_000_000)));
        assert_eq!(policy.approval.above, Some(Usdc(U256::from(500_000))));
        assert!(policy.brakes.new_agent);
        assert_eq!(policy.brakes.burst.map(|burst| burst.payments), Some(10));
    }

    #[test]
    fn refuses_policies_that_do_not_add_up() {
        let template = Policy::template(&trust());
        let cases = [
            template.replace(r#"daily = "$20.00""#, r#"daily = "$2.00""#),
            template.replace(r#"per_payment = "$1.00""#, r#"per_payment = "1 dollar""#),
            template.replace("balance_share_per_hour = 0.5", "balance_share_per_hour = 1.5"),
            template.replace("payments = 10", "payments = 0"),
            template.replace("[agents]", "[agents]\nalow = []"),
            template.replace("[limits]\n", "[limits]\nmonthly = \"$1\"\n"),
        ];
        for case in cases {
            assert!(Policy::parse(&case).is_err(), "{case}");
        }
    }

    #[test]
    fn deny_wins_and_allow_lists_admit_nothing_else() {
        let lists =
            Lists { allow: ["1".to_string(), "2".to_string()].into(), deny: ["2".to_string()].into() };
        assert_eq!(lists.admits("1"), Ok(()));
        assert_eq!(lists.admits("2"), Err(ListVerdict::Denied));
        assert_eq!(lists.admits("3"), Err(ListVerdict::NotAllowed));
        assert_eq!(Lists::default().admits("3"), Ok(()));
    }
}
