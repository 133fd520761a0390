//! `tally simulate`: replays a scenario (catalog + timed API requests) against an in-memory
//! instance with a test clock, through the same router as the server, and reports every invoice.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_app::catalog_file::CatalogFile;
use tally_app::memory::MemoryStore;
use tally_app::store::{InvoiceFilter, Page};
use tally_app::{Actor, Tally};
use tower::ServiceExt;

/// One timed request of a scenario.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: Timestamp,
    request: String,
    #[serde(default)]
    body: Option<Value>,
    #[serde(default)]
    save: Option<String>,
    #[serde(default)]
    expect: Option<Expect>,
}

/// What a step's response must be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    body: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    catalog: Value,
    #[serde(default)]
    timeline: Vec<Step>,
    #[serde(default)]
    until: Option<Timestamp>,
}

/// A scenario that cannot be run as written: exit status 2.
#[derive(Debug)]
pub struct Invalid(pub String);

/// The outcome of a run: the JSON report and whether every expectation held.
pub struct Report {
    /// `{steps, invoices, contracts}`.
    pub json: Value,
    /// Expectations that did not hold, in words.
    pub failures: Vec<String>,
}

fn invalid(file: &Path, path: &str, message: impl std::fmt::Display) -> Invalid {
    let at = if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    Invalid(format!("{}{at}: {message}", file.display()))
}

/// Reads a YAML or JSON file into a JSON value.
pub fn read_value(file: &Path) -> Result<Value, Invalid> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| invalid(file, "", format!("cannot read: {e}")))?;
    serde_norway::from_str(&text)
        .map_err(|e| invalid(file, "", format!("not valid YAML or JSON: {e}")))
}

/// Parses a catalog file (YAML or JSON) with the path of any offending field.
pub fn read_catalog(file: &Path) -> Result<CatalogFile, Invalid> {
    let v = read_value(file)?;
    catalog_from_value(file, "", v)
}

fn catalog_from_value(file: &Path, prefix: &str, v: Value) -> Result<CatalogFile, Invalid> {
    let parsed: CatalogFile = serde_path_to_error::deserialize(v).map_err(|e| {
        let p = e.path().to_string();
        let full = match (prefix.is_empty(), p.as_str()) {
            (true, _) => p.clone(),
            (false, ".") => prefix.to_string(),
            (false, _) => format!("{prefix}.{p}"),
        };
        invalid(file, &full, e.inner())
    })?;
    parsed.validate().map_err(|e| {
        let full = if prefix.is_empty() {
            e.path.clone()
        } else {
            format!("{prefix}.{}", e.path)
        };
        invalid(file, &full, e.message)
    })?;
    Ok(parsed)
}

