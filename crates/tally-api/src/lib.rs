//! Tally's HTTP layer: the native (Wingback-dialect) API under `/v1/c/`, with `wb-key` auth,
//! problem+json errors, `Idempotency-Key` replay, health and metrics. Handlers are thin: they
//! parse, call one use case of `tally-app`, and render.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tally_app::Tally;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod dialects;
pub mod dto;
pub mod error;
pub mod extract;
pub mod native;
pub mod webhooks;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The application.
    pub tally: Tally,
    /// Request counters.
    pub metrics: Arc<Metrics>,
    /// The OpenAPI document, rendered once.
    pub openapi: Arc<String>,
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

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready", body = String, content_type = "text/plain"), (status = 503, description = "The database is unreachable", body = String, content_type = "text/plain")))]
async fn readyz(State(s): State<AppState>) -> Response {
    match s.tally.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "database not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response()
        }
    }
}

/// Request counters in Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", body = String, content_type = "text/plain")))]
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

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tally",
        description = "Exact subscription billing. The native API speaks the Wingback dialect: `/v1/c/...`, `wb-key` header, prefixed ids, decimal strings for money, RFC 3339 instants, problem+json errors with a stable `code` and the offending `param`. Every POST accepts an `Idempotency-Key` header."
    ),
    modifiers(&KeyScheme),
    components(schemas(dto::UpgradeActivation, dto::PlanUpgrade, dto::UnitCountUpgrade, dto::BillingDateConfiguration)),
    tags(
        (name = "customer", description = "Customers and their credit balances"),
        (name = "contract", description = "Subscriptions, their changes, previews and timelines"),
        (name = "usage", description = "Metered usage"),
        (name = "invoice", description = "Invoices"),
        (name = "catalog", description = "Features, plans, pricings, discounts; catalog as code"),
        (name = "test_clock", description = "Test-mode time"),
        (name = "webhook", description = "Webhook endpoints, signing secrets and the delivery log"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "billwerk", description = "The billwerk dialect: orders with commit and preview, contracts with phases (docs/dialects.md)"),
        (name = "salesbricks", description = "The Salesbricks dialect: subscription upgrade orders with estimate and start (docs/dialects.md)"),
        (name = "flexprice", description = "The Flexprice dialect: subscriptions with plan-change preview and execute (docs/dialects.md)")
    )
)]
struct ApiDoc;

struct KeyScheme;

impl utoipa::Modify for KeyScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "wb_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("wb-key"))),
        );
        components.add_security_scheme(
            "salesbricks_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-salesbricks-key"))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use native::*;
    let v1 = OpenApiRouter::new()
        .routes(routes!(save_customer))
        .routes(routes!(get_customer))
        .routes(routes!(get_balance))
        .routes(routes!(create_contract, list_contracts))
        .routes(routes!(get_contract))
        .routes(routes!(upgrade))
        .routes(routes!(upgrade_estimate))
        .routes(routes!(activate_contract))
        .routes(routes!(cancel_contract))
        .routes(routes!(contract_history))
        .routes(routes!(contract_invoices))
        .routes(routes!(scheduled_changes))
        .routes(routes!(scheduled_change))
        .routes(routes!(cancel_scheduled))
        .routes(routes!(post_usage))
        .routes(routes!(post_usage_bulk))
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(pay_invoice))
        .routes(routes!(void_invoice))
        .routes(routes!(report_payment))
        .routes(routes!(get_catalog, apply_catalog))
        .routes(routes!(get_clock))
        .routes(routes!(advance_clock))
        .routes(routes!(webhooks::create_webhook, webhooks::list_webhooks))
        .routes(routes!(
            webhooks::get_webhook,
            webhooks::update_webhook,
            webhooks::delete_webhook
        ))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(webhooks::retry_delivery));
    let flexprice = {
        use dialects::flexprice::*;
        OpenApiRouter::new()
            .routes(routes!(create_customer))
            .routes(routes!(get_customer))
            .routes(routes!(create_subscription))
            .routes(routes!(get_subscription))
            .routes(routes!(change_preview))
            .routes(routes!(change_execute))
            .routes(routes!(list_invoices))
            .routes(routes!(get_invoice))
    };
    let billwerk = {
        use dialects::billwerk::*;
        OpenApiRouter::new()
            .routes(routes!(create_order))
            .routes(routes!(preview_order))
            .routes(routes!(get_order))
            .routes(routes!(commit_order))
            .routes(routes!(get_contract))
    };
    let salesbricks = {
        use dialects::salesbricks::*;
        OpenApiRouter::new()
            .routes(routes!(get_subscription))
            .routes(routes!(create_upgrade, list_upgrades))
            .routes(routes!(update_upgrade, delete_upgrade))
            .routes(routes!(estimate_upgrade))
            .routes(routes!(estimate_order))
            .routes(routes!(start_upgrade))
    };
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/v1/c", v1)
        .nest("/salesbricks/api/v1", salesbricks)
        .nest("/flexprice/v1", flexprice)
        .nest("/billwerk/api/v1", billwerk)
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .split_for_parts();
    let mut doc = doc;
    name_dialect_operations(&mut doc);
    declare_links(&mut doc);
    (router, doc)
}

