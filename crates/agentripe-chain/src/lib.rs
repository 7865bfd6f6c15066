//! The chain side of Agentripe: typed bindings to the four contracts, generated at build time from the
//! forge artifacts of `contracts/src`, and the [`Deployment`] that says where they live.

#[allow(clippy::too_many_arguments, reason = "generated calls take the contracts' own parameter lists")]
pub mod bindings;
mod deployment;
#[cfg(feature = "testing")]
#[allow(clippy::too_many_arguments, reason = "generated calls take the token's own parameter lists")]
pub mod fiat_token;
pub mod rpc;

pub use deployment::{Deployment, DeploymentError};
