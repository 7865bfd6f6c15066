//! A real marketplace for tests and load runs: anvil, the four contracts, a registered vendor, funded
//! buyers, and the server on a loopback port over SQLite or PostgreSQL.

use std::{path::PathBuf, time::Duration};

use crate::{Config, Running};
use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, IdentityRegistry, ReputationRegistry, TestUSDC},
};
use agentripe_store::testing::{Engine, fresh_database_url};
use agentripe_x402::{Authorization, ExactEvmPayload, Network, Offer, encode_header, v1, v2};
use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::{SignerSync, local::PrivateKeySigner},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};

pub const PRICE: u64 = 100_000;
/// The anvil account that mints test USDC.
const MINTER: usize = 9;
pub const CATALOG: &str = r#"{"name":"Translator","description":"Translates text","x402Support":true,"services":[{"name":"x402","endpoint":"/","catalog":[{"path":"translate","price":"$0.10","type":"async","description":"Translate text"}]}]}"#;

#[derive(Debug)]
pub struct Market {
    pub anvil: AnvilInstance,
    pub provider: DynProvider,
    pub deployment: Deployment,
    pub operator: PrivateKeySigner,
    pub vendor: PrivateKeySigner,
    pub agent_id: U256,
    pub database_url: String,
}

pub fn key(anvil: &AnvilInstance, index: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_signing_key(anvil.keys()[index].clone().into())
}

impl Market {
    /// A fresh chain and database; `None` when the engine is PostgreSQL and it is unreachable outside CI.
    pub async fn new(engine: Engine, label: &str) -> Option<Self> {
        Self::with_deposit_timeout(engine, label, 7 * 24 * 3600).await
    }

    /// A market whose escrow lets deposits expire after `deposit_timeout` seconds.
    pub async fn with_deposit_timeout(engine: Engine, label: &str, deposit_timeout: u64) -> Option<Self> {
        // RUST_LOG=agentripe_server=debug shows the server's side of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let database_url = fresh_database_url(engine, label).await?;
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/anvil");
        let anvil = Anvil::at(binary).spawn();
        let operator = key(&anvil, 0);
        let vendor = key(&anvil, 1);
        let provider =
            ProviderBuilder::new().wallet(operator.clone()).connect_http(anvil.endpoint_url()).erased();
        // Test USDC is minted by a key of its own: the operator's nonces belong to the server.
        let usdc = TestUSDC::deploy(&provider, key(&anvil, MINTER).address()).await.expect("deploy TestUSDC");
        let identity = IdentityRegistry::deploy(&provider).await.expect("deploy IdentityRegistry");
        let reputation =
            ReputationRegistry::deploy(&provider, *identity.address()).await.expect("deploy reputation");
        let escrow = Agentripe::deploy(
            &provider,
            *usdc.address(),
            *identity.address(),
            operator.address(),
            operator.address(),
            U256::from(deposit_timeout),
        )
        .await
        .expect("deploy Agentripe");

        let deployment = Deployment {
            chain_id: provider.get_chain_id().await.expect("chain id"),
            agentripe: *escrow.address(),
            usdc: *usdc.address(),
            usdc_is_test_token: true,
            identity_registry: *identity.address(),
            reputation_registry: *reputation.address(),
            operator: operator.address(),
            deposit_timeout_seconds: deposit_timeout,
            start_block: 0,
        };
        let mut market =
            Self { anvil, provider, deployment, operator, vendor, agent_id: U256::ZERO, database_url };
        market.agent_id = market
            .register_agent(&format!("data:application/json;base64,{}", STANDARD.encode(CATALOG)))
            .await;
        Some(market)
    }

    /// Registers another agent of the vendor's, whose registration file is at `uri`.
    pub async fn register_agent(&self, uri: &str) -> U256 {
        let as_vendor =
            ProviderBuilder::new().wallet(self.vendor.clone()).connect_http(self.anvil.endpoint_url());
        let receipt = IdentityRegistry::new(self.deployment.identity_registry, &as_vendor)
            .register_2(uri.to_owned())
            .send()
            .await
            .expect("register")
            .get_receipt()
            .await
            .expect("mined");
        receipt.decoded_log::<IdentityRegistry::Registered>().expect("Registered").agentId
    }

