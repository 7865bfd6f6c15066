//! Chain writes of one kind gathered into one transaction: the deposits recorded, released or refunded
//! within a short wait go out together through the escrow's batch entry points, which skip an entry
//! already done instead of reverting. The transaction is stored for every member before it is
//! broadcast (agentripe-store's `chain_tx_members`), so each subject's write is found and confirmed
//! after a crash exactly as a lone one is, and nothing is sent for it twice.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use alloy::{
    primitives::{Address, Bytes},
    rpc::types::TransactionReceipt,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    chain_writer::{ChainWriter, WriteError},
    pipeline::RpcError,
};

/// The most `max_size` may be: a batch's gas grows with it, and so do the statement parameters that
/// list its members (SQLite takes 32,766).
pub const MAX_BATCH: usize = 500;

/// How many writes share a transaction, and how long they wait for company.
///
/// A write goes out at once when no batch of its kind is in flight, so a lone write never waits; those
/// that arrive while one is in flight gather until it lands (on Base, about a block), the batch is
/// full, or the first of them has waited `max_wait`.
#[derive(Clone, Copy, Debug)]
pub struct BatchPolicy {
    /// The most writes in one transaction: bounds its gas and calldata.
    pub max_size: usize,
    /// The longest a write waits behind a batch in flight: one that is slow to land (a fee spike) does
    /// not hold the next back for longer. Half of Base's 2 s block by default.
    pub max_wait: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self { max_size: 50, max_wait: Duration::from_millis(1_000) }
    }
}

/// One kind of batched write.
pub trait BatchCall: Send + Sync + 'static {
    /// What one subject asks to be written.
    type Entry: Clone + Send + 'static;
    /// What the transaction is for, as stored: `record`, `release`, `refund`.
    const PURPOSE: &'static str;
    /// The call that writes `entries`: the single entry point for one, the batch entry point for several.
    fn input(entries: &[Self::Entry]) -> Bytes;
}

struct Request<E> {
    subject: String,
    entry: E,
}

/// A write's outcome as its batch's members see it: the receipt of the transaction that carried it.
pub type Written = Result<Arc<TransactionReceipt>, WriteError>;

type Answer = oneshot::Sender<Written>;

/// Everyone waiting on a subject's write, by subject: a subject already queued or in flight is not
/// written again (a request and the reconciler may both advance one task), its caller waits with the
/// first.
type Waiting = Arc<Mutex<HashMap<String, Vec<Answer>>>>;

/// Gathers writes of kind `C` to the contract at `to` into batches and sends them (see [`BatchPolicy`]).
#[derive(Debug)]
pub struct Batcher<C: BatchCall> {
    requests: mpsc::UnboundedSender<Request<C::Entry>>,
    waiting: Waiting,
}

impl<C: BatchCall> Batcher<C> {
    /// Starts gathering; the batches go out through `writer`.
    pub fn start(writer: ChainWriter, to: Address, policy: BatchPolicy) -> Self {
        let (requests, incoming) = mpsc::unbounded_channel();
        let waiting = Waiting::default();
        let sender = Sender { writer, to, waiting: waiting.clone() };
        tokio::spawn(gather::<C>(incoming, sender, policy));
        Self { requests, waiting }
    }

