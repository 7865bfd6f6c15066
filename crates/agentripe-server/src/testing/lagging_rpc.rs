//! A JSON-RPC proxy in front of anvil that behaves like a load-balanced provider: state (nonces,
//! balances, `authorizationState`) is current, but a transaction's receipt and logs only become
//! readable `lag` after the proxy first sees them mined. It counts the calls by method, which is how
//! the load run measures the RPC calls a purchase costs (with no lag). It can also play a node that
//! does not stamp logs with their block's time (`blockTimestamp`, which older nodes leave out), and a
//! node behind the others that still answers a deposit's expiry with 0. A test may have it take steps
//! of its own around the simulation of a given call: a rival's move, made before the server's
//! simulation or between its answer and what the server does with it.

use std::{
    collections::{BTreeMap, HashMap},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use agentripe_chain::bindings::Agentripe;
use alloy::sol_types::SolCall;
use axum::{Json, extract::State, routing::post};
use serde_json::{Value, json};

/// A lagging RPC endpoint on loopback.
#[derive(Clone, Debug)]
pub struct LaggingRpc {
    pub url: String,
    upstream: String,
    lag: Duration,
    /// Whether logs keep their `blockTimestamp`.
    stamps_logs: bool,
    http: reqwest::Client,
    /// When each mined transaction was first seen through a receipt or a log.
    first_seen: Arc<Mutex<HashMap<String, Instant>>>,
    /// Calls forwarded, by method.
    calls: Arc<Mutex<BTreeMap<String, u64>>>,
    /// How many `depositExpiresAt` calls are still to be answered with 0.
    zero_expiries: Arc<AtomicU32>,
    around_estimate: Arc<Mutex<Option<Interlude>>>,
}

type Step = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Steps to take around the next `eth_estimateGas` of a call with `selector` (0x hex): `before`
/// forwarding it, and `after` its answer came back, before passing that on.
struct Interlude {
    selector: String,
    before: Step,
    after: Step,
}

impl std::fmt::Debug for Interlude {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interlude").field("selector", &self.selector).finish_non_exhaustive()
    }
}

impl LaggingRpc {
    /// Starts the proxy in front of `upstream` (anvil's endpoint).
    pub async fn start(upstream: String, lag: Duration) -> Self {
        Self::launch(upstream, lag, true).await
    }

    /// Starts the proxy as [`Self::start`] does, answering logs without their block's time.
    pub async fn start_unstamped(upstream: String, lag: Duration) -> Self {
        Self::launch(upstream, lag, false).await
    }

    async fn launch(upstream: String, lag: Duration, stamps_logs: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let proxy = Self {
            url,
            upstream,
            lag,
            stamps_logs,
            http: reqwest::Client::new(),
            first_seen: Arc::default(),
            calls: Arc::default(),
            zero_expiries: Arc::default(),
            around_estimate: Arc::default(),
        };
        let app = axum::Router::new().route("/", post(forward)).with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        proxy
    }

    /// Answers the next `count` `depositExpiresAt` calls with 0, as a node that has not seen the deposit.
    pub fn answer_zero_expiries(&self, count: u32) {
        self.zero_expiries.store(count, Ordering::SeqCst);
    }

    /// Around the next simulation (`eth_estimateGas`) of a call with `selector` (once): takes `before`,
    /// forwards the simulation, takes `after`, and only then answers it.
    pub fn around_estimating(
        &self,
        selector: [u8; 4],
        before: impl Future<Output = ()> + Send + 'static,
        after: impl Future<Output = ()> + Send + 'static,
    ) {
        let selector = format!("0x{}", alloy::primitives::hex::encode(selector));
        let interlude = Interlude { selector, before: Box::pin(before), after: Box::pin(after) };
        *self.around_estimate.lock().expect("lock") = Some(interlude);
    }

    /// The interlude waiting for a simulation of `input`, if any.
    fn interlude_around_estimating(&self, input: &str) -> Option<Interlude> {
        let mut waiting = self.around_estimate.lock().expect("lock");
        match waiting.as_ref() {
            Some(interlude) if input.starts_with(&interlude.selector) => waiting.take(),
            _ => None,
        }
    }

    /// Takes one of the zero answers left, if any.
    fn take_zero_expiry(&self) -> bool {
        self.zero_expiries
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(1))
            .is_ok()
    }

    /// The calls forwarded so far, by method.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().expect("lock").clone()
    }

    /// Whether the transaction `hash` (0x hex) has been mined for at least the lag.
    fn visible(&self, hash: &str) -> bool {
        let mut seen = self.first_seen.lock().expect("lock");
        seen.entry(hash.to_ascii_lowercase()).or_insert_with(Instant::now).elapsed() >= self.lag
    }

    /// Hides what a lagging node would not show yet, and what an older one would not show at all.
    fn lag_behind(&self, method: &str, mut result: Value) -> Value {
        match method {
            "eth_getTransactionReceipt" => {
                let hash = result["transactionHash"].as_str().map(str::to_owned);
                match hash {
                    Some(hash) if !self.visible(&hash) => Value::Null,
                    _ => {
                        if let Some(logs) = result.get_mut("logs").and_then(Value::as_array_mut) {
                            self.unstamp(logs);
                        }
                        result
                    }
                }
            }
            "eth_getLogs" => {
                if let Some(logs) = result.as_array_mut() {
                    logs.retain(|log| log["transactionHash"].as_str().is_none_or(|hash| self.visible(hash)));
                    self.unstamp(logs);
                }
                result
            }
            _ => result,
        }
    }

    fn unstamp(&self, logs: &mut [Value]) {
        if !self.stamps_logs {
            for log in logs.iter_mut().filter_map(Value::as_object_mut) {
                log.remove("blockTimestamp");
            }
        }
    }
}

async fn forward(State(proxy): State<LaggingRpc>, Json(request): Json<Value>) -> Json<Value> {
    let method = request["method"].as_str().unwrap_or_default().to_owned();
    let input = request["params"][0]["input"].as_str().or(request["params"][0]["data"].as_str());
    // Calls are told apart by their selector (the first 4 bytes of the call data).
    let counted = match (method.as_str(), input) {
        ("eth_call", Some(input)) => format!("eth_call {}", input.get(..10).unwrap_or(input)),
        _ => method.clone(),
    };
    let interlude = match (method.as_str(), input) {
        ("eth_estimateGas", Some(input)) => proxy.interlude_around_estimating(input),
        _ => None,
    };
    let after = match interlude {
        Some(Interlude { before, after, .. }) => {
            before.await;
            Some(after)
        }
        None => None,
    };
    let expiry =
        format!("eth_call 0x{}", alloy::primitives::hex::encode(Agentripe::depositExpiresAtCall::SELECTOR));
    if counted == expiry && proxy.take_zero_expiry() {
        return Json(
            json!({ "jsonrpc": "2.0", "id": request["id"], "result": format!("0x{}", "00".repeat(32)) }),
        );
    }
    *proxy.calls.lock().expect("lock").entry(counted).or_default() += 1;
    let answer: Value = match proxy.http.post(&proxy.upstream).json(&request).send().await {
        Ok(response) => response.json().await.unwrap_or(Value::Null),
        Err(error) => {
            json!({ "jsonrpc": "2.0", "id": request["id"], "error": { "code": -32000, "message": error.to_string() } })
        }
    };
    let mut answer = answer;
    if let Some(result) = answer.get_mut("result") {
        *result = proxy.lag_behind(&method, result.take());
    }
    if let Some(after) = after {
        after.await;
    }
    Json(answer)
}
