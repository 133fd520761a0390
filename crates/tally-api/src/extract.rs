//! Request plumbing: the authenticated tenant (`wb-key` or bearer key), JSON bodies whose errors
//! name the offending field, JSON answers, and `Idempotency-Key` replay.

use axum::body::{Body as AxumBody, Bytes, to_bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tally_app::store::{IdempotentResponse, Tenant};

use crate::AppState;
use crate::error::ApiError;

/// A JSON answer, serialized into one growing `Vec` and handed to the response whole. (axum's
/// `Json` writes through `BytesMut`'s `BufMut`, one call per token, which on a contract view
/// costs more than the rest of the answer.) `sonic_rs` writes it: the same JSON as
/// `serde_json` from the same `Serialize` impls, with strings escaped 16 bytes at a time
/// instead of one.
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        let mut buf = Vec::with_capacity(4096);
        match sonic_rs::to_writer(&mut buf, &self.0) {
            Ok(()) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                buf,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(error = %e, "an answer could not be serialized");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    None,
                    "the answer could not be written",
                )
                .into_response()
            }
        }
    }
}

/// Largest request body accepted (bulk usage included).
pub const MAX_BODY: usize = 8 * 1024 * 1024;

/// The tenant whose key made the request.
#[derive(Debug, Clone)]
pub struct Auth(pub Tenant);

/// The request id (`x-request-id`, or a new one).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Headers that carry the API key: the native `wb-key`, and the dialects' own (Flexprice's
/// `x-api-key`, Salesbricks' `x-salesbricks-key`); `Authorization: Bearer` is read after them.
const KEY_HEADERS: [&str; 3] = ["wb-key", "x-api-key", "x-salesbricks-key"];

fn key_from(parts: &Parts) -> Option<String> {
    for h in KEY_HEADERS {
        if let Some(v) = parts.headers.get(h).and_then(|v| v.to_str().ok()) {
            return Some(v.trim().to_string());
        }
    }
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|v| v.trim().to_string())
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(t) = parts.extensions.get::<Auth>() {
            return Ok(t.clone());
        }
        authenticate(parts, state).await
    }
}

async fn authenticate(parts: &Parts, state: &AppState) -> Result<Auth, ApiError> {
    let key = key_from(parts).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            Some("wb-key"),
            "send the API key in the `wb-key` header",
        )
    })?;
    match state.tally.authenticate(&key).await? {
        Some(t) => Ok(Auth(t)),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            Some("wb-key"),
            "the API key is not valid",
        )),
    }
}

impl FromRequestParts<AppState> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(format!("req_{}", uuid::Uuid::now_v7()))))
    }
}

/// A JSON body; a syntax error, a wrong type, a missing or unknown field is a 400/422 naming the
/// field.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                None,
                "the body is too large",
            )
        })?;
        parse_json(&bytes).map(Body)
    }
}

/// Parses a JSON object with the path of the offending field in the error: a body that is not
/// JSON at all is a 400 `malformed_json`; JSON of the wrong shape (an array or a scalar where an
/// object is expected, a wrong type, a missing or unknown field) is a 422 `invalid_body`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = parse_value(bytes)?;
    if !value.is_object() {
        return Err(ApiError::unprocessable(
            "invalid_body",
            None,
            "expected a JSON object",
        ));
    }
    from_value(value)
}

/// Parses any JSON value; a body that is not JSON is a 400 `malformed_json`.
pub fn parse_value(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            None,
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Reads a JSON value as `T`, naming the offending field in a 422 `invalid_body`.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let param = if path == "." || path.is_empty() {
            None
        } else {
            Some(path.as_str())
        };
        ApiError::unprocessable("invalid_body", param, e.inner().to_string())
    })
}

/// Query parameters; a wrong one is a 422 `invalid_query` naming it, as problem+json.
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(Params)
            .map_err(|e| {
                let path = e.path().to_string();
                let param = if path == "." || path.is_empty() {
                    None
                } else {
                    Some(path.as_str())
                };
                ApiError::unprocessable("invalid_query", param, e.inner().to_string())
            })
    }
}

