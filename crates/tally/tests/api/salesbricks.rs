//! The Salesbricks dialect end to end: upgrade orders created, listed, updated, estimated,
//! started once or deleted, cross-plan estimates, refusals and tenant isolation.

use serde_json::{Value, json};

use super::{App, Tenant, spawn_app};

impl App {
    /// A request with Salesbricks' key header (and its idempotency header when given).
    async fn sb(
        &self,
        t: &Tenant,
        method: &str,
        path: &str,
        body: Option<Value>,
        idem: Option<&str>,
    ) -> (u16, Value) {
        let path = format!("/salesbricks/api/v1{path}");
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.client.post(url).json(&body.unwrap_or(json!({}))),
            "PATCH" => self.client.patch(url).json(&body.unwrap_or(json!({}))),
            "DELETE" => self.client.delete(url),
            _ => self.client.get(url),
        };
        let mut req = req.header("x-salesbricks-key", &t.key);
        if let Some(k) = idem {
            req = req.header("x-salesbricks-idempotent-operation-key", k);
        }
        self.answer(method, &path, req).await
    }
}

async fn at_mid_march(app: &App, t: &Tenant) -> String {
    let id = app.signup(t, "4").await;
    app.advance(t, "2024-03-15T00:00:00Z").await;
    id
}

#[tokio::test]
async fn salesbricks_upgrade_orders_are_estimated_then_started_once() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = at_mid_march(&app, &t).await;
    let body = json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "seats", "quantity": 10}],
                      "metadata": {"deal": "q1", "_private": "x"}});
    let (s, o) = app
        .sb(
            &t,
            "POST",
            &format!("/subscriptions/{id}/upgrade"),
            Some(body.clone()),
            Some("k-1"),
        )
        .await;
    assert_eq!(s, 200, "{o}");
    // Replaying the same key answers the same order.
    let (_, replay) = app
        .sb(
            &t,
            "POST",
            &format!("/subscriptions/{id}/upgrade"),
            Some(body),
            Some("k-1"),
        )
        .await;
    assert_eq!(replay, o);
    assert_eq!(o["order_type"], "UPGRADE");
    assert_eq!(o["starts_at"], "2024-03-15");
    assert_eq!(o["metadata"], json!({"deal": "q1"}));
    // 17 of March's 31 days remain, at the recorded prices: seats credit 4 x 5.00 x 17/31 =
    // 10.9677 -> 10.97, charge 10 x 5.00 x 17/31 = 27.4194 -> 27.42; the platform fee is
    // credited and charged alike (5.48). Net 27.42 - 10.97 = 16.45.
    assert_eq!(o["contract_value"], "16.45 USD");
    let order_id = o["order_id"].as_str().unwrap().to_string();
    let (_, list) = app
        .sb(
            &t,
            "GET",
            &format!("/subscriptions/{id}/upgrade"),
            None,
            None,
        )
        .await;
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);

    // Now 8 seats: charge 8 x 5.00 x 17/31 = 21.9355 -> 21.94; net 21.94 - 10.97 = 10.97.
    let (s, v) = app
        .sb(
            &t,
            "PATCH",
            &format!("/subscriptions/{id}/upgrade/{order_id}"),
            Some(json!({"bricks": [{"brick_id": "seats", "quantity": 8}]})),
            None,
        )
        .await;
    assert_eq!((s, &v["subscription_id"]), (200, &json!(id)), "{v}");
    let (s, est) = app
        .sb(
            &t,
            "POST",
            &format!("/subscriptions/{id}/upgrade/{order_id}/estimate"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200, "{est}");
    assert_eq!(est["sub_total"], "10.97");
    assert_eq!(est["grand_total"], "10.97");
    assert_eq!(est["ends_at"], "2024-04-01");
    let seats = est["line_items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["brick_name"] == "seats")
        .unwrap();
    assert_eq!(seats["sub_total"], "10.97");
    // Next period: 10.00 + 8 x 5.00 = 50.00.
    assert_eq!(est["billing_schedule"][1]["starts_at"], "2024-04-01");
    assert_eq!(est["billing_schedule"][1]["sub_total"], "50.00");
    let (_, by_body) = app
        .sb(&t, "POST", &format!("/subscriptions/{id}/upgrade/estimate"),
            Some(json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "seats", "quantity": 8}]})), None)
        .await;
    assert_eq!(by_body["invoice"]["lines"], est["invoice"]["lines"]);
    assert_eq!(by_body["invoice"]["gross"], est["invoice"]["gross"]);

    let start = format!("/subscriptions/{id}/upgrade/{order_id}/start?charge_immediately=yes");
    let (s, v) = app.sb(&t, "POST", &start, None, None).await;
    assert_eq!((s, &v), (200, &json!({"subscription_id": id})));
    let (s, _) = app.sb(&t, "POST", &start, None, None).await;
    assert_eq!(s, 200, "starting again answers the same");
    let (_, invoices) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    assert_eq!(invoices["total"], 2, "started once");
    assert_eq!(invoices["hits"][1]["lines"], est["invoice"]["lines"]);
    let (_, list) = app
        .sb(
            &t,
            "GET",
            &format!("/subscriptions/{id}/upgrade"),
            None,
            None,
        )
        .await;
    assert!(list["orders"].as_array().unwrap().is_empty());
    let (_, sub) = app
        .sb(&t, "GET", &format!("/subscriptions/{id}"), None, None)
        .await;
    assert_eq!(sub["renews_at"], "2024-04-01");
    assert_eq!(sub["billing_frequency"], "MONTHLY");
    assert_eq!(sub["sub_total"], "50.00");
    // A started order cannot be changed or deleted.
    let (s, e) = app
        .sb(
            &t,
            "DELETE",
            &format!("/subscriptions/{id}/upgrade/{order_id}"),
            None,
            None,
        )
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("order_closed")));
}

