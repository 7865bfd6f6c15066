//! How answers are shown: JSON for agents (`--json`), text for people.

use std::io::IsTerminal;

use agentripe_server::catalog::format_price;
use alloy::primitives::U256;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `human` for people.
    pub fn show(&self, value: &Value, human: impl FnOnce() -> String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{}", human());
        }
    }

    /// A progress line for a person watching a terminal; nothing for pipes, files and `--json`.
    pub fn progress(&self, line: &str) {
        if !self.json && std::io::stderr().is_terminal() {
            eprint!("\r{line}   ");
        }
    }

    /// Ends a progress line, so what follows starts on its own line.
    pub fn end_progress(&self) {
        if !self.json && std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
}

/// Token units (a decimal string) as USDC: `$0.10`.
pub fn usdc(units: &str) -> String {
    units.parse::<U256>().map(|amount| format_price(amount, 6)).unwrap_or_else(|_| units.to_owned())
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field].as_str().unwrap_or("-")
}

/// A task for people.
pub fn describe(task: &Value) -> String {
    format!(
        "task {}\n  agent {}  product {}  status {}  escrow {}\n  detail  {}\n  result  {}",
        text(task, "id"),
        text(task, "agentId"),
        text(task, "productId"),
        text(task, "status"),
        text(task, "escrowStatus"),
        text(task, "taskDetail"),
        text(task, "result"),
    )
}

/// A task's outcome for people.
pub fn outcome(task_id: &str, result: &Value) -> String {
    format!(
        "task {task_id}\n  status  {}\n  escrow  {}\n  result  {}",
        text(result, "status"),
        text(result, "escrowAction"),
        result["result"].as_str().or(result["errorMessage"].as_str()).unwrap_or("-"),
    )
}

/// Agents and their catalogs, one line each.
pub fn agents(listed: &Value) -> String {
    let mut lines = vec![format!("{} agent(s)", listed["total"])];
    for agent in listed["agents"].as_array().into_iter().flatten() {
        let data = &agent["data"];
        let offers: Vec<String> = data["services"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|service| service["catalog"].as_array().cloned().unwrap_or_default())
            .map(|entry| format!("{} {}", text(&entry, "path"), text(&entry, "price")))
            .collect();
        lines.push(format!(
            "#{:<5} {:<30} {}",
            text(agent, "agentId"),
            text(data, "name"),
            offers.join(", ")
        ));
    }
    lines.join("\n")
}

/// One agent for people.
pub fn agent(shown: &Value) -> String {
    let outcomes = &shown["tasks"]["outcomes"];
    format!(
        "agent #{} {}\n  owner   {}\n  payout  {}\n  tasks   {} released, {} rejected, {} failed, {} expired",
        text(shown, "agentId"),
        text(&shown["data"], "name"),
        text(shown, "owner"),
        text(shown, "payoutAddress"),
        outcomes["released"],
        outcomes["rejected"],
        outcomes["failed"],
        outcomes["expired"],
    )
}
