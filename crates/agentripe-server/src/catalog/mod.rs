//! What an agent sells: its registration file (ERC-8004 agentURI, Agentripe's AgentURIData), read from
//! the identity registry's `tokenURI` as a `data:` URI or an http(s) URL ([`fetch`]: public addresses
//! only, a hard size cap), and cached briefly, failures included, with concurrent reads of one agent
//! coalesced into one fetch.

mod fetch;

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentripe_chain::bindings::IERC8004Identity;
use alloy::{
    primitives::{Address, U256},
    providers::DynProvider,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use lru::LruCache;
use serde::{Deserialize, Serialize};

/// An agent's registration file (Agentripe's `AgentURIData`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentUriData {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icon_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x402_support: Option<bool>,
    #[serde(default)]
    pub services: Vec<Service>,
}

/// A service block of the registration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    #[serde(default)]
    pub endpoint: String,
    #[serde(default)]
    pub catalog: Vec<CatalogEntry>,
}

/// One thing an agent sells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub path: String,
    /// `$X.XX`.
    pub price: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub description: String,
}

/// An agent, as the purchase endpoint needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub id: U256,
    pub owner: Address,
    pub uri: String,
    pub data: AgentUriData,
}

impl Agent {
    /// The catalog entry sold at `path` through x402.
    pub fn entry(&self, path: &str) -> Option<&CatalogEntry> {
        self.data.x402_entries().find(|entry| entry.path == path)
    }
}

impl AgentUriData {
    /// The catalog entries sold over x402, in order.
    pub fn x402_entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.services
            .iter()
            .filter(|service| service.name.eq_ignore_ascii_case("x402"))
            .flat_map(|service| &service.catalog)
    }

    /// The words a search finds this agent by: of its name, description, services and catalog.
    pub fn words(&self) -> Vec<String> {
        let mut found = words(&self.name);
        found.extend(self.description.as_deref().map(words).unwrap_or_default());
        for service in &self.services {
            found.extend(words(&service.name));
            for entry in &service.catalog {
                for text in [&entry.path, &entry.kind, &entry.description] {
                    found.extend(words(text));
                }
            }
        }
        found.sort();
        found.dedup();
        found.truncate(MAX_WORDS_PER_AGENT);
        found
    }
}

/// How many distinct words of an agent are indexed.
const MAX_WORDS_PER_AGENT: usize = 256;
/// Longer runs of letters are not words anyone searches for.
const MAX_WORD_CHARS: usize = 40;

/// Lowercase runs of letters and digits: how agents are indexed and how queries are read.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty() && word.chars().count() <= MAX_WORD_CHARS)
        .map(str::to_lowercase)
        .collect()
}

/// Why an agent's catalog could not be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CatalogError {
    /// The registry has no such agent.
    #[error("agent {0} is not registered")]
    UnknownAgent(U256),
    /// The registration file is missing or unreadable.
    #[error("agent {agent}'s registration file is unusable: {reason}")]
    BadRegistration { agent: U256, reason: String },
    /// The chain could not be read: our RPC's trouble, not the agent's.
    #[error("cannot read agent {agent} from the identity registry: {reason}")]
    Unavailable { agent: U256, reason: String },
    /// The registration file's host could not be reached or did not finish answering: the agent's trouble.
    #[error("agent {agent}'s registration file cannot be fetched: {reason}")]
    Unreachable { agent: U256, reason: String },
}

/// Reads agents from the identity registry, with a short cache so a burst of purchases reads each once.
#[derive(Debug)]
pub struct Catalog {
    identity: IERC8004Identity::IERC8004IdentityInstance<DynProvider>,
    http: reqwest::Client,
    /// Whether registration files may be fetched from private addresses (local development only).
    allow_private: bool,
    ttl: Duration,
    /// Recent answers, failures included (a stranger's slow or huge URI is fetched once a `ttl`).
    cache: Mutex<LruCache<U256, Answer>>,
    /// One fetch at a time per agent: concurrent readers wait for it and share its answer.
    fetching: Mutex<LruCache<U256, Arc<tokio::sync::Mutex<()>>>>,
}

/// An agent's catalog as last read, and when.
type Answer = (Instant, Result<Agent, CatalogError>);

/// The largest registration file fetched over http(s).
const MAX_REGISTRATION_BYTES: usize = 256 * 1024;
/// How many agents' answers are cached.
const CACHED_AGENTS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

