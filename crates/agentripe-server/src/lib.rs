//! The Agentripe marketplace server: Agentripe's HTTP API over axum, x402 purchases settled into the
//! escrow exactly once (money in), verdicts that release or refund it (money out), and the durable
//! chain writer every transaction goes through. The modules, by what they do:
//!
//! - [`money_in`]: a verified payment claimed, settled into the escrow, recorded, made a task;
//! - [`verdicts`]: a vendor's submission reviewed, and the verdict turned into an escrow decision;
//! - [`money_out`]: releases, refunds and the reputation feedback that follows them;
//! - [`escrow_audit`]: money in the escrow that no deposit accounts for, and giving it back;
//! - [`chain_writer`]: who submits every transaction: stored before it is broadcast, then confirmed,
//!   its fees raised while it waits too long; [`operator_funds`]: the ETH that pays for all of it;
//! - [`registrar`], [`agent_index`], [`catalog`]: agents, their registration and their catalogs;
//! - [`routes`], [`vendor_auth`], [`error`]: the HTTP API, served by [`http_server`]; [`config`],
//!   [`state`], [`start`]: running it.

pub mod agent_index;
pub mod batching;
pub mod catalog;
pub mod chain_writer;
pub mod config;
pub mod error;
pub mod escrow_audit;
pub mod http_server;
pub mod money_in;
pub mod money_out;
pub mod operator_funds;
pub mod pipeline;
pub mod registrar;
mod routes;
pub mod start;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
pub mod util;
pub mod vendor_auth;
pub mod verdicts;

pub use config::{Config, EnvError, FacilitatorConfig, RateLimit, RegistrationLimits};
pub use error::ApiError;
pub use start::{Running, StartError, start};
pub use state::AppState;
