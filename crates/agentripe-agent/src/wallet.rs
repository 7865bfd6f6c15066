//! The buyer's wallet: it signs an x402 payment only after the spend policy has passed it, and writes
//! every decision to the audit log. Nothing else in the agent's reach produces a payment signature.

use std::path::{Path, PathBuf};

use agentripe_x402::{Offer, client, encode_header, v2};
use alloy::{
    primitives::{Address, U256},
    signers::{Signer, SignerSync},
};
use serde::Serialize;
use sqlx::SqliteConnection;

use crate::{
    ledger::{self, Event, Ledger, LedgerError, Purchase, SignedPayment},
    policy::{DECIMALS, ListVerdict, Policy, PolicyError},
};

/// The rule that refused, queued or paused a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A brake tripped earlier and no person has resumed signing.
    Paused,
    /// The 402 answer offers no `exact` payment the wallet understands.
    UnusableTerms,
    UntrustedChain,
    UntrustedEscrow,
    UntrustedAsset,
    UntrustedTokenDomain,
    ServerDenied,
    ServerNotAllowed,
    AgentDenied,
    AgentNotAllowed,
    PerPaymentCap,
    HourlyBudget,
    DailyBudget,
    ApprovalRequired,
    BurstBrake,
    NewAgentBrake,
    BalanceBrake,
    /// The balance brake is on and the balance could not be read.
    BalanceUnknown,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::UnusableTerms => "unusable_terms",
            Self::UntrustedChain => "untrusted_chain",
            Self::UntrustedEscrow => "untrusted_escrow",
            Self::UntrustedAsset => "untrusted_asset",
            Self::UntrustedTokenDomain => "untrusted_token_domain",
            Self::ServerDenied => "server_denied",
            Self::ServerNotAllowed => "server_not_allowed",
            Self::AgentDenied => "agent_denied",
            Self::AgentNotAllowed => "agent_not_allowed",
            Self::PerPaymentCap => "per_payment_cap",
            Self::HourlyBudget => "hourly_budget",
            Self::DailyBudget => "daily_budget",
            Self::ApprovalRequired => "approval_required",
            Self::BurstBrake => "burst_brake",
            Self::NewAgentBrake => "new_agent_brake",
            Self::BalanceBrake => "balance_brake",
            Self::BalanceUnknown => "balance_unknown",
        }
    }

    /// What a person (or the agent, on their behalf) can do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::Paused | Self::BurstBrake | Self::NewAgentBrake | Self::BalanceBrake => {
                "signing is paused: a person reviews `agentripe wallet log` and runs `agentripe wallet resume`"
            }
            Self::ApprovalRequired => {
                "a person approves it with `agentripe approvals approve ID`; then buy again with the same arguments"
            }
            Self::UnusableTerms
            | Self::UntrustedChain
            | Self::UntrustedEscrow
            | Self::UntrustedAsset
            | Self::UntrustedTokenDomain => {
                "the server asks for a payment the wallet does not trust: do not retry; tell a person"
            }
            Self::ServerDenied | Self::ServerNotAllowed | Self::AgentDenied | Self::AgentNotAllowed => {
                "the spend policy does not let this wallet pay there: choose another agent or ask a person"
            }
            Self::PerPaymentCap => "the price is above the per-payment cap: choose a cheaper service",
            Self::HourlyBudget | Self::DailyBudget => {
                "the budget is spent for now: wait for the window to roll"
            }
            Self::BalanceUnknown => "the wallet cannot read its balance from the chain: retry later",
        }
    }

    fn is_brake(self) -> bool {
        matches!(self, Self::BurstBrake | Self::NewAgentBrake | Self::BalanceBrake)
    }
}

/// A payment the server asked for: the purchase and the server's 402 answer.
#[derive(Clone, Debug)]
pub struct Ask {
    pub purchase: Purchase,
    pub required: v2::PaymentRequired,
}

/// The moment of the decision and the payer's balance then (`None`: not read).
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub now: u64,
    pub balance: Option<U256>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    pub rule: Rule,
    pub reason: String,
    pub remedy: &'static str,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Queued {
    pub approval_id: i64,
    pub expires_at: u64,
    pub reason: String,
    pub remedy: &'static str,
}

/// A signed payment, ready for `PAYMENT-SIGNATURE`.
#[derive(Clone, Debug)]
pub struct Signed {
    pub header: String,
    pub nonce: String,
    pub amount: U256,
}

