//! The billwerk dialect end to end: signup and change orders priced when made and carried out
//! once by `commit`, interim billing or not, usage with an order, contracts with phases.

use serde_json::{Value, json};

use super::{App, Tenant, spawn_app};

impl App {
    /// A request with a bearer token, as billwerk's OAuth clients send it.
    async fn bw(&self, t: &Tenant, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/billwerk/api/v1{path}");
        let url = format!("{}{path}", self.base);
        let req = match method {
            "POST" => self.client.post(url).json(&body.unwrap_or(json!({}))),
            _ => self.client.get(url),
        };
        let req = req.header("authorization", format!("Bearer {}", t.key));
        self.answer(method, &path, req).await
    }
}

/// Signs up a new inline customer to `basic` with 3 seats on 2024-03-01; answers the contract.
async fn signed_up(app: &App, t: &Tenant) -> Value {
    let order = json!({"Customer": {"ExternalCustomerId": "bw-1", "CompanyName": "BW GmbH"},
        "Cart": {"PlanVariantId": "basic", "InheritStartDate": false,
                 "ComponentSubscriptions": [{"ComponentId": "seats", "Quantity": 3.0}]}});
    let (s, o) = app.bw(t, "POST", "/Orders", Some(order)).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["Status"], "InProgress");
    assert_eq!(o["OrderType"], "Signup");
    assert_eq!(o["Total"], "25.00"); // platform 10.00 + 3 seats x 5.00
    assert_eq!(o["Currency"], "USD");
    let contract_id = o["ContractId"].as_str().unwrap().to_string();
    // Nothing exists before the commit.
    let (s, _) = app
        .bw(t, "GET", &format!("/Contracts/{contract_id}"), None)
        .await;
    assert_eq!(s, 404);
    let (s, c) = app
        .bw(
            t,
            "POST",
            &format!("/Orders/{}/commit", o["Id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["Id"], json!(contract_id));
    // Read back, it is the contract the commit answered.
    let (s, read) = app
        .bw(t, "GET", &format!("/Contracts/{contract_id}"), None)
        .await;
    assert_eq!((s, &read), (200, &c));
    c
}

#[tokio::test]
async fn billwerk_orders_are_priced_then_committed_once() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let c = signed_up(&app, &t).await;
    let id = c["Id"].as_str().unwrap().to_string();
    assert_eq!(c["LifecycleStatus"], "Active");
    assert_eq!(c["ExternalCustomerId"], "bw-1");
    assert_eq!(c["StartDate"], "2024-03-01T00:00:00Z");
    assert_eq!(c["LastBillingDate"], "2024-03-01T00:00:00Z");
    assert_eq!(c["NextBillingDate"], "2024-04-01T00:00:00Z");
    assert_eq!(c["BilledUntil"], "2024-04-01T00:00:00Z");
    assert_eq!(c["Balance"], "-25.00"); // the signup invoice is owed
    assert!(c["PlanVariantId"].as_str().unwrap().ends_with(":month:usd"));

    app.advance(&t, "2024-03-11T00:00:00Z").await;
    let order = json!({"ContractId": id, "Cart": {"PlanVariantId": "pro"},
                       "ChangeDate": "2024-03-11T00:00:00Z"});
    let (s, preview) = app
        .bw(&t, "POST", "/Orders/preview", Some(order.clone()))
        .await;
    assert_eq!(s, 200, "{preview}");
    let (s, o) = app.bw(&t, "POST", "/Orders", Some(order)).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["OrderType"], "Upgrade");
    // Mar 11 -> Apr 1 is 21 of 31 days; the 3 seats carry over.
    // Credits: platform 10.00 x 21/31 = 6.7742 -> 6.77; seats 15.00 x 21/31 = 10.1613 -> 10.16.
    // Charges: platform 30.00 x 21/31 = 20.3226 -> 20.32; seats 24.00 x 21/31 = 16.2581 -> 16.26.
    // Net 20.32 + 16.26 - 6.77 - 10.16 = 19.65.
    assert_eq!(o["Total"], "19.65");
    assert_eq!(o["TotalGross"], "19.65");
    assert_eq!(o["NextTotalGross"], "54.00"); // 30.00 + 3 x 8.00, no tax
    assert_eq!(preview["Total"], o["Total"]);
    assert_eq!(preview["Id"], Value::Null);

    let path = format!("/Orders/{}/commit", o["Id"].as_str().unwrap());
    let (s, after) = app.bw(&t, "POST", &path, None).await;
    assert_eq!(s, 200, "{after}");
    let phases = after["Phases"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[1]["Type"], "Normal");
    assert_eq!(phases[1]["StartDate"], "2024-03-11T00:00:00Z");
    assert_eq!(after["CurrentPhase"], phases[1]);
    assert_eq!(after["PlanVariantId"], o["PlanVariantId"]);
    assert_eq!(after["Balance"], "-44.65"); // 25.00 + 19.65 owed
    // The commit issued exactly the priced invoice, once, however often it is repeated.
    let (s, again) = app.bw(&t, "POST", &path, None).await;
    assert_eq!((s, &again), (200, &after));
    let (_, invoices) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    assert_eq!(invoices["total"], 2);
    assert_eq!(invoices["hits"][1]["net"], "19.65");
    assert_eq!(invoices["hits"][1]["lines"], o["Invoice"]["lines"]);
    let (s, got) = app
        .bw(
            &t,
            "GET",
            &format!("/Orders/{}", o["Id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(got["Status"], "Completed");
}

#[tokio::test]
async fn billwerk_component_changes_wait_for_the_next_billing_unless_interim() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let c = signed_up(&app, &t).await;
    let id = c["Id"].as_str().unwrap().to_string();
    app.advance(&t, "2024-03-11T00:00:00Z").await;
    // Lower-case paths work as well.
    let order = json!({"ContractId": id, "TriggerInterimBilling": false,
        "Cart": {"ComponentSubscriptions": [{"ComponentId": "seats", "Quantity": 5}],
                 "MeteredUsages": [{"ComponentId": "api_calls", "Quantity": 1000, "DueDate": "2024-03-05T00:00:00Z", "Key": "k-1"}]}});
    let (s, o) = app.bw(&t, "POST", "/orders", Some(order)).await;
    assert_eq!(s, 200, "{o}");
    assert_eq!(o["Total"], "0.00"); // nothing is billed now
    let (s, _) = app
        .bw(
            &t,
            "POST",
            &format!("/orders/{}/commit", o["Id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, invoices) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    assert_eq!(invoices["total"], 1, "no interim invoice");

    app.advance(&t, "2024-04-01T00:00:00Z").await;
    let (_, invoices) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    assert_eq!(invoices["total"], 2);
    // The Apr 1 invoice carries the change of Mar 11 (21 of 31 days): seats credit
    // 15.00 x 21/31 = 10.1613 -> -10.16 and charge 25.00 x 21/31 = 16.9355 -> 16.94; then April
    // in advance, platform 10.00 + 5 seats x 5.00 = 35.00; then March's usage, 1000 x 0.001 = 1.00.
    // Net -10.16 + 16.94 + 35.00 + 1.00 = 42.78.
    assert_eq!(invoices["hits"][1]["net"], "42.78");

    // A usage-only order records its usage once.
    let order = json!({"ContractId": id, "Cart": {"MeteredUsages": [{"ComponentId": "api_calls", "Quantity": 500}]}});
    let (s, o) = app.bw(&t, "POST", "/Orders", Some(order)).await;
    assert_eq!(s, 200, "{o}");
    let path = format!("/Orders/{}/commit", o["Id"].as_str().unwrap());
    assert_eq!(app.bw(&t, "POST", &path, None).await.0, 200);
    assert_eq!(app.bw(&t, "POST", &path, None).await.0, 200);
    app.advance(&t, "2024-05-01T00:00:00Z").await;
    let (_, invoices) = app
        .get(&t.key, &format!("/v1/c/contract/{id}/invoices"))
        .await;
    // May 1: 35.00 in advance + April's usage 500 x 0.001 = 0.50 (recorded once).
    assert_eq!(invoices["hits"][2]["net"], "35.50");
}

#[tokio::test]
async fn billwerk_refuses_what_it_cannot_do_and_hides_other_tenants() {
    let app = spawn_app().await;
    let t = app.tenant().await;
    let c = signed_up(&app, &t).await;
    let id = c["Id"].as_str().unwrap().to_string();
    let cases = [
        (
            json!({"ContractId": id, "Cart": {"RatedItems": [{"Quantity": 1}]}}),
            422,
            "rated_items_not_supported",
            "Cart.RatedItems",
        ),
        (
            json!({"ContractId": id, "Cart": {"ComponentSubscriptions": [{"ComponentId": "nope", "Quantity": 1}]}}),
            404,
            "not_found",
            "Cart.ComponentSubscriptions[0].ComponentId",
        ),
        (
            json!({"ContractId": id, "Cart": {"ComponentSubscriptions": [{"ComponentId": "seats", "Quantity": -1}]}}),
            422,
            "negative_value",
            "Cart.ComponentSubscriptions[0].Quantity",
        ),
        (
            json!({"ContractId": id, "Cart": {"PlanVariantId": "pro", "Quantity": 2}}),
            422,
            "invalid_value",
            "Cart.Quantity",
        ),
        (
            json!({"ContractId": id, "Cart": {"PlanVariantId": "pro:year"}}),
            422,
            "not_sold",
            "Cart.PlanVariantId",
        ),
        (
            json!({"ContractId": id, "Cart": {}}),
            422,
            "empty_order",
            "Cart",
        ),
        (
            json!({"ContractId": "Cont_nope", "Cart": {"PlanVariantId": "pro"}}),
            404,
            "not_found",
            "ContractId",
        ),
        (
            json!({"Cart": {"PlanVariantId": "basic"}}),
            422,
            "missing_field",
            "CustomerId",
        ),
        (
            json!({"CustomerId": "acme", "Cart": {}}),
            422,
            "missing_field",
            "Cart.PlanVariantId",
        ),
        (
            json!({"ContractId": id, "Cart": {"PlanVariantId": "pro"}, "ChangeDate": "2024-02-01T00:00:00Z"}),
            422,
            "",
            "",
        ),
        (
            json!({"ContractId": id, "Cart": {}, "Bogus": 1}),
            422,
            "invalid_body",
            "Bogus",
        ),
    ];
    for (body, status, code, param) in cases {
        let (s, e) = app.bw(&t, "POST", "/Orders", Some(body.clone())).await;
        assert_eq!(s, status, "{body}: {e}");
        if !code.is_empty() {
            assert_eq!(e["code"], code, "{body}: {e}");
            assert_eq!(e["param"], param, "{body}: {e}");
        }
    }
    let (s, o) = app
        .bw(
            &t,
            "POST",
            "/Orders",
            Some(json!({"ContractId": id, "Cart": {"PlanVariantId": "pro"}})),
        )
        .await;
    assert_eq!(s, 200, "{o}");
    let order_id = o["Id"].as_str().unwrap();
    let other = app.tenant().await;
    for path in [format!("/Contracts/{id}"), format!("/Orders/{order_id}")] {
        assert_eq!(app.bw(&other, "GET", &path, None).await.0, 404, "{path}");
    }
    let (s, _) = app
        .bw(&other, "POST", &format!("/Orders/{order_id}/commit"), None)
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .bw(
            &other,
            "POST",
            "/Orders",
            Some(json!({"ContractId": id, "Cart": {"PlanVariantId": "pro"}})),
        )
        .await;
    assert_eq!(s, 404);
}
