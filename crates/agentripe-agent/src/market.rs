//! The marketplace's HTTP API as an agent uses it: discovery, buying through the [`Wallet`], following
//! tasks and payments, and the vendor's signed task loop. Answers are the server's JSON, unchanged.

use std::time::Duration;

use agentripe_server::vendor_auth::{buyer_headers, signed_headers};
use agentripe_x402::{Offer, decode_header, v2};
use alloy::primitives::Address;
use alloy::signers::{Signer, SignerSync, local::PrivateKeySigner};
use reqwest::{RequestBuilder, Url};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Ledger, Purchase,
    ledger::SignedPayment,
    now,
    wallet::{Ask, Decision, Queued, Refusal, Wallet, WalletError},
};

#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    #[error("server unreachable: {0}")]
    Unreachable(String),
    #[error("{status} {error}: {message}")]
    Api { status: u16, error: String, message: String },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Wallet(#[from] WalletError),
}

/// What became of a purchase.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Purchased {
    Bought(Bought),
    /// The wallet refused to sign: nothing was paid.
    Refused(Refusal),
    /// Waiting for a person's approval: nothing was paid yet.
    Queued(Queued),
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bought {
    pub task_id: String,
    /// Token units paid.
    pub amount: String,
    /// The server's answer.
    pub answer: Value,
}

/// The server at `base`.
#[derive(Clone, Debug)]
pub struct Market {
    base: String,
    origin: String,
    http: reqwest::Client,
}

/// How many times a purchase answered 503 (settlement in flight) is resent with the same payment.
const RESENDS: usize = 10;

