//! Payments in: the exactly-once claim on a buyer's authorization, and its way to a recorded deposit.

use std::collections::HashSet;

use crate::{Context, Store, StoreError, tasks::NewTask};

/// Where a payment is on its way into the escrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Verified and claimed; not yet known to be settled.
    Verified,
    /// The tokens are in the escrow under `deposit_id`; the deposit is not yet recorded.
    Settled,
    /// The deposit is recorded and its task exists. Final.
    Recorded,
    /// Refused or never settled; nothing was charged. A later retry of the same authorization may reopen it.
    Failed,
}

crate::text_enum!(PaymentStatus {
    Verified => "verified",
    Settled => "settled",
    Recorded => "recorded",
    Failed => "failed",
});

/// A verified payment to claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewPayment {
    pub chain_id: i64,
    pub asset: String,
    pub payer: String,
    pub nonce: String,
    pub amount: String,
    pub agent_id: String,
    pub service_path: String,
    pub x402_version: i32,
    /// The signed authorization, JSON.
    pub payment: String,
    pub valid_before: i64,
    /// The purchase request's fields, JSON.
    pub request: String,
    /// The chain head when the payment arrived: no settlement of it can be older.
    pub search_from_block: i64,
}

/// A holder's lease of an unsettled payment, which every step that moves the payment on is taken under
/// (asking to settle it, signing its settlement, marking it settled or failed): a holder that was taken
/// over (its lease gone to another, or given back) or whose payment another moved on stores nothing, so
/// it can neither charge a buyer its successor refused nor refuse one its successor is charging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentLease<'a> {
    pub payment: i64,
    pub holder: &'a str,
}

/// The condition of an update that only the holder of an unsettled payment's lease makes, with the
/// payment as `$1` and the holder as `$2`. A lease run out but taken by no one still holds: its holder
/// stalled, and no one acted in its place.
macro_rules! held_unsettled {
    () => {
        " WHERE id = $1 AND status = 'verified' AND lease_holder = $2 AND lease_until IS NOT NULL"
    };
}

impl PaymentLease<'_> {
    /// [`StoreError::Overtaken`] unless the payment is still unsettled and this lease's. Its row stays
    /// locked until `tx` ends: a takeover waits, and then finds what `tx` stored.
    pub(crate) async fn holds(self, tx: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        let result =
            sqlx::query(concat!("UPDATE payments SET lease_holder = lease_holder", held_unsettled!()))
                .bind(self.payment)
                .bind(self.holder)
                .execute(tx)
                .await
                .context("checking a payment's lease")?;
        self.made(result.rows_affected())
    }

    /// Whether an update through [`held_unsettled!`] that changed `rows` rows was this lease's to make.
    fn made(self, rows: u64) -> Result<(), StoreError> {
        match rows {
            1 => Ok(()),
            _ => Err(StoreError::Overtaken(self.payment)),
        }
    }
}

/// A stored payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: i64,
    pub new: NewPayment,
    pub status: PaymentStatus,
    /// The deposit and task id, once settled: the settlement transaction's hash, unless that
    /// transaction settled several authorizations.
    pub deposit_id: Option<String>,
    /// The transaction that moved the money into the escrow, once settled.
    pub settlement_tx: Option<String>,
    /// Why it failed.
    pub failure: Option<String>,
    /// The transaction a remote facilitator said it submitted, while not yet settled.
    pub submitted_tx: Option<String>,
    /// When a remote facilitator was first asked to settle it (see [`Store::note_settle_asked`]); cleared
    /// only when the payment fails. While it is set and the nonce unused, a settlement the facilitator
    /// never named may still land.
    pub settle_asked_at: Option<i64>,
    /// How many holders have leased it (see `lease_payment`): 1 for the first only. A holder of a version
    /// that did not count (before migration 0022) still makes the next one at least the second.
    pub leases: i64,
}

impl Payment {
    /// `holder`'s lease of this payment.
    pub fn leased_by<'a>(&self, holder: &'a str) -> PaymentLease<'a> {
        PaymentLease { payment: self.id, holder }
    }
}

/// The outcome of claiming a payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// First time this authorization is seen: the caller settles it.
    New(Payment),
    /// The authorization was claimed before (a retry, a duplicate, a concurrent copy).
    Existing(Payment),
}

/// A payer's standing when a new authorization of its arrives: see [`Store::payer_outlook`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayerOutlook {
    /// Whether the authorization is a payment already (a retry, a duplicate).
    pub known: bool,
    /// The amounts of the payer's other payments not yet settled, as stored (decimal strings).
    pub not_yet_settled: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    chain_id: i64,
    asset: String,
    payer: String,
    nonce: String,
    amount: String,
    agent_id: String,
    service_path: String,
    x402_version: i32,
    payment: String,
    valid_before: i64,
    request: String,
    search_from_block: i64,
    status: String,
    deposit_id: Option<String>,
    settlement_tx: Option<String>,
    failure: Option<String>,
    submitted_tx: Option<String>,
    settle_asked_at: Option<i64>,
    leases: i64,
}

