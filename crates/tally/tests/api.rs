//! End-to-end tests: the real server on port 0 over a fresh SQLite file per test, driven over
//! HTTP; and the shipped example scenarios run through `simulate`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use serde_json::{Value, json};

#[path = "api/billwerk.rs"]
mod billwerk;
#[path = "support/conform.rs"]
mod conform;
#[path = "support/crash.rs"]
mod crash;
#[path = "api/flexprice.rs"]
mod flexprice;
#[path = "api/salesbricks.rs"]
mod salesbricks;

struct App {
    base: String,
    client: reqwest::Client,
    tally: tally_app::Tally,
    _shutdown: tokio::sync::oneshot::Sender<()>,
    /// The PostgreSQL URL and schema to drop when the test is done.
    schema: Option<(String, String)>,
    /// The SQLite file to remove when the test is done.
    file: Option<std::path::PathBuf>,
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(f) = &self.file {
            remove_db(f);
        }
    }
}

/// Removes an SQLite database with its WAL and shared-memory files.
fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

impl App {
    async fn drop_schema(&self) {
        if let Some((url, schema)) = &self.schema {
            tally_store_postgres::PgStore::drop_schema(url, schema)
                .await
                .unwrap();
        }
    }
}

async fn spawn_app() -> App {
    let path = std::env::temp_dir().join(format!("tally-test-{}.db", uuid_like()));
    let mut app = spawn_on(&format!("sqlite://{}", path.display())).await;
    app.file = Some(path);
    app
}

/// The server over PostgreSQL when `TALLY_TEST_POSTGRES_URL` is set (each test's tenants are its
/// own, so tests share the database); `None`, with a message, otherwise.
async fn spawn_pg_app() -> Option<App> {
    let Ok(url) = std::env::var("TALLY_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: TALLY_TEST_POSTGRES_URL is not set, so this test did not run on PostgreSQL"
        );
        return None;
    };
    let (schema, scoped) = pg_schema(&url).await;
    let mut app = spawn_on(&scoped).await;
    app.schema = Some((url, schema));
    Some(app)
}

/// A fresh schema of this test's own on the PostgreSQL at `url` (so tests and runs never see
/// each other's tables), migrated; returns it with a URL whose connections use it.
async fn pg_schema(url: &str) -> (String, String) {
    let schema = format!("tally_e2e_{}", uuid_like().replace('-', "_"));
    tally_store_postgres::PgStore::connect_in_schema(url, Some(&schema))
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} must be reachable: {e}"));
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    (schema, scoped)
}

/// Every invoice of a tenant, in number order, with the count.
async fn all_invoices(
    tally: &tally_app::Tally,
    tenant: &str,
) -> (Vec<tally_app::store::Invoice>, u64) {
    let all = tally_app::store::Page {
        offset: 0,
        limit: u64::MAX,
    };
    tally
        .store
        .invoices(tenant, &Default::default(), &all)
        .await
        .unwrap()
}

async fn spawn_on(url: &str) -> App {
    let server = tally::Server::build("127.0.0.1:0", url).await.unwrap();
    let addr = server.addr().unwrap();
    let tally = server.tally.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(Duration::ZERO, async {
        let _ = rx.await;
    }));
    App {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        tally,
        _shutdown: tx,
        schema: None,
        file: None,
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

const CATALOG: &str = r#"{
  "features": [
    {"slug": "platform", "kind": "flat"},
    {"slug": "seats", "kind": "per_unit"},
    {"slug": "api_calls", "kind": "usage"}
  ],
  "plans": [
    {"slug": "basic", "name": "Basic", "pricings": [{"slug": "basic-v1", "published_at": "2024-01-01T00:00:00Z",
      "prices": [{"currency": "usd", "cycle": "month", "features": {
        "platform": {"flat_fee": "10.00"}, "seats": {"price": "5.00"}, "api_calls": {"price": "0.001"}}}]}]},
    {"slug": "pro", "name": "Pro", "pricings": [{"slug": "pro-v1", "published_at": "2024-01-01T00:00:00Z",
      "prices": [{"currency": "usd", "cycle": "month", "features": {
        "platform": {"flat_fee": "30.00"}, "seats": {"price": "8.00"}}}]}]}
  ],
  "customers": [{"slug": "acme", "name": "Acme"}]
}"#;

struct Tenant {
    key: String,
}

impl App {
    /// A test-mode tenant with the test catalog and its clock at 2024-03-01.
    async fn tenant(&self) -> Tenant {
        let (mut t, key) = self.tally.create_tenant("t", true).await.unwrap();
        t.clock = Some("2024-03-01T00:00:00Z".parse().unwrap());
        self.tally.store.update_tenant(&t).await.unwrap();
        let r = self.post(&key, "/v1/c/catalog", CATALOG).await;
        assert_eq!(r.0, 200, "{}", r.1);
        Tenant { key }
    }

    /// Sends a request to `path` (the whole path) and reads its answer: an error must be
    /// problem+json, and a success must match the schema documented for `method path`.
    async fn answer(&self, method: &str, path: &str, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert_eq!(ct, "application/problem+json", "{method} {path}: {v}");
        } else {
            conform::conforms(method, path, status, &v);
        }
        (status, v)
    }

    async fn post(&self, key: &str, path: &str, body: &str) -> (u16, Value) {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("wb-key", key)
            .header("content-type", "application/json")
            .body(body.to_string());
        self.answer("POST", path, req).await
    }

    async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let req = self
            .client
            .get(format!("{}{path}", self.base))
            .header("wb-key", key);
        self.answer("GET", path, req).await
    }

    async fn delete(&self, key: &str, path: &str) -> u16 {
        let req = self
            .client
            .delete(format!("{}{path}", self.base))
            .header("wb-key", key);
        self.answer("DELETE", path, req).await.0
    }

    /// Moves the tenant's test clock to `to`, running every billing step due on the way;
    /// answers what the advance did.
    async fn advance(&self, t: &Tenant, to: &str) -> Value {
        let body = json!({ "to": to }).to_string();
        let (s, v) = self.post(&t.key, "/v1/c/test_clock/advance", &body).await;
        assert_eq!(s, 200, "{v}");
        v
    }

    async fn signup(&self, t: &Tenant, seats: &str) -> String {
        let body = json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month",
                          "unit_count_configuration": {"seats": seats}});
        let (s, v) = self.post(&t.key, "/v1/c/contract", &body.to_string()).await;
        assert_eq!(s, 200, "{v}");
        v.as_str().unwrap().to_string()
    }
}

fn amounts(inv: &Value) -> Vec<String> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_str().unwrap().to_string())
        .collect()
}

fn seats_change(seats: &str, date: &str) -> String {
    json!({"upgrade_configuration": {"upgrade_strategy": "change_unit_count",
        "activation": {"type": "date", "upgrade_date": date},
        "unit_count_configuration": {"seats": seats}}})
    .to_string()
}

