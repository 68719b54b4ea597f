//! The `forge` backend: GraphQL over HTTPS to the Forge gateway (default
//! `https://api.atlassian.com/graphql`, or the local emulator), sending the `forge` CLI's own
//! operations ([`super::ops`]) with Basic auth. Rate limiting (HTTP 429 or `TOO_MANY_REQUESTS`),
//! 5xx answers and transport failures are retried with jittered exponential backoff that honours
//! `Retry-After`; `HTTPS_PROXY`/`NO_PROXY` are honoured and an extra CA bundle can be trusted.
//! Requests are counted by operation and outcome, with a latency histogram. The API token is only
//! ever put into the `Authorization` header: never into a log, an error, a status or a metric.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::coalesce::Coalescer;
use super::ops;
use super::{
    Account, AppDetails, Credentials, DistributionLink, Egress, EnvironmentInfo, ErrorKind, InstallationFilter,
    InstallationInfo, MetricKind, MetricsQuery, MetricsValue, Page, Platform, PlatformError, PlatformResult, Rollout,
    RolloutStarted, RolloutStatus, SharingState, Target, Task, TaskState, UpgradeTarget, VersionCount, VersionInfo,
};
use crate::telemetry::Metrics;

/// The real gateway.
pub const DEFAULT_GATEWAY: &str = "https://api.atlassian.com/graphql";

/// The developer console, where sharing is managed by hand.
pub const DEVELOPER_CONSOLE: &str = "https://developer.atlassian.com/console/myapps";

/// How the backend reaches the gateway.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The GraphQL endpoint.
    pub url: String,
    /// Time allowed for one request.
    pub timeout: Duration,
    /// Attempts per operation for retryable failures (at least 1).
    pub attempts: u32,
    /// The first retry delay; it doubles with each attempt, with full jitter, up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A PEM bundle of extra CA certificates to trust.
    pub ca_bundle: Option<PathBuf>,
    /// Whether the distribution operations (sharing, links) are offered. They are undocumented and
    /// unconfirmed for API-token auth on the real platform, so they are off unless asked for.
    pub distribution: bool,
    /// Requests per account at most, over every operation (`None`: the platform documents no
    /// gateway rate, so none is kept unless asked for).
    pub rate: Option<super::limiter::Rate>,
    /// App metrics API calls per account at most (documented: five a minute per user).
    pub metrics_rate: Option<super::limiter::Rate>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            url: DEFAULT_GATEWAY.into(),
            timeout: Duration::from_secs(30),
            attempts: 5,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(20),
            ca_bundle: None,
            distribution: false,
            rate: None,
            metrics_rate: Some(super::limiter::Rate::METRICS),
        }
    }
}

/// The Forge gateway backend.
pub struct ForgeGateway {
    options: GatewayOptions,
    http: reqwest::Client,
    metrics: Option<Arc<Metrics>>,
    /// Site host names by cloud id, as last resolved, so listing an app's installations again
    /// does not resolve every site again (a site is renamed rarely; entries expire).
    host_names: std::sync::Mutex<HashMap<Box<str>, Resolved>>,
    /// Stops requests for a while when the platform keeps failing (see [`super::breaker`]).
    breaker: super::breaker::Breaker,
    /// The client-side rate limit per account (see [`super::limiter`]).
    limiter: super::limiter::Limiter,
    /// Installation contexts by (credentials, product) and site, as last resolved: a site's context
    /// changes only if the product is removed and added again; entries expire. (Grouped so that
    /// the credentials' key is not repeated for each of thousands of sites.)
    contexts: std::sync::Mutex<HashMap<(String, String), SiteContexts>>,
    /// Tenant-context lookups of many sites in one request, per (credentials, product).
    context_lookups: Coalescer<(String, String), String, Option<SiteContext>>,
    /// Installation lookups of many contexts in one request, per (credentials, app).
    installation_lookups: Coalescer<(String, String), String, Vec<InstallationInfo>>,
    /// Installation lookups of many ids in one request, per (credentials, app).
    id_lookups: Coalescer<(String, String), String, InstallationInfo>,
}

/// A site's host name as the platform compares it: no scheme or path, lower case.
fn bare_host(site: &str) -> String {
    let host = site.trim().trim_start_matches("https://").trim_start_matches("http://");
    host.split('/').next().unwrap_or(host).to_ascii_lowercase()
}

/// A name resolved by the platform (a host name, an installation context), and when.
type Resolved = (Box<str>, Instant);
/// Installation contexts by site, of one (credentials, product).
type SiteContexts = HashMap<Box<str>, Resolved>;
/// A site's cloud id, and its activation id of a product if it runs it.
type SiteContext = (String, Option<String>);

/// Sites a tenant-context request names at most (as the CLI resolves host names, 20 a call).
const CONTEXTS_A_REQUEST: usize = 20;
/// Installation contexts an installations request names at most.
const INSTALLATION_CONTEXTS_A_REQUEST: usize = 50;

/// How long a resolved site host name is used before it is resolved again.
const HOST_NAME_TTL: Duration = Duration::from_secs(600);