impl TryFrom<Row> for Payment {
    type Error = StoreError;

    fn try_from(row: Row) -> Result<Self, StoreError> {
        let status = row
            .status
            .parse()
            .map_err(|detail| StoreError::Corrupt { context: "reading a payment", detail })?;
        Ok(Self {
            id: row.id,
            new: NewPayment {
                chain_id: row.chain_id,
                asset: row.asset,
                payer: row.payer,
                nonce: row.nonce,
                amount: row.amount,
                agent_id: row.agent_id,
                service_path: row.service_path,
                x402_version: row.x402_version,
                payment: row.payment,
                valid_before: row.valid_before,
                request: row.request,
                search_from_block: row.search_from_block,
            },
            status,
            deposit_id: row.deposit_id,
            settlement_tx: row.settlement_tx,
            failure: row.failure,
            submitted_tx: row.submitted_tx,
            settle_asked_at: row.settle_asked_at,
            leases: row.leases,
        })
    }
}

macro_rules! columns {
    () => {
        "id, chain_id, asset, payer, nonce, amount, agent_id, service_path, x402_version, payment, valid_before, \
         request, search_from_block, status, deposit_id, settlement_tx, failure, submitted_tx, \
         settle_asked_at, leases"
    };
}

impl Store {
    /// Claims an authorization: inserts it as `verified` unless the same (chain, token, payer, nonce) was
    /// claimed before, in which case the earlier claim is returned. Concurrent claims of one
    /// authorization yield exactly one `New`. With `lease` (holder, until), a new payment is leased to
    /// its claimant as it is stored, as [`Store::lease_payment`] would lease it to a first holder, so
    /// that the claimant goes on without another write.
    pub async fn claim_payment(
        &self,
        new: &NewPayment,
        lease: Option<(&str, i64)>,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let inserted: Option<Row> = sqlx::query_as(concat!(
            "INSERT INTO payments (chain_id, asset, payer, nonce, amount, agent_id, service_path, x402_version, \
             payment, valid_before, request, search_from_block, status, lease_holder, lease_until, leases, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'verified', $13, $14, $15, $16, $16) \
             ON CONFLICT (chain_id, asset, payer, nonce) DO NOTHING RETURNING ",
            columns!()
        ))
        .bind(new.chain_id)
        .bind(&new.asset)
        .bind(&new.payer)
        .bind(&new.nonce)
        .bind(&new.amount)
        .bind(&new.agent_id)
        .bind(&new.service_path)
        .bind(new.x402_version)
        .bind(&new.payment)
        .bind(new.valid_before)
        .bind(&new.request)
        .bind(new.search_from_block)
        .bind(lease.map(|(holder, _)| holder))
        .bind(lease.map(|(_, until_ms)| until_ms))
        .bind(i64::from(lease.is_some()))
        .bind(now_ms)
        .fetch_optional(self.pool())
        .await
        .context("claiming a payment")?;
        if let Some(row) = inserted {
            return Ok(Claim::New(Payment::try_from(row)?));
        }
        let earlier = self.payment_by_authorization(new.chain_id, &new.asset, &new.payer, &new.nonce).await?;
        Ok(Claim::Existing(earlier.ok_or(StoreError::Corrupt {
            context: "reading an earlier claim",
            detail: format!("the claim of {}'s nonce {} vanished", new.payer, new.nonce),
        })?))
    }

