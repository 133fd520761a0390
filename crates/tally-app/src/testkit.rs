//! The storage conformance suite: the behaviour every [`Store`] must have (tenant scoping,
//! versions, gapless numbering under concurrent writers, step-key idempotency, balances, due
//! contracts, paging). Each store's tests run [`run_all`] against a fresh database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use rust_decimal::Decimal;
use tally_core::prelude::*;

use crate::ids::new_id;
use crate::store::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Commits with their bodies, as a bill-run batch hands them over.
fn encoded(commits: Vec<Commit>) -> Vec<Encoded> {
    commits
        .into_iter()
        .map(|c| Encoded::new(c).unwrap())
        .collect()
}

async fn tenant(store: &dyn Store) -> Tenant {
    let t = Tenant {
        id: new_id("Ten"),
        name: "suite".into(),
        test_mode: true,
        settings: Settings::default(),
        clock: Some(ts("2024-01-01T00:00:00Z")),
        created_at: ts("2024-01-01T00:00:00Z"),
    };
    store.create_tenant(&t, &new_id("hash")).await.unwrap();
    let (catalog, _) = tally_core::examples::basic_catalog();
    store.save_catalog(&t.id, &catalog).await.unwrap();
    t
}

async fn customer(store: &dyn Store, t: &Tenant, slug: &str) -> Customer {
    let c = Customer {
        id: new_id("Cust"),
        slug: Some(slug.into()),
        name: Some(slug.into()),
        emails: serde_json::json!({}),
        customer_reference: None,
        address: None,
        metadata: BTreeMap::new(),
        notes: None,
        tax_rate: None,
        created_at: ts("2024-01-01T00:00:00Z"),
    };
    store.save_customer(&t.id, &c, None).await.unwrap();
    c
}

/// A signed contract and its signup invoice, computed by the core.
fn signed(customer: &str, at: &str) -> (Contract, Vec<InvoiceDraft>) {
    let (catalog, settings) = tally_core::examples::basic_catalog();
    let cx = BillingContext::new(&catalog, &settings).unwrap();
    let req = SignupRequest::new(
        &new_id("Cont"),
        customer,
        "basic",
        Currency::Usd,
        Cycle::Month,
    )
    .seats("seats", 2);
    let out = subscribe(&req, &cx, ts(at)).unwrap();
    (out.contract, out.invoices)
}

