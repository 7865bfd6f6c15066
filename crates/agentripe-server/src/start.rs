//! Start-up: connect to the chain and the database, check that they are the ones configured, wire the
//! pipelines, and serve. The reconciler runs beside the server from the first moment.

use std::{sync::Arc, time::Duration};

use agentripe_chain::bindings::{Agentripe, IERC3009};
use agentripe_review::{OpenAiReviewer, Reviewer};
use agentripe_store::Store;
use alloy::{
    primitives::{Address, U256},
    providers::{DynProvider, Provider},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    AppState, Config, FacilitatorConfig,
    agent_index::AgentIndex,
    catalog::Catalog,
    chain_writer::{ChainWriter, WriteError},
    escrow_audit::EscrowAudit,
    money_in::{
        AfterAReorg, MoneyIn,
        facilitator::{Facilitator, RemoteFacilitator},
    },
    money_out::MoneyOut,
    operator_funds::OperatorFunds,
    pipeline::PipelineError,
    registrar::Registrar,
    routes,
    vendor_auth::Authorizations,
    verdicts::Verdicts,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    RpcUrl(String),
    #[error("the RPC serves chain {actual}, the deployment is on chain {expected}")]
    WrongChain { expected: u64, actual: u64 },
    #[error("cannot reach the chain: {0}")]
    Chain(String),
    #[error("the remote facilitator cannot settle our payments: {0}")]
    Facilitator(String),
    #[error(
        "the escrow {escrow}'s operator is {on_chain}, but OPERATOR_PRIVATE_KEY is {configured}'s: every purchase \
         would be charged and then fail to be recorded. Use the operator's key, or have the escrow's owner appoint this one"
    )]
    WrongOperator { escrow: Address, on_chain: Address, configured: Address },
    #[error(
        "the token {token} signs under another EIP-712 domain than TOKEN_EIP712_NAME {name:?} / TOKEN_EIP712_VERSION \
         {version:?}: every buyer's signature would be refused (USDC is \"USDC\" on Base Sepolia, \"USD Coin\" on Base)"
    )]
    TokenDomain { token: Address, name: String, version: String },
    #[error(
        "the escrow {escrow} lets deposits expire after {on_chain} s, but the deployment file says \
         {configured} s: every task would expire at the wrong time. Use the deployment file this escrow was deployed with"
    )]
    WrongDepositTimeout { escrow: Address, on_chain: u64, configured: u64 },
    #[error(transparent)]
    Store(#[from] agentripe_store::StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A running server.
#[derive(Debug)]
pub struct Running {
    pub state: AppState,
    pub reconciler: JoinHandle<()>,
    pub indexer: JoinHandle<()>,
    pub http: JoinHandle<std::io::Result<()>>,
    /// Tells the HTTP server to stop: see [`Self::stop`].
    stop_http: watch::Sender<bool>,
}

impl Running {
    /// Stops serving, reconciling and indexing at once. Work they spawned (a payment being advanced, a
    /// batch being written) runs on: only ending the runtime stops that, as tests' `Server::crash` does.
    pub fn abort(&self) {
        self.http.abort();
        self.reconciler.abort();
        self.indexer.abort();
    }

    /// Stops as a restart should: closes the listener and refuses new purchases (503, nothing
    /// charged), lets every request in flight be answered and every purchase already claimed (its buyer
    /// gone or not) finish, then stops reconciling and indexing. What `patience` leaves unfinished, and
    /// a payment the reconciler was advancing, stay as a crash would leave them, for the next start's
    /// reconciler. Whether everything finished.
    pub async fn stop(&mut self, patience: Duration) -> bool {
        self.stop_http.send_replace(true);
        self.state.money_in.stop_taking_purchases();
        let finished = tokio::time::timeout(patience, async {
            // A handle is polled only until it finishes: a second stop skips it.
            if !self.http.is_finished() {
                match (&mut self.http).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "the HTTP server stopped with an error"),
                    Err(error) => tracing::warn!(%error, "the HTTP server did not stop cleanly"),
                }
            }
            self.state.money_in.purchases_finished().await;
        })
        .await
        .is_ok();
        self.abort();
        finished
    }

    /// Serves until the HTTP server fails or the process is asked to stop (Ctrl-C; SIGTERM on unix),
    /// then [`Self::stop`]s, a little more patient than a purchase is; asked again meanwhile, it returns
    /// at once.
    pub async fn serve_until_signalled(mut self) -> std::io::Result<()> {
        let mut signals = StopSignals::install()?;
        tokio::select! {
            served = &mut self.http => return served.map_err(std::io::Error::other)?,
            asked = signals.next() => asked?,
        }
        // A purchase's answer may come a poll and a read after its timeout.
        let patience = self.state.config.purchase_timeout + STOP_MARGIN;
        tracing::info!(?patience, "stopping: answering the requests in flight and finishing their purchases");
        tokio::select! {
            finished = self.stop(patience) => match finished {
                true => tracing::info!("stopped"),
                false => tracing::warn!("stopped with work in flight; the next start's reconciler finishes it"),
            },
            asked = signals.next() => {
                asked?;
                tracing::warn!("asked again: stopping at once; the next start's reconciler finishes what was in flight");
            }
        }
        Ok(())
    }
}

