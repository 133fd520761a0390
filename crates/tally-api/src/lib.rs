//! Tally's HTTP layer: the native (Wingback-dialect) API under `/v1/c/`, with `wb-key` auth,
//! problem+json errors, `Idempotency-Key` replay, health and metrics. Handlers are thin: they
//! parse, call one use case of `tally-app`, and render.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tally_app::Tally;

pub mod dto;
pub mod error;
pub mod extract;
pub mod native;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The application.
    pub tally: Tally,
    /// Request counters.
    pub metrics: Arc<Metrics>,
}

/// Request counters by status class, served in Prometheus text format.
#[derive(Default)]
pub struct Metrics {
    by_class: [AtomicU64; 6],
}

impl Metrics {
    /// Counts a response.
    pub fn count(&self, status: StatusCode) {
        let class = (status.as_u16() / 100) as usize;
        if let Some(c) = self.by_class.get(class) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn render(&self) -> String {
        let mut out = String::from(
            "# HELP tally_http_responses_total HTTP responses by status class.\n# TYPE tally_http_responses_total counter\n",
        );
        for (i, c) in self.by_class.iter().enumerate().skip(1) {
            out.push_str(&format!(
                "tally_http_responses_total{{class=\"{i}xx\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<AppState>) -> Response {
    match s.tally.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn fallback() -> error::ApiError {
    error::ApiError::new(
        StatusCode::NOT_FOUND,
        "no_such_endpoint",
        None,
        "no endpoint at this path",
    )
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        None,
        "this endpoint does not take this method",
    )
}

/// The whole HTTP router over an application.
pub fn router(tally: Tally) -> Router {
    use native::*;
    let state = AppState {
        tally,
        metrics: Arc::new(Metrics::default()),
    };
    let v1 = Router::new()
        .route("/customer", post(save_customer))
        .route("/customer/{id}", get(get_customer))
        .route("/customer/{id}/balance", get(get_balance))
        .route("/contract", post(create_contract).get(list_contracts))
        .route("/contract/{id}", get(get_contract))
        .route("/contract/{id}/upgrade", post(upgrade))
        .route("/contract/{id}/upgrade_estimate", post(upgrade_estimate))
        .route("/contract/{id}/activate", post(activate_contract))
        .route("/contract/{id}/cancel", post(cancel_contract))
        .route("/contract/{id}/history", get(contract_history))
        .route("/contract/{id}/invoices", get(contract_invoices))
        .route("/contract/{id}/scheduled_changes", get(scheduled_changes))
        .route(
            "/contract/{id}/scheduled_changes/{change_id}",
            get(scheduled_change),
        )
        .route(
            "/contract/{id}/scheduled_changes/{change_id}/cancel",
            post(cancel_scheduled),
        )
        .route("/usage", post(post_usage))
        .route("/usage/bulk", post(post_usage_bulk))
        .route("/invoice", get(list_invoices))
        .route("/invoice/{id}", get(get_invoice))
        .route("/invoice/{id}/pay", post(pay_invoice))
        .route("/invoice/{id}/void", post(void_invoice))
        .route("/catalog", get(get_catalog).post(apply_catalog))
        .route("/test_clock", get(get_clock))
        .route("/test_clock/advance", post(advance_clock))
        .method_not_allowed_fallback(method_not_allowed);
    Router::new()
        .nest("/v1/c", v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::idempotency,
        ))
        .with_state(state)
}