    pub fn config(&self) -> Config {
        let mut config = Config::new(
            self.anvil.endpoint(),
            self.deployment.clone(),
            self.operator.clone(),
            self.database_url.clone(),
        );
        config.poll_interval = Duration::from_millis(20);
        config.chain_timeout = Duration::from_secs(10);
        config.reconcile_interval = Duration::from_millis(200);
        config
    }

    pub async fn start(&self) -> Server {
        self.start_with(self.config()).await
    }

    pub async fn start_with(&self, mut config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        config.public_url = base.clone();
        let running = crate::start(config, listener).await.expect("server starts");
        Server { running, base, http: reqwest::Client::new() }
    }

    /// A new buyer holding `amount` test USDC (and gas, though x402 buyers need none).
    pub async fn buyer(&self, amount: u64) -> PrivateKeySigner {
        let buyer = PrivateKeySigner::random();
        if amount > 0 {
            self.mint(buyer.address(), amount).await;
        }
        buyer
    }

    /// Mints test USDC to `to`.
    pub async fn mint(&self, to: Address, amount: u64) {
        let minter =
            ProviderBuilder::new().wallet(key(&self.anvil, MINTER)).connect_http(self.anvil.endpoint_url());
        TestUSDC::new(self.deployment.usdc, &minter)
            .mint(to, U256::from(amount))
            .send()
            .await
            .expect("mint")
            .watch()
            .await
            .expect("mined");
    }

    /// Sends `account` 1 ETH for gas from an anvil account (x402 buyers need none; withdrawing does).
    pub async fn fund_gas(&self, account: Address) {
        use alloy::{network::TransactionBuilder, rpc::types::TransactionRequest};
        let funder =
            ProviderBuilder::new().wallet(key(&self.anvil, 8)).connect_http(self.anvil.endpoint_url());
        let transfer = TransactionRequest::default().with_to(account).with_value(U256::from(10u128.pow(18)));
        funder.send_transaction(transfer).await.expect("send ETH").watch().await.expect("mined");
    }

    /// What `account` may withdraw from the escrow.
    pub async fn credit(&self, account: Address) -> U256 {
        Agentripe::new(self.deployment.agentripe, &self.provider)
            .withdrawableBalance(account)
            .call()
            .await
            .expect("withdrawable balance")
    }

    /// Submits a signed payment on chain from anvil account `index`: what a facilitator, or a
    /// front-runner, does with it.
    pub async fn submit_payment(
        &self,
        index: usize,
        payment: &ExactEvmPayload,
    ) -> alloy::rpc::types::TransactionReceipt {
        let submitter =
            ProviderBuilder::new().wallet(key(&self.anvil, index)).connect_http(self.anvil.endpoint_url());
        TestUSDC::new(self.deployment.usdc, &submitter)
            .call_builder(&crate::facilitator::settlement_call(payment))
            .send()
            .await
            .expect("submit")
            .get_receipt()
            .await
            .expect("mined")
    }

    pub fn offer(&self) -> Offer {
        Offer {
            network: Network::new(self.deployment.chain_id),
            asset: self.deployment.usdc,
            pay_to: self.deployment.agentripe,
            amount: U256::from(PRICE),
            max_timeout_seconds: 300,
            token_name: "USDC".into(),
            token_version: "2".into(),
        }
    }

    /// A good authorization of the price to the escrow, valid for two minutes.
    pub fn authorization(&self, buyer: &PrivateKeySigner) -> Authorization {
        Authorization {
            from: buyer.address(),
            to: self.deployment.agentripe,
            value: U256::from(PRICE),
            valid_after: U256::ZERO,
            valid_before: U256::from(now() + 120),
            nonce: alloy::primitives::keccak256(PrivateKeySigner::random().to_bytes()),
        }
    }

