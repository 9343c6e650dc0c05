//! Dashboard endpoints: saved definitions in memory, cache keys, computation and change news.
//!
//! A call's key is computed without touching the database: the endpoint's definition and
//! its sources are held here (learned once per version by planning its SQL), the source
//! datasets' snapshot ids come from [`DataVersions`], and the owner's grants from a
//! fingerprint the poller keeps. Everything a result depends on goes into its key, so the
//! `ETag` (the key's hash) changes exactly when the answer may have.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cityhub_catalog::access::require_role;
use cityhub_catalog::camera::now_ms;
use cityhub_catalog::clock::Clock;
use cityhub_catalog::endpoint::{CALLER_REGION, Endpoint, EndpointSpec, ParamValue, Saved};
use cityhub_catalog::versions::DataVersions;
use cityhub_catalog::{Action, AuditEvent, AuditLog, Catalog, Outcome, Principal, Role};
use cityhub_config::EndpointsConfig;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::EndpointError;
use super::cache::{CachedResult, Dep, Key, ResultCache};
use super::plan::Source;
use crate::view::Pins;
use crate::{QueryEngine, QueryError, ResultFormat};

/// An endpoint version ready to serve.
pub struct Loaded {
    pub endpoint: Endpoint,
    pub sources: Vec<Source>,
    /// Who the query runs as: the owning department, with an analyst's rights.
    runner: Principal,
    /// Executions of this endpoint (all versions) in this process.
    executions: Arc<AtomicU64>,
}

impl Loaded {
    pub fn executions(&self) -> u64 {
        self.executions.load(Ordering::Relaxed)
    }
}

/// One call of an endpoint: its parameter values and the key of its result.
#[derive(Clone)]
pub struct Call {
    pub loaded: Arc<Loaded>,
    pub params: Vec<(String, ParamValue)>,
    pub key: Key,
    /// The key in hex: the `ETag` without its quotes and format suffix.
    pub tag: String,
    /// When a live source's time bucket ends (Unix ms): the result may change then.
    pub live_until: Option<i64>,
    /// The endpoint version and parameter values without the data versions: what a stale
    /// answer must have in common with the call.
    family: Key,
    deps: Vec<Dep>,
    pins: Pins,
    /// The caller's region scope: the query runs under it.
    scope: Option<String>,
}

/// The answer to one call of an endpoint.
pub enum Answer {
    /// The caller holds the current result (its `ETag`).
    NotModified { etag: String, cache_control: String },
    /// The result, encoded in the format asked for.
    Body {
        etag: String,
        cache_control: String,
        body: Bytes,
    },
}

/// The endpoints of one hub process.
pub struct Endpoints {
    query: QueryEngine,
    catalog: Catalog,
    audit: AuditLog,
    versions: Arc<DataVersions>,
    config: EndpointsConfig,
    clock: Clock,
    loaded: RwLock<HashMap<String, Arc<Loaded>>>,
    executions: RwLock<HashMap<String, Arc<AtomicU64>>>,
    cache: ResultCache,
    /// Department → fingerprint of its active grants.
    access: RwLock<HashMap<String, u64>>,
    /// Incremented when a definition is saved or grants change: news besides commits.
    news: watch::Sender<u64>,
    /// Set when the hub shuts down: event streams end so that connections can close.
    closing: watch::Sender<bool>,
    /// The newest result of each call family of endpoints that allow stale answers.
    recent: std::sync::Mutex<HashMap<Key, Recent>>,
    /// When the next active grant lapses: its department's rights change then without any
    /// write to the catalog, so the poller looks again at that moment.
    next_lapse: RwLock<Option<DateTime<Utc>>>,
}

/// With a catalog that announces changes (PostgreSQL), the poller reads it at least this
/// often anyway, as a safety net for a notice lost with a dropped connection.
const NOTIFIED_POLL_INTERVAL: Duration = Duration::from_secs(30);

/// How long the poller lets notices gather before it reads the catalog: a burst of
/// commits on other nodes costs one read, not one per commit.
const NOTICE_GATHERING: Duration = Duration::from_millis(50);

