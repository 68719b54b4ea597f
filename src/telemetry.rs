//! Logs and Prometheus metrics.

use std::sync::Arc;

use http::Request;
use kube::client::Body;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tower::util::MapRequestLayer;

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber. `RUST_LOG` overrides the default filter.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,kube_runtime=warn,kube_client::client::builder=off,kube_client::client::tls=error",
        )
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    pub result: &'static str,
    /// The error category (`none` on success).
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlatformLabels {
    /// The gateway operation (`forge_cli_installApplication`, ...).
    pub operation: &'static str,
    /// `ok`, or the error category (`rate_limited`, `unavailable`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// The operator's version (`Cargo.toml`).
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialsLabel {
    /// The Secret the account's token came from (`namespace/name`); never the account's e-mail.
    pub credentials: String,
}

/// The operator's metrics, served at `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub reconciliations: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ControllerLabel, Histogram>,
    pub api_requests: Family<MethodLabel, Counter>,
    /// Requests sent to the Forge platform, each attempt counted, by operation and outcome.
    pub platform_requests: Family<PlatformLabels, Counter>,
    /// Time for one request to the Forge platform, by operation.
    pub platform_seconds: Family<OperationLabel, Histogram>,
    /// Events not recorded because the queue of Events to send was full.
    pub events_dropped: Counter,
    /// Seconds platform requests waited for the client-side rate limit, by credentials.
    pub platform_limiter_wait: Family<CredentialsLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while this replica holds the leader Lease (or runs without leader election).
    pub leader: Gauge,
    /// 1 while the platform circuit breaker holds requests.
    pub breaker_open: Gauge,
    /// How often the circuit breaker opened.
    pub breaker_opened: Counter,
    /// Answers in which the platform refused an account's credentials, by credentials Secret.
    pub credentials_refused: Family<CredentialsLabel, Counter>,
    /// Where the object gauges are read from (see [`crate::fleet_metrics`]).
    pub fleet: Arc<crate::fleet_metrics::FleetSource>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("forgeops");
        let reconciliations = Family::<ReconcileLabels, Counter>::default();
        registry.register("reconciliations", "Reconciliations by controller and result", reconciliations.clone());
        let reconcile_seconds = Family::<ControllerLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", reconcile_seconds.clone());
        let api_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "kube_api_requests",
            "Requests sent to the Kubernetes API, by HTTP method",
            api_requests.clone(),
        );
        let platform_requests = Family::<PlatformLabels, Counter>::default();
        registry.register(
            "platform_requests",
            "Requests sent to the Forge platform (each attempt), by operation and outcome",
            platform_requests.clone(),
        );
        let platform_seconds = Family::<OperationLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 12))
        });
        registry.register(
            "platform_request_duration_seconds",
            "Time for one request to the Forge platform, by operation",
            platform_seconds.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not recorded because the queue of Events waiting to be sent was full",
            events_dropped.clone(),
        );
        let platform_limiter_wait = Family::<CredentialsLabel, Counter<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "platform_rate_limit_wait_seconds",
            "Time platform requests waited for forgeops' own rate limit per account, by credentials Secret",
            platform_limiter_wait.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The operator's build: 1, with its version as a label", build_info);
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (holds the leader Lease), 0 while it stands by",
            leader.clone(),
        );
        let breaker_open = Gauge::default();
        registry.register(
            "platform_circuit_breaker_open",
            "1 while the platform circuit breaker holds requests because the platform keeps failing",
            breaker_open.clone(),
        );
        let breaker_opened = Counter::default();
        registry.register(
            "platform_circuit_breaker_opened",
            "How often the platform circuit breaker opened",
            breaker_opened.clone(),
        );
        let credentials_refused = Family::<CredentialsLabel, Counter>::default();
        registry.register(
            "platform_credentials_refused",
            "Platform answers that refused an account's credentials (fix the Secret), by credentials Secret",
            credentials_refused.clone(),
        );
        let fleet = Arc::new(crate::fleet_metrics::FleetSource::default());
        registry.register_collector(Box::new(crate::fleet_metrics::FleetCollector(fleet.clone())));
        Metrics {
            registry,
            leader,
            breaker_open,
            breaker_opened,
            credentials_refused,
            fleet,
            platform_limiter_wait,
            reconciliations,
            reconcile_seconds,
            api_requests,
            platform_requests,
            platform_seconds,
            events_dropped,
        }
    }
}

impl Metrics {
    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Requests sent to the API server that could change something (anything but GET).
    pub fn write_requests(&self) -> u64 {
        ["POST", "PUT", "PATCH", "DELETE"]
            .into_iter()
            .map(|m| self.api_requests.get_or_create(&MethodLabel { method: m.to_string() }).get())
            .sum()
    }
}

/// A client layer that counts every request the operator sends, by method.
pub fn request_counter(metrics: Arc<Metrics>) -> MapRequestLayer<impl Fn(Request<Body>) -> Request<Body> + Clone> {
    MapRequestLayer::new(move |req: Request<Body>| {
        metrics.api_requests.get_or_create(&MethodLabel { method: req.method().as_str().to_string() }).inc();
        req
    })
}

/// A client for `config` whose requests are counted in `metrics`.
pub fn counted_client(config: kube::Config, metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&request_counter(metrics)).build())
}
