//! Fair share between tenants: each tenant's requests are metered against its own quota
//! before they cost anything shared.
//!
//! Every authenticated request of an API service passes [`admit`] first: the tenant's
//! request rate (a GCRA bucket from `governor`, with a burst) and its requests in flight (a
//! semaphore). Batches also pass [`hold_batch`] (batches of one tenant running at once)
//! before their body is read, then [`Admission::charge_batch`] (commands per second, the
//! whole batch at once). Statistics take [`Admission::query`] (queries of one tenant
//! computed at once, and a cost budget per second). A refusal is a 429 in the JSON error
//! shape, with `Retry-After` and the limit it hit, before any shared work is done: the
//! group commit, the pools and the statistics slots only ever see what the quotas let
//! through, so one tenant's flood costs another tenant only the refusals' own handling.
//!
//! Quotas hold across replicas by division, not by shared state: with
//! `HERALD_QUOTA_REPLICAS = n`, each process enforces every rate, burst and concurrency
//! divided by `n` (rounded up, at least 1). Nothing is asked of Redis or the database per
//! request, so no command can fail or wait because a limiter store is down; the price is
//! that a tenant whose requests all reach one replica gets `1/n` of its quota, and that a
//! change of the replica count needs the setting changed with it.
//!
//! A tenant's own quota (`tenant_quotas`, set with `command-service tenant quota`) comes with
//! its API key's lookup and is cached as long as the key ([`crate::auth::CACHE_TTL`]), so a
//! change reaches every replica within that time. Changing a tenant's quota starts its
//! buckets afresh.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
// Each limiter's own clock: building a clock reads the CPU's identity, far dearer than a
// refusal.
use governor::clock::Clock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, Opts};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::auth::{ApiKeys, Tenant};
use crate::http_error::{ApiError, LimitHit};
use crate::Metrics;

/// Largest value any quota may be set to.
pub const MAX_LIMIT: u32 = 1_000_000_000;
/// Refusals of one limit, by service and limit (and tenant when configured).
pub const QUOTA_REFUSALS_TOTAL: &str = "herald_quota_refusals_total";
/// How long the tenant refused for longest has been refused without a pause.
pub const QUOTA_REFUSED_FOR_SECONDS: &str = "herald_quota_refused_for_seconds";
/// A tenant refused nothing for this long has ended its run of refusals.
pub const REFUSAL_PAUSE: Duration = Duration::from_secs(60);
/// Tenants whose buckets one process keeps; idle ones are dropped beyond it (they start
/// afresh, full, when they come back).
const MAX_TRACKED_TENANTS: usize = 100_000;

/// Every quota variable at [`MAX_LIMIT`]: the environment of load tools and of tests that
/// measure or exercise the services rather than the quotas (a test of the quotas sets its
/// own after these).
pub const UNLIMITED: &[(&str, &str)] = &[
    ("HERALD_QUOTA_REQUESTS_PER_SECOND", "1000000000"),
    ("HERALD_QUOTA_REQUEST_BURST", "1000000000"),
    ("HERALD_QUOTA_CONCURRENT_REQUESTS", "1000000000"),
    ("HERALD_QUOTA_BATCH_EVENTS_PER_SECOND", "1000000000"),
    ("HERALD_QUOTA_BATCH_EVENT_BURST", "1000000000"),
    ("HERALD_QUOTA_CONCURRENT_BATCHES", "1000000000"),
    ("HERALD_QUOTA_CONCURRENT_QUERIES", "1000000000"),
    ("HERALD_QUOTA_QUERY_COST_PER_SECOND", "1000000000"),
    ("HERALD_QUOTA_QUERY_COST_BURST", "1000000000"),
];

/// What one tenant may ask of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Authenticated requests per second.
    pub requests_per_second: u32,
    /// Requests above the rate that may come at once.
    pub request_burst: u32,
    /// Requests in flight at once.
    pub concurrent_requests: u32,
    /// Commands per second carried by batches.
    pub batch_events_per_second: u32,
    /// Batch commands above the rate that may come at once; also the largest batch.
    pub batch_event_burst: u32,
    /// Batch requests running at once.
    pub concurrent_batches: u32,
    /// Statistics queries computed at once.
    pub concurrent_queries: u32,
    /// Statistics cost per second.
    pub query_cost_per_second: u32,
    /// Statistics cost that may be spent at once; also the dearest single query.
    pub query_cost_burst: u32,
}