    pub fn sign(
        &self,
        signer: &PrivateKeySigner,
        offer: &Offer,
        authorization: Authorization,
    ) -> ExactEvmPayload {
        let message = authorization.message();
        let signature = signer.sign_typed_data_sync(&message, &offer.token_domain()).expect("sign");
        ExactEvmPayload { signature: signature.as_bytes().to_vec().into(), authorization }
    }

    /// A `PAYMENT-SIGNATURE` header (v2) accepting `accepted`.
    pub fn v2_header(&self, payload: ExactEvmPayload, accepted: v2::PaymentRequirements) -> String {
        encode_header(&v2::PaymentPayload {
            x402_version: 2,
            resource: None,
            accepted,
            payload,
            extensions: None,
        })
    }

    /// An `X-PAYMENT` header (v1).
    pub fn v1_header(&self, payload: ExactEvmPayload) -> String {
        encode_header(&v1::PaymentPayload {
            x402_version: 1,
            scheme: "exact".into(),
            network: self.offer().network.v1_name(),
            payload,
        })
    }

    /// A good v2 payment by `buyer`.
    pub fn pay_v2(&self, buyer: &PrivateKeySigner) -> String {
        let payload = self.sign(buyer, &self.offer(), self.authorization(buyer));
        self.v2_header(payload, v2::PaymentRequirements::for_offer(&self.offer()))
    }

    pub async fn usdc_balance(&self, owner: Address) -> U256 {
        TestUSDC::new(self.deployment.usdc, &self.provider).balanceOf(owner).call().await.expect("balance")
    }

    pub async fn deposit(&self, id: B256) -> Agentripe::getDepositReturn {
        Agentripe::new(self.deployment.agentripe, &self.provider)
            .getDeposit(id)
            .call()
            .await
            .expect("getDeposit")
    }
}

#[derive(Debug)]
pub struct Server {
    pub running: Running,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Buys the translation with `body` as a new funded buyer; returns the buyer and the task id.
    pub async fn purchase(&self, market: &Market, body: &serde_json::Value) -> (PrivateKeySigner, String) {
        let buyer = market.buyer(PRICE).await;
        let response =
            self.buy(market.agent_id, ("PAYMENT-SIGNATURE", &market.pay_v2(&buyer)), &body.to_string()).await;
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.expect("json");
        let task = json["taskId"].as_str().expect("taskId").to_owned();
        (buyer, task)
    }

