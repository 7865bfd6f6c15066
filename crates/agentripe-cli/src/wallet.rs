//! A person's commands over the wallet: trust a server's terms once, read the audit log and the
//! payments, decide approvals, resume after a brake. The agent's tools offer none of these.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::{Path, PathBuf},
};

use agentripe_agent::{Ledger, Market, Policy, chain, now};
use clap::Subcommand;
use serde_json::json;

use crate::output::{self, Output};

#[derive(Debug, Subcommand)]
pub enum WalletAction {
    /// Trust the server's escrow, chain and token (checked on the chain first) and write the spend
    /// policy with conservative limits; edit it afterwards to change them.
    Init {
        /// JSON-RPC endpoint of the chain the server pays on (read by the wallet itself).
        #[arg(long, env = "RPC_URL")]
        rpc_url: String,
        /// Trust without asking (the terms are still checked on the chain).
        #[arg(long)]
        yes: bool,
        /// Replace an existing policy.
        #[arg(long)]
        force: bool,
    },
    /// The policy in force, whether signing is paused, and what was signed in the last hour and day.
    Show,
    /// Lift a pause a brake put on signing (after reading `wallet log`).
    Resume,
    /// The audit log, newest first: every decision, the rule that took it, and every person's act.
    Log {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// The payments this wallet signed and what became of them (asks the server about open ones).
    Payments {
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalAction {
    /// Payments waiting for a person (with --all, every approval ever asked).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Let one queued payment be signed, once, the next time the agent buys it.
    Approve {
        /// The approval's number, as `approvals list` shows it.
        id: i64,
    },
    /// Refuse one queued payment.
    Reject {
        /// The approval's number, as `approvals list` shows it.
        id: i64,
    },
}

/// The wallet's directory: `--wallet`, `AGENTRIPE_WALLET`, or `~/.agentripe`.
pub fn dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".agentripe")))
        .unwrap_or_else(|| PathBuf::from(".agentripe"))
}

/// Who acted, for the audit log.
fn person() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "person".into()))
}

