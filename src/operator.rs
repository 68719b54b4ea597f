//! The operator process: start-up checks, the controllers, the metrics endpoint, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use kube::{Api, Client};
use tracing::info;

use crate::api::{BulkUpgrade, GROUP};
use crate::controllers::{self, Context};
use crate::leases::{self, Claim, Holder};
use crate::platform::Platform;
use crate::telemetry::Metrics;
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

/// The plural resource names the operator needs served.
pub const RESOURCES: [&str; 4] = ["forgeapps", "distributionpolicies", "installations", "bulkupgrades"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the forgeops CRDs are not installed ({missing} missing from {GROUP}/v1alpha1). Install them with \
         `kubectl apply --server-side -f crds/` (or `forgeops crd | kubectl apply --server-side -f -`) and start again"
    )]
    CrdsMissing { missing: String },
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    /// The leader Lease was lost (taken by another replica, or not renewed within the renew
    /// deadline): the controllers were stopped at once, mid-call, and the process exits so that
    /// only the new leader acts on the platform.
    #[error("lost the leader Lease: stopped at once; the new leader carries on")]
    LeadershipLost,
}

/// How long a leader keeps trying to renew its Lease before it gives up leading: two thirds of
/// the lease duration (client-go's 10 s of 15 s), so it stops before another replica may take over.
pub fn renew_deadline(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// What the operator watches and serves.
#[derive(Clone)]
pub struct Settings {
    /// The Forge platform (the gateway, or the local emulator).
    pub platform: Arc<dyn Platform>,
    /// The default credentials Secret, in the operator namespace, for apps that name none.
    pub credentials_secret: String,
    /// The namespaces besides the operator's own that may use the default Secret.
    pub credentials_grant: crate::platform::credentials::Grant,
    /// The operator's own namespace: its leader Lease, the bulk-upgrade Leases and the default
    /// credentials Secret.
    pub operator_namespace: String,
    /// Watch only this namespace; every namespace when unset.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; not served when unset.
    pub metrics_addr: Option<SocketAddr>,
    /// This replica's name, for Events (the pod name in a Deployment).
    pub instance: Option<String>,
    /// Bulk upgrade concurrency limits.
    pub bulk_limits: controllers::bulk_upgrade::Limits,
    /// Run the controllers only while holding the leader Lease, with this lease duration.
    pub leader_election: Option<Duration>,
    /// What `/readyz` and `/healthz` answer from.
    pub health: Arc<crate::health::Health>,
    /// The wall clock the bulk-upgrade rules read (the system's, unless a test sets it).
    pub clock: crate::clock::Clock,
}

/// How long a credentials Secret is used before it is read again (a refused one is re-read at once).
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(15);

/// The Lease (in the operator namespace) that elects the one replica that runs the controllers.
pub const LEADER_LEASE: &str = "forgeops-operator-leader";

/// Checks that the API server serves every forgeops resource, using discovery (which needs no
/// extra RBAC), so a missing CRD is a clear start-up error rather than a stream of watch failures.
pub async fn check_crds(client: &Client) -> Result<(), Error> {
    let served = match client.list_api_group_resources(&format!("{GROUP}/v1alpha1")).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect::<Vec<_>>(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let missing: Vec<&str> = RESOURCES.iter().copied().filter(|r| !served.iter().any(|s| s == r)).collect();
    if missing.is_empty() { Ok(()) } else { Err(Error::CrdsMissing { missing: missing.join(", ") }) }
}

/// How long a request other than a watch may wait for the API server to send anything: a
/// black-holed connection fails after this instead of holding a reconcile (or a Lease renewal)
/// forever. Watches run on a client of their own without it (kube-runtime's watcher has its own
/// idle timeout), so a quiet watch is not cut.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The two clients the operator uses for `config`, both counted into `metrics`: one for requests
/// (reads, writes, Lease renewals), with [`REQUEST_TIMEOUT`], and one for watches.
pub fn clients(config: kube::Config, metrics: &Arc<Metrics>) -> Result<(Client, Client), kube::Error> {
    let mut requests = config.clone();
    requests.read_timeout = Some(REQUEST_TIMEOUT);
    // The timeout counts from each request, not from when its pooled connection went idle.
    requests.reset_reader_on_write = true;
    requests.write_timeout = Some(REQUEST_TIMEOUT);
    Ok((
        crate::telemetry::counted_client(requests, metrics.clone())?,
        crate::telemetry::counted_client(config, metrics.clone())?,
    ))
}

/// Runs every controller until `shutdown` resolves, against the cluster of `config` (see
/// [`clients`]: every request but a watch has a timeout).
pub async fn run(
    config: kube::Config,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (client, watch_client) = clients(config, &metrics)?;
    check_crds(&client).await?;
    let shutdown: Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    let health = settings.health.clone();
    if let Some(addr) = settings.metrics_addr {
        serve_metrics(addr, metrics.clone(), health.clone(), shutdown.clone()).await?;
    }
    {
        let (health, shutdown) = (health.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.await;
            health.shutting_down();
        });
    }
    let leadership = match settings.leader_election {
        Some(duration) => {
            let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.operator_namespace);
            // Unique per run, so a restarted replica with the same pod name is a new holder.
            let mut nonce = [0u8; 4];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).ok();
            let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
            let identity = format!("{}-{nonce}", settings.instance.as_deref().unwrap_or("forgeops"));
            let holder = Holder { uid: identity.clone(), name: identity };
            match become_leader(&leases, &holder, duration, &health, shutdown.clone()).await? {
                Some((lost, renewer, fence)) => Some((leases, holder, lost, renewer, fence)),
                None => return Ok(()), // shut down before becoming leader
            }
        }
        None => None,
    };
    // Stop the controllers on shutdown, or as soon as leadership is lost.
    let stop: Shared<BoxFuture<'static, ()>> = match &leadership {
        Some((_, _, lost, _, _)) => {
            let (shutdown, lost) = (shutdown.clone(), lost.clone());
            async move {
                tokio::select! { _ = shutdown => {}, _ = lost => {} }
            }
            .boxed()
            .shared()
        }
        None => shutdown.clone(),
    };
    let shutdown = stop;
    health.set_role(crate::health::Role::Leader);
    metrics.leader.set(1);
    // The gauge says 0 again however the controllers stop (shutdown, lost leadership, an error).
    let _not_leading = NotLeading(metrics.clone());
    let caches = Arc::new(
        controllers::caches::Caches::start(
            &watch_client,
            settings.namespace.as_deref(),
            &settings.operator_namespace,
            controllers::decoded::Undecodable::new(client.clone(), settings.instance.clone()),
        )
        .await,
    );
    let mut ctx = Context::new(
        client.clone(),
        metrics,
        settings.platform.clone(),
        Arc::new(crate::platform::credentials::CredentialStore::granting(
            client.clone(),
            settings.operator_namespace.clone(),
            settings.credentials_secret.clone(),
            settings.credentials_grant.clone(),
            CREDENTIALS_TTL,
        )),
        caches,
        settings.operator_namespace.clone(),
        settings.instance.clone(),
    );
    if let Some((_, _, _, _, fence)) = &leadership {
        ctx.fence = fence.clone();
    }
    let ctx = Arc::new(ctx);
    ctx.metrics.fleet.watch(&ctx.caches);
    {
        let (health, caches) = (health.clone(), ctx.caches.clone());
        tokio::spawn(async move {
            caches.wait_ready().await;
            health.set_synced(true);
        });
    }
    info!(namespace = settings.namespace.as_deref().unwrap_or("<all>"), "forgeops controllers starting");
    let ns = settings.namespace.as_deref();
    // A controller loop that ends before shutdown fails the liveness probe.
    let watched = |name: &'static str, run: BoxFuture<'static, ()>| {
        let (health, stopping) = (health.clone(), shutdown.clone());
        async move {
            run.await;
            // A loop that ends because the operator stops (or lost leadership) is no failure,
            // whichever of the two noticed first.
            if stopping.peek().is_none() && !health.state().shutting_down {
                tracing::error!(controller = name, "a controller loop stopped");
            }
            health.stopped(name);
        }
    };
    let work = async {
        tokio::join!(
            watched(
                "forgeapp",
                controllers::forge_app::run(controllers::api_in(&watch_client, ns), ctx.clone(), shutdown.clone())
                    .boxed()
            ),
            watched(
                "distributionpolicy",
                controllers::distribution_policy::run(
                    controllers::api_in(&watch_client, ns),
                    ctx.clone(),
                    shutdown.clone()
                )
                .boxed()
            ),
            watched("installation", controllers::installation::run(ctx.clone(), shutdown.clone()).boxed()),
            watched(
                "bulkupgrade",
                controllers::bulk_upgrade::run(
                    controllers::api_in::<BulkUpgrade>(&watch_client, ns),
                    ctx,
                    settings.bulk_limits,
                    settings.clock.clone(),
                    shutdown.clone()
                )
                .boxed()
            ),
        )
    };
    match &leadership {
        // Losing the Lease stops everything at once: the controllers' futures are dropped
        // mid-call (no reconcile is let finish, no further platform request is sent), and the
        // process ends with an error so its supervisor restarts it as a standby.
        Some((_, _, lost, _, _)) => {
            tokio::select! {
                _ = work => {}
                _ = lost.clone() => {
                    health.shutting_down();
                    return Err(Error::LeadershipLost);
                }
            }
        }
        None => {
            work.await;
        }
    }
    health.shutting_down();
    info!("forgeops controllers stopped");
    if let Some((leases, holder, _, renewer, _)) = leadership {
        renewer.abort();
        // Hand over at once rather than making the next replica wait for the Lease to expire.
        leases::release(&leases, LEADER_LEASE, &holder.uid).await?;
    }
    Ok(())
}