impl Market {
    pub fn new(base: &str) -> Result<Self, String> {
        let url = Url::parse(base).map_err(|error| format!("bad server URL {base}: {error}"))?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        // Signed payments and signed headers travel in the request: never in the clear off this machine.
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err(format!("{base} is plain http to another machine: use https://")),
            _ => return Err(format!("bad server URL {base}: use https:// (or http:// on loopback)")),
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|error| error.to_string())?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            origin: url.origin().ascii_serialization(),
            http,
        })
    }

    /// `https://host[:port]`: how the spend policy names this server.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(request: RequestBuilder) -> Result<(u16, Value, reqwest::header::HeaderMap), MarketError> {
        let response = request.send().await.map_err(|error| MarketError::Unreachable(error.to_string()))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    /// The JSON of a successful answer, or the server's error.
    async fn read(request: RequestBuilder) -> Result<(u16, Value), MarketError> {
        let (status, body, _) = Self::send(request).await?;
        if status >= 400 {
            return Err(MarketError::Api {
                status,
                error: body["error"].as_str().unwrap_or("error").to_owned(),
                message: body["message"].as_str().unwrap_or("no details").to_owned(),
            });
        }
        Ok((status, body))
    }

    fn buyer_signed(
        &self,
        request: RequestBuilder,
        key: Option<&PrivateKeySigner>,
    ) -> Result<RequestBuilder, MarketError> {
        match key {
            Some(key) => Ok(request.headers(
                buyer_headers(key, now()).map_err(|error| MarketError::Protocol(error.to_string()))?,
            )),
            None => Ok(request),
        }
    }

    /// Agents, or those whose name, description or catalog hold every word of `query`.
    pub async fn agents(&self, query: Option<&str>, limit: u32) -> Result<Value, MarketError> {
        let mut request = self.http.get(self.url("/agents")).query(&[("limit", limit.to_string())]);
        if let Some(query) = query {
            request = request.query(&[("q", query)]);
        }
        Ok(Self::read(request).await?.1)
    }

    pub async fn agent(&self, agent_id: &str) -> Result<Value, MarketError> {
        Ok(Self::read(self.http.get(self.url(&format!("/agents/{}", segment(agent_id)?)))).await?.1)
    }

    /// The escrow this server pays into, as its `/health` names it: (address, chain id).
    pub async fn escrow(&self) -> Result<(Address, u64), MarketError> {
        let (_, health) = Self::read(self.http.get(self.url("/health"))).await?;
        let address = health["escrow"]["address"].as_str().and_then(|text| text.parse().ok());
        let chain_id = health["escrow"]["chainId"].as_u64();
        address
            .zip(chain_id)
            .ok_or_else(|| MarketError::Protocol(format!("/health names no escrow: {health}")))
    }

    /// The payment terms of a service this server sells (its discovery list): what `agentripe wallet
    /// init` shows a person, and checks on chain, before the wallet trusts them.
    pub async fn terms(&self) -> Result<Offer, MarketError> {
        let (_, listed) =
            Self::read(self.http.get(self.url("/discovery/resources")).query(&[("limit", "1")])).await?;
        let accepted: v2::PaymentRequirements =
            serde_json::from_value(listed["items"][0]["accepts"][0].clone()).map_err(|_| {
                MarketError::Protocol("the server lists no service to read its payment terms from".into())
            })?;
        Offer::from_requirements(&accepted).map_err(|error| MarketError::Protocol(error.to_string()))
    }

    /// A task; its request and result only when `key` is its buyer's (or vendor's).
    pub async fn task(&self, task_id: &str, key: Option<&PrivateKeySigner>) -> Result<Value, MarketError> {
        let request = self.http.get(self.url(&format!("/tasks/{}", segment(task_id)?)));
        Ok(Self::read(self.buyer_signed(request, key)?).await?.1)
    }

    /// A task's result: `Some` once its escrow has moved, `None` (with the task's status) before.
    pub async fn result(
        &self,
        task_id: &str,
        key: Option<&PrivateKeySigner>,
    ) -> Result<(bool, Value), MarketError> {
        let request = self.http.get(self.url(&format!("/tasks/{}/result", segment(task_id)?)));
        let (status, body) = Self::read(self.buyer_signed(request, key)?).await?;
        Ok((status == 200, body))
    }

    /// Follows a task until its escrow moves or `timeout` passes; `progress` hears each open status.
    pub async fn wait(
        &self,
        task_id: &str,
        key: Option<&PrivateKeySigner>,
        timeout: Duration,
        mut progress: impl FnMut(&str),
    ) -> Result<(bool, Value), MarketError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (done, body) = self.result(task_id, key).await?;
            if done || tokio::time::Instant::now() >= deadline {
                return Ok((done, body));
            }
            progress(body["status"].as_str().unwrap_or("?"));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A buyer's own tasks and payments in flight.
    pub async fn buyer_tasks(&self, key: &PrivateKeySigner) -> Result<Value, MarketError> {
        let request = self.http.get(self.url("/buyer/tasks"));
        Ok(Self::read(self.buyer_signed(request, Some(key))?).await?.1)
    }

    /// Buys `service_path` of `agent_id`: asks the price (402), lets the wallet decide, and sends the
    /// payment it signed. A 503 (settlement in flight) is answered by resending the same payment, which
    /// is never charged twice.
    pub async fn buy<S: Signer + SignerSync + Send + Sync>(
        &self,
        wallet: &Wallet<S>,
        agent_id: &str,
        service_path: &str,
        body: &Value,
    ) -> Result<Purchased, MarketError> {
        let agent_id = &canonical_agent_id(agent_id)?;
        let url =
            self.url(&format!("/{}/{}", segment(agent_id)?, segment(service_path.trim_start_matches('/'))?));
        let (status, answer, headers) = Self::send(self.http.post(&url).json(body)).await?;
        if status != 402 {
            return Err(MarketError::Protocol(format!(
                "expected 402 with payment requirements, got {status}: {answer}"
            )));
        }
        let header = headers
            .get("payment-required")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| MarketError::Protocol("the 402 answer has no PAYMENT-REQUIRED header".into()))?;
        let required: v2::PaymentRequired = decode_header(header)
            .map_err(|error| MarketError::Protocol(format!("bad PAYMENT-REQUIRED: {error}")))?;
        let purchase = Purchase {
            server: self.origin.clone(),
            agent_id: agent_id.to_owned(),
            service_path: service_path.trim_start_matches('/').to_owned(),
        };
        let signed = match wallet.pay(&Ask { purchase, required }).await? {
            Decision::Signed(signed) => signed,
            Decision::Refused(refusal) => return Ok(Purchased::Refused(refusal)),
            Decision::Queued(queued) => return Ok(Purchased::Queued(queued)),
        };
        for _ in 0..RESENDS {
            let request = self.http.post(&url).header("PAYMENT-SIGNATURE", &signed.header).json(body);
            let (status, answer, headers) = Self::send(request).await?;
            match status {
                200 => {
                    let task_id = answer["taskId"]
                        .as_str()
                        .ok_or_else(|| MarketError::Protocol(format!("a 200 without taskId: {answer}")))?
                        .to_owned();
                    // Bought whatever the ledger says: an error here must not make the agent buy again
                    // (`wallet payments` finds the outcome later).
                    let _ = wallet
                        .ledger()
                        .settle_outcome(&signed.nonce, "recorded", Some(&task_id), now())
                        .await;
                    return Ok(Purchased::Bought(Bought {
                        task_id,
                        amount: signed.amount.to_string(),
                        answer,
                    }));
                }
                503 => {
                    let retry = headers
                        .get("retry-after")
                        .and_then(|value| value.to_str().ok()?.parse().ok())
                        .unwrap_or(2u64)
                        .min(30);
                    tokio::time::sleep(Duration::from_secs(retry)).await;
                }
                402 => {
                    wallet
                        .ledger()
                        .settle_outcome(&signed.nonce, "refused", None, now())
                        .await
                        .map_err(WalletError::from)?;
                    return Err(MarketError::Api {
                        status,
                        error: answer["error"].as_str().unwrap_or("payment_refused").to_owned(),
                        message: "the server refused the payment; nothing was charged".into(),
                    });
                }
                _ => {
                    return Err(MarketError::Api {
                        status,
                        error: answer["error"].as_str().unwrap_or("error").to_owned(),
                        message: format!(
                            "{}; payment {} may still settle: follow it with `agentripe wallet payments`",
                            answer["message"].as_str().unwrap_or("no details"),
                            signed.nonce
                        ),
                    });
                }
            }
        }
        Err(MarketError::Protocol(format!(
            "the server kept answering 503; payment {} is remembered: follow it with `agentripe wallet payments`",
            signed.nonce
        )))
    }

    /// Asks this server what became of each payment the wallet signed for it whose outcome is not yet
    /// known, and notes the answers; returns the wallet's payments, newest first.
    pub async fn follow_payments(
        &self,
        ledger: &Ledger,
        limit: i64,
    ) -> Result<Vec<SignedPayment>, MarketError> {
        for payment in ledger.payments(limit).await.map_err(WalletError::from)? {
            if payment.outcome != "unknown" || payment.purchase.server != self.origin {
                continue;
            }
            let request = self.http.get(self.url(&format!("/payments/{}/{}", payment.payer, payment.nonce)));
            let (status, answer, _) = Self::send(request).await?;
            let now = now();
            let outcome = match (status, answer["status"].as_str()) {
                (200, Some("recorded")) => Some(("recorded", answer["taskId"].as_str())),
                (200, Some("refused")) => Some(("refused", None)),
                // It never reached the server and can no longer be settled by anyone.
                (404, _) if now > payment.valid_before => Some(("expired", None)),
                _ => None,
            };
            if let Some((outcome, task_id)) = outcome {
                ledger
                    .settle_outcome(&payment.nonce, outcome, task_id, now)
                    .await
                    .map_err(WalletError::from)?;
            }
        }
        Ok(ledger.payments(limit).await.map_err(WalletError::from)?)
    }

    /// Registers an agent (`{"data": ...}` or the bare registration data), signed and owned by `key`.
    pub async fn register(&self, key: &PrivateKeySigner, registration: Value) -> Result<Value, MarketError> {
        let body = match registration {
            Value::Object(ref fields) if fields.len() == 1 && fields.contains_key("data") => registration,
            data => json!({ "data": data }),
        };
        let send = || async {
            let headers =
                signed_headers(key, None, now()).map_err(|error| MarketError::Protocol(error.to_string()))?;
            Self::read(self.http.post(self.url("/agents/register")).headers(headers).json(&body)).await
        };
        match send().await {
            // Signed headers register once and carry whole seconds: a second registration within the
            // same second waits for a fresh timestamp.
            Err(MarketError::Api { error, .. }) if error == "signature_used" => {
                tokio::time::sleep(Duration::from_millis(1_100)).await;
                Ok(send().await?.1)
            }
            answered => Ok(answered?.1),
        }
    }

    /// The vendor's tasks in `status` (a comma list, or `all`).
    pub async fn vendor_tasks(
        &self,
        key: &PrivateKeySigner,
        agent_id: &str,
        status: &str,
    ) -> Result<Value, MarketError> {
        let headers = signed_headers(key, Some(agent_id), now())
            .map_err(|error| MarketError::Protocol(error.to_string()))?;
        let request = self.http.get(self.url("/vendor/tasks")).query(&[("status", status), ("limit", "200")]);
        Ok(Self::read(request.headers(headers)).await?.1)
    }

    /// `start`, `complete` or `fail` a task as its vendor.
    pub async fn vendor_act(
        &self,
        key: &PrivateKeySigner,
        agent_id: &str,
        task_id: &str,
        action: VendorAction,
    ) -> Result<Value, MarketError> {
        let (verb, body) = match action {
            VendorAction::Start => ("start", json!({})),
            VendorAction::Complete(result) => ("complete", json!({ "result": result })),
            VendorAction::Fail(message) => ("fail", json!({ "errorMessage": message })),
        };
        let headers = signed_headers(key, Some(agent_id), now())
            .map_err(|error| MarketError::Protocol(error.to_string()))?;
        let url = self.url(&format!("/vendor/tasks/{}/{verb}", segment(task_id)?));
        Ok(Self::read(self.http.post(url).headers(headers).json(&body)).await?.1)
    }
}