/// Call families whose newest result is kept for stale answers, at most.
const RECENT_FAMILIES: usize = 4096;

/// The newest result of a call family, for stale-while-revalidate.
struct Recent {
    result: Arc<CachedResult>,
    /// When a call first found it superseded (its data changed).
    stale_since: Option<std::time::Instant>,
    /// Whether a recomputation runs in the background.
    refreshing: bool,
}

impl Endpoints {
    /// The endpoints of a process whose commits and rights changes `versions` announces;
    /// `clock` gives the city's "today".
    pub fn new(
        query: QueryEngine,
        audit: AuditLog,
        versions: Arc<DataVersions>,
        config: EndpointsConfig,
        clock: Clock,
    ) -> Self {
        Self {
            catalog: query.catalog().clone(),
            cache: ResultCache::new(config.cache_bytes),
            query,
            audit,
            versions,
            config,
            clock,
            loaded: RwLock::default(),
            executions: RwLock::default(),
            access: RwLock::default(),
            news: watch::Sender::new(0),
            closing: watch::Sender::new(false),
            recent: std::sync::Mutex::default(),
            next_lapse: RwLock::default(),
        }
    }

    /// Ends every event stream (the hub is shutting down).
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that turns `true` when the hub shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    pub fn config(&self) -> &EndpointsConfig {
        &self.config
    }

    /// Receivers that wake on commits and on other news (definitions, grants).
    pub fn subscribe(&self) -> (watch::Receiver<u64>, watch::Receiver<u64>) {
        (self.versions.subscribe(), self.news.subscribe())
    }

    /// The current version of an endpoint: from memory, else from the catalog (saved by
    /// another process, or not loaded since the start).
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Loaded>>, EndpointError> {
        if let Some(loaded) = read(&self.loaded).get(name) {
            return Ok(Some(loaded.clone()));
        }
        match self.catalog.endpoint(name).await? {
            Some(endpoint) => Ok(Some(self.load(endpoint).await?)),
            None => Ok(None),
        }
    }

    /// Plans a version's SQL to learn its sources and keeps it.
    async fn load(&self, endpoint: Endpoint) -> Result<Arc<Loaded>, EndpointError> {
        let sources = self
            .query
            .endpoint_sources(&runner(&endpoint), &endpoint.spec)
            .await
            .map_err(|err| EndpointError::from(err).of_endpoint(&endpoint.name))?;
        Ok(self.keep(endpoint, sources))
    }

    /// Keeps a version with its sources, unless a newer one was kept meanwhile.
    fn keep(&self, endpoint: Endpoint, sources: Vec<Source>) -> Arc<Loaded> {
        let executions = write(&self.executions)
            .entry(endpoint.name.clone())
            .or_default()
            .clone();
        let loaded = Arc::new(Loaded {
            runner: runner(&endpoint),
            endpoint,
            sources,
            executions,
        });
        let mut all = write(&self.loaded);
        match all.get(&loaded.endpoint.name) {
            Some(known) if known.endpoint.version > loaded.endpoint.version => known.clone(),
            _ => {
                all.insert(loaded.endpoint.name.clone(), loaded.clone());
                loaded
            }
        }
    }

    /// The current versions of the endpoints `caller` may call (admins: all), loading those
    /// this process has not served yet.
    pub async fn list(&self, caller: &Principal) -> Result<Vec<Arc<Loaded>>, EndpointError> {
        let mut callable = Vec::new();
        for endpoint in self.catalog.list_endpoints().await? {
            if caller.role != Role::Admin && !endpoint.callable_by(&caller.department) {
                continue;
            }
            let known = read(&self.loaded)
                .get(&endpoint.name)
                .filter(|l| l.endpoint.version >= endpoint.version)
                .cloned();
            match known {
                Some(loaded) => callable.push(loaded),
                // A version that no longer plans (a revoked grant) is left out of the list;
                // calling it answers why.
                None => callable.extend(self.load(endpoint).await.ok()),
            }
        }
        Ok(callable)
    }