/// The operation of `doc` at `method` and `path`, if there is one.
fn operation_mut<'a>(
    doc: &'a mut utoipa::openapi::OpenApi,
    method: &str,
    path: &str,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "patch" => item.patch.as_mut(),
        "delete" => item.delete.as_mut(),
        _ => None,
    }
}

/// Prefixes the dialects' operation ids with their dialect (`flexprice_get_customer`), so every
/// operation id in the document is unique, as OpenAPI requires.
fn name_dialect_operations(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let Some(dialect) = ["flexprice", "billwerk", "salesbricks"]
            .into_iter()
            .find(|d| path.starts_with(&format!("/{d}/")))
        else {
            continue;
        };
        for op in [
            item.get.as_mut(),
            item.post.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = &mut op.operation_id {
                *id = format!("{dialect}_{id}");
            }
        }
    }
}

/// A link of the document: the operation at `method` and `path` answers an id that the
/// operations `to` take, filling `params` with runtime expressions.
struct DocLink {
    method: &'static str,
    path: &'static str,
    to: &'static [&'static str],
    params: &'static [(&'static str, &'static str)],
}

/// Where an id an answer carries can be used next. Clients and stateful fuzzers follow a
/// resource from its creation through these.
const LINKS: &[DocLink] = &[
    DocLink {
        method: "post",
        path: "/v1/c/customer",
        to: &["get_customer", "get_balance"],
        params: &[("id", "$response.body")],
    },
    DocLink {
        method: "post",
        path: "/v1/c/contract",
        to: &[
            "get_contract",
            "upgrade",
            "upgrade_estimate",
            "activate_contract",
            "cancel_contract",
            "contract_history",
            "contract_invoices",
            "scheduled_changes",
            "billwerk_get_contract",
            "salesbricks_get_subscription",
            "salesbricks_create_upgrade",
            "salesbricks_list_upgrades",
            "salesbricks_estimate_upgrade",
        ],
        params: &[("id", "$response.body")],
    },
    DocLink {
        method: "post",
        path: "/v1/c/contract/{id}/upgrade",
        to: &["get_contract", "scheduled_changes", "contract_invoices"],
        params: &[("id", "$response.body")],
    },
    DocLink {
        method: "get",
        path: "/v1/c/contract/{id}/scheduled_changes",
        to: &["scheduled_change", "cancel_scheduled"],
        params: &[
            ("id", "$request.path.id"),
            ("change_id", "$response.body#/0/id"),
        ],
    },
    DocLink {
        method: "get",
        path: "/v1/c/webhook/{id}/deliveries",
        to: &["retry_delivery"],
        params: &[
            ("id", "$request.path.id"),
            ("delivery_id", "$response.body#/hits/0/id"),
        ],
    },
    DocLink {
        method: "get",
        path: "/v1/c/invoice",
        to: &[
            "get_invoice",
            "pay_invoice",
            "void_invoice",
            "report_payment",
        ],
        params: &[("id", "$response.body#/hits/0/id")],
    },
    DocLink {
        method: "get",
        path: "/v1/c/contract/{id}/invoices",
        to: &[
            "get_invoice",
            "pay_invoice",
            "void_invoice",
            "report_payment",
        ],
        params: &[("id", "$response.body#/hits/0/id")],
    },
    DocLink {
        method: "post",
        path: "/v1/c/webhook",
        to: &[
            "get_webhook",
            "update_webhook",
            "delete_webhook",
            "list_deliveries",
        ],
        params: &[("id", "$response.body#/id")],
    },
    DocLink {
        method: "post",
        path: "/flexprice/v1/customers",
        to: &["flexprice_get_customer"],
        params: &[("id", "$response.body#/id")],
    },
    DocLink {
        method: "post",
        path: "/flexprice/v1/subscriptions",
        to: &[
            "flexprice_get_subscription",
            "flexprice_change_preview",
            "flexprice_change_execute",
        ],
        params: &[("id", "$response.body#/id")],
    },
    DocLink {
        method: "get",
        path: "/flexprice/v1/invoices",
        to: &["flexprice_get_invoice"],
        params: &[("id", "$response.body#/items/0/id")],
    },
    DocLink {
        method: "post",
        path: "/billwerk/api/v1/Orders",
        to: &["billwerk_get_order", "billwerk_commit_order"],
        params: &[("id", "$response.body#/Id")],
    },
    DocLink {
        method: "post",
        path: "/salesbricks/api/v1/subscriptions/{id}/upgrade",
        to: &[
            "salesbricks_update_upgrade",
            "salesbricks_delete_upgrade",
            "salesbricks_estimate_order",
            "salesbricks_start_upgrade",
        ],
        params: &[
            ("id", "$request.path.id"),
            ("order_id", "$response.body#/order_id"),
        ],
    },
];