#[tokio::test]
async fn salesbricks_prices_cross_plan_upgrades_and_refuses_what_it_cannot_do() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let id = at_mid_march(&app, &t).await;
    // To pro's latest pricing with 10 seats, 17 of 31 days: credits platform 10.00 x 17/31 =
    // 5.4839 -> 5.48 and seats 20.00 x 17/31 = 10.9677 -> 10.97; charges platform 30.00 x 17/31
    // = 16.4516 -> 16.45 and seats 10 x 8.00 x 17/31 = 43.8710 -> 43.87.
    // Net 16.45 + 43.87 - 5.48 - 10.97 = 43.87.
    let (s, est) = app
        .sb(&t, "POST", &format!("/subscriptions/{id}/upgrade/estimate"),
            Some(json!({"starts_at": "2024-03-15", "plan_id": "pro", "bricks": [{"brick_id": "seats", "quantity": 10}]})), None)
        .await;
    assert_eq!(s, 200, "{est}");
    assert_eq!(est["grand_total"], "43.87");

    let path = format!("/subscriptions/{id}/upgrade");
    let cases = [
        (
            json!({"starts_at": "2024-03-15", "plan_id": "pro", "bricks": []}),
            400,
            "bricks_required",
            "bricks",
        ),
        (
            json!({"starts_at": "soon", "bricks": []}),
            400,
            "invalid_value",
            "starts_at",
        ),
        (
            json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "nope", "quantity": 1}]}),
            404,
            "not_found",
            "bricks[0].brick_id",
        ),
        (
            json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "api_calls", "quantity": 5}]}),
            422,
            "pre_commitment_not_supported",
            "bricks[0].quantity",
        ),
        (
            json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "seats", "quantity": -1}]}),
            400,
            "negative_value",
            "bricks[0].quantity",
        ),
        (
            json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "seats", "quantity": 2, "discount": {"rate": "10"}}]}),
            422,
            "brick_discount_not_supported",
            "bricks[0].discount",
        ),
        (
            json!({"starts_at": "2024-03-15", "plan_id": "gold", "bricks": [{"brick_id": "seats", "quantity": 2}]}),
            404,
            "not_found",
            "plan_id",
        ),
        (json!({"starts_at": "2024-03-15"}), 422, "invalid_body", ""),
    ];
    for (body, status, code, param) in cases {
        let (s, e) = app.sb(&t, "POST", &path, Some(body.clone()), None).await;
        assert_eq!(s, status, "{body}: {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
        if !param.is_empty() {
            assert_eq!(e["param"], param, "{body}: {e}");
        }
    }
    // A date before the current period is refused by the rules.
    let (s, _) = app
        .sb(&t, "POST", &path, Some(json!({"starts_at": "2024-02-01", "bricks": [{"brick_id": "seats", "quantity": 5}]})), None)
        .await;
    assert_eq!(s, 422);

    // A deleted order cannot be started.
    let (_, o) = app
        .sb(&t, "POST", &path, Some(json!({"starts_at": "2024-03-15", "bricks": [{"brick_id": "seats", "quantity": 5}]})), None)
        .await;
    let order_id = o["order_id"].as_str().unwrap();
    let (s, _) = app
        .sb(&t, "DELETE", &format!("{path}/{order_id}"), None, None)
        .await;
    assert_eq!(s, 200);
    let (s, e) = app
        .sb(&t, "POST", &format!("{path}/{order_id}/start"), None, None)
        .await;
    assert_eq!((s, e["code"].as_str()), (422, Some("order_closed")));

    // Another tenant sees nothing.
    let other = app.tenant().await;
    for (m, p) in [
        ("GET", format!("/subscriptions/{id}")),
        ("GET", path.clone()),
        ("POST", format!("{path}/{order_id}/estimate")),
        ("POST", format!("{path}/{order_id}/start")),
        ("DELETE", format!("{path}/{order_id}")),
    ] {
        let (s, _) = app.sb(&other, m, &p, None, None).await;
        assert_eq!(s, 404, "{m} {p}");
    }
}