fn substitute(v: &Value, vars: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute_str(s, vars)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = s.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Runs the scenario in `file`.
///
/// # Errors
/// [`Invalid`] when the file cannot be read or does not follow the schema.
pub async fn run(file: &Path) -> Result<Report, Invalid> {
    let root = read_value(file)?;
    let scenario: Scenario = serde_path_to_error::deserialize(root)
        .map_err(|e| invalid(file, &e.path().to_string(), e.inner()))?;
    let catalog = match &scenario.catalog {
        Value::String(rel) => {
            let path = file.parent().unwrap_or(Path::new(".")).join(rel);
            read_catalog(&path)?
        }
        other => catalog_from_value(file, "catalog", other.clone())?,
    };
    for (i, w) in scenario.timeline.windows(2).enumerate() {
        if w[1].at < w[0].at {
            return Err(invalid(
                file,
                &format!("timeline[{}].at", i + 1),
                "steps must be in time order",
            ));
        }
    }
    for (i, s) in scenario.timeline.iter().enumerate() {
        let mut parts = s.request.splitn(2, ' ');
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        if Method::from_bytes(method.as_bytes()).is_err() || !path.starts_with('/') {
            return Err(invalid(
                file,
                &format!("timeline[{i}].request"),
                format!("expected `METHOD /path`, got `{}`", s.request),
            ));
        }
    }

    let store = Arc::new(MemoryStore::new());
    let tally = Tally::new(store.clone());
    let err = |e: tally_app::AppError| Invalid(format!("{}: {e}", file.display()));
    let (mut tenant, key) = tally.create_tenant("simulation", true).await.map_err(err)?;
    let start = scenario
        .timeline
        .first()
        .map(|s| s.at)
        .or(scenario.until)
        .unwrap_or_else(Timestamp::now);
    tenant.clock = Some(start);
    tally
        .store
        .update_tenant(&tenant)
        .await
        .map_err(|e| err(e.into()))?;
    let (t, _) = tally
        .apply_catalog(&tenant, &catalog)
        .await
        .map_err(|e| match e {
            tally_app::AppError::Invalid { param, detail } => {
                invalid(file, &format!("catalog.{param}"), detail)
            }
            other => err(other),
        })?;
    tenant = t;
    let router = tally_api::router(tally.clone());
    let actor = Actor {
        name: "test_clock".into(),
        request_id: None,
    };

    let mut vars = BTreeMap::new();
    let mut steps = Vec::new();
    let mut failures = Vec::new();
    for (i, s) in scenario.timeline.iter().enumerate() {
        let current = tally
            .store
            .tenant(&tenant.id)
            .await
            .map_err(|e| err(e.into()))?
            .unwrap_or(tenant.clone());
        tally
            .advance_clock(&current, s.at, &actor)
            .await
            .map_err(err)?;
        let request = substitute_str(&s.request, &vars);
        let (method, path) = request.split_once(' ').unwrap_or(("GET", "/"));
        let body = s.body.as_ref().map(|b| substitute(b, &vars));
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("wb-key", &key)
            .header("content-type", "application/json")
            .body(match &body {
                Some(b) => Body::from(b.to_string()),
                None => Body::empty(),
            })
            .map_err(|e| invalid(file, &format!("timeline[{i}].request"), e))?;
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| Invalid(format!("{}: {e}", file.display())))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body_json: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        if let Some(name) = &s.save {
            let id = match &body_json {
                Value::String(s) => Some(s.clone()),
                // The native and Flexprice `id`, billwerk's `Id`, Salesbricks' `order_id`.
                Value::Object(o) => ["id", "Id", "order_id"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(str::to_string),
                _ => None,
            };
            match id {
                Some(id) => {
                    vars.insert(name.clone(), id);
                }
                None => failures.push(format!(
                    "timeline[{i}]: nothing to save as `{name}` in the response (status {status})"
                )),
            }
        }
        if let Some(exp) = &s.expect {
            if let Some(want) = exp.status
                && want != status
            {
                failures.push(format!(
                    "timeline[{i}] {request}: expected status {want}, got {status}: {body_json}"
                ));
            }
            if let Some(want) = &exp.body
                && substitute(want, &vars) != body_json
            {
                failures.push(format!(
                    "timeline[{i}] {request}: expected body {want}, got {body_json}"
                ));
            }
        }
        steps.push(json!({ "at": s.at, "request": request, "status": status, "body": body_json }));
    }
    if let Some(until) = scenario.until {
        let current = tally
            .store
            .tenant(&tenant.id)
            .await
            .map_err(|e| err(e.into()))?
            .unwrap_or(tenant.clone());
        if until >= tally.now(&current) {
            tally
                .advance_clock(&current, until, &actor)
                .await
                .map_err(err)?;
        }
    }

    let all = Page {
        offset: 0,
        limit: u64::MAX,
    };
    let (invoices, _) = tally
        .store
        .invoices(&tenant.id, &InvoiceFilter::default(), &all)
        .await
        .map_err(|e| err(e.into()))?;
    let invoices: Vec<Value> = invoices
        .iter()
        .map(|i| {
            let d = &i.draft;
            json!({
                "id": i.id, "number": i.number, "contract_id": d.contract_id, "customer_id": d.customer_id,
                "issued_at": d.issued_at, "currency": d.currency, "reason": d.reason, "lines": d.lines,
                "net": d.net, "tax": d.tax, "gross": d.gross, "credit_applied": d.credit_applied,
                "amount_due": d.amount_due,
            })
        })
        .collect();
    let (contracts, _) = tally
        .store
        .contracts(&tenant.id, None, &all)
        .await
        .map_err(|e| err(e.into()))?;
    let mut views = Vec::new();
    for c in contracts {
        let req = Request::builder()
            .uri(format!("/v1/c/contract/{}", c.contract.id))
            .header("wb-key", &key)
            .body(Body::empty())
            .map_err(|e| Invalid(e.to_string()))?;
        let resp = router
            .clone()
            .oneshot(req)
            .await
            .map_err(|e| Invalid(e.to_string()))?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        views.push(serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null));
    }
    Ok(Report {
        json: json!({ "steps": steps, "invoices": invoices, "contracts": views }),
        failures,
    })
}

/// The report for people.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let j = &report.json;
    out.push_str("Steps\n");
    for s in j["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {:<45} {}\n",
            s["at"].as_str().unwrap_or_default(),
            s["request"].as_str().unwrap_or_default(),
            s["status"]
        ));
    }
    out.push_str("\nInvoices\n");
    for i in j["invoices"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {} {} {} ({}), {}\n",
            i["number"].as_str().unwrap_or_default(),
            i["issued_at"].as_str().unwrap_or_default(),
            i["reason"].as_str().unwrap_or_default(),
            i["currency"].as_str().unwrap_or_default(),
            i["contract_id"].as_str().unwrap_or_default(),
        ));
        for l in i["lines"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "      {:<17} {:>12}  {}\n",
                l["kind"].as_str().unwrap_or_default(),
                l["amount"].as_str().unwrap_or_default(),
                l["description"].as_str().unwrap_or_default(),
            ));
        }
        out.push_str(&format!(
            "      net {}  tax {}  gross {}  credit applied {}  due {}\n",
            i["net"].as_str().unwrap_or_default(),
            i["tax"].as_str().unwrap_or_default(),
            i["gross"].as_str().unwrap_or_default(),
            i["credit_applied"].as_str().unwrap_or_default(),
            i["amount_due"].as_str().unwrap_or_default(),
        ));
    }
    out.push_str("\nContracts\n");
    for c in j["contracts"].as_array().into_iter().flatten() {
        let s = &c["contract_summary"];
        out.push_str(&format!(
            "  {} {} {} {} per {}, {} phase(s)\n",
            s["id"].as_str().unwrap_or_default(),
            s["status"].as_str().unwrap_or_default(),
            c["plan"]["slug"].as_str().unwrap_or_default(),
            s["currency"].as_str().unwrap_or_default(),
            s["cycle"].as_str().unwrap_or_default(),
            c["phases"].as_array().map_or(0, Vec::len),
        ));
    }
    if !report.failures.is_empty() {
        out.push_str("\nExpectations not met\n");
        for f in &report.failures {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out
}