impl ForgeGateway {
    pub fn new(options: GatewayOptions, metrics: Option<Arc<Metrics>>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let mut builder = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("forgeops/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.ca_bundle {
            let pem = std::fs::read(path).with_context(|| format!("reading the CA bundle {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("parsing the CA bundle {}", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder.build().context("building the HTTP client")?;
        let limiter = super::limiter::Limiter::new(options.rate, options.metrics_rate);
        Ok(ForgeGateway {
            options,
            http,
            metrics,
            host_names: Default::default(),
            breaker: Default::default(),
            limiter,
            contexts: Default::default(),
            context_lookups: Coalescer::new(CONTEXTS_A_REQUEST),
            installation_lookups: Coalescer::new(INSTALLATION_CONTEXTS_A_REQUEST),
            id_lookups: Coalescer::new(INSTALLATION_CONTEXTS_A_REQUEST),
        })
    }

    /// Which credentials a coalesced lookup may share a request with: the same account and Secret.
    fn sharing_key(creds: &Credentials) -> String {
        format!("{}\u{0}{}", creds.email, creds.source)
    }

    /// Resolves `hosts` for `product` in one request: (cloud id, activation if the site runs it)
    /// by host name; a host the platform does not know is absent.
    async fn tenant_contexts(
        &self,
        creds: &Credentials,
        product: &str,
        hosts: Vec<String>,
    ) -> PlatformResult<HashMap<String, Option<SiteContext>>> {
        const OP: &str = "forgeops_getTenantContexts";
        let vars = json!({ "hostNames": &hosts, "product": product });
        let data = self.call(creds, OP, ops::FORGEOPS_GET_TENANT_CONTEXTS, vars).await?;
        // Answers are matched to the asked names by host (the platform answers its own spelling).
        let mut by_host = HashMap::new();
        let mut known = self.host_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for c in data.get("tenantContexts").and_then(Value::as_array).into_iter().flatten() {
            let (Some(host), Some(cloud_id)) = (s(c, "hostName"), s(c, "cloudId")) else { continue };
            let activation = c.pointer("/activationIdByProduct/active").and_then(Value::as_str).map(str::to_string);
            known.insert(cloud_id.as_str().into(), (host.as_str().into(), Instant::now()));
            by_host.insert(bare_host(&host), (cloud_id, activation));
        }
        Ok(hosts.into_iter().filter_map(|h| by_host.get(&bare_host(&h)).map(|c| (h, Some(c.clone())))).collect())
    }

    /// The app's installations in `contexts`, every page, by context.
    async fn installations_by_context(
        &self,
        creds: &Credentials,
        app_id: &str,
        contexts: Vec<String>,
    ) -> PlatformResult<HashMap<String, Vec<InstallationInfo>>> {
        let filter = InstallationFilter { contexts: contexts.clone(), ..Default::default() };
        let mut out: HashMap<String, Vec<InstallationInfo>> = contexts.into_iter().map(|c| (c, Vec::new())).collect();
        for i in super::every_installation(self, creds, app_id, &filter).await? {
            out.entry(i.installation_context.clone()).or_default().push(i);
        }
        Ok(out)
    }

    /// The app's installations with these ids, every page, by id.
    async fn installations_by_id(
        &self,
        creds: &Credentials,
        app_id: &str,
        ids: Vec<String>,
    ) -> PlatformResult<HashMap<String, InstallationInfo>> {
        let filter = InstallationFilter { ids, ..Default::default() };
        let found = super::every_installation(self, creds, app_id, &filter).await?;
        Ok(found.into_iter().map(|i| (i.id.clone(), i)).collect())
    }

    /// The breaker just opened (or opened again after a failed probe).
    fn breaker_opened(&self) {
        if let Some(m) = &self.metrics {
            m.breaker_open.set(1);
            m.breaker_opened.inc();
        }
    }

    fn record(&self, operation: &'static str, outcome: &'static str, started: Instant) {
        if let Some(m) = &self.metrics {
            m.platform_requests
                .get_or_create(&crate::telemetry::PlatformLabels { operation, outcome: outcome.into() })
                .inc();
            m.platform_seconds
                .get_or_create(&crate::telemetry::OperationLabel { operation })
                .observe(started.elapsed().as_secs_f64());
        }
    }

    /// Sends one operation, retrying what may succeed later; returns its `data`.
    async fn call(
        &self,
        creds: &Credentials,
        operation: &'static str,
        query: &str,
        variables: Value,
    ) -> PlatformResult<Value> {
        let body = json!({ "query": ops::text(query), "variables": variables, "operationName": operation });
        // The platform takes no idempotency key: a mutation whose answer was lost is not sent again
        // here; the caller reads the platform's record first.
        let mutation = ops::text(query).trim_start().starts_with("mutation");
        let attempts = self.options.attempts.max(1);
        let mut last = None;
        for attempt in 1..=attempts {
            if let Err(wait) = self.breaker.admit(Instant::now()) {
                let cause = last.as_ref().map(|e: &PlatformError| format!(": {}", e.message)).unwrap_or_default();
                let message = format!(
                    "the platform keeps failing, so forgeops holds its requests for {:.1} s{cause}",
                    wait.as_secs_f64()
                );
                return Err(PlatformError::new(ErrorKind::Unavailable, operation, message));
            }
            let waited = self.limiter.wait(&creds.email, super::limiter::Class::of(operation)).await;
            if let Some(m) = &self.metrics
                && !waited.is_zero()
            {
                let label = crate::telemetry::CredentialsLabel { credentials: creds.source.clone() };
                m.platform_limiter_wait.get_or_create(&label).inc_by(waited.as_secs_f64());
            }
            let started = Instant::now();
            let mut result = self.send_once(creds, operation, &body).await;
            if let Err(e) = &mut result {
                e.unconfirmed &= mutation;
            }
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.kind.as_str(),
            };
            self.record(operation, outcome, started);
            match &result {
                // Rate limited: the platform is answering, but asks forgeops to slow down; in a
                // row, that holds requests for as long as it asks.
                Err(e) if e.kind == ErrorKind::RateLimited => {
                    if let Some(open) = self.breaker.rate_limited(Instant::now(), e.retry_after) {
                        tracing::warn!(operation, error = %e, hold = ?open, "the platform keeps rate limiting: holding requests");
                        self.breaker_opened();
                    }
                }
                Err(e) if e.kind == ErrorKind::Unavailable => {
                    if let Some(open) = self.breaker.failed(Instant::now()) {
                        tracing::warn!(operation, error = %e, hold = ?open, "the platform keeps failing: holding requests");
                        self.breaker_opened();
                    }
                }
                _ => {
                    if self.breaker.succeeded() {
                        tracing::info!(operation, "the platform answers again");
                        if let Some(m) = &self.metrics {
                            m.breaker_open.set(0);
                        }
                    }
                }
            }
            match result {
                Ok(data) => return Ok(data),
                Err(e) if e.unconfirmed => {
                    tracing::warn!(operation, error = %e, "the answer to a mutation was lost: not sent again");
                    return Err(e);
                }
                Err(e) if matches!(e.kind, ErrorKind::RateLimited | ErrorKind::Unavailable) && attempt < attempts => {
                    let delay = e.retry_after.unwrap_or_else(|| self.backoff(attempt));
                    tracing::debug!(operation, attempt, kind = %e.kind, retry_in = ?delay, "platform call failed, retrying");
                    tokio::time::sleep(delay).await;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PlatformError::new(ErrorKind::Unavailable, operation, "no attempt made")))
    }

    /// Full jitter: a random delay up to the exponential bound.
    fn backoff(&self, attempt: u32) -> Duration {
        let bound = self
            .options
            .initial_backoff
            .saturating_mul(1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX))
            .min(self.options.max_backoff);
        let ms = bound.as_millis().max(1) as u64;
        Duration::from_millis(rand::random_range(ms / 2..=ms))
    }

    async fn send_once(&self, creds: &Credentials, operation: &'static str, body: &Value) -> PlatformResult<Value> {
        let unavailable = |m: String| PlatformError::new(ErrorKind::Unavailable, operation, m);
        let mut request = self.http.post(&self.options.url);
        // The App metrics API is experimental and asks for this header ("Export app metrics").
        if super::limiter::Class::of(operation) == super::limiter::Class::Metrics {
            request = request.header("X-ExperimentalApi", "ForgeMetricsQuery");
        }
        let response = request
            .header(reqwest::header::AUTHORIZATION, creds.authorization())
            .header("atl-client-name", "forgeops")
            .header("atl-client-version", env!("CARGO_PKG_VERSION"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                // Only a connection never made is known not to have reached the platform.
                let mut error = unavailable(describe_transport_error(&e));
                error.unconfirmed = !e.is_connect();
                error
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(300)));
        let request_id = response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().await.map_err(|e| {
            let mut error = unavailable(describe_transport_error(&e));
            error.unconfirmed = true;
            error
        })?;
        let parsed: Option<Value> = serde_json::from_str(&text).ok();
        let request_id = parsed
            .as_ref()
            .and_then(|v| v.pointer("/extensions/gateway/request_id"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or(request_id);
        let with_meta = |mut e: PlatformError| {
            e.retry_after = retry_after;
            e.request_id = request_id.clone();
            e
        };
        if !status.is_success() {
            let kind = match status.as_u16() {
                401 => ErrorKind::BadCredentials,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                429 => ErrorKind::RateLimited,
                s if s >= 500 => ErrorKind::Unavailable,
                _ => parsed.as_ref().and_then(first_error_kind).unwrap_or(ErrorKind::Refused),
            };
            let message = parsed
                .as_ref()
                .and_then(first_error_message)
                .unwrap_or_else(|| format!("HTTP {status}: {}", text.chars().take(200).collect::<String>()));
            let message = match kind {
                ErrorKind::BadCredentials => format!(
                    "the platform refused the credentials of {}: check the Secret's email and apiToken",
                    creds.who()
                ),
                _ => message,
            };
            let mut error = with_meta(PlatformError::new(kind, operation, message));
            // A 503 or 429 is answered before the request is carried out; any other 5xx (a 504
            // above all) may come after it was.
            error.unconfirmed = status.is_server_error() && status.as_u16() != 503;
            return Err(error);
        }
        let Some(parsed) = parsed else {
            let mut error =
                with_meta(unavailable(format!("the gateway answered HTTP {status} with a body that is not JSON")));
            error.unconfirmed = true;
            return Err(error);
        };
        // As the CLI does, any GraphQL error fails the operation (partial data is not used).
        if let Some(kind) = first_error_kind(&parsed).or_else(|| has_errors(&parsed).then_some(ErrorKind::Refused)) {
            let message = first_error_message(&parsed).unwrap_or_else(|| "GraphQL error".into());
            return Err(with_meta(PlatformError::new(kind, operation, message)));
        }
        Ok(parsed.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Starts an install or upgrade task on the target's site, with the input the CLI sends:
    /// `{installationContext, appId, environmentKey, versionId?, async: true}`.
    async fn start_task(
        &self,
        creds: &Credentials,
        target: &Target,
        version_id: Option<&str>,
        operation: &'static str,
        query: &'static str,
        field: &str,
    ) -> PlatformResult<String> {
        let context = self.installation_context(creds, &target.site, &target.product).await?;
        let mut input = json!({
            "installationContext": context,
            "appId": target.app_id,
            "environmentKey": target.environment_key,
            "async": true,
        });
        if let Some(id) = version_id {
            input["versionId"] = json!(id);
        }
        let data = self.call(creds, operation, query, json!({ "input": input })).await?;
        task_id(operation, &data, field)
    }

    /// The mutation payload at `pointer` in `data`, checked: missing is `missing` (with its message),
    /// `success: false` is the platform's error.
    fn payload<'d>(
        operation: &'static str,
        data: &'d Value,
        pointer: &str,
        missing: (ErrorKind, &str),
    ) -> PlatformResult<&'d Value> {
        let payload = data
            .pointer(pointer)
            .filter(|p| !p.is_null())
            .ok_or_else(|| PlatformError::new(missing.0, operation, missing.1))?;
        Self::payload_ok(operation, payload)?;
        Ok(payload)
    }

    /// A mutation payload `{success, errors}`: an error when `success` is false.
    fn payload_ok(operation: &'static str, payload: &Value) -> PlatformResult<()> {
        if payload.get("success").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let kind = first_error_kind(payload).unwrap_or(ErrorKind::Refused);
        let message = first_error_message(payload).unwrap_or_else(|| "the platform did not succeed".into());
        Err(PlatformError::new(kind, operation, message))
    }

    fn require_distribution(&self, operation: &'static str) -> PlatformResult<()> {
        if self.options.distribution {
            Ok(())
        } else {
            Err(PlatformError::new(
                ErrorKind::Unsupported,
                operation,
                format!(
                    "sharing and installation links are not enabled in forgeops (start it with --platform-distribution) \
                     or not offered by the platform; manage distribution in the developer console ({DEVELOPER_CONSOLE})"
                ),
            ))
        }
    }
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    // Never the URL's userinfo or headers: only what kind of failure it was.
    let what = if e.is_timeout() {
        "no answer in time"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() { what.to_string() } else { format!("{what}: {detail}") }
}

fn errors_of(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("errors").and_then(Value::as_array).into_iter().flatten()
}

fn has_errors(v: &Value) -> bool {
    errors_of(v).next().is_some()
}

fn first_error_kind(v: &Value) -> Option<ErrorKind> {
    errors_of(v).find_map(|e| {
        let ext = e.get("extensions")?;
        let error_type = ext.get("errorType").or_else(|| ext.get("classification")).and_then(Value::as_str);
        let status = ext.get("statusCode").and_then(Value::as_u64).map(|s| s as u16);
        Some(ErrorKind::from_error_type(error_type.unwrap_or(""), status))
    })
}

fn first_error_message(v: &Value) -> Option<String> {
    let messages: Vec<&str> = errors_of(v).filter_map(|e| e.get("message").and_then(Value::as_str)).collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

fn s(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn nodes(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(|v| v.get("nodes")).and_then(Value::as_array).into_iter().flatten().filter(|n| !n.is_null())
}

fn not_found(operation: &'static str, what: String) -> PlatformError {
    PlatformError::new(ErrorKind::NotFound, operation, what)
}

/// The environment of `app` in `data`, or a NotFound error naming what is missing.
fn environment_of<'d>(
    data: &'d Value,
    operation: &'static str,
    app_id: &str,
    environment_key: &str,
) -> PlatformResult<&'d Value> {
    let app = data.get("app").filter(|a| !a.is_null()).ok_or_else(|| {
        not_found(operation, format!("app {app_id} not found, or the credentials' account may not see it"))
    })?;
    app.get("environmentByKey")
        .filter(|e| !e.is_null())
        .ok_or_else(|| not_found(operation, format!("app {app_id} has no environment {environment_key}")))
}

fn permissions(version: &Value) -> (Vec<String>, Vec<Egress>) {
    let mut scopes = Vec::new();
    let mut egress = Vec::new();
    for set in version.get("permissions").and_then(Value::as_array).into_iter().flatten() {
        for scope in set.get("scopes").and_then(Value::as_array).into_iter().flatten() {
            if let Some(key) = s(scope, "key") {
                scopes.push(key);
            }
        }
        for e in set.get("egress").and_then(Value::as_array).into_iter().flatten() {
            egress.push(Egress {
                type_: s(e, "type"),
                addresses: e
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string))
                    .collect(),
                category: s(e, "category"),
                in_scope_eud: e.get("inScopeEUD").and_then(Value::as_bool).unwrap_or(false),
            });
        }
    }
    scopes.sort();
    scopes.dedup();
    (scopes, egress)
}

/// What else a version asks of the site admin: remotes (`key baseUrl`), content security policies
/// (`type policy`), and whether it has a Forge SQL module (an extension whose key or type names `sql`).
fn other_permissions(version: &Value) -> (Vec<String>, Vec<String>, bool) {
    let list = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let mut remotes: Vec<String> = list(version.pointer("/storage/remotes"))
        .iter()
        .map(|r| {
            format!("{} {}", s(r, "key").unwrap_or_default(), s(r, "baseUrl").unwrap_or_default()).trim().to_string()
        })
        .collect();
    remotes.sort();
    remotes.dedup();
    let mut policies = Vec::new();
    for set in list(version.get("permissions")) {
        for p in list(set.get("securityPolicies")) {
            let kind = s(&p, "type").unwrap_or_default();
            for policy in list(p.get("policies")) {
                if let Some(policy) = policy.as_str() {
                    policies.push(format!("{kind} {policy}"));
                }
            }
        }
    }
    policies.sort();
    policies.dedup();
    let sql = list(version.pointer("/extensions/nodes")).iter().any(|e| {
        let key = s(e, "key").unwrap_or_default().to_ascii_lowercase();
        let kind = e.pointer("/extensionData/type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        key == "sql" || key.starts_with("sql-") || kind == "sql"
    });
    (remotes, policies, sql)
}

/// The products a version's modules extend: the part before `:` of each extension's type
/// (`confluence:contentBylineItem` → `confluence`), each once, sorted.
fn module_products(version: &Value) -> Vec<String> {
    let mut products: Vec<String> = version
        .pointer("/extensions/nodes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/extensionData/type").and_then(Value::as_str))
        .filter_map(|t| t.split_once(':').map(|(product, _)| product.to_ascii_lowercase()))
        .filter(|p| !p.is_empty())
        .collect();
    products.sort();
    products.dedup();
    products
}

/// An App metrics answer: its series (`groups` naming the version and the context, one data
/// point with the count), or the `QueryError` the API answers in their place.
fn parse_metrics(operation: &'static str, answer: &Value) -> PlatformResult<Vec<MetricsValue>> {
    if answer.is_null() {
        return Err(not_found(operation, "the app's metrics (no forgeMetrics answer)".into()));
    }
    if let Some(series) = answer.get("series").and_then(Value::as_array) {
        let label = |groups: &Value, key: &str| {
            groups.as_array().into_iter().flatten().find_map(|g| {
                let k = g.get("key").and_then(Value::as_str)?.replace('_', "");
                k.eq_ignore_ascii_case(key).then(|| s(g, "value")).flatten()
            })
        };
        return Ok(series
            .iter()
            .filter_map(|one| {
                let groups = one.get("groups")?;
                let count = one.get("data")?.as_array()?.iter().filter_map(|p| p.get("count")?.as_u64()).sum();
                Some(MetricsValue { version: label(groups, "version")?, context: label(groups, "contextari")?, count })
            })
            .collect());
    }
    let extension = answer.pointer("/extensions/0");
    let status =
        extension.and_then(|e| e.get("statusCode")).and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    let error_type = extension.and_then(|e| s(e, "errorType")).unwrap_or_default();
    let kind = match status {
        Some(429) => ErrorKind::RateLimited,
        _ => ErrorKind::from_error_type(&error_type, status),
    };
    let message = s(answer, "message").unwrap_or_else(|| format!("the App metrics API answered {error_type}"));
    Err(PlatformError::new(kind, operation, message))
}

fn rollout_status(s: &str) -> RolloutStatus {
    match s {
        "RUNNING" => RolloutStatus::Running,
        "CANCELLED" => RolloutStatus::Cancelled,
        _ => RolloutStatus::Complete,
    }
}

fn parse_rollout(n: &Value) -> Rollout {
    let count = |k: &str| n.get("progress").and_then(|p| p.get(k)).and_then(Value::as_u64).unwrap_or(0);
    Rollout {
        id: s(n, "id").unwrap_or_default(),
        status: rollout_status(&s(n, "status").unwrap_or_default()),
        source_version_id: s(n, "sourceVersionId").unwrap_or_default(),
        target_version_id: s(n, "targetVersionId").unwrap_or_default(),
        created_at: s(n, "createdAt"),
        completed_at: s(n, "completedAt"),
        completed: count("completedUpgradeCount"),
        failed: count("failedUpgradeCount"),
        pending: count("pendingUpgradeCount"),
        upgrade_limit: n.get("upgradeLimit").and_then(Value::as_u64).map(|l| l as u32),
    }
}

/// The cloud id and product of a workspace ARI (`ari:cloud:jira:<cloudId>:workspace/<activationId>`)
/// or a site ARI (`ari:cloud:jira::site/<cloudId>`).
pub fn parse_context(ari: &str) -> Option<(String, String)> {
    let mut parts = ari.splitn(5, ':');
    let (_, _, product, cloud_id, resource) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let cloud = if cloud_id.is_empty() { resource.strip_prefix("site/")? } else { cloud_id };
    Some((cloud.to_string(), product.to_string()))
}

impl Platform for ForgeGateway {
    fn whoami<'a>(&'a self, creds: &'a Credentials) -> BoxFuture<'a, PlatformResult<Account>> {
        async move {
            const OP: &str = "forge_cli_getUserDetails";
            let data = self.call(creds, OP, ops::GET_USER_DETAILS, json!({})).await?;
            let user = data.pointer("/me/user").filter(|u| !u.is_null()).ok_or_else(|| {
                PlatformError::new(ErrorKind::BadCredentials, OP, "the platform knows no user for these credentials")
            })?;
            let account = Account {
                account_id: s(user, "accountId").unwrap_or_default(),
                name: s(user, "name").unwrap_or_default(),
                status: s(user, "accountStatus").unwrap_or_default(),
            };
            if account.status != "active" {
                return Err(PlatformError::new(
                    ErrorKind::BadCredentials,
                    OP,
                    format!("the account of {} is {}, not active", creds.who(), account.status),
                ));
            }
            Ok(account)
        }
        .boxed()
    }

    fn environments<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<EnvironmentInfo>>> {
        async move {
            const OP: &str = "forge_cli_listEnvironment";
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let vars = json!({ "id": app_id, "first": 25, "after": after });
                let data = self.call(creds, OP, ops::LIST_ENVIRONMENT, vars).await?;
                let page = data
                    .pointer("/app/environmentsPage")
                    .filter(|p| !p.is_null())
                    .ok_or_else(|| not_found(OP, format!("app {app_id} not found")))?;
                for n in nodes(Some(page)) {
                    out.push(EnvironmentInfo {
                        id: s(n, "id").unwrap_or_default(),
                        key: s(n, "key").unwrap_or_default(),
                        type_: s(n, "type").unwrap_or_default(),
                        created_at: s(n, "createdAt"),
                    });
                }
                after = page.pointer("/pageInfo/endCursor").and_then(Value::as_str).map(str::to_string);
                if page.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool) != Some(true) || after.is_none() {
                    return Ok(out);
                }
            }
        }
        .boxed()
    }

    fn versions<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<VersionInfo>>> {
        async move {
            const DETAILS: &str = "forge_cli_getApplicationVersionDetails";
            const IDS: &str = "forge_cli_getApplicationIdentityVersionDetails";
            const LATEST: &str = "forge_cli_getApplicationEnvironmentLatestVersions";
            let first = 200;
            let vars =
                json!({ "appId": app_id, "environmentKey": environment_key, "firstN": first, "majorVersion": null });
            let details = self.call(creds, DETAILS, ops::GET_APPLICATION_VERSION_DETAILS, vars.clone()).await?;
            let ids = self.call(creds, IDS, ops::GET_APPLICATION_IDENTITY_VERSION_DETAILS, vars).await?;
            let products_vars = json!({ "appId": app_id, "environmentKey": environment_key, "firstN": first });
            let latest =
                self.call(creds, LATEST, ops::GET_APPLICATION_ENVIRONMENT_LATEST_VERSIONS, products_vars).await?;
            let id_of: HashMap<String, String> =
                nodes(environment_of(&ids, IDS, app_id, environment_key)?.get("versions"))
                    .filter_map(|n| Some((s(n, "version")?, s(n, "id")?)))
                    .collect();
            let products_of: HashMap<String, Vec<String>> =
                nodes(environment_of(&latest, LATEST, app_id, environment_key)?.get("versions"))
                    .filter_map(|n| {
                        let products = n
                            .get("requiredProducts")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_lowercase)).collect())
                            .unwrap_or_default();
                        Some((s(n, "version")?, products))
                    })
                    .collect();
            let env = environment_of(&details, DETAILS, app_id, environment_key)?;
            Ok(nodes(env.get("versions"))
                .filter_map(|n| {
                    let version = s(n, "version")?;
                    let (scopes, egress) = permissions(n);
                    let (remotes, security_policies, sql_module) = other_permissions(n);
                    Some(VersionInfo {
                        module_products: module_products(n),
                        remotes,
                        security_policies,
                        sql_module,
                        id: id_of.get(&version).cloned().unwrap_or_default(),
                        created_at: s(n, "createdAt"),
                        is_latest: n.get("isLatest").and_then(Value::as_bool).unwrap_or(false),
                        requires_license: n.get("requiresLicense").and_then(Value::as_bool).unwrap_or(false),
                        scopes,
                        egress,
                        required_products: products_of.get(&version).cloned().unwrap_or_default(),
                        version,
                    })
                })
                .collect())
        }
        .boxed()
    }

    fn installation_counts<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<VersionCount>>> {
        async move {
            const OP: &str = "forge_cli_getAppUpgradeVersionsList";
            let vars = json!({ "appId": app_id, "environmentKey": environment_key });
            let data = self.call(creds, OP, ops::GET_APP_UPGRADE_VERSIONS_LIST, vars).await?;
            let env = environment_of(&data, OP, app_id, environment_key)?;
            Ok(nodes(env.get("versions"))
                .map(|n| VersionCount {
                    id: s(n, "id").unwrap_or_default(),
                    version: s(n, "version").unwrap_or_default(),
                    installations: n.pointer("/installations/totalCount").and_then(Value::as_u64).unwrap_or(0),
                })
                .collect())
        }
        .boxed()
    }

    fn installations<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        filter: &'a InstallationFilter,
        after: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<Page<InstallationInfo>>> {
        async move {
            const OP: &str = "forge_cli_getEcosystemInstallationsByApp";
            const HOSTS: &str = "forge_cli_getHostnameForTenantContexts";
            let mut gql_filter = json!({ "apps": { "ids": [app_id] } });
            if !filter.environment_types.is_empty() {
                gql_filter["appEnvironments"] = json!({ "types": filter.environment_types });
            }
            if !filter.contexts.is_empty() || !filter.ids.is_empty() {
                let mut installations = json!({});
                if !filter.contexts.is_empty() {
                    installations["contexts"] = json!(filter.contexts);
                }
                if !filter.ids.is_empty() {
                    installations["ids"] = json!(filter.ids);
                }
                gql_filter["appInstallations"] = installations;
            }
            let vars = json!({ "filter": gql_filter, "first": 100, "after": after });
            let data = self.call(creds, OP, ops::GET_ECOSYSTEM_INSTALLATIONS_BY_APP, vars).await?;
            let list = data
                .pointer("/ecosystem/appInstallationsByApp")
                .filter(|l| !l.is_null())
                .ok_or_else(|| not_found(OP, format!("app {app_id} not found")))?;
            let mut items: Vec<InstallationInfo> = nodes(Some(list))
                .map(|n| {
                    let context = s(n, "installationContext").unwrap_or_default();
                    InstallationInfo {
                        id: s(n, "id").unwrap_or_default(),
                        product: parse_context(&context).map(|(_, p)| p),
                        site: None,
                        environment_key: n.pointer("/appEnvironment/key").and_then(Value::as_str).unwrap_or("").into(),
                        environment_type: n.pointer("/appEnvironment/type").and_then(Value::as_str).map(str::to_string),
                        version: n
                            .pointer("/appEnvironmentVersion/version")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        version_is_latest: n
                            .pointer("/appEnvironmentVersion/isLatest")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        compute_version: n
                            .pointer("/computeVersion/version")
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        installation_context: context,
                    }
                })
                .collect();
            // Host names, 20 cloud ids a call, as the CLI does.
            let mut cloud_ids: Vec<String> =
                items.iter().filter_map(|i| parse_context(&i.installation_context).map(|(c, _)| c)).collect();
            cloud_ids.sort();
            cloud_ids.dedup();
            let mut host_of = HashMap::new();
            {
                let known = self.host_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                cloud_ids.retain(|id| match known.get(id.as_str()) {
                    Some((host, at)) if at.elapsed() < HOST_NAME_TTL => {
                        host_of.insert(id.clone(), host.to_string());
                        false
                    }
                    _ => true,
                });
            }
            for chunk in cloud_ids.chunks(20) {
                let data = self
                    .call(creds, HOSTS, ops::GET_HOSTNAME_FOR_TENANT_CONTEXTS, json!({ "cloudIds": chunk }))
                    .await?;
                let hosts = data.get("tenantContexts").and_then(Value::as_array).cloned().unwrap_or_default();
                let mut known = self.host_names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (id, host) in chunk.iter().zip(hosts) {
                    if let Some(h) = s(&host, "hostName") {
                        known.insert(id.as_str().into(), (h.as_str().into(), Instant::now()));
                        host_of.insert(id.clone(), h);
                    }
                }
            }
            for i in &mut items {
                i.site = parse_context(&i.installation_context).and_then(|(c, _)| host_of.get(&c).cloned());
            }
            let next = (list.pointer("/pageInfo/hasNextPage").and_then(Value::as_bool) == Some(true))
                .then(|| list.pointer("/pageInfo/endCursor").and_then(Value::as_str).map(str::to_string))
                .flatten();
            Ok(Page { items, next })
        }
        .boxed()
    }

    fn installation_context<'a>(
        &'a self,
        creds: &'a Credentials,
        site: &'a str,
        product: &'a str,
    ) -> BoxFuture<'a, PlatformResult<String>> {
        async move {
            const OP: &str = "getTenantContextDetails";
            let product = super::context_product(product);
            if product == "bitbucket" {
                return Err(PlatformError::new(
                    ErrorKind::Unsupported,
                    OP,
                    "Bitbucket workspaces are not supported by forgeops yet",
                ));
            }
            let sharing = Self::sharing_key(creds);
            let cached = (sharing.clone(), product.to_string());
            if let Some((context, at)) = self
                .contexts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&cached)
                .and_then(|c| c.get(site))
                && at.elapsed() < HOST_NAME_TTL
            {
                return Ok(context.to_string());
            }
            let found = self
                .context_lookups
                .get((sharing, product.to_string()), site.to_string(), |hosts| {
                    self.tenant_contexts(creds, product, hosts)
                })
                .await?
                .flatten();
            let Some((cloud_id, activation)) = found else {
                return Err(not_found(OP, format!("{site} is not an Atlassian site the platform knows")));
            };
            let activation = activation.ok_or_else(|| not_found(OP, format!("{site} does not run {product}")))?;
            let context = format!("ari:cloud:{product}:{cloud_id}:workspace/{activation}");
            self.contexts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(cached)
                .or_default()
                .insert(site.into(), (context.as_str().into(), Instant::now()));
            Ok(context)
        }
        .boxed()
    }

    fn installation_with_id<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Option<InstallationInfo>>> {
        async move {
            let group = (Self::sharing_key(creds), app_id.to_string());
            self.id_lookups.get(group, id.to_string(), |ids| self.installations_by_id(creds, app_id, ids)).await
        }
        .boxed()
    }

    fn installations_in<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        context: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<InstallationInfo>>> {
        async move {
            let group = (Self::sharing_key(creds), app_id.to_string());
            let found = self
                .installation_lookups
                .get(group, context.to_string(), |contexts| self.installations_by_context(creds, app_id, contexts))
                .await?;
            Ok(found.unwrap_or_default())
        }
        .boxed()
    }

    fn start_install<'a>(
        &'a self,
        creds: &'a Credentials,
        target: &'a Target,
        version_id: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>> {
        self.start_task(
            creds,
            target,
            version_id,
            "forge_cli_installApplication",
            ops::INSTALL_APPLICATION,
            "installApp",
        )
        .boxed()
    }

    fn start_upgrade<'a>(
        &'a self,
        creds: &'a Credentials,
        target: &'a Target,
        version_id: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>> {
        self.start_task(
            creds,
            target,
            version_id,
            "forge_cli_upgradeApplication",
            ops::UPGRADE_APPLICATION,
            "upgradeApp",
        )
        .boxed()
    }

    fn start_uninstall<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
        installation_id: &'a str,
        installation_context: Option<&'a str>,
    ) -> BoxFuture<'a, PlatformResult<String>> {
        async move {
            const OP: &str = "forge_cli_uninstallApplication";
            let mut input = json!({
                "appId": app_id,
                "environmentKey": environment_key,
                "installationId": installation_id,
            });
            if let Some(context) = installation_context {
                input["installationContext"] = json!(context);
            }
            input["async"] = json!(true);
            let data = self.call(creds, OP, ops::UNINSTALL_APPLICATION, json!({ "input": input })).await?;
            task_id(OP, &data, "uninstallApp")
        }
        .boxed()
    }

    fn task<'a>(&'a self, creds: &'a Credentials, task_id: &'a str) -> BoxFuture<'a, PlatformResult<Task>> {
        async move {
            const OP: &str = "forge_cli_getInstallationTask";
            let data = self.call(creds, OP, ops::GET_INSTALLATION_TASK, json!({ "id": task_id })).await?;
            let task = data
                .get("appInstallationTask")
                .filter(|t| !t.is_null())
                .ok_or_else(|| not_found(OP, format!("the platform has no task {task_id}")))?;
            let state = match s(task, "state").as_deref() {
                Some("COMPLETE") => TaskState::Complete,
                Some("FAILED") => TaskState::Failed,
                Some("RUNNING") => TaskState::Running,
                _ => TaskState::Pending,
            };
            let errors = errors_of(task)
                .map(|e| {
                    let kind = first_error_kind(&json!({ "errors": [e] })).unwrap_or(ErrorKind::Refused);
                    (kind, s(e, "message").unwrap_or_default())
                })
                .collect();
            Ok(Task { state, errors })
        }
        .boxed()
    }

    fn upgrade_targets<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
        source_version_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<UpgradeTarget>>> {
        async move {
            const OP: &str = "forge_cli_getAppUpgradableToList";
            let vars =
                json!({ "appId": app_id, "environmentKey": environment_key, "sourceVersionId": source_version_id });
            let data = self.call(creds, OP, ops::GET_APP_UPGRADABLE_TO_LIST, vars).await?;
            let env = environment_of(&data, OP, app_id, environment_key)?;
            Ok(nodes(env.get("versions"))
                .map(|n| {
                    let info = n.get("upgradeableByRolloutFromVersion");
                    UpgradeTarget {
                        version_id: s(n, "id").unwrap_or_default(),
                        version: s(n, "version").unwrap_or_default(),
                        upgradeable_by_rollout: info
                            .and_then(|i| i.get("upgradeableByRollout"))
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                        upgrade_limit: info
                            .and_then(|i| i.get("upgradeLimit"))
                            .and_then(Value::as_u64)
                            .map(|l| l as u32),
                    }
                })
                .collect())
        }
        .boxed()
    }

    fn create_rollout<'a>(
        &'a self,
        creds: &'a Credentials,
        source_version_id: &'a str,
        target_version_id: &'a str,
        limit: Option<u32>,
    ) -> BoxFuture<'a, PlatformResult<RolloutStarted>> {
        async move {
            const OP: &str = "forge_cli_createAppVersionUpgradeRollout";
            let mut input = json!({ "sourceVersionId": source_version_id, "targetVersionId": target_version_id });
            if let Some(limit) = limit {
                input["limit"] = json!(limit);
            }
            let data = self.call(creds, OP, ops::CREATE_APP_VERSION_UPGRADE_ROLLOUT, json!({ "input": input })).await?;
            let no_answer = (ErrorKind::Unavailable, "the platform gave no answer");
            let payload = Self::payload(OP, &data, "/ecosystem/createAppVersionRollout", no_answer)?;
            let rollout = payload.get("appVersionRollout").filter(|r| !r.is_null()).ok_or_else(|| {
                PlatformError::new(ErrorKind::Unavailable, OP, "the platform reported success without a rollout")
            })?;
            Ok(RolloutStarted {
                rollout_id: s(rollout, "id").unwrap_or_default(),
                upgrade_limit: rollout.get("upgradeLimit").and_then(Value::as_u64).map(|l| l as u32),
                total_eligible_upgrades: payload.get("totalEligibleUpgrades").and_then(Value::as_u64),
                expected_remaining_upgrades: payload.get("expectedRemainingUpgrades").and_then(Value::as_u64),
            })
        }
        .boxed()
    }

    fn rollout<'a>(
        &'a self,
        creds: &'a Credentials,
        rollout_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Option<Rollout>>> {
        async move {
            const OP: &str = "forge_cli_getAppVersionRollout";
            let data =
                match self.call(creds, OP, ops::GET_APP_VERSION_ROLLOUT, json!({ "appRolloutId": rollout_id })).await {
                    Ok(data) => data,
                    Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                };
            Ok(data
                .pointer("/ecosystem/appVersionRollout")
                .filter(|r| !r.is_null() && r.get("id").is_some_and(|id| !id.is_null()))
                .map(parse_rollout))
        }
        .boxed()
    }

    fn rollouts<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        environment_key: &'a str,
    ) -> BoxFuture<'a, PlatformResult<Vec<Rollout>>> {
        async move {
            const OP: &str = "forge_cli_getAppVersionRolloutsList";
            let vars = json!({ "appId": app_id, "environmentKey": environment_key });
            let data = self.call(creds, OP, ops::GET_APP_VERSION_ROLLOUTS_LIST, vars).await?;
            let env = environment_of(&data, OP, app_id, environment_key)?;
            Ok(nodes(env.get("appVersionRollouts")).map(parse_rollout).collect())
        }
        .boxed()
    }

    fn cancel_rollout<'a>(&'a self, creds: &'a Credentials, rollout_id: &'a str) -> BoxFuture<'a, PlatformResult<()>> {
        async move {
            const OP: &str = "forge_cli_cancelAppVersionUpgradeRollout";
            let vars = json!({ "input": { "id": rollout_id } });
            let data = self.call(creds, OP, ops::CANCEL_APP_VERSION_UPGRADE_ROLLOUT, vars).await?;
            let no_answer = (ErrorKind::Unavailable, "the platform gave no answer");
            Self::payload(OP, &data, "/ecosystem/cancelAppVersionRollout", no_answer).map(|_| ())
        }
        .boxed()
    }

    fn app_metrics<'a>(
        &'a self,
        creds: &'a Credentials,
        query: &'a MetricsQuery,
    ) -> BoxFuture<'a, PlatformResult<Vec<MetricsValue>>> {
        async move {
            let (op, text, field): (&'static str, &str, &str) = match query.kind {
                MetricKind::Invocations => {
                    ("forgeops_getAppMetricsInvocations", ops::FORGEOPS_GET_APP_METRICS_INVOCATIONS, "invocationsValue")
                }
                MetricKind::Errors => ("forgeops_getAppMetricsErrors", ops::FORGEOPS_GET_APP_METRICS_ERRORS, "errorsValue"),
            };
            let time = |ms: i64| jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default();
            let mut filters = json!({ "interval": { "start": time(query.start_ms), "end": time(query.end_ms) } });
            if let Some(env) = &query.environment_id {
                filters["environment"] = json!(env);
            }
            let vars = json!({ "appId": query.app_id, "query": { "filters": filters, "groupBy": ["VERSION", "CONTEXT_ARI"] } });
            let data = self.call(creds, op, text, vars).await?;
            let answer = data.pointer(&format!("/ecosystem/forgeMetrics/{field}")).cloned().unwrap_or(Value::Null);
            parse_metrics(op, &answer)
        }
        .boxed()
    }

    fn set_sharing<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        enabled: bool,
        details: &'a AppDetails,
    ) -> BoxFuture<'a, PlatformResult<()>> {
        async move {
            const OP: &str = "forgeops_updateAppDetails";
            self.require_distribution(OP)?;
            let status = if enabled { "PUBLIC" } else { "DEVELOPMENT" };
            let mut input = json!({ "appId": app_id, "distributionStatus": status });
            if enabled {
                for (key, value) in [
                    ("vendorName", &details.vendor_name),
                    ("privacyPolicy", &details.privacy_policy),
                    ("termsOfService", &details.terms_of_service),
                    ("contactLink", &details.contact_link),
                ] {
                    if let Some(v) = value {
                        input[key] = json!(v);
                    }
                }
            }
            let result = async {
                let data = self.call(creds, OP, ops::FORGEOPS_UPDATE_APP_DETAILS, json!({ "input": input })).await?;
                let not_offered = (ErrorKind::Unsupported, "the platform does not offer this");
                Self::payload(OP, &data, "/updateAppDetails", not_offered).map(|_| ())
            }
            .await;
            result.map_err(|e| distribution_refusal(e, creds))
        }
        .boxed()
    }

    fn generate_link<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
        products: &'a [String],
    ) -> BoxFuture<'a, PlatformResult<DistributionLink>> {
        async move {
            const OP: &str = "forgeops_generateDistributionLink";
            self.require_distribution(OP)?;
            let vars = json!({ "appId": app_id, "products": products });
            let data = self
                .call(creds, OP, ops::FORGEOPS_GENERATE_DISTRIBUTION_LINK, vars)
                .await
                .map_err(|e| distribution_refusal(e, creds))?;
            data.pointer("/ecosystem/devConsole/generateDistributionLink")
                .filter(|l| !l.is_null())
                .map(|l| link(app_id, l))
                .ok_or_else(|| PlatformError::new(ErrorKind::Unsupported, OP, "the platform generated no link"))
        }
        .boxed()
    }

    fn sharing_state<'a>(
        &'a self,
        creds: &'a Credentials,
        app_id: &'a str,
    ) -> BoxFuture<'a, PlatformResult<SharingState>> {
        async move {
            const OP: &str = "forgeops_getAppSharing";
            self.require_distribution(OP)?;
            let vars = json!({ "id": app_id, "appId": app_id });
            let data = self
                .call(creds, OP, ops::FORGEOPS_GET_APP_SHARING, vars)
                .await
                .map_err(|e| distribution_refusal(e, creds))?;
            let app = data
                .pointer("/app")
                .filter(|a| !a.is_null())
                .ok_or_else(|| not_found(OP, format!("app {app_id} not found")))?;
            let status = s(app, "distributionStatus").ok_or_else(|| {
                PlatformError::new(ErrorKind::Unsupported, OP, "the platform reports no distributionStatus")
            })?;
            Ok(SharingState {
                shared: status == "PUBLIC",
                listed_on_marketplace: app.get("marketplaceApp").is_some_and(|m| !m.is_null()),
                link: data
                    .pointer("/ecosystem/devConsole/getActiveDistributionLink")
                    .filter(|l| !l.is_null() && l.get("signature").is_some_and(|s| !s.is_null()))
                    .map(|l| link(app_id, l)),
            })
        }
        .boxed()
    }
}

