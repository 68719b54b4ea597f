//! Applying YAML manifests (as `kubectl apply --server-side` would), for the quick start and tests.

use std::path::{Path, PathBuf};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::{Client, Discovery, ResourceExt};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: PathBuf, source: serde_yaml_ng::Error },
    #[error("{path}: a document has no apiVersion/kind")]
    NoType { path: PathBuf },
    #[error("{path}: the API server does not serve {gvk}")]
    UnknownKind { path: PathBuf, gvk: String },
    #[error("applying {what}: {source}")]
    Apply { what: String, source: kube::Error },
    #[error("discovery: {0}")]
    Discovery(#[from] kube::Error),
}

/// Parses every non-empty YAML document in `text`.
pub fn parse_documents(path: &Path, text: &str) -> Result<Vec<DynamicObject>, Error> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value: serde_json::Value =
            serde::Deserialize::deserialize(doc).map_err(|source| Error::Parse { path: path.to_path_buf(), source })?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)
            .map_err(|e| Error::Parse { path: path.to_path_buf(), source: serde::de::Error::custom(e) })?;
        if obj.types.is_none() {
            return Err(Error::NoType { path: path.to_path_buf() });
        }
        out.push(obj);
    }
    Ok(out)
}

/// The YAML files at `path`: the file itself, or a directory's `*.yaml` files in name order.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let read_err = |source| Error::Read { path: path.to_path_buf(), source };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    Ok(files)
}

/// Applies every object in the YAML at `path` with server-side apply into `namespace` (or each
/// object's own namespace, or `default`). Returns `kind/name` of each applied object.
pub async fn apply_path_in(client: &Client, path: &Path, namespace: Option<&str>) -> Result<Vec<String>, Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut applied = Vec::new();
    for file in yaml_files(path)? {
        let text = std::fs::read_to_string(&file).map_err(|source| Error::Read { path: file.clone(), source })?;
        for obj in parse_documents(&file, &text)? {
            applied.push(apply_one(client, &discovery, &file, obj, namespace).await?);
        }
    }
    Ok(applied)
}

/// Applies every object in `text` (YAML that `source` names in errors, for example a manifest
/// embedded in a binary) with each object's own namespace, as [`apply_path`] does for a file.
pub async fn apply_text(client: &Client, source: &Path, text: &str) -> Result<Vec<String>, Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut applied = Vec::new();
    for obj in parse_documents(source, text)? {
        applied.push(apply_one(client, &discovery, source, obj, None).await?);
    }
    Ok(applied)
}

/// [`apply_path_in`] with each object's own namespace.
pub async fn apply_path(client: &Client, path: &Path) -> Result<Vec<String>, Error> {
    apply_path_in(client, path, None).await
}

async fn apply_one(
    client: &Client,
    discovery: &Discovery,
    file: &Path,
    obj: DynamicObject,
    namespace: Option<&str>,
) -> Result<String, Error> {
    let types = obj.types.clone().ok_or_else(|| Error::NoType { path: file.to_path_buf() })?;
    let gvk = kube::api::GroupVersionKind::try_from(&types).map_err(|_| Error::NoType { path: file.to_path_buf() })?;
    let (resource, caps): (ApiResource, ApiCapabilities) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| Error::UnknownKind { path: file.to_path_buf(), gvk: format!("{gvk:?}") })?;
    let name = obj.name_any();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => {
            let ns = namespace.map(str::to_string).or_else(|| obj.namespace()).unwrap_or_else(|| "default".into());
            Api::namespaced_with(client.clone(), &ns, &resource)
        }
    };
    let mut obj = obj;
    if caps.scope == Scope::Namespaced && namespace.is_some() {
        obj.metadata.namespace = namespace.map(str::to_string);
    }
    let what = format!("{}/{}", resource.kind, name);
    api.patch(&name, &PatchParams::apply("forgeops-dev").force(), &Patch::Apply(&obj))
        .await
        .map_err(|source| Error::Apply { what: what.clone(), source })?;
    Ok(what)
}