/// One tenant's own quota: each `Some` replaces the configured default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides {
    /// See [`Limits::requests_per_second`].
    pub requests_per_second: Option<u32>,
    /// See [`Limits::request_burst`].
    pub request_burst: Option<u32>,
    /// See [`Limits::concurrent_requests`].
    pub concurrent_requests: Option<u32>,
    /// See [`Limits::batch_events_per_second`].
    pub batch_events_per_second: Option<u32>,
    /// See [`Limits::batch_event_burst`].
    pub batch_event_burst: Option<u32>,
    /// See [`Limits::concurrent_batches`].
    pub concurrent_batches: Option<u32>,
    /// See [`Limits::concurrent_queries`].
    pub concurrent_queries: Option<u32>,
    /// See [`Limits::query_cost_per_second`].
    pub query_cost_per_second: Option<u32>,
    /// See [`Limits::query_cost_burst`].
    pub query_cost_burst: Option<u32>,
}

/// The names of the settable quotas, as columns of `tenant_quotas` and as the command line
/// and the error answers name them.
pub const NAMES: [&str; 9] = [
    "requests_per_second",
    "request_burst",
    "concurrent_requests",
    "batch_events_per_second",
    "batch_event_burst",
    "concurrent_batches",
    "concurrent_queries",
    "query_cost_per_second",
    "query_cost_burst",
];

impl Overrides {
    /// The value set for quota `name` (one of [`NAMES`]), if any.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.slot(name).and_then(|v| *v)
    }

    /// Sets (or, with `None`, clears) quota `name`; false for an unknown name.
    pub fn set(&mut self, name: &str, value: Option<u32>) -> bool {
        match self.slot_mut(name) {
            Some(slot) => {
                *slot = value;
                true
            }
            None => false,
        }
    }

    fn slot(&self, name: &str) -> Option<&Option<u32>> {
        Some(match name {
            "requests_per_second" => &self.requests_per_second,
            "request_burst" => &self.request_burst,
            "concurrent_requests" => &self.concurrent_requests,
            "batch_events_per_second" => &self.batch_events_per_second,
            "batch_event_burst" => &self.batch_event_burst,
            "concurrent_batches" => &self.concurrent_batches,
            "concurrent_queries" => &self.concurrent_queries,
            "query_cost_per_second" => &self.query_cost_per_second,
            "query_cost_burst" => &self.query_cost_burst,
            _ => return None,
        })
    }

    fn slot_mut(&mut self, name: &str) -> Option<&mut Option<u32>> {
        Some(match name {
            "requests_per_second" => &mut self.requests_per_second,
            "request_burst" => &mut self.request_burst,
            "concurrent_requests" => &mut self.concurrent_requests,
            "batch_events_per_second" => &mut self.batch_events_per_second,
            "batch_event_burst" => &mut self.batch_event_burst,
            "concurrent_batches" => &mut self.concurrent_batches,
            "concurrent_queries" => &mut self.concurrent_queries,
            "query_cost_per_second" => &mut self.query_cost_per_second,
            "query_cost_burst" => &mut self.query_cost_burst,
            _ => return None,
        })
    }
}

impl Limits {
    /// These limits with `own` in place of the defaults it sets.
    pub fn with(self, own: &Overrides) -> Limits {
        Limits {
            requests_per_second: own.requests_per_second.unwrap_or(self.requests_per_second),
            request_burst: own.request_burst.unwrap_or(self.request_burst),
            concurrent_requests: own.concurrent_requests.unwrap_or(self.concurrent_requests),
            batch_events_per_second: own
                .batch_events_per_second
                .unwrap_or(self.batch_events_per_second),
            batch_event_burst: own.batch_event_burst.unwrap_or(self.batch_event_burst),
            concurrent_batches: own.concurrent_batches.unwrap_or(self.concurrent_batches),
            concurrent_queries: own.concurrent_queries.unwrap_or(self.concurrent_queries),
            query_cost_per_second: own
                .query_cost_per_second
                .unwrap_or(self.query_cost_per_second),
            query_cost_burst: own.query_cost_burst.unwrap_or(self.query_cost_burst),
        }
    }