/// Adds [`LINKS`] to the success answers (`200` or `201`) of `doc`.
fn declare_links(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    use utoipa::openapi::link::LinkBuilder;
    for DocLink {
        method,
        path,
        to: targets,
        params,
    } in LINKS
    {
        let Some(op) = operation_mut(doc, method, path) else {
            continue;
        };
        let responses = &mut op.responses.responses;
        let code = if responses.contains_key("200") {
            "200"
        } else {
            "201"
        };
        let Some(RefOr::T(answer)) = responses.get_mut(code) else {
            continue;
        };
        for target in *targets {
            let mut link = params
                .iter()
                .fold(LinkBuilder::new(), |l, (k, v)| l.parameter(*k, *v))
                .build();
            // utoipa 5 writes a link's `operation_id` field as is; OpenAPI spells it
            // `operationId`, so it goes in through the link's free-form fields.
            link.extensions = Some([("operationId", *target)].into_iter().collect());
            answer.links.insert((*target).to_string(), RefOr::T(link));
        }
    }
}

/// The OpenAPI 3.1 document of every endpoint, generated from the routes.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().1
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        s.openapi.as_ref().clone(),
    )
        .into_response()
}

/// The whole HTTP router over an application.
pub fn router(tally: Tally) -> Router {
    let (routes, doc) = documented();
    let state = AppState {
        tally,
        metrics: Arc::new(Metrics::default()),
        openapi: Arc::new(doc.to_pretty_json().unwrap_or_default()),
    };
    // billwerk's own material writes its resources in lower case too; both spellings work.
    let routes = {
        use axum::routing::{get, post};
        use dialects::billwerk::*;
        routes
            .route("/billwerk/api/v1/orders", post(create_order))
            .route("/billwerk/api/v1/orders/preview", post(preview_order))
            .route("/billwerk/api/v1/orders/{id}", get(get_order))
            .route("/billwerk/api/v1/orders/{id}/commit", post(commit_order))
            .route("/billwerk/api/v1/contracts/{id}", get(get_contract))
    };
    routes
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            extract::idempotency,
        ))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// The committed document is the one the routes generate: regenerate it with
    /// `cargo run -- openapi > docs/openapi.json`.
    #[test]
    fn the_committed_openapi_document_matches_the_routes() {
        let committed = include_str!("../../../docs/openapi.json");
        let generated = super::openapi().to_pretty_json().unwrap();
        assert!(
            committed.trim_end() == generated.trim_end(),
            "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
        );
    }

    /// Operation ids are unique, and every declared link is in the document and names an
    /// operation that exists with the parameters it fills.
    #[test]
    fn operation_ids_are_unique_and_every_link_resolves() {
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let mut ops = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op["operationId"].as_str() {
                    let params: Vec<&str> = op["parameters"]
                        .as_array()
                        .map(|ps| ps.iter().filter_map(|p| p["name"].as_str()).collect())
                        .unwrap_or_default();
                    let seen = ops.insert(id.to_string(), params);
                    assert!(seen.is_none(), "operation id {id} twice ({method} {path})");
                }
            }
        }
        let mut links = 0;
        for super::DocLink {
            method,
            path,
            to: targets,
            params,
        } in super::LINKS
        {
            let responses = &doc["paths"][*path][*method]["responses"];
            let answer = if responses["200"].is_null() {
                &responses["201"]
            } else {
                &responses["200"]
            };
            for target in *targets {
                let link = &answer["links"][*target];
                assert_eq!(link["operationId"], *target, "{method} {path} -> {target}");
                let takes = ops
                    .get(*target)
                    .unwrap_or_else(|| panic!("{method} {path} links to unknown {target}"));
                for (name, _) in *params {
                    assert!(takes.contains(name), "{target} takes no `{name}`");
                }
                links += 1;
            }
        }
        let declared: usize = super::LINKS.iter().map(|l| l.to.len()).sum();
        assert_eq!(links, declared);
        assert!(declared > 30);
    }

    /// The keys of a served invoice are exactly the documented ones, lines included, so the
    /// documented shape cannot drift from what is served.
    #[test]
    fn invoices_are_served_as_documented() {
        use tally_core::prelude::*;
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_1", "Cust_1", "basic", Currency::Usd, Cycle::Month)
            .seats("seats", 2);
        let out = subscribe(&req, &cx, "2024-01-01T00:00:00Z".parse().unwrap()).unwrap();
        let invoice = tally_app::store::Invoice {
            id: "Inv_1".into(),
            number: "2024-000001".into(),
            status: tally_app::store::InvoiceStatus::Open,
            draft: out.invoices[0].clone(),
        };
        let served = serde_json::to_value(&invoice).unwrap();
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let schemas = &doc["components"]["schemas"];
        // An invoice is documented as the computed invoice's fields and its own beside them.
        let parts = schemas["Invoice"]["allOf"].as_array().unwrap();
        let mut documented: Vec<String> = parts
            .iter()
            .map(|p| match p["$ref"].as_str() {
                Some(r) => &schemas[r.trim_start_matches("#/components/schemas/")],
                None => p,
            })
            .flat_map(|p| keys(&p["properties"]))
            .collect();
        documented.sort();
        assert_eq!(keys(&served), documented);
        let draft = serde_json::to_value(&invoice.draft).unwrap();
        assert_eq!(keys(&draft), keys(&schemas["InvoiceDraft"]["properties"]));
        assert_eq!(
            keys(&served["lines"][0]),
            keys(&schemas["InvoiceLine"]["properties"])
        );
    }

    /// A served customer, with its contract summaries, has exactly the documented keys.
    #[test]
    fn customers_are_served_as_documented() {
        use tally_core::prelude::*;
        let (catalog, settings) = tally_core::examples::basic_catalog();
        let cx = BillingContext::new(&catalog, &settings).unwrap();
        let req = SignupRequest::new("Cont_1", "Cust_1", "basic", Currency::Usd, Cycle::Month);
        let out = subscribe(&req, &cx, "2024-01-01T00:00:00Z".parse().unwrap()).unwrap();
        let summary =
            crate::dto::contract_json(&out.contract, &catalog)["contract_summary"].clone();
        let customer = tally_app::store::Customer {
            id: "Cust_1".into(),
            slug: Some("acme".into()),
            name: Some("Acme".into()),
            emails: serde_json::json!({"main": "billing@acme.test"}),
            customer_reference: None,
            address: None,
            metadata: Default::default(),
            notes: None,
            tax_rate: None,
            created_at: "2024-01-01T00:00:00Z".parse().unwrap(),
        };
        let served = crate::dto::customer_json(&customer, vec![summary]);
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let schemas = &doc["components"]["schemas"];
        assert_eq!(keys(&served), keys(&schemas["Customer"]["properties"]));
        assert_eq!(
            keys(&served["tax_details"]),
            keys(&schemas["TaxDetails"]["properties"])
        );
        assert_eq!(
            keys(&served["contracts"][0]),
            keys(&schemas["ContractSummary"]["properties"])
        );
    }

    /// A served webhook endpoint and a served delivery, alone and in their pages, have exactly
    /// the documented keys.
    #[test]
    fn webhooks_are_served_as_documented() {
        use tally_app::webhooks::{Delivery, WebhookEndpoint};
        let at = "2024-01-01T00:00:00Z".parse().unwrap();
        let endpoint = WebhookEndpoint {
            id: "Whk_1".into(),
            url: "https://example.com/hooks".into(),
            event_types: vec!["v1.invoice.*".into()],
            enabled: true,
            description: Some("billing".into()),
            secret: "whsec_x".into(),
            created_at: at,
        };
        let event = tally_app::store::Event {
            id: "Evt_1".into(),
            kind: "v1.invoice.created".into(),
            contract_id: None,
            at,
            actor: "api".into(),
            request_id: None,
            data: tally_app::store::EventData::empty(),
        };
        let delivery = Delivery::new(&endpoint, &event);
        let page = tally_app::store::Page {
            limit: 10,
            offset: 0,
        };
        let served = [
            ("WebhookEndpoint", crate::webhooks::endpoint_json(&endpoint)),
            ("Delivery", crate::webhooks::delivery_json(&delivery)),
        ];
        let doc = serde_json::to_value(super::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        for (name, value) in served {
            assert_eq!(keys(&value), keys(&schemas[name]["properties"]), "{name}");
            let paged = crate::dto::page_json(vec![value], &page, 1);
            let page_schema = &schemas[format!("{name}Page")]["properties"];
            assert_eq!(keys(&paged), keys(page_schema), "{name}Page");
            assert_eq!(
                page_schema["hits"]["items"]["$ref"],
                format!("#/components/schemas/{name}")
            );
        }
    }

    #[test]
    fn every_endpoint_is_documented_with_its_errors() {
        let doc = super::openapi();
        assert!(matches!(
            doc.openapi,
            utoipa::openapi::OpenApiVersion::Version31
        ));
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for p in [
            "/v1/c/contract",
            "/v1/c/contract/{id}/upgrade",
            "/v1/c/contract/{id}/upgrade_estimate",
            "/v1/c/customer",
            "/v1/c/usage/bulk",
            "/v1/c/invoice",
            "/openapi.json",
        ] {
            assert!(paths.iter().any(|x| *x == p), "{p} missing from {paths:?}");
        }
        let json = doc.to_json().unwrap();
        assert!(json.contains("application/problem+json"));
        assert!(json.contains("\"wb_key\""));
    }
}
