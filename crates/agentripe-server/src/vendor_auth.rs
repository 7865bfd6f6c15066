//! Vendor authentication, Agentripe's: `X-Vendor-Address`, `X-Agent-Id`, `X-Timestamp` and
//! `X-Signature`, the EIP-191 `personal_sign` of `"{address}:{timestamp}"` (exactly as the headers spell
//! them, so `cast wallet sign` works), within five minutes of our clock. The signer must then own the
//! agent's NFT or be approved for it; that is read from the identity registry through ERC-721 calls
//! (which the official ERC-8004 registries have too) and cached briefly.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agentripe_chain::bindings::IERC8004Identity;
use alloy::{
    primitives::{Address, Signature, U256},
    providers::DynProvider,
    signers::{SignerSync, local::PrivateKeySigner},
};
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, HeaderValue, StatusCode, request::Parts},
};
use lru::LruCache;

use crate::{ApiError, util::now_secs};

/// How far a vendor's timestamp may be from ours.
pub const TIMESTAMP_TOLERANCE_SECONDS: u64 = 300;

/// An authenticated vendor request: `signer` may act for `agent_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vendor {
    pub signer: Address,
    pub agent_id: U256,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    headers
        .get(name)
        .ok_or_else(|| {
            unauthorized(format!(
                "missing {name}: signed requests carry X-Vendor-Address (vendors, with X-Agent-Id) or \
                 X-Buyer-Address (buyers), X-Timestamp and X-Signature"
            ))
        })?
        .to_str()
        .map_err(|_| unauthorized(format!("{name} is not ASCII")))
}

/// Checks the signature and the clock; no chain access.
pub fn verify_signed_headers(headers: &HeaderMap, now: u64) -> Result<Vendor, ApiError> {
    let agent_text = header(headers, "x-agent-id")?;
    let agent_id = U256::from_str_radix(agent_text.trim(), 10)
        .map_err(|_| unauthorized("X-Agent-Id is not a decimal agent id"))?;
    Ok(Vendor { signer: verify_signer(headers, now)?, agent_id })
}

/// The header a vendor names its address in.
pub const VENDOR_ADDRESS: &str = "x-vendor-address";
/// The header a buyer names its address in (the payer of its payments).
pub const BUYER_ADDRESS: &str = "x-buyer-address";

/// A verified set of signed headers.
#[derive(Clone, Copy, Debug)]
pub struct Signed {
    pub signer: Address,
    pub timestamp: u64,
    /// Low-s, so it names one header set: spending it once spends every spelling of it.
    pub signature: Signature,
}

impl Signed {
    /// When these headers stop being accepted.
    pub fn expires_at(&self) -> u64 {
        self.timestamp + TIMESTAMP_TOLERANCE_SECONDS
    }

    /// The signature's `r` and `s`, which identify it whatever the spelling of `v`.
    pub fn id(&self) -> String {
        format!("{:064x}{:064x}", self.signature.r(), self.signature.s())
    }
}

/// The address that signed `"{X-Vendor-Address}:{X-Timestamp}"` in `X-Signature`, within the clock window.
pub fn verify_signer(headers: &HeaderMap, now: u64) -> Result<Address, ApiError> {
    Ok(verify_signed(headers, now)?.signer)
}

/// [`verify_signer`], with the signature and its timestamp (for single-use headers).
pub fn verify_signed(headers: &HeaderMap, now: u64) -> Result<Signed, ApiError> {
    verify_signer_named_in(headers, VENDOR_ADDRESS, now)
}

/// The same for a buyer: the address in `X-Buyer-Address` signed `"{address}:{timestamp}"`.
pub fn verify_buyer(headers: &HeaderMap, now: u64) -> Result<Address, ApiError> {
    Ok(verify_signer_named_in(headers, BUYER_ADDRESS, now)?.signer)
}