/// How much longer than a purchase's timeout a stopping server waits for its answers.
const STOP_MARGIN: Duration = Duration::from_secs(5);

/// The ways a process is asked to stop: Ctrl-C, and SIGTERM (what supervisors send) where it exists.
struct StopSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            #[cfg(unix)]
            terminate: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?,
        })
    }

    /// Returns when the process is next asked to stop.
    async fn next(&mut self) -> std::io::Result<()> {
        #[cfg(unix)]
        tokio::select! {
            interrupted = tokio::signal::ctrl_c() => interrupted,
            _ = self.terminate.recv() => Ok(()),
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await
    }
}

/// Connects to the chain and the database, and serves the API on `listener`.
pub async fn start(config: Config, listener: TcpListener) -> Result<Running, StartError> {
    let provider = config.connect_chain().map_err(StartError::RpcUrl)?;
    let chain_id = provider.get_chain_id().await.map_err(|error| StartError::Chain(error.to_string()))?;
    if chain_id != config.deployment.chain_id {
        return Err(StartError::WrongChain { expected: config.deployment.chain_id, actual: chain_id });
    }
    check_contracts(&config, &provider).await?;
    let store = Store::connect(&config.database_url).await?;
    let confirmation = config.confirmation();
    let writer = async |key| {
        ChainWriter::new(key, provider.clone(), store.clone(), chain_id, confirmation, config.fees).await
    };
    let operator_funds = Arc::new(OperatorFunds::new(
        provider.clone(),
        config.operator_key.address(),
        config.operator_min_balance,
    ));
    operator_funds.refresh().await.map_err(|error| StartError::Chain(error.to_string()))?;
    let operator = writer(config.operator_key.clone()).await?;
    let facilitator = match &config.facilitator {
        FacilitatorConfig::BuiltIn(None) => Facilitator::BuiltIn(Box::new(operator.clone())),
        FacilitatorConfig::BuiltIn(Some(key)) => Facilitator::BuiltIn(Box::new(writer(key.clone()).await?)),
        FacilitatorConfig::Remote(url) => {
            let remote = RemoteFacilitator::new(url, config.chain_timeout);
            remote
                .check_supported(agentripe_x402::Network::new(chain_id))
                .await
                .map_err(StartError::Facilitator)?;
            Facilitator::Remote(remote)
        }
    };
    let writers: Vec<ChainWriter> = std::iter::once(operator.clone())
        .chain(facilitator.writer().filter(|own| own.address() != operator.address()).cloned())
        .collect();
    let deployment = &config.deployment;
    let money_in = Arc::new(MoneyIn::new(
        store.clone(),
        provider.clone(),
        &config,
        operator.clone(),
        facilitator,
        confirmation,
    ));
    let money_out = Arc::new(MoneyOut::new(
        store.clone(),
        provider.clone(),
        deployment.clone(),
        operator.clone(),
        config.batching,
    ));
    let registrar =
        Arc::new(Registrar::new(store.clone(), provider.clone(), deployment, operator, config.registration));
    let catalog = Arc::new(Catalog::new(
        deployment.identity_registry,
        provider.clone(),
        config.catalog_ttl,
        config.catalog_allow_private,
    ));
    let reviewer = match &config.reviewer {
        Some(reviewer) => Reviewer::OpenAi(Box::new(OpenAiReviewer::new(reviewer.clone()))),
        None => {
            tracing::warn!(
                "no reviewer endpoint configured: tasks with a reviewer_request will wait for one"
            );
            Reviewer::Unconfigured
        }
    };
    let verdicts = Arc::new(Verdicts::new(
        store.clone(),
        reviewer,
        money_out.clone(),
        config.max_rejections,
        config.review_lease,
        config.purchase_timeout,
    ));
    let index =
        AgentIndex::new(store.clone(), provider.clone(), catalog.clone(), deployment, config.token_decimals);
    let indexer = spawn_indexer(index, config.reconcile_interval);
    let escrow_audit = Arc::new(EscrowAudit::new(
        store.clone(),
        provider.clone(),
        deployment,
        config.settlement_lookback_blocks,
    ));
    let reconciler = Reconciler {
        writers,
        escrow_audit: escrow_audit.clone(),
        money_in: money_in.clone(),
        money_out: money_out.clone(),
        registrar: registrar.clone(),
        operator_funds: operator_funds.clone(),
    }
    .spawn(config.reconcile_interval);
    let authorizations = Arc::new(Authorizations::new(
        deployment.identity_registry,
        provider.clone(),
        config.authorization_ttl,
    ));
    let state = AppState {
        config: Arc::new(config),
        store,
        provider,
        catalog,
        money_in,
        money_out,
        verdicts,
        registrar,
        authorizations,
        operator_funds,
        escrow_audit,
    };
    let router = routes::router(state.clone());
    let (stop_http, stop) = watch::channel(false);
    let http = tokio::spawn(crate::http_server::serve(listener, router, state.config.http, stop));
    Ok(Running { state, reconciler, indexer, http, stop_http })
}