impl Catalog {
    /// A catalog reading `identity_registry`; registration files on private addresses are fetched only
    /// when `allow_private` (local development).
    pub fn new(
        identity_registry: Address,
        provider: DynProvider,
        ttl: Duration,
        allow_private: bool,
    ) -> Self {
        Self {
            identity: IERC8004Identity::new(identity_registry, provider),
            http: fetch::client(allow_private, Duration::from_secs(5)),
            allow_private,
            ttl,
            cache: Mutex::new(LruCache::new(CACHED_AGENTS)),
            fetching: Mutex::new(LruCache::new(CACHED_AGENTS)),
        }
    }

    fn cached(&self, id: U256) -> Option<Result<Agent, CatalogError>> {
        let mut cache = self.cache.lock().expect("catalog cache lock");
        cache.get(&id).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, answer)| answer.clone())
    }

    /// The agent and its catalog, from the cache when fresh.
    pub async fn agent(&self, id: U256) -> Result<Agent, CatalogError> {
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let turn = self.fetching.lock().expect("catalog fetch lock").get_or_insert(id, Arc::default).clone();
        let _fetching = turn.lock().await;
        if let Some(answer) = self.cached(id) {
            return answer;
        }
        let answer = self.fetch(id).await;
        self.cache.lock().expect("catalog cache lock").put(id, (Instant::now(), answer.clone()));
        answer
    }

    /// The agent and its catalog, read anew from the registry (and its registration file).
    pub async fn fetch(&self, id: U256) -> Result<Agent, CatalogError> {
        let owner = match self.identity.ownerOf(id).call().await {
            Ok(owner) => owner,
            Err(error) if error.as_revert_data().is_some() => return Err(CatalogError::UnknownAgent(id)),
            Err(error) => return Err(CatalogError::Unavailable { agent: id, reason: error.to_string() }),
        };
        let uri = match self.identity.tokenURI(id).call().await {
            Ok(uri) => uri,
            Err(error) if error.as_revert_data().is_some() => {
                return Err(CatalogError::BadRegistration { agent: id, reason: "tokenURI reverts".into() });
            }
            Err(error) => return Err(CatalogError::Unavailable { agent: id, reason: error.to_string() }),
        };
        let data = self.read_registration(id, &uri).await?;
        Ok(Agent { id, owner, uri, data })
    }

    async fn read_registration(&self, agent: U256, uri: &str) -> Result<AgentUriData, CatalogError> {
        let bad = |reason: String| CatalogError::BadRegistration { agent, reason };
        let bytes = if let Some(data) = uri.strip_prefix("data:") {
            decode_data_uri(data).map_err(bad)?
        } else if uri.starts_with("https://") || uri.starts_with("http://") {
            let url =
                reqwest::Url::parse(uri).map_err(|error| bad(format!("{uri:?} is not a URL: {error}")))?;
            let private = || bad(format!("{uri} is on a private address"));
            if !fetch::host_allowed(&url, self.allow_private) {
                return Err(private());
            }
            let unreachable = |reason: String| CatalogError::Unreachable { agent, reason };
            let response = self.http.get(url).send().await.map_err(|error| unreachable(error.to_string()))?;
            if !response.status().is_success() {
                return Err(bad(format!("{uri} answered {}", response.status())));
            }
            fetch::body_capped(response, MAX_REGISTRATION_BYTES).await.map_err(|error| match error {
                fetch::BodyError::TooLarge => {
                    bad(format!("{uri} is larger than {MAX_REGISTRATION_BYTES} bytes"))
                }
                fetch::BodyError::Read(error) => unreachable(error.to_string()),
            })?
        } else if uri.is_empty() {
            return Err(bad("no agentURI is set".into()));
        } else {
            return Err(bad(format!("unsupported agentURI scheme in {uri:?}")));
        };
        serde_json::from_slice(&bytes).map_err(|error| bad(format!("not an AgentURIData JSON: {error}")))
    }
}

/// Decodes the part after `data:`: `application/json;base64,...` or `application/json,...` (percent-encoded).
fn decode_data_uri(data: &str) -> Result<Vec<u8>, String> {
    let (meta, payload) = data.split_once(',').ok_or("a data: URI needs a comma")?;
    if meta.ends_with(";base64") {
        STANDARD.decode(payload.trim()).map_err(|error| format!("bad base64 in data: URI: {error}"))
    } else {
        percent_decode(payload)
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(byte) = bytes.next() {
        if byte == b'%' {
            let pair = [bytes.next(), bytes.next()];
            let [Some(high), Some(low)] = pair else { return Err("truncated %-escape".into()) };
            let hex = [high, low];
            let text = std::str::from_utf8(&hex).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(text, 16).map_err(|_| format!("bad %-escape %{text}"))?);
        } else {
            out.push(byte);
        }
    }
    Ok(out)
}