fn verify_signer_named_in(headers: &HeaderMap, address_header: &str, now: u64) -> Result<Signed, ApiError> {
    let address_text = header(headers, address_header)?;
    let timestamp_text = header(headers, "x-timestamp")?;
    let signature_text = header(headers, "x-signature")?;

    let address: Address = address_text
        .trim()
        .parse()
        .map_err(|_| unauthorized(format!("{address_header} is not a 0x-prefixed 20-byte address")))?;
    let timestamp: u64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| unauthorized("X-Timestamp is not a UNIX time in seconds"))?;
    if timestamp + TIMESTAMP_TOLERANCE_SECONDS < now {
        return Err(unauthorized(format!(
            "X-Timestamp {timestamp} is stale: more than 5 minutes before {now}"
        )));
    }
    if timestamp > now + TIMESTAMP_TOLERANCE_SECONDS {
        return Err(unauthorized(format!(
            "X-Timestamp {timestamp} is in the future: more than 5 minutes after {now}"
        )));
    }
    let signature: Signature = signature_text
        .trim()
        .parse()
        .map_err(|_| unauthorized("X-Signature is not a 0x-prefixed 65-byte hex signature"))?;
    // The high-s twin of a signature recovers the same signer; purchases refuse it, and so does this.
    if signature.normalize_s().is_some() {
        return Err(unauthorized("X-Signature has a high s: sign with a low-s (canonical) ECDSA signature"));
    }
    let message = format!("{address_text}:{timestamp_text}");
    let signer = signature
        .recover_address_from_msg(message.as_bytes())
        .map_err(|_| unauthorized("X-Signature does not recover to any address"))?;
    if signer != address {
        return Err(unauthorized(format!(
            "X-Signature is not {address}'s signature of \"{message}\" (it recovers to {signer})"
        )));
    }
    Ok(Signed { signer, timestamp, signature })
}

/// The signing side of [`verify_signed_headers`], what vendors send: `X-Vendor-Address`, `X-Timestamp`,
/// `X-Signature` (EIP-191 over `"{address}:{timestamp}"`), and `X-Agent-Id` when acting for an agent.
pub fn signed_headers(
    signer: &PrivateKeySigner,
    agent_id: Option<&str>,
    timestamp: u64,
) -> Result<HeaderMap, alloy::signers::Error> {
    sign_as(signer, VENDOR_ADDRESS, agent_id, timestamp)
}

/// The signing side of [`verify_buyer`], what buyers send to read their tasks.
pub fn buyer_headers(signer: &PrivateKeySigner, timestamp: u64) -> Result<HeaderMap, alloy::signers::Error> {
    sign_as(signer, BUYER_ADDRESS, None, timestamp)
}

fn sign_as(
    signer: &PrivateKeySigner,
    address_header: &'static str,
    agent_id: Option<&str>,
    timestamp: u64,
) -> Result<HeaderMap, alloy::signers::Error> {
    let address = signer.address().to_checksum(None);
    let signature = signer.sign_message_sync(format!("{address}:{timestamp}").as_bytes())?;
    let mut headers = HeaderMap::new();
    let mut insert = |name: &'static str, value: String| {
        // Addresses, decimal numbers and hex are always valid header values.
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    insert(address_header, address);
    if let Some(agent_id) = agent_id {
        insert("x-agent-id", agent_id.to_owned());
    }
    insert("x-timestamp", timestamp.to_string());
    insert("x-signature", format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes())));
    Ok(headers)
}

/// Who may act for which agent, read from the identity registry and cached briefly.
#[derive(Debug)]
pub struct Authorizations {
    identity: IERC8004Identity::IERC8004IdentityInstance<DynProvider>,
    ttl: Duration,
    /// Bounded: any signer can name any `X-Agent-Id`.
    cache: Mutex<LruCache<(Address, U256), Cached>>,
}

/// How many (signer, agent) verdicts are cached.
const CACHED_AUTHORIZATIONS: NonZeroUsize = NonZeroUsize::new(10_000).expect("non-zero");

/// A verdict on (signer, agent) and when it was read from the chain.
type Cached = (Instant, Result<(), AuthorizationError>);

/// Why a signer may not act for an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthorizationError {
    UnknownAgent,
    NotAuthorized,
}

impl Authorizations {
    pub fn new(identity_registry: Address, provider: DynProvider, ttl: Duration) -> Self {
        Self {
            identity: IERC8004Identity::new(identity_registry, provider),
            ttl,
            cache: Mutex::new(LruCache::new(CACHED_AUTHORIZATIONS)),
        }
    }