pub async fn run(market: &Market, out: Output, dir: &Path, action: WalletAction) -> Result<(), String> {
    let ledger =
        || async { Ledger::open(&dir.join("ledger.sqlite")).await.map_err(|error| error.to_string()) };
    match action {
        WalletAction::Init { rpc_url, yes, force } => init(market, out, dir, &rpc_url, yes, force).await,
        WalletAction::Show => {
            let policy = Policy::load(&dir.join("policy.toml")).map_err(|error| error.to_string())?;
            let ledger = ledger().await?;
            let paused = ledger.paused().await.map_err(|error| error.to_string())?;
            let (hour, day) = ledger.spent(now()).await.map_err(|error| error.to_string())?;
            let trust = &policy.trust;
            let shown = json!({
                "escrow": trust.escrow.to_checksum(None),
                "chainId": trust.chain_id,
                "asset": trust.asset.to_checksum(None),
                "perPayment": policy.limits.per_payment.to_string(),
                "hourly": { "budget": policy.limits.hourly.to_string(), "signed": hour.to_string() },
                "daily": { "budget": policy.limits.daily.to_string(), "signed": day.to_string() },
                "approvalAbove": policy.approval.above.map(|above| above.to_string()),
                "paused": paused.as_ref().map(|pause| json!({ "rule": pause.rule, "detail": pause.detail, "at": pause.at })),
            });
            out.show(&shown, || {
                format!(
                    "pays escrow {} on chain {} in {}\n  per payment  {}\n  this hour    {} of {}\n  today        {} of {}\n  approval     above {}\n  signing      {}",
                    trust.escrow,
                    trust.chain_id,
                    trust.asset,
                    policy.limits.per_payment,
                    output::usdc(&hour.to_string()),
                    policy.limits.hourly,
                    output::usdc(&day.to_string()),
                    policy.limits.daily,
                    policy.approval.above.map(|above| above.to_string()).unwrap_or_else(|| "never".into()),
                    match &paused {
                        Some(pause) => format!("PAUSED by {}: {} (`agentripe wallet resume`)", pause.rule, pause.detail),
                        None => "on".into(),
                    },
                )
            });
            Ok(())
        }
        WalletAction::Resume => {
            match ledger().await?.resume(&person(), now()).await.map_err(|error| error.to_string())? {
                Some(pause) => out.show(&json!({ "resumed": true, "pause": pause }), || {
                    format!("signing resumed (it was paused by {}: {})", pause.rule, pause.detail)
                }),
                None => out.show(&json!({ "resumed": false }), || "signing was not paused".into()),
            }
            Ok(())
        }
        WalletAction::Log { limit } => {
            let events = ledger().await?.events(limit).await.map_err(|error| error.to_string())?;
            out.show(&json!({ "events": events }), || {
                events
                    .iter()
                    .map(|event| {
                        format!(
                            "#{:<5} {} {:<8} {:<22} {} {}",
                            event.id,
                            event.at,
                            event.kind,
                            event.rule,
                            event.amount.as_deref().map(output::usdc).unwrap_or_default(),
                            event.detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        WalletAction::Payments { limit } => {
            let payments =
                market.follow_payments(&ledger().await?, limit).await.map_err(|error| error.to_string())?;
            out.show(&json!({ "payments": payments }), || {
                payments
                    .iter()
                    .map(|payment| {
                        format!(
                            "{} {} {}/{} {} {} {}",
                            payment.signed_at,
                            output::usdc(&payment.amount),
                            payment.purchase.agent_id,
                            payment.purchase.service_path,
                            payment.outcome,
                            payment.task_id.as_deref().unwrap_or("-"),
                            payment.nonce
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}

async fn init(
    market: &Market,
    out: Output,
    dir: &Path,
    rpc_url: &str,
    yes: bool,
    force: bool,
) -> Result<(), String> {
    let path = dir.join("policy.toml");
    if path.exists() && !force {
        return Err(format!("{} exists: edit it, or pass --force to replace it", path.display()));
    }
    let offer = market.terms().await.map_err(|error| error.to_string())?;
    let trust = chain::verify_offer(&offer, rpc_url).await?;
    eprintln!(
        "{} asks to be paid into escrow {} on chain {} in token {} ({:?} version {:?}); the chain at {rpc_url} confirms it.",
        market.origin(),
        trust.escrow,
        trust.chain_id,
        trust.asset,
        trust.token_name,
        trust.token_version
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err("confirm on a terminal, or pass --yes".into());
        }
        eprint!("Trust these terms for every payment of this wallet? [y/N] ");
        std::io::stderr().flush().map_err(|error| error.to_string())?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer).map_err(|error| error.to_string())?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err("not trusted; nothing written".into());
        }
    }
    std::fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    if force && path.exists() {
        std::fs::remove_file(&path).map_err(|error| format!("cannot replace {}: {error}", path.display()))?;
    }
    std::fs::write(&path, Policy::template(&trust))
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    read_only(&path)?;
    Ledger::open(&dir.join("ledger.sqlite")).await.map_err(|error| error.to_string())?;
    out.show(
        &json!({ "policy": path, "escrow": trust.escrow.to_checksum(None), "chainId": trust.chain_id }),
        || {
            format!(
                "wrote {} (read-only; limits: $1.00 a payment, $5.00 an hour, $20.00 a day)",
                path.display()
            )
        },
    );
    Ok(())
}

#[cfg(unix)]
fn read_only(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).map_err(|error| error.to_string())
}

#[cfg(not(unix))]
fn read_only(_: &Path) -> Result<(), String> {
    Ok(())
}

pub async fn approvals(out: Output, dir: &Path, action: ApprovalAction) -> Result<(), String> {
    let ledger = Ledger::open(&dir.join("ledger.sqlite")).await.map_err(|error| error.to_string())?;
    let (approve, id) = match action {
        ApprovalAction::List { all } => {
            let approvals = ledger.approvals(all, now()).await.map_err(|error| error.to_string())?;
            out.show(&json!({ "approvals": approvals }), || {
                if approvals.is_empty() {
                    return "no payment waits for approval".into();
                }
                approvals
                    .iter()
                    .map(|approval| {
                        format!(
                            "#{:<4} {:<8} {} to agent {} for {} on {} (expires {}): {}",
                            approval.id,
                            approval.status,
                            output::usdc(&approval.amount),
                            approval.purchase.agent_id,
                            approval.purchase.service_path,
                            approval.purchase.server,
                            approval.expires_at,
                            approval.reason
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            return Ok(());
        }
        ApprovalAction::Approve { id } => (true, id),
        ApprovalAction::Reject { id } => (false, id),
    };
    let decided = ledger
        .decide_approval(id, approve, &person(), now())
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("approval #{id} is not pending (decided, used, expired or unknown)"))?;
    out.show(&json!({ "approval": decided }), || {
        format!(
            "approval #{id} {}: {} to agent {} for {}",
            decided.status,
            output::usdc(&decided.amount),
            decided.purchase.agent_id,
            decided.purchase.service_path
        )
    });
    Ok(())
}