    /// Writes `entry` for `subject` with the next batch and waits until its transaction is mined: its
    /// receipt (it may have reverted, or skipped the entry as already done: the caller reads which).
    /// The caller has asked [`ChainWriter::resume`] first, so nothing was stored for `subject`.
    pub async fn write(&self, subject: String, entry: C::Entry) -> Written {
        let (done, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let answers = waiting.entry(subject.clone()).or_default();
            answers.push(done);
            answers.len() == 1
        };
        if first && self.requests.send(Request { subject: subject.clone(), entry }).is_err() {
            self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&subject);
            return Err(stopped());
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> WriteError {
    RpcError { context: "batching a chain write", message: "the batcher stopped".into() }.into()
}

async fn gather<C: BatchCall>(
    mut incoming: mpsc::UnboundedReceiver<Request<C::Entry>>,
    sender: Sender,
    policy: BatchPolicy,
) {
    let (in_flight, mut landed) = watch::channel(0usize);
    let in_flight = Arc::new(in_flight);
    while let Some(first) = incoming.recv().await {
        let deadline = tokio::time::Instant::now() + policy.max_wait;
        let mut batch = vec![first];
        while batch.len() < policy.max_size {
            if let Ok(request) = incoming.try_recv() {
                batch.push(request);
                continue;
            }
            // Nothing of this kind in flight: go now, a lone write never waits.
            if *landed.borrow_and_update() == 0 {
                break;
            }
            tokio::select! {
                request = incoming.recv() => match request {
                    Some(request) => batch.push(request),
                    None => break,
                },
                _ = landed.changed() => {}
                // A batch that takes long to land does not hold the next one back for longer.
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        // Sent and confirmed on a task of its own: the next batch gathers meanwhile.
        let flight = InFlight::new(in_flight.clone());
        let sender = sender.clone();
        tokio::spawn(async move {
            sender.send::<C>(batch).await;
            drop(flight);
        });
    }
}

/// Counts a batch in flight until it is dropped, even by a panic.
struct InFlight(Arc<watch::Sender<usize>>);

impl InFlight {
    fn new(count: Arc<watch::Sender<usize>>) -> Self {
        count.send_modify(|count| *count += 1);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|count| *count -= 1);
    }
}

/// Sends batches and answers their waiters.
#[derive(Clone)]
struct Sender {
    writer: ChainWriter,
    to: Address,
    waiting: Waiting,
}

impl Sender {
    async fn send<C: BatchCall>(&self, batch: Vec<Request<C::Entry>>) {
        let answers = Answers::owed(&self.waiting, &batch);
        let subjects: Vec<&str> = batch.iter().map(|request| request.subject.as_str()).collect();
        let entries: Vec<C::Entry> = batch.iter().map(|request| request.entry.clone()).collect();
        let result =
            self.writer.send_and_confirm_for(C::PURPOSE, &subjects, self.to, C::input(&entries)).await;
        let spoiled = match &result {
            Err(WriteError::WouldRevert(reason)) => Some(reason.clone()),
            // Its estimate passed, then the block it landed in had changed (an agent burned, say).
            Ok(receipt) if !receipt.status() => {
                Some(format!("reverted on chain in {}", receipt.transaction_hash))
            }
            _ => None,
        };
        match spoiled {
            // One entry can spoil a batch (a recordDeposit the escrow refuses, say, for an agent that is
            // gone): each goes alone, so the others are written and the spoiler gets its own answer.
            Some(reason) if batch.len() > 1 => {
                tracing::warn!(purpose = C::PURPOSE, writes = batch.len(), %reason, "a batch is refused; sending its writes one by one");
                for (Request { subject, entry }, answer) in batch.into_iter().zip(answers.one_by_one()) {
                    let sender = self.clone();
                    tokio::spawn(async move {
                        let input = C::input(std::slice::from_ref(&entry));
                        let result =
                            sender.writer.send_and_confirm(C::PURPOSE, &subject, sender.to, input).await;
                        answer.give(&result.map(Arc::new));
                    });
                }
            }
            _ => answers.give(&result.map(Arc::new)),
        }
    }
}

/// The waiters of some subjects, owed one answer: their write's outcome, or, should the task sending it
/// end without one (a panic), "stopped", so no caller waits forever on a write nobody is making and
/// the subject can be asked for again.
struct Answers {
    waiting: Waiting,
    subjects: Vec<String>,
}

impl Answers {
    fn owed<E>(waiting: &Waiting, batch: &[Request<E>]) -> Self {
        Self {
            waiting: waiting.clone(),
            subjects: batch.iter().map(|request| request.subject.clone()).collect(),
        }
    }

    fn one_by_one(mut self) -> Vec<Answers> {
        let subjects = std::mem::take(&mut self.subjects);
        subjects
            .into_iter()
            .map(|subject| Answers { waiting: self.waiting.clone(), subjects: vec![subject] })
            .collect()
    }

    /// Tells everyone waiting on these subjects how their write went.
    fn give(mut self, result: &Written) {
        self.answer(result);
    }

    fn answer(&mut self, result: &Written) {
        let subjects = std::mem::take(&mut self.subjects);
        let mut waiting = self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for subject in subjects {
            for done in waiting.remove(&subject).unwrap_or_default() {
                // A waiter that went away (its request timed out) learns the outcome from the chain later.
                let _ = done.send(shared(result));
            }
        }
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        self.answer(&Err(stopped()));
    }
}

/// A copy of a write's outcome for each member of its batch.
fn shared(result: &Written) -> Written {
    let error = match result {
        Ok(receipt) => return Ok(receipt.clone()),
        Err(error) => error,
    };
    Err(match error {
        WriteError::WouldRevert(reason) => WriteError::WouldRevert(reason.clone()),
        WriteError::NotMinedYet(hash) => WriteError::NotMinedYet(*hash),
        WriteError::Dropped(hash) => WriteError::Dropped(*hash),
        WriteError::Rpc(RpcError { context, message }) => {
            WriteError::Rpc(RpcError { context, message: message.clone() })
        }
        // A batch is written under no payment's lease, so this is never `StoreError::Overtaken`: a
        // leased write batched would have to keep that error, which its holder acts on.
        WriteError::Store(error) => {
            RpcError { context: "storing a batched write", message: error.to_string() }.into()
        }
    })
}