    /// The value of quota `name` (one of [`NAMES`]).
    pub fn get(&self, name: &str) -> Option<u32> {
        Some(match name {
            "requests_per_second" => self.requests_per_second,
            "request_burst" => self.request_burst,
            "concurrent_requests" => self.concurrent_requests,
            "batch_events_per_second" => self.batch_events_per_second,
            "batch_event_burst" => self.batch_event_burst,
            "concurrent_batches" => self.concurrent_batches,
            "concurrent_queries" => self.concurrent_queries,
            "query_cost_per_second" => self.query_cost_per_second,
            "query_cost_burst" => self.query_cost_burst,
            _ => return None,
        })
    }
}

/// The limits a request can be refused by (the `limit` label and the error's `limit.name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// [`Limits::requests_per_second`] with its burst.
    RequestsPerSecond,
    /// [`Limits::concurrent_requests`].
    ConcurrentRequests,
    /// [`Limits::batch_events_per_second`] with its burst.
    BatchEventsPerSecond,
    /// [`Limits::concurrent_batches`].
    ConcurrentBatches,
    /// [`Limits::concurrent_queries`].
    ConcurrentQueries,
    /// [`Limits::query_cost_per_second`] with its burst.
    QueryCostPerSecond,
}

impl Limit {
    /// Every limit, in the order the documentation lists them.
    pub const ALL: [Limit; 6] = [
        Limit::RequestsPerSecond,
        Limit::ConcurrentRequests,
        Limit::BatchEventsPerSecond,
        Limit::ConcurrentBatches,
        Limit::ConcurrentQueries,
        Limit::QueryCostPerSecond,
    ];

    /// Its name on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::RequestsPerSecond => "requests_per_second",
            Limit::ConcurrentRequests => "concurrent_requests",
            Limit::BatchEventsPerSecond => "batch_events_per_second",
            Limit::ConcurrentBatches => "concurrent_batches",
            Limit::ConcurrentQueries => "concurrent_queries",
            Limit::QueryCostPerSecond => "query_cost_per_second",
        }
    }

    fn hit(self, limits: &Limits) -> LimitHit {
        let (value, burst) = match self {
            Limit::RequestsPerSecond => (limits.requests_per_second, Some(limits.request_burst)),
            Limit::ConcurrentRequests => (limits.concurrent_requests, None),
            Limit::BatchEventsPerSecond => (
                limits.batch_events_per_second,
                Some(limits.batch_event_burst),
            ),
            Limit::ConcurrentBatches => (limits.concurrent_batches, None),
            Limit::ConcurrentQueries => (limits.concurrent_queries, None),
            Limit::QueryCostPerSecond => {
                (limits.query_cost_per_second, Some(limits.query_cost_burst))
            }
        };
        LimitHit {
            name: self.as_str().to_string(),
            value,
            burst,
        }
    }
}

/// One tenant's buckets and semaphores in this process.
struct TenantState {
    /// The tenant's whole quota (before division by the replicas), as answers name it.
    limits: Limits,
    requests: DefaultDirectRateLimiter,
    batch_events: DefaultDirectRateLimiter,
    query_cost: DefaultDirectRateLimiter,
    in_flight: Arc<Semaphore>,
    batches: Arc<Semaphore>,
    queries: Arc<Semaphore>,
    /// The current run of refusals: (its first, its latest).
    refusing: Mutex<Option<(Instant, Instant)>>,
}

impl TenantState {
    fn new(limits: Limits, replicas: u32) -> Self {
        let share = |n: u32| n.div_ceil(replicas).max(1);
        let semaphore = |n: u32| Arc::new(Semaphore::new(share(n) as usize));
        Self {
            limits,
            requests: RateLimiter::direct(rate(
                limits.requests_per_second,
                limits.request_burst,
                replicas,
            )),
            batch_events: RateLimiter::direct(rate(
                limits.batch_events_per_second,
                limits.batch_event_burst,
                replicas,
            )),
            query_cost: RateLimiter::direct(rate(
                limits.query_cost_per_second,
                limits.query_cost_burst,
                replicas,
            )),
            in_flight: semaphore(limits.concurrent_requests),
            batches: semaphore(limits.concurrent_batches),
            queries: semaphore(limits.concurrent_queries),
            refusing: Mutex::new(None),
        }
    }

