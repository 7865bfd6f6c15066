//! Transfers into the escrow that no payment of ours sent, and who may act on each: the first to claim it.
//! A transfer is named by the deposit it would become: its transaction's hash, unless that transaction
//! spent several authorizations (then each payment's deposit id is its own).

use crate::{Context, Store, StoreError};

/// Who holds a transfer into the escrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferHolder {
    /// The operator, giving it back to its sender (`agentripe refund-unrecorded`).
    GiveBack,
    /// The payment with this id, whose authorization it settled.
    Payment(i64),
}

const GIVE_BACK: &str = "give_back";
const PAYMENT: &str = "payment ";

impl TransferHolder {
    fn to_text(self) -> String {
        match self {
            Self::GiveBack => GIVE_BACK.to_owned(),
            Self::Payment(id) => format!("{PAYMENT}{id}"),
        }
    }

    fn from_text(text: &str) -> Option<Self> {
        match text {
            GIVE_BACK => Some(Self::GiveBack),
            _ => text.strip_prefix(PAYMENT)?.parse().ok().map(Self::Payment),
        }
    }
}

impl Store {
    /// Claims the transfer that would become deposit `deposit_id` for `claimant`, unless it is held
    /// already; returns its holder, which is `claimant` only if it claimed first (or before). One
    /// statement, so two claimants racing cannot both win.
    pub async fn claim_transfer(
        &self,
        deposit_id: &str,
        claimant: TransferHolder,
        now_ms: i64,
    ) -> Result<TransferHolder, StoreError> {
        // The no-op update makes the statement return the row it found, on both engines.
        let holder: String = sqlx::query_scalar(
            "INSERT INTO transfer_claims (deposit_id, holder, claimed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (deposit_id) DO UPDATE SET holder = transfer_claims.holder RETURNING holder",
        )
        .bind(deposit_id)
        .bind(claimant.to_text())
        .bind(now_ms)
        .fetch_one(self.pool())
        .await
        .context("claiming a transfer")?;
        TransferHolder::from_text(&holder).ok_or(StoreError::Corrupt {
            context: "claiming a transfer",
            detail: format!("holder {holder:?}"),
        })
    }
}