#[tokio::test]
async fn signup_issues_the_first_invoice() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "4").await;
    assert!(id.starts_with("Cont_"));
    let (s, page) = app.get(&t.key, "/v1/c/invoice").await;
    assert_eq!(s, 200);
    assert_eq!(page["total"], 1);
    let (_, none) = app
        .get(&t.key, "/v1/c/invoice?customer=acme&date_after=2024-03-02")
        .await;
    assert_eq!(none["total"], 0);
    let (_, one) = app
        .get(
            &t.key,
            "/v1/c/invoice?date_after=2024-03-01&date_before=2024-03-02",
        )
        .await;
    assert_eq!(one["total"], 1);
    let (s, bad) = app.get(&t.key, "/v1/c/invoice?date_after=soon").await;
    assert_eq!((s, bad["param"].as_str()), (422, Some("date_after")));
    let inv = &page["hits"][0];
    // 10.00 platform + 4 x 5.00 seats = 30.00
    assert_eq!(amounts(inv), ["10.00", "20.00"]);
    // Paying it: paid, an event in the contract's history; paying again answers it unchanged;
    // voiding a paid invoice is refused.
    let inv_id = inv["id"].as_str().unwrap();
    let (s, v) = app
        .post(&t.key, &format!("/v1/c/invoice/{inv_id}/pay"), "{}")
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paid")), "{v}");
    let (s, v) = app
        .post(&t.key, &format!("/v1/c/invoice/{inv_id}/pay"), "{}")
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paid")), "{v}");
    let (s, v) = app
        .post(&t.key, &format!("/v1/c/invoice/{inv_id}/void"), "{}")
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("invalid_invoice_state"))
    );
    let (_, history) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/history"))
        .await;
    let kinds: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "v1.invoice.paid").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(inv["net"], "30.00");
    assert_eq!(inv["reason"], "signup");
    assert_eq!(inv["number"], "2024-000001");
    let (_, c) = app.get(&t.key, &format!("/v1/c/contract/{id}")).await;
    assert_eq!(c["contract_summary"]["status"], "active");
    assert_eq!(c["billing_information"]["current_period_idx"], 1);
    assert_eq!(
        c["billing_information"]["current_period"]["end"],
        "2024-04-01T00:00:00Z"
    );
}

#[tokio::test]
async fn estimate_equals_the_executed_upgrade() {
    estimate_equals_execution(&spawn_app().await).await;
}

#[tokio::test]
async fn estimate_equals_the_executed_upgrade_on_postgres() {
    if let Some(app) = spawn_pg_app().await {
        estimate_equals_execution(&app).await;
        app.drop_schema().await;
    }
}

#[tokio::test]
async fn a_key_never_sees_another_tenants_objects_on_postgres() {
    if let Some(app) = spawn_pg_app().await {
        isolation(&app).await;
        app.drop_schema().await;
    }
}

async fn estimate_equals_execution(app: &App) {
    let t = app.tenant().await;
    let id = app.signup(&t, "4").await;
    app.advance(&t, "2024-03-15T00:00:00Z").await;
    let body = seats_change("10", "2024-03-15T00:00:00Z");
    let (s, est) = app
        .post(
            &t.key,
            &format!("/v1/c/contract/{id}/upgrade_estimate"),
            &body,
        )
        .await;
    assert_eq!(s, 200, "{est}");
    // 17 of March's 31 days remain: credit 4 x 5.00 x 17/31 = 10.9677 -> 10.97, charge
    // 10 x 5.00 x 17/31 = 27.4193 -> 27.42; the flat fee is credited and charged alike:
    // 10.00 x 17/31 = 5.4838 -> 5.48 each way.
    assert_eq!(
        amounts(&est["invoice"]),
        ["-5.48", "-10.97", "5.48", "27.42"]
    );
    assert_eq!(est["is_downgrade"], false);
    assert_eq!(est["pro_rate_new_contract"], "32.90");
    assert_eq!(est["pro_rate_old_contract"], "-16.45");
    // The estimate changed nothing.
    let (_, page) = app.get(&t.key, "/v1/c/invoice").await;
    assert_eq!(page["total"], 1);

    let (s, v) = app
        .post(&t.key, &format!("/v1/c/contract/{id}/upgrade"), &body)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!(id));
    let (_, page) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    assert_eq!(page["total"], 2);
    let executed = &page["hits"][1];
    assert_eq!(executed["lines"], est["invoice"]["lines"]);
    assert_eq!(executed["gross"], est["invoice"]["gross"]);
    assert_eq!(executed["net"], "16.45");
}

#[tokio::test]
async fn a_scheduled_change_applies_when_the_clock_reaches_it() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "4").await;
    let body = json!({"upgrade_configuration": {"upgrade_strategy": "new_plan", "plan_id": "pro",
        "currency": "usd", "cycle": "month", "activation": {"type": "next_cycle"},
        "unit_count_configuration": {"seats": "2"}, "unit_configuration": {}}})
    .to_string();
    let (s, est) = app
        .post(
            &t.key,
            &format!("/v1/c/contract/{id}/upgrade_estimate"),
            &body,
        )
        .await;
    assert_eq!(s, 200, "{est}");
    assert_eq!(est["scheduled"], true);
    assert_eq!(est["effective_at"], "2024-04-01T00:00:00Z");
    assert!(est["invoice"].is_null());
    let (s, _) = app
        .post(&t.key, &format!("/v1/c/contract/{id}/upgrade"), &body)
        .await;
    assert_eq!(s, 200);
    let (_, sched) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/scheduled_changes"))
        .await;
    assert_eq!(sched.as_array().unwrap().len(), 1);
    let adv = app.advance(&t, "2024-04-01T00:00:00Z").await;
    let invs = adv["invoices"].as_array().unwrap();
    assert_eq!(invs.len(), 1);
    // April on Pro: 30.00 platform + 2 x 8.00 seats = 46.00
    assert_eq!(amounts(&invs[0]), ["30.00", "16.00"]);
    assert_eq!(invs[0]["reason"], "renewal");
    let (_, c) = app.get(&t.key, &format!("/v1/c/contract/{id}")).await;
    assert_eq!(c["plan"]["slug"], "pro");
    assert_eq!(c["phases"].as_array().unwrap().len(), 2);
    assert_eq!(c["scheduled_changes"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_scheduled_change_is_read_and_canceled_before_it_applies() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "4").await;
    let (s, _) = app
        .post(
            &t.key,
            &format!("/v1/c/contract/{id}/upgrade"),
            &seats_change("6", "2024-03-16T00:00:00Z"),
        )
        .await;
    assert_eq!(s, 200);
    let (_, list) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/scheduled_changes"))
        .await;
    let change = list[0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/c/contract/{id}/scheduled_changes/{change}");
    let (s, one) = app.get(&t.key, &path).await;
    assert_eq!(s, 200, "{one}");
    assert_eq!(one, list[0]);
    assert_eq!(one["effective_at"], "2024-03-16T00:00:00Z");
    assert_eq!(one["at_period_end"], false);
    let (s, left) = app.post(&t.key, &format!("{path}/cancel"), "{}").await;
    assert_eq!((s, left), (200, json!([])));
    let (s, _) = app.get(&t.key, &path).await;
    assert_eq!(s, 404);
    let (s, v) = app.post(&t.key, &format!("{path}/cancel"), "{}").await;
    assert_eq!((s, v["param"].as_str()), (404, Some("change_id")), "{v}");
    // The clock passes the canceled instant: nothing is invoiced until the renewal, which bills
    // the four seats still in force: 10.00 + 4 x 5.00 = 30.00.
    let adv = app.advance(&t, "2024-04-01T00:00:00Z").await;
    let invs = adv["invoices"].as_array().unwrap();
    assert_eq!(invs.len(), 1, "{adv}");
    assert_eq!(amounts(&invs[0]), ["10.00", "20.00"]);
    assert_eq!(invs[0]["reason"], "renewal");
}

#[tokio::test]
async fn a_pending_contract_bills_nothing_until_activated() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let body = json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month",
                      "is_pending": true, "unit_count_configuration": {"seats": "2"}});
    let (s, v) = app.post(&t.key, "/v1/c/contract", &body.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let id = v.as_str().unwrap().to_string();
    let (_, c) = app.get(&t.key, &format!("/v1/c/contract/{id}")).await;
    assert_eq!(c["contract_summary"]["status"], "pending");
    let (_, page) = app.get(&t.key, "/v1/c/invoice").await;
    assert_eq!(page["total"], 0);
    let adv = app.advance(&t, "2024-03-10T00:00:00Z").await;
    assert_eq!(adv["invoices"], json!([]));
    let (s, a) = app
        .post(&t.key, &format!("/v1/c/contract/{id}/activate"), "{}")
        .await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["contract"]["contract_summary"]["status"], "active");
    let invs = a["invoices"].as_array().unwrap();
    assert_eq!(invs.len(), 1, "{a}");
    // A whole period from the activation instant: 10.00 platform + 2 x 5.00 seats.
    assert_eq!(amounts(&invs[0]), ["10.00", "10.00"]);
    assert_eq!(
        a["contract"]["billing_information"]["current_period"]["start"],
        "2024-03-10T00:00:00Z"
    );
}

