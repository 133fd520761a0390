//! Webhook endpoints (`/v1/c/webhook`): register a URL with the event types it wants and get its
//! signing secret; list, read, update and delete endpoints; read an endpoint's delivery log and
//! send a delivery again.

use crate::extract::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_app::ids::new_id;
use tally_app::store::Tenant;
use tally_app::webhooks::{Delivery, WebhookEndpoint, check_event_types, check_url, new_secret};

use crate::AppState;
use crate::dto::page_doc;
use crate::dto::{PageQuery, page_json};
use crate::error::{ApiError, Problem};
use crate::extract::{Auth, Body, Params};

type ApiResult<T = Response> = Result<T, ApiError>;

/// `POST /v1/c/webhook` and `POST /v1/c/webhook/{id}`: an endpoint's settings. On create `url`
/// is required; on update every field is optional and only the given ones change.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    /// Where deliveries are POSTed: an absolute `https://` (or `http://`) URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Event types to receive: exact names (`v1.invoice.created`), prefixes
    /// (`v1.contract.*`) or `*` (the default).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Disabled endpoints receive no new deliveries (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Set true on update to replace the signing secret.
    #[serde(default)]
    pub rotate_secret: Option<bool>,
}

/// A webhook endpoint on the wire (documentation of what [`endpoint_json`] writes).
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookEndpoint)]
#[allow(dead_code)]
pub struct WebhookEndpointDoc {
    /// `Whk_<uuid>`.
    id: String,
    /// Where deliveries are POSTed.
    url: String,
    /// Event types it receives: exact names, `prefix.*` patterns, or `*`.
    event_types: Vec<String>,
    /// Free text.
    description: Option<String>,
    /// Disabled endpoints get no new deliveries.
    enabled: bool,
    /// `whsec_...`: the HMAC key of the signatures.
    secret: String,
    /// When it was created.
    #[schema(format = DateTime)]
    created_at: String,
}

page_doc!(
    /// A page of webhook endpoints.
    WebhookEndpointPageDoc,
    WebhookEndpointPage,
    WebhookEndpointDoc,
    " The endpoints of this page.",
    " Endpoints in all."
);

/// One delivery of the log on the wire (documentation of what [`delivery_json`] writes).
#[derive(utoipa::ToSchema)]
#[schema(as = Delivery)]
#[allow(dead_code)]
pub struct DeliveryDoc {
    /// `Dlv_<uuid>`.
    id: String,
    /// The endpoint.
    endpoint_id: String,
    /// The event, also the message id receivers deduplicate by.
    event_id: String,
    /// The event's type.
    event_type: String,
    /// `pending`, `delivered` or `failed`.
    status: String,
    /// Attempts made.
    attempts: u32,
    /// When the next attempt is due (pending only; null = as soon as possible).
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    /// When the last attempt was made.
    #[schema(format = DateTime)]
    last_attempt_at: Option<String>,
    /// The HTTP status the endpoint last answered.
    last_status_code: Option<u16>,
    /// Why the last attempt failed, when it did.
    last_error: Option<String>,
    /// When its event happened.
    #[schema(format = DateTime)]
    created_at: String,
}

page_doc!(
    /// A page of the delivery log.
    DeliveryPageDoc,
    DeliveryPage,
    DeliveryDoc,
    " The deliveries of this page.",
    " Deliveries in all."
);

/// The answer to deleting an endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = Deleted)]
#[allow(dead_code)]
pub struct DeletedDoc {
    /// The endpoint's id.
    id: String,
    /// Always true.
    deleted: bool,
}

pub(crate) fn endpoint_json(w: &WebhookEndpoint) -> Value {
    json!({
        "id": w.id,
        "url": w.url,
        "event_types": w.event_types,
        "description": w.description,
        "enabled": w.enabled,
        "secret": w.secret,
        "created_at": w.created_at,
    })
}

pub(crate) fn delivery_json(d: &Delivery) -> Value {
    serde_json::to_value(d).unwrap_or(Value::Null)
}

fn apply(w: &mut WebhookEndpoint, b: WebhookBody) -> ApiResult<()> {
    if let Some(url) = b.url {
        check_url(&url).map_err(|e| ApiError::unprocessable("invalid_url", Some("url"), e))?;
        w.url = url;
    }
    if let Some(types) = b.event_types {
        check_event_types(&types).map_err(|(i, e)| {
            ApiError::unprocessable("invalid_event_type", Some(&format!("event_types[{i}]")), e)
        })?;
        w.event_types = types;
    }
    if let Some(d) = b.description {
        w.description = Some(d);
    }
    if let Some(e) = b.enabled {
        w.enabled = e;
    }
    if b.rotate_secret == Some(true) {
        w.secret = new_secret();
    }
    Ok(())
}

async fn find(s: &AppState, t: &Tenant, id: &str) -> ApiResult<WebhookEndpoint> {
    s.tally
        .store
        .webhook(&t.id, id)
        .await
        .map_err(tally_app::AppError::from)?
        .ok_or_else(|| ApiError::not_found("webhook endpoint", "webhook_id", id))
}

