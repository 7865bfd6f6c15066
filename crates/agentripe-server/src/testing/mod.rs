//! A real marketplace for tests, load runs and the demo: anvil, the contracts, the server on a
//! loopback port over SQLite or PostgreSQL ([`Market`]), a client of it ([`Server`]), and a scripted
//! OpenAI-compatible reviewer ([`ScriptedLlm`]).

mod lagging_rpc;
mod llm;
mod market;
mod server;

pub use lagging_rpc::LaggingRpc;
pub use llm::{LlmAnswer, ScriptedLlm};
pub use market::{CATALOG, InBlock, Market, PRICE, key};
pub use server::{Server, get_as_buyer, vendor_headers};

/// UNIX time in seconds, as clients sign it.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

/// Runs the test body on each engine (PostgreSQL skipped loudly when unreachable outside CI).
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for engine in
                [agentripe_store::testing::Engine::Sqlite, agentripe_store::testing::Engine::Postgres]
            {
                if let Some(market) = $crate::testing::Market::new(engine, stringify!($name)).await {
                    let test: fn($crate::testing::Market) -> _ = $body;
                    test(market).await;
                }
            }
        }
    };
}
