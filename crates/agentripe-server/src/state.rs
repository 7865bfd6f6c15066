//! What every handler shares, and the parts of it that extractors and handlers take on their own.

use std::sync::Arc;

use agentripe_store::Store;
use alloy::providers::DynProvider;
use axum::extract::FromRef;

use crate::{
    Config, catalog::Catalog, escrow_audit::EscrowAudit, money_in::MoneyIn, money_out::MoneyOut,
    operator_funds::OperatorFunds, registrar::Registrar, vendor_auth::Authorizations, verdicts::Verdicts,
};

/// The application state of the router.
#[derive(Clone, Debug)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    /// The chain connection.
    pub provider: DynProvider,
    pub catalog: Arc<Catalog>,
    pub money_in: Arc<MoneyIn>,
    pub money_out: Arc<MoneyOut>,
    pub verdicts: Arc<Verdicts>,
    pub registrar: Arc<Registrar>,
    pub authorizations: Arc<Authorizations>,
    pub operator_funds: Arc<OperatorFunds>,
    pub escrow_audit: Arc<EscrowAudit>,
}

impl FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Arc<Authorizations> {
    fn from_ref(state: &AppState) -> Self {
        state.authorizations.clone()
    }
}

impl FromRef<AppState> for Arc<Config> {
    fn from_ref(state: &AppState) -> Self {
        state.config.clone()
    }
}
