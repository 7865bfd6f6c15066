//! `agentripe`: one command for everyone who touches the marketplace. Human-readable output by
//! default, `--json` for agents. Keys come from `AGENTRIPE_PRIVATE_KEY` or `--key-file`, never from
//! the command line (where `ps` and shell history would show them). Buying goes through the wallet:
//! nothing is signed that the spend policy (`agentripe wallet init`) does not allow.

mod admin;
mod buyer;
mod output;
mod vendor;
mod wallet;

use std::{path::PathBuf, process::ExitCode};

use agentripe_agent::{Market, Wallet};
use alloy::signers::local::PrivateKeySigner;
use clap::{Parser, Subcommand};

use crate::output::Output;

#[derive(Debug, Parser)]
#[command(name = "agentripe", version, about = "Agent-to-agent escrow marketplace over x402")]
struct Cli {
    /// The marketplace server.
    #[arg(long, env = "AGENTRIPE_SERVER", default_value = "http://127.0.0.1:3000", global = true)]
    server: String,
    /// A file holding the private key (0x hex); otherwise AGENTRIPE_PRIVATE_KEY is read.
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// The wallet's directory (its spend policy and ledger); default ~/.agentripe.
    #[arg(long, env = "AGENTRIPE_WALLET", global = true)]
    wallet: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the marketplace server (configuration from the environment; see .env.example).
    Serve,
    /// Deploy the contracts to a chain and write the deployment file the server reads.
    Deploy {
        /// JSON-RPC endpoint.
        #[arg(long, env = "RPC_URL")]
        rpc_url: String,
        /// The escrow's operator (the server's key); default: the deployer.
        #[arg(long, env = "OPERATOR_ADDRESS")]
        operator: Option<String>,
        /// Seconds until a buyer may reclaim an unresolved deposit.
        #[arg(long, env = "DEPOSIT_TIMEOUT_SECONDS", default_value_t = 604_800)]
        deposit_timeout: u64,
        /// Reuse this USDC (otherwise a TestUSDC is deployed: local chains only).
        #[arg(long, env = "USDC_ADDRESS")]
        usdc: Option<String>,
        /// Reuse this ERC-8004 identity registry.
        #[arg(long, env = "IDENTITY_REGISTRY_ADDRESS")]
        identity_registry: Option<String>,
        /// Reuse this ERC-8004 reputation registry.
        #[arg(long, env = "REPUTATION_REGISTRY_ADDRESS")]
        reputation_registry: Option<String>,
        /// With a reused identity registry: its first block, where the server's agent index starts
        /// (default 0: every block, so agents registered before this escrow are listed too).
        #[arg(long, env = "IDENTITY_REGISTRY_START_BLOCK", default_value_t = 0)]
        identity_registry_start_block: u64,
        /// Where to write the deployment.
        #[arg(long, default_value = "deployments/deployment.json")]
        out: PathBuf,
    },
    /// Operator: give back USDC that reached the escrow without a deposit (as `/health` and the server's
    /// log report it): recorded for its sender, then refunded to it. Reads the
    /// server's configuration (its database and operator key) from the environment.
    RefundUnrecorded {
        /// The transaction that moved it into the escrow (0x...).
        transaction: String,
        /// A registered agent to record it for (it is refunded at once); default: the first indexed.
        #[arg(long)]
        agent: Option<String>,
    },
    /// Register an agent through the server (this key signs and ends up owning it).
    Register {
        /// The registration file: the agent's data (AgentURIData JSON), bare or as `{"data": ...}`.
        file: PathBuf,
    },
    /// List agents, or search their services.
    Agents {
        /// Words that must all appear in an agent's name, description or catalog.
        #[arg(long)]
        query: Option<String>,
    },
    /// Show one agent: catalog, payout address, reputation, outcomes.
    Agent {
        /// The agent's id.
        id: String,
    },
    /// Buy a service over x402 through the wallet and print the task id.
    Buy {
        /// The vendor agent's id.
        agent: String,
        /// The service's path in its catalog (e.g. translate).
        path: String,
        /// Instructions for the vendor (task_detail).
        #[arg(long)]
        detail: Option<String>,
        /// Structured metadata for the vendor, JSON (task_metadata).
        #[arg(long)]
        metadata: Option<String>,
        /// Acceptance criteria for the reviewer (reviewer_request).
        #[arg(long)]
        review: Option<String>,
    },
    /// A task's status and result.
    Task {
        /// The task's id (0x..., what `buy` printed).
        id: String,
        /// Follow the task until its escrow moves, and show what happened to the money.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Work as a vendor agent.
    Vendor {
        /// The agent to act for (before or after the action).
        #[arg(long, env = "AGENTRIPE_AGENT_ID", global = true)]
        agent: Option<String>,
        #[command(subcommand)]
        action: vendor::Action,
    },
    /// Pull the credit the escrow holds for this key: a refund or payout the token refused to send.
    Withdraw {
        /// JSON-RPC endpoint of the escrow's chain; default: the wallet policy's.
        #[arg(long, env = "RPC_URL")]
        rpc_url: Option<String>,
    },
    /// The wallet (a person's commands): trust a server, show the policy, read the log, resume.
    Wallet {
        #[command(subcommand)]
        action: wallet::WalletAction,
    },
    /// Serve the marketplace as MCP tools for an AI agent: on stdio (the default), or Streamable HTTP
    /// at /mcp. Buying goes through the wallet; no tool changes the policy or approves a payment.
    Mcp {
        /// Serve Streamable HTTP on this address instead of stdio; every request must carry
        /// AGENTRIPE_MCP_TOKEN as a bearer token.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
        /// The vendor agent the vendor tools act for (without it they say they are off).
        #[arg(long, env = "AGENTRIPE_AGENT_ID")]
        agent: Option<String>,
    },
    /// Payments the wallet queued for a person: list, approve, reject.
    Approvals {
        #[command(subcommand)]
        action: Option<wallet::ApprovalAction>,
    },
}

/// The signing key, from a file or the environment.
fn key(file: Option<&PathBuf>) -> Result<PrivateKeySigner, String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
        None => std::env::var("AGENTRIPE_PRIVATE_KEY")
            .map_err(|_| "no key: set AGENTRIPE_PRIVATE_KEY or pass --key-file".to_string())?,
    };
    text.trim().parse().map_err(|_| "the key is not a 32-byte hex private key".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve => serve().await,
        command => match Market::new(&cli.server) {
            Ok(market) => {
                let out = Output { json: cli.json };
                let wallet = wallet::dir(cli.wallet);
                run(&market, out, command, cli.key_file.as_ref(), &wallet).await
            }
            Err(error) => Err(error),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    market: &Market,
    out: Output,
    command: Command,
    key_file: Option<&PathBuf>,
    wallet_dir: &std::path::Path,
) -> Result<(), String> {
    match command {
        Command::Serve => unreachable!("handled in main"),
        Command::Deploy {
            rpc_url,
            operator,
            deposit_timeout,
            usdc,
            identity_registry,
            reputation_registry,
            identity_registry_start_block,
            out: path,
        } => {
            let address = |name: &str, value: Option<String>| {
                value
                    .map(|text| text.parse().map_err(|_| format!("--{name} {text} is not an address")))
                    .transpose()
            };
            let reuse = admin::Reuse {
                usdc: address("usdc", usdc)?,
                identity: address("identity-registry", identity_registry)?
                    .map(|address| (address, identity_registry_start_block)),
                reputation: address("reputation-registry", reputation_registry)?,
            };
            let operator = address("operator", operator)?;
            admin::deploy(out, &key(key_file)?, &rpc_url, operator, deposit_timeout, reuse, &path).await
        }
        Command::RefundUnrecorded { transaction, agent } => {
            let transaction = transaction
                .parse()
                .map_err(|_| format!("{transaction} is not a 0x-prefixed transaction hash"))?;
            let agent = agent
                .map(|agent| agent.parse().map_err(|_| format!("--agent {agent} is not an agent id")))
                .transpose()?;
            let config = agentripe_server::Config::from_env().map_err(|error| error.to_string())?;
            let refunded =
                agentripe_server::escrow_audit::refund_unrecorded(&config, transaction, agent).await?;
            out.show(
                &serde_json::json!({
                    "transaction": format!("{:#x}", refunded.transaction),
                    "sender": refunded.sender.to_checksum(None),
                    "amount": refunded.amount.to_string(),
                }),
                || format!("refunded {} to {}", output::usdc(&refunded.amount.to_string()), refunded.sender),
            );
            Ok(())
        }
        Command::Register { file } => admin::register(market, out, &key(key_file)?, &file).await,
        Command::Agents { query } => {
            let listed = market.agents(query.as_deref(), 100).await.map_err(|error| error.to_string())?;
            out.show(&listed, || output::agents(&listed));
            Ok(())
        }
        Command::Agent { id } => {
            let shown = market.agent(&id).await.map_err(|error| error.to_string())?;
            out.show(&shown, || output::agent(&shown));
            Ok(())
        }
        Command::Buy { agent, path, detail, metadata, review } => {
            let body = buyer::body(detail, metadata, review)?;
            let wallet = Wallet::open(wallet_dir, key(key_file)?).await.map_err(|error| error.to_string())?;
            buyer::buy(market, out, &wallet, &agent, &path, &body).await
        }
        // The request and the result are private to the buyer: sign as it when a key is at hand.
        Command::Task { id, wait, timeout } => {
            buyer::task(market, out, &id, wait.then_some(timeout), key(key_file).ok().as_ref()).await
        }
        Command::Vendor { agent, action } => {
            let agent = agent.ok_or("which agent? give --agent ID (or AGENTRIPE_AGENT_ID)")?;
            vendor::run(market, out, &key(key_file)?, &agent, action).await
        }
        Command::Withdraw { rpc_url } => {
            let policy = agentripe_agent::Policy::load(&wallet_dir.join("policy.toml")).ok();
            let rpc_url = rpc_url
                .or_else(|| policy.as_ref().map(|policy| policy.trust.rpc_url.clone()))
                .ok_or("give --rpc-url (or RPC_URL), or set up a wallet with `agentripe wallet init`")?;
            let pinned = policy.map(|policy| policy.trust.escrow);
            buyer::withdraw(market, out, &key(key_file)?, &rpc_url, pinned).await
        }
        Command::Wallet { action } => wallet::run(market, out, wallet_dir, action).await,
        Command::Mcp { http, agent } => mcp(market, key(key_file)?, wallet_dir, http, agent).await,
        Command::Approvals { action } => {
            let action = action.unwrap_or(wallet::ApprovalAction::List { all: false });
            wallet::approvals(out, wallet_dir, action).await
        }
    }
}

async fn mcp(
    market: &Market,
    key: PrivateKeySigner,
    wallet_dir: &std::path::Path,
    http: Option<std::net::SocketAddr>,
    vendor_agent: Option<String>,
) -> Result<(), String> {
    let settings = agentripe_mcp::Settings {
        market: market.clone(),
        key,
        wallet_dir: wallet_dir.to_owned(),
        vendor_agent,
    };
    let Some(address) = http else {
        return agentripe_mcp::serve_stdio(settings.open()).await;
    };
    // Whoever reaches the endpoint spends within the policy: other users and processes of this machine
    // too, so a token is required even on loopback.
    let token = std::env::var("AGENTRIPE_MCP_TOKEN")
        .ok()
        .filter(|token| token.len() >= 16)
        .ok_or("set AGENTRIPE_MCP_TOKEN (16 characters or more): every request must carry it")?;
    let allowed_hosts = std::env::var("AGENTRIPE_MCP_ALLOWED_HOSTS")
        .map(|hosts| {
            hosts.split(',').map(|host| host.trim().to_owned()).filter(|host| !host.is_empty()).collect()
        })
        .unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    eprintln!("serving MCP on http://{bound}/mcp");
    agentripe_mcp::serve_http(settings.open(), listener, token, allowed_hosts).await
}

async fn serve() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = agentripe_server::Config::from_env().map_err(|error| error.to_string())?;
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|error| format!("cannot listen on {listen}: {error}"))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    eprintln!("serving on http://{address}");
    let running = agentripe_server::start(config, listener).await.map_err(|error| error.to_string())?;
    running.serve_until_signalled().await.map_err(|error| error.to_string())
}