/// Assigns a request id and, for POSTs with an `Idempotency-Key`, replays the first response of
/// the same key and body (24 h), or refuses the key with another body (422).
pub async fn idempotency(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let (mut parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let rid = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7()));
    parts.extensions.insert(RequestId(rid.clone()));
    let key = ["idempotency-key", "x-salesbricks-idempotent-operation-key"]
        .iter()
        .find_map(|h| parts.headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::to_string);
    let response = match (parts.method == Method::POST, key) {
        (true, Some(key)) => match replay_or_run(&state, parts, body, key, next).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        (_, _) => next.run(Request::from_parts(parts, body)).await,
    };
    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&rid) {
        response.headers_mut().insert("x-request-id", v);
    }
    state.metrics.count(response.status());
    tracing::info!(
        request_id = %rid,
        %method,
        %path,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

async fn replay_or_run(
    state: &AppState,
    mut parts: Parts,
    body: AxumBody,
    key: String,
    next: Next,
) -> Result<Response, ApiError> {
    let auth = authenticate(&parts, state).await?;
    let bytes: Bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
            "the body is too large",
        )
    })?;
    let hash = tally_app::ids::sha256_hex(&[
        parts.method.as_str().as_bytes(),
        parts.uri.path().as_bytes(),
        &bytes,
    ]);
    let tenant_id = auth.0.id.clone();
    let now = state.tally.clock.now();
    if let Some(prev) = state
        .tally
        .store
        .idempotent(&tenant_id, &key)
        .await
        .map_err(tally_app::AppError::from)?
    {
        let fresh = now.duration_since(prev.created_at).as_secs() < 24 * 3600;
        if fresh {
            if prev.request_hash != hash {
                return Err(ApiError::unprocessable(
                    "idempotency_key_reused",
                    Some("Idempotency-Key"),
                    "this Idempotency-Key was used with another request",
                ));
            }
            let status = StatusCode::from_u16(prev.status).unwrap_or(StatusCode::OK);
            let mut r = (status, prev.body).into_response();
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(r);
        }
    }
    parts.extensions.insert(auth);
    let response = next
        .run(Request::from_parts(parts, AxumBody::from(bytes)))
        .await;
    let status = response.status();
    if status.is_server_error() {
        return Ok(response);
    }
    let (rparts, rbody) = response.into_parts();
    let out = to_bytes(rbody, MAX_BODY * 4).await.unwrap_or_default();
    let saved = IdempotentResponse {
        request_hash: hash,
        status: status.as_u16(),
        body: String::from_utf8_lossy(&out).into_owned(),
        created_at: now,
    };
    state
        .tally
        .store
        .save_idempotent(&tenant_id, &key, &saved)
        .await
        .map_err(tally_app::AppError::from)?;
    Ok(Response::from_parts(rparts, AxumBody::from(out)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use jiff::Timestamp;
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use serde_json::json;

    /// The answer writer prints exactly what `serde_json` prints for the same value.
    fn same(v: &impl serde::Serialize) {
        let sonic = sonic_rs::to_string(v).unwrap();
        let serde = serde_json::to_string(v).unwrap();
        assert_eq!(sonic, serde);
    }

    #[test]
    fn answers_are_the_json_serde_json_writes() {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            amount: Decimal,
            at: Timestamp,
            until: Option<Timestamp>,
            description: &'a str,
            tags: std::collections::BTreeMap<&'a str, u32>,
        }
        same(&Line {
            amount: Decimal::new(-516, 2),
            at: "2024-03-16T00:00:00Z".parse().unwrap(),
            until: None,
            description: "Unused time on \"seats\" (16/31)\\ \u{7f} \u{1} \n\t é ✓ 🦀 \u{2028}",
            tags: [("b", 2), ("a", 1)].into(),
        });
        same(
            &json!({"n": [1, -2, 3.5, 1e300, u64::MAX, i64::MIN], "t": true, "z": null,
                     "s": "", "o": {}, "a": []}),
        );
    }

    proptest! {
        /// Any string: escapes and multi-byte characters agree, at every length and offset
        /// around the 16-byte blocks the writer scans.
        #[test]
        fn any_string_is_escaped_as_serde_json_does(s in "\\PC*|[\\x00-\\x7f]{0,64}") {
            same(&s);
            same(&json!({ s.clone(): [s.clone(), s] }));
        }
    }
}
