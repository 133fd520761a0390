//! The `tally` program as a library: opening a store from a URL, building and running the server
//! (bound to any address, port 0 included, so tests start the real thing), and simulation.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use jiff::Timestamp;
use tally_app::webhooks::{SEND_TIMEOUT, Sender};
use tally_app::{Store, Tally};
use tally_store_sqlite::SqliteStore;

pub mod simulate;

/// Rows a bill-run batch reads at a time: memory stays flat however many contracts are due.
pub const BATCH: u64 = 1000;

/// How often the server looks for due webhook deliveries.
pub const WEBHOOK_POLL: Duration = Duration::from_secs(1);

/// Webhook deliveries sent at once, at most.
pub const WEBHOOK_BATCH: u64 = 32;

/// Sends webhook requests over HTTP or HTTPS (rustls, the Mozilla root certificates): no
/// redirects followed, [`SEND_TIMEOUT`] per request.
pub struct HttpSender(reqwest::Client);

impl HttpSender {
    /// A sender with its own connection pool.
    ///
    /// # Errors
    /// The TLS setup fails.
    pub fn new() -> anyhow::Result<HttpSender> {
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Tally-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(HttpSender(client))
    }
}

#[async_trait::async_trait]
impl Sender for HttpSender {
    async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<u16, String> {
        let mut req = self.0.post(url).body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        match req.send().await {
            Ok(resp) => Ok(resp.status().as_u16()),
            Err(e) if e.is_timeout() => {
                Err(format!("no answer within {}s", SEND_TIMEOUT.as_secs()))
            }
            Err(e) if e.is_connect() => Err("could not connect".into()),
            Err(e) => Err(e.without_url().to_string()),
        }
    }
}

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
    /// zero) and sending due webhook deliveries every [`WEBHOOK_POLL`].
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
        let sender = HttpSender::new()?;
        let worker = self.tally.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WEBHOOK_POLL);
            loop {
                tick.tick().await;
                // A full batch means more may be due: go on without waiting.
                loop {
                    match worker.deliver_webhooks(&sender, WEBHOOK_BATCH).await {
                        Ok(n) if n as u64 == WEBHOOK_BATCH => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "webhook delivery failed");
                            break;
                        }
                    }
                }
            }
        });
        axum::serve(self.listener, tally_api::router(self.tally))
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }
}
