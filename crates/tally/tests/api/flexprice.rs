//! The Flexprice dialect end to end: customers, subscriptions, change preview equal to the
//! executed change, invoices, and its refusals.

use serde_json::{Value, json};

use super::{App, Tenant, spawn_app};

impl App {
    /// A request with Flexprice's `x-api-key` header.
    async fn fp(&self, t: &Tenant, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/flexprice/v1{path}");
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.client.post(url).json(&body.unwrap_or(Value::Null)),
            _ => self.client.get(url),
        };
        let req = req.header("x-api-key", &t.key);
        self.answer(method, &path, req).await
    }
}

fn change(plan: &str, period: &str) -> Value {
    json!({"target_plan_id": plan, "proration_behavior": "create_prorations",
           "billing_cadence": "RECURRING", "billing_period": period, "billing_cycle": "anniversary"})
}

fn line_amounts(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_str().unwrap().to_string())
        .collect()
}

/// Subscribes a new Flexprice customer to `basic` with 4 seats on 2024-03-01.
async fn subscribed(app: &App, t: &Tenant) -> String {
    let (s, c) = app
        .fp(
            t,
            "POST",
            "/customers",
            Some(json!({"external_id": "fp-1", "name": "FP One", "email": "a@fp.example"})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["external_id"], "fp-1");
    // Read back by its external id, it is the customer just created.
    let (s, read) = app.fp(t, "GET", "/customers/fp-1", None).await;
    assert_eq!((s, &read), (200, &c));
    let body = json!({"external_customer_id": "fp-1", "plan_id": "basic", "currency": "USD",
        "billing_period": "MONTHLY", "billing_cycle": "anniversary",
        "override_line_items": [{"price_id": "seats", "quantity": "4"}]});
    let (s, sub) = app.fp(t, "POST", "/subscriptions", Some(body)).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(sub["subscription_status"], "active");
    assert_eq!(sub["billing_period"], "MONTHLY");
    assert_eq!(sub["current_period_start"], "2024-03-01T00:00:00Z");
    assert_eq!(sub["current_period_end"], "2024-04-01T00:00:00Z");
    assert_eq!(sub["customer_id"], c["id"]);
    sub["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn flexprice_preview_equals_the_executed_change() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = subscribed(&app, &t).await;
    app.advance(&t, "2024-03-15T00:00:00Z").await;

    let (s, p) = app
        .fp(
            &t,
            "POST",
            &format!("/subscriptions/{id}/change/preview"),
            Some(change("pro", "MONTHLY")),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["change_type"], "upgrade");
    assert_eq!(p["target_plan"]["lookup_key"], "pro");
    // Mar 15 -> Apr 1 is 17 of March's 31 days.
    // Credits: platform 10.00 x 17/31 = 5.4839 -> 5.48; seats 4 x 5.00 x 17/31 = 10.9677 -> 10.97.
    // Charges: platform 30.00 x 17/31 = 16.4516 -> 16.45; seats 4 x 8.00 x 17/31 = 17.5484 -> 17.55.
    let d = &p["proration_details"];
    assert_eq!(d["credit_amount"], "16.45"); // 5.48 + 10.97
    assert_eq!(d["charge_amount"], "34.00"); // 16.45 + 17.55
    assert_eq!(d["net_amount"], "17.55"); // 34.00 - 16.45
    assert_eq!(d["days_used"], 14);
    assert_eq!(d["days_remaining"], 17);
    assert_eq!(
        line_amounts(&p["next_invoice_preview"]["line_items"]),
        ["-5.48", "-10.97", "16.45", "17.55"]
    );
    assert_eq!(p["next_invoice_preview"]["total"], "17.55");
    assert_eq!(p["effective_date"], "2024-03-15T00:00:00Z");
    // The preview changed nothing.
    let (_, page) = app
        .fp(&t, "GET", &format!("/invoices?subscription_id={id}"), None)
        .await;
    assert_eq!(page["pagination"]["total"], 1);
    assert_eq!(page["items"][0]["billing_reason"], "SUBSCRIPTION_CREATE");
    assert_eq!(page["items"][0]["total"], "30.00"); // 10.00 + 4 x 5.00

    let (s, x) = app
        .fp(
            &t,
            "POST",
            &format!("/subscriptions/{id}/change/execute"),
            Some(change("pro", "MONTHLY")),
        )
        .await;
    assert_eq!(s, 200, "{x}");
    assert_eq!(x["is_scheduled"], false);
    assert_eq!(x["old_subscription"]["id"], json!(id));
    assert_eq!(x["new_subscription"]["id"], json!(id));
    assert_eq!(x["invoice"]["total"], p["next_invoice_preview"]["total"]);
    assert_eq!(
        line_amounts(&x["invoice"]["line_items"]),
        line_amounts(&p["next_invoice_preview"]["line_items"])
    );
    assert_eq!(x["invoice"]["billing_reason"], "SUBSCRIPTION_UPDATE");
    assert_eq!(x["proration_applied"], p["proration_details"]);

    let (_, sub) = app
        .fp(&t, "GET", &format!("/subscriptions/{id}"), None)
        .await;
    assert_eq!(sub["plan"]["lookup_key"], "pro");
    assert_eq!(sub["current_period_end"], "2024-04-01T00:00:00Z");
    let seats = sub["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["price_id"] == "seats")
        .unwrap();
    assert_eq!(seats["quantity"], "4");
    let (_, page) = app.fp(&t, "GET", "/invoices?customer_id=fp-1", None).await;
    assert_eq!(page["pagination"]["total"], 2);
    let inv_id = x["invoice"]["id"].as_str().unwrap();
    let (s, inv) = app
        .fp(&t, "GET", &format!("/invoices/{inv_id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(inv["amount_due"], "17.55");
    assert_eq!(inv["payment_status"], "PENDING");
}

#[tokio::test]
async fn flexprice_schedules_a_change_at_the_period_end_and_refuses_what_it_cannot_do() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = subscribed(&app, &t).await;
    let mut body = change("pro", "MONTHLY");
    body["change_at"] = json!("end_of_period");
    let (s, x) = app
        .fp(
            &t,
            "POST",
            &format!("/subscriptions/{id}/change/execute"),
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{x}");
    assert_eq!(x["is_scheduled"], true);
    assert_eq!(x["scheduled_at"], "2024-04-01T00:00:00Z");
    assert_eq!(x["invoice"], Value::Null);
    assert!(x["schedule_id"].is_string());

    let refusals = [
        (
            change("basic", "MONTHLY"),
            422,
            "same_plan",
            "target_plan_id",
        ),
        (
            change("pro", "HALF_YEARLY"),
            422,
            "unsupported_billing_period",
            "billing_period",
        ),
        (
            change("gold", "MONTHLY"),
            404,
            "not_found",
            "target_plan_id",
        ),
        (json!({"target_plan_id": "pro"}), 422, "invalid_body", ""),
        (
            {
                let mut b = change("pro", "MONTHLY");
                b["phases"] = json!([]);
                b
            },
            422,
            "invalid_body",
            "phases",
        ),
        (
            {
                let mut b = change("pro", "MONTHLY");
                b["billing_period_count"] = json!(-1);
                b
            },
            422,
            "invalid_value",
            "billing_period_count",
        ),
    ];
    for (body, status, code, param) in refusals {
        let (s, e) = app
            .fp(
                &t,
                "POST",
                &format!("/subscriptions/{id}/change/preview"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, status, "{body}: {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
        if !param.is_empty() {
            assert_eq!(e["param"], param, "{body}: {e}");
        }
    }
    let (s, e) = app
        .fp(
            &t,
            "POST",
            "/customers",
            Some(json!({"external_id": "fp-1", "name": "Again"})),
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (409, Some("already_exists")));
    let (s, _) = app
        .fp(&t, "POST", "/subscriptions", Some(json!({"customer_id": "nobody", "plan_id": "basic", "currency": "usd", "billing_period": "MONTHLY"})))
        .await;
    assert_eq!(s, 404);

    // Another tenant's key sees nothing of this one.
    let other = app.tenant().await;
    let (s, _) = app
        .fp(&other, "GET", &format!("/subscriptions/{id}"), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .fp(
            &other,
            "POST",
            &format!("/subscriptions/{id}/change/preview"),
            Some(change("pro", "MONTHLY")),
        )
        .await;
    assert_eq!(s, 404);
    let (_, page) = app.fp(&other, "GET", "/invoices", None).await;
    assert_eq!(page["pagination"]["total"], 0);
}

#[tokio::test]
async fn flexprice_calendar_subscriptions_start_with_a_prorated_stub() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    app.advance(&t, "2024-03-16T00:00:00Z").await;
    let body = json!({"customer_id": "acme", "plan_id": "basic", "currency": "usd",
        "billing_period": "MONTHLY", "billing_cycle": "calendar"});
    let (s, sub) = app.fp(&t, "POST", "/subscriptions", Some(body)).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(sub["billing_cycle"], "calendar");
    assert_eq!(sub["billing_anchor"], "2024-03-01T00:00:00Z");
    assert_eq!(sub["current_period_end"], "2024-04-01T00:00:00Z");
    let id = sub["id"].as_str().unwrap();
    let (_, page) = app
        .fp(&t, "GET", &format!("/invoices?subscription_id={id}"), None)
        .await;
    // Mar 16 -> Apr 1 is 16 of 31 days: platform 10.00 x 16/31 = 5.1613 -> 5.16.
    assert_eq!(page["items"][0]["total"], "5.16");
}
