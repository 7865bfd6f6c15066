//! Registration through the API: the server mints the agent NFT, paying the gas, and hands it to its
//! owner, so the server never keeps custody of anyone's identity. Both chain writes go through the
//! durable writer and every step is stored, so the reconciler finishes what a crash interrupted.

use agentripe_chain::bindings::IERC8004Identity;
use agentripe_store::{Registration, RegistrationStatus, Store};
use alloy::{
    primitives::{Address, B256, U256},
    providers::DynProvider,
    rpc::types::TransactionReceipt,
    sol_types::SolCall,
};

use crate::{
    chain_writer::ChainWriter,
    pipeline::{PipelineError, RpcError, rpc},
    util::{hex, now_ms},
};

#[derive(Debug)]
pub struct Registrar {
    store: Store,
    provider: DynProvider,
    registry: Address,
    operator: ChainWriter,
}

fn corrupt(id: i64, detail: impl Into<String>) -> PipelineError {
    PipelineError::corrupt(format!("registration {id}"), detail)
}

impl Registrar {
    pub fn new(store: Store, provider: DynProvider, registry: Address, operator: ChainWriter) -> Self {
        Self { store, provider, registry, operator }
    }

    /// Mints an agent at `uri` for `owner`; returns its id and the minting transaction.
    pub async fn register(&self, owner: Address, uri: &str) -> Result<(U256, B256), PipelineError> {
        let registration = self.store.begin_registration(&hex(owner), uri, now_ms()).await?;
        self.advance(registration.id).await
    }

    /// Takes a registration as far as it goes: minted, then transferred to its owner.
    pub async fn advance(&self, id: i64) -> Result<(U256, B256), PipelineError> {
        let mut registration = self.load(id).await?;
        if registration.status()? == RegistrationStatus::Minting {
            let receipt = match self.operator.resume("register", &id.to_string()).await? {
                Some(receipt) if receipt.status() => receipt,
                _ => {
                    let call = IERC8004Identity::register_2Call { agentURI: registration.uri.clone() };
                    self.operator
                        .send_and_confirm(
                            "register",
                            &id.to_string(),
                            self.registry,
                            call.abi_encode().into(),
                        )
                        .await?
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
                if self.operator.resume("transfer", &id.to_string()).await?.is_none() {
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
            }
        }
        Ok(stalled.len())
    }
}

fn minted_agent(receipt: &TransactionReceipt) -> Option<U256> {
    receipt.decoded_log::<IERC8004Identity::Registered>().map(|log| log.data.agentId)
}