#[tokio::test]
async fn a_bulk_of_valid_usage_is_recorded_whole() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "1").await;
    let (s, v) = app
        .post(
            &t.key,
            "/v1/c/usage/bulk",
            r#"[{"customer_id": "acme", "feature_slug": "api_calls", "units": "1200", "timestamp": "2024-03-05T00:00:00Z"},
                {"customer_id": "acme", "feature_slug": "api_calls", "units": "800", "timestamp": "2024-03-20T00:00:00Z"}]"#,
        )
        .await;
    assert_eq!((s, v), (200, json!("Recorded")));
    let adv = app.advance(&t, "2024-04-01T00:00:00Z").await;
    let inv = &adv["invoices"][0];
    // March usage (1200 + 800) x 0.001 = 2.00, then April in advance: 10.00 + 1 x 5.00
    assert_eq!(amounts(inv), ["2.00", "10.00", "5.00"]);
    assert_eq!(inv["contract_id"], json!(id));
}

#[tokio::test]
async fn usage_is_billed_in_arrears() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "1").await;
    let (s, v) = app
        .post(
            &t.key,
            "/v1/c/usage",
            r#"{"customer_id": "acme", "feature_slug": "api_calls", "units": "2500", "timestamp": "2024-03-10T00:00:00Z"}"#,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = app
        .post(
            &t.key,
            "/v1/c/usage/bulk",
            r#"[{"customer_id": "acme", "feature_slug": "api_calls", "units": "500", "timestamp": "2024-03-11T00:00:00Z"},
                {"customer_id": "acme", "feature_slug": "nope", "units": "1"},
                {"customer_id": "acme", "feature_slug": "api_calls", "units": "-3"}]"#,
        )
        .await;
    assert_eq!(s, 422);
    assert!(
        v["errors"]["1"].is_object() && v["errors"]["2"].is_object(),
        "{v}"
    );
    assert!(v["errors"]["0"].is_null());
    let adv = app.advance(&t, "2024-04-01T00:00:00Z").await;
    let inv = &adv["invoices"][0];
    // March usage (2500 + 500) x 0.001 = 3.00, then April in advance: 10.00 + 5.00
    assert_eq!(amounts(inv), ["3.00", "10.00", "5.00"]);
    assert_eq!(inv["contract_id"], json!(id));
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let body = json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month"})
        .to_string();
    let send = |b: String| {
        let c = app.client.clone();
        let url = format!("{}/v1/c/contract", app.base);
        let key = t.key.clone();
        async move {
            let r = c
                .post(url)
                .header("wb-key", key)
                .header("idempotency-key", "k-1")
                .header("content-type", "application/json")
                .body(b)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let first = send(body.clone()).await;
    let second = send(body.clone()).await;
    assert_eq!(first.0, 200);
    assert_eq!(first, second);
    let (_, list) = app.get(&t.key, "/v1/c/contract").await;
    assert_eq!(list["total"], 1);
    let other = send(body.replace("month", "year")).await;
    assert_eq!(other.0, 422);
    assert!(other.1.contains("idempotency_key_reused"));
}

#[tokio::test]
async fn a_key_never_sees_another_tenants_objects() {
    isolation(&spawn_app().await).await;
}

async fn isolation(app: &App) {
    let a = app.tenant().await;
    let b = app.tenant().await;
    let id = app.signup(&a, "1").await;
    let (_, page) = app.get(&a.key, "/v1/c/invoice").await;
    let inv = page["hits"][0]["id"].as_str().unwrap().to_string();
    let (_, cust) = app.get(&a.key, "/v1/c/customer/acme").await;
    let cust_id = cust["id"].as_str().unwrap().to_string();
    let (_, hook) = app
        .post(
            &a.key,
            "/v1/c/webhook",
            r#"{"url": "http://127.0.0.1:9/hook"}"#,
        )
        .await;
    let hook = hook["id"].as_str().unwrap().to_string();
    let reads = [
        format!("/v1/c/webhook/{hook}"),
        format!("/v1/c/webhook/{hook}/deliveries"),
        format!("/v1/c/contract/{id}"),
        format!("/v1/c/contract/{id}/history"),
        format!("/v1/c/contract/{id}/invoices"),
        format!("/v1/c/contract/{id}/scheduled_changes"),
        format!("/v1/c/invoice/{inv}"),
        format!("/v1/c/customer/{cust_id}"),
        format!("/v1/c/customer/{cust_id}/balance"),
    ];
    for path in &reads {
        let (s, _) = app.get(&b.key, path).await;
        assert_eq!(s, 404, "GET {path}");
        // The owner reads each one (and its answer is held to the documented schema).
        let (s, v) = app.get(&a.key, path).await;
        assert_eq!(s, 200, "GET {path}: {v}");
    }
    for (path, body) in [
        (
            format!("/v1/c/contract/{id}/upgrade"),
            seats_change("2", "2024-03-02T00:00:00Z"),
        ),
        (
            format!("/v1/c/contract/{id}/upgrade_estimate"),
            seats_change("2", "2024-03-02T00:00:00Z"),
        ),
        (
            format!("/v1/c/contract/{id}/cancel"),
            r#"{"mode": "now"}"#.to_string(),
        ),
        (format!("/v1/c/contract/{id}/activate"), "{}".to_string()),
        (format!("/v1/c/invoice/{inv}/pay"), "{}".to_string()),
        (format!("/v1/c/invoice/{inv}/void"), "{}".to_string()),
        (
            format!("/v1/c/invoice/{inv}/payment"),
            r#"{"outcome": "started"}"#.to_string(),
        ),
        (
            format!("/v1/c/webhook/{hook}"),
            r#"{"enabled": false}"#.to_string(),
        ),
        (
            "/v1/c/customer".to_string(),
            json!({"id": cust_id, "name": "x"}).to_string(),
        ),
        (
            "/v1/c/contract".to_string(),
            json!({"customer": cust_id, "plan": "basic", "currency": "usd", "cycle": "month"})
                .to_string(),
        ),
    ] {
        let (s, v) = app.post(&b.key, &path, &body).await;
        assert_eq!(s, 404, "POST {path}: {v}");
    }
    let (_, list) = app.get(&b.key, "/v1/c/invoice").await;
    assert_eq!(list["total"], 0);
    let (_, list) = app.get(&b.key, "/v1/c/webhook").await;
    assert_eq!(list["total"], 0);
    assert_eq!(
        app.delete(&b.key, &format!("/v1/c/webhook/{hook}")).await,
        404
    );
    let (s, still) = app.get(&a.key, &format!("/v1/c/webhook/{hook}")).await;
    assert_eq!((s, still["enabled"].as_bool()), (200, Some(true)));
    // The tenant's own catalog, clock and a cancellation answer as documented.
    for path in ["/v1/c/catalog", "/v1/c/test_clock"] {
        let (s, v) = app.get(&a.key, path).await;
        assert_eq!(s, 200, "GET {path}: {v}");
    }
    let (s, v) = app
        .post(
            &a.key,
            &format!("/v1/c/contract/{id}/cancel"),
            r#"{"mode": "now"}"#,
        )
        .await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn bad_input_is_a_problem_never_a_500() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "4").await;
    let up = format!("/v1/c/contract/{id}/upgrade");
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        ("/v1/c/contract", "{not json".into(), 400, "malformed_json", None),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": 5}).to_string(), 422, "invalid_body", Some("cycle")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "fortnight"}).to_string(), 422, "invalid_body", Some("cycle")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd"}).to_string(), 422, "invalid_body", None),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month", "colour": "red"}).to_string(), 422, "invalid_body", Some("colour")),
        ("/v1/c/contract", json!({"customer": "nobody", "plan": "basic", "currency": "usd", "cycle": "month"}).to_string(), 404, "not_found", Some("customer")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "gold", "currency": "usd", "cycle": "month"}).to_string(), 404, "not_found", Some("plan")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "eur", "cycle": "month"}).to_string(), 422, "not_sold_in_currency_or_cycle", Some("currency")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month", "unit_count_configuration": {"seats": "-2"}}).to_string(), 422, "negative_value", Some("unit_count_configuration.seats")),
        ("/v1/c/contract", json!({"customer": "acme", "plan": "basic", "currency": "usd", "cycle": "month", "unit_count_configuration": {"chairs": "2"}}).to_string(), 422, "unknown_feature", Some("unit_count_configuration.chairs")),
        (&up, seats_change("-1", "2024-03-02T00:00:00Z"), 422, "negative_value", Some("upgrade_configuration.unit_count_configuration.seats")),
        (&up, seats_change("5", "2024-02-01T00:00:00Z"), 422, "date_out_of_range", Some("upgrade_configuration.activation.upgrade_date")),
        (&up, seats_change("1", "2024-03-01T12:00:00Z"), 422, "downgrade_requires_next_cycle_or_downgrade_allowed", Some("downgrade_allowed")),
        (&up, json!({"upgrade_configuration": {"upgrade_strategy": "teleport"}}).to_string(), 422, "invalid_body", Some("upgrade_configuration.upgrade_strategy")),
        ("/v1/c/contract/Cont_nope/upgrade", seats_change("5", "2024-03-02T00:00:00Z"), 404, "not_found", Some("contract_id")),
        ("/v1/c/test_clock/advance", r#"{"to": "2020-01-01T00:00:00Z"}"#.into(), 422, "invalid_value", Some("to")),
        // Emails and address are objects: anything else would be stored and served off-schema.
        ("/v1/c/customer", json!({"emails": [null, null]}).to_string(), 422, "invalid_body", Some("emails")),
        ("/v1/c/customer", json!({"address": "Main St 1"}).to_string(), 422, "invalid_body", Some("address")),
    ];
    for (path, body, status, code, param) in cases {
        let (s, v) = app.post(&t.key, path, &body).await;
        assert_eq!(s, status, "{path} {body}: {v}");
        assert_eq!(v["code"], code, "{path} {body}: {v}");
        if let Some(p) = param {
            assert_eq!(v["param"], p, "{path} {body}: {v}");
        }
        assert_eq!(v["status"], status);
    }
    // Nothing of the refused requests was written.
    let (_, list) = app.get(&t.key, "/v1/c/invoice").await;
    assert_eq!(list["total"], 1);
    let (s, v) = app.get("wrong", "/v1/c/invoice").await;
    assert_eq!((s, v["code"].as_str()), (401, Some("invalid_api_key")));
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = app
        .client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let _ = app.get("nokey", "/v1/c/invoice").await;
    let r = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap();
    let text = r.text().await.unwrap();
    assert!(
        text.contains("tally_http_responses_total{class=\"4xx\"} 1"),
        "{text}"
    );
}