/// `POST /v1/c/webhook`: registers an endpoint; answers it with its signing secret.
#[utoipa::path(post, path = "/webhook", tag = "webhook", request_body = WebhookBody, responses((status = 200, description = "The endpoint, with its secret", body = WebhookEndpointDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn create_webhook(
    State(s): State<AppState>,
    Auth(t): Auth,
    Body(b): Body<WebhookBody>,
) -> ApiResult {
    let Some(url) = b.url.clone() else {
        return Err(ApiError::unprocessable(
            "missing_field",
            Some("url"),
            "url is required",
        ));
    };
    let mut w = WebhookEndpoint {
        id: new_id("Whk"),
        url,
        event_types: vec!["*".into()],
        enabled: true,
        description: None,
        secret: new_secret(),
        created_at: s.tally.clock.now(),
    };
    apply(&mut w, b)?;
    s.tally
        .store
        .save_webhook(&t.id, &w)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok((StatusCode::OK, Json(endpoint_json(&w))).into_response())
}

/// `GET /v1/c/webhook`: the endpoints, paged.
#[utoipa::path(get, path = "/webhook", tag = "webhook", params(PageQuery), responses((status = 200, description = "A page of endpoints", body = WebhookEndpointPageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    Auth(t): Auth,
    Params(q): Params<PageQuery>,
) -> ApiResult {
    let page = q.page()?;
    let (rows, total) = s
        .tally
        .store
        .webhooks(&t.id, &page)
        .await
        .map_err(tally_app::AppError::from)?;
    let hits = rows.iter().map(endpoint_json).collect();
    Ok(Json(page_json(hits, &page, total)).into_response())
}

/// `GET /v1/c/webhook/{id}`.
#[utoipa::path(get, path = "/webhook/{id}", tag = "webhook", params(("id" = String, Path, description = "Endpoint id")), responses((status = 200, description = "The endpoint", body = WebhookEndpointDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn get_webhook(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let w = find(&s, &t, &id).await?;
    Ok(Json(endpoint_json(&w)).into_response())
}

/// `POST /v1/c/webhook/{id}`: changes the given settings (and rotates the secret on request).
#[utoipa::path(post, path = "/webhook/{id}", tag = "webhook", params(("id" = String, Path, description = "Endpoint id")), request_body = WebhookBody, responses((status = 200, description = "The endpoint as changed", body = WebhookEndpointDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn update_webhook(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
    Body(b): Body<WebhookBody>,
) -> ApiResult {
    let mut w = find(&s, &t, &id).await?;
    apply(&mut w, b)?;
    s.tally
        .store
        .save_webhook(&t.id, &w)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(Json(endpoint_json(&w)).into_response())
}

/// `DELETE /v1/c/webhook/{id}`: removes the endpoint and its delivery log.
#[utoipa::path(delete, path = "/webhook/{id}", tag = "webhook", params(("id" = String, Path, description = "Endpoint id")), responses((status = 200, description = "Deleted", body = DeletedDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
) -> ApiResult {
    let gone = s
        .tally
        .store
        .delete_webhook(&t.id, &id)
        .await
        .map_err(tally_app::AppError::from)?;
    if !gone {
        return Err(ApiError::not_found("webhook endpoint", "webhook_id", &id));
    }
    Ok(Json(json!({ "id": id, "deleted": true })).into_response())
}

/// `GET /v1/c/webhook/{id}/deliveries`: the delivery log, newest first.
#[utoipa::path(get, path = "/webhook/{id}/deliveries", tag = "webhook", params(("id" = String, Path, description = "Endpoint id"), PageQuery), responses((status = 200, description = "A page of deliveries", body = DeliveryPageDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn list_deliveries(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path(id): Path<String>,
    Params(q): Params<PageQuery>,
) -> ApiResult {
    let w = find(&s, &t, &id).await?;
    let page = q.page()?;
    let (rows, total) = s
        .tally
        .store
        .deliveries(&t.id, &w.id, &page)
        .await
        .map_err(tally_app::AppError::from)?;
    let hits = rows.iter().map(delivery_json).collect();
    Ok(Json(page_json(hits, &page, total)).into_response())
}

/// `POST /v1/c/webhook/{id}/deliveries/{delivery_id}/retry`: sends a delivery again as soon as
/// possible (a failed one gets a fresh set of attempts).
#[utoipa::path(post, path = "/webhook/{id}/deliveries/{delivery_id}/retry", tag = "webhook", params(("id" = String, Path, description = "Endpoint id"), ("delivery_id" = String, Path, description = "Delivery id")), responses((status = 200, description = "The delivery, pending", body = DeliveryDoc), (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or invalid API key", body = Problem, content_type = "application/problem+json"), (status = 404, description = "Not found (or another tenant's)", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Refused by the rules", body = Problem, content_type = "application/problem+json")), security(("wb_key" = [])))]
pub async fn retry_delivery(
    State(s): State<AppState>,
    Auth(t): Auth,
    Path((id, delivery_id)): Path<(String, String)>,
) -> ApiResult {
    let w = find(&s, &t, &id).await?;
    let d = s.tally.retry_delivery(&t, &w.id, &delivery_id).await?;
    Ok(Json(delivery_json(&d)).into_response())
}
