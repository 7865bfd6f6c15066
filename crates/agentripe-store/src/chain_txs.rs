//! Every transaction the server signs, stored with its nonce before it is broadcast.
//!
//! Nonces come from the database, one counter per signing key, taken in the same database transaction
//! that stores the signed transaction: two server instances sharing a key never sign two transactions
//! with one nonce, and a nonce is never handed out without a transaction that can be (re)broadcast.

use crate::{Context, PaymentLease, Store, StoreError};

/// The purpose of a transaction of nothing that takes the nonce of one of ours gone from the chain that
/// must not land again (its subject is that one's hash). Others are named by their step: `settle`,
/// `record`, `release`, `refund`, ...
pub const VOID: &str = "void";

/// What became of a signed transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainTxStatus {
    /// Broadcast, or about to be; not yet seen in a block.
    Pending,
    /// In a block (successful or reverted: its receipt says which).
    Mined,
    /// Its nonce was used by another transaction; it will never be mined.
    Dropped,
}

crate::text_enum!(ChainTxStatus {
    Pending => "pending",
    Mined => "mined",
    Dropped => "dropped",
});

/// A signed transaction, ready to broadcast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// 0x hex.
    pub tx_hash: String,
    /// The EIP-2718 encoding, 0x hex.
    pub raw_tx: String,
}

/// A stored transaction.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct ChainTx {
    pub id: i64,
    pub signer: String,
    pub nonce: i64,
    pub purpose: String,
    pub subject: String,
    pub tx_hash: String,
    pub raw_tx: String,
    status: String,
}

impl ChainTx {
    /// What became of it.
    pub fn status(&self) -> Result<ChainTxStatus, StoreError> {
        self.status.parse().map_err(|detail| StoreError::Corrupt { context: "reading a transaction", detail })
    }
}

macro_rules! columns {
    () => {
        "id, signer, nonce, purpose, subject, tx_hash, raw_tx, status"
    };
}