#[derive(Clone, Debug)]
pub enum Decision {
    Signed(Signed),
    Refused(Refusal),
    Queued(Queued),
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// What the rules concluded, before anything is written.
enum Verdict {
    Sign { offer: Box<v2::PaymentRequirements>, approval: Option<i64> },
    Refuse(Rule, String),
    Queue { reason: String, amount: U256 },
    AlreadyQueued(ledger::Approval),
}

/// A buyer's key behind its spend policy and ledger.
#[derive(Debug)]
pub struct Wallet<S> {
    policy_path: PathBuf,
    ledger: Ledger,
    signer: S,
}

impl<S: Signer + SignerSync + Send + Sync> Wallet<S> {
    /// The wallet in `dir`: `policy.toml` (written by a person) and `ledger.sqlite`.
    pub async fn open(dir: &Path, signer: S) -> Result<Self, WalletError> {
        let policy_path = dir.join("policy.toml");
        Policy::load(&policy_path)?;
        let ledger = Ledger::open(&dir.join("ledger.sqlite")).await?;
        Ok(Self { policy_path, ledger, signer })
    }

    pub fn address(&self) -> Address {
        self.signer.address()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The policy as it is on disk now: a person's edit applies to the next payment.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        Policy::load(&self.policy_path)
    }

    /// Decides on `ask` now, reading the balance from the pinned chain when the balance brake needs it.
    pub async fn pay(&self, ask: &Ask) -> Result<Decision, WalletError> {
        let policy = self.policy()?;
        // An RPC that does not answer leaves the balance unknown, which the balance brake refuses.
        let balance = match policy.brakes.balance_share_per_hour {
            Some(_) => tokio::time::timeout(
                std::time::Duration::from_secs(10),
                crate::chain::usdc_balance(&policy.trust, self.address()),
            )
            .await
            .ok()
            .and_then(Result::ok),
            None => None,
        };
        self.decide(&policy, ask, Context { now: crate::now(), balance }).await
    }

