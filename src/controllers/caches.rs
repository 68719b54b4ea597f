//! Watch caches shared by the controllers: ForgeApps, Installations and DistributionPolicies, each
//! kept by one reflector, so a reconcile reads related objects from memory instead of sending a GET
//! or a LIST (the one fresh read before an irreversible platform call excepted). Linkerd's policy
//! controller is the model: indexes built from watches, and only those are read.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use k8s_openapi::api::coordination::v1::Lease;

use crate::api::{DistributionPolicy, ForgeApp, Installation};

/// The shared caches, filled by watches that run as long as this value lives.
pub struct Caches {
    pub apps: Store<ForgeApp>,
    pub installations: Store<Installation>,
    pub policies: Store<DistributionPolicy>,
    /// The Leases in the operator's namespace (the bulk upgrade concurrency limits).
    pub leases: Store<Lease>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Caches {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn start_one<K>(api: Api<K>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default().any_semantic()))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "cache watch error (retried with backoff)");
            }
        }
    });
    (reader, task)
}

impl Caches {
    /// Starts the watches (in `namespace`, or everywhere; the Leases in `operator_namespace`) and
    /// waits until each has listed once.
    pub async fn start(client: &Client, namespace: Option<&str>, operator_namespace: &str) -> Caches {
        fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
        where
            K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
        {
            match namespace {
                Some(ns) => Api::namespaced(client.clone(), ns),
                None => Api::all(client.clone()),
            }
        }
        let (apps, a) = start_one(api::<ForgeApp>(client, namespace));
        let (installations, i) = start_one(api::<Installation>(client, namespace));
        let (policies, p) = start_one(api::<DistributionPolicy>(client, namespace));
        let (leases, l) = start_one(Api::<Lease>::namespaced(client.clone(), operator_namespace));
        let caches = Caches { apps, installations, policies, leases, tasks: vec![a, i, p, l] };
        let ready = async {
            let _ = caches.leases.wait_until_ready().await;
            let _ = caches.apps.wait_until_ready().await;
            let _ = caches.installations.wait_until_ready().await;
            let _ = caches.policies.wait_until_ready().await;
        };
        if tokio::time::timeout(Duration::from_secs(60), ready).await.is_err() {
            tracing::warn!("the watch caches were not filled within 60 s; going on, they fill as watches answer");
        }
        caches
    }

    /// Resolves once every watch has listed once.
    pub async fn wait_ready(&self) {
        let _ = self.apps.wait_until_ready().await;
        let _ = self.installations.wait_until_ready().await;
        let _ = self.policies.wait_until_ready().await;
        let _ = self.leases.wait_until_ready().await;
    }

    /// The ForgeApp `name` in `namespace`.
    pub fn app(&self, namespace: &str, name: &str) -> Option<Arc<ForgeApp>> {
        self.apps.get(&ObjectRef::new(name).within(namespace))
    }

    /// The Installations of app `app` in `namespace`.
    pub fn installations_of_app(&self, namespace: &str, app: &str) -> Vec<Arc<Installation>> {
        self.installations
            .state()
            .into_iter()
            .filter(|i| i.metadata.namespace.as_deref() == Some(namespace) && i.spec.app_ref.name == app)
            .collect()
    }

    /// The Lease `name` in the operator's namespace.
    pub fn lease(&self, operator_namespace: &str, name: &str) -> Option<Arc<Lease>> {
        self.leases.get(&ObjectRef::new(name).within(operator_namespace))
    }

    /// The Installations on `site` in `namespace`.
    pub fn installations_on_site(&self, namespace: &str, site: &str) -> Vec<Arc<Installation>> {
        self.installations
            .state()
            .into_iter()
            .filter(|i| i.metadata.namespace.as_deref() == Some(namespace) && i.spec.site == site)
            .collect()
    }

    /// The DistributionPolicies of app `app` in `namespace`.
    pub fn policies_of_app(&self, namespace: &str, app: &str) -> Vec<Arc<DistributionPolicy>> {
        self.policies
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace) && p.spec.app_ref.name == app)
            .collect()
    }
}