/// A refusal of an undocumented distribution operation. A 401 there says only that the platform
/// does not let these credentials share apps (the operations are unconfirmed for API tokens), not
/// that the credentials are bad: it is a refusal for the policy alone, never a reason to drop the
/// credentials every other object uses.
fn distribution_refusal(mut e: PlatformError, creds: &Credentials) -> PlatformError {
    if e.kind == ErrorKind::BadCredentials {
        e.kind = ErrorKind::Refused;
        e.message = format!(
            "the platform refused this distribution operation for {} (HTTP 401); the other operations are not              affected",
            creds.who()
        );
    }
    e
}

fn task_id(operation: &'static str, data: &Value, field: &str) -> PlatformResult<String> {
    let no_answer = (ErrorKind::Unavailable, "the platform gave no answer");
    let payload = ForgeGateway::payload(operation, data, &format!("/{field}"), no_answer)?;
    s(payload, "taskId")
        .ok_or_else(|| PlatformError::new(ErrorKind::Unavailable, operation, "the platform started no task"))
}

/// The installation link in the platform's own format:
/// `https://developer.atlassian.com/console/install/<app uuid>?signature=...&product=...`.
fn link(app_id: &str, l: &Value) -> DistributionLink {
    let products: Vec<String> = l
        .get("products")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(str::to_string))
        .collect();
    let uuid = app_id.rsplit('/').next().unwrap_or(app_id);
    let signature = s(l, "signature").unwrap_or_default();
    let mut url = format!("https://developer.atlassian.com/console/install/{uuid}?signature={}", urlencode(&signature));
    for p in &products {
        url.push_str("&product=");
        url.push_str(&urlencode(p));
    }
    DistributionLink { url, products }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_parse_to_cloud_id_and_product() {
        assert_eq!(parse_context("ari:cloud:jira:1234-abcd:workspace/5678"), Some(("1234-abcd".into(), "jira".into())));
        assert_eq!(parse_context("ari:cloud:confluence::site/c-1"), Some(("c-1".into(), "confluence".into())));
        assert_eq!(parse_context("nonsense"), None);
    }

    #[test]
    fn gateway_errors_map_to_kinds_and_messages() {
        let answer = json!({"errors": [{"message": "already there", "extensions": {"errorType": "APP_ALREADY_INSTALLED", "statusCode": 409}}]});
        assert_eq!(first_error_kind(&answer), Some(ErrorKind::AlreadyInstalled));
        assert_eq!(first_error_message(&answer).as_deref(), Some("already there"));
        let payload = json!({"success": false, "errors": [{"message": "busy", "extensions": {"errorType": "APP_ROLLOUT_RUNNING"}}]});
        let e = ForgeGateway::payload_ok("op", &payload).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (ErrorKind::RolloutRunning, "busy"));
        assert!(ForgeGateway::payload_ok("op", &json!({"success": true})).is_ok());
    }

    #[test]
    fn links_have_the_platform_format() {
        let l = link(
            "ari:cloud:ecosystem::app/abc-1",
            &json!({"products": ["jira"], "signature": "s+g/1", "status": "ACTIVE"}),
        );
        assert_eq!(l.url, "https://developer.atlassian.com/console/install/abc-1?signature=s%2Bg%2F1&product=jira");
    }

    #[test]
    fn permissions_are_flattened() {
        let v = json!({"permissions": [
            {"scopes": [{"key": "write:jira-work"}, {"key": "read:jira-work"}], "egress": [{"type": "FETCH_BACKEND_SIDE", "addresses": ["a.example"], "category": "ANALYTICS"}]},
            {"scopes": [{"key": "read:jira-work"}], "egress": null}
        ]});
        let (scopes, egress) = permissions(&v);
        assert_eq!(scopes, vec!["read:jira-work", "write:jira-work"]);
        assert_eq!(egress.len(), 1);
        assert_eq!(egress[0].category.as_deref(), Some("ANALYTICS"));
    }

    #[test]
    fn backoff_is_jittered_and_bounded() {
        let g = ForgeGateway::new(GatewayOptions::default(), None).unwrap();
        for attempt in 1..20 {
            let d = g.backoff(attempt);
            assert!(d <= g.options.max_backoff, "{d:?}");
            assert!(d >= Duration::from_millis(125), "{d:?}");
        }
    }
}