fn example(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

#[tokio::test]
async fn example_upgrade_mid_month_with_seats() {
    let r = tally::simulate::run(&example("upgrade-mid-month-with-seats.yaml"))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let inv = r.json["invoices"].as_array().unwrap();
    assert_eq!(inv.len(), 4);
    // Jan 16, 5 -> 8 seats: usage 12000 x 0.001 = 12.00; support in arrears 50.00 x 15/31 =
    // 24.19; unused platform 10.00 x 16/31 = 5.16 and 5 seats 25.00 x 16/31 = 12.90 credited;
    // platform 5.16 and 8 seats 40.00 x 16/31 = 20.65 charged.
    assert_eq!(
        amounts(&inv[1]),
        ["12.00", "24.19", "-5.16", "-12.90", "5.16", "20.65"]
    );
    // 12.00 + 24.19 - 5.16 - 12.90 + 5.16 + 20.65 = 43.94; 19% tax 8.3486 -> 8.35
    assert_eq!(
        (inv[1]["net"].as_str(), inv[1]["tax"].as_str()),
        (Some("43.94"), Some("8.35"))
    );
    // The estimate of that step showed the same invoice.
    assert_eq!(
        r.json["steps"][2]["body"]["invoice"]["lines"],
        inv[1]["lines"]
    );
}

/// Logs written to a pipe (a file, a collector) are plain text: terminal colors would land in
/// them as escape codes.
#[test]
fn the_server_logs_plain_text_when_not_on_a_terminal() {
    use std::io::BufRead;
    let path = std::env::temp_dir().join(format!("tally-logs-{}.db", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}", path.display()))
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    remove_db(&path);
    assert!(line.contains("tally serving"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "escape codes in {line:?}");
}
#[test]
fn the_simulate_command_prints_its_report_and_nothing_else() {
    let run = |json: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tally"));
        cmd.arg("simulate")
            .arg(example("upgrade-mid-month-with-seats.yaml"))
            .env_remove("RUST_LOG");
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr, "", "no request log lines by default");
        String::from_utf8(out.stdout).unwrap()
    };
    let report = run(false);
    // The Jan 16 change's invoice: 43.94 net + 8.35 tax = 52.29 (see the test above).
    assert!(report.contains("gross 52.29"), "{report}");
    let v: Value = serde_json::from_str(&run(true)).unwrap();
    assert_eq!(v["invoices"].as_array().map(Vec::len), Some(4));
}

#[tokio::test]
async fn example_downgrade_next_cycle() {
    let r = tally::simulate::run(&example("downgrade-next-cycle.yaml"))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let inv = r.json["invoices"].as_array().unwrap();
    // Feb 1 on Basic with 3 seats: Pro's January support in arrears 50.00, then 10.00 + 3 x 5.00
    assert_eq!(amounts(&inv[1]), ["50.00", "10.00", "15.00"]);
}

#[tokio::test]
async fn example_billing_date_change() {
    let r = tally::simulate::run(&example("billing-date-change.yaml"))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let inv = r.json["invoices"].as_array().unwrap();
    // [Feb 1, Feb 15) of the period [Jan 15, Feb 15) (31 days): platform 30.00 x 14/31 = 13.55,
    // 2 seats 16.00 x 14/31 = 7.2258 -> 7.23
    assert_eq!(amounts(&inv[1]), ["13.55", "7.23"]);
    assert_eq!(inv[2]["issued_at"], "2024-02-15T00:00:00Z");
}

#[tokio::test]
async fn example_dialects() {
    let r = tally::simulate::run(&example("dialects.yaml"))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let inv = r.json["invoices"].as_array().unwrap();
    assert_eq!(inv.len(), 7);
    // Jan 16, Flexprice to pro (16 of 31 days left): support in arrears 50.00 x 15/31 = 24.19;
    // credits platform 10.00 x 16/31 = 5.16 and 5 seats 25.00 x 16/31 = 12.90; charges pro
    // platform 30.00 x 16/31 = 15.48 and 5 seats 40.00 x 16/31 = 20.65.
    assert_eq!(
        amounts(&inv[1]),
        ["24.19", "-5.16", "-12.90", "15.48", "20.65"]
    );
    // The Flexprice preview of that instant showed exactly those lines.
    let preview: Vec<&Value> = r.json["steps"][1]["body"]["next_invoice_preview"]["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["amount"])
        .collect();
    assert_eq!(
        preview,
        inv[1]["lines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &l["amount"])
            .collect::<Vec<_>>()
    );
    // Feb 10, billwerk order to 10 seats (20 of February 2024's 29 days left): support
    // 50.00 x 9/29 = 15.52; platform -20.69 and +20.69 (30.00 x 20/29); seats -40.00 x 20/29 =
    // -27.59 and +80.00 x 20/29 = 55.17. Net 15.52 - 27.59 + 55.17 = 43.10; tax 19% 8.19.
    assert_eq!(
        (inv[3]["net"].as_str(), inv[3]["tax"].as_str()),
        (Some("43.10"), Some("8.19"))
    );
    // Mar 11, Salesbricks to 12 seats (21 of 31 days left): support 50.00 x 10/31 = 16.13;
    // seats -80.00 x 21/31 = -54.19 and +96.00 x 21/31 = 65.03; platform nets to zero.
    // Net 16.13 - 54.19 + 65.03 = 26.97.
    assert_eq!(inv[5]["net"], "26.97");
    assert_eq!(inv[6]["reason"], "renewal");
}

#[tokio::test]
async fn example_trial_then_upgrade() {
    let r = tally::simulate::run(&example("trial-then-upgrade.yaml"))
        .await
        .unwrap();
    assert!(r.failures.is_empty(), "{:?}", r.failures);
    let inv = r.json["invoices"].as_array().unwrap();
    // Trial Mar 1-15, nothing billed; Mar 15 the first period with the 4 seats set during the
    // trial: 10.00 + 4 x 5.00.
    assert_eq!(inv[0]["issued_at"], "2024-03-15T00:00:00Z");
    assert_eq!(amounts(&inv[0]), ["10.00", "20.00"]);
    // Mar 22 to Pro: 24 of the 31 days [Mar 15, Apr 15) remain. Support in arrears 50.00 x 7/31
    // = 11.29; credits 10.00 x 24/31 = 7.74, 20.00 x 24/31 = 15.48; charges 30.00 x 24/31 =
    // 23.23, 4 x 8.00 x 24/31 = 24.77.
    assert_eq!(
        amounts(&inv[1]),
        ["11.29", "-7.74", "-15.48", "23.23", "24.77"]
    );
}

struct Fixed(jiff::Timestamp);

impl tally_app::Clock for Fixed {
    fn now(&self) -> jiff::Timestamp {
        self.0
    }
}

/// A live tenant with 28 monthly contracts started on Jan 1..28, 2024; "now" is Jun 15, 2024.
/// Three workers, each with its own connections (as three processes would have), run the bill
/// run to Sep 1 at once: every renewal is invoiced exactly once and the numbers have no gap; a
/// second run writes nothing.
async fn bill_run_with_three_workers(url: &str) {
    use std::sync::Arc;
    let now = Arc::new(Fixed("2024-06-15T00:00:00Z".parse().unwrap()));
    let tally = tally_app::Tally {
        store: tally::open(url).await.unwrap(),
        clock: now.clone(),
    };
    let (tenant, _) = tally.create_tenant("live", false).await.unwrap();
    let file = tally_app::catalog_file::CatalogFile::from_json(CATALOG).unwrap();
    let (tenant, _) = tally.apply_catalog(&tenant, &file).await.unwrap();
    let actor = tally_app::Actor::bill_run();
    let mut contracts = Vec::new();
    for day in 1..=28 {
        let mut req = tally_core::billing::SignupRequest::new(
            "",
            "acme",
            "basic",
            tally_core::money::Currency::Usd,
            tally_core::calendar::Cycle::Month,
        )
        .seats("seats", 1);
        req.activation = Some(format!("2024-01-{day:02}T00:00:00Z").parse().unwrap());
        let (c, _) = tally.subscribe(&tenant, req, &actor).await.unwrap();
        contracts.push((day, c.id));
    }
    let until: jiff::Timestamp = "2024-09-01T00:00:00Z".parse().unwrap();
    let mut workers = Vec::new();
    for _ in 0..3 {
        let worker = tally_app::Tally {
            store: tally::open(url).await.unwrap(),
            clock: now.clone(),
        };
        workers.push(tokio::spawn(async move {
            worker.bill_run(until, 5).await.unwrap()
        }));
    }
    let mut issued = 0;
    for w in workers {
        issued += w.await.unwrap();
    }
    let (invoices, total) = all_invoices(&tally, &tenant.id).await;
    let start: jiff::Timestamp = "2024-06-15T00:00:00Z".parse().unwrap();
    let mut expected_total = 0;
    for (day, id) in &contracts {
        // Renewals on the contract's day of June..September that fall in (Jun 15, Sep 1].
        let want = (6..=9)
            .filter(|m| {
                let t: jiff::Timestamp = format!("2024-{m:02}-{day:02}T00:00:00Z").parse().unwrap();
                t > start && t <= until
            })
            .count();
        let got = invoices
            .iter()
            .filter(|i| &i.draft.contract_id == id && i.draft.issued_at > start)
            .count();
        assert_eq!(got, want, "contract started on day {day}");
        // Signup, then one renewal per month from February to the last one up to Jun 15.
        let before = invoices
            .iter()
            .filter(|i| &i.draft.contract_id == id && i.draft.issued_at <= start)
            .count();
        assert_eq!(before, if *day <= 15 { 6 } else { 5 }, "day {day}");
        expected_total += want;
    }
    assert_eq!(issued, expected_total);
    let mut numbers: Vec<String> = invoices.iter().map(|i| i.number.clone()).collect();
    numbers.sort();
    let gapless: Vec<String> = (1..=total).map(|n| format!("2024-{n:06}")).collect();
    assert_eq!(numbers, gapless);
    assert_eq!(
        tally.bill_run(until, 5).await.unwrap(),
        0,
        "a second run writes nothing"
    );
}

/// A customer's credit balance is used once across bill-run batches, even though the next
/// batch is read while the previous one is being written: `acme` has 25.00 of credit and six
/// contracts renewing on Feb 1, interleaved with six of `globex`, billed two at a time.
#[tokio::test]
async fn credit_is_applied_once_across_bill_run_batches() {
    use std::sync::Arc;
    use tally_core::prelude::*;
    let path = std::env::temp_dir().join(format!("tally-test-{}.db", uuid_like()));
    let tally = tally_app::Tally {
        store: tally::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap(),
        clock: Arc::new(Fixed("2024-01-15T00:00:00Z".parse().unwrap())),
    };
    let (tenant, _) = tally.create_tenant("live", false).await.unwrap();
    let file = tally_app::catalog_file::CatalogFile::from_json(CATALOG).unwrap();
    let (tenant, _) = tally.apply_catalog(&tenant, &file).await.unwrap();
    let actor = tally_app::Actor::bill_run();
    let mut globex = tally
        .store
        .customer(&tenant.id, "acme")
        .await
        .unwrap()
        .unwrap();
    globex.id = tally_app::ids::new_id("Cust");
    globex.slug = Some("globex".into());
    tally
        .save_customer(&tenant, &globex, true, &actor)
        .await
        .unwrap();
    let mut signup_invoice = None;
    for i in 0..12 {
        let customer = if i % 2 == 0 { "acme" } else { "globex" };
        let mut req = SignupRequest::new("", customer, "basic", Currency::Usd, Cycle::Month)
            .seats("seats", 1);
        req.activation = Some("2024-01-01T00:00:00Z".parse().unwrap());
        let (_, invoices) = tally.subscribe(&tenant, req, &actor).await.unwrap();
        signup_invoice.get_or_insert(invoices[0].draft.clone());
    }
    let acme = tally
        .store
        .customer(&tenant.id, "acme")
        .await
        .unwrap()
        .unwrap();
    // 25.00 of credit for acme, as a credit note would leave it.
    let mut credit = signup_invoice.unwrap();
    credit.step_key = "credit-note".into();
    credit.lines.clear();
    credit.credit_added = "25.00".parse().unwrap();
    tally
        .store
        .commit(
            &tenant.id,
            tally_app::store::Commit {
                invoices: vec![credit],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let balance = |b: std::collections::BTreeMap<Currency, rust_decimal::Decimal>| {
        b.get(&Currency::Usd).map(ToString::to_string)
    };
    assert_eq!(
        balance(tally.store.balances(&tenant.id, &acme.id).await.unwrap()),
        Some("25.00".into())
    );
    let until: jiff::Timestamp = "2024-02-01T00:00:00Z".parse().unwrap();
    assert_eq!(tally.bill_run(until, 2).await.unwrap(), 12);
    let (invoices, _) = all_invoices(&tally, &tenant.id).await;
    let renewals: Vec<_> = invoices
        .iter()
        .filter(|i| i.draft.issued_at == until && i.draft.customer_id == acme.id)
        .collect();
    assert_eq!(renewals.len(), 6);
    // Each renewal is platform 10.00 + 1 seat x 5.00 = 15.00. The credit covers the first in
    // full (25.00 - 15.00 = 10.00 left) and 10.00 of the second; the other four owe 15.00.
    let mut applied: Vec<String> = renewals
        .iter()
        .map(|i| i.draft.credit_applied.to_string())
        .collect();
    applied.sort();
    assert_eq!(applied, ["0.00", "0.00", "0.00", "0.00", "10.00", "15.00"]);
    let due: rust_decimal::Decimal = renewals.iter().map(|i| i.draft.amount_due).sum();
    // 6 x 15.00 - 25.00 = 65.00
    assert_eq!(due.to_string(), "65.00");
    let left = balance(tally.store.balances(&tenant.id, &acme.id).await.unwrap());
    assert!(
        left.as_deref().is_none_or(|b| b == "0.00" || b == "0"),
        "{left:?}"
    );
    remove_db(&path);
}

#[tokio::test]
async fn bill_run_with_three_workers_on_sqlite() {
    let path = std::env::temp_dir().join(format!("tally-test-{}.db", uuid_like()));
    bill_run_with_three_workers(&format!("sqlite://{}", path.display())).await;
    remove_db(&path);
}

#[tokio::test]
async fn bill_run_with_three_workers_on_postgres() {
    let Ok(url) = std::env::var("TALLY_TEST_POSTGRES_URL") else {
        eprintln!(
            "skipped: TALLY_TEST_POSTGRES_URL is not set, so the multi-worker bill run did not run on PostgreSQL"
        );
        return;
    };
    let (schema, scoped) = pg_schema(&url).await;
    bill_run_with_three_workers(&scoped).await;
    tally_store_postgres::PgStore::drop_schema(&url, &schema)
        .await
        .unwrap();
}

/// 32 clients change the same contract at once: every request is answered 200 or 409, each
/// accepted change is one phase, and the invoice numbers have no gap.
#[tokio::test]
async fn concurrent_changes_to_one_contract_lose_nothing() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "1").await;
    let mut tasks = Vec::new();
    for n in 2..34 {
        let client = app.client.clone();
        let url = format!("{}/v1/c/contract/{id}/upgrade", app.base);
        let key = t.key.clone();
        let body = seats_change(&n.to_string(), "2024-03-01T00:00:00Z");
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .header("wb-key", key)
                .body(body)
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }));
    }
    let mut accepted = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(
            status == 200 || status == 409 || status == 422,
            "status {status}"
        );
        if status == 200 {
            accepted += 1;
        }
    }
    assert!(accepted >= 1);
    let (_, c) = app.get(&t.key, &format!("/v1/c/contract/{id}")).await;
    assert_eq!(c["phases"].as_array().unwrap().len(), 1 + accepted);
    let (_, page) = app.get(&t.key, "/v1/c/invoice?limit=100").await;
    let mut numbers: Vec<String> = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_str().unwrap().to_string())
        .collect();
    numbers.sort();
    let total = page["total"].as_u64().unwrap();
    let want: Vec<String> = (1..=total).map(|n| format!("2024-{n:06}")).collect();
    assert_eq!(numbers, want);
}

