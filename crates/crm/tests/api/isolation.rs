//! Tenant isolation as a property: random sequences of operations by the admins and users
//! of three tenants, some aimed at other tenants' ids on purpose, and not one response may
//! carry another tenant's data.

use proptest::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{spawn_app, App, Who};

/// One step: who acts, what they do, and which known record (of any tenant) they aim at.
#[derive(Debug, Clone)]
struct Step {
    actor: usize,
    op: Op,
    target: usize,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    CreateCustomer,
    CreateCompany,
    CreateDeal,
    CreateNote,
    Get,
    Patch,
    Delete,
    ListCustomers,
    Search,
    ListDeals,
    Board,
    ListNotes,
    Timeline,
    CompanyCustomers,
    Export,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::CreateCustomer),
        2 => Just(Op::CreateCompany),
        2 => Just(Op::CreateDeal),
        2 => Just(Op::CreateNote),
        3 => Just(Op::Get),
        2 => Just(Op::Patch),
        1 => Just(Op::Delete),
        1 => Just(Op::ListCustomers),
        1 => Just(Op::Search),
        1 => Just(Op::ListDeals),
        1 => Just(Op::Board),
        1 => Just(Op::ListNotes),
        1 => Just(Op::Timeline),
        1 => Just(Op::CompanyCustomers),
        1 => Just(Op::Export),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (0..6usize, op(), any::<prop::sample::Index>()).prop_map(|(actor, op, target)| Step {
            actor,
            op,
            target: target.index(usize::MAX),
        }),
        10..40,
    )
}

/// A record some tenant created: its collection path, id and owning tenant.
#[derive(Debug, Clone)]
struct Known {
    collection: &'static str,
    id: String,
    tenant: usize,
}

struct World {
    app: App,
    /// Per tenant: slug, admin, user.
    tenants: Vec<(String, Who, Who)>,
    known: Vec<Known>,
    counter: usize,
}

impl World {
    async fn new() -> World {
        let app = spawn_app().await;
        let mut tenants = Vec::new();
        for slug in ["tenant-a", "tenant-b", "tenant-c"] {
            let (_, admin, user) = app.tenant_with_people(slug).await;
            tenants.push((slug.to_string(), admin, user));
        }
        World {
            app,
            tenants,
            known: Vec::new(),
            counter: 0,
        }
    }

    fn who(&self, actor: usize) -> (usize, Who) {
        let tenant = actor / 2;
        let (_, admin, user) = &self.tenants[tenant];
        (
            tenant,
            if actor.is_multiple_of(2) {
                admin.clone()
            } else {
                user.clone()
            },
        )
    }

    /// A known record: of any tenant, chosen by `target`.
    fn pick(&self, target: usize, collection: Option<&str>) -> Option<Known> {
        let pool: Vec<&Known> = self
            .known
            .iter()
            .filter(|k| collection.is_none_or(|c| k.collection == c))
            .collect();
        (!pool.is_empty()).then(|| pool[target % pool.len()].clone())
    }

    /// A record of `tenant` in `collection`, to link new records to.
    fn own(&self, tenant: usize, collection: &str, target: usize) -> Option<String> {
        let pool: Vec<&Known> = self
            .known
            .iter()
            .filter(|k| k.collection == collection && k.tenant == tenant)
            .collect();
        (!pool.is_empty()).then(|| pool[target % pool.len()].id.clone())
    }

    /// Text that marks a tenant's data: every record a tenant writes carries its slug.
    fn marker(&self, tenant: usize) -> String {
        format!("{}-data", self.tenants[tenant].0)
    }

