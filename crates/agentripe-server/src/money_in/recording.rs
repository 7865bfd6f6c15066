//! Recording a settled payment as a deposit on chain (`recordDeposit` under the settlement transaction
//! hash), then creating its task: a task exists only once its deposit is recorded, so vendors never see
//! unpaid work.

use agentripe_chain::bindings::{
    Agentripe::{self, DepositRecord},
    DepositStatus,
};
use agentripe_store::{NewTask, Payment};
use alloy::{
    primitives::{B256, Bytes, U256},
    rpc::types::TransactionReceipt,
    sol_types::SolCall,
};

use super::{MoneyIn, TaskRequest};
use crate::{
    batching::BatchCall,
    chain_writer::WriteError,
    pipeline::{PipelineError, RpcError, rpc},
    util::{hex, now_ms},
};

impl MoneyIn {
    /// Records the deposit on chain unless it is already there, then creates its task. Without
    /// `may_have_a_record` (the payment was settled by this lease holder) no record of ours is looked for.
    pub(super) async fn record(
        &self,
        payment: &Payment,
        deposit: B256,
        may_have_a_record: bool,
    ) -> Result<(), PipelineError> {
        let expires_at = self.record_on_chain(payment, deposit, may_have_a_record).await?;
        let subject = || format!("payment {}", payment.id);
        let request: TaskRequest = serde_json::from_str(&payment.new.request)
            .map_err(|error| PipelineError::corrupt(subject(), error.to_string()))?;
        let task = NewTask {
            id: hex(deposit),
            agent_id: payment.new.agent_id.clone(),
            product_id: payment.new.service_path.clone(),
            buyer: payment.new.payer.clone(),
            amount: payment.new.amount.clone(),
            request_payload: request.request_payload,
            task_detail: request.task_detail,
            task_metadata: request.task_metadata,
            reviewer_request: request.reviewer_request,
            expires_at: i64::try_from(expires_at).unwrap_or(i64::MAX).saturating_mul(1000),
        };
        self.store.record_payment(payment.id, &task, now_ms()).await?;
        tracing::info!(payment = payment.id, task = %task.id, "deposit recorded; task created");
        Ok(())
    }

    /// Has the deposit recorded with this payment's terms, unless it already is; returns when it expires
    /// (unix seconds). Our own record's receipt says both when its node stamps logs with their block's
    /// time; otherwise, or when someone else recorded it, the escrow is asked.
    async fn record_on_chain(
        &self,
        payment: &Payment,
        deposit: B256,
        may_have_a_record: bool,
    ) -> Result<u64, PipelineError> {
        let subject = payment.id.to_string();
        let number = |what: &str, text: &str| {
            text.parse::<U256>()
                .map_err(|_| PipelineError::corrupt(format!("payment {subject}"), format!("{what} {text:?}")))
        };
        let record = DepositRecord {
            depositId: deposit,
            agentId: number("agent id", &payment.new.agent_id)?,
            buyer: payment
                .new
                .payer
                .parse()
                .map_err(|_| PipelineError::corrupt(format!("payment {subject}"), "payer"))?,
            amount: number("amount", &payment.new.amount)?,
        };
        // Not asked of the chain first: the write is idempotent there (a batch skips a recorded deposit,
        // a lone recordDeposit would revert and is never signed), and the chain is asked after it.
        if may_have_a_record && let Some(receipt) = self.operator.resume(Record::PURPOSE, &subject).await? {
            if let Some(expires_at) = self.recorded_by(&receipt, &record) {
                return Ok(expires_at);
            }
            if let Some(expires_at) = self.recorded_on_chain(payment, &record).await? {
                return Ok(expires_at);
            }
        }
        match self.records.write(subject, record.clone()).await {
            Ok(receipt) => {
                if let Some(expires_at) = self.recorded_by(&receipt, &record) {
                    return Ok(expires_at);
                }
            }
            // Reverts if someone recorded it meanwhile; the check below tells.
            Err(WriteError::WouldRevert(reason)) => {
                tracing::warn!(payment = payment.id, %reason, "recordDeposit reverts")
            }
            Err(error) => return Err(error.into()),
        }
        self.recorded_on_chain(payment, &record).await?.ok_or_else(|| {
            RpcError { context: "recording the deposit", message: "not recorded yet".into() }.into()
        })
    }

    /// When the deposit expires, if `receipt` is of a transaction that recorded it with exactly `record`'s
    /// terms and its node stamped the log with the block's time: the escrow sets the expiry to that time
    /// plus its deposit timeout (checked against the chain at start-up).
    fn recorded_by(&self, receipt: &TransactionReceipt, record: &DepositRecord) -> Option<u64> {
        if !receipt.status() {
            return None;
        }
        receipt
            .logs()
            .iter()
            .filter(|log| log.address() == self.deployment.agentripe)
            .filter_map(|log| Some((log.log_decode::<Agentripe::DepositRecorded>().ok()?.inner.data, log)))
            .find(|(recorded, _)| recorded.depositId == record.depositId)
            .filter(|(recorded, _)| {
                (recorded.agentId, recorded.buyer, recorded.amount)
                    == (record.agentId, record.buyer, record.amount)
            })
            .and_then(|(_, log)| log.block_timestamp)
            .map(|recorded_at| recorded_at.saturating_add(self.deployment.deposit_timeout_seconds))
    }

    /// When the deposit expires, if it is on chain; errs if it is there with other terms than `record`'s.
    async fn recorded_on_chain(
        &self,
        payment: &Payment,
        record: &DepositRecord,
    ) -> Result<Option<u64>, PipelineError> {
        let deposit = record.depositId;
        let escrow = Agentripe::new(self.deployment.agentripe, &self.provider);
        let on_chain = escrow.getDeposit(deposit).call().await.map_err(rpc("reading the deposit"))?;
        if DepositStatus::try_from(on_chain.status) == Ok(DepositStatus::None) {
            return Ok(None);
        }
        let expected = (record.agentId, record.buyer, record.amount);
        let actual = (on_chain.agentId, on_chain.buyer, on_chain.amount);
        if actual != expected {
            return Err(PipelineError::Mismatch {
                subject: format!("payment {}", payment.id),
                deposit,
                detail: format!("expected (agent, buyer, amount) {expected:?}, found {actual:?}"),
            });
        }
        let expires_at =
            escrow.depositExpiresAt(deposit).call().await.map_err(rpc("reading the deposit's expiry"))?;
        // A node behind the one that answered getDeposit (a load-balanced provider) says 0: not yet.
        if expires_at.is_zero() {
            return Err(RpcError {
                context: "reading the deposit's expiry",
                message: "not visible yet".into(),
            }
            .into());
        }
        Ok(Some(u64::try_from(expires_at).unwrap_or(u64::MAX)))
    }
}

/// Deposits recorded together (`recordDeposits`), sorted by agent so the escrow asks the identity
/// registry once per agent.
#[derive(Debug)]
pub struct Record;

impl BatchCall for Record {
    type Entry = DepositRecord;
    const PURPOSE: &'static str = "record";

    fn input(entries: &[DepositRecord]) -> Bytes {
        match entries {
            [one] => Agentripe::recordDepositCall {
                depositId: one.depositId,
                agentId: one.agentId,
                buyer: one.buyer,
                amount: one.amount,
            }
            .abi_encode()
            .into(),
            _ => {
                let mut records = entries.to_vec();
                records.sort_by_key(|record| record.agentId);
                Agentripe::recordDepositsCall { records }.abi_encode().into()
            }
        }
    }
}
