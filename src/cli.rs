//! The `forgeops run` options, shared by the operator's binary and the quick start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::controllers::bulk_upgrade::Limits;
use crate::operator;
use crate::platform::credentials::Grant;
use crate::platform::{ForgeGateway, GatewayOptions, Platform};
use crate::telemetry::Metrics;

/// How the operator runs: the cluster scope, the platform, leader election and limits.
#[derive(clap::Args, Clone, Debug)]
pub struct RunArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "FORGEOPS_NAMESPACE")]
    pub namespace: Option<String>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, env = "FORGEOPS_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// This replica's name, recorded on Events (set it to the pod name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
    /// The operator's own namespace: its leader Lease and the bulk-upgrade concurrency Leases live here,
    /// and its default credentials Secret (see `--credentials-secret`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "forgeops-system")]
    pub operator_namespace: String,
    /// The Forge GraphQL gateway (the real platform), or a local emulator's `/graphql` URL. The same
    /// variable as the `forge` CLI's.
    #[arg(long, env = "FORGE_GRAPHQL_GATEWAY", default_value = crate::platform::forge::DEFAULT_GATEWAY)]
    pub platform_url: String,
    /// The default credentials Secret (keys `email`, `apiToken`) in the operator namespace, for
    /// ForgeApps that name none in `spec.credentialsSecretRef`.
    #[arg(long, env = "FORGEOPS_CREDENTIALS_SECRET", default_value = "forgeops-credentials")]
    pub credentials_secret: String,
    /// Namespaces (comma separated), besides the operator's own, whose ForgeApps may act with the
    /// default credentials Secret. A ForgeApp anywhere else needs a Secret of its own
    /// (`spec.credentialsSecretRef`). Default: none.
    #[arg(long, env = "FORGEOPS_DEFAULT_CREDENTIALS_NAMESPACES", value_delimiter = ',')]
    pub default_credentials_namespaces: Vec<String>,
    /// A label selector on Namespaces (`key=value`, `key!=value`, `key`, `!key`, comma separated)
    /// whose ForgeApps may also act with the default credentials Secret. Labelling a Namespace is
    /// a cluster admin's right, not a namespace user's. Default: none.
    #[arg(long, env = "FORGEOPS_DEFAULT_CREDENTIALS_NAMESPACE_SELECTOR")]
    pub default_credentials_namespace_selector: Option<String>,
    /// Seconds to wait for one platform request.
    #[arg(long, env = "FORGEOPS_PLATFORM_TIMEOUT_SECS", default_value_t = 30)]
    pub platform_timeout_secs: u64,
    /// Attempts per platform request when it is rate limited or the platform is unavailable.
    #[arg(long, env = "FORGEOPS_PLATFORM_ATTEMPTS", default_value_t = 5)]
    pub platform_attempts: u32,
    /// A PEM file of extra CA certificates to trust for the platform (for example a proxy's).
    #[arg(long, env = "FORGEOPS_PLATFORM_CA_BUNDLE")]
    pub platform_ca_bundle: Option<PathBuf>,
    /// Use the platform's distribution operations (sharing by link, installation links). They are
    /// undocumented for API-token auth, so they are off unless asked for.
    #[arg(long, env = "FORGEOPS_PLATFORM_DISTRIBUTION")]
    pub platform_distribution: bool,
    /// Platform requests per account at most, over every operation, as `N/s`, `N/m` or `N/h`
    /// (a token bucket of N). The platform documents no gateway-wide rate: none unless set.
    #[arg(long, env = "FORGEOPS_PLATFORM_RATE")]
    pub platform_rate: Option<crate::platform::limiter::Rate>,
    /// App metrics API calls per account at most (the platform's documented limit: `5/m`).
    #[arg(long, env = "FORGEOPS_PLATFORM_METRICS_RATE", default_value = "5/m")]
    pub platform_metrics_rate: crate::platform::limiter::Rate,
    /// At most this many bulk upgrades run at once, across every namespace the operator watches.
    #[arg(long, env = "FORGEOPS_MAX_RUNNING_BULK_UPGRADES", default_value_t = 3)]
    pub max_running_bulk_upgrades: u32,
    /// Run the controllers only in the replica that holds the leader Lease (for more than one replica).
    #[arg(long, env = "FORGEOPS_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Seconds after which a concurrency Lease whose holder stopped renewing it is taken over.
    #[arg(long, default_value_t = 30)]
    pub lease_duration_secs: u64,

    /// How often a running bulk-upgrade rollout is read from the platform, in seconds.
    #[arg(long, default_value_t = 2, env = "FORGEOPS_ROLLOUT_POLL_SECS")]
    pub rollout_poll_secs: u64,
}

impl RunArgs {
    pub fn settings(&self, metrics: &Arc<Metrics>) -> anyhow::Result<operator::Settings> {
        let options = GatewayOptions {
            url: self.platform_url.clone(),
            timeout: Duration::from_secs(self.platform_timeout_secs.max(1)),
            attempts: self.platform_attempts.max(1),
            ca_bundle: self.platform_ca_bundle.clone(),
            distribution: self.platform_distribution,
            rate: self.platform_rate,
            metrics_rate: Some(self.platform_metrics_rate),
            ..GatewayOptions::default()
        };
        let platform: Arc<dyn Platform> = Arc::new(ForgeGateway::new(options, Some(metrics.clone()))?);
        let grant = Grant::new(
            self.default_credentials_namespaces.clone(),
            self.default_credentials_namespace_selector.as_deref(),
        )
        .map_err(|e| anyhow::anyhow!("--default-credentials-namespace-selector: {e}"))?;
        Ok(operator::Settings {
            platform,
            credentials_secret: self.credentials_secret.clone(),
            credentials_grant: grant,
            operator_namespace: self.operator_namespace.clone(),
            namespace: self.namespace.clone(),
            metrics_addr: Some(self.metrics_addr),
            instance: self.instance.clone(),
            leader_election: self.leader_elect.then(|| Duration::from_secs(self.lease_duration_secs.clamp(3, 60))),
            health: Default::default(),
            clock: crate::clock::Clock::system(),
            bulk_limits: Limits {
                global: self.max_running_bulk_upgrades,
                lease_duration: Duration::from_secs(self.lease_duration_secs),
                poll: Duration::from_secs(self.rollout_poll_secs.max(1)),
                ..Limits::default()
            },
        })
    }
}