    /// Applies `policy` to `ask` and records the decision; signs only when every rule passed.
    pub async fn decide(
        &self,
        policy: &Policy,
        ask: &Ask,
        context: Context,
    ) -> Result<Decision, WalletError> {
        // Every line logged and every approval queued describes the offer the rules judged: the first
        // trusted one, not whatever the server listed first.
        let chosen = trusted_offer(policy, ask);
        let judged = chosen.as_ref().ok().map(|(_, offer)| offer.clone());
        let mut transaction = self.ledger.begin().await?;
        let verdict = judge(&mut transaction, policy, ask, chosen, context).await?;
        let event = |kind: &str, rule: &str, detail: String| {
            let mut event = Event::new(context.now, kind, rule, detail).about(&ask.purchase);
            event.balance = context.balance.map(|balance| balance.to_string());
            if let Some(offer) = &judged {
                event.amount = Some(offer.amount.to_string());
                event.pay_to = Some(offer.pay_to.to_checksum(None));
                event.asset = Some(offer.asset.to_checksum(None));
                event.chain_id = Some(offer.network.chain_id);
            }
            event
        };
        let decision = match verdict {
            Verdict::Refuse(rule, reason) => {
                ledger::append(&mut transaction, &event("refused", rule.name(), reason.clone())).await?;
                if rule.is_brake() {
                    ledger::append(&mut transaction, &event("paused", rule.name(), reason.clone())).await?;
                }
                Decision::Refused(Refusal { rule, reason, remedy: rule.remedy() })
            }
            Verdict::AlreadyQueued(approval) => Decision::Queued(Queued {
                approval_id: approval.id,
                expires_at: approval.expires_at,
                reason: approval.reason,
                remedy: Rule::ApprovalRequired.remedy(),
            }),
            Verdict::Queue { reason, amount } => {
                let expires_at =
                    context.now.saturating_add(policy.approval.expires_after_minutes.saturating_mul(60));
                let id = ledger::queue_approval(
                    &mut transaction,
                    &ask.purchase,
                    amount,
                    &reason,
                    context.now,
                    expires_at,
                )
                .await?;
                let mut queued = event("queued", Rule::ApprovalRequired.name(), reason.clone());
                queued.approval_id = Some(id);
                ledger::append(&mut transaction, &queued).await?;
                Decision::Queued(Queued {
                    approval_id: id,
                    expires_at,
                    reason,
                    remedy: Rule::ApprovalRequired.remedy(),
                })
            }
            Verdict::Sign { offer, approval } => {
                if let Some(id) = approval {
                    ledger::use_approval(&mut transaction, id).await?;
                }
                let payment =
                    client::pay(&self.signer, &offer, Some(ask.required.resource.clone()), context.now)
                        .map_err(|error| WalletError::Sign(error.to_string()))?;
                let authorization = &payment.payload.authorization;
                let signed = Signed {
                    header: encode_header(&payment),
                    nonce: authorization.nonce.to_string(),
                    amount: authorization.value,
                };
                ledger::record_payment(
                    &mut transaction,
                    &SignedPayment {
                        nonce: signed.nonce.clone(),
                        payer: self.address().to_checksum(None),
                        signed_at: context.now,
                        valid_before: authorization.valid_before.saturating_to(),
                        purchase: ask.purchase.clone(),
                        amount: signed.amount.to_string(),
                        header: signed.header.clone(),
                        outcome: "unknown".into(),
                        task_id: None,
                    },
                )
                .await?;
                let rule = if approval.is_some() { "approved" } else { "within_policy" };
                let mut line = event("signed", rule, "every rule passed".into());
                line.nonce = Some(signed.nonce.clone());
                line.approval_id = approval;
                ledger::append(&mut transaction, &line).await?;
                Decision::Signed(signed)
            }
        };
        transaction.commit().await.map_err(LedgerError::from)?;
        Ok(decision)
    }
}

/// The longest an authorization the wallet signs may stay valid: the server names the validity, and an
/// authorization that outlives the budgets' windows could be settled long after it was counted.
pub const MAX_AUTHORIZATION_SECONDS: u64 = 3_600;

fn usdc(amount: U256) -> String {
    agentripe_server::catalog::format_price(amount, DECIMALS)
}

/// The first offer that is payable and trusted, or the reason the best one is not.
fn trusted_offer(policy: &Policy, ask: &Ask) -> Result<(v2::PaymentRequirements, Offer), (Rule, String)> {
    let trust = &policy.trust;
    let mut refusal = (Rule::UnusableTerms, "the server offers no exact EVM payment".to_string());
    for accepted in &ask.required.accepts {
        let Ok(offer) = Offer::from_requirements(accepted) else { continue };
        let mismatch = if offer.max_timeout_seconds > MAX_AUTHORIZATION_SECONDS {
            Some((
                Rule::UnusableTerms,
                format!(
                    "an authorization valid {} s is asked; the wallet signs at most {MAX_AUTHORIZATION_SECONDS} s",
                    offer.max_timeout_seconds
                ),
            ))
        } else if offer.network.chain_id != trust.chain_id {
            Some((
                Rule::UntrustedChain,
                format!("chain {} is not the trusted {}", offer.network.chain_id, trust.chain_id),
            ))
        } else if offer.pay_to != trust.escrow {
            Some((
                Rule::UntrustedEscrow,
                format!("payTo {} is not the trusted escrow {}", offer.pay_to, trust.escrow),
            ))
        } else if offer.asset != trust.asset {
            Some((
                Rule::UntrustedAsset,
                format!("asset {} is not the trusted token {}", offer.asset, trust.asset),
            ))
        } else if offer.token_name != trust.token_name || offer.token_version != trust.token_version {
            Some((
                Rule::UntrustedTokenDomain,
                format!(
                    "token domain {:?}/{:?} is not the trusted {:?}/{:?}",
                    offer.token_name, offer.token_version, trust.token_name, trust.token_version
                ),
            ))
        } else {
            None
        };
        match mismatch {
            None => return Ok((accepted.clone(), offer)),
            Some(reason) if refusal.0 == Rule::UnusableTerms => refusal = reason,
            Some(_) => {}
        }
    }
    Err(refusal)
}

/// The rules, in order: pause, trust (`chosen`: the trusted offer, or why there is none), lists, cap,
/// budgets, approval, brakes.
async fn judge(
    connection: &mut SqliteConnection,
    policy: &Policy,
    ask: &Ask,
    chosen: Result<(v2::PaymentRequirements, Offer), (Rule, String)>,
    context: Context,
) -> Result<Verdict, LedgerError> {
    let now = context.now;
    if let Some(pause) = ledger::paused(connection).await? {
        return Ok(Verdict::Refuse(
            Rule::Paused,
            format!("signing is paused since {}: {}", pause.at, pause.detail),
        ));
    }
    let (accepted, offer) = match chosen {
        Ok(found) => found,
        Err((rule, reason)) => return Ok(Verdict::Refuse(rule, reason)),
    };
    let purchase = &ask.purchase;
    match policy.servers.admits(&purchase.server) {
        Err(ListVerdict::Denied) => {
            return Ok(Verdict::Refuse(
                Rule::ServerDenied,
                format!("{} is on the deny list", purchase.server),
            ));
        }
        Err(ListVerdict::NotAllowed) => {
            return Ok(Verdict::Refuse(
                Rule::ServerNotAllowed,
                format!("{} is not on the allow list", purchase.server),
            ));
        }
        Ok(()) => {}
    }
    match policy.agents.admits(&purchase.agent_id) {
        Err(ListVerdict::Denied) => {
            return Ok(Verdict::Refuse(
                Rule::AgentDenied,
                format!("agent {} is on the deny list", purchase.agent_id),
            ));
        }
        Err(ListVerdict::NotAllowed) => {
            return Ok(Verdict::Refuse(
                Rule::AgentNotAllowed,
                format!("agent {} is not on the allow list", purchase.agent_id),
            ));
        }
        Ok(()) => {}
    }
    let amount = offer.amount;
    let limits = &policy.limits;
    if amount > limits.per_payment.0 {
        return Ok(Verdict::Refuse(
            Rule::PerPaymentCap,
            format!("{} is above the per-payment cap of {}", usdc(amount), limits.per_payment),
        ));
    }
    for (rule, window, budget) in
        [(Rule::HourlyBudget, 3_600, limits.hourly), (Rule::DailyBudget, 86_400, limits.daily)]
    {
        let (_, spent) = ledger::signed_since(connection, now.saturating_sub(window)).await?;
        if spent.saturating_add(amount) > budget.0 {
            return Ok(Verdict::Refuse(
                rule,
                format!(
                    "{} signed in the window plus {} is above the budget of {budget}",
                    usdc(spent),
                    usdc(amount)
                ),
            ));
        }
    }

    let mut approval = None;
    if let Some(above) = policy.approval.above
        && amount > above.0
    {
        if let Some(approved) = ledger::approval_for(connection, purchase, amount, "approved", now).await? {
            approval = Some(approved.id);
        } else if let Some(pending) =
            ledger::approval_for(connection, purchase, amount, "pending", now).await?
        {
            return Ok(Verdict::AlreadyQueued(pending));
        } else {
            let reason = format!("{} is above the approval threshold of {above}", usdc(amount));
            return Ok(Verdict::Queue { reason, amount });
        }
    }

    // Brakes count from the last time a person resumed signing.
    let resumed = ledger::last_resume(connection).await?;
    let brakes = &policy.brakes;
    if let Some(burst) = brakes.burst {
        let since = now.saturating_sub(burst.within_seconds).max(resumed);
        let (count, _) = ledger::signed_since(connection, since).await?;
        if count >= u64::from(burst.payments) {
            return Ok(Verdict::Refuse(
                Rule::BurstBrake,
                format!(
                    "{} payments within {} s would exceed the burst limit of {}",
                    count + 1,
                    burst.within_seconds,
                    burst.payments
                ),
            ));
        }
    }
    if brakes.new_agent
        && approval.is_none()
        && !policy.agents.allow.contains(&purchase.agent_id)
        && !ledger::knows_agent(connection, purchase).await?
    {
        return Ok(Verdict::Refuse(
            Rule::NewAgentBrake,
            format!("a first payment to agent {} on {}", purchase.agent_id, purchase.server),
        ));
    }
    if let Some(share) = brakes.balance_share_per_hour {
        let Some(balance) = context.balance else {
            return Ok(Verdict::Refuse(Rule::BalanceUnknown, "the balance brake needs the balance".into()));
        };
        let since = now.saturating_sub(3_600).max(resumed);
        let highest = ledger::highest_balance_since(connection, since).await?.max(balance);
        let (_, spent) = ledger::signed_since(connection, since).await?;
        let allowed = highest * U256::from((share * 10_000.0).round() as u64) / U256::from(10_000);
        if spent.saturating_add(amount) > allowed {
            return Ok(Verdict::Refuse(
                Rule::BalanceBrake,
                format!(
                    "{} within the hour would be more than {:.0}% of the balance of {}",
                    usdc(spent.saturating_add(amount)),
                    share * 100.0,
                    usdc(highest)
                ),
            ));
        }
    }
    Ok(Verdict::Sign { offer: Box::new(accepted), approval })
}