    /// Checks and saves a definition as a new version, for `caller`. The owner is the
    /// caller's department; an admin names it for a new endpoint and may hand one over.
    pub async fn save(
        &self,
        caller: &Principal,
        name: &str,
        requested_owner: Option<String>,
        spec: EndpointSpec,
    ) -> Result<(Arc<Loaded>, Saved), EndpointError> {
        require_role(
            caller,
            &[Role::Admin, Role::Producer, Role::Analyst],
            "saving a dashboard endpoint",
        )?;
        let current = self.catalog.endpoint(name).await?;
        let owner = match (caller.role, requested_owner, &current) {
            (Role::Admin, Some(owner), _) => owner,
            (Role::Admin, None, Some(current)) => current.owner.clone(),
            (Role::Admin, None, None) => {
                return Err(EndpointError::Invalid {
                    field: "owner".into(),
                    message: "an admin saving a new endpoint names the department that owns it"
                        .into(),
                });
            }
            (_, Some(owner), _) if owner != caller.department => {
                return Err(EndpointError::Forbidden(format!(
                    "only an admin may save an endpoint for another department ({owner})"
                )));
            }
            _ => caller.department.clone(),
        };
        if let Some(current) = &current
            && caller.role != Role::Admin
            && current.owner != caller.department
        {
            return Err(EndpointError::Forbidden(format!(
                "endpoint {name} belongs to department {}; only it or an admin may change it",
                current.owner
            )));
        }
        let owner = owner.as_str();
        // Plan it as the future owner before saving, so that a definition that cannot run
        // (unknown table, no grant, undeclared parameter) is refused and never stored.
        let draft = Endpoint {
            name: name.to_string(),
            version: 0,
            owner: owner.to_string(),
            spec: spec.clone(),
            created_by: Some(caller.id),
            created_at: self.clock.now(),
        };
        let sources = self
            .query
            .endpoint_sources(&runner(&draft), &spec)
            .await
            .map_err(|err| match err {
                // A parameter the SQL and the declaration disagree on is the definition's
                // mistake (the message names the parameter).
                QueryError::Parameter(message) => EndpointError::Invalid {
                    field: "params".into(),
                    message,
                },
                other => EndpointError::Query(other),
            })?;
        let acting_for = (caller.role != Role::Admin).then(|| caller.department.clone());
        let (endpoint, saved) = self
            .catalog
            .save_endpoint(name, owner, spec, Some(caller.id), acting_for)
            .await?;
        let loaded = self.keep(endpoint, sources);
        if saved != Saved::Unchanged {
            self.news.send_modify(|n| *n += 1);
            self.audit.record(
                AuditEvent::by(caller, Action::EndpointSaved, Outcome::Ok).detail(
                    serde_json::json!({
                        "endpoint": name,
                        "version": loaded.endpoint.version,
                        "owner": owner,
                        "sql": loaded.endpoint.spec.sql,
                    }),
                ),
            );
        }
        Ok((loaded, saved))
    }

    /// The endpoint, if `caller` may call it: `NotFound` when it does not exist,
    /// `Forbidden` when its owner has not shared it with the caller's department.
    pub async fn callable(
        &self,
        caller: &Principal,
        name: &str,
    ) -> Result<Arc<Loaded>, EndpointError> {
        let loaded = self
            .get(name)
            .await?
            .ok_or_else(|| EndpointError::NotFound(name.to_string()))?;
        if caller.role != Role::Admin && !loaded.endpoint.callable_by(&caller.department) {
            return Err(EndpointError::Forbidden(format!(
                "endpoint {name} belongs to department {} and is not shared with department {}; \
                 its owner can add {} to allowed_departments",
                loaded.endpoint.owner, caller.department, caller.department
            )));
        }
        Ok(loaded)
    }