    fn refused_for(&self, now: Instant) -> Option<Duration> {
        let run = *self.refusing.lock().expect("refusal lock");
        run.filter(|(_, last)| now.duration_since(*last) < REFUSAL_PAUSE)
            .map(|(first, _)| now.duration_since(first))
    }
}

/// A GCRA quota of `per_second` with `burst`, divided among `replicas`.
fn rate(per_second: u32, burst: u32, replicas: u32) -> Quota {
    let per_second = per_second.max(1);
    let period = Duration::from_secs_f64(f64::from(replicas) / f64::from(per_second))
        .max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst.div_ceil(replicas).max(1)).expect("at least 1");
    Quota::with_period(period)
        .expect("a non-zero period")
        .allow_burst(burst)
}

/// Whole seconds until `wait` has passed, at least 1 (what `Retry-After` carries).
fn retry_seconds(wait: Duration) -> u32 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(whole.max(1)).unwrap_or(u32::MAX)
}

struct Inner {
    service: &'static str,
    defaults: Limits,
    replicas: u32,
    tenants: Mutex<HashMap<Uuid, Arc<TenantState>>>,
    refusals: IntCounterVec,
    per_tenant: bool,
}

/// The quotas of every tenant in one service process.
#[derive(Clone)]
pub struct Quotas {
    inner: Arc<Inner>,
}

impl Quotas {
    /// Quotas with `settings`' defaults and replica count, their metrics on `metrics`.
    pub fn new(metrics: &Metrics, settings: &crate::Settings) -> Self {
        let labels: &[&str] = if settings.quota_metrics_per_tenant {
            &["limit", "tenant"]
        } else {
            &["limit"]
        };
        let refusals = metrics.counter_vec(
            QUOTA_REFUSALS_TOTAL,
            "Requests refused because their tenant was over a quota, by the limit hit.",
            labels,
        );
        if !settings.quota_metrics_per_tenant {
            for limit in Limit::ALL {
                refusals.with_label_values(&[limit.as_str()]);
            }
        }
        let quotas = Self {
            inner: Arc::new(Inner {
                service: metrics.service(),
                defaults: settings.quota,
                replicas: settings.quota_replicas,
                tenants: Mutex::new(HashMap::new()),
                refusals,
                per_tenant: settings.quota_metrics_per_tenant,
            }),
        };
        metrics
            .registry()
            .register(Box::new(RefusedFor::new(&quotas)))
            .expect("the refusal gauge registers once");
        quotas
    }

    /// The limits in force for a tenant with `own` quota.
    pub fn limits_for(&self, own: &Overrides) -> Limits {
        self.inner.defaults.with(own)
    }

    fn state(&self, tenant: Uuid, own: &Overrides) -> Arc<TenantState> {
        let limits = self.limits_for(own);
        let mut tenants = self.inner.tenants.lock().expect("quota lock");
        if let Some(state) = tenants.get(&tenant) {
            if state.limits == limits {
                return state.clone();
            }
        }
        if tenants.len() >= MAX_TRACKED_TENANTS {
            let now = Instant::now();
            tenants.retain(|_, s| Arc::strong_count(s) > 1 || s.refused_for(now).is_some());
        }
        let state = Arc::new(TenantState::new(limits, self.inner.replicas));
        tenants.insert(tenant, state.clone());
        state
    }

