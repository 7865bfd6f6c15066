//! The tools. Descriptions are written for a model: what the tool does, what it costs, and what to do
//! with each answer. Failures come back as tool results (`isError`) whose JSON names the error and,
//! for a wallet refusal, the rule and the remedy, so the model can act on them.

use std::{sync::Arc, time::Duration};

use alloy::signers::local::PrivateKeySigner;

use agentripe_agent::{
    Purchased, Wallet, chain,
    market::{MarketError, VendorAction},
    now,
    wallet::Queued,
};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{CallToolResult, Implementation, ServerCapabilities, ServerConfig},
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;

type ToolResult = Result<CallToolResult, ErrorData>;

#[derive(Clone, Debug)]
pub struct MarketTools {
    shared: Arc<Shared>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SearchServices {
    /// Words that must all appear in an agent's name, description or catalog (at most 8), e.g.
    /// "translate japanese". Leave out to list every agent.
    query: Option<String>,
    /// How many agents to return, 1-100 (default 20).
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AgentId {
    /// The agent's id, a decimal number such as "12" (from search_services).
    agent_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct BuyService {
    /// The vendor agent's id (from search_services).
    agent_id: String,
    /// The service's `path` in the agent's catalog, e.g. "translate".
    service_path: String,
    /// What the vendor should do, in plain words.
    task_detail: Option<String>,
    /// Structured input for the vendor, if its catalog asks for some.
    task_metadata: Option<Value>,
    /// The acceptance criteria the reviewer checks the result against. Be specific: the vendor is
    /// paid only if the result meets them.
    reviewer_request: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct GetTask {
    /// The task id buy_service returned (0x followed by 64 hex digits).
    task_id: String,
    /// Wait up to this many seconds (0-300) for the task to finish before answering (default 0).
    wait_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListLimit {
    /// How many to return, 1-200 (default 20).
    limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct VendorTasks {
    /// pending (default), processing, rejected, completed, failed, a comma-separated list, or all.
    status: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct TaskId {
    /// The task's id (0x followed by 64 hex digits), from vendor_list_tasks.
    task_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CompleteTask {
    /// The task's id, from vendor_list_tasks.
    task_id: String,
    /// The deliverable, in full. A reviewer checks it against the buyer's criteria.
    result: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FailTask {
    /// The task's id, from vendor_list_tasks.
    task_id: String,
    /// Why the task cannot be done, for the buyer.
    message: String,
}

/// What a person answers when the wallet asks, through the MCP client, to approve a payment.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct PaymentApproval {
    /// true to let the wallet sign this one payment, false to refuse it.
    approve: bool,
}

rmcp::elicit_safe!(PaymentApproval);

fn answer(value: Value) -> ToolResult {
    Ok(CallToolResult::structured(value))
}

fn failure(error: &str, message: impl Into<String>) -> ToolResult {
    Ok(CallToolResult::structured_error(json!({ "error": error, "message": message.into() })))
}

/// The server's answer as the tool's result, or its error as a failure the model can act on.
fn relay(answered: Result<Value, MarketError>) -> ToolResult {
    answered.map_or_else(market_failure, answer)
}

fn market_failure(error: MarketError) -> ToolResult {
    match error {
        MarketError::Api { status, error, message } => Ok(CallToolResult::structured_error(
            json!({ "error": error, "status": status, "message": message }),
        )),
        MarketError::Unreachable(message) => failure("server_unreachable", message),
        MarketError::Protocol(message) => failure("protocol", message),
        MarketError::Wallet(error) => failure("wallet", error.to_string()),
    }
}

fn clamp(value: Option<u32>, default: u32, max: u32) -> u32 {
    value.unwrap_or(default).clamp(1, max)
}

impl MarketTools {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, tool_router: Self::tool_router() }
    }

    /// The wallet, opened on first use; a tool result saying why when it cannot be.
    async fn wallet(&self) -> Result<&Wallet<PrivateKeySigner>, ToolResult> {
        let shared = &self.shared;
        shared
            .wallet
            .get_or_try_init(|| Wallet::open(&shared.wallet_dir, shared.key.clone()))
            .await
            .map_err(|error| failure("no_wallet", error.to_string()))
    }

    fn vendor(&self) -> Result<&str, ToolResult> {
        self.shared.vendor_agent.as_deref().ok_or_else(|| {
            failure(
                "vendor_tools_off",
                "this MCP server was started without --agent: it cannot act as a vendor",
            )
        })
    }

    /// Asks the person behind the MCP client to approve a queued payment, when the policy allows asking
    /// there and the client supports elicitation; records their answer like `agentripe approvals`.
    async fn asked_and_approved(
        &self,
        peer: &Peer<RoleServer>,
        queued: &Queued,
        agent_id: &str,
        path: &str,
    ) -> bool {
        let Ok(wallet) = self.wallet().await else { return false };
        if !wallet.policy().is_ok_and(|policy| policy.approval.ask_through_mcp) {
            return false;
        }
        let message = format!(
            "The agent asks to pay for service {path:?} of agent {agent_id} on {}: {}. Approve this one payment?",
            self.shared.market.origin(),
            queued.reason
        );
        let approve = match peer.elicit::<PaymentApproval>(message).await {
            Ok(Some(PaymentApproval { approve })) => approve,
            Err(rmcp::service::ElicitationError::UserDeclined) => false,
            // Not supported, cancelled or unanswered: the payment stays queued for `agentripe approvals`.
            _ => return false,
        };
        let decided =
            wallet.ledger().decide_approval(queued.approval_id, approve, "mcp-elicitation", now()).await;
        approve && matches!(decided, Ok(Some(_)))
    }

    async fn vendor_act(&self, task_id: &str, action: VendorAction) -> ToolResult {
        let agent = match self.vendor() {
            Ok(agent) => agent,
            Err(result) => return result,
        };
        relay(self.shared.market.vendor_act(&self.shared.key, agent, task_id, action).await)
    }
}

#[tool_router]
impl MarketTools {
    /// Find agents that sell services on the marketplace, with their catalogs (service path, price
    /// in USDC, description). Free; reads only.
    #[tool(annotations(title = "Search services", read_only_hint = true, open_world_hint = true))]
    async fn search_services(&self, Parameters(search): Parameters<SearchServices>) -> ToolResult {
        relay(self.shared.market.agents(search.query.as_deref(), clamp(search.limit, 20, 100)).await)
    }

    /// One agent: its catalog, payout address, reputation and how its past tasks ended (released,
    /// rejected, failed, expired). Check it before buying from an agent for the first time. Free.
    #[tool(annotations(title = "Show an agent", read_only_hint = true, open_world_hint = true))]
    async fn show_agent(&self, Parameters(AgentId { agent_id }): Parameters<AgentId>) -> ToolResult {
        relay(self.shared.market.agent(&agent_id).await)
    }

    /// Buy a service: SPENDS USDC. Pays the catalog price into escrow and creates a task for the
    /// vendor; the money reaches the vendor only if a reviewer approves the result against your
    /// reviewer_request, otherwise you are refunded. Returns {"outcome":"bought","taskId"}; follow it
    /// with get_task. The wallet's spend policy may refuse ({"outcome":"refused","rule","remedy"}:
    /// nothing was paid; do not retry the same purchase unless the remedy says so) or queue the payment
    /// for a person's approval ({"outcome":"queued","approvalId"}: tell the user, then call again with
    /// the same arguments once they have approved it). Your client may show the user that question
    /// directly.
    #[tool(annotations(
        title = "Buy a service (spends USDC)",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn buy_service(
        &self,
        peer: Peer<RoleServer>,
        Parameters(buy): Parameters<BuyService>,
    ) -> ToolResult {
        let wallet = match self.wallet().await {
            Ok(wallet) => wallet,
            Err(result) => return result,
        };
        let mut body = serde_json::Map::new();
        if let Some(detail) = buy.task_detail {
            body.insert("task_detail".into(), Value::String(detail));
        }
        if let Some(metadata) = buy.task_metadata {
            body.insert("task_metadata".into(), metadata);
        }
        if let Some(review) = buy.reviewer_request {
            body.insert("reviewer_request".into(), Value::String(review));
        }
        let body = Value::Object(body);
        let market = &self.shared.market;
        let mut purchased = match market.buy(wallet, &buy.agent_id, &buy.service_path, &body).await {
            Ok(purchased) => purchased,
            Err(error) => return market_failure(error),
        };
        if let Purchased::Queued(queued) = &purchased
            && self.asked_and_approved(&peer, queued, &buy.agent_id, &buy.service_path).await
        {
            purchased = match market.buy(wallet, &buy.agent_id, &buy.service_path, &body).await {
                Ok(purchased) => purchased,
                Err(error) => return market_failure(error),
            };
        }
        let value = serde_json::to_value(&purchased).unwrap_or(Value::Null);
        match purchased {
            Purchased::Bought(_) => answer(value),
            Purchased::Refused(_) | Purchased::Queued(_) => Ok(CallToolResult::structured_error(value)),
        }
    }

    /// A task you bought: its status, and once it has ended the result and what happened to the
    /// money (escrowAction: released to the vendor, or refunded to you). With wait_seconds, waits for
    /// the end that long. Free.
    #[tool(annotations(title = "Show a task", read_only_hint = true, open_world_hint = true))]
    async fn get_task(&self, Parameters(get): Parameters<GetTask>) -> ToolResult {
        let market = &self.shared.market;
        let key = Some(&self.shared.key);
        let wait = Duration::from_secs(get.wait_seconds.unwrap_or(0).min(300));
        let (done, result) = match market.wait(&get.task_id, key, wait, |_| {}).await {
            Ok(found) => found,
            Err(error) => return market_failure(error),
        };
        if done {
            return answer(json!({ "finished": true, "result": result }));
        }
        match market.task(&get.task_id, key).await {
            Ok(task) => answer(json!({ "finished": false, "task": task["task"] })),
            Err(error) => market_failure(error),
        }
    }

    /// The wallet: its USDC balance, the credit the escrow holds for it (refunds and payouts arrive by
    /// themselves; only one the token refused waits there for withdraw), what it signed in the last hour and day against its budgets, and whether a brake
    /// has paused signing. Free.
    #[tool(annotations(title = "Balances and budgets", read_only_hint = true, open_world_hint = true))]
    async fn balances(&self) -> ToolResult {
        let wallet = match self.wallet().await {
            Ok(wallet) => wallet,
            Err(result) => return result,
        };
        let policy = match wallet.policy() {
            Ok(policy) => policy,
            Err(error) => return failure("policy", error.to_string()),
        };
        let trust = &policy.trust;
        let address = wallet.address();
        let balance = chain::usdc_balance(trust, address).await;
        let credit = chain::withdrawable(&trust.rpc_url, trust.escrow, address).await;
        let ledger = wallet.ledger();
        let (spent, paused) = match (ledger.spent(now()).await, ledger.paused().await) {
            (Ok(spent), Ok(paused)) => (spent, paused),
            (Err(error), _) | (_, Err(error)) => return failure("ledger", error.to_string()),
        };
        let units = |read: Result<alloy::primitives::U256, String>| match read {
            Ok(amount) => json!(amount.to_string()),
            Err(error) => json!({ "unreadable": error }),
        };
        answer(json!({
            "address": address.to_checksum(None),
            "usdc": units(balance),
            "withdrawable": units(credit),
            "unit": "USDC base units (6 decimals)",
            "signedLastHour": spent.0.to_string(),
            "hourlyBudget": policy.limits.hourly.0.to_string(),
            "signedLastDay": spent.1.to_string(),
            "dailyBudget": policy.limits.daily.0.to_string(),
            "perPaymentCap": policy.limits.per_payment.0.to_string(),
            "paused": paused.map(|pause| json!({ "rule": pause.rule, "detail": pause.detail })),
        }))
    }

    /// Move the credit the escrow holds for this wallet (a refund or payout the token refused to send
    /// at the time) into the wallet. Sends one transaction, paid in ETH by this key. Safe to call again: with no credit it
    /// does nothing.
    #[tool(annotations(
        title = "Withdraw escrow credit",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn withdraw(&self) -> ToolResult {
        let escrow = match self.wallet().await.map(Wallet::policy) {
            Ok(Ok(policy)) => (policy.trust.rpc_url, policy.trust.escrow),
            Ok(Err(error)) => return failure("policy", error.to_string()),
            Err(result) => return result,
        };
        match chain::withdraw(&escrow.0, escrow.1, &self.shared.key).await {
            Ok(None) => answer(json!({ "withdrawn": "0" })),
            Ok(Some((credit, transaction))) => answer(json!({
                "withdrawn": credit.to_string(),
                "transactionHash": format!("{transaction:#x}"),
            })),
            Err(error) => failure("withdraw", error),
        }
    }

    /// The payments this wallet signed, newest first, and what each became (recorded with its taskId,
    /// refused or expired: nothing charged, or unknown: still settling). Use it to find the task of a
    /// purchase whose answer was lost, instead of buying again. Free.
    #[tool(annotations(title = "Signed payments", read_only_hint = true, open_world_hint = true))]
    async fn list_payments(&self, Parameters(list): Parameters<ListLimit>) -> ToolResult {
        let wallet = match self.wallet().await {
            Ok(wallet) => wallet,
            Err(result) => return result,
        };
        match self.shared.market.follow_payments(wallet.ledger(), i64::from(clamp(list.limit, 20, 200))).await
        {
            Ok(payments) => answer(json!({ "payments": payments })),
            Err(error) => market_failure(error),
        }
    }

    /// Vendor: the tasks buyers paid this agent for. Start a pending one with vendor_start_task; a
    /// rejected one carries the reviewer's reason (reviewReason): fix the result and complete it again.
    #[tool(annotations(title = "Vendor: list tasks", read_only_hint = true, open_world_hint = true))]
    async fn vendor_list_tasks(&self, Parameters(list): Parameters<VendorTasks>) -> ToolResult {
        let agent = match self.vendor() {
            Ok(agent) => agent,
            Err(result) => return result,
        };
        let status = list.status.as_deref().unwrap_or("pending");
        relay(self.shared.market.vendor_tasks(&self.shared.key, agent, status).await)
    }

    /// Vendor: take a pending task (it becomes processing). Do the work, then vendor_complete_task.
    #[tool(annotations(
        title = "Vendor: start a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = true,
        open_world_hint = true
    ))]
    async fn vendor_start_task(&self, Parameters(TaskId { task_id }): Parameters<TaskId>) -> ToolResult {
        self.vendor_act(&task_id, VendorAction::Start).await
    }

    /// Vendor: deliver the result. A reviewer checks it against the buyer's criteria: approved, the
    /// escrow pays this agent; rejected, you get the reason and may deliver again (the fifth rejection
    /// refunds the buyer).
    #[tool(annotations(
        title = "Vendor: complete a task",
        read_only_hint = false,
        destructive_hint = false,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn vendor_complete_task(&self, Parameters(complete): Parameters<CompleteTask>) -> ToolResult {
        self.vendor_act(&complete.task_id, VendorAction::Complete(complete.result)).await
    }

    /// Vendor: give a task up. The buyer is refunded in full and this agent is not paid; it cannot be
    /// undone.
    #[tool(annotations(
        title = "Vendor: fail a task (refunds the buyer)",
        read_only_hint = false,
        destructive_hint = true,
        idempotent_hint = false,
        open_world_hint = true
    ))]
    async fn vendor_fail_task(&self, Parameters(fail): Parameters<FailTask>) -> ToolResult {
        self.vendor_act(&fail.task_id, VendorAction::Fail(fail.message)).await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for MarketTools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentripe", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Agentripe: an escrow marketplace where AI agents buy and sell services in USDC. To buy: \
                 search_services, show_agent, buy_service (spends USDC, within the wallet's spend policy), \
                 then get_task with wait_seconds until it has finished. Refusals and approvals are a \
                 person's business: report them, do not work around them. To sell (with --agent): \
                 vendor_list_tasks, vendor_start_task, vendor_complete_task or vendor_fail_task.",
            )
    }
}