    /// Answers one call of endpoint `name` by `caller` in `format`: `NotModified` when
    /// `holds` says the caller has the current `ETag` (nothing is computed then), else the
    /// encoded result (computed once per key), audited when it holds personal data.
    pub async fn answer(
        self: &Arc<Self>,
        caller: &Principal,
        name: &str,
        query: &[(String, String)],
        format: ResultFormat,
        holds: impl Fn(&str) -> bool,
    ) -> Result<Answer, EndpointError> {
        let suffix = match format {
            ResultFormat::Json => "json",
            ResultFormat::Csv => "csv",
            ResultFormat::ArrowIpc => "arrow",
            _ => {
                return Err(EndpointError::NotAcceptable(
                    "endpoints answer in application/json, text/csv or \
                     application/vnd.apache.arrow.stream"
                        .into(),
                ));
            }
        };
        let loaded = self.callable(caller, name).await?;
        let call = self.call(loaded, query, caller)?;
        let spec = &call.loaded.endpoint.spec;
        let cache_control = match spec.stale_while_revalidate_s {
            Some(window) => format!(
                "private, max-age={}, stale-while-revalidate={window}",
                spec.max_age_s
            ),
            None => format!("private, max-age={}", spec.max_age_s),
        };
        let not_modified = |etag: String| {
            metrics::counter!("cityhub_endpoint_not_modified_total").increment(1);
            Ok(Answer::NotModified {
                etag,
                cache_control: cache_control.clone(),
            })
        };
        let etag = format!("\"{}-{suffix}\"", call.tag);
        if holds(&etag) {
            return not_modified(etag);
        }
        let result = self.result(&call).await?;
        // A stale answer (stale-while-revalidate) carries the ETag of what it is.
        let etag = if result.key == call.key {
            etag
        } else {
            let stale = format!("\"{}-{suffix}\"", tag_of(&result.key));
            if holds(&stale) {
                return not_modified(stale);
            }
            stale
        };
        let body = self.cache.body(&result, format).await?;
        self.audit_delivery(caller, &call, &result);
        Ok(Answer::Body {
            etag,
            cache_control,
            body,
        })
    }

    /// Results and bytes in the cache.
    pub async fn cache_usage(&self) -> (u64, u64) {
        self.cache.usage().await
    }

