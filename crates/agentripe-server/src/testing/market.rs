//! A real marketplace: anvil, the contracts on Circle's FiatTokenV2_2 (initialised as Base Sepolia's USDC),
//! a registered vendor agent and funded buyers, with the server started on a loopback port over SQLite or
//! PostgreSQL.

use std::{path::PathBuf, time::Duration};

use super::{Server, now};
use crate::Config;
use agentripe_chain::{
    Deployment,
    bindings::{Agentripe, IERC3009, IdentityRegistry, ReputationRegistry},
    fiat_token::{self, BaseUsdc, FiatToken},
};
use agentripe_store::{
    Store,
    testing::{Engine, fresh_database_url},
};
use agentripe_x402::{
    Authorization, ExactEvmPayload, Network, Offer, client, decode_header, encode_header, v1, v2,
};
use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::{BlockNumberOrTag, Filter, TransactionReceipt},
    signers::local::PrivateKeySigner,
    sol_types::SolEvent,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};

pub const PRICE: u64 = 100_000;
/// The anvil account that holds every role of the token: minter, pauser, blacklister.
const MINTER: usize = 9;
/// The anvil account that owns the escrow (appoints its operator).
const OWNER: usize = 2;
pub const CATALOG: &str = r#"{"name":"Translator","description":"Translates text","x402Support":true,"services":[{"name":"x402","endpoint":"/","catalog":[{"path":"translate","price":"$0.10","type":"async","description":"Translate text"}]}]}"#;