/// Parses a `$X.XX` price into token units of `decimals` decimals, exactly (no floating point).
pub fn parse_price(price: &str, decimals: u32) -> Result<U256, String> {
    let amount =
        price.trim().strip_prefix('$').ok_or_else(|| format!("price {price:?} must look like $0.10"))?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (whole, fraction) = match amount.split_once('.') {
        Some((whole, fraction)) if digits(fraction) => (whole, fraction),
        Some(_) => return Err(format!("price {price:?} must look like $0.10")),
        None => (amount, ""),
    };
    if !digits(whole) {
        return Err(format!("price {price:?} must look like $0.10"));
    }
    if fraction.len() > decimals as usize {
        return Err(format!("price {price:?} has more than {decimals} decimals"));
    }
    let scaled = format!("{whole}{fraction:0<width$}", width = decimals as usize);
    U256::from_str_radix(&scaled, 10).map_err(|error| format!("price {price:?} is out of range: {error}"))
}

/// Writes token units of `decimals` decimals as a price: `$0.10`, `$12.345678`, `$3.00` (cents at least).
pub fn format_price(amount: U256, decimals: u32) -> String {
    let digits = amount.to_string();
    let width = decimals as usize;
    let padded = format!("{digits:0>width$}", width = width + 1);
    let (whole, fraction) = padded.split_at(padded.len() - width);
    let fraction = fraction.trim_end_matches('0');
    format!("${whole}.{fraction:0<2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(parse_price("$0.10", 6), Ok(U256::from(100_000)));
        assert_eq!(parse_price("$1", 6), Ok(U256::from(1_000_000)));
        assert_eq!(parse_price("$12.345678", 6), Ok(U256::from(12_345_678)));
        assert_eq!(parse_price(" $0.000001 ", 6), Ok(U256::from(1)));
        for bad in ["0.10", "$", "$.5", "$1.", "$1.2345678", "$-1", "$1e3", "$ 1", "$0,10"] {
            assert!(parse_price(bad, 6).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn prices_format_as_they_parse() {
        for (units, text) in [
            (100_000, "$0.10"),
            (1_000_000, "$1.00"),
            (12_345_678, "$12.345678"),
            (1, "$0.000001"),
            (0, "$0.00"),
        ] {
            assert_eq!(format_price(U256::from(units), 6), text);
            assert_eq!(parse_price(text, 6), Ok(U256::from(units)));
        }
        assert_eq!(format_price(U256::from(5), 0), "$5.00");
    }

    #[test]
    fn data_uris_decode() {
        let json = r#"{"name":"A","services":[]}"#;
        let base64 = format!("application/json;base64,{}", STANDARD.encode(json));
        assert_eq!(decode_data_uri(&base64), Ok(json.as_bytes().to_vec()));
        assert_eq!(decode_data_uri("application/json,%7B%22a%22%3A1%7D"), Ok(br#"{"a":1}"#.to_vec()));
        assert!(decode_data_uri("application/json;base64").is_err());
        assert!(decode_data_uri("application/json,%7").is_err());
    }

    #[test]
    fn entries_are_found_in_x402_services_only() {
        let entry = CatalogEntry {
            path: "translate".into(),
            price: "$0.10".into(),
            kind: "async".into(),
            description: "d".into(),
        };
        let agent = Agent {
            id: U256::from(1),
            owner: Address::ZERO,
            uri: String::new(),
            data: AgentUriData {
                name: "A".into(),
                description: None,
                icon_url: None,
                x402_support: Some(true),
                services: vec![
                    Service {
                        name: "web".into(),
                        endpoint: "/".into(),
                        catalog: vec![CatalogEntry { path: "web-only".into(), ..entry.clone() }],
                    },
                    Service { name: "x402".into(), endpoint: "/".into(), catalog: vec![entry.clone()] },
                ],
            },
        };
        assert_eq!(agent.entry("translate"), Some(&entry));
        assert_eq!(agent.entry("web-only"), None);
        assert_eq!(agent.entry("missing"), None);
    }
}
