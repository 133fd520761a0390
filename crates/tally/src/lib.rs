//! The `tally` program as a library: opening a store from a URL, building and running the server
//! (bound to any address, port 0 included, so tests start the real thing), and simulation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use tally_app::{Store, Tally};
use tally_store_sqlite::SqliteStore;

pub mod simulate;

/// Rows a bill-run batch reads at a time: memory stays flat however many contracts are due.
pub const BATCH: u64 = 1000;

/// Opens the store a database URL names (`sqlite://PATH`, `sqlite::memory:`,
/// `postgres://USER@HOST/DB`), migrating it.
///
/// # Errors
/// An unsupported scheme, or a database that cannot be opened or migrated.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .with_context(|| format!("opening {url}"))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = tally_store_postgres::PgStore::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        return Ok(Arc::new(store));
    }
    bail!("unsupported database URL `{url}`: use sqlite://PATH or postgres://USER@HOST/DB")
}

/// A bound, not yet running server.
pub struct Server {
    /// The application it serves.
    pub tally: Tally,
    listener: tokio::net::TcpListener,
}

impl Server {
    /// Binds `listen` (port 0 picks a free port) over the store at `url`.
    ///
    /// # Errors
    /// The database cannot be opened or the address bound.
    pub async fn build(listen: &str, url: &str) -> anyhow::Result<Server> {
        let tally = Tally::new(open(url).await?);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        Ok(Server { tally, listener })
    }

    /// The address actually bound.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, running the bill run every `bill_run_every` (none when
    /// zero).
    ///
    /// # Errors
    /// The server fails.
    pub async fn run(
        self,
        bill_run_every: Duration,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        if !bill_run_every.is_zero() {
            let worker = self.tally.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(bill_run_every);
                loop {
                    tick.tick().await;
                    match worker.bill_run(Timestamp::now(), BATCH).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(invoices = n, "bill run"),
                        Err(e) => tracing::error!(error = %e, "bill run failed"),
                    }
                }
            });
        }
        axum::serve(self.listener, tally_api::router(self.tally))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