#[derive(Clone, Debug)]
pub enum VendorAction {
    Start,
    Complete(String),
    Fail(String),
}

/// The one spelling of an agent id (decimal, no leading zeros), so that "012" cannot buy from agent 12
/// past a deny list, an allow list or an approval written for "12".
fn canonical_agent_id(text: &str) -> Result<String, MarketError> {
    text.parse::<alloy::primitives::U256>()
        .ok()
        .filter(|_| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .map(|id| id.to_string())
        .ok_or_else(|| MarketError::Protocol(format!("agent id {text:?} is not a decimal number")))
}

/// One path segment: ids and paths from a model or a command line cannot walk to another endpoint.
fn segment(text: &str) -> Result<String, MarketError> {
    if text.is_empty() || text == "." || text == ".." {
        return Err(MarketError::Protocol(format!("{text:?} is not an id or a service path")));
    }
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_ids_have_one_spelling() {
        assert_eq!(canonical_agent_id("12").ok().as_deref(), Some("12"));
        assert_eq!(canonical_agent_id("012").ok().as_deref(), Some("12"));
        assert_eq!(canonical_agent_id("0").ok().as_deref(), Some("0"));
        for bad in ["", "1_2", "0x0c", "-1", "12 ", "１２"] {
            assert!(canonical_agent_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn path_segments_cannot_walk() {
        assert!(segment("..").is_err() && segment(".").is_err() && segment("").is_err());
        assert_eq!(segment("a/b?c").ok().as_deref(), Some("a%2Fb%3Fc"));
    }

    #[test]
    fn plain_http_is_for_loopback_only() {
        assert!(Market::new("http://127.0.0.1:3000").is_ok());
        assert!(Market::new("http://localhost:3000").is_ok());
        assert!(Market::new("https://market.example").is_ok());
        assert!(Market::new("http://market.example").is_err());
        assert!(Market::new("ftp://127.0.0.1").is_err());
    }
}