    /// The payment of an authorization: (chain, token, payer, EIP-3009 nonce), spelled as stored.
    pub async fn payment_by_authorization(
        &self,
        chain_id: i64,
        asset: &str,
        payer: &str,
        nonce: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let row: Option<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM payments WHERE chain_id = $1 AND asset = $2 AND payer = $3 AND nonce = $4"
        ))
        .bind(chain_id)
        .bind(asset)
        .bind(payer)
        .bind(nonce)
        .fetch_optional(self.pool())
        .await
        .context("reading a payment by its authorization")?;
        row.map(Payment::try_from).transpose()
    }

    /// A payment by id.
    pub async fn payment(&self, id: i64) -> Result<Option<Payment>, StoreError> {
        let row: Option<Row> = sqlx::query_as(concat!("SELECT ", columns!(), " FROM payments WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .context("reading a payment")?;
        row.map(Payment::try_from).transpose()
    }

    /// Takes the exclusive right to advance an open payment until `until_ms` for `holder`, unless
    /// someone else holds it; the payment as leased (its `leases` counting this one), or none. Whoever
    /// holds the lease is the only one settling or recording this payment.
    pub async fn lease_payment(
        &self,
        id: i64,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<Payment>, StoreError> {
        let row: Option<Row> = sqlx::query_as(concat!(
            "UPDATE payments SET lease_until = $1, lease_holder = $2, updated_at = $3, \
             leases = CASE WHEN lease_holder IS NULL OR leases > 0 THEN leases + 1 ELSE 2 END WHERE id = $4 \
             AND status IN ('verified', 'settled') AND (lease_until IS NULL OR lease_until < $3) RETURNING ",
            columns!()
        ))
        .bind(until_ms)
        .bind(holder)
        .bind(now_ms)
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .context("leasing a payment")?;
        row.map(Payment::try_from).transpose()
    }

    /// Extends `holder`'s lease to `until_ms`; `false` if it is no longer `holder`'s (it ran out and
    /// someone took it over, or the payment is done).
    pub async fn renew_payment_lease(
        &self,
        id: i64,
        holder: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE payments SET lease_until = $1 WHERE id = $2 AND lease_holder = $3 AND lease_until IS NOT NULL",
        )
        .bind(until_ms)
        .bind(id)
        .bind(holder)
        .execute(self.pool())
        .await
        .context("renewing a payment's lease")?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives `holder`'s lease back early, so that the reconciler may pick the payment up at once.
    pub async fn unlease_payment(&self, id: i64, holder: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE payments SET lease_until = NULL WHERE id = $1 AND lease_holder = $2")
            .bind(id)
            .bind(holder)
            .execute(self.pool())
            .await
            .context("unleasing a payment")?;
        Ok(())
    }

    /// Notes, before a remote facilitator is asked to settle the payment `lease` holds, that it was (the
    /// first ask's time is kept): an ask that gets no answer may have submitted a settlement no one names.
    /// Failing the payment clears it. [`StoreError::Overtaken`], and nothing noted, unless the payment is
    /// unsettled and still the lease's: a holder taken over must not ask, or a payment its successor
    /// refused could be charged all the same.
    pub async fn note_settle_asked(&self, lease: PaymentLease<'_>, now_ms: i64) -> Result<(), StoreError> {
        let result = sqlx::query(concat!(
            "UPDATE payments SET settle_asked_at = COALESCE(settle_asked_at, $3), updated_at = $3",
            held_unsettled!()
        ))
        .bind(lease.payment)
        .bind(lease.holder)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .context("noting a settlement asked for")?;
        lease.made(result.rows_affected())
    }

    /// Notes that a remote facilitator submitted transaction `submitted_tx` to settle payment `id`.
    pub async fn note_submitted_settlement(
        &self,
        id: i64,
        submitted_tx: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE payments SET submitted_tx = $1, updated_at = $2 WHERE id = $3 AND status = 'verified'",
        )
        .bind(submitted_tx)
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await
        .context("noting a submitted settlement")?;
        Ok(())
    }

    /// Notes that transaction `settlement_tx` moved the tokens into the escrow of the payment `lease`
    /// holds, to be recorded under `deposit_id`. [`StoreError::Overtaken`], and nothing noted, unless the
    /// payment is unsettled and still the lease's: its successor settles it (a failed payment's money,
    /// should it land all the same, is found again by a retry of its authorization, or given back by the
    /// escrow audit).
    pub async fn mark_payment_settled(
        &self,
        lease: PaymentLease<'_>,
        deposit_id: &str,
        settlement_tx: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(concat!(
            "UPDATE payments SET status = 'settled', deposit_id = $3, settlement_tx = $4, updated_at = $5",
            held_unsettled!()
        ))
        .bind(lease.payment)
        .bind(lease.holder)
        .bind(deposit_id)
        .bind(settlement_tx)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .context("marking a payment settled")?;
        lease.made(result.rows_affected())
    }

    /// Marks the unsettled payment `lease` holds as failed, and gives its lease back. A settled payment
    /// cannot fail: its money is in the escrow and it goes on to be recorded. [`StoreError::Overtaken`],
    /// and nothing marked, unless the payment is unsettled and still the lease's: a holder whose
    /// simulation was refused, then stalled while its successor settled (the buyer topped up), must not
    /// tell the buyer "refused" while the settlement lands.
    pub async fn fail_payment(
        &self,
        lease: PaymentLease<'_>,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(concat!(
            "UPDATE payments SET status = 'failed', failure = $3, lease_until = NULL, settle_asked_at = NULL, \
             updated_at = $4",
            held_unsettled!()
        ))
        .bind(lease.payment)
        .bind(lease.holder)
        .bind(reason)
        .bind(now_ms)
        .execute(self.pool())
        .await
        .context("failing a payment")?;
        lease.made(result.rows_affected())
    }

    /// Reopens a failed payment whose authorization is presented again (the buyer may have topped up).
    pub async fn reopen_payment(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "UPDATE payments SET status = 'verified', failure = NULL, updated_at = $1 WHERE id = $2 AND status = 'failed'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(self.pool())
        .await
        .context("reopening a payment")?;
        Ok(result.rows_affected() == 1)
    }

    /// Creates the task of a settled payment whose deposit is recorded on chain, and closes the payment,
    /// in one transaction: a task exists if and only if its deposit is recorded.
    pub async fn record_payment(&self, id: i64, task: &NewTask, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await.context("beginning to record a payment")?;
        task.insert(&mut tx, id, now_ms).await?;
        sqlx::query(
            "UPDATE payments SET status = 'recorded', lease_until = NULL, updated_at = $1 WHERE id = $2 AND status = 'settled'",
        )
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("closing a recorded payment")?;
        tx.commit().await.context("committing a recorded payment")?;
        Ok(())
    }

    /// A payer's payments not yet recorded nor refused: those it may be waiting on, oldest first.
    pub async fn payments_in_flight(&self, payer: &str, limit: i64) -> Result<Vec<Payment>, StoreError> {
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT ",
            columns!(),
            " FROM payments WHERE payer = $1 AND status IN ('verified', 'settled') ORDER BY id LIMIT $2"
        ))
        .bind(payer)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing a payer's payments in flight")?;
        rows.into_iter().map(Payment::try_from).collect()
    }

    /// What claiming a new authorization needs to know, in one read: whether (chain, token, payer, nonce)
    /// is a payment already, and the amounts the payer has authorized to us in `asset` on that chain that
    /// have not moved yet (verified, not yet settled), which its balance must cover besides the new one.
    pub async fn payer_outlook(
        &self,
        chain_id: i64,
        asset: &str,
        payer: &str,
        nonce: &str,
    ) -> Result<PayerOutlook, StoreError> {
        // Each half reads its own index; one round trip for both. The halves are told apart by a text tag,
        // which decodes alike on every engine.
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT 'known', amount FROM payments WHERE chain_id = $1 AND asset = $2 AND payer = $3 AND nonce = $4 \
             UNION ALL \
             SELECT 'not yet settled', amount FROM payments \
             WHERE payer = $3 AND status = 'verified' AND asset = $2 AND chain_id = $1",
        )
        .bind(chain_id)
        .bind(asset)
        .bind(payer)
        .bind(nonce)
        .fetch_all(self.pool())
        .await
        .context("reading a payer's payments in flight")?;
        let (known, not_yet_settled): (Vec<_>, Vec<_>) =
            rows.into_iter().partition(|(half, _)| half == "known");
        let (known, not_yet_settled) =
            (!known.is_empty(), not_yet_settled.into_iter().map(|(_, amount)| amount).collect());
        Ok(PayerOutlook { known, not_yet_settled })
    }

    /// Which of `tx_hashes` settled a payment of ours that has not failed (before transfer claims, a
    /// payment whose settlement a give-back took failed after settling): the escrow audit asks of every
    /// transfer into the escrow in its look-back at once, in chunks that stay within every engine's limit
    /// on parameters.
    pub async fn settlements_among(&self, tx_hashes: &[String]) -> Result<HashSet<String>, StoreError> {
        let mut found = HashSet::new();
        for chunk in tx_hashes.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT settlement_tx FROM payments WHERE status <> 'failed' AND settlement_tx IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
            for hash in chunk {
                query = query.bind(hash);
            }
            found.extend(query.fetch_all(self.pool()).await.context("looking for settlements")?);
        }
        Ok(found)
    }

    /// Forgets refused payments whose authorization expired before `valid_before` (UNIX seconds): nothing
    /// about them can change any more. Returns how many.
    pub async fn prune_failed_payments(&self, valid_before: i64) -> Result<u64, StoreError> {
        let pruned = sqlx::query("DELETE FROM payments WHERE status = 'failed' AND valid_before < $1")
            .bind(valid_before)
            .execute(self.pool())
            .await
            .context("pruning refused payments")?;
        Ok(pruned.rows_affected())
    }

    /// Payments not yet recorded nor failed whose lease has run out: work for the reconciler, the one
    /// left alone longest first. Each attempt leases (and so touches) its payment, so `limit` payments
    /// that stay in doubt for hours (a facilitator that never answered) take their turns with the rest
    /// rather than hold every later one back.
    pub async fn stalled_payments(&self, now_ms: i64, limit: i64) -> Result<Vec<i64>, StoreError> {
        sqlx::query_scalar(
            "SELECT id FROM payments WHERE status IN ('verified', 'settled') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY updated_at, id LIMIT $2",
        )
        .bind(now_ms)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .context("listing stalled payments")
    }
}
