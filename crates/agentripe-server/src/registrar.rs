//! Registration through the API: the server mints the agent NFT, paying the gas, and hands it to its
//! owner, so the server never keeps custody of anyone's identity. Both chain writes go through the
//! durable writer and every step is stored, so the reconciler finishes what a crash interrupted.

use agentripe_chain::{
    Deployment,
    bindings::{IERC3009, IERC8004Identity},
};
use agentripe_store::{Registration, RegistrationStatus, Store};
use agentripe_x402::ExactEvmPayload;
use alloy::{
    primitives::{Address, B256, U256},
    providers::{DynProvider, Provider},
    rpc::types::{TransactionReceipt, TransactionRequest},
    sol_types::SolCall,
};

use crate::{
    RegistrationLimits,
    chain_writer::{ChainWriter, WriteError},
    money_in::facilitator::settlement_call,
    pipeline::{PipelineError, RpcError, rpc},
    util::{hex, now_ms, to_i64},
};

/// What a transfer of the minted agent to its owner may cost, reserved with the mint's estimate.
const TRANSFER_GAS: u64 = 100_000;
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug)]
pub struct Registrar {
    store: Store,
    provider: DynProvider,
    registry: Address,
    /// The token registration fees are paid in.
    token: Address,
    operator: ChainWriter,
    limits: RegistrationLimits,
    /// One admission at a time, so concurrent registrations cannot all fit the same remaining budget.
    admission: tokio::sync::Mutex<()>,
}

/// Why a registration was refused before the operator spent anything on it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{signer} began {limit} registrations in the last 24 hours, the most this server mints for one signer a day"
    )]
    SignerLimit { signer: Address, limit: i64 },
    #[error("this server's gas budget for registrations ({budget} gas a day) is spent; try again later")]
    BudgetSpent { budget: u64 },
    #[error("the registry would not mint this registration: {0}")]
    Unmintable(String),
    #[error("the registration fee cannot be collected: {0}")]
    FeeUnpaid(String),
}

/// Why a registration did not complete now.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Admitted and stored: the reconciler finishes it.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

fn corrupt(id: i64, detail: impl Into<String>) -> PipelineError {
    PipelineError::corrupt(format!("registration {id}"), detail)
}

impl Registrar {
    pub fn new(
        store: Store,
        provider: DynProvider,
        deployment: &Deployment,
        operator: ChainWriter,
        limits: RegistrationLimits,
    ) -> Self {
        Self {
            store,
            provider,
            registry: deployment.identity_registry,
            token: deployment.usdc,
            operator,
            limits,
            admission: tokio::sync::Mutex::new(()),
        }
    }

    /// Mints an agent at `uri` for `owner`, within the signer's daily limit and the operator's daily gas
    /// budget, after collecting `fee` (a verified x402 payment to the operator) when one is due; returns
    /// its id and the minting transaction.
    pub async fn register(
        &self,
        owner: Address,
        uri: &str,
        fee: Option<&ExactEvmPayload>,
    ) -> Result<(U256, B256), RegisterError> {
        if let Some(fee) = fee {
            self.check_fee(fee).await?;
        }
        let mint = IERC8004Identity::register_2Call { agentURI: uri.to_owned() }.abi_encode();
        let request =
            TransactionRequest::default().from(self.operator.address()).to(self.registry).input(mint.into());
        let gas = match self.provider.estimate_gas(request).await {
            Ok(gas) => gas + TRANSFER_GAS,
            Err(error) => {
                return Err(match error.as_error_resp() {
                    // The node answered: the mint reverts or does not fit a block.
                    Some(answer) => Refusal::Unmintable(answer.message.to_string()).into(),
                    None => PipelineError::from(rpc("estimating a mint")(error)).into(),
                });
            }
        };
        let registration = {
            let _admission = self.admission.lock().await;
            let since = now_ms() - DAY_MS;
            let limit = self.limits.per_signer_per_day;
            if self.store.registrations_by(&hex(owner), since).await.map_err(PipelineError::from)? >= limit {
                return Err(Refusal::SignerLimit { signer: owner, limit }.into());
            }
            let spent =
                u64::try_from(self.store.registration_gas_since(since).await.map_err(PipelineError::from)?)
                    .unwrap_or(u64::MAX);
            let budget = self.limits.gas_per_day;
            if spent.saturating_add(gas) > budget {
                return Err(Refusal::BudgetSpent { budget }.into());
            }
            let fee = fee
                .map(serde_json::to_string)
                .transpose()
                .map_err(|error| PipelineError::corrupt("a registration fee", error.to_string()))?;
            self.store
                .begin_registration(&hex(owner), uri, to_i64(gas), fee.as_deref(), now_ms())
                .await
                .map_err(PipelineError::from)?
        };
        self.advance(registration.id).await
    }

