//! The marketplace's durable state, on SQLite (the zero-set-up default) or PostgreSQL (several server
//! instances), through one code path: sqlx's `Any` driver with SQL both engines accept.
//!
//! Every step that moves money is written here before it is taken:
//! - a payment is claimed once per (chain, token, payer, EIP-3009 nonce), before it is settled;
//! - every transaction the server signs is stored, with its nonce, before it is broadcast, so a crash
//!   can always rebroadcast it and a nonce is never handed out twice, even across instances.
//!
//! SQL here uses `$1, $2, ...` placeholders in order of first appearance, which both engines bind alike.

/// A status stored as text: its spelling in one place, `as_str` to write it and `FromStr` to read it.
macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// The stored and wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }
    };
}
pub(crate) use text_enum;

mod agents;
mod chain_txs;
mod payments;
mod registrations;
mod reviews;
mod tasks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod transfer_claims;

pub use agents::{AgentResource, IndexedAgent, MAX_QUERY_WORDS};
pub use chain_txs::{ChainTx, ChainTxStatus, SignedTx, VOID};
pub use payments::{Claim, NewPayment, PayerOutlook, Payment, PaymentLease, PaymentStatus};
pub use registrations::{Registration, RegistrationStatus};
pub use reviews::ReviewRecord;
pub use tasks::{EscrowStatus, NewTask, Outcome, Submission, Task, TaskStatus, Verdict};
pub use transfer_claims::TransferHolder;

use sqlx::{
    AnyPool,
    any::{AnyPoolOptions, install_default_drivers},
    migrate::Migrator,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// A storage failure, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL names an engine we do not support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    /// Connecting or migrating failed.
    #[error("cannot open the database: {0}")]
    Open(#[source] sqlx::Error),
    /// Migrating failed.
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error while {context}: {source}")]
    Query { context: &'static str, source: sqlx::Error },
    /// A stored value is not what this code wrote.
    #[error("corrupt row while {context}: {detail}")]
    Corrupt { context: &'static str, detail: String },
    /// A write made under a payment's lease found it no longer its holder's; nothing was stored.
    #[error("payment {0} was taken over or moved on by another holder; nothing was stored")]
    Overtaken(i64),
}

pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Query { context, source })
    }
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating a SQLite file if needed) and migrates the database at `url`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (store, migrator) = Self::open(url).await?;
        migrator.run(store.pool()).await?;
        Ok(store)
    }

    /// Opens (creating a SQLite file if needed) the database at `url` as it is, with the migrations its
    /// engine takes.
    pub(crate) async fn open(url: &str) -> Result<(Self, &'static Migrator), StoreError> {
        install_default_drivers();
        let (migrator, max_connections) = if url.starts_with("sqlite:") {
            // One writer at a time is SQLite's nature; a small pool avoids busy waits.
            (&SQLITE_MIGRATIONS, 4)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (&POSTGRES_MIGRATIONS, 16)
        } else {
            return Err(StoreError::UnsupportedUrl(url.into()));
        };
        let url = if url.starts_with("sqlite:") && !url.contains('?') && !url.contains(":memory:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_owned()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url)
            .await
            .map_err(StoreError::Open)?;
        if url.starts_with("sqlite:") {
            // WAL lets readers proceed while a payment is being written.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await.map_err(StoreError::Open)?;
        }
        Ok((Self { pool }, migrator))
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