    async fn check(&self, vendor: Vendor) -> Result<Result<(), AuthorizationError>, ApiError> {
        let key = (vendor.signer, vendor.agent_id);
        if let Some((at, verdict)) = self.cache.lock().expect("authorization cache lock").get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(verdict.clone());
        }
        let unavailable = |error: alloy::contract::Error| {
            ApiError::unavailable_because("the identity registry cannot be read right now", error, 5)
        };
        let owner = match self.identity.ownerOf(vendor.agent_id).call().await {
            Ok(owner) => owner,
            Err(error) if error.as_revert_data().is_some() => {
                return Ok(self.remember(key, Err(AuthorizationError::UnknownAgent)));
            }
            Err(error) => return Err(unavailable(error)),
        };
        let authorized = owner == vendor.signer
            || self.identity.getApproved(vendor.agent_id).call().await.map_err(unavailable)? == vendor.signer
            || self.identity.isApprovedForAll(owner, vendor.signer).call().await.map_err(unavailable)?;
        Ok(self.remember(key, if authorized { Ok(()) } else { Err(AuthorizationError::NotAuthorized) }))
    }

    fn remember(
        &self,
        key: (Address, U256),
        verdict: Result<(), AuthorizationError>,
    ) -> Result<(), AuthorizationError> {
        self.cache.lock().expect("authorization cache lock").put(key, (Instant::now(), verdict.clone()));
        verdict
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Vendor
where
    Arc<Authorizations>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let vendor = verify_signed_headers(&parts.headers, now_secs())?;
        match Arc::<Authorizations>::from_ref(state).check(vendor).await? {
            Ok(()) => Ok(vendor),
            Err(AuthorizationError::UnknownAgent) => {
                Err(ApiError::not_found(format!("agent {} is not registered", vendor.agent_id)))
            }
            Err(AuthorizationError::NotAuthorized) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "{} is neither the owner of agent {} nor approved for it",
                    vendor.signer, vendor.agent_id
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy::signers::{SignerSync, local::PrivateKeySigner};
    use axum::http::HeaderValue;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn headers(signer: &PrivateKeySigner, address: &str, timestamp: u64) -> HeaderMap {
        let signature = signer.sign_message_sync(format!("{address}:{timestamp}").as_bytes()).expect("sign");
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("x-vendor-address", address.to_owned()),
            ("x-agent-id", "42".to_owned()),
            ("x-timestamp", timestamp.to_string()),
            ("x-signature", format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes()))),
        ] {
            headers.insert(name, HeaderValue::from_str(&value).expect("header"));
        }
        headers
    }

    #[test]
    fn accepts_the_guides_format_in_any_address_case() {
        let signer = PrivateKeySigner::random();
        for address in [signer.address().to_checksum(None), format!("{:#x}", signer.address())] {
            let vendor = verify_signed_headers(&headers(&signer, &address, NOW - 299), NOW).expect("valid");
            assert_eq!(vendor, Vendor { signer: signer.address(), agent_id: U256::from(42) });
        }
        assert!(
            verify_signed_headers(&headers(&signer, &format!("{:#x}", signer.address()), NOW + 299), NOW)
                .is_ok()
        );
    }

    #[test]
    fn refuses_each_bad_header_with_401() {
        let signer = PrivateKeySigner::random();
        let address = signer.address().to_checksum(None);
        let good = headers(&signer, &address, NOW);
        let cases: Vec<(&str, HeaderMap)> = vec![
            ("stale", headers(&signer, &address, NOW - 301)),
            ("future", headers(&signer, &address, NOW + 301)),
            ("other signer", {
                let mut h = headers(&PrivateKeySigner::random(), &address, NOW);
                h.insert("x-vendor-address", HeaderValue::from_str(&address).expect("header"));
                h
            }),
            ("claims another address", {
                let mut h = good.clone();
                h.insert(
                    "x-vendor-address",
                    HeaderValue::from_static("0x0000000000000000000000000000000000000001"),
                );
                h
            }),
            ("timestamp changed after signing", {
                let mut h = good.clone();
                h.insert("x-timestamp", HeaderValue::from_str(&(NOW - 1).to_string()).expect("header"));
                h
            }),
            ("malformed hex", {
                let mut h = good.clone();
                h.insert("x-signature", HeaderValue::from_static("0xnothex"));
                h
            }),
            ("short signature", {
                let mut h = good.clone();
                h.insert("x-signature", HeaderValue::from_static("0x1234"));
                h
            }),
            ("bad agent id", {
                let mut h = good.clone();
                h.insert("x-agent-id", HeaderValue::from_static("forty-two"));
                h
            }),
            ("bad address", {
                let mut h = good.clone();
                h.insert("x-vendor-address", HeaderValue::from_static("0x1234"));
                h
            }),
            ("missing signature", {
                let mut h = good.clone();
                h.remove("x-signature");
                h
            }),
        ];
        for (name, headers) in cases {
            let error = verify_signed_headers(&headers, NOW).expect_err(name);
            assert_eq!(error.status, StatusCode::UNAUTHORIZED, "{name}");
            assert!(!error.message.is_empty(), "{name}");
        }
    }
}