    fn refuse(
        &self,
        tenant: Uuid,
        state: &TenantState,
        limit: Limit,
        retry_after: u32,
    ) -> ApiError {
        let now = Instant::now();
        {
            let mut run = state.refusing.lock().expect("refusal lock");
            *run = match *run {
                Some((first, last)) if now.duration_since(last) < REFUSAL_PAUSE => {
                    Some((first, now))
                }
                _ => Some((now, now)),
            };
        }
        if self.inner.per_tenant {
            let id = tenant.to_string();
            self.inner
                .refusals
                .with_label_values(&[limit.as_str(), &id])
                .inc();
        } else {
            self.inner
                .refusals
                .with_label_values(&[limit.as_str()])
                .inc();
        }
        let hit = limit.hit(&state.limits);
        let shared = if self.inner.replicas > 1 {
            format!(
                " (shared by {} replicas of the {})",
                self.inner.replicas, self.inner.service
            )
        } else {
            String::new()
        };
        let what = match limit {
            Limit::RequestsPerSecond => format!(
                "this tenant may send {} requests per second with bursts of {}{shared}",
                hit.value,
                hit.burst.unwrap_or(hit.value)
            ),
            Limit::ConcurrentRequests => {
                format!(
                    "this tenant may have {} requests in flight{shared}",
                    hit.value
                )
            }
            Limit::BatchEventsPerSecond => format!(
                "this tenant's batches may carry {} commands per second with bursts of {}{shared}",
                hit.value,
                hit.burst.unwrap_or(hit.value)
            ),
            Limit::ConcurrentBatches => {
                format!("this tenant may run {} batches at once{shared}", hit.value)
            }
            Limit::ConcurrentQueries => format!(
                "this tenant may compute {} statistics queries at once{shared}",
                hit.value
            ),
            Limit::QueryCostPerSecond => format!(
                "this tenant's statistics may cost {} per second with bursts of {}{shared}",
                hit.value,
                hit.burst.unwrap_or(hit.value)
            ),
        };
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota_exceeded",
            format!("over quota: {what}; retry after {retry_after} s"),
        )
        .with_retry_after(retry_after)
        .with_limit(hit)
    }

    /// Admits one request of `tenant`, or refuses it over its request rate or its requests
    /// in flight. The admission holds the in-flight slot until dropped.
    pub fn admit(&self, tenant: Tenant, own: &Overrides) -> Result<Admission, ApiError> {
        let state = self.state(tenant.id, own);
        // The slot first: a request refused for concurrency spends none of the rate.
        let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
            return Err(self.refuse(tenant.id, &state, Limit::ConcurrentRequests, 1));
        };
        if let Err(not_until) = state.requests.check() {
            let wait = not_until.wait_time_from(state.requests.clock().now());
            return Err(self.refuse(
                tenant.id,
                &state,
                Limit::RequestsPerSecond,
                retry_seconds(wait),
            ));
        }
        Ok(Admission {
            inner: Arc::new(Admitted {
                tenant,
                state,
                quotas: self.clone(),
                _in_flight: permit,
            }),
        })
    }

    /// The longest current run of refusals of any tenant.
    fn longest_refused_for(&self) -> Duration {
        let now = Instant::now();
        let tenants = self.inner.tenants.lock().expect("quota lock");
        tenants
            .values()
            .filter_map(|s| s.refused_for(now))
            .max()
            .unwrap_or_default()
    }
}

struct Admitted {
    tenant: Tenant,
    state: Arc<TenantState>,
    quotas: Quotas,
    _in_flight: OwnedSemaphorePermit,
}

/// An admitted request: its tenant, and its in-flight slot until the last clone is dropped.
/// Handlers take it as an extractor to charge batches and statistics.
#[derive(Clone)]
pub struct Admission {
    inner: Arc<Admitted>,
}

impl Admission {
    /// The tenant admitted.
    pub fn tenant(&self) -> Tenant {
        self.inner.tenant
    }

    /// The limits in force for this tenant.
    pub fn limits(&self) -> Limits {
        self.inner.state.limits
    }

    fn refuse(&self, limit: Limit, retry_after: u32) -> ApiError {
        self.inner
            .quotas
            .refuse(self.inner.tenant.id, &self.inner.state, limit, retry_after)
    }

