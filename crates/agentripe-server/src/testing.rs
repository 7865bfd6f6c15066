//! A real marketplace for tests and load runs: anvil, the four contracts, a registered vendor, funded
//! buyers, and the server on a loopback port over SQLite or PostgreSQL.

use std::{path::PathBuf, time::Duration};

use crate::{Config, Running};
use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, IdentityRegistry, ReputationRegistry, TestUSDC},
};
use agentripe_store::testing::{Engine, fresh_database_url};
use agentripe_x402::{
    Authorization, ExactEvmPayload, Network, Offer, encode_header, exact::TransferWithAuthorization, v1, v2,
};
use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::{SignerSync, local::PrivateKeySigner},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};

pub const PRICE: u64 = 100_000;
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
        let usdc = TestUSDC::deploy(&provider, operator.address()).await.expect("deploy TestUSDC");
        let identity = IdentityRegistry::deploy(&provider).await.expect("deploy IdentityRegistry");
        let reputation =
            ReputationRegistry::deploy(&provider, *identity.address()).await.expect("deploy reputation");
        let escrow = Agentripe::deploy(
            &provider,
            *usdc.address(),
            *identity.address(),
            operator.address(),
            operator.address(),
            U256::from(7 * 24 * 3600),
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
            deposit_timeout_seconds: 7 * 24 * 3600,
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
            TestUSDC::new(self.deployment.usdc, &self.provider)
                .mint(buyer.address(), U256::from(amount))
                .send()
                .await
                .expect("mint")
                .watch()
                .await
                .expect("mined");
        }
        buyer
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
        let message = TransferWithAuthorization {
            from: authorization.from,
            to: authorization.to,
            value: authorization.value,
            validAfter: authorization.valid_after,
            validBefore: authorization.valid_before,
            nonce: authorization.nonce,
        };
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
