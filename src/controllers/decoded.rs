//! Watches that survive objects the operator's types cannot decode. A typed watch decodes a whole
//! list page at once, so one stored object that does not fit the Rust types (written under an older
//! schema, or by a newer forgeops) would stop the watch of its kind, and with it every object of
//! that kind. Here each object is watched untyped and decoded on its own: one that does not decode
//! is skipped, logged, and told in a Warning Event on it (once per resourceVersion) that says what
//! failed, and the watch goes on with the others. An object that stops decoding after an update is
//! dropped from the cache at the next relist; until then its last decodable version is what the
//! cache holds.
//!
//! Every list is a consistent read (the API server's "most recent" semantic, not "any"): after a
//! (re)start or a failover the cache starts from what the previous leader last wrote, not from a
//! lagging API server cache.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::{Stream, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::events::Recorder;

/// Reports objects that could not be decoded: a log line and a Warning Event on each, once per
/// resourceVersion.
#[derive(Clone)]
pub struct Undecodable {
    recorder: Arc<Recorder>,
    told: Arc<Mutex<HashSet<(String, String)>>>,
}

impl Undecodable {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Undecodable { recorder: Arc::new(Recorder::new(client, "forgeops".into(), instance)), told: Default::default() }
    }

    fn tell(&self, obj: &DynamicObject, ar: &ApiResource, error: &DecodeError) {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let namespace = obj.metadata.namespace.clone();
        let key =
            (obj.metadata.uid.clone().unwrap_or_default(), obj.metadata.resource_version.clone().unwrap_or_default());
        if !self.told.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key) {
            return;
        }
        let note = format!(
            "forgeops cannot read this {} ({error}): it is skipped until it is fixed (edit or re-apply it with this \
             version's schema); every other object goes on",
            ar.kind
        );
        tracing::warn!(kind = %ar.kind, name = %name, namespace = ?namespace, error = %error, "skipping an object that cannot be decoded");
        let reference = ObjectReference {
            api_version: Some(ar.api_version.clone()),
            kind: Some(ar.kind.clone()),
            name: Some(name),
            namespace,
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Watch".into(),
            secondary: None,
        };
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "could not record an event");
            }
        });
    }
}

/// Why an object could not be decoded: the field's path and what was wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    pub path: String,
    pub message: String,
}

/// Decodes one object, or says which field failed and why (serde_json alone does not name the
/// field; serde_path_to_error tracks it).
pub fn decode<K: DeserializeOwned>(obj: &DynamicObject) -> Result<K, DecodeError> {
    let value = serde_json::to_value(obj).map_err(|e| DecodeError { path: ".".into(), message: e.to_string() })?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| DecodeError { path: e.path().to_string(), message: e.inner().to_string() })
}

/// A watch of `K` where `api` reaches (its namespace, or every namespace), whose objects are
/// decoded one by one (see the module docs), with kube-runtime's default backoff and consistent
/// lists.
pub fn watch<K>(
    api: Api<K>,
    undecodable: Undecodable,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + DeserializeOwned + Clone + std::fmt::Debug + Send + 'static,
{
    let ar = ApiResource::erase::<K>(&());
    let namespace = api.namespace().map(str::to_string);
    let client = api.into_client();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, &ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let config = watcher::Config::default();
    watcher(api, config).default_backoff().try_filter_map(move |event| {
        let decoded = typed(event, |obj| match decode::<K>(&obj) {
            Ok(k) => Some(k),
            Err(e) => {
                undecodable.tell(&obj, &ar, &e);
                None
            }
        });
        futures::future::ready(Ok(decoded))
    })
}

/// The typed event of `event`, through `decode`; `None` for an object event whose object does not
/// decode (it is skipped).
fn typed<K>(
    event: watcher::Event<DynamicObject>,
    decode: impl Fn(DynamicObject) -> Option<K>,
) -> Option<watcher::Event<K>> {
    use watcher::Event as E;
    Some(match event {
        E::Apply(o) => E::Apply(decode(o)?),
        E::Delete(o) => E::Delete(decode(o)?),
        E::InitApply(o) => E::InitApply(decode(o)?),
        E::Init => E::Init,
        E::InitDone => E::InitDone,
    })
}

#[cfg(test)]
#[path = "decoded_tests.rs"]
mod tests;