    /// Refuses, before anything is stored or sent, a fee whose authorization is spent or unfunded.
    async fn check_fee(&self, fee: &ExactEvmPayload) -> Result<(), RegisterError> {
        let authorization = &fee.authorization;
        let token = IERC3009::new(self.token, &self.provider);
        let used = token
            .authorizationState(authorization.from, authorization.nonce)
            .call()
            .await
            .map_err(|error| PipelineError::from(rpc("reading the fee's authorization")(error)))?;
        if used {
            return Err(Refusal::FeeUnpaid("its authorization was already used".into()).into());
        }
        let balance = token
            .balanceOf(authorization.from)
            .call()
            .await
            .map_err(|error| PipelineError::from(rpc("reading the payer's balance")(error)))?;
        if balance < authorization.value {
            return Err(Refusal::FeeUnpaid(format!("{} holds less than the fee", authorization.from)).into());
        }
        Ok(())
    }

    /// Collects a registration's fee (or finds it collected), then marks it minting; a fee that cannot
    /// be collected ends the registration before anything is minted.
    async fn collect_fee(&self, registration: &Registration) -> Result<(), RegisterError> {
        let id = registration.id;
        let fee: ExactEvmPayload = registration
            .fee_payment
            .as_deref()
            .and_then(|fee| serde_json::from_str(fee).ok())
            .ok_or_else(|| corrupt(id, "paying without a readable fee payment"))?;
        let receipt = match self
            .operator
            .resume("registration_fee", &id.to_string())
            .await
            .map_err(PipelineError::from)?
        {
            Some(receipt) => receipt,
            None => {
                let input = settlement_call(&fee).abi_encode().into();
                match self
                    .operator
                    .send_and_confirm("registration_fee", &id.to_string(), self.token, input)
                    .await
                {
                    Err(WriteError::WouldRevert(reason)) => return self.fail(id, reason).await,
                    sent => sent.map_err(PipelineError::from)?,
                }
            }
        };
        if !receipt.status() {
            return self.fail(id, format!("the fee transfer {} reverted", receipt.transaction_hash)).await;
        }
        self.store.registration_fee_paid(id, now_ms()).await.map_err(PipelineError::from)?;
        Ok(())
    }

    async fn fail(&self, id: i64, reason: String) -> Result<(), RegisterError> {
        self.store.registration_failed(id, &reason, now_ms()).await.map_err(PipelineError::from)?;
        Err(Refusal::FeeUnpaid(reason).into())
    }

    /// Takes a registration as far as it goes: its fee collected, minted, then transferred to its owner.
    pub async fn advance(&self, id: i64) -> Result<(U256, B256), RegisterError> {
        let mut registration = self.load(id).await?;
        if registration.status().map_err(PipelineError::from)? == RegistrationStatus::Paying {
            self.collect_fee(&registration).await?;
            registration = self.load(id).await?;
        }
        match self.mint_and_transfer(registration).await {
            Ok(minted) => Ok(minted),
            // A mint the chain would refuse ended the registration: say why, rather than "retry later".
            Err(error) => match self.load(id).await {
                Ok(ended) if ended.status().ok() == Some(RegistrationStatus::Failed) => {
                    Err(Refusal::Unmintable(ended.problem.unwrap_or_default()).into())
                }
                _ => Err(error.into()),
            },
        }
    }