/// Crash safety: `tally bill-run` is killed (SIGKILL) at random points while it renews 1,500
/// contracts over three months, then restarted until it finishes. Every contract ends with
/// exactly its signup and three renewals, and the invoice numbers have no gap.
#[tokio::test]
async fn a_bill_run_killed_at_random_points_bills_everything_exactly_once() {
    use std::sync::Arc;
    let path = std::env::temp_dir().join(format!("tally-crash-{}.db", uuid_like()));
    let url = format!("sqlite://{}", path.display());
    let start = Arc::new(Fixed("2024-01-01T00:00:00Z".parse().unwrap()));
    let tally = tally_app::Tally {
        store: tally::open(&url).await.unwrap(),
        clock: start,
    };
    let (tenant, _) = tally.create_tenant("live", false).await.unwrap();
    let file = tally_app::catalog_file::CatalogFile::from_json(CATALOG).unwrap();
    let (tenant, catalog) = tally.apply_catalog(&tenant, &file).await.unwrap();
    let customer = tally
        .store
        .customer(&tenant.id, "acme")
        .await
        .unwrap()
        .unwrap();
    let cx = tally_core::contract::BillingContext::new(&catalog, &tenant.settings).unwrap();
    let n = 1500;
    for _ in 0..n {
        let req = tally_core::billing::SignupRequest::new(
            &tally_app::ids::new_id("Cont"),
            &customer.id,
            "basic",
            tally_core::money::Currency::Usd,
            tally_core::calendar::Cycle::Month,
        )
        .seats("seats", 2);
        let out =
            tally_core::billing::subscribe(&req, &cx, "2024-01-01T00:00:00Z".parse().unwrap())
                .unwrap();
        tally
            .store
            .commit(
                &tenant.id,
                tally_app::store::Commit {
                    contract: Some((out.contract, 0)),
                    invoices: out.invoices,
                    events: vec![],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let plan = crash::Plan {
        bin: env!("CARGO_BIN_EXE_tally"),
        db: &path,
        tenant: &tenant.id,
        until: "2024-04-01T00:00:00Z",
        batch_size: 50,
        kills: 5,
        from: n,
        to: 4 * n,
    };
    let rounds = crash::kill_and_restart(&plan);
    eprintln!("invoices after each round: {:?}", rounds.after_round);
    assert!(
        rounds.kills >= 3,
        "only {} runs were killed mid-work",
        rounds.kills
    );
    // A signup and three renewals (Feb 1, Mar 1, Apr 1) per contract, numbers 1..=4n.
    assert_eq!(crash::verify(&path, &tenant.id, n, 4), 4 * n);
    remove_db(&path);
}

/// Every endpoint answers bad input with a 4xx problem+json: a body that is not JSON, a body of
/// the wrong shape, and ids that do not exist.
#[tokio::test]
async fn every_endpoint_refuses_bad_input_with_a_problem() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = app.signup(&t, "1").await;
    let posts = [
        "/v1/c/customer".to_string(),
        "/v1/c/contract".to_string(),
        format!("/v1/c/contract/{id}/upgrade"),
        format!("/v1/c/contract/{id}/upgrade_estimate"),
        format!("/v1/c/contract/{id}/cancel"),
        "/v1/c/usage".to_string(),
        "/v1/c/usage/bulk".to_string(),
        "/v1/c/catalog".to_string(),
        "/v1/c/test_clock/advance".to_string(),
        "/v1/c/webhook".to_string(),
        "/flexprice/v1/customers".to_string(),
        "/flexprice/v1/subscriptions".to_string(),
        format!("/flexprice/v1/subscriptions/{id}/change/preview"),
        format!("/flexprice/v1/subscriptions/{id}/change/execute"),
        "/billwerk/api/v1/Orders".to_string(),
        "/billwerk/api/v1/Orders/preview".to_string(),
        format!("/salesbricks/api/v1/subscriptions/{id}/upgrade"),
        format!("/salesbricks/api/v1/subscriptions/{id}/upgrade/estimate"),
    ];
    for path in &posts {
        let (s, v) = app.post(&t.key, path, "{oops").await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("malformed_json")),
            "{path}: {v}"
        );
        let (s, v) = app.post(&t.key, path, "42").await;
        assert_eq!(s, 422, "{path}: {v}");
    }
    let unknown_gets = [
        "/v1/c/customer/Cust_nope",
        "/v1/c/customer/Cust_nope/balance",
        "/v1/c/contract/Cont_nope",
        "/v1/c/contract/Cont_nope/history",
        "/v1/c/contract/Cont_nope/invoices",
        "/v1/c/contract/Cont_nope/scheduled_changes",
        "/v1/c/invoice/Inv_nope",
        "/v1/c/webhook/Whk_nope",
        "/v1/c/webhook/Whk_nope/deliveries",
        "/flexprice/v1/customers/Cust_nope",
        "/flexprice/v1/subscriptions/Cont_nope",
        "/flexprice/v1/invoices/Inv_nope",
        "/billwerk/api/v1/Contracts/Cont_nope",
        "/billwerk/api/v1/Orders/Ord_nope",
        "/salesbricks/api/v1/subscriptions/Cont_nope",
        "/salesbricks/api/v1/subscriptions/Cont_nope/upgrade",
    ];
    for path in unknown_gets {
        let (s, v) = app.get(&t.key, path).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }
    let (s, v) = app
        .get(
            &t.key,
            &format!("/v1/c/contract/{id}/scheduled_changes/Chg_nope"),
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    for path in [
        "/v1/c/contract/Cont_nope/activate".to_string(),
        "/v1/c/invoice/Inv_nope/pay".to_string(),
        "/v1/c/invoice/Inv_nope/void".to_string(),
        "/v1/c/webhook/Whk_nope".to_string(),
        "/v1/c/webhook/Whk_nope/deliveries/Dlv_nope/retry".to_string(),
        format!("/v1/c/contract/{id}/scheduled_changes/Chg_nope/cancel"),
        "/billwerk/api/v1/Orders/Ord_nope/commit".to_string(),
        format!("/salesbricks/api/v1/subscriptions/{id}/upgrade/Ord_nope/start"),
        format!("/salesbricks/api/v1/subscriptions/{id}/upgrade/Ord_nope/estimate"),
    ] {
        let (s, v) = app.post(&t.key, &path, "{}").await;
        assert_eq!(
            (s, v["code"].as_str()),
            (404, Some("not_found")),
            "{path}: {v}"
        );
    }
    // A query parameter of the wrong type, an unknown path, a wrong method.
    let (s, v) = app.get(&t.key, "/v1/c/invoice?limit=many").await;
    assert_eq!(
        (s, v["code"].as_str(), v["param"].as_str()),
        (422, Some("invalid_query"), Some("limit"))
    );
    let (s, v) = app.get(&t.key, "/v1/c/nothing").await;
    assert_eq!((s, v["code"].as_str()), (404, Some("no_such_endpoint")));
    let r = app
        .client
        .delete(format!("{}/v1/c/contract/{id}", app.base))
        .header("wb-key", &t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    // Activating an active contract, paying a void invoice: refused, named.
    let (s, v) = app
        .post(&t.key, &format!("/v1/c/contract/{id}/activate"), "{}")
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("invalid_contract_state")),
        "{v}"
    );
    let (_, page) = app.get(&t.key, "/v1/c/invoice").await;
    let inv = page["hits"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(&t.key, &format!("/v1/c/invoice/{inv}/void"), "{}")
        .await;
    assert_eq!(s, 200);
    let (s, v) = app
        .post(&t.key, &format!("/v1/c/invoice/{inv}/pay"), "{}")
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("invalid_invoice_state")),
        "{v}"
    );
}

