//! Webhooks: endpoints a tenant registers (URL, event types, signing secret), the deliveries
//! the store writes for them in the same transaction as the events (the outbox), and the worker
//! that sends due deliveries, signed as the Standard Webhooks specification says, retrying with
//! backoff and keeping a delivery log.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::service::{AppError, AppResult, Tally};
use crate::store::{Event, Tenant};

/// The event types Tally emits (Wingback's names and the ones it adds).
pub const EVENT_TYPES: &[&str] = &[
    "v1.contract.signature.scheduled",
    "v1.contract.signature.completed",
    "v1.contract.change.scheduled",
    "v1.contract.change.applied",
    "v1.contract.change.canceled",
    "v1.contract.renewed",
    "v1.contract.trial.ended",
    "v1.contract.cancellation.scheduled",
    "v1.contract.cancellation.completed",
    "v1.invoice.created",
    "v1.invoice.paid",
    "v1.invoice.voided",
    "v1.customer.created",
    "v1.customer.updated",
    "v1.payment.started",
    "v1.payment.failed",
    "v1.payment.succeeded",
];

/// Waits before the 2nd, 3rd, ... attempt (the Standard Webhooks schedule): 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 10 h. After the last one fails the delivery is `failed`.
pub const BACKOFF_SECONDS: &[i64] = &[5, 300, 1800, 7200, 18000, 36000, 36000];

/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = BACKOFF_SECONDS.len() as u32 + 1;

/// How long a worker holds the deliveries it claimed (longer than one send's timeout).
pub const DELIVERY_LEASE_SECONDS: i64 = 60;

/// How long one send may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A tenant's webhook endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// `Whk_<uuid>`.
    pub id: String,
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Event types it receives: exact names, `prefix.*` patterns, or `*`.
    pub event_types: Vec<String>,
    /// Disabled endpoints get no new deliveries.
    pub enabled: bool,
    /// Free text.
    pub description: Option<String>,
    /// `whsec_` + base64 of 32 random bytes: the HMAC key of the signatures.
    pub secret: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl WebhookEndpoint {
    /// Whether this endpoint receives events of `kind`.
    pub fn accepts(&self, kind: &str) -> bool {
        self.enabled && self.event_types.iter().any(|p| pattern_matches(p, kind))
    }
}

