//! The operator process: start-up checks, the controllers, the metrics endpoint, and shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use kube::{Api, Client};
use tracing::info;

use crate::api::{BulkUpgrade, DistributionPolicy, ForgeApp, GROUP, Installation};
use crate::controllers::{self, Context};
use crate::platform::Platform;
use crate::telemetry::Metrics;

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
}

/// What the operator watches and serves.
#[derive(Clone)]
pub struct Settings {
    /// Where installs, upgrades and uninstalls are carried out.
    pub platform: Arc<dyn Platform>,
    /// The operator's own namespace, for the link key Secret.
    pub operator_namespace: String,
    /// Watch only this namespace; every namespace when unset.
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; not served when unset.
    pub metrics_addr: Option<SocketAddr>,
    /// This replica's name, for Events (the pod name in a Deployment).
    pub instance: Option<String>,
    /// Bulk upgrade concurrency limits.
    pub bulk_limits: controllers::bulk_upgrade::Limits,
}

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

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs every controller until `shutdown` resolves. `client` should count its requests into
/// `metrics` (see [`crate::telemetry::counted_client`]).
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_crds(&client).await?;
    let shutdown: Shared<BoxFuture<'static, ()>> = shutdown.boxed().shared();
    if let Some(addr) = settings.metrics_addr {
        serve_metrics(addr, metrics.clone(), shutdown.clone()).await?;
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics,
        settings.platform.clone(),
        settings.operator_namespace.clone(),
        settings.instance.clone(),
    ));
    info!(namespace = settings.namespace.as_deref().unwrap_or("<all>"), "forgeops controllers starting");
    let ns = &settings.namespace;
    tokio::join!(
        controllers::forge_app::run(api(&client, ns), api::<Installation>(&client, ns), ctx.clone(), shutdown.clone()),
        controllers::distribution_policy::run(
            api(&client, ns),
            api::<ForgeApp>(&client, ns),
            ctx.clone(),
            shutdown.clone()
        ),
        controllers::installation::run(
            api(&client, ns),
            api::<ForgeApp>(&client, ns),
            api::<DistributionPolicy>(&client, ns),
            ctx.clone(),
            shutdown.clone()
        ),
        controllers::bulk_upgrade::run(
            api::<BulkUpgrade>(&client, ns),
            api::<ForgeApp>(&client, ns),
            ctx,
            settings.bulk_limits,
            shutdown
        ),
    );
    info!("forgeops controllers stopped");
    Ok(())
}

async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> Result<(), Error> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Metrics { addr, source })?;
    let app = axum::Router::new()
        .route("/metrics", get(move || futures::future::ready(metrics.encode())))
        .route("/healthz", get(|| futures::future::ready("ok")))
        .route("/readyz", get(|| futures::future::ready("ok")));
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