impl Store {
    /// Raises the signer's next nonce to at least `chain_nonce`: at start-up, and whenever the chain says
    /// our counter fell behind (another program used the key).
    pub async fn sync_nonce(&self, signer: &str, chain_nonce: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signer_nonces (signer, next_nonce) VALUES ($1, $2) ON CONFLICT (signer) DO UPDATE SET \
             next_nonce = CASE WHEN signer_nonces.next_nonce < excluded.next_nonce \
             THEN excluded.next_nonce ELSE signer_nonces.next_nonce END",
        )
        .bind(signer)
        .bind(chain_nonce)
        .execute(self.pool())
        .await
        .context("syncing a nonce")?;
        Ok(())
    }

    /// Takes the signer's next nonce, signs with it (`sign`) and stores the signed transaction for each of
    /// `subjects` (one, or the members of a batch), all in one database transaction. If `sign` fails, the
    /// nonce is not used up. A write made under a payment's `lease` is stored only while the lease holds
    /// ([`StoreError::Overtaken`] otherwise, and nothing signed).
    pub async fn sign_and_store<E>(
        &self,
        signer: &str,
        purpose: &str,
        subjects: &[&str],
        lease: Option<PaymentLease<'_>>,
        now_ms: i64,
        sign: impl FnOnce(u64) -> Result<SignedTx, E>,
    ) -> Result<Result<ChainTx, E>, StoreError> {
        let mut tx = self.pool().begin().await.context("beginning to sign")?;
        // The payment's row is locked before the nonce's; nothing takes the two the other way round.
        if let Some(lease) = lease
            && let Err(not_held) = lease.holds(&mut tx).await
        {
            tx.rollback().await.context("giving up a write")?;
            return Err(not_held);
        }
        let nonce: i64 = sqlx::query_scalar(
            "UPDATE signer_nonces SET next_nonce = next_nonce + 1 WHERE signer = $1 RETURNING next_nonce - 1",
        )
        .bind(signer)
        .fetch_optional(&mut *tx)
        .await
        .context("taking a nonce")?
        .ok_or(StoreError::Corrupt {
            context: "taking a nonce",
            detail: format!("no nonce counter for {signer}: sync_nonce first"),
        })?;
        let signed = match sign(u64::try_from(nonce).unwrap_or_default()) {
            Ok(signed) => signed,
            Err(error) => {
                tx.rollback().await.context("giving a nonce back")?;
                return Ok(Err(error));
            }
        };
        // A batch's row names it; its members are listed beside it.
        let subject = match subjects {
            [one] => (*one).to_owned(),
            [first, .., last] => format!("batch of {}: {first} .. {last}", subjects.len()),
            [] => return Err(StoreError::Corrupt { context: "signing", detail: "no subject".into() }),
        };
        let stored: ChainTx = sqlx::query_as(concat!(
            "INSERT INTO chain_txs (signer, nonce, purpose, subject, tx_hash, raw_tx, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) RETURNING ",
            columns!()
        ))
        .bind(signer)
        .bind(nonce)
        .bind(purpose)
        .bind(&subject)
        .bind(&signed.tx_hash)
        .bind(&signed.raw_tx)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await
        .context("storing a signed transaction")?;
        if subjects.len() > 1 {
            // One statement for them all: every other signing with this key waits on the nonce row.
            let rows: Vec<String> =
                (4..subjects.len() + 4).map(|member| format!("($1, $2, $3, ${member})")).collect();
            let sql = format!(
                "INSERT INTO chain_tx_members (signer, nonce, purpose, subject) VALUES {}",
                rows.join(", ")
            );
            let mut members = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(signer).bind(nonce).bind(purpose);
            for member in subjects {
                members = members.bind(*member);
            }
            members.execute(&mut *tx).await.context("listing a batch's members")?;
        }
        tx.commit().await.context("committing a signed transaction")?;
        Ok(Ok(stored))
    }

    /// Stores `signed`, a replacement of `original` (same nonce, same call, higher fees), as pending beside
    /// it: whichever of the two is mined is the write.
    pub async fn store_replacement(
        &self,
        original: &ChainTx,
        signed: &SignedTx,
        now_ms: i64,
    ) -> Result<ChainTx, StoreError> {
        // Each member of a batch may bump it at once; the same fees sign the same bytes, so a second
        // caller finds the first one's row.
        let stored: Option<ChainTx> = sqlx::query_as(concat!(
            "INSERT INTO chain_txs (signer, nonce, purpose, subject, tx_hash, raw_tx, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7) ON CONFLICT (tx_hash) DO NOTHING RETURNING ",
            columns!()
        ))
        .bind(&original.signer)
        .bind(original.nonce)
        .bind(&original.purpose)
        .bind(&original.subject)
        .bind(&signed.tx_hash)
        .bind(&signed.raw_tx)
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await
        .context("storing a replacement transaction")?;
        match stored {
            Some(stored) => Ok(stored),
            None => sqlx::query_as(concat!("SELECT ", columns!(), " FROM chain_txs WHERE tx_hash = $1"))
                .bind(&signed.tx_hash)
                .fetch_one(self.pool())
                .await
                .context("reading a replacement stored by another caller"),
        }
    }

    /// Every transaction signed by `signer` with `nonce` (one, or an original and its fee-bumped
    /// replacements), oldest first.
    pub async fn txs_with_nonce(&self, signer: &str, nonce: i64) -> Result<Vec<ChainTx>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM chain_txs WHERE signer = $1 AND nonce = $2 ORDER BY id"
        ))
        .bind(signer)
        .bind(nonce)
        .fetch_all(self.pool())
        .await
        .context("listing a nonce's transactions")
    }

    /// `signer`'s transactions marked `status` with a nonce of `nonce` or more, in nonce order (a nonce's
    /// replacements after it). When the chain's nonce for `signer` is `nonce`, those marked mined are no
    /// longer on chain, and those pending are all that may still land.
    pub async fn txs_from(
        &self,
        signer: &str,
        status: ChainTxStatus,
        nonce: i64,
    ) -> Result<Vec<ChainTx>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM chain_txs WHERE status = $1 AND signer = $2 AND nonce >= $3 ORDER BY nonce, id"
        ))
        .bind(status.as_str())
        .bind(signer)
        .bind(nonce)
        .fetch_all(self.pool())
        .await
        .context("listing mined transactions past a nonce")
    }

    /// Every transaction signed for `purpose` on `subject`, alone or in a batch, oldest first. Both
    /// halves are index lookups (a batch's members by their key, then its transactions by nonce): this
    /// runs before every chain write.
    pub async fn txs_for(&self, purpose: &str, subject: &str) -> Result<Vec<ChainTx>, StoreError> {
        sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM chain_txs WHERE purpose = $1 AND subject = $2 \
             UNION SELECT t.id, t.signer, t.nonce, t.purpose, t.subject, t.tx_hash, t.raw_tx, t.status \
             FROM chain_tx_members m \
             JOIN chain_txs t ON t.signer = m.signer AND t.nonce = m.nonce AND t.purpose = m.purpose \
             WHERE m.purpose = $1 AND m.subject = $2 ORDER BY id"
        ))
        .bind(purpose)
        .bind(subject)
        .fetch_all(self.pool())
        .await
        .context("listing a subject's transactions")
    }

    /// Notes that `tx_hash`, signed by `signer` with `nonce`, is mined: every other transaction of that
    /// nonce (the one it replaced, a fee bump, whoever stored it) never will be.
    pub async fn mark_mined(
        &self,
        signer: &str,
        nonce: i64,
        tx_hash: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE chain_txs SET status = CASE WHEN tx_hash = $1 THEN $2 ELSE $3 END, updated_at = $4 \
             WHERE signer = $5 AND nonce = $6",
        )
        .bind(tx_hash)
        .bind(ChainTxStatus::Mined.as_str())
        .bind(ChainTxStatus::Dropped.as_str())
        .bind(now_ms)
        .bind(signer)
        .bind(nonce)
        .execute(self.pool())
        .await
        .context("marking a nonce's transaction mined")?;
        Ok(())
    }

    /// Notes that `signer`'s `nonce` was taken by a transaction not of ours: those of ours still pending
    /// never will be mined. One marked mined meanwhile (by a waiter whose node showed its receipt) stays so.
    pub async fn mark_dropped(&self, signer: &str, nonce: i64, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE chain_txs SET status = $1, updated_at = $2 WHERE signer = $3 AND nonce = $4 AND status = $5",
        )
        .bind(ChainTxStatus::Dropped.as_str())
        .bind(now_ms)
        .bind(signer)
        .bind(nonce)
        .bind(ChainTxStatus::Pending.as_str())
        .execute(self.pool())
        .await
        .context("marking a nonce's transactions dropped")?;
        Ok(())
    }

    /// Notes that `vanished`, marked mined, is gone from the chain (a reorg, a node behind its head) and is
    /// to be sent again; false if another caller took it up first.
    pub async fn mark_vanished(&self, vanished: &ChainTx, now_ms: i64) -> Result<bool, StoreError> {
        take_up_vanished(self.pool(), vanished, ChainTxStatus::Pending, now_ms).await
    }

    /// Stores `void`, a transaction of nothing signed with the nonce of `vanished` (marked mined, gone from
    /// the chain, and not to land again), as pending under purpose [`VOID`], and `vanished` as dropped, in
    /// one database transaction; none if another caller took `vanished` up first.
    pub async fn void_vanished(
        &self,
        vanished: &ChainTx,
        void: &SignedTx,
        now_ms: i64,
    ) -> Result<Option<ChainTx>, StoreError> {
        let mut tx = self.pool().begin().await.context("beginning to void a transaction")?;
        if !take_up_vanished(&mut *tx, vanished, ChainTxStatus::Dropped, now_ms).await? {
            return Ok(None);
        }
        let stored = sqlx::query_as(concat!(
            "INSERT INTO chain_txs (signer, nonce, purpose, subject, tx_hash, raw_tx, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING ",
            columns!()
        ))
        .bind(&vanished.signer)
        .bind(vanished.nonce)
        .bind(VOID)
        .bind(&vanished.tx_hash)
        .bind(&void.tx_hash)
        .bind(&void.raw_tx)
        .bind(ChainTxStatus::Pending.as_str())
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await
        .context("storing a void transaction")?;
        tx.commit().await.context("committing a void transaction")?;
        Ok(Some(stored))
    }
}

/// Moves `vanished` on from mined to `status` (pending to send it again, dropped to void it); false if
/// another caller took it up first.
async fn take_up_vanished<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    vanished: &ChainTx,
    status: ChainTxStatus,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let result =
        sqlx::query("UPDATE chain_txs SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4")
            .bind(status.as_str())
            .bind(now_ms)
            .bind(vanished.id)
            .bind(ChainTxStatus::Mined.as_str())
            .execute(executor)
            .await
            .context("taking up a vanished transaction")?;
    Ok(result.rows_affected() == 1)
}