    async fn mint_and_transfer(&self, mut registration: Registration) -> Result<(U256, B256), PipelineError> {
        let id = registration.id;
        if registration.status()? == RegistrationStatus::Minting {
            let receipt = match self.operator.resume("register", &id.to_string()).await? {
                Some(receipt) if receipt.status() => receipt,
                _ => {
                    let call = IERC8004Identity::register_2Call { agentURI: registration.uri.clone() };
                    let sent = self
                        .operator
                        .send_and_confirm(
                            "register",
                            &id.to_string(),
                            self.registry,
                            call.abi_encode().into(),
                        )
                        .await;
                    match sent {
                        // Nothing was signed, and it would never be mined: it ends here, never blocking others.
                        Err(WriteError::WouldRevert(reason)) => {
                            self.store.registration_failed(id, &reason, now_ms()).await?;
                            return Err(WriteError::WouldRevert(reason).into());
                        }
                        sent => sent?,
                    }
                }
            };
            let agent = minted_agent(&receipt)
                .ok_or_else(|| corrupt(id, "the register transaction minted no agent"))?;
            self.store
                .registration_minted(id, &agent.to_string(), &hex(receipt.transaction_hash), now_ms())
                .await?;
            registration = self.load(id).await?;
        }
        let agent: U256 = registration
            .agent_id
            .as_deref()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt(id, "minted without an agent id"))?;
        let register_tx: B256 = registration
            .register_tx
            .as_deref()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| corrupt(id, "minted without a transaction"))?;
        if registration.status()? == RegistrationStatus::Transferring {
            let owner: Address = registration.owner.parse().map_err(|_| corrupt(id, "owner"))?;
            let identity = IERC8004Identity::new(self.registry, &self.provider);
            let holder = identity.ownerOf(agent).call().await.map_err(rpc("reading the agent's owner"))?;
            if holder != owner {
                if !self.operator.succeeded("transfer", &id.to_string()).await? {
                    let call = IERC8004Identity::transferFromCall {
                        from: self.operator.address(),
                        to: owner,
                        tokenId: agent,
                    };
                    self.operator
                        .send_and_confirm(
                            "transfer",
                            &id.to_string(),
                            self.registry,
                            call.abi_encode().into(),
                        )
                        .await?;
                }
                let holder =
                    identity.ownerOf(agent).call().await.map_err(rpc("reading the agent's owner"))?;
                if holder != owner {
                    return Err(RpcError {
                        context: "handing the agent to its owner",
                        message: format!("agent {agent} is held by {holder}"),
                    }
                    .into());
                }
            }
            self.store.registration_done(id, now_ms()).await?;
        }
        Ok((agent, register_tx))
    }

    async fn load(&self, id: i64) -> Result<Registration, PipelineError> {
        self.store.registration(id).await?.ok_or_else(|| corrupt(id, "no such registration"))
    }

    /// Finishes registrations a crash or a timeout left half-way (untouched for a minute).
    pub async fn reconcile_once(&self) -> Result<usize, PipelineError> {
        let stalled = self.store.stalled_registrations(now_ms() - 60_000).await?;
        for registration in &stalled {
            if let Err(error) = self.advance(registration.id).await {
                tracing::warn!(registration = registration.id, %error, "reconciler could not finish a registration");
                self.store.touch_registration(registration.id, now_ms()).await?;
            }
        }
        Ok(stalled.len())
    }
}

fn minted_agent(receipt: &TransactionReceipt) -> Option<U256> {
    receipt.decoded_log::<IERC8004Identity::Registered>().map(|log| log.data.agentId)
}