/// A webhook receiver on port 0: records every request (headers and body) and answers the
/// given statuses in turn, then 200.
async fn receiver(
    statuses: Vec<u16>,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>,
) {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;
    let seen: Seen = Arc::default();
    let answers = Arc::new(Mutex::new(statuses));
    let state = (seen.clone(), answers);
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State((seen, answers)): axum::extract::State<(
                    Seen,
                    Arc<Mutex<Vec<u16>>>,
                )>,
                 headers: axum::http::HeaderMap,
                 body: String| async move {
                    seen.lock().unwrap().push((headers, body));
                    let mut a = answers.lock().unwrap();
                    let code = if a.is_empty() { 200 } else { a.remove(0) };
                    axum::http::StatusCode::from_u16(code).unwrap()
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), seen)
}

/// Polls `check` every 100 ms for up to 15 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..150 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not reached within 15 s");
}

#[tokio::test]
async fn webhooks_are_delivered_signed_logged_and_retried() {
    use base64::Engine;
    use hmac::Mac;
    let app = spawn_app().await;
    let t = app.tenant().await;
    // The receiver fails the first request it gets.
    let (url, seen) = receiver(vec![500]).await;
    let body = json!({"url": url, "event_types": ["v1.invoice.created", "v1.contract.*"],
                      "description": "billing"});
    let (s, hook) = app.post(&t.key, "/v1/c/webhook", &body.to_string()).await;
    assert_eq!(s, 200, "{hook}");
    let hook_id = hook["id"].as_str().unwrap().to_string();
    assert!(hook_id.starts_with("Whk_"));
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    // A second endpoint for other events only gets nothing from a signup.
    let (s, _) = app
        .post(
            &t.key,
            "/v1/c/webhook",
            &json!({"url": url, "event_types": ["v1.contract.trial.ended"]}).to_string(),
        )
        .await;
    assert_eq!(s, 200);
    // A signup makes two events: the contract signed and its invoice.
    let contract = app.signup(&t, "2").await;
    eventually(async || seen.lock().unwrap().len() >= 2).await;
    let requests = seen.lock().unwrap().clone();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut types = Vec::new();
    for (headers, body) in &requests {
        let h = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_string();
        let id = h("webhook-id");
        let ts = h("webhook-timestamp");
        // HMAC-SHA256 over "{id}.{timestamp}.{body}" with the secret's bytes, base64, "v1,".
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{ts}.{body}").as_bytes());
        let expected = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(h("webhook-signature"), expected);
        assert_eq!(h("content-type"), "application/json");
        let payload: Value = serde_json::from_str(body).unwrap();
        assert_eq!(payload["id"].as_str(), Some(id.as_str()));
        assert_eq!(payload["contract_id"].as_str(), Some(contract.as_str()));
        types.push(payload["type"].as_str().unwrap().to_string());
    }
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        ["v1.contract.signature.completed", "v1.invoice.created"]
    );
    // The log: one delivered at once, one failed with 500 and waiting for its next attempt.
    let log = format!("/v1/c/webhook/{hook_id}/deliveries");
    let (s, page) = app.get(&t.key, &log).await;
    assert_eq!((s, page["total"].as_u64()), (200, Some(2)), "{page}");
    let hits = page["hits"].as_array().unwrap();
    let failed = hits
        .iter()
        .find(|d| d["last_status_code"] == 500)
        .expect("the first request was answered 500");
    assert_eq!(failed["status"], "pending");
    assert_eq!(failed["attempts"], 1);
    assert!(failed["next_attempt_at"].is_string());
    assert!(
        hits.iter()
            .any(|d| d["status"] == "delivered" && d["attempts"] == 1)
    );
    // Sent again on request: delivered on the second attempt, with the same message id.
    let failed_id = failed["id"].as_str().unwrap().to_string();
    let (s, v) = app
        .post(&t.key, &format!("{log}/{failed_id}/retry"), "{}")
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("pending")), "{v}");
    eventually(async || {
        let (_, page) = app.get(&t.key, &log).await;
        page["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["status"] == "delivered")
    })
    .await;
    let (_, page) = app.get(&t.key, &log).await;
    let retried = page["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == failed_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            retried["attempts"].as_u64(),
            retried["last_status_code"].as_u64()
        ),
        (Some(2), Some(200))
    );
    let ids: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3, "two events, one sent twice: {ids:?}");
    assert!(ids.iter().filter(|i| **i == retried["event_id"]).count() == 2);
    // Updating, disabling, rotating the secret and deleting.
    let (s, v) = app
        .post(
            &t.key,
            &format!("/v1/c/webhook/{hook_id}"),
            r#"{"enabled": false, "rotate_secret": true}"#,
        )
        .await;
    assert_eq!((s, v["enabled"].as_bool()), (200, Some(false)));
    assert_ne!(v["secret"].as_str(), Some(secret.as_str()));
    app.signup(&t, "3").await;
    let (_, page) = app.get(&t.key, &log).await;
    assert_eq!(
        page["total"], 2,
        "a disabled endpoint gets no new deliveries"
    );
    let (_, list) = app.get(&t.key, "/v1/c/webhook").await;
    assert_eq!(list["total"], 2);
    assert_eq!(
        app.delete(&t.key, &format!("/v1/c/webhook/{hook_id}"))
            .await,
        200
    );
    let (s, _) = app.get(&t.key, &format!("/v1/c/webhook/{hook_id}")).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn customer_and_payment_events_reach_webhooks() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let (url, seen) = receiver(vec![]).await;
    let body = json!({"url": url, "event_types": ["v1.customer.*", "v1.payment.succeeded"]});
    let (s, _) = app.post(&t.key, "/v1/c/webhook", &body.to_string()).await;
    assert_eq!(s, 200);
    // A customer created, then updated: one event each, naming the customer.
    let (s, id) = app
        .post(&t.key, "/v1/c/customer", r#"{"name": "Globex"}"#)
        .await;
    assert_eq!(s, 200, "{id}");
    let id = id.as_str().unwrap().to_string();
    let update = json!({"id": id, "notes": "key account"}).to_string();
    let (s, _) = app.post(&t.key, "/v1/c/customer", &update).await;
    assert_eq!(s, 200);
    // A signup on `acme` for the full March period (platform 10.00 + 4 seats x 5.00 = 30.00,
    // no tax in this catalog), paid: one payment event for that amount; the signup's own
    // events are not subscribed to, and `acme` came from the catalog before the endpoint.
    let contract = app.signup(&t, "4").await;
    let (_, page) = app
        .get(&t.key, &format!("/v1/c/contract/{contract}/invoices"))
        .await;
    let invoice = page["hits"][0]["id"].as_str().unwrap().to_string();
    let (s, paid) = app
        .post(&t.key, &format!("/v1/c/invoice/{invoice}/pay"), "{}")
        .await;
    assert_eq!(s, 200, "{paid}");
    eventually(async || seen.lock().unwrap().len() >= 3).await;
    let payloads: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    let find = |kind: &str| {
        payloads
            .iter()
            .find(|p| p["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {payloads:?}"))
            .clone()
    };
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    for kind in ["v1.customer.created", "v1.customer.updated"] {
        let p = find(kind);
        assert_eq!(p["data"]["customer_id"], id.as_str());
        assert_eq!(p["contract_id"], Value::Null);
    }
    let p = find("v1.payment.succeeded");
    assert_eq!(p["data"]["invoice_id"], invoice.as_str());
    assert_eq!(p["data"]["amount"], paid["amount_due"]);
    assert_eq!(p["data"]["amount"], "30.00");
    assert_eq!(p["contract_id"], contract.as_str());
}