    /// A slot among the tenant's batches running at once.
    pub fn batch_slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner
            .state
            .batches
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse(Limit::ConcurrentBatches, 1))
    }

    /// Charges a batch of `commands` whole, or refuses it whole: 429 while the tenant's
    /// batch rate has not room for it yet, 413 `batch_over_quota` when it is larger than
    /// the tenant's batch burst (it could never pass).
    pub fn charge_batch(&self, commands: usize) -> Result<(), ApiError> {
        let limits = self.inner.state.limits;
        let per_replica = limits
            .batch_event_burst
            .div_ceil(self.inner.quotas.inner.replicas)
            .max(1);
        let n = u32::try_from(commands)
            .ok()
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::MIN);
        match self.inner.state.batch_events.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let now = self.inner.state.batch_events.clock().now();
                Err(self.refuse(
                    Limit::BatchEventsPerSecond,
                    retry_seconds(not_until.wait_time_from(now)),
                ))
            }
            Err(_) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch_over_quota",
                format!(
                    "this batch carries {commands} commands; this tenant's batches may carry at \
                     most {per_replica} at once: split it"
                ),
            )
            .with_field("commands")
            .with_limit(Limit::BatchEventsPerSecond.hit(&limits))),
        }
    }

    /// A slot among the tenant's statistics queries computed at once, with `cost` charged
    /// to its budget: 429 when either is spent for now, 400 `query_over_budget` when `cost`
    /// is over the tenant's whole burst (the query could never pass).
    pub fn query(&self, cost: u64) -> Result<OwnedSemaphorePermit, ApiError> {
        let limits = self.inner.state.limits;
        let per_replica = limits
            .query_cost_burst
            .div_ceil(self.inner.quotas.inner.replicas)
            .max(1);
        if cost > u64::from(per_replica) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "query_over_budget",
                format!(
                    "this query costs {cost}; this tenant's statistics may cost at most \
                     {per_replica} at once: narrow the range, use a coarser bucket, or group \
                     by fewer dimensions"
                ),
            )
            .with_field("from")
            .with_limit(Limit::QueryCostPerSecond.hit(&limits)));
        }
        let permit = self
            .inner
            .state
            .queries
            .clone()
            .try_acquire_owned()
            .map_err(|_| self.refuse(Limit::ConcurrentQueries, 1))?;
        let n = NonZeroU32::new(cost as u32).unwrap_or(NonZeroU32::MIN);
        match self.inner.state.query_cost.check_n(n) {
            Ok(Ok(())) => Ok(permit),
            Ok(Err(not_until)) => {
                let now = self.inner.state.query_cost.clock().now();
                Err(self.refuse(
                    Limit::QueryCostPerSecond,
                    retry_seconds(not_until.wait_time_from(now)),
                ))
            }
            // Checked against the burst above; kept total for a burst the division rounded.
            Err(_) => Err(self.refuse(Limit::QueryCostPerSecond, 1)),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admission {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Admission>().cloned().ok_or_else(|| {
            ApiError::internal(&"a route that charges quotas is served without `quota::admit`")
        })
    }
}

/// What [`admit`] needs: the keys that name the tenant, and the quotas.
#[derive(Clone)]
pub struct Gate {
    /// API keys (and each tenant's own quota, looked up with them).
    pub keys: ApiKeys,
    /// Every tenant's buckets.
    pub quotas: Quotas,
}

/// Middleware in front of every authenticated route: authenticates, admits the request
/// against its tenant's quota, and leaves the [`Tenant`] and the [`Admission`] in the
/// request's extensions for the handler. Refusals (401, 429) answer before any handler
/// or body reading runs.
pub async fn admit(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let (tenant, own) = match crate::auth::authenticate(request.headers(), &gate.keys).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let admission = match gate.quotas.admit(tenant, &own) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(tenant);
    request.extensions_mut().insert(admission);
    next.run(request).await
}