/// Refuses to start against contracts that would take buyers' money and then fail: an escrow whose
/// operator is not our key, a token whose EIP-712 domain is not the one buyers are told to sign under.
async fn check_contracts(config: &Config, provider: &DynProvider) -> Result<(), StartError> {
    let deployment = &config.deployment;
    let unreachable = |error: alloy::contract::Error| StartError::Chain(error.to_string());
    let escrow = Agentripe::new(deployment.agentripe, provider);
    let on_chain = escrow.operator().call().await.map_err(unreachable)?;
    let configured = config.operator_key.address();
    if on_chain != configured {
        return Err(StartError::WrongOperator { escrow: deployment.agentripe, on_chain, configured });
    }
    // Each task's expiry is taken as its record's block time plus this timeout.
    let timeout = escrow.depositTimeout().call().await.map_err(unreachable)?;
    if timeout != U256::from(deployment.deposit_timeout_seconds) {
        return Err(StartError::WrongDepositTimeout {
            escrow: deployment.agentripe,
            on_chain: u64::try_from(timeout).unwrap_or(u64::MAX),
            configured: deployment.deposit_timeout_seconds,
        });
    }
    let separator =
        IERC3009::new(deployment.usdc, provider).DOMAIN_SEPARATOR().call().await.map_err(unreachable)?;
    if separator != config.offer(U256::ZERO).token_domain().separator() {
        return Err(StartError::TokenDomain {
            token: deployment.usdc,
            name: config.token_name.clone(),
            version: config.token_version.clone(),
        });
    }
    Ok(())
}

/// Finishes what crashes and timeouts interrupted: at start-up and every `interval`.
struct Reconciler {
    /// Every key we sign with: their transactions that vanished from the chain are redone first.
    writers: Vec<ChainWriter>,
    money_in: Arc<MoneyIn>,
    money_out: Arc<MoneyOut>,
    registrar: Arc<Registrar>,
    operator_funds: Arc<OperatorFunds>,
    escrow_audit: Arc<EscrowAudit>,
}

impl Reconciler {
    fn spawn(self, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            for writer in &self.writers {
                match writer.rebroadcast_pending().await {
                    Ok(0) => {}
                    Ok(sent) => {
                        tracing::info!(sent, signer = %writer.address(), "pending transactions of an earlier run sent again")
                    }
                    Err(error) => {
                        tracing::warn!(%error, signer = %writer.address(), "could not send pending transactions again")
                    }
                }
            }
            loop {
                self.pass().await;
                tokio::time::sleep(interval).await;
            }
        })
    }

    async fn pass(&self) {
        if let Err(error) = self.operator_funds.refresh().await {
            tracing::warn!(%error, "could not read the operator's balance");
        }
        for writer in &self.writers {
            if let Err(error) = self.redo_vanished(writer).await {
                tracing::warn!(%error, signer = %writer.address(), "could not check for vanished transactions");
            }
        }
        if let Err(error) = self.money_in.reconcile_once().await {
            tracing::warn!(%error, "payment reconciler pass failed");
        }
        if let Err(error) = self.money_out.reconcile_once().await {
            tracing::warn!(%error, "payout reconciler pass failed");
        }
        if let Err(error) = self.registrar.reconcile_once().await {
            tracing::warn!(%error, "registration reconciler pass failed");
        }
        if let Err(error) = self.escrow_audit.pass().await {
            tracing::warn!(%error, "escrow audit pass failed");
        }
    }

    /// Heals what a chain come back behind what we saw mined lost of `writer`'s transactions: each is
    /// sent again, unless it must not land now, when its nonce is taken by a transfer of nothing, or its
    /// payment's live holder is still at work on it (asked again on the next pass).
    async fn redo_vanished(&self, writer: &ChainWriter) -> Result<(), PipelineError> {
        for tx in writer.vanished().await? {
            match self.money_in.after_a_reorg(&tx).await? {
                AfterAReorg::SendAgain => writer.send_again(tx).await?,
                AfterAReorg::Void => writer.void(tx).await?,
                AfterAReorg::NotYet => false,
            };
        }
        Ok(())
    }
}

/// Follows the identity registry for the agent index, apart from money: a catch-up over a long history
/// or slow registration files never delay a refund.
fn spawn_indexer(index: AgentIndex, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(error) = index.sync().await {
                tracing::warn!(%error, "agent index pass failed");
            }
            tokio::time::sleep(interval).await;
        }
    })
}