/// Whether an event-type pattern (`*`, `v1.contract.*`, or an exact name) matches `kind`.
pub fn pattern_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Checks a list of event-type patterns: each must be `*`, a known type, or `prefix.*` that
/// matches at least one known type. Returns the offending index.
pub fn check_event_types(types: &[String]) -> Result<(), (usize, String)> {
    if types.is_empty() {
        return Err((0, "at least one event type (or \"*\") is needed".into()));
    }
    for (i, t) in types.iter().enumerate() {
        let known = if t == "*" {
            true
        } else if let Some(prefix) = t.strip_suffix(".*") {
            EVENT_TYPES
                .iter()
                .any(|k| k.starts_with(&format!("{prefix}.")))
        } else {
            EVENT_TYPES.contains(&t.as_str())
        };
        if !known {
            return Err((
                i,
                format!(
                    "unknown event type `{t}`; known: {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Checks an endpoint URL: absolute http(s) with a host, no credentials, at most 2048 bytes.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.len() > 2048 {
        return Err("the URL is longer than 2048 bytes".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("the URL must start with https:// or http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("the URL has no host".into());
    }
    if authority.contains('@') {
        return Err("the URL must not carry credentials".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains whitespace".into());
    }
    Ok(())
}

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    format!("whsec_{}", B64.encode(bytes))
}

/// The `webhook-signature` header value for a message: `v1,` and the base64 HMAC-SHA256, keyed
/// by the secret's bytes, of `{id}.{timestamp}.{body}` (Standard Webhooks).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    // HMAC takes keys of any length: this never returns early.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl DeliveryStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> DeliveryStatus {
        match s {
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            _ => DeliveryStatus::Pending,
        }
    }
}

/// One event to deliver to one endpoint, and what happened so far: the delivery log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// `Dlv_<uuid>`.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event (`Evt_...`), also the message id receivers deduplicate by.
    pub event_id: String,
    /// The event's type.
    pub event_type: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When the next attempt is due (pending only; none = as soon as possible).
    pub next_attempt_at: Option<Timestamp>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<Timestamp>,
    /// The HTTP status the endpoint last answered.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// When its event happened.
    pub created_at: Timestamp,
}

impl Delivery {
    /// A new pending delivery of `event` to `endpoint`, due at once.
    pub fn new(endpoint: &WebhookEndpoint, event: &Event) -> Delivery {
        Delivery {
            id: crate::ids::new_id("Dlv"),
            endpoint_id: endpoint.id.clone(),
            event_id: event.id.clone(),
            event_type: event.kind.clone(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: None,
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            created_at: event.at,
        }
    }

    /// The deliveries a change's events make: one per event and endpoint that accepts it.
    pub fn fan_out(endpoints: &[WebhookEndpoint], events: &[&Event]) -> Vec<Delivery> {
        events
            .iter()
            .flat_map(|e| {
                endpoints
                    .iter()
                    .filter(|w| w.accepts(&e.kind))
                    .map(|w| Delivery::new(w, e))
            })
            .collect()
    }

    /// Records an attempt made at `at` that got `outcome` (an HTTP status, or why no answer
    /// came): delivered on 2xx, else pending with the next backoff, or failed after the last.
    pub fn record(&mut self, at: Timestamp, outcome: Result<u16, String>) {
        self.attempts += 1;
        self.last_attempt_at = Some(at);
        let failure = match outcome {
            Ok(code) => {
                self.last_status_code = Some(code);
                if (200..300).contains(&code) {
                    None
                } else {
                    Some(format!("the endpoint answered {code}"))
                }
            }
            Err(e) => {
                self.last_status_code = None;
                Some(e)
            }
        };
        match failure {
            None => {
                self.status = DeliveryStatus::Delivered;
                self.next_attempt_at = None;
                self.last_error = None;
            }
            Some(e) => {
                self.last_error = Some(e);
                match BACKOFF_SECONDS.get(self.attempts as usize - 1) {
                    Some(wait) if self.attempts < MAX_ATTEMPTS => {
                        self.status = DeliveryStatus::Pending;
                        self.next_attempt_at = at
                            .checked_add(jiff::SignedDuration::from_secs(*wait))
                            .ok()
                            .or(Some(at));
                    }
                    _ => {
                        self.status = DeliveryStatus::Failed;
                        self.next_attempt_at = None;
                    }
                }
            }
        }
    }
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// The tenant.
    pub tenant_id: String,
    /// The delivery as it stands.
    pub delivery: Delivery,
    /// The endpoint's URL.
    pub url: String,
    /// The endpoint's secret.
    pub secret: String,
    /// The event.
    pub event: Event,
}

/// The JSON body delivered for an event.
pub fn payload(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
        "type": event.kind,
        "created_at": event.at,
        "contract_id": event.contract_id,
        "actor": event.actor,
        "request_id": event.request_id,
        "data": event.data,
    })
}

/// Sends one webhook request; answers the HTTP status, or why there was none.
#[async_trait]
pub trait Sender: Send + Sync {
    /// POSTs `body` to `url` with `headers`, within [`SEND_TIMEOUT`].
    async fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<u16, String>;
}

impl Tally {
    /// Sends up to `limit` due deliveries (all tenants) at once, records each attempt in the
    /// delivery log, and returns how many were attempted. Safe to run in several processes:
    /// deliveries are claimed with a lease first.
    pub async fn deliver_webhooks(&self, sender: &dyn Sender, limit: u64) -> AppResult<usize> {
        let now = self.clock.now();
        let lease = now
            .checked_add(jiff::SignedDuration::from_secs(DELIVERY_LEASE_SECONDS))
            .unwrap_or(now);
        let jobs = self.store.claim_deliveries(limit, now, lease).await?;
        let sends = jobs.iter().map(|job| async move {
            let body = payload(&job.event).to_string();
            let ts = now.as_second();
            let headers = [
                ("content-type", "application/json".to_string()),
                ("webhook-id", job.event.id.clone()),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    sign(&job.secret, &job.event.id, ts, &body),
                ),
            ];
            sender.post(&job.url, &headers, body).await
        });
        let outcomes = futures_util::future::join_all(sends).await;
        let attempted = jobs.len();
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let mut d = job.delivery;
            if let Err(e) = &outcome {
                tracing::warn!(delivery = %d.id, url = %job.url, error = %e, "webhook not delivered");
            }
            d.record(self.clock.now(), outcome);
            self.store.save_delivery(&job.tenant_id, &d).await?;
        }
        Ok(attempted)
    }

    /// Sends a delivery of the endpoint again now (a failed one gets a fresh set of attempts).
    pub async fn retry_delivery(
        &self,
        tenant: &Tenant,
        endpoint_id: &str,
        id: &str,
    ) -> AppResult<Delivery> {
        let mut d = self
            .store
            .delivery(&tenant.id, id)
            .await?
            .filter(|d| d.endpoint_id == endpoint_id)
            .ok_or_else(|| AppError::NotFound {
                kind: "delivery",
                param: "delivery_id".into(),
                id: id.into(),
            })?;
        if d.status == DeliveryStatus::Failed {
            d.attempts = 0;
        }
        d.status = DeliveryStatus::Pending;
        d.next_attempt_at = None;
        self.store.save_delivery(&tenant.id, &d).await?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The specification's published test vector: secret, id, timestamp and body below sign
        // to this value (https://github.com/standard-webhooks/standard-webhooks, spec and
        // libraries' tests).
        let sig = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn patterns_match_exact_names_prefixes_and_everything() {
        assert!(pattern_matches("*", "v1.invoice.created"));
        assert!(pattern_matches("v1.contract.*", "v1.contract.renewed"));
        assert!(!pattern_matches("v1.contract.*", "v1.invoice.created"));
        assert!(pattern_matches("v1.invoice.created", "v1.invoice.created"));
        assert!(!pattern_matches(
            "v1.invoice.created",
            "v1.invoice.created2"
        ));
        assert!(check_event_types(&["v1.contract.*".into(), "*".into()]).is_ok());
        assert_eq!(check_event_types(&["v1.bogus".into()]).unwrap_err().0, 0);
        assert_eq!(
            check_event_types(&["*".into(), "v2.*".into()])
                .unwrap_err()
                .0,
            1
        );
        assert!(check_event_types(&[]).is_err());
    }

    #[test]
    fn urls_must_be_absolute_http_without_credentials() {
        assert!(check_url("https://example.com/hooks").is_ok());
        assert!(check_url("http://127.0.0.1:9000").is_ok());
        assert!(check_url("ftp://example.com").is_err());
        assert!(check_url("https:///path").is_err());
        assert!(check_url("https://user:pw@example.com/").is_err());
        assert!(check_url("https://exa mple.com/").is_err());
    }

    #[test]
    fn failed_attempts_back_off_then_give_up() {
        let endpoint = WebhookEndpoint {
            id: "Whk_1".into(),
            url: "https://example.com".into(),
            event_types: vec!["*".into()],
            enabled: true,
            description: None,
            secret: new_secret(),
            created_at: ts("2024-01-01T00:00:00Z"),
        };
        let event = Event {
            id: "Evt_1".into(),
            kind: "v1.invoice.created".into(),
            contract_id: None,
            at: ts("2024-01-01T00:00:00Z"),
            actor: "api".into(),
            request_id: None,
            data: crate::store::EventData::empty(),
        };
        let t0 = ts("2024-01-01T00:00:00Z");
        let mut d = Delivery::new(&endpoint, &event);
        d.record(t0, Ok(500));
        // first failure: the next attempt 5 s later
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.next_attempt_at, Some(ts("2024-01-01T00:00:05Z")));
        assert_eq!(d.last_status_code, Some(500));
        d.record(t0, Err("connection refused".into()));
        // second failure: 5 minutes later
        assert_eq!(d.next_attempt_at, Some(ts("2024-01-01T00:05:00Z")));
        assert_eq!(d.last_error.as_deref(), Some("connection refused"));
        for _ in 2..MAX_ATTEMPTS {
            d.record(t0, Ok(503));
        }
        // 8 attempts in all: 1 + the 7 waits of the schedule
        assert_eq!(d.attempts, 8);
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(d.next_attempt_at, None);
        let mut ok = Delivery::new(&endpoint, &event);
        ok.record(t0, Ok(204));
        assert_eq!(
            (ok.status, ok.attempts, ok.next_attempt_at),
            (DeliveryStatus::Delivered, 1, None)
        );
    }

    #[test]
    fn secrets_are_random_and_decode_to_32_bytes() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        let raw = B64.decode(a.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
    }
}