/// Signs a contract for `customer` at `at` and commits it with its signup invoice, on tenant
/// `tenant`: the contract and what the store answered.
async fn commit_signed(
    store: &dyn Store,
    tenant: &str,
    customer: &str,
    at: &str,
) -> (Contract, Committed) {
    let (c, invoices) = signed(customer, at);
    let done = store
        .commit(
            tenant,
            Commit {
                contract: Some((c.clone(), 0)),
                invoices,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (c, done)
}

/// Runs every check against `store`.
pub async fn run_all(store: Arc<dyn Store>) {
    tenants_and_keys(store.as_ref()).await;
    catalog_and_customers(store.as_ref()).await;
    contracts_versions_and_invoices(store.as_ref()).await;
    step_keys_are_idempotent(store.as_ref()).await;
    balances_follow_invoices(store.as_ref()).await;
    due_contracts_and_usage(store.as_ref()).await;
    billing_state_reads_what_bills_a_contract(store.as_ref()).await;
    lists_page_and_filter(store.as_ref()).await;
    tenants_are_isolated(store.as_ref()).await;
    idempotent_responses(store.as_ref()).await;
    claims_are_disjoint_and_expire(store.as_ref()).await;
    batches_write_together_and_tell_conflicts_apart(store.as_ref()).await;
    terms_are_written_when_they_change(store.as_ref()).await;
    webhooks_get_deliveries_with_their_events(store.as_ref()).await;
    orders_are_carried_out_once(store.as_ref()).await;
    concurrent_writers_number_gaplessly(store.clone()).await;
    store.ping().await.unwrap();
}

async fn orders_are_carried_out_once(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "ordering").await;
    let (c, _) = commit_signed(store, &t.id, &cu.id, "2024-01-01T00:00:00Z").await;
    let open = Order {
        id: new_id("Ord"),
        dialect: "billwerk".into(),
        kind: "Upgrade".into(),
        contract_id: c.id.clone(),
        customer_id: cu.id.clone(),
        status: OrderStatus::Open,
        request: serde_json::json!({ "Cart": { "PlanVariantId": "basic" } }),
        created_at: ts("2024-01-10T00:00:00Z"),
        closed_at: None,
    };
    assert!(store.save_order(&t.id, &open).await.unwrap());
    assert_eq!(
        store.order(&t.id, &open.id).await.unwrap(),
        Some(open.clone())
    );
    // An open order can be updated.
    let mut edited = open.clone();
    edited.request = serde_json::json!({ "Cart": { "PlanVariantId": "basic", "Quantity": 2 } });
    assert!(store.save_order(&t.id, &edited).await.unwrap());
    let second = Order {
        id: new_id("Ord"),
        created_at: ts("2024-01-11T00:00:00Z"),
        ..open.clone()
    };
    assert!(store.save_order(&t.id, &second).await.unwrap());
    let ids: Vec<String> = store
        .orders(&t.id, &c.id)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(ids, [open.id.clone(), second.id.clone()]);

    // Carrying it out marks it in the same write as the change.
    let committed = Order {
        status: OrderStatus::Committed,
        closed_at: Some(ts("2024-01-12T00:00:00Z")),
        ..edited.clone()
    };
    let mut changed = c.clone();
    changed.period_idx = 9;
    let usage_record = UsageRecord {
        feature_slug: "api_calls".into(),
        units: Decimal::from(3),
        timestamp: ts("2024-01-12T00:00:00Z"),
        is_absolute: false,
    };
    store
        .commit(
            &t.id,
            Commit {
                contract: Some((changed.clone(), 1)),
                order: Some(committed.clone()),
                usage: vec![usage_record.clone()],
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let recorded = store
        .usage(&t.id, &c.id, ts("2024-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(recorded, std::slice::from_ref(&usage_record));
    assert_eq!(
        store.order(&t.id, &open.id).await.unwrap(),
        Some(committed.clone())
    );
    // A second write carrying out the same order is a conflict and writes nothing, even with
    // the right contract version.
    let mut again = changed.clone();
    again.period_idx = 10;
    let twice = store
        .commit(
            &t.id,
            Commit {
                contract: Some((again, 2)),
                order: Some(committed.clone()),
                usage: vec![usage_record.clone()],
                ..Commit::default()
            },
        )
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict)), "{twice:?}");
    let stored = store.contract(&t.id, &c.id).await.unwrap().unwrap();
    assert_eq!((stored.contract.period_idx, stored.version), (9, 2));
    let recorded = store
        .usage(&t.id, &c.id, ts("2024-01-01T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1, "the refused write recorded no usage");
    // A closed order is not reopened or edited.
    assert!(!store.save_order(&t.id, &edited).await.unwrap());
    assert_eq!(store.order(&t.id, &open.id).await.unwrap(), Some(committed));
    // A write whose contract lost a race leaves its order open.
    let lost = store
        .commit(
            &t.id,
            Commit {
                contract: Some((changed.clone(), 1)),
                order: Some(Order {
                    status: OrderStatus::Committed,
                    ..second.clone()
                }),
                ..Commit::default()
            },
        )
        .await;
    assert!(matches!(lost, Err(StoreError::Conflict)), "{lost:?}");
    assert_eq!(
        store.order(&t.id, &second.id).await.unwrap(),
        Some(second.clone())
    );
    // Another tenant sees none of it.
    let other = tenant(store).await;
    assert_eq!(store.order(&other.id, &open.id).await.unwrap(), None);
    assert!(store.orders(&other.id, &c.id).await.unwrap().is_empty());
}

async fn tenants_and_keys(store: &dyn Store) {
    let t = Tenant {
        id: new_id("Ten"),
        name: "keys".into(),
        test_mode: false,
        settings: Settings::default(),
        clock: None,
        created_at: ts("2024-01-01T00:00:00Z"),
    };
    let hash = new_id("hash");
    store.create_tenant(&t, &hash).await.unwrap();
    assert_eq!(store.tenant_by_key(&hash).await.unwrap(), Some(t.clone()));
    assert_eq!(store.tenant_by_key("nope").await.unwrap(), None);
    let dup = Tenant {
        id: new_id("Ten"),
        ..t.clone()
    };
    assert!(matches!(
        store.create_tenant(&dup, &hash).await,
        Err(StoreError::Duplicate(_))
    ));
    let mut moved = t.clone();
    moved.clock = Some(ts("2030-01-01T00:00:00Z"));
    moved.settings.tax_rate = Decimal::from(19);
    store.update_tenant(&moved).await.unwrap();
    assert_eq!(store.tenant(&t.id).await.unwrap(), Some(moved));
    assert!(store.tenant_ids().await.unwrap().contains(&t.id));
}

async fn catalog_and_customers(store: &dyn Store) {
    let t = tenant(store).await;
    let (catalog, _) = tally_core::examples::basic_catalog();
    assert_eq!(*store.catalog(&t.id).await.unwrap(), catalog);
    let c = customer(store, &t, "acme").await;
    assert_eq!(store.customer(&t.id, &c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(
        store.customer(&t.id, "acme").await.unwrap(),
        Some(c.clone())
    );
    let mut renamed = c.clone();
    renamed.name = Some("Acme Inc".into());
    store.save_customer(&t.id, &renamed, None).await.unwrap();
    assert_eq!(store.customer(&t.id, "acme").await.unwrap(), Some(renamed));
}

async fn contracts_versions_and_invoices(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let (c, done) = commit_signed(store, &t.id, &cu.id, "2024-01-01T00:00:00Z").await;
    assert_eq!(done.version, 1);
    assert_eq!(done.invoices.len(), 1);
    assert_eq!(done.invoices[0].number, "2024-000001");
    let stored = store.contract(&t.id, &c.id).await.unwrap().unwrap();
    assert_eq!((stored.contract.clone(), stored.version), (c.clone(), 1));
    // Inserting the same contract again is a duplicate; a stale version is a conflict and
    // writes nothing.
    let again = store
        .commit(
            &t.id,
            Commit {
                contract: Some((c.clone(), 0)),
                ..Commit::default()
            },
        )
        .await;
    assert!(matches!(again, Err(StoreError::Duplicate(_))), "{again:?}");
    let mut changed = c.clone();
    changed.period_idx = 7;
    let (_, more) = signed(&cu.id, "2024-02-01T00:00:00Z");
    let stale = store
        .commit(
            &t.id,
            Commit {
                contract: Some((changed.clone(), 5)),
                invoices: more.clone(),
                events: vec![],
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let (list, total) = store
        .invoices(
            &t.id,
            &InvoiceFilter::default(),
            &Page {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!((list.len(), total), (1, 1), "a lost race writes no invoice");
    let ok = store
        .commit(
            &t.id,
            Commit {
                contract: Some((changed.clone(), 1)),
                invoices: more,
                events: vec![Event {
                    id: new_id("Evt"),
                    kind: "v1.contract.renewed".into(),
                    contract_id: Some(c.id.clone()),
                    at: ts("2024-02-01T00:00:00Z"),
                    actor: "suite".into(),
                    request_id: None,
                    data: EventData::empty(),
                }],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
    assert_eq!(ok.invoices[0].number, "2024-000002");
    assert_eq!(
        store
            .contract(&t.id, &c.id)
            .await
            .unwrap()
            .unwrap()
            .contract
            .period_idx,
        7
    );
    assert_eq!(store.events(&t.id, &c.id).await.unwrap().len(), 1);
    let inv = &ok.invoices[0];
    assert_eq!(
        store.invoice(&t.id, &inv.id).await.unwrap().as_ref(),
        Some(inv)
    );
    let paid = event(&c, "v1.invoice.paid");
    assert!(
        store
            .set_invoice_status(&t.id, &inv.id, InvoiceStatus::Paid, &[paid])
            .await
            .unwrap()
    );
    assert_eq!(
        store.invoice(&t.id, &inv.id).await.unwrap().unwrap().status,
        InvoiceStatus::Paid
    );
    // The event is recorded with the change; a paid invoice cannot be moved again, and that
    // attempt writes nothing.
    assert_eq!(store.events(&t.id, &c.id).await.unwrap().len(), 2);
    let voided = event(&c, "v1.invoice.voided");
    assert!(
        !store
            .set_invoice_status(&t.id, &inv.id, InvoiceStatus::Void, &[voided])
            .await
            .unwrap()
    );
    assert_eq!(
        store.invoice(&t.id, &inv.id).await.unwrap().unwrap().status,
        InvoiceStatus::Paid
    );
    assert_eq!(store.events(&t.id, &c.id).await.unwrap().len(), 2);
}

fn event(contract: &Contract, kind: &str) -> Event {
    Event {
        id: new_id("Evt"),
        kind: kind.into(),
        contract_id: Some(contract.id.clone()),
        at: ts("2024-02-01T00:00:00Z"),
        actor: "suite".into(),
        request_id: None,
        data: EventData::empty(),
    }
}

/// The bill run's batched write: every commit of a clean batch lands with its invoices numbered
/// in order, lines, events and balances; a re-run issues nothing; a batch with one stale
/// version writes the others and answers that one with a conflict. Also the batch reads of
/// customers and balances.
async fn batches_write_together_and_tell_conflicts_apart(store: &dyn Store) {
    let t = tenant(store).await;
    let a = customer(store, &t, "a").await;
    let b = customer(store, &t, "b").await;
    let mut contracts = Vec::new();
    for cu in [&a, &b, &a] {
        let (c, _) = commit_signed(store, &t.id, &cu.id, "2024-01-01T00:00:00Z").await;
        contracts.push(c);
    }
    // Signup used numbers 1-3. The renewals: one invoice each, the second applying 2.50 of
    // credit that customer b does not have (the balance goes to -2.50).
    let renewal = |c: &Contract, credit: i64| {
        let (_, mut inv) = signed(&c.customer_id, "2024-02-01T00:00:00Z");
        inv[0].contract_id = c.id.clone();
        inv[0].step_key = format!("{}:renewal:2", c.id);
        inv[0].credit_applied = Decimal::new(credit, 2);
        let mut next = c.clone();
        next.period_idx = 2;
        Commit {
            contract: Some((next.clone(), 1)),
            invoices: inv,
            events: vec![
                event(&next, "v1.invoice.created"),
                event(&next, "v1.contract.renewed"),
            ],
            ..Default::default()
        }
    };
    let batch: Vec<Commit> = vec![renewal(&contracts[0], 0), renewal(&contracts[1], 250)];
    let done = store
        .commit_batch(&t.id, encoded(batch.clone()))
        .await
        .unwrap();
    let numbers: Vec<String> = done
        .iter()
        .map(|r| r.as_ref().unwrap().invoices[0].number.clone())
        .collect();
    assert_eq!(numbers, ["2024-000004", "2024-000005"]);
    assert!(done.iter().all(|r| r.as_ref().unwrap().version == 2));
    for (c, r) in contracts.iter().zip(&done) {
        let stored = store.contract(&t.id, &c.id).await.unwrap().unwrap();
        assert_eq!((stored.contract.period_idx, stored.version), (2, 2));
        assert_eq!(store.events(&t.id, &c.id).await.unwrap().len(), 2);
        let inv = &r.as_ref().unwrap().invoices[0];
        let read = store.invoice(&t.id, &inv.id).await.unwrap().unwrap();
        assert_eq!(&read, inv);
        assert!(!read.draft.lines.is_empty());
    }
    let balances = store
        .balances_of(&t.id, &[a.id.clone(), b.id.clone()])
        .await
        .unwrap();
    assert_eq!(balances.get(&a.id), None, "a's balance never moved");
    assert_eq!(
        balances
            .get(&b.id)
            .and_then(|m| m.get(&Currency::Usd))
            .copied(),
        Some(Decimal::new(-250, 2))
    );
    let mut found = store
        .customers_by_ids(&t.id, &[b.id.clone(), a.id.clone(), "Cust_unknown".into()])
        .await
        .unwrap();
    found.sort_by(|x, y| x.slug.cmp(&y.slug));
    assert_eq!(found, [a.clone(), b.clone()]);
    // The same batch again at the versions it now has: nothing issued, no number used.
    let again: Vec<Commit> = batch
        .into_iter()
        .map(|mut c| {
            if let Some((_, v)) = c.contract.as_mut() {
                *v = 2;
            }
            for e in &mut c.events {
                e.id = new_id("Evt");
            }
            c
        })
        .collect();
    let done = store.commit_batch(&t.id, encoded(again)).await.unwrap();
    assert!(done.iter().all(|r| r.as_ref().unwrap().invoices.is_empty()));
    // One stale version in a batch: that commit is a conflict and writes nothing; the other
    // lands and takes the next number, 6.
    let stale = renewal(&contracts[0], 0);
    let mut fresh = renewal(&contracts[2], 0);
    fresh.invoices[0].step_key = format!("{}:renewal:2", contracts[2].id);
    let done = store
        .commit_batch(&t.id, encoded(vec![stale, fresh]))
        .await
        .unwrap();
    assert!(
        matches!(done[0], Err(StoreError::Conflict)),
        "{:?}",
        done[0]
    );
    assert_eq!(done[1].as_ref().unwrap().invoices[0].number, "2024-000006");
    assert_eq!(
        store.events(&t.id, &contracts[0].id).await.unwrap().len(),
        4
    );
    let (_, total) = store
        .invoices(
            &t.id,
            &InvoiceFilter::default(),
            &Page {
                offset: 0,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 6, "invoices 1-6, none lost, none twice");
}

/// A renewal batch that leaves a contract's terms marks them unchanged (a store may then write
/// only the progress); one that changes them, and a single commit, write them: every way of
/// reading a contract then gives back exactly what was committed.
async fn terms_are_written_when_they_change(store: &dyn Store) {
    let t = tenant(store).await;
    let a = customer(store, &t, "a").await;
    let mut read = Vec::new();
    for _ in 0..2 {
        let (c, _) = commit_signed(store, &t.id, &a.id, "2024-01-01T00:00:00Z").await;
        read.push(
            store
                .contract(&t.id, &c.id)
                .await
                .unwrap()
                .unwrap()
                .contract,
        );
    }
    let (catalog, settings) = tally_core::examples::basic_catalog();
    let cx = BillingContext::new(&catalog, &settings).unwrap();
    // The first renewed only; the second renewed with a cancellation at the period end asked.
    let renewed = advance(&read[0], &cx, ts("2024-02-01T00:00:00Z")).unwrap();
    let mut canceled = advance(&read[1], &cx, ts("2024-02-01T00:00:00Z")).unwrap();
    canceled.contract.cancel_at_period_end = true;
    canceled.contract.cancel_at = canceled.contract.period.as_ref().and_then(|p| p.end);
    let commit = |out: &AdvanceOutcome| Commit {
        contract: Some((out.contract.clone(), 1)),
        invoices: out.invoices().cloned().collect(),
        ..Default::default()
    };
    let batch = vec![
        Encoded::moved_from(commit(&renewed), &read[0]).unwrap(),
        Encoded::moved_from(commit(&canceled), &read[1]).unwrap(),
    ];
    let marks: Vec<bool> = batch
        .iter()
        .map(|e| e.bodies.contract.as_ref().unwrap().terms.is_some())
        .collect();
    assert_eq!(marks, [false, true]);
    let done = store.commit_batch(&t.id, batch).await.unwrap();
    assert!(done.iter().all(|r| r.as_ref().unwrap().version == 2));
    let expected = [renewed.contract.clone(), canceled.contract.clone()];
    for c in &expected {
        let s = store.contract(&t.id, &c.id).await.unwrap().unwrap();
        assert_eq!((&s.contract, s.version), (c, 2));
        let state = store.billing_state(&t.id, &c.id).await.unwrap().unwrap();
        assert_eq!(state.contract.as_ref(), c);
    }
    let ids: Vec<String> = expected.iter().map(|c| c.id.clone()).collect();
    let mut by_ids: Vec<Contract> = store
        .contracts_by_ids(&t.id, &ids)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.contract)
        .collect();
    by_ids.sort_by(|x, y| x.id.cmp(&y.id));
    let mut sorted = expected.to_vec();
    sorted.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(by_ids, sorted);
    let (listed, _) = store
        .contracts(
            &t.id,
            Some(&a.id),
            &Page {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    let listed: Vec<&Contract> = listed.iter().map(|s| &s.contract).collect();
    assert_eq!(listed, expected.iter().collect::<Vec<_>>());
    // A single commit that changes the terms writes them.
    let mut changed = renewed.contract.clone();
    changed.next_seq += 1;
    store
        .commit(
            &t.id,
            Commit {
                contract: Some((changed.clone(), 2)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = store.contract(&t.id, &changed.id).await.unwrap().unwrap();
    assert_eq!((s.contract, s.version), (changed, 3));
}

fn endpoint(url: &str, types: &[&str], enabled: bool) -> WebhookEndpoint {
    WebhookEndpoint {
        id: new_id("Whk"),
        url: url.into(),
        event_types: types.iter().map(|t| t.to_string()).collect(),
        enabled,
        description: None,
        secret: crate::webhooks::new_secret(),
        created_at: ts("2024-01-01T00:00:00Z"),
    }
}

/// Webhook endpoints are kept per tenant; a commit's events make one delivery per accepting,
/// enabled endpoint in the same write (single commits and batches); deliveries are claimed with
/// a lease, logged newest first, and go with their endpoint.
async fn webhooks_get_deliveries_with_their_events(store: &dyn Store) {
    let t = tenant(store).await;
    let other = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let all = endpoint("https://a.example/hook", &["*"], true);
    let invoices_only = endpoint("https://b.example/hook", &["v1.invoice.*"], true);
    let off = endpoint("https://c.example/hook", &["*"], false);
    for w in [&all, &invoices_only, &off] {
        store.save_webhook(&t.id, w).await.unwrap();
    }
    let (list, total) = store
        .webhooks(
            &t.id,
            &Page {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 3);
    assert_eq!(list, [all.clone(), invoices_only.clone(), off.clone()]);
    assert_eq!(store.webhook(&other.id, &all.id).await.unwrap(), None);
    let mut renamed = all.clone();
    renamed.description = Some("main".into());
    store.save_webhook(&t.id, &renamed).await.unwrap();
    assert_eq!(store.webhook(&t.id, &all.id).await.unwrap(), Some(renamed));

    // A signup with two events: `all` gets both, `invoices_only` one, `off` none.
    let (c, invoices) = signed(&cu.id, "2024-01-01T00:00:00Z");
    let events = vec![
        event(&c, "v1.contract.signature.completed"),
        event(&c, "v1.invoice.created"),
    ];
    let signed_up = store
        .commit(
            &t.id,
            Commit {
                contract: Some((c.clone(), 0)),
                invoices,
                events: events.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let page = Page {
        offset: 0,
        limit: 10,
    };
    let (to_all, n) = store.deliveries(&t.id, &all.id, &page).await.unwrap();
    assert_eq!(n, 2);
    // newest first
    assert_eq!(to_all[0].event_type, "v1.invoice.created");
    assert_eq!(to_all[1].event_type, "v1.contract.signature.completed");
    assert!(to_all.iter().all(|d| d.status == DeliveryStatus::Pending));
    let (to_invoices, n) = store
        .deliveries(&t.id, &invoices_only.id, &page)
        .await
        .unwrap();
    assert_eq!(
        (n, to_invoices[0].event_id.as_str()),
        (1, events[1].id.as_str())
    );
    assert_eq!(store.deliveries(&t.id, &off.id, &page).await.unwrap().1, 0);
    assert_eq!(
        store.delivery(&other.id, &to_all[0].id).await.unwrap(),
        None,
        "another tenant's delivery is not found"
    );

    // Claims: three due, each job carries its endpoint and event; a second claim inside the
    // lease finds none.
    let now = ts("2030-01-01T00:00:00Z");
    let lease = ts("2030-01-01T00:01:00Z");
    let jobs = store.claim_deliveries(10, now, lease).await.unwrap();
    assert_eq!(jobs.len(), 3);
    let job = jobs
        .iter()
        .find(|j| j.delivery.endpoint_id == invoices_only.id)
        .unwrap();
    assert_eq!(
        (
            job.tenant_id.as_str(),
            job.url.as_str(),
            job.secret.as_str()
        ),
        (
            t.id.as_str(),
            invoices_only.url.as_str(),
            invoices_only.secret.as_str()
        )
    );
    assert_eq!(job.event, events[1]);
    assert!(
        store
            .claim_deliveries(10, now, lease)
            .await
            .unwrap()
            .is_empty()
    );
    // One attempt failed: due again five seconds later, not before.
    let mut d = job.delivery.clone();
    d.record(now, Ok(500));
    store.save_delivery(&t.id, &d).await.unwrap();
    assert_eq!(store.delivery(&t.id, &d.id).await.unwrap(), Some(d.clone()));
    assert!(
        store
            .claim_deliveries(10, ts("2030-01-01T00:00:04Z"), lease)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store
        .claim_deliveries(10, ts("2030-01-01T00:00:05Z"), ts("2030-01-01T00:02:00Z"))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    // The other two, delivered, are never claimed again, even after their lease ran out.
    for j in &jobs {
        if j.delivery.id != d.id {
            let mut x = j.delivery.clone();
            x.record(now, Ok(200));
            store.save_delivery(&t.id, &x).await.unwrap();
        }
    }
    assert!(
        store
            .claim_deliveries(10, ts("2030-01-02T00:00:00Z"), ts("2030-01-02T00:01:00Z"))
            .await
            .unwrap()
            .iter()
            .all(|j| j.delivery.id == d.id)
    );

    // A bill-run batch fans out too.
    let mut next = c.clone();
    next.period_idx = 2;
    let batch = vec![Commit {
        contract: Some((next.clone(), 1)),
        invoices: vec![],
        events: vec![event(&next, "v1.contract.renewed")],
        ..Default::default()
    }];
    store.commit_batch(&t.id, encoded(batch)).await.unwrap();
    assert_eq!(store.deliveries(&t.id, &all.id, &page).await.unwrap().1, 3);
    assert_eq!(
        store
            .deliveries(&t.id, &invoices_only.id, &page)
            .await
            .unwrap()
            .1,
        1
    );
    // Paying an invoice fans out its events as well: `all` gets both, `invoices_only` the
    // invoice's.
    let paid = event(&c, "v1.invoice.paid");
    let payment = event(&c, "v1.payment.succeeded");
    let inv = &signed_up.invoices[0].id;
    assert!(
        store
            .set_invoice_status(&t.id, inv, InvoiceStatus::Paid, &[paid, payment])
            .await
            .unwrap()
    );
    assert_eq!(store.deliveries(&t.id, &all.id, &page).await.unwrap().1, 5);
    let (to_invoices, n) = store
        .deliveries(&t.id, &invoices_only.id, &page)
        .await
        .unwrap();
    assert_eq!(
        (n, to_invoices[0].event_type.as_str()),
        (2, "v1.invoice.paid")
    );

    // A customer's event is written with the customer; a save refused for a slug another
    // customer holds writes neither.
    let mut cu2 = store
        .customer(&t.id, &c.customer_id)
        .await
        .unwrap()
        .unwrap();
    cu2.id = new_id("Cust");
    let mut created = event(&c, "v1.customer.created");
    created.contract_id = None;
    assert!(matches!(
        store.save_customer(&t.id, &cu2, Some(&created)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(store.customer(&t.id, &cu2.id).await.unwrap(), None);
    assert_eq!(store.deliveries(&t.id, &all.id, &page).await.unwrap().1, 5);
    cu2.slug = Some("second".into());
    store
        .save_customer(&t.id, &cu2, Some(&created))
        .await
        .unwrap();
    let (log, n) = store.deliveries(&t.id, &all.id, &page).await.unwrap();
    assert_eq!((n, log[0].event_type.as_str()), (6, "v1.customer.created"));
    assert_eq!(
        store
            .deliveries(&t.id, &invoices_only.id, &page)
            .await
            .unwrap()
            .1,
        2
    );

    // Deleting an endpoint removes it and its log; another tenant cannot delete it.
    assert!(!store.delete_webhook(&other.id, &all.id).await.unwrap());
    assert!(store.delete_webhook(&t.id, &all.id).await.unwrap());
    assert_eq!(store.webhook(&t.id, &all.id).await.unwrap(), None);
    assert_eq!(store.deliveries(&t.id, &all.id, &page).await.unwrap().1, 0);
    assert!(!store.delete_webhook(&t.id, &all.id).await.unwrap());
}

async fn step_keys_are_idempotent(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let (c, invoices) = signed(&cu.id, "2024-01-01T00:00:00Z");
    store
        .commit(
            &t.id,
            Commit {
                contract: Some((c.clone(), 0)),
                invoices: invoices.clone(),
                events: vec![],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The same billing step again: nothing issued, no number used.
    let again = store
        .commit(
            &t.id,
            Commit {
                contract: Some((c.clone(), 1)),
                invoices,
                events: vec![],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(again.invoices.is_empty());
    let (_, next) = signed(&cu.id, "2024-03-01T00:00:00Z");
    let third = store
        .commit(
            &t.id,
            Commit {
                contract: None,
                invoices: next,
                events: vec![],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(third.invoices[0].number, "2024-000002");
}

async fn balances_follow_invoices(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let (c, mut invoices) = signed(&cu.id, "2024-01-01T00:00:00Z");
    invoices[0].credit_added = Decimal::new(1250, 2);
    store
        .commit(
            &t.id,
            Commit {
                contract: Some((c.clone(), 0)),
                invoices,
                events: vec![],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (_, mut more) = signed(&cu.id, "2024-02-01T00:00:00Z");
    more[0].credit_applied = Decimal::new(250, 2);
    store
        .commit(
            &t.id,
            Commit {
                contract: None,
                invoices: more,
                events: vec![],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // 12.50 added, 2.50 applied: 10.00 left
    let b = store.balances(&t.id, &cu.id).await.unwrap();
    assert_eq!(b.get(&Currency::Usd).copied(), Some(Decimal::new(1000, 2)));
}

async fn due_contracts_and_usage(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let mut ids = Vec::new();
    for day in ["2024-01-03", "2024-01-01", "2024-01-02"] {
        let (c, inv) = signed(&cu.id, &format!("{day}T00:00:00Z"));
        ids.push(c.id.clone());
        store
            .commit(
                &t.id,
                Commit {
                    contract: Some((c, 0)),
                    invoices: inv,
                    events: vec![],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    // Renewals fall on Feb 3, Feb 1, Feb 2: due by Feb 2, in order of due instant.
    let due = store
        .due_contracts(&t.id, ts("2024-02-02T00:00:00Z"), 10)
        .await
        .unwrap();
    assert_eq!(due, vec![ids[1].clone(), ids[2].clone()]);
    let one = store
        .due_contracts(&t.id, ts("2024-03-01T00:00:00Z"), 1)
        .await
        .unwrap();
    assert_eq!(one, vec![ids[1].clone()]);
    assert!(
        store
            .due_contracts(&t.id, ts("2024-01-31T00:00:00Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let rec = |u: i64, at: &str| UsageRecord {
        feature_slug: "api_calls".into(),
        units: Decimal::from(u),
        timestamp: ts(at),
        is_absolute: false,
    };
    store
        .record_usage(
            &t.id,
            &ids[0],
            &[
                rec(5, "2024-01-05T00:00:00Z"),
                rec(7, "2024-01-20T00:00:00Z"),
            ],
        )
        .await
        .unwrap();
    let got = store
        .usage(&t.id, &ids[0], ts("2024-01-10T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(got, vec![rec(7, "2024-01-20T00:00:00Z")]);
    assert!(
        store
            .usage(&t.id, &ids[1], ts("2024-01-01T00:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// `billing_state` answers the contract with exactly what its billing reads: usage from the
/// period start on, its own customer and balances, the tenant's catalog; nothing of another
/// contract, customer or tenant.
async fn billing_state_reads_what_bills_a_contract(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "state").await;
    let other = customer(store, &t, "other").await;
    let (c, mut invoices) = signed(&cu.id, "2024-01-01T00:00:00Z");
    invoices[0].credit_added = Decimal::new(500, 2);
    let (d, mut theirs) = signed(&other.id, "2024-01-01T00:00:00Z");
    theirs[0].credit_added = Decimal::new(700, 2);
    for (k, inv) in [(c.clone(), invoices), (d.clone(), theirs)] {
        let commit = Commit {
            contract: Some((k, 0)),
            invoices: inv,
            ..Default::default()
        };
        store.commit(&t.id, commit).await.unwrap();
    }
    let rec = |u: i64, at: &str| UsageRecord {
        feature_slug: "api_calls".into(),
        units: Decimal::from(u),
        timestamp: ts(at),
        is_absolute: false,
    };
    // The period runs from Jan 1: the December record is before it and is not read.
    store
        .record_usage(
            &t.id,
            &c.id,
            &[
                rec(2, "2023-12-20T00:00:00Z"),
                rec(3, "2024-01-05T00:00:00Z"),
            ],
        )
        .await
        .unwrap();
    store
        .record_usage(&t.id, &d.id, &[rec(9, "2024-01-06T00:00:00Z")])
        .await
        .unwrap();

    let s = store.billing_state(&t.id, &c.id).await.unwrap().unwrap();
    assert_eq!(*s.contract, c);
    assert_eq!(s.version, 1);
    assert_eq!(s.usage, vec![rec(3, "2024-01-05T00:00:00Z")]);
    assert_eq!(s.customer, Some(cu.clone()));
    // Only this customer's credit: 5.00 (the other customer's 7.00 is theirs).
    assert_eq!(
        s.balances,
        BTreeMap::from([(Currency::Usd, Decimal::new(500, 2))])
    );
    assert_eq!(*s.catalog, tally_core::examples::basic_catalog().0);
    // Read again (a store may answer from what it parsed): the same state.
    let again = store.billing_state(&t.id, &c.id).await.unwrap().unwrap();
    assert_eq!((&again.contract, again.version), (&s.contract, 1));
    // A new version is read as written, never an older one kept.
    let mut changed = c.clone();
    changed.cancel_at_period_end = true;
    let commit = Commit {
        contract: Some((changed.clone(), 1)),
        ..Default::default()
    };
    store.commit(&t.id, commit).await.unwrap();
    let s = store.billing_state(&t.id, &c.id).await.unwrap().unwrap();
    assert_eq!((&*s.contract, s.version), (&changed, 2));
    assert_eq!(s.usage, vec![rec(3, "2024-01-05T00:00:00Z")]);

    assert!(
        store
            .billing_state(&t.id, "Cont_none")
            .await
            .unwrap()
            .is_none()
    );
    let stranger = tenant(store).await;
    assert!(
        store
            .billing_state(&stranger.id, &c.id)
            .await
            .unwrap()
            .is_none()
    );
}

async fn lists_page_and_filter(store: &dyn Store) {
    let t = tenant(store).await;
    let a = customer(store, &t, "a").await;
    let b = customer(store, &t, "b").await;
    for (cu, day) in [(&a, "01"), (&b, "02"), (&a, "03"), (&a, "04")] {
        let (c, inv) = signed(&cu.id, &format!("2024-01-{day}T00:00:00Z"));
        store
            .commit(
                &t.id,
                Commit {
                    contract: Some((c, 0)),
                    invoices: inv,
                    events: vec![],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let (page, total) = store
        .contracts(
            &t.id,
            Some(&a.id),
            &Page {
                offset: 1,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((page.len(), total), (1, 3));
    assert_eq!(
        page[0].contract.activation,
        Some(ts("2024-01-03T00:00:00Z"))
    );
    let f = InvoiceFilter {
        customer_id: Some(a.id.clone()),
        date_after: Some(ts("2024-01-02T00:00:00Z")),
        ..InvoiceFilter::default()
    };
    let (list, total) = store
        .invoices(
            &t.id,
            &f,
            &Page {
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(total, 2);
    let numbers: Vec<&str> = list.iter().map(|i| i.number.as_str()).collect();
    assert_eq!(numbers, ["2024-000003", "2024-000004"]);
    let before = InvoiceFilter {
        date_before: Some(ts("2024-01-02T00:00:00Z")),
        ..InvoiceFilter::default()
    };
    assert_eq!(
        store
            .invoices(
                &t.id,
                &before,
                &Page {
                    offset: 0,
                    limit: 10
                }
            )
            .await
            .unwrap()
            .1,
        1
    );
}

async fn tenants_are_isolated(store: &dyn Store) {
    let t1 = tenant(store).await;
    let t2 = tenant(store).await;
    let cu = customer(store, &t1, "shared-slug").await;
    customer(store, &t2, "shared-slug").await;
    let (c, done) = commit_signed(store, &t1.id, &cu.id, "2024-01-01T00:00:00Z").await;
    assert!(store.contract(&t2.id, &c.id).await.unwrap().is_none());
    assert!(store.customer(&t2.id, &cu.id).await.unwrap().is_none());
    assert!(
        store
            .invoice(&t2.id, &done.invoices[0].id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .contracts(
                &t2.id,
                None,
                &Page {
                    offset: 0,
                    limit: 10
                }
            )
            .await
            .unwrap()
            .1,
        0
    );
    // Numbering is per tenant.
    let (_, d2) = commit_signed(store, &t2.id, &cu.id, "2024-01-01T00:00:00Z").await;
    assert_eq!(d2.invoices[0].number, "2024-000001");
}

async fn idempotent_responses(store: &dyn Store) {
    let t = tenant(store).await;
    let first = IdempotentResponse {
        request_hash: "h1".into(),
        status: 200,
        body: "\"Cont_1\"".into(),
        created_at: ts("2024-01-01T00:00:00Z"),
    };
    store.save_idempotent(&t.id, "k", &first).await.unwrap();
    let second = IdempotentResponse {
        request_hash: "h2".into(),
        ..first.clone()
    };
    store.save_idempotent(&t.id, "k", &second).await.unwrap();
    assert_eq!(
        store.idempotent(&t.id, "k").await.unwrap(),
        Some(first),
        "the first writer wins"
    );
    assert_eq!(store.idempotent(&t.id, "other").await.unwrap(), None);
}

async fn concurrent_writers_number_gaplessly(store: Arc<dyn Store>) {
    let t = tenant(store.as_ref()).await;
    let cu = customer(store.as_ref(), &t, "c").await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let tid = t.id.clone();
        let cid = cu.id.clone();
        tasks.push(tokio::spawn(async move {
            let (c, inv) = signed(&cid, "2024-01-01T00:00:00Z");
            store
                .commit(
                    &tid,
                    Commit {
                        contract: Some((c, 0)),
                        invoices: inv,
                        events: vec![],
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
        }));
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.extend(task.await.unwrap().invoices.into_iter().map(|i| i.number));
    }
    numbers.sort();
    let want: Vec<String> = (1..=16).map(|n| format!("2024-{n:06}")).collect();
    assert_eq!(numbers, want);
}

async fn claims_are_disjoint_and_expire(store: &dyn Store) {
    let t = tenant(store).await;
    let cu = customer(store, &t, "c").await;
    let mut ids = Vec::new();
    for day in ["01", "02", "03"] {
        let (c, inv) = signed(&cu.id, &format!("2024-01-{day}T00:00:00Z"));
        ids.push(c.id.clone());
        store
            .commit(
                &t.id,
                Commit {
                    contract: Some((c, 0)),
                    invoices: inv,
                    events: vec![],
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let until = ts("2024-03-01T00:00:00Z");
    let now = ts("2026-01-01T00:00:00Z");
    let lease = ts("2026-01-01T00:05:00Z");
    let first = store.claim_due(&t.id, until, 2, now, lease).await.unwrap();
    assert_eq!(first, vec![ids[0].clone(), ids[1].clone()]);
    let second = store.claim_due(&t.id, until, 2, now, lease).await.unwrap();
    assert_eq!(
        second,
        vec![ids[2].clone()],
        "claimed contracts are skipped"
    );
    assert!(
        store
            .claim_due(&t.id, until, 2, now, lease)
            .await
            .unwrap()
            .is_empty()
    );
    // After the lease runs out (a crashed worker), the contracts can be claimed again.
    let later = ts("2026-01-01T00:06:00Z");
    let again = store
        .claim_due(&t.id, until, 10, later, ts("2026-01-01T00:11:00Z"))
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
}