    async fn run(&mut self, step: &Step) {
        let (tenant, who) = self.who(step.actor);
        self.counter += 1;
        let n = self.counter;
        let mark = self.marker(tenant);
        let (path, method, body): (String, Method, Option<Value>) = match step.op {
            Op::CreateCustomer => (
                "/api/crm/customers".into(),
                Method::POST,
                Some(json!({"first_name": mark, "last_name": format!("n{n}"),
                            "email": format!("{mark}{n}@example.com"),
                            "company_id": self.own(tenant, "companies", step.target)})),
            ),
            Op::CreateCompany => (
                "/api/crm/companies".into(),
                Method::POST,
                Some(json!({"name": format!("{mark} {n}")})),
            ),
            Op::CreateDeal => (
                "/api/crm/deals".into(),
                Method::POST,
                Some(
                    json!({"title": format!("{mark} {n}"), "value": 100 * n, "currency": "EUR",
                            "customer_id": self.own(tenant, "customers", step.target)}),
                ),
            ),
            Op::CreateNote => {
                // Sometimes aimed at another tenant's customer: must be refused.
                let Some(target) = self.pick(step.target, Some("customers")) else {
                    return;
                };
                (
                    "/api/crm/notes".into(),
                    Method::POST,
                    Some(json!({"kind": "note", "body": format!("{mark} {n}"),
                                "customer_id": target.id})),
                )
            }
            Op::Get | Op::Patch | Op::Delete => {
                let Some(target) = self.pick(step.target, None) else {
                    return;
                };
                let path = format!("/api/crm/{}/{}", target.collection, target.id);
                match step.op {
                    Op::Get => (path, Method::GET, None),
                    Op::Delete => (path, Method::DELETE, None),
                    _ => {
                        let body = match target.collection {
                            "customers" => json!({"last_name": format!("{mark} p{n}")}),
                            "companies" => json!({"industry": format!("{mark} p{n}")}),
                            "deals" => json!({"title": format!("{mark} p{n}")}),
                            _ => json!({"body": format!("{mark} p{n}")}),
                        };
                        let reply = self
                            .app
                            .send(
                                Some(&who),
                                Method::PATCH,
                                &path,
                                Some(body),
                                &[("if-match", "\"1\"")],
                            )
                            .await;
                        self.check(tenant, &reply.text, reply.status.as_u16(), Some(&target));
                        return;
                    }
                }
            }
            Op::ListCustomers => ("/api/crm/customers?limit=500".into(), Method::GET, None),
            Op::Search => (
                format!("/api/crm/customers?q={}", self.tenants[(tenant + 1) % 3].0),
                Method::GET,
                None,
            ),
            Op::ListDeals => ("/api/crm/deals?limit=500".into(), Method::GET, None),
            Op::Board => ("/api/crm/deals?view=board".into(), Method::GET, None),
            Op::ListNotes => ("/api/crm/notes?limit=500".into(), Method::GET, None),
            Op::Timeline => {
                let Some(target) = self.pick(step.target, Some("customers")) else {
                    return;
                };
                (
                    format!("/api/crm/customers/{}/timeline", target.id),
                    Method::GET,
                    None,
                )
            }
            Op::CompanyCustomers => {
                let Some(target) = self.pick(step.target, Some("companies")) else {
                    return;
                };
                (
                    format!("/api/crm/companies/{}/customers", target.id),
                    Method::GET,
                    None,
                )
            }
            Op::Export => ("/api/crm/customers/export".into(), Method::GET, None),
        };
        let reply = self
            .app
            .send(Some(&who), method.clone(), &path, body, &[])
            .await;
        let target = match step.op {
            Op::Get | Op::Delete => self.pick(step.target, None),
            Op::Timeline => self.pick(step.target, Some("customers")),
            Op::CompanyCustomers => self.pick(step.target, Some("companies")),
            _ => None,
        };
        self.check(tenant, &reply.text, reply.status.as_u16(), target.as_ref());
        if method == Method::POST && reply.status.as_u16() == 201 {
            let collection = path.trim_start_matches("/api/crm/");
            let collection = match collection {
                "customers" => "customers",
                "companies" => "companies",
                "deals" => "deals",
                _ => "notes",
            };
            self.known.push(Known {
                collection,
                id: reply.id(),
                tenant,
            });
        }
        if method == Method::DELETE && reply.status.as_u16() == 204 {
            if let Some(t) = target {
                self.known.retain(|k| k.id != t.id);
            }
        }
    }

    /// No response may show another tenant's ids or marked text, and a record of another
    /// tenant is answered as not found.
    fn check(&self, tenant: usize, text: &str, status: u16, target: Option<&Known>) {
        assert_ne!(status, 500, "{text}");
        for other in (0..3).filter(|t| *t != tenant) {
            let marker = self.marker(other);
            assert!(
                !text.contains(&marker),
                "tenant {tenant} saw {marker}: {text}"
            );
            for k in self.known.iter().filter(|k| k.tenant == other) {
                assert!(!text.contains(&k.id), "tenant {tenant} saw {k:?}: {text}");
            }
        }
        if let Some(t) = target {
            if t.tenant != tenant {
                assert!(
                    matches!(status, 404 | 403),
                    "another tenant's {t:?} answered {status}: {text}"
                );
            }
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_response_carries_another_tenants_data(steps in steps()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut world = World::new().await;
            for step in &steps {
                world.run(step).await;
            }
        });
    }
}