    /// Reads a call's parameters from the query string and computes its key; the result
    /// is `caller`'s region's (its scope is in the key, so no answer crosses scopes).
    pub fn call(
        &self,
        loaded: Arc<Loaded>,
        query: &[(String, String)],
        caller: &Principal,
    ) -> Result<Call, EndpointError> {
        let spec = &loaded.endpoint.spec;
        let mut given: HashMap<&str, &str> = HashMap::new();
        for (name, value) in query {
            if !spec.params.iter().any(|p| &p.name == name) {
                let known: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
                return Err(EndpointError::BadCall(format!(
                    "{name}: endpoint {} takes no such parameter; it takes: {}",
                    loaded.endpoint.name,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            if given.insert(name, value).is_some() {
                return Err(EndpointError::BadCall(format!(
                    "{name}: given more than once"
                )));
            }
        }
        let today = (self.clock.now()
            + chrono::Duration::minutes(i64::from(self.config.utc_offset_minutes)))
        .date_naive();
        let mut params = Vec::with_capacity(spec.params.len());
        for param in &spec.params {
            let value = param
                .value(given.get(param.name.as_str()).copied(), today)
                .map_err(|message| {
                    EndpointError::BadCall(format!(
                        "{} ({}): {message}",
                        param.name, param.param_type
                    ))
                })?;
            params.push((param.name.clone(), value));
        }
        if loaded.sources.contains(&Source::CallerRegion) {
            let region = caller
                .region
                .as_deref()
                .unwrap_or(cityhub_catalog::region::CITY);
            params.push((
                CALLER_REGION.to_string(),
                ParamValue::Text(region.to_string()),
            ));
        }

        let endpoint = &loaded.endpoint;
        let mut deps = vec![
            Dep::Endpoint(endpoint.name.clone(), endpoint.version),
            Dep::Access(endpoint.owner.clone(), self.access_of(&endpoint.owner)),
        ];
        let mut pins = Pins::new();
        for source in &loaded.sources {
            match source {
                Source::Dataset { id, .. } => {
                    let snapshot = self.versions.snapshot_of(*id);
                    pins.insert(*id, snapshot);
                    deps.push(Dep::Dataset(*id, snapshot));
                }
                Source::Catalog => deps.push(Dep::Catalog(self.versions.generation())),
                Source::Live(_) | Source::CallerRegion => {}
            }
        }
        // Live sources change without commits: the result is current until the end of
        // its time bucket.
        let live = loaded.sources.iter().any(|s| matches!(s, Source::Live(_)));
        let live_until = live.then(|| {
            let refresh_secs = spec
                .refresh_s
                .map_or(self.config.live_refresh_secs, u64::from);
            let refresh_ms = i64::try_from(refresh_secs.max(1) * 1000).unwrap_or(i64::MAX);
            (now_ms() / refresh_ms + 1) * refresh_ms
        });
        deps.extend(live_until.map(Dep::LiveUntil));
        // Hashed through `fmt::Write`, so that a call allocates nothing for its key.
        let mut family = HashWriter(Sha256::new());
        let _ = write!(
            family,
            "cityhub endpoint result v1\0{}\0{}\0",
            endpoint.name, endpoint.version
        );
        for (name, value) in &params {
            let _ = write!(family, "{name}={value:?}\0");
        }
        // Row-level security makes every result its scope's, `$caller_region` or not.
        let _ = write!(family, "scope={:?}\0", caller.region);
        let mut hasher = family.clone();
        for dep in &deps {
            let _ = write!(hasher, "{dep:?}\0");
        }
        let key = first_128_bits(hasher.0.finalize().as_slice());
        let family = first_128_bits(family.0.finalize().as_slice());
        Ok(Call {
            tag: tag_of(&key),
            loaded,
            params,
            key,
            live_until,
            family,
            deps,
            pins,
            scope: caller.region.clone(),
        })
    }

    /// The cached result of a call, computing it once if nobody has. An endpoint that
    /// allows stale answers gets its previous result at once while the new one is computed
    /// in the background (within its window after the data changed).
    pub async fn result(self: &Arc<Self>, call: &Call) -> Result<Arc<CachedResult>, EndpointError> {
        if let Some(window) = call.loaded.endpoint.spec.stale_while_revalidate_s
            && self.cache.peek(&call.key).await.is_none()
            && let Some((stale, refresh)) = self.stale(call, window)
        {
            if refresh {
                let (endpoints, call) = (self.clone(), call.clone());
                tokio::spawn(async move {
                    let _ = endpoints.fresh(&call).await;
                    if let Some(recent) = lock(&endpoints.recent).get_mut(&call.family) {
                        recent.refreshing = false;
                    }
                });
            }
            metrics::counter!("cityhub_endpoint_stale_answers_total").increment(1);
            return Ok(stale);
        }
        self.fresh(call).await
    }

    /// The current result of a call, computed once if nobody has (never a stale one: event
    /// streams wait for it).
    pub async fn fresh(&self, call: &Call) -> Result<Arc<CachedResult>, EndpointError> {
        self.cache
            .get_or_compute(call.key, || self.compute(call))
            .await
    }

    /// A superseded result of the call's family still within `window` seconds of the first
    /// call that found it superseded, and whether this call should start the recomputation.
    fn stale(&self, call: &Call, window: u32) -> Option<(Arc<CachedResult>, bool)> {
        let mut recent = lock(&self.recent);
        let entry = recent.get_mut(&call.family)?;
        if entry.result.key == call.key {
            return None;
        }
        let since = *entry
            .stale_since
            .get_or_insert_with(std::time::Instant::now);
        if since.elapsed() > Duration::from_secs(u64::from(window)) {
            return None;
        }
        let refresh = !entry.refreshing;
        entry.refreshing = true;
        Some((entry.result.clone(), refresh))
    }

    async fn compute(&self, call: &Call) -> Result<Arc<CachedResult>, EndpointError> {
        let loaded = &call.loaded;
        loaded.executions.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("cityhub_endpoint_executions_total", "endpoint" => loaded.endpoint.name.clone())
            .increment(1);
        let started = std::time::Instant::now();
        let runner = Principal {
            region: call.scope.clone(),
            ..loaded.runner.clone()
        };
        let result = self
            .query
            .execute_endpoint(&runner, &loaded.endpoint.spec.sql, &call.params, &call.pins)
            .await?;
        let mut batches = Vec::new();
        let mut stream = result.batches;
        while let Some(batch) = stream.next().await {
            batches.push(batch?);
        }
        let sensitive = !result.reads.reads().values().all(|c| c.is_empty());
        let cached = Arc::new(
            CachedResult::new(
                call.key,
                call.deps.clone(),
                result.schema,
                batches,
                sensitive,
            )
            .await?,
        );
        if let Some(window) = loaded.endpoint.spec.stale_while_revalidate_s {
            let mut recent = lock(&self.recent);
            // Families nobody asked for within their window are of no use any more.
            let window = Duration::from_secs(u64::from(window));
            recent.retain(|_, r| r.stale_since.is_none_or(|since| since.elapsed() <= window));
            // They are held beside the cache's byte bound, so their number is bounded too.
            if recent.len() >= RECENT_FAMILIES {
                recent.clear();
            }
            recent.insert(
                call.family,
                Recent {
                    result: cached.clone(),
                    stale_since: None,
                    refreshing: false,
                },
            );
        }
        tracing::info!(
            endpoint = %loaded.endpoint.name,
            version = loaded.endpoint.version,
            rows = cached.rows,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "Computed a dashboard endpoint's result for the cache."
        );
        Ok(cached)
    }

    /// Records that `caller` received a result holding personal data.
    pub fn audit_delivery(&self, caller: &Principal, call: &Call, result: &CachedResult) {
        if result.sensitive {
            self.audit.record(
                AuditEvent::by(caller, Action::EndpointRead, Outcome::Ok).detail(
                    serde_json::json!({
                        "endpoint": call.loaded.endpoint.name,
                        "version": call.loaded.endpoint.version,
                        "params": call.params.iter().map(|(n, v)| (n.clone(), v.to_string().into()))
                            .collect::<serde_json::Map<String, serde_json::Value>>(),
                        "rows": result.rows,
                    }),
                ),
            );
        }
    }

    fn access_of(&self, department: &str) -> u64 {
        read(&self.access).get(department).copied().unwrap_or(0)
    }

    /// Whether a cached result's dependency still holds.
    fn is_current(&self, dep: &Dep) -> bool {
        match dep {
            Dep::Dataset(id, snapshot) => self.versions.snapshot_of(*id) == *snapshot,
            Dep::Catalog(generation) => self.versions.generation() == *generation,
            Dep::LiveUntil(until) => now_ms() < *until,
            Dep::Access(department, fingerprint) => self.access_of(department) == *fingerprint,
            Dep::Endpoint(name, version) => read(&self.loaded)
                .get(name)
                .is_none_or(|l| l.endpoint.version == *version),
        }
    }

    /// Looks for what other processes changed (commits, definitions) and for grants that
    /// changed or lapsed; drops cache entries that are no longer current.
    pub async fn poll(&self) -> Result<(), EndpointError> {
        let snapshots = self.catalog.current_snapshots().await?;
        self.versions.observe(&snapshots);

        let now = self.clock.now();
        let mut fingerprints: HashMap<String, Sha256> = HashMap::new();
        let mut next_lapse: Option<DateTime<Utc>> = None;
        for grant in self.catalog.grants_held_by(None).await? {
            if grant.active(now) {
                if let Some(expires) = grant.expires_at {
                    next_lapse = Some(next_lapse.map_or(expires, |next| next.min(expires)));
                }
                fingerprints
                    .entry(grant.department.clone())
                    .or_default()
                    .update(grant.id.to_le_bytes());
            }
        }
        let access: HashMap<String, u64> = fingerprints
            .into_iter()
            .map(|(department, hasher)| {
                let digest = hasher.finalize();
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&digest[..8]);
                (department, u64::from_le_bytes(bytes))
            })
            .collect();
        *write(&self.next_lapse) = next_lapse;
        let mut news = false;
        {
            let mut known = write(&self.access);
            if *known != access {
                *known = access;
                news = true;
            }
        }
        for endpoint in self.catalog.list_endpoints().await? {
            let stale = read(&self.loaded)
                .get(&endpoint.name)
                .is_some_and(|l| l.endpoint.version < endpoint.version);
            if stale {
                let name = endpoint.name.clone();
                match self.load(endpoint).await {
                    Ok(_) => news = true,
                    Err(err) => tracing::warn!(endpoint = %name, error = %err,
                        "An endpoint saved by another process does not plan here; keeping the version before it."),
                }
            }
        }
        if news {
            self.news.send_modify(|n| *n += 1);
        }
        self.sweep().await;
        Ok(())
    }

    /// Drops the cache entries that are no longer current.
    pub async fn sweep(&self) -> usize {
        self.cache.retain_current(|dep| self.is_current(dep)).await
    }

    /// Reads the catalog for other processes' changes and drops stale cache entries, until
    /// the process ends: at once when this process changes rights, when the catalog
    /// announces a change (PostgreSQL; otherwise every `poll_interval_ms`), and when a
    /// grant lapses; drops stale entries after every commit of this process.
    pub async fn run(self: Arc<Self>) {
        let mut commits = self.versions.subscribe();
        let mut rights = self.versions.subscribe_access();
        let mut notices = self.catalog.change_notices();
        let configured = Duration::from_millis(self.config.poll_interval_ms);
        let interval = if notices.is_some() {
            configured.max(NOTIFIED_POLL_INTERVAL)
        } else {
            configured
        };
        if let Err(err) = self.poll().await {
            tracing::warn!(error = %err, "Could not read the catalog's snapshots and grants at start; will try again.");
        }
        loop {
            tokio::select! {
                changed = commits.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    self.sweep().await;
                    continue;
                }
                changed = rights.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                heard = next_notice(&mut notices) => {
                    if heard.is_err() {
                        notices = None;
                    }
                    tokio::time::sleep(NOTICE_GATHERING).await;
                }
                _ = tokio::time::sleep(self.until_next_poll(interval)) => {}
            }
            if let Err(err) = self.poll().await {
                tracing::warn!(error = %err, "Could not poll the catalog for changes; the endpoint cache keeps what it knows.");
            }
        }
    }
}

impl Endpoints {
    /// The pause before the next scheduled read: the interval, or less when a grant lapses
    /// sooner (a moment after it, so that it reads as lapsed).
    fn until_next_poll(&self, interval: Duration) -> Duration {
        let Some(lapse) = *read(&self.next_lapse) else {
            return interval;
        };
        let until = (lapse - self.clock.now()).to_std().unwrap_or_default();
        interval.min(until + Duration::from_millis(1))
    }
}

/// The next notice of a change, or never when the catalog does not announce changes.
async fn next_notice(
    notices: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match notices {
        Some(receiver) => receiver.changed().await,
        None => std::future::pending().await,
    }
}

/// The principal an endpoint's query runs as.
fn runner(endpoint: &Endpoint) -> Principal {
    Principal {
        id: endpoint.created_by.unwrap_or(0),
        name: format!("endpoint {} v{}", endpoint.name, endpoint.version),
        department: endpoint.owner.clone(),
        role: Role::Analyst,
        created_at: endpoint.created_at,
        expires_at: None,
        revoked_at: None,
        rate_limit_per_second: None,
        region: None,
    }
}

/// A key as text: the `ETag` without its quotes and format suffix, and the `id` of events.
pub fn tag_of(key: &Key) -> String {
    hex::encode(key)
}

/// Feeds formatted text to a hash.
#[derive(Clone)]
struct HashWriter(Sha256);

impl std::fmt::Write for HashWriter {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        self.0.update(text.as_bytes());
        Ok(())
    }
}

fn first_128_bits(digest: &[u8]) -> Key {
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest[..16]);
    key
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