/// Middleware of the batch route, inside [`admit`]: a slot among the tenant's batches
/// running at once, taken before the body is read.
pub async fn hold_batch(request: Request, next: Next) -> Response {
    let Some(admission) = request.extensions().get::<Admission>().cloned() else {
        return ApiError::internal(&"the batch route is served without `quota::admit`")
            .into_response();
    };
    match admission.batch_slot() {
        Ok(_slot) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// [`QUOTA_REFUSED_FOR_SECONDS`], computed when the metrics are read (the registry adds
/// the `service` label).
struct RefusedFor {
    quotas: std::sync::Weak<Inner>,
    desc: Desc,
}

const REFUSED_FOR_HELP: &str = "How long the tenant refused for longest has been refused \
    without a pause of a minute (0: no tenant is being refused).";

impl RefusedFor {
    fn new(quotas: &Quotas) -> Self {
        let desc = Opts::new(QUOTA_REFUSED_FOR_SECONDS, REFUSED_FOR_HELP)
            .describe()
            .expect("a valid metric description");
        Self {
            quotas: Arc::downgrade(&quotas.inner),
            desc,
        }
    }
}

impl Collector for RefusedFor {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let seconds = self
            .quotas
            .upgrade()
            .map(|inner| Quotas { inner }.longest_refused_for().as_secs_f64())
            .unwrap_or(0.0);
        let gauge =
            prometheus::Gauge::with_opts(Opts::new(QUOTA_REFUSED_FOR_SECONDS, REFUSED_FOR_HELP))
                .expect("a valid gauge");
        gauge.set(seconds);
        gauge.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            requests_per_second: 10,
            request_burst: 5,
            concurrent_requests: 2,
            batch_events_per_second: 100,
            batch_event_burst: 50,
            concurrent_batches: 1,
            concurrent_queries: 1,
            query_cost_per_second: 1_000,
            query_cost_burst: 500,
        }
    }

    fn quotas(replicas: u32) -> (Quotas, Metrics) {
        let metrics = Metrics::new("quota-test");
        let mut settings = crate::Settings::from_lookup(|_| None).unwrap();
        settings.quota = limits();
        settings.quota_replicas = replicas;
        (Quotas::new(&metrics, &settings), metrics)
    }

    fn tenant() -> Tenant {
        Tenant { id: Uuid::new_v4() }
    }

    #[test]
    fn overrides_replace_only_what_they_set_and_every_name_is_settable() {
        let mut own = Overrides::default();
        assert!(own.set("request_burst", Some(7)));
        assert!(!own.set("requests", Some(7)));
        let l = limits().with(&own);
        assert_eq!(l.request_burst, 7);
        assert_eq!(l.requests_per_second, 10);
        for name in NAMES {
            let mut own = Overrides::default();
            assert!(own.set(name, Some(123_456)), "{name}");
            assert_eq!(own.get(name), Some(123_456), "{name}");
            assert_eq!(limits().with(&own).get(name), Some(123_456), "{name}");
        }
    }

    #[test]
    fn a_burst_passes_then_429_names_the_limit_and_when_to_retry() {
        let (q, metrics) = quotas(1);
        let t = tenant();
        let own = Overrides::default();
        // Each admission is dropped at once: only the rate can refuse.
        for i in 0..5 {
            assert!(q.admit(t, &own).is_ok(), "request {i} of the burst");
        }
        let e = q.admit(t, &own).err().expect("the sixth is over the burst");
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.code, "quota_exceeded");
        assert_eq!(e.retry_after, Some(1));
        let hit = e.limit.clone().unwrap();
        assert_eq!(
            (hit.name.as_str(), hit.value, hit.burst),
            ("requests_per_second", 10, Some(5))
        );
        // Another tenant has its own bucket.
        assert!(q.admit(tenant(), &own).is_ok());
        let text = metrics.encode();
        assert!(
            text.contains(
                "herald_quota_refusals_total{limit=\"requests_per_second\",service=\"quota-test\"} 1"
            ),
            "{text}"
        );
        assert!(q.longest_refused_for() < REFUSAL_PAUSE);
        assert!(text.contains("herald_quota_refused_for_seconds{service=\"quota-test\"}"));
    }

    #[test]
    fn refusals_name_the_tenant_only_when_configured() {
        let metrics = Metrics::new("quota-test");
        let mut settings = crate::Settings::from_lookup(|_| None).unwrap();
        settings.quota = limits();
        settings.quota_metrics_per_tenant = true;
        let q = Quotas::new(&metrics, &settings);
        let t = tenant();
        let held: Vec<_> = (0..2).map(|_| q.admit(t, &Overrides::default())).collect();
        assert!(q.admit(t, &Overrides::default()).is_err());
        drop(held);
        let line = format!(
            "herald_quota_refusals_total{{limit=\"concurrent_requests\",tenant=\"{}\",service=\"quota-test\"}} 1",
            t.id
        );
        let text = metrics.encode();
        assert!(text.contains(&line), "{line} not in\n{text}");
    }

    #[test]
    fn requests_in_flight_are_bounded_and_freed_when_the_admission_drops() {
        let (q, _) = quotas(1);
        let t = tenant();
        let own = Overrides {
            request_burst: Some(100),
            ..Overrides::default()
        };
        let a = q.admit(t, &own).unwrap();
        let b = q.admit(t, &own).unwrap();
        let e = q.admit(t, &own).err().unwrap();
        assert_eq!(e.limit.unwrap().name, "concurrent_requests");
        drop(a);
        let _c = q.admit(t, &own).unwrap();
        drop(b);
    }

    #[test]
    fn batches_are_charged_whole_and_one_over_the_burst_is_413() {
        let (q, _) = quotas(1);
        let a = q.admit(tenant(), &Overrides::default()).unwrap();
        a.charge_batch(30).unwrap();
        let e = a.charge_batch(30).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.limit.as_ref().unwrap().name, "batch_events_per_second");
        // 20 remain: a batch of 20 still fits whole.
        a.charge_batch(20).unwrap();
        let e = a.charge_batch(51).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(e.code, "batch_over_quota");
        let slot = a.batch_slot().unwrap();
        assert_eq!(
            a.batch_slot().unwrap_err().limit.unwrap().name,
            "concurrent_batches"
        );
        drop(slot);
        assert!(a.batch_slot().is_ok());
    }

    #[test]
    fn queries_are_bounded_in_number_and_in_cost() {
        let (q, _) = quotas(1);
        let a = q.admit(tenant(), &Overrides::default()).unwrap();
        let e = a.query(501).unwrap_err();
        assert_eq!(
            (e.status, e.code.as_str()),
            (StatusCode::BAD_REQUEST, "query_over_budget")
        );
        let held = a.query(300).unwrap();
        assert_eq!(
            a.query(1).unwrap_err().limit.unwrap().name,
            "concurrent_queries"
        );
        drop(held);
        let e = a.query(300).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.limit.unwrap().name, "query_cost_per_second");
        assert!(a.query(200).is_ok());
    }

    #[test]
    fn replicas_divide_every_rate_burst_and_concurrency() {
        let (q, _) = quotas(2);
        let t = tenant();
        let own = Overrides::default();
        // Concurrency 2 over 2 replicas: 1 here.
        let held = q.admit(t, &own).unwrap();
        let e = q.admit(t, &own).err().unwrap();
        assert_eq!(e.limit.as_ref().unwrap().name, "concurrent_requests");
        assert!(e.message.contains("shared by 2 replicas"), "{}", e.message);
        drop(held);
        // Burst 5 over 2 replicas: 3 here, one of them spent above.
        q.admit(t, &own).unwrap();
        q.admit(t, &own).unwrap();
        let e = q.admit(t, &own).err().unwrap();
        assert_eq!(e.limit.unwrap().name, "requests_per_second");
    }

    #[test]
    fn a_changed_quota_takes_effect_at_the_next_request() {
        let (q, _) = quotas(1);
        let t = tenant();
        for _ in 0..5 {
            q.admit(t, &Overrides::default()).unwrap();
        }
        assert!(q.admit(t, &Overrides::default()).is_err());
        let more = Overrides {
            request_burst: Some(50),
            ..Overrides::default()
        };
        for _ in 0..20 {
            q.admit(t, &more).unwrap();
        }
    }

    #[test]
    fn unlimited_sets_every_quota_variable_to_the_largest_value() {
        // Every documented variable is a real one, and every quota comes out at the most:
        // a quota variable missing from the list would keep its smaller default.
        for (name, _) in UNLIMITED {
            assert!(
                crate::config::VARIABLES.iter().any(|v| v.name == *name),
                "{name}"
            );
        }
        let s = crate::Settings::from_lookup(|k| {
            UNLIMITED
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
        .unwrap();
        for name in NAMES {
            assert_eq!(s.quota.get(name), Some(MAX_LIMIT), "{name}");
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_seconds(Duration::ZERO), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_seconds(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_seconds(Duration::from_secs(3)), 3);
    }
}