/// Sets the `forgeops_leader` gauge to 0 and forgets the object gauges' caches when dropped.
struct NotLeading(Arc<Metrics>);

impl Drop for NotLeading {
    fn drop(&mut self) {
        self.0.leader.set(0);
        self.0.fleet.clear();
    }
}

/// Leadership: resolves when it is lost; the handle stops the background renewals.
type Leadership = (Shared<BoxFuture<'static, ()>>, tokio::task::AbortHandle, controllers::Fence);

/// Waits until this replica holds the leader Lease, then keeps renewing it in the background.
/// Returns `None` if `shutdown` came first.
async fn become_leader(
    leases: &Api<Lease>,
    holder: &Holder,
    duration: Duration,
    health: &crate::health::Health,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> Result<Option<Leadership>, Error> {
    let retry = duration / 3;
    let mut announced = None;
    let observer = leases::Observer::default();
    loop {
        match leases::claim(leases, LEADER_LEASE, holder, duration, &observer).await? {
            Claim::Held => break,
            Claim::Busy(leader) => {
                if announced.as_ref() != Some(&leader) {
                    info!(%leader, "standing by: waiting to become leader");
                    announced = Some(leader.clone());
                }
                health.set_role(crate::health::Role::Standby { leader });
                // Wake up when the leader's Lease would expire (if it stops renewing), at the latest
                // after a third of the duration: a standby takes over within one lease duration of
                // last seeing the leader renew (client-go's rule; the leader's clock is not trusted).
                let expiry = observer.last_expiry(LEADER_LEASE);
                let wait = expiry
                    .map(|at| at.saturating_duration_since(std::time::Instant::now()) + Duration::from_millis(50))
                    .unwrap_or(retry)
                    .min(retry);
                tokio::select! {
                    _ = shutdown.clone() => return Ok(None),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    info!(identity = %holder.uid, "became leader");
    let (leases, holder) = (leases.clone(), holder.clone());
    let deadline = renew_deadline(duration);
    let fence = controllers::Fence::leading(deadline);
    let renewals = fence.clone();
    let lost = async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            // A renewal that does not come back (a black-holed connection) counts as failed once
            // the renew deadline passes.
            let left = deadline.saturating_sub(last_renewal.elapsed()).max(Duration::from_millis(100));
            let renewed =
                tokio::time::timeout(left, leases::claim(&leases, LEADER_LEASE, &holder, duration, &observer))
                    .await
                    .unwrap_or_else(|_| Err(kube::Error::Service("renewing the leader Lease timed out".into())));
            match renewed {
                Ok(Claim::Held) => {
                    last_renewal = tokio::time::Instant::now();
                    renewals.renewed();
                }
                Ok(Claim::Busy(other)) => {
                    tracing::error!(%other, "leadership lost to another replica; stopping at once");
                    return;
                }
                Err(e) if last_renewal.elapsed() >= deadline => {
                    tracing::error!(error = %e, "could not renew the leader Lease within its renew deadline; stopping at once");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed; retrying"),
            }
        }
    };
    let task = tokio::spawn(lost);
    let renewer = task.abort_handle();
    Ok(Some((task.map(|_| ()).boxed().shared(), renewer, fence)))
}

/// The content type of `/metrics`.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<crate::health::Health>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> Result<(), Error> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Metrics { addr, source })?;
    let answer = |(ok, text): (bool, String)| {
        let code = if ok { http::StatusCode::OK } else { http::StatusCode::SERVICE_UNAVAILABLE };
        (code, text + "\n")
    };
    let (live, ready) = (health.clone(), health);
    let app = axum::Router::new()
        // The OpenMetrics text format (what prometheus-client writes: a counter's family is named
        // without `_total`), so that Prometheus parses it as such.
        .route(
            "/metrics",
            get(move || futures::future::ready(([(http::header::CONTENT_TYPE, OPENMETRICS)], metrics.encode()))),
        )
        .route("/healthz", get(move || futures::future::ready(answer(live.liveness()))))
        .route("/readyz", get(move || futures::future::ready(answer(ready.readiness()))));
    let addr = listener.local_addr().unwrap_or(addr);
    info!(%addr, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "metrics endpoint failed");
        }
    });
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => info!("interrupt received, shutting down"),
    }
}