/// A payment provider reports its attempts on an open invoice: each is an event for webhooks
/// (`started`, every `failed` try, `succeeded`), only success pays the invoice, and a paid
/// invoice takes no further attempt.
#[tokio::test]
async fn payment_attempts_are_reported_as_events() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let (url, seen) = receiver(vec![]).await;
    let body = json!({"url": url, "event_types": ["v1.payment.*"]});
    let (s, _) = app.post(&t.key, "/v1/c/webhook", &body.to_string()).await;
    assert_eq!(s, 200);
    // The full March period on `acme`: platform 10.00 + 4 seats x 5.00 = 30.00 due.
    let contract = app.signup(&t, "4").await;
    let (_, page) = app
        .get(&t.key, &format!("/v1/c/contract/{contract}/invoices"))
        .await;
    let invoice = page["hits"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/v1/c/invoice/{invoice}/payment");
    let report = |body: Value| {
        let (app, key, path) = (&app, t.key.clone(), path.clone());
        async move { app.post(&key, &path, &body.to_string()).await }
    };
    let (s, v) =
        report(json!({"outcome": "started", "provider": "stripe", "reference": "pi_1"})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("open")), "{v}");
    let (s, v) = report(
        json!({"outcome": "failed", "reference": "pi_1", "failure_reason": "card_declined"}),
    )
    .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("open")), "{v}");
    // Refused: a failure reason on a success, an unknown outcome, an unknown invoice.
    let (s, v) = report(json!({"outcome": "succeeded", "failure_reason": "none"})).await;
    assert_eq!(
        (s, v["code"].as_str(), v["param"].as_str()),
        (422, Some("invalid_value"), Some("failure_reason")),
        "{v}"
    );
    let (s, v) = report(json!({"outcome": "refunded"})).await;
    assert_eq!(
        (s, v["code"].as_str(), v["param"].as_str()),
        (422, Some("invalid_body"), Some("outcome")),
        "{v}"
    );
    let (s, v) = app
        .post(
            &t.key,
            "/v1/c/invoice/Inv_nope/payment",
            r#"{"outcome": "started"}"#,
        )
        .await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, v) =
        report(json!({"outcome": "succeeded", "provider": "stripe", "reference": "pi_2"})).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("paid")), "{v}");
    let (s, v) = report(json!({"outcome": "started"})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (422, Some("invalid_invoice_state")),
        "{v}"
    );

    eventually(async || seen.lock().unwrap().len() >= 3).await;
    let payloads: Vec<Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, b)| serde_json::from_str(b).unwrap())
        .collect();
    // Deliveries may arrive in any order: each kind once.
    let find = |kind: &str| {
        let hits: Vec<&Value> = payloads.iter().filter(|p| p["type"] == kind).collect();
        assert_eq!(hits.len(), 1, "{kind} in {payloads:?}");
        hits[0].clone()
    };
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    let (started, failed, succeeded) = (
        find("v1.payment.started"),
        find("v1.payment.failed"),
        find("v1.payment.succeeded"),
    );
    for p in [&started, &failed, &succeeded] {
        assert_eq!(p["data"]["invoice_id"], invoice.as_str());
        assert_eq!(p["data"]["amount"], "30.00");
        assert_eq!(p["data"]["currency"], "usd");
        assert_eq!(p["contract_id"], contract.as_str());
    }
    assert_eq!(started["data"]["provider"], "stripe");
    assert_eq!(failed["data"]["failure_reason"], "card_declined");
    assert_eq!(failed["data"]["reference"], "pi_1");
    assert_eq!(succeeded["data"]["reference"], "pi_2");
    assert_eq!(succeeded["data"].get("failure_reason"), None);
}

#[tokio::test]
async fn webhook_settings_are_checked() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    for (body, code, param) in [
        (r#"{}"#, "missing_field", "url"),
        (r#"{"url": "ftp://example.com"}"#, "invalid_url", "url"),
        (
            r#"{"url": "https://u:p@example.com/"}"#,
            "invalid_url",
            "url",
        ),
        (
            r#"{"url": "https://example.com", "event_types": ["*", "v1.nothing"]}"#,
            "invalid_event_type",
            "event_types[1]",
        ),
        (
            r#"{"url": "https://example.com", "event_types": []}"#,
            "invalid_event_type",
            "event_types[0]",
        ),
    ] {
        let (s, v) = app.post(&t.key, "/v1/c/webhook", body).await;
        assert_eq!(
            (s, v["code"].as_str(), v["param"].as_str()),
            (422, Some(code), Some(param)),
            "{body}: {v}"
        );
    }
    let (s, v) = app
        .post(
            &t.key,
            "/v1/c/webhook",
            r#"{"url": "https://example.com", "colour": "red"}"#,
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (_, list) = app.get(&t.key, "/v1/c/webhook").await;
    assert_eq!(list["total"], 0, "nothing was written");
}
