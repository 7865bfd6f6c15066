//! A vendor agent's side: signed calls to the task loop, and `work --exec`, which runs a command for
//! each task and reports its output.

use std::{process::Stdio, time::Duration};

use agentripe_agent::{Market, market::VendorAction};
use alloy::signers::local::PrivateKeySigner;
use clap::Subcommand;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::output::{Output, describe};

#[derive(Debug, Subcommand)]
pub enum Action {
    /// The agent's tasks.
    Tasks {
        /// pending (default), processing, rejected, completed, failed, a comma list, or all.
        #[arg(long)]
        status: Option<String>,
    },
    /// Take a task.
    Start {
        /// The task's id (0x...), as `vendor tasks` lists it.
        task: String,
    },
    /// Report a result for review.
    Complete {
        /// The task's id (0x...).
        task: String,
        /// The result, inline.
        #[arg(long, conflicts_with = "result_file")]
        result: Option<String>,
        /// The result, from a file.
        #[arg(long)]
        result_file: Option<std::path::PathBuf>,
    },
    /// Give a task up (the buyer is refunded).
    Fail {
        /// The task's id (0x...).
        task: String,
        /// Why, for the buyer.
        #[arg(long)]
        message: String,
    },
    /// For each pending or rejected task, run CMD (task JSON on stdin; TASK_ID, TASK_DETAIL and
    /// REVIEW_REASON in the environment) and report its stdout, or fail with its stderr.
    Work {
        #[arg(long)]
        exec: String,
        /// Process the tasks there are now, then stop.
        #[arg(long)]
        once: bool,
        /// Seconds between polls.
        #[arg(long, default_value_t = 5)]
        interval: u64,
    },
}

struct Vendor<'a> {
    market: &'a Market,
    out: Output,
    key: &'a PrivateKeySigner,
    agent: &'a str,
}

impl Vendor<'_> {
    async fn list(&self, status: &str) -> Result<Vec<Value>, String> {
        let listed =
            self.market.vendor_tasks(self.key, self.agent, status).await.map_err(|e| e.to_string())?;
        Ok(listed["tasks"].as_array().cloned().unwrap_or_default())
    }

    async fn act(&self, task: &str, action: VendorAction) -> Result<Value, String> {
        self.market.vendor_act(self.key, self.agent, task, action).await.map_err(|e| e.to_string())
    }
}

pub async fn run(
    market: &Market,
    out: Output,
    key: &PrivateKeySigner,
    agent: &str,
    action: Action,
) -> Result<(), String> {
    let vendor = Vendor { market, out, key, agent };
    match action {
        Action::Tasks { status } => {
            let tasks = vendor.list(status.as_deref().unwrap_or("pending")).await?;
            out.show(&json!({ "tasks": tasks }), || {
                if tasks.is_empty() {
                    "no tasks".into()
                } else {
                    tasks.iter().map(describe).collect::<Vec<_>>().join("\n")
                }
            });
        }
        Action::Start { task } => {
            let answer = vendor.act(&task, VendorAction::Start).await?;
            out.show(&answer, || describe(&answer["task"]));
        }
        Action::Complete { task, result, result_file } => {
            let result = match (result, result_file) {
                (Some(result), _) => result,
                (None, Some(file)) => std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
                (None, None) => return Err("give --result or --result-file".into()),
            };
            let answer = vendor.act(&task, VendorAction::Complete(result)).await?;
            out.show(&answer, || verdict(&answer));
        }
        Action::Fail { task, message } => {
            let answer = vendor.act(&task, VendorAction::Fail(message)).await?;
            out.show(&answer, || describe(&answer["task"]));
        }
        Action::Work { exec, once, interval } => loop {
            for task in vendor.list("pending,rejected").await? {
                work(&vendor, &exec, &task).await?;
            }
            if once {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(interval)).await;
        },
    }
    Ok(())
}

fn verdict(answer: &Value) -> String {
    format!(
        "task {}: {} ({}), escrow {}",
        answer["task"]["id"].as_str().unwrap_or("?"),
        if answer["review"]["approved"] == true { "approved" } else { "rejected" },
        answer["review"]["reason"].as_str().unwrap_or("-"),
        answer["escrowAction"].as_str().unwrap_or("?"),
    )
}

/// Runs the command for one task and reports what it produced.
async fn work(vendor: &Vendor<'_>, exec: &str, task: &Value) -> Result<(), String> {
    let id = task["id"].as_str().ok_or("a task without an id")?;
    if task["status"] == "pending" {
        vendor.act(id, VendorAction::Start).await?;
    }
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("TASK_ID", id)
        .env("TASK_DETAIL", task["taskDetail"].as_str().unwrap_or_default())
        .env("REVIEW_REASON", task["reviewReason"].as_str().unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {exec:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command need not read the task: a closed pipe is not an error.
        match stdin.write_all(task.to_string().as_bytes()).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => return Err(error.to_string()),
            _ => {}
        }
    }
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let answer = if output.status.success() {
        let result = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        vendor.act(id, VendorAction::Complete(result)).await?
    } else {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let message =
            if message.is_empty() { format!("{exec} exited with {}", output.status) } else { message };
        vendor.act(id, VendorAction::Fail(message)).await?
    };
    vendor.out.show(&answer, || match answer.get("review") {
        Some(_) => verdict(&answer),
        None => format!("task {id}: failed, escrow {}", answer["escrowAction"].as_str().unwrap_or("?")),
    });
    Ok(())
}
