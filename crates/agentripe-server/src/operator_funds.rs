//! The operator's ETH, which pays for every settlement, record, release, refund and registration: when
//! it runs dry, all money stops. Read at start-up and on every reconciler pass, reported on `/health`,
//! and logged as a warning when it falls below the configured minimum.

use std::sync::Mutex;

use alloy::{
    primitives::{Address, U256},
    providers::{DynProvider, Provider},
};
use serde_json::{Value, json};

use crate::pipeline::{RpcError, rpc};

#[derive(Debug)]
pub struct OperatorFunds {
    provider: DynProvider,
    address: Address,
    minimum: U256,
    last: Mutex<Option<U256>>,
}

impl OperatorFunds {
    pub fn new(provider: DynProvider, address: Address, minimum: U256) -> Self {
        Self { provider, address, minimum, last: Mutex::new(None) }
    }

    /// Reads the balance; warns when it has just fallen below the minimum, and when it is back.
    pub async fn refresh(&self) -> Result<U256, RpcError> {
        let balance =
            self.provider.get_balance(self.address).await.map_err(rpc("reading the operator's balance"))?;
        let before = self.last.lock().expect("funds lock").replace(balance);
        let (was_low, is_low) = (before.is_some_and(|before| before < self.minimum), balance < self.minimum);
        if is_low && (before.is_none() || !was_low) {
            tracing::warn!(
                operator = %self.address, %balance, minimum = %self.minimum,
                "the operator's ETH is below OPERATOR_MIN_BALANCE_WEI: top it up, or settlements, records, releases and refunds will stop"
            );
        } else if was_low && !is_low {
            tracing::info!(operator = %self.address, %balance, "the operator's ETH is above the minimum again");
        }
        Ok(balance)
    }

    /// What `/health` shows: the operator's address, its last read balance, and whether it is low.
    pub fn report(&self) -> Value {
        let last = *self.last.lock().expect("funds lock");
        json!({
            "address": self.address.to_checksum(None),
            "balanceWei": last.map(|balance| balance.to_string()),
            "minimumWei": self.minimum.to_string(),
            "low": last.is_some_and(|balance| balance < self.minimum),
        })
    }
}