    /// `POST /vendor/tasks/{task}/{action}` as the market's vendor; returns the status and the body.
    pub async fn vendor(
        &self,
        market: &Market,
        action: &str,
        task: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/vendor/tasks/{task}/{action}", self.base))
            .headers(vendor_headers(&market.vendor, market.agent_id, now()))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    /// `GET /tasks/{task}`.
    pub async fn task(&self, task: &str) -> serde_json::Value {
        self.http
            .get(format!("{}/tasks/{task}", self.base))
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    /// Polls the task until its escrow status is `expected` (the reconciler's work), for up to 7.5 s.
    pub async fn escrow_status_eventually(&self, task: &str, expected: &str) -> serde_json::Value {
        for _ in 0..150 {
            let body = self.task(task).await;
            if body["task"]["escrowStatus"] == expected {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {task} never reached escrow status {expected}");
    }

    pub fn purchase_url(&self, agent_id: U256) -> String {
        format!("{}/{agent_id}/translate", self.base)
    }

    pub async fn buy(&self, agent_id: U256, header: (&str, &str), body: &str) -> reqwest::Response {
        self.http
            .post(self.purchase_url(agent_id))
            .header(header.0, header.1)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Runs the test body on each engine (PostgreSQL skipped loudly when unreachable outside CI).
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for engine in
                [agentripe_store::testing::Engine::Sqlite, agentripe_store::testing::Engine::Postgres]
            {
                if let Some(market) = $crate::testing::Market::new(engine, stringify!($name)).await {
                    let test: fn($crate::testing::Market) -> _ = $body;
                    test(market).await;
                }
            }
        }
    };
}

/// The four vendor headers, signed by `signer` for `agent_id` at `timestamp`, as Agentripe's guide does.
pub fn vendor_headers(
    signer: &PrivateKeySigner,
    agent_id: U256,
    timestamp: u64,
) -> reqwest::header::HeaderMap {
    let address = signer.address().to_checksum(None);
    let signature = signer.sign_message_sync(format!("{address}:{timestamp}").as_bytes()).expect("sign");
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in [
        ("x-vendor-address", address),
        ("x-agent-id", agent_id.to_string()),
        ("x-timestamp", timestamp.to_string()),
        ("x-signature", format!("0x{}", alloy::primitives::hex::encode(signature.as_bytes()))),
    ] {
        headers.insert(name, value.parse().expect("header value"));
    }
    headers
}

/// One scripted answer of the fake LLM.
#[derive(Clone, Debug)]
pub enum LlmAnswer {
    /// A chat completion whose message content is this text.
    Says(String),
    /// An HTTP error with this status.
    Status(u16),
    /// Waits this long, then says the text.
    Slow(std::time::Duration, String),
}

impl LlmAnswer {
    pub fn verdict(approved: bool, reason: &str) -> Self {
        Self::Says(serde_json::json!({ "approved": approved, "reason": reason }).to_string())
    }
}

/// An OpenAI-compatible chat-completions server on loopback that plays a script; past its end it
/// answers 500. It records every request it receives.
#[derive(Debug, Clone)]
pub struct ScriptedLlm {
    pub base_url: String,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<LlmAnswer>>>,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl ScriptedLlm {
    pub async fn start(script: Vec<LlmAnswer>) -> Self {
        use axum::{Json, extract::State, http::StatusCode, response::IntoResponse, routing::post};
        let llm = Self {
            base_url: String::new(),
            script: std::sync::Arc::new(std::sync::Mutex::new(script.into())),
            requests: std::sync::Arc::default(),
        };
        async fn complete(
            State(llm): State<ScriptedLlm>,
            Json(request): Json<serde_json::Value>,
        ) -> axum::response::Response {
            llm.requests.lock().expect("lock").push(request.clone());
            let answer = llm.script.lock().expect("lock").pop_front();
            let content = match answer {
                None => return (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
                Some(LlmAnswer::Status(status)) => {
                    let status = StatusCode::from_u16(status).expect("status");
                    let body = serde_json::json!({"error": {"message": "scripted failure", "type": "server_error", "param": null, "code": null}});
                    return (status, Json(body)).into_response();
                }
                Some(LlmAnswer::Says(text)) => text,
                Some(LlmAnswer::Slow(delay, text)) => {
                    tokio::time::sleep(delay).await;
                    text
                }
            };
            Json(serde_json::json!({
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": request["model"],
                "choices": [{ "index": 0, "finish_reason": "stop", "message": { "role": "assistant", "content": content } }],
                "usage": { "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120 }
            }))
            .into_response()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("address"));
        let app = axum::Router::new().route("/v1/chat/completions", post(complete)).with_state(llm.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, ..llm }
    }

    /// Adds answers to the end of the script.
    pub fn push(&self, answers: impl IntoIterator<Item = LlmAnswer>) {
        self.script.lock().expect("lock").extend(answers);
    }

    /// The reviewer settings pointing at this server.
    pub fn reviewer(&self) -> agentripe_review::ReviewerConfig {
        agentripe_review::ReviewerConfig {
            base_url: self.base_url.clone(),
            api_key: "test-key".into(),
            model: "scripted-reviewer".into(),
            timeout: Duration::from_secs(2),
            max_retries: 0,
            backoff: Duration::from_millis(10),
            structured_output: true,
            breaker_threshold: 100,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}