/// Where a transaction sent while blocks are held lands among the server's in the next block.
#[derive(Clone, Copy, Debug)]
pub enum InBlock {
    First,
    Last,
}

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
        Self::build(engine, label, deposit_timeout, &[]).await
    }

    /// A market for load runs: anvil keeps the last 256 states in memory and none older (by default it
    /// writes each older one to disk, which slows every block of a long run: the settlement rate alone
    /// fell from 230/s over 1,000 settlements to 142/s over 2,000), so a run measures the server.
    pub async fn for_load(engine: Engine, label: &str) -> Option<Self> {
        Self::build(engine, label, 7 * 24 * 3600, &["--prune-history", "256"]).await
    }

    async fn build(engine: Engine, label: &str, deposit_timeout: u64, anvil_args: &[&str]) -> Option<Self> {
        // RUST_LOG=agentripe_server=debug shows the server's side of a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let database_url = fresh_database_url(engine, label).await?;
        let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../node_modules/.bin/anvil");
        let anvil = Anvil::at(binary).args(anvil_args).spawn();
        let operator = key(&anvil, 0);
        let vendor = key(&anvil, 1);
        let provider =
            ProviderBuilder::new().wallet(operator.clone()).connect_http(anvil.endpoint_url()).erased();
        // The token's roles are a key of their own: the operator's nonces belong to the server.
        let token_admin =
            ProviderBuilder::new().wallet(key(&anvil, MINTER)).connect_http(anvil.endpoint_url());
        let usdc = fiat_token::deploy(&provider, Address::repeat_byte(0xad), &token_admin, BaseUsdc::Sepolia)
            .await
            .expect("deploy FiatToken");
        let identity = IdentityRegistry::deploy(&provider).await.expect("deploy IdentityRegistry");
        let reputation =
            ReputationRegistry::deploy(&provider, *identity.address()).await.expect("deploy reputation");
        let escrow = Agentripe::deploy(
            &provider,
            usdc,
            *identity.address(),
            operator.address(),
            key(&anvil, OWNER).address(),
            U256::from(deposit_timeout),
        )
        .await
        .expect("deploy Agentripe");

        let deployment = Deployment {
            chain_id: provider.get_chain_id().await.expect("chain id"),
            agentripe: *escrow.address(),
            usdc,
            usdc_is_test_token: false,
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
        // Test catalogs are served on loopback.
        config.catalog_allow_private = true;
        // Every test client is 127.0.0.1, and many tests burst or open many connections
        // (tests/hostile_input.rs turns both limits on).
        config.rate_limit = None;
        config.http.max_connections_per_client = None;
        config
    }

    pub async fn start(&self) -> Server {
        self.start_with(self.config()).await
    }

    /// Starts a server on a runtime of its own, so that [`Server::crash`] stops every task it started, as
    /// the death of its process would.
    pub async fn start_with(&self, mut config: Config) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        config.public_url = base.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the server's runtime");
        let running = runtime
            .spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                crate::start(config, listener).await
            })
            .await
            .expect("starting did not panic")
            .expect("server starts");
        Server::new(running, runtime, base, (self.vendor.clone(), self.agent_id))
    }

    /// Stops mining: transactions wait in the node's pool until [`Self::resume_mining`].
    pub async fn hold_blocks(&self) {
        let _: () =
            self.provider.raw_request("evm_setAutomine".into(), (false,)).await.expect("automine off");
    }

    /// Mines what waits, and every transaction at once from now on.
    pub async fn resume_mining(&self) {
        let _: () = self.provider.raw_request("evm_setAutomine".into(), (true,)).await.expect("automine on");
        let _: serde_json::Value = self.provider.raw_request("evm_mine".into(), ()).await.expect("mine");
    }

    /// A new buyer holding `amount` USDC (and no gas: x402 buyers need none).
    pub async fn buyer(&self, amount: u64) -> PrivateKeySigner {
        let buyer = PrivateKeySigner::random();
        if amount > 0 {
            self.mint(buyer.address(), amount).await;
        }
        buyer
    }

    /// The escrow's owner appoints `operator`: what an operator-key rotation does under a running server.
    pub async fn appoint_operator(&self, operator: Address) {
        let owner =
            ProviderBuilder::new().wallet(key(&self.anvil, OWNER)).connect_http(self.anvil.endpoint_url());
        Agentripe::new(self.deployment.agentripe, &owner)
            .setOperator(operator)
            .send()
            .await
            .expect("setOperator")
            .watch()
            .await
            .expect("mined");
    }

    /// Sends the owner's appointment of `operator` without waiting for a block. With blocks held, `place`
    /// puts it ahead of or behind the server's transactions in the next one: anvil fills a block in order
    /// of fees (the most a transaction may pay per gas).
    pub async fn appoint_operator_in_pool(&self, operator: Address, place: InBlock) {
        let owner_key = key(&self.anvil, OWNER);
        let owner = ProviderBuilder::new().wallet(owner_key.clone()).connect_http(self.anvil.endpoint_url());
        let escrow = Agentripe::new(self.deployment.agentripe, &owner);
        self.send_in_pool(escrow.setOperator(operator), owner_key.address(), place).await;
    }

    /// Circle blacklists `account` without waiting for a block, at `place` in the next one (see
    /// [`Self::appoint_operator_in_pool`]).
    pub async fn blacklist_in_pool(&self, account: Address, place: InBlock) {
        let admin_key = key(&self.anvil, MINTER);
        let admin = ProviderBuilder::new().wallet(admin_key.clone()).connect_http(self.anvil.endpoint_url());
        let token = FiatToken::new(self.deployment.usdc, &admin);
        self.send_in_pool(token.blacklist(account), admin_key.address(), place).await;
    }

    /// Sends `sender`'s `call` without waiting for a block, at `place` in the next one.
    async fn send_in_pool<P: Provider, C: alloy::sol_types::SolCall>(
        &self,
        call: alloy::contract::SolCallBuilder<P, C>,
        sender: Address,
        place: InBlock,
    ) {
        let nonce = self.provider.get_transaction_count(sender).pending().await.expect("nonce");
        let (tip, max_fee) = match place {
            InBlock::First => (1_000_000_000_000, 2_000_000_000_000),
            // Just above the next base fee (which moves by an eighth at most), well under what the server
            // offers (twice the base fee and more).
            InBlock::Last => {
                let block = self
                    .provider
                    .get_block_by_number(BlockNumberOrTag::Latest)
                    .await
                    .expect("rpc")
                    .expect("block");
                let base_fee = u128::from(block.header.base_fee_per_gas.expect("a London chain"));
                (0, base_fee * 6 / 5)
            }
        };
        let call = call.nonce(nonce).gas(100_000).max_priority_fee_per_gas(tip).max_fee_per_gas(max_fee);
        let _pending = call.send().await.expect("sent to the pool");
    }

    /// Mints USDC to `to`.
    pub async fn mint(&self, to: Address, amount: u64) {
        self.as_token_admin(|token| token.mint(to, U256::from(amount))).await;
    }

    /// Circle blacklists `account`: the token refuses every transfer to or from it.
    pub async fn blacklist(&self, account: Address) {
        self.as_token_admin(|token| token.blacklist(account)).await;
    }

    /// Circle lifts the blacklisting of `account`.
    pub async fn unblacklist(&self, account: Address) {
        self.as_token_admin(|token| token.unBlacklist(account)).await;
    }

    /// Circle pauses the token: no transfer at all until `unpause`.
    pub async fn pause_token(&self) {
        self.as_token_admin(|token| token.pause()).await;
    }

    pub async fn unpause_token(&self) {
        self.as_token_admin(|token| token.unpause()).await;
    }

    /// Sends one call of the token's admin (anvil account MINTER) and waits until it is mined.
    async fn as_token_admin<C: alloy::sol_types::SolCall>(
        &self,
        call: impl FnOnce(
            &FiatToken::FiatTokenInstance<DynProvider>,
        ) -> alloy::contract::SolCallBuilder<&DynProvider, C>,
    ) {
        let admin = ProviderBuilder::new()
            .wallet(key(&self.anvil, MINTER))
            .connect_http(self.anvil.endpoint_url())
            .erased();
        let token = FiatToken::new(self.deployment.usdc, admin);
        let receipt =
            call(&token).send().await.expect("token admin call").get_receipt().await.expect("mined");
        assert!(receipt.status(), "the token admin's call reverted");
    }

    /// Sends `account` 1 ETH for gas from an anvil account (x402 buyers and payees need none).
    pub async fn fund_gas(&self, account: Address) {
        use alloy::{network::TransactionBuilder, rpc::types::TransactionRequest};
        let funder =
            ProviderBuilder::new().wallet(key(&self.anvil, 8)).connect_http(self.anvil.endpoint_url());
        let transfer = TransactionRequest::default().with_to(account).with_value(U256::from(10u128.pow(18)));
        funder.send_transaction(transfer).await.expect("send ETH").watch().await.expect("mined");
    }

    /// A plain token transfer of `amount` from `sender` into the escrow (a stray transfer, or one a
    /// facilitator passes off as a settlement), with gas for it; its receipt.
    pub async fn transfer_to_escrow(&self, sender: &PrivateKeySigner, amount: u64) -> TransactionReceipt {
        self.fund_gas(sender.address()).await;
        let as_sender = ProviderBuilder::new().wallet(sender.clone()).connect_http(self.anvil.endpoint_url());
        IERC3009::new(self.deployment.usdc, &as_sender)
            .transfer(self.deployment.agentripe, U256::from(amount))
            .send()
            .await
            .expect("transfer")
            .get_receipt()
            .await
            .expect("mined")
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
        IERC3009::new(self.deployment.usdc, &submitter)
            .call_builder(&crate::money_in::facilitator::settlement_call(payment))
            .send()
            .await
            .expect("submit")
            .get_receipt()
            .await
            .expect("mined")
    }

    /// Submits the x402 v2 payment in `header` on chain from anvil account `index`.
    pub async fn submit_header(&self, index: usize, header: &str) -> TransactionReceipt {
        let payment: v2::PaymentPayload = agentripe_x402::decode_header(header).expect("a v2 payment");
        self.submit_payment(index, &payment.payload).await
    }

    /// A chain writer for the operator's key on `store`, configured as the server's.
    pub async fn operator_writer(&self, store: &Store) -> crate::chain_writer::ChainWriter {
        let config = self.config();
        crate::chain_writer::ChainWriter::new(
            self.operator.clone(),
            self.provider.clone(),
            store.clone(),
            self.deployment.chain_id,
            config.confirmation(),
            config.fees,
        )
        .await
        .expect("an operator writer")
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
            nonce: B256::random(),
        }
    }

    pub fn sign(
        &self,
        signer: &PrivateKeySigner,
        offer: &Offer,
        authorization: Authorization,
    ) -> ExactEvmPayload {
        ExactEvmPayload::sign(signer, offer, authorization).expect("sign")
    }

    /// A `PAYMENT-SIGNATURE` header (v2) accepting `accepted`.
    pub fn v2_header(&self, payload: ExactEvmPayload, accepted: v2::PaymentRequirements) -> String {
        encode_header(&v2::PaymentPayload::new(accepted, None, payload))
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

    /// A good v2 payment by `buyer`, signed the way every client of ours signs.
    pub fn pay_v2(&self, buyer: &PrivateKeySigner) -> String {
        let accepted = v2::PaymentRequirements::for_offer(&self.offer());
        encode_header(&client::pay(buyer, &accepted, None, now()).expect("sign"))
    }

    pub async fn usdc_balance(&self, owner: Address) -> U256 {
        IERC3009::new(self.deployment.usdc, &self.provider).balanceOf(owner).call().await.expect("balance")
    }

    pub async fn deposit(&self, id: B256) -> Agentripe::getDepositReturn {
        Agentripe::new(self.deployment.agentripe, &self.provider)
            .getDeposit(id)
            .call()
            .await
            .expect("getDeposit")
    }

    /// The transaction that settled the payment in `header` (a v2 header), found from its
    /// `AuthorizationUsed` log; it must be the only one.
    pub async fn settlement_of(&self, header: &str) -> B256 {
        let payment: v2::PaymentPayload = decode_header(header).expect("decodes");
        let filter = Filter::new()
            .address(self.deployment.usdc)
            .event_signature(IERC3009::AuthorizationUsed::SIGNATURE_HASH)
            .topic1(payment.payload.authorization.from.into_word())
            .topic2(payment.payload.authorization.nonce)
            .from_block(0);
        let logs = self.provider.get_logs(&filter).await.expect("logs");
        assert_eq!(logs.len(), 1, "settled exactly once");
        logs[0].transaction_hash.expect("mined")
    }

    /// When the task `id` expires as the server stored it, and when its deposit expires on chain, both in
    /// unix milliseconds.
    pub async fn expiries(&self, id: B256) -> (i64, i64) {
        let store = Store::connect(&self.database_url).await.expect("store");
        let task = store.task(&crate::util::hex(id)).await.expect("task").expect("a task");
        let on_chain = Agentripe::new(self.deployment.agentripe, &self.provider)
            .depositExpiresAt(id)
            .call()
            .await
            .expect("depositExpiresAt");
        (task.new.expires_at, i64::try_from(on_chain).expect("a timestamp") * 1000)
    }
}
