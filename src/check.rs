//! `forgeops check`: a preflight of the cluster and the platform `forgeops run` would act on, taking
//! the same options. Each check is a row of a table (CHECK, SUBJECT, RESULT, DETAIL), and the
//! process exits 0 when no row is `FAIL`, 1 when one is, and 2 when the check could not run at all
//! (no kubeconfig, the API server unreachable):
//!
//! - `crds`: each of the four CRDs is installed and is what this binary generates
//!   ([`crate::api::all_crds`]: names, versions, schemas, printer columns, subresources).
//! - `rbac`: access reviews of everything the operator's roles in `deploy/base/rbac.yaml` grant
//!   ([`NEEDS`], tested against that file), for the identity the check runs as (the kubeconfig's,
//!   or by impersonation with `--as` / `--as-operator`): in the watched namespaces, in the operator's
//!   namespace, and in each namespace whose ForgeApps name a Secret of their own.
//! - `credentials`: every credentials Secret in use (the operator's default and each ForgeApp's
//!   `spec.credentialsSecretRef`, read through the same grant rules as the operator, with its
//!   [`CredentialStore`]) has `email` and `apiToken`, and the platform accepts it; the account it
//!   acts as (`me`). The platform does not say when an API token expires.
//! - `app`: each ForgeApp's app can be read with its credentials (its environments).
//! - `site`: each Installation's site runs its products (the site's installation contexts), and
//!   whether the account administers it, as far as anyone can tell: the platform offers no read of
//!   site admin rights, only the refusal of an install, which the operator records in
//!   `status.siteAdministered`.
//! - `distribution`: for each DistributionPolicy, the distribution operations are enabled
//!   (`--platform-distribution`) and the platform answers them for that app.
//!
//! The gathering ([`gather`]) only reads: objects, access reviews, the platform's read operations.
//! What it learns is put in [`Facts`], which [`rows`] turns into the report without I/O (unit tested
//! below). No detail ever contains a token: it is sent only in the platform's `Authorization` header.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::{DistributionPolicy, ForgeApp, Installation, Sharing};
use crate::cli::RunArgs;
use crate::platform::credentials::{CredentialStore, CredentialsError};
use crate::platform::{Account, Credentials, ErrorKind, Platform, SharingState};
use crate::telemetry::Metrics;

/// No check failed.
pub const EXIT_OK: i32 = 0;
/// At least one check failed.
pub const EXIT_FAILED: i32 = 1;
/// The check could not run (no Kubernetes configuration, the API server unreachable).
pub const EXIT_NOT_RUN: i32 = 2;

/// The operator's ServiceAccount in its namespace (`deploy/base/rbac.yaml`).
pub const OPERATOR_SERVICE_ACCOUNT: &str = "forgeops-operator";

/// How the report is printed.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// `forgeops check`: the options of `forgeops run` (so the operator's own arguments can be passed),
/// the kubeconfig to use and whom to check as.
#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// How to print the report.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: Output,
    /// The kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster configuration).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
    /// Check as this user, by impersonation (as `kubectl --as`; needs the right to impersonate).
    #[arg(long = "as", value_name = "USER", conflicts_with = "as_operator")]
    pub as_user: Option<String>,
    /// The groups of the user of `--as` (comma separated, or repeated).
    #[arg(long = "as-group", value_name = "GROUP", value_delimiter = ',', requires = "as_user")]
    pub as_group: Vec<String>,
    /// Check as the operator's ServiceAccount (`system:serviceaccount:<operator namespace>:forgeops-operator`),
    /// by impersonation.
    #[arg(long)]
    pub as_operator: bool,
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

/// The result of one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    /// As the table shows it: `ok`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

/// What a row checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    Crds,
    Rbac,
    Credentials,
    App,
    Site,
    Distribution,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Crds => "crds",
            Check::Rbac => "rbac",
            Check::Credentials => "credentials",
            Check::App => "app",
            Check::Site => "site",
            Check::Distribution => "distribution",
        }
    }
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    pub check: Check,
    pub subject: String,
    pub result: Verdict,
    /// What was found, and what to change when it is not ok. Never a token.
    pub detail: String,
}

fn row(check: Check, subject: impl Into<String>, result: Verdict, detail: impl Into<String>) -> Row {
    Row { check, subject: subject.into(), result, detail: detail.into() }
}

/// The rows of one check run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    fn count(&self, verdict: Verdict) -> usize {
        self.rows.iter().filter(|r| r.result == verdict).count()
    }

    /// [`EXIT_FAILED`] when a row is `FAIL`, else [`EXIT_OK`].
    pub fn exit_code(&self) -> i32 {
        if self.count(Verdict::Fail) > 0 { EXIT_FAILED } else { EXIT_OK }
    }

    /// The summary line: `12 ok, 1 warn, 2 FAIL`.
    pub fn summary(&self) -> String {
        format!(
            "{} ok, {} warn, {} FAIL",
            self.count(Verdict::Ok),
            self.count(Verdict::Warn),
            self.count(Verdict::Fail)
        )
    }

    /// The table: a header, a line per row (the detail last, unwrapped), and the summary.
    pub fn table(&self) -> String {
        let header = ["CHECK", "SUBJECT", "RESULT", "DETAIL"];
        let cells: Vec<[&str; 4]> = std::iter::once(header)
            .chain(
                self.rows.iter().map(|r| [r.check.as_str(), r.subject.as_str(), r.result.label(), r.detail.as_str()]),
            )
            .collect();
        let width = |c: usize| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2)];
        let mut out = String::new();
        for r in &cells {
            let line = format!(
                "{:<w0$}  {:<w1$}  {:<w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// The report as JSON: `{"rows": [{check, subject, result, detail}], "ok", "warn", "fail", "exitCode"}`.
    pub fn json(&self) -> String {
        let value = json!({
            "rows": self.rows,
            "ok": self.count(Verdict::Ok),
            "warn": self.count(Verdict::Warn),
            "fail": self.count(Verdict::Fail),
            "exitCode": self.exit_code(),
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    }
}

// ---------------------------------------------------------------------------------------------
// What the operator needs of the API server
// ---------------------------------------------------------------------------------------------

/// Where a permission is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// In every namespace the operator watches (cluster-wide without `--namespace`):
    /// ClusterRole `forgeops-operator`.
    Watched,
    /// In the operator's own namespace: ClusterRole `forgeops-operator-own-namespace`, bound there.
    OperatorNamespace,
    /// In each namespace whose ForgeApps name a Secret of their own: ClusterRole
    /// `forgeops-operator-credentials`, bound there.
    AppSecrets,
}

impl Scope {
    /// The ClusterRole of `deploy/base/rbac.yaml` that grants it.
    pub fn role(self) -> &'static str {
        match self {
            Scope::Watched => "forgeops-operator",
            Scope::OperatorNamespace => "forgeops-operator-own-namespace",
            Scope::AppSecrets => "forgeops-operator-credentials",
        }
    }
}

/// Some verbs on some resources of one API group (`resource/subresource` for a subresource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub scope: Scope,
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const KINDS: &[&str] = &["forgeapps", "distributionpolicies", "installations", "bulkupgrades"];
const STATUSES: &[&str] =
    &["forgeapps/status", "distributionpolicies/status", "installations/status", "bulkupgrades/status"];

/// Everything the operator's roles in `deploy/base/rbac.yaml` grant, by where it is needed (a unit
/// test compares it with that file, so the two cannot drift apart).
pub const NEEDS: &[Need] = &[
    Need { scope: Scope::Watched, group: "forgeops.dev", resources: KINDS, verbs: &["get", "list", "watch", "patch"] },
    Need { scope: Scope::Watched, group: "forgeops.dev", resources: &["bulkupgrades"], verbs: &["delete"] },
    Need { scope: Scope::Watched, group: "forgeops.dev", resources: STATUSES, verbs: &["get", "patch"] },
    Need { scope: Scope::Watched, group: "events.k8s.io", resources: &["events"], verbs: &["create", "patch"] },
    Need { scope: Scope::Watched, group: "", resources: &["namespaces"], verbs: &["get"] },
    Need { scope: Scope::OperatorNamespace, group: "", resources: &["secrets"], verbs: &["get"] },
    Need {
        scope: Scope::OperatorNamespace,
        group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "list", "watch", "create", "update", "delete"],
    },
    Need { scope: Scope::AppSecrets, group: "", resources: &["secrets"], verbs: &["get"] },
];

/// `(group, resource, verb)` for every permission of `scope`.
pub fn permissions(scope: Scope) -> BTreeSet<(String, String, String)> {
    NEEDS
        .iter()
        .filter(|n| n.scope == scope)
        .flat_map(|n| {
            n.resources
                .iter()
                .flat_map(move |r| n.verbs.iter().map(move |v| (n.group.into(), r.to_string(), v.to_string())))
        })
        .collect()
}

/// `verb resource.group`, as a permission is named in the report.
fn permission_name(group: &str, resource: &str, verb: &str) -> String {
    if group.is_empty() { format!("{verb} {resource}") } else { format!("{verb} {resource}.{group}") }
}

// ---------------------------------------------------------------------------------------------
// CRDs: what this binary generates against what the cluster has
// ---------------------------------------------------------------------------------------------

/// How an empty list and a missing field compare: the same.
fn normalized(value: Option<&Value>) -> Value {
    match value {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(other) => other.clone(),
    }
}

/// The first path at which `a` and `b` differ (`.properties.spec.required`), if they do.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| {
                let here = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => first_difference(p, q, &here),
                    _ => Some(here),
                }
            })
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_difference(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(if path.is_empty() { ".".into() } else { path.to_string() }),
    }
}

fn column_names(columns: &Value) -> Vec<String> {
    columns
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.get("name").and_then(Value::as_str).unwrap_or_default().to_string())
        .collect()
}

/// How the CRD the cluster has (`have`) differs from the one this binary generates (`want`), in
/// what the API server serves: names, scope, and per version whether it is served and stored, its
/// schema, printer columns, subresources and selectable fields. Empty: current.
pub fn crd_differences(want: &CustomResourceDefinition, have: &CustomResourceDefinition) -> Vec<String> {
    let (want, have) = (serde_json::to_value(want).unwrap_or_default(), serde_json::to_value(have).unwrap_or_default());
    let mut out = Vec::new();
    for (what, pointer) in [
        ("the group", "/spec/group"),
        ("the scope", "/spec/scope"),
        ("the kind", "/spec/names/kind"),
        ("the plural name", "/spec/names/plural"),
        ("the short names", "/spec/names/shortNames"),
        ("the categories", "/spec/names/categories"),
    ] {
        let (w, h) = (normalized(want.pointer(pointer)), normalized(have.pointer(pointer)));
        if w != h {
            out.push(format!("{what} is {h} in the cluster, {w} here"));
        }
    }
    let versions = |crd: &Value| -> BTreeMap<String, Value> {
        crd.pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| (v.get("name").and_then(Value::as_str).unwrap_or_default().to_string(), v.clone()))
            .collect()
    };
    let (wanted, had) = (versions(&want), versions(&have));
    for (name, w) in &wanted {
        let Some(h) = had.get(name) else {
            out.push(format!("version {name} is missing"));
            continue;
        };
        for (what, pointer) in [("served", "/served"), ("storage", "/storage")] {
            let (a, b) = (normalized(w.pointer(pointer)), normalized(h.pointer(pointer)));
            if a != b {
                out.push(format!("{name}: {what} is {b} in the cluster, {a} here"));
            }
        }
        let (ws, hs) =
            (normalized(w.pointer("/schema/openAPIV3Schema")), normalized(h.pointer("/schema/openAPIV3Schema")));
        if let Some(path) = first_difference(&ws, &hs, "") {
            out.push(format!("{name}: the schema differs at {path}"));
        }
        let (wc, hc) = (normalized(w.get("additionalPrinterColumns")), normalized(h.get("additionalPrinterColumns")));
        if wc != hc {
            let (wn, hn) = (column_names(&wc), column_names(&hc));
            if wn == hn {
                let differing =
                    wn.iter().zip(wc.as_array().into_iter().flatten().zip(hc.as_array().into_iter().flatten()));
                let names: Vec<&str> = differing.filter(|(_, (a, b))| a != b).map(|(n, _)| n.as_str()).collect();
                out.push(format!("{name}: the printer columns {} differ", names.join(", ")));
            } else {
                out.push(format!(
                    "{name}: the printer columns are [{}] in the cluster, [{}] here",
                    hn.join(", "),
                    wn.join(", ")
                ));
            }
        }
        for (what, key) in [("subresources", "subresources"), ("selectable fields", "selectableFields")] {
            if normalized(w.get(key)) != normalized(h.get(key)) {
                out.push(format!("{name}: the {what} differ"));
            }
        }
    }
    for name in had.keys().filter(|n| !wanted.contains_key(*n)) {
        out.push(format!("version {name} is not one this forgeops serves (the CRDs of another forgeops version?)"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Facts: what the gathering learned
// ---------------------------------------------------------------------------------------------

/// A CRD, as the cluster has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrdState {
    Current,
    Missing,
    /// What differs from this binary's.
    Stale(Vec<String>),
    /// The CRD could not be read (typically: the identity may not read CRDs); whether the API
    /// server serves the resource, from discovery.
    Unreadable {
        served: bool,
        why: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFact {
    pub name: String,
    pub state: CrdState,
}

/// One access review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFact {
    pub scope: Scope,
    /// The namespace asked about; none: every namespace.
    pub namespace: Option<String>,
    /// The object asked about (a Secret's name), if one.
    pub name: Option<String>,
    /// `verb resource.group`.
    pub permission: String,
    /// Allowed or not; an error when the review could not be made.
    pub allowed: Result<bool, String>,
}

/// A credentials Secret and what the platform said of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretState {
    /// No credentials could be had from it (missing, a key missing, not readable): the message.
    Unusable(String),
    /// The platform refused them.
    Refused { email: String, message: String },
    /// The platform did not answer whether it accepts them.
    Unanswered { email: String, message: String },
    /// The platform accepted them: the account they act as.
    Accepted { email: String, account: Account },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFact {
    /// `namespace/name`.
    pub source: String,
    /// The operator's default Secret.
    pub default: bool,
    /// The ForgeApps (`namespace/name`) that act with it.
    pub used_by: Vec<String>,
    pub state: SecretState,
}

/// Whether the account of a ForgeApp's credentials sees its app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppOutcome {
    /// Not asked: the app has no usable credentials.
    NoCredentials,
    /// The app's environment keys.
    Visible {
        email: String,
        environments: Vec<String>,
    },
    NotVisible {
        email: String,
        error: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppFact {
    /// `namespace/name`.
    pub app: String,
    pub app_id: String,
    /// `spec.environments`, as the platform's keys.
    pub environments: Vec<String>,
    pub outcome: AppOutcome,
}

/// An Installation's site, as far as it could be checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteOutcome {
    /// Its ForgeApp does not exist.
    NoApp,
    NoCredentials,
    Checked {
        email: String,
        /// Each product, and its installation context on the site or why there is none.
        products: Vec<(String, Result<String, String>)>,
        /// `status.siteAdministered`: what the operator learned from the platform.
        administered: Option<bool>,
        /// The app is installed there (or the Installation adopted an installation).
        installed: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteFact {
    /// `namespace/name`.
    pub installation: String,
    pub site: String,
    /// The ForgeApp, `namespace/name`.
    pub app: String,
    pub outcome: SiteOutcome,
}

/// What the platform answered a DistributionPolicy's app's sharing read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyOutcome {
    NoApp,
    /// The distribution operations are off (`--platform-distribution` not given).
    NotEnabled,
    NoCredentials,
    Answered {
        email: String,
        app_id: String,
        state: SharingState,
    },
    Failed {
        email: String,
        app_id: String,
        kind: ErrorKind,
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyFact {
    /// `namespace/name`.
    pub policy: String,
    pub app: String,
    pub sharing: Sharing,
    pub outcome: PolicyOutcome,
}

/// Everything one check run learned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Who the checks ran as (the API server's SelfSubjectReview), if it said.
    pub identity: Option<String>,
    pub operator_namespace: String,
    /// The one namespace watched (`--namespace`); none: every namespace.
    pub namespace: Option<String>,
    pub crds: Vec<CrdFact>,
    pub access: Vec<AccessFact>,
    /// Kinds that could not be listed, with why.
    pub unlisted: Vec<(String, String)>,
    pub secrets: Vec<SecretFact>,
    /// ForgeApps (`namespace/name`) that may not use the default credentials, with the message.
    pub ungranted: Vec<(String, String)>,
    pub apps: Vec<AppFact>,
    pub sites: Vec<SiteFact>,
    /// `--platform-distribution`.
    pub distribution_enabled: bool,
    pub policies: Vec<PolicyFact>,
}

// ---------------------------------------------------------------------------------------------
// Facts to rows
// ---------------------------------------------------------------------------------------------

const APPLY_CRDS: &str = "kubectl apply --server-side -f crds/forgeops.dev.yaml of this version (or `forgeops crd | kubectl apply --server-side -f -`)";

/// The report of what was learned.
pub fn rows(facts: &Facts) -> Vec<Row> {
    let mut out = Vec::new();
    crd_rows(facts, &mut out);
    rbac_rows(facts, &mut out);
    credentials_rows(facts, &mut out);
    app_rows(facts, &mut out);
    site_rows(facts, &mut out);
    distribution_rows(facts, &mut out);
    out
}

fn who(facts: &Facts) -> String {
    facts.identity.clone().unwrap_or_else(|| "the kubeconfig's identity".into())
}

fn crd_rows(facts: &Facts, out: &mut Vec<Row>) {
    let version = env!("CARGO_PKG_VERSION");
    for crd in &facts.crds {
        let (result, detail) = match &crd.state {
            CrdState::Current => (Verdict::Ok, format!("installed and current (as forgeops {version} generates it)")),
            CrdState::Missing => (Verdict::Fail, format!("not installed: {APPLY_CRDS}")),
            CrdState::Stale(differences) => {
                (Verdict::Fail, format!("differs from forgeops {version}'s ({}): {APPLY_CRDS}", differences.join("; ")))
            }
            CrdState::Unreadable { served: true, why } => (
                Verdict::Warn,
                format!(
                    "served, but {} may not read CustomResourceDefinitions ({why}), so whether it is current is \
                     unknown: check as a user who may",
                    who(facts)
                ),
            ),
            CrdState::Unreadable { served: false, why } => {
                (Verdict::Fail, format!("not served by the API server ({why}): {APPLY_CRDS}"))
            }
        };
        out.push(row(Check::Crds, &crd.name, result, detail));
    }
}

/// The `kubectl create ... binding` flag naming `identity`.
fn binding_subject(identity: Option<&str>, operator_namespace: &str) -> String {
    match identity {
        Some(user) => match user.strip_prefix("system:serviceaccount:") {
            Some(sa) => format!("--serviceaccount={sa}"),
            None => format!("--user={user}"),
        },
        None => format!("--serviceaccount={operator_namespace}:{OPERATOR_SERVICE_ACCOUNT}"),
    }
}

/// Where permissions are reviewed: the role's scope, the namespace (none: all), the Secret.
type Place = (Scope, Option<String>, Option<String>);

fn rbac_rows(facts: &Facts, out: &mut Vec<Row>) {
    let who = who(facts);
    let subject_flag = binding_subject(facts.identity.as_deref(), &facts.operator_namespace);
    // One row per role and place.
    let mut groups: BTreeMap<Place, Vec<&AccessFact>> = BTreeMap::new();
    for a in &facts.access {
        let name = (a.scope == Scope::AppSecrets).then(|| a.name.clone()).flatten();
        groups.entry((a.scope, a.namespace.clone(), name)).or_default().push(a);
    }
    for ((scope, namespace, secret), reviews) in groups {
        let role = scope.role();
        let place = match (&namespace, &secret) {
            (None, _) => "all namespaces".to_string(),
            (Some(ns), Some(secret)) => format!("namespace {ns} (Secret {secret})"),
            (Some(ns), None) => format!("namespace {ns}"),
        };
        let subject = format!("{role} in {place}");
        let missing: Vec<&str> =
            reviews.iter().filter(|r| r.allowed == Ok(false)).map(|r| r.permission.as_str()).collect();
        let unknown: Vec<String> = reviews
            .iter()
            .filter_map(|r| r.allowed.as_ref().err().map(|e| format!("{} ({e})", r.permission)))
            .collect();
        let fix = match (scope, &namespace) {
            (Scope::Watched, None) => {
                format!("kubectl create clusterrolebinding forgeops-operator --clusterrole={role} {subject_flag}")
            }
            (_, Some(ns)) => {
                format!("kubectl create rolebinding {role} -n {ns} --clusterrole={role} {subject_flag}")
            }
            (_, None) => format!("bind ClusterRole {role} {subject_flag}"),
        };
        if !missing.is_empty() {
            let detail = format!(
                "{who} may not {}: bind the role of deploy/base/rbac.yaml, `{fix}`{}",
                missing.join(", "),
                if scope == Scope::AppSecrets { " (or the opt-in deploy/components/cluster-wide-secrets)" } else { "" }
            );
            out.push(row(Check::Rbac, subject, Verdict::Fail, detail));
        } else if !unknown.is_empty() {
            let detail = format!("could not ask the API server whether {who} may {}", unknown.join(", "));
            out.push(row(Check::Rbac, subject, Verdict::Warn, detail));
        } else {
            let detail = format!("{who} has all {} permissions the role grants (deploy/base/rbac.yaml)", reviews.len());
            out.push(row(Check::Rbac, subject, Verdict::Ok, detail));
        }
    }
    for (kind, why) in &facts.unlisted {
        let detail = format!("{who} may not list them ({why}): the checks that need them were skipped");
        out.push(row(Check::Rbac, format!("list {kind}"), Verdict::Fail, detail));
    }
}

fn used_by(fact: &SecretFact) -> String {
    if fact.used_by.is_empty() {
        "no ForgeApp in scope uses it".into()
    } else {
        format!("used by forgeapp {}", fact.used_by.join(", "))
    }
}

fn credentials_rows(facts: &Facts, out: &mut Vec<Row>) {
    for fact in &facts.secrets {
        let subject = format!("Secret {}{}", fact.source, if fact.default { " (default)" } else { "" });
        let (result, detail) = match &fact.state {
            SecretState::Accepted { email, account } => (
                Verdict::Ok,
                format!(
                    "acts as {} (account id {}, {email}, {}); token expiry: unknown (the platform does not report \
                     it); {}",
                    if account.name.is_empty() { email } else { &account.name },
                    account.account_id,
                    account.status,
                    used_by(fact)
                ),
            ),
            SecretState::Refused { email, message } => (
                Verdict::Fail,
                format!(
                    "the platform refused the credentials of {email}: put a valid `email` and a current Atlassian API \
                     token in `apiToken` of Secret {} ({message}); {}",
                    fact.source,
                    used_by(fact)
                ),
            ),
            SecretState::Unanswered { email, message } => (
                Verdict::Fail,
                format!("the platform did not confirm the credentials of {email}: {message}; {}", used_by(fact)),
            ),
            SecretState::Unusable(message) if fact.used_by.is_empty() => {
                (Verdict::Warn, format!("{message} ({})", used_by(fact)))
            }
            SecretState::Unusable(message) => (Verdict::Fail, format!("{message}; {}", used_by(fact))),
        };
        out.push(row(Check::Credentials, subject, result, detail));
    }
    for (app, message) in &facts.ungranted {
        out.push(row(Check::Credentials, format!("forgeapp {app}"), Verdict::Fail, message.clone()));
    }
}

const NOT_CHECKED: &str = "not checked: no usable credentials (see the credentials rows)";

fn app_rows(facts: &Facts, out: &mut Vec<Row>) {
    if facts.apps.is_empty() {
        out.push(row(Check::App, "-", Verdict::Ok, "no ForgeApp in scope"));
    }
    for fact in &facts.apps {
        let subject = format!("forgeapp {}", fact.app);
        let id = &fact.app_id;
        let (result, detail) = match &fact.outcome {
            AppOutcome::NoCredentials => (Verdict::Warn, NOT_CHECKED.to_string()),
            AppOutcome::Visible { email, environments } => {
                let missing: Vec<&str> =
                    fact.environments.iter().filter(|e| !environments.contains(e)).map(String::as_str).collect();
                if missing.is_empty() {
                    (Verdict::Ok, format!("{email} sees {id}: environments {}", environments.join(", ")))
                } else {
                    (
                        Verdict::Warn,
                        format!(
                            "{email} sees {id}, which has no environment {} (`forge deploy -e <environment>` \
                             creates one); it has {}",
                            missing.join(", "),
                            environments.join(", ")
                        ),
                    )
                }
            }
            AppOutcome::NotVisible { email, error } => (
                Verdict::Fail,
                format!(
                    "the account {email} cannot see app {id}: {error}; check spec.appId, and that {email} owns the \
                     app (or is a contributor to it)"
                ),
            ),
        };
        out.push(row(Check::App, subject, result, detail));
    }
}

fn site_rows(facts: &Facts, out: &mut Vec<Row>) {
    if facts.sites.is_empty() {
        out.push(row(Check::Site, "-", Verdict::Ok, "no Installation in scope"));
    }
    for fact in &facts.sites {
        let subject = format!("installation {} ({})", fact.installation, fact.site);
        let site = &fact.site;
        let (result, detail) = match &fact.outcome {
            SiteOutcome::NoApp => {
                (Verdict::Fail, format!("its ForgeApp {} does not exist: create it, or correct spec.appRef", fact.app))
            }
            SiteOutcome::NoCredentials => (Verdict::Warn, NOT_CHECKED.to_string()),
            SiteOutcome::Checked { email, products, administered, installed } => {
                let names: Vec<&str> = products.iter().map(|(p, _)| p.as_str()).collect();
                let names = names.join(", ");
                let unknown: Vec<String> =
                    products.iter().filter_map(|(p, c)| c.as_ref().err().map(|e| format!("{p}: {e}"))).collect();
                if !unknown.is_empty() {
                    (
                        Verdict::Fail,
                        format!(
                            "the platform has no installation context for {}; check spec.site and spec.products",
                            unknown.join("; ")
                        ),
                    )
                } else {
                    match (administered, installed) {
                        (Some(true), _) => {
                            (Verdict::Ok, format!("{email} administers {site} (forgeops installed there): {names}"))
                        }
                        (Some(false), true) => (
                            Verdict::Warn,
                            format!(
                                "{site} is a customer's site: {email} does not administer it, so forgeops neither \
                                 installs nor moves it to a new major there; its admin does (the installation link), \
                                 or a bulk-upgrade rollout"
                            ),
                        ),
                        (Some(false), false) => (
                            Verdict::Fail,
                            format!(
                                "{email} does not administer {site}: the platform refused to install there \
                                 (PERMISSION_DENIED); make {email} an admin of {site} ({names}), or have the site's \
                                 admin install through the installation link (a DistributionPolicy)"
                            ),
                        ),
                        (None, _) => (
                            Verdict::Warn,
                            format!(
                                "{site} runs {names}; whether {email} administers it is known only once forgeops \
                                 installs there (the platform offers no read of site admin rights)"
                            ),
                        ),
                    }
                }
            }
        };
        out.push(row(Check::Site, subject, result, detail));
    }
}

fn distribution_rows(facts: &Facts, out: &mut Vec<Row>) {
    if facts.policies.is_empty() {
        let on = if facts.distribution_enabled { "on" } else { "off" };
        let detail =
            format!("no DistributionPolicy in scope: the capability is not needed (--platform-distribution is {on})");
        out.push(row(Check::Distribution, "-", Verdict::Ok, detail));
    }
    for fact in &facts.policies {
        let subject = format!("distributionpolicy {}", fact.policy);
        let (result, detail) = match &fact.outcome {
            PolicyOutcome::NoApp => {
                (Verdict::Fail, format!("its ForgeApp {} does not exist: create it, or correct spec.appRef", fact.app))
            }
            PolicyOutcome::NotEnabled => (
                Verdict::Fail,
                "the distribution operations are off: run the operator (and this check) with --platform-distribution \
                 (FORGEOPS_PLATFORM_DISTRIBUTION=true), or manage sharing in the developer console and delete this \
                 policy; as it is, it stays Stalled (DistributionUnsupported)"
                    .to_string(),
            ),
            PolicyOutcome::NoCredentials => (Verdict::Warn, NOT_CHECKED.to_string()),
            PolicyOutcome::Answered { email, app_id, state } => {
                let mut said = vec![format!("sharing {}", if state.shared { "on" } else { "off" })];
                if let Some(link) = &state.link {
                    said.push(format!("a link for {}", link.products.join(", ")));
                }
                if state.listed_on_marketplace {
                    said.push("listed on the Marketplace".into());
                }
                let answered = format!("the platform answers for {app_id} as {email}: {}", said.join(", "));
                if state.listed_on_marketplace && fact.sharing == Sharing::Enabled {
                    (Verdict::Warn, format!("{answered}; a listed app is never shared by link"))
                } else {
                    (Verdict::Ok, answered)
                }
            }
            PolicyOutcome::Failed { email, app_id, kind: ErrorKind::Unsupported, message } => (
                Verdict::Fail,
                format!(
                    "the platform does not offer the distribution operations for {app_id} as {email} ({message}): \
                     manage sharing in the developer console and delete this policy"
                ),
            ),
            PolicyOutcome::Failed { email, app_id, message, .. } => {
                (Verdict::Fail, format!("the platform refused to read the sharing of {app_id} as {email}: {message}"))
            }
        };
        out.push(row(Check::Distribution, subject, result, detail));
    }
}

// ---------------------------------------------------------------------------------------------
// Gathering
// ---------------------------------------------------------------------------------------------

/// Runs the check and prints the report as asked; answers the process's exit code.
pub async fn run(args: CheckArgs) -> i32 {
    match report(&args).await {
        Ok(report) => {
            match args.output {
                Output::Table => print!("{}", report.table()),
                Output::Json => print!("{}", report.json()),
            }
            let _ = std::io::Write::flush(&mut std::io::stdout());
            report.exit_code()
        }
        Err(e) => {
            eprintln!("error: the check could not run: {e:#}");
            EXIT_NOT_RUN
        }
    }
}

/// The Kubernetes configuration of `args`: the kubeconfig (and context) given, else as `forgeops run`
/// finds it; with the impersonation asked for.
pub async fn kube_config(args: &CheckArgs) -> anyhow::Result<kube::Config> {
    let mut config = match (&args.kubeconfig, &args.context) {
        (None, None) => kube::Config::infer().await.context("no Kubernetes configuration found")?,
        (path, context) => {
            let kubeconfig = match path {
                Some(path) => kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
                None => kube::config::Kubeconfig::read().context("reading the kubeconfig")?,
            };
            let options = kube::config::KubeConfigOptions { context: context.clone(), ..Default::default() };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.context("loading the kubeconfig")?
        }
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let user = if args.as_operator {
        Some(format!("system:serviceaccount:{}:{OPERATOR_SERVICE_ACCOUNT}", args.run.operator_namespace))
    } else {
        args.as_user.clone()
    };
    if let Some(user) = user {
        config.auth_info.impersonate = Some(user);
        if !args.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(args.as_group.clone());
        }
    }
    Ok(config)
}

/// Gathers the facts for `args` and turns them into the report. An error: the check could not run.
pub async fn report(args: &CheckArgs) -> anyhow::Result<Report> {
    let config = kube_config(args).await?;
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    client
        .apiserver_version()
        .await
        .with_context(|| format!("the Kubernetes API server at {server} did not answer"))?;
    let settings = args.run.settings(&Arc::new(Metrics::default()))?;
    let facts = gather(&client, &settings, args.run.platform_distribution).await;
    Ok(Report { rows: rows(&facts) })
}

/// What the API server said, without the Status dump kube's `Display` adds.
fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// `namespace/name` of an object.
fn key_of<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

async fn list<K>(client: &Client, namespace: Option<&str>) -> Result<Vec<K>, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = api.list(&ListParams::default()).await?.items;
    items.sort_by_key(key_of);
    Ok(items)
}

/// What the API server says the client is (SelfSubjectReview).
async fn identity(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review: SelfSubjectReview =
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})).ok()?;
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    reviews.create(&PostParams::default(), &review).await.ok()?.status?.user_info?.username
}

/// One SelfSubjectAccessReview.
async fn may(
    client: &Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, String> {
    use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let mut attributes = json!({"verb": verb, "group": group, "resource": resource});
    if !subresource.is_empty() {
        attributes["subresource"] = json!(subresource);
    }
    if let Some(ns) = namespace {
        attributes["namespace"] = json!(ns);
    }
    if let Some(name) = name {
        attributes["name"] = json!(name);
    }
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }))
    .map_err(|e| e.to_string())?;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = reviews.create(&PostParams::default(), &review).await.map_err(|e| kube_message(&e))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The access reviews of everything in [`NEEDS`], where each is needed: the watched namespace (or
/// all), the operator's namespace, and the namespaces of `app_secrets` (`(namespace, Secret)`).
async fn access(
    client: &Client,
    facts: &Facts,
    default_secret: &str,
    app_secrets: &BTreeSet<(String, String)>,
) -> Vec<AccessFact> {
    // (scope, namespace, object name, verb, group, resource)
    type Ask = (Scope, Option<String>, Option<String>, &'static str, &'static str, &'static str);
    let mut asks: Vec<Ask> = Vec::new();
    for need in NEEDS {
        let places: Vec<(Option<String>, Option<String>)> = match need.scope {
            Scope::Watched => vec![(facts.namespace.clone(), None)],
            Scope::OperatorNamespace => vec![(Some(facts.operator_namespace.clone()), None)],
            Scope::AppSecrets => app_secrets
                .iter()
                .filter(|(ns, _)| *ns != facts.operator_namespace)
                .map(|(ns, secret)| (Some(ns.clone()), Some(secret.clone())))
                .collect(),
        };
        for (namespace, secret) in places {
            for resource in need.resources {
                for verb in need.verbs {
                    // A Namespace is asked about by name, in itself (as a RoleBinding there grants it); a
                    // Secret by the name the operator reads.
                    let name = match (*resource, need.scope) {
                        ("namespaces", _) => namespace.clone(),
                        ("secrets", Scope::OperatorNamespace) if *verb == "get" => Some(default_secret.to_string()),
                        ("secrets", Scope::AppSecrets) => secret.clone(),
                        _ => None,
                    };
                    asks.push((need.scope, namespace.clone(), name, verb, need.group, resource));
                }
            }
        }
    }
    futures::stream::iter(asks)
        .map(|(scope, namespace, name, verb, group, resource)| async move {
            let allowed = may(client, verb, group, resource, namespace.as_deref(), name.as_deref()).await;
            AccessFact { scope, namespace, name, permission: permission_name(group, resource, verb), allowed }
        })
        .buffered(8)
        .collect()
        .await
}

async fn crd_facts(client: &Client) -> Vec<CrdFact> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut served: Option<Vec<String>> = None;
    let mut out = Vec::new();
    for want in crate::api::all_crds() {
        let name = want.name_any();
        let state = match api.get_opt(&name).await {
            Ok(Some(have)) => {
                let differences = crd_differences(&want, &have);
                if differences.is_empty() { CrdState::Current } else { CrdState::Stale(differences) }
            }
            Ok(None) => CrdState::Missing,
            Err(e) => {
                if served.is_none() {
                    let version = want.spec.versions.first().map(|v| v.name.as_str()).unwrap_or("v1alpha1");
                    let group_version = format!("{}/{version}", want.spec.group);
                    served = Some(match client.list_api_group_resources(&group_version).await {
                        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
                        Err(_) => Vec::new(),
                    });
                }
                let plural = &want.spec.names.plural;
                let served = served.as_ref().is_some_and(|s| s.contains(plural));
                CrdState::Unreadable { served, why: kube_message(&e) }
            }
        };
        out.push(CrdFact { name, state });
    }
    out
}

/// Everything the check asks the API server and the platform, as facts. Reads only.
pub async fn gather(client: &Client, settings: &crate::operator::Settings, distribution: bool) -> Facts {
    let mut facts = Facts {
        identity: identity(client).await,
        operator_namespace: settings.operator_namespace.clone(),
        namespace: settings.namespace.clone(),
        distribution_enabled: distribution,
        ..Facts::default()
    };
    facts.crds = crd_facts(client).await;
    let scope = settings.namespace.as_deref();
    let mut listed = |kind: &str, e: kube::Error| facts.unlisted.push((kind.to_string(), kube_message(&e)));
    let apps: Vec<ForgeApp> = list(client, scope).await.unwrap_or_else(|e| {
        listed("forgeapps.forgeops.dev", e);
        Vec::new()
    });
    let installations: Vec<Installation> = list(client, scope).await.unwrap_or_else(|e| {
        listed("installations.forgeops.dev", e);
        Vec::new()
    });
    let policies: Vec<DistributionPolicy> = list(client, scope).await.unwrap_or_else(|e| {
        listed("distributionpolicies.forgeops.dev", e);
        Vec::new()
    });

    let app_secrets: BTreeSet<(String, String)> = apps
        .iter()
        .filter_map(|a| Some((a.namespace()?, a.spec.credentials_secret_ref.as_ref()?.name.clone())))
        .collect();
    facts.access = access(client, &facts, &settings.credentials_secret, &app_secrets).await;

    let creds = credentials(client, settings, &apps, &mut facts).await;
    let platform = settings.platform.as_ref();
    facts.apps = futures::stream::iter(&apps)
        .map(|app| app_fact(platform, app, creds.get(&key_of(app))))
        .buffered(8)
        .collect()
        .await;
    let by_key: BTreeMap<String, &ForgeApp> = apps.iter().map(|a| (key_of(a), a)).collect();
    facts.sites = futures::stream::iter(&installations)
        .map(|inst| {
            let app_key = format!("{}/{}", inst.namespace().unwrap_or_default(), inst.spec.app_ref.name);
            let app = by_key.get(&app_key).copied();
            let creds = creds.get(&app_key);
            site_fact(platform, inst, app_key.clone(), app, creds)
        })
        .buffered(16)
        .collect()
        .await;
    facts.policies = futures::stream::iter(&policies)
        .map(|policy| {
            let app_key = format!("{}/{}", policy.namespace().unwrap_or_default(), policy.spec.app_ref.name);
            let app = by_key.get(&app_key).copied();
            let creds = creds.get(&app_key);
            policy_fact(platform, policy, app_key.clone(), app, creds, distribution)
        })
        .buffered(8)
        .collect()
        .await;
    facts
}

/// The credentials of each ForgeApp (by `namespace/name`) that the platform accepted, read with the
/// operator's own [`CredentialStore`] (the same grant rules); the Secrets' facts go into `facts`.
async fn credentials(
    client: &Client,
    settings: &crate::operator::Settings,
    apps: &[ForgeApp],
    facts: &mut Facts,
) -> BTreeMap<String, (Credentials, String)> {
    let store = CredentialStore::granting(
        client.clone(),
        settings.operator_namespace.clone(),
        settings.credentials_secret.clone(),
        settings.credentials_grant.clone(),
        Duration::from_secs(3600),
    );
    let default_source = format!("{}/{}", settings.operator_namespace, settings.credentials_secret);
    // Per Secret: the credentials, or why there are none; and who uses it.
    let mut secrets: BTreeMap<String, (Result<Credentials, String>, Vec<String>)> = BTreeMap::new();
    let mut of_app: BTreeMap<String, String> = BTreeMap::new();
    for app in apps {
        let namespace = app.namespace().unwrap_or_default();
        let secret = app.spec.credentials_secret_ref.as_ref().map(|s| s.name.as_str());
        let source = secret.map(|s| format!("{namespace}/{s}")).unwrap_or_else(|| default_source.clone());
        let got = match store.get(&namespace, secret).await {
            Ok(creds) => Ok(creds),
            Err(e @ CredentialsError::NotGranted { .. }) => {
                facts.ungranted.push((key_of(app), e.to_string()));
                continue;
            }
            Err(e) => Err(e.to_string()),
        };
        let entry = secrets.entry(source.clone()).or_insert_with(|| (got, Vec::new()));
        entry.1.push(key_of(app));
        of_app.insert(key_of(app), source);
    }
    if !secrets.contains_key(&default_source) {
        let got = store.get(&settings.operator_namespace, None).await.map_err(|e| e.to_string());
        secrets.insert(default_source.clone(), (got, Vec::new()));
    }
    let platform = settings.platform.as_ref();
    let mut accepted: BTreeMap<String, (Credentials, String)> = BTreeMap::new();
    for (source, (got, used_by)) in secrets {
        let state = match got {
            Err(message) => SecretState::Unusable(message),
            Ok(creds) => {
                let email = creds.email.clone();
                match platform.whoami(&creds).await {
                    Ok(account) => {
                        accepted.insert(source.clone(), (creds, email.clone()));
                        SecretState::Accepted { email, account }
                    }
                    Err(e) if e.kind == ErrorKind::BadCredentials => {
                        SecretState::Refused { email, message: e.to_string() }
                    }
                    Err(e) => SecretState::Unanswered { email, message: e.to_string() },
                }
            }
        };
        facts.secrets.push(SecretFact { default: source == default_source, source, used_by, state });
    }
    of_app.into_iter().filter_map(|(app, source)| Some((app, accepted.get(&source)?.clone()))).collect()
}

async fn app_fact(platform: &dyn Platform, app: &ForgeApp, creds: Option<&(Credentials, String)>) -> AppFact {
    let environments = app.spec.environments.iter().map(|e| crate::platform::environment_key(e).to_string()).collect();
    let outcome = match creds {
        None => AppOutcome::NoCredentials,
        Some((creds, email)) => match platform.environments(creds, &app.spec.app_id).await {
            Ok(found) => {
                AppOutcome::Visible { email: email.clone(), environments: found.into_iter().map(|e| e.key).collect() }
            }
            Err(e) => AppOutcome::NotVisible { email: email.clone(), error: e.to_string() },
        },
    };
    AppFact { app: key_of(app), app_id: app.spec.app_id.clone(), environments, outcome }
}

async fn site_fact(
    platform: &dyn Platform,
    inst: &Installation,
    app_key: String,
    app: Option<&ForgeApp>,
    creds: Option<&(Credentials, String)>,
) -> SiteFact {
    let site = inst.spec.site.clone();
    let outcome = match (app, creds) {
        (None, _) => SiteOutcome::NoApp,
        (Some(_), None) => SiteOutcome::NoCredentials,
        (Some(_), Some((creds, email))) => {
            let mut products = Vec::new();
            for product in &inst.spec.products {
                let context = platform.installation_context(creds, &site, product.as_str()).await;
                products.push((product.as_str().to_string(), context.map_err(|e| e.to_string())));
            }
            let status = inst.status.clone().unwrap_or_default();
            SiteOutcome::Checked {
                email: email.clone(),
                products,
                administered: status.site_administered,
                installed: status.installed_version.is_some() || status.adopted,
            }
        }
    };
    SiteFact { installation: key_of(inst), site, app: app_key, outcome }
}

async fn policy_fact(
    platform: &dyn Platform,
    policy: &DistributionPolicy,
    app_key: String,
    app: Option<&ForgeApp>,
    creds: Option<&(Credentials, String)>,
    distribution: bool,
) -> PolicyFact {
    let outcome = match (app, creds) {
        (None, _) => PolicyOutcome::NoApp,
        _ if !distribution => PolicyOutcome::NotEnabled,
        (Some(_), None) => PolicyOutcome::NoCredentials,
        (Some(app), Some((creds, email))) => {
            let app_id = app.spec.app_id.clone();
            match platform.sharing_state(creds, &app_id).await {
                Ok(state) => PolicyOutcome::Answered { email: email.clone(), app_id, state },
                Err(e) => PolicyOutcome::Failed { email: email.clone(), app_id, kind: e.kind, message: e.to_string() },
            }
        }
    };
    PolicyFact { policy: key_of(policy), app: app_key, sharing: policy.spec.sharing, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::DistributionLink;

    fn account() -> Account {
        Account { account_id: "712020:abc".into(), name: "Dev".into(), status: "active".into() }
    }

    /// A cluster and platform where everything is in order.
    fn good() -> Facts {
        Facts {
            identity: Some("system:serviceaccount:forgeops-system:forgeops-operator".into()),
            operator_namespace: "forgeops-system".into(),
            namespace: None,
            crds: vec![CrdFact { name: "forgeapps.forgeops.dev".into(), state: CrdState::Current }],
            access: vec![
                AccessFact {
                    scope: Scope::Watched,
                    namespace: None,
                    name: None,
                    permission: "list forgeapps.forgeops.dev".into(),
                    allowed: Ok(true),
                },
                AccessFact {
                    scope: Scope::OperatorNamespace,
                    namespace: Some("forgeops-system".into()),
                    name: Some("forgeops-credentials".into()),
                    permission: "get secrets".into(),
                    allowed: Ok(true),
                },
            ],
            unlisted: vec![],
            secrets: vec![SecretFact {
                source: "forgeops-system/forgeops-credentials".into(),
                default: true,
                used_by: vec!["team/insights".into()],
                state: SecretState::Accepted { email: "dev@acme.example".into(), account: account() },
            }],
            ungranted: vec![],
            apps: vec![AppFact {
                app: "team/insights".into(),
                app_id: "ari:cloud:ecosystem::app/insights".into(),
                environments: vec!["production".into()],
                outcome: AppOutcome::Visible {
                    email: "dev@acme.example".into(),
                    environments: vec!["production".into(), "staging".into()],
                },
            }],
            sites: vec![SiteFact {
                installation: "team/acme".into(),
                site: "acme.atlassian.net".into(),
                app: "team/insights".into(),
                outcome: SiteOutcome::Checked {
                    email: "dev@acme.example".into(),
                    products: vec![("jira".into(), Ok("ari:cloud:jira:c:workspace/a".into()))],
                    administered: Some(true),
                    installed: true,
                },
            }],
            distribution_enabled: true,
            policies: vec![PolicyFact {
                policy: "team/insights".into(),
                app: "team/insights".into(),
                sharing: Sharing::Enabled,
                outcome: PolicyOutcome::Answered {
                    email: "dev@acme.example".into(),
                    app_id: "ari:cloud:ecosystem::app/insights".into(),
                    state: SharingState {
                        shared: true,
                        listed_on_marketplace: false,
                        link: Some(DistributionLink { url: "https://x".into(), products: vec!["jira".into()] }),
                    },
                },
            }],
        }
    }

    fn only(rows: &[Row], check: Check) -> Vec<&Row> {
        rows.iter().filter(|r| r.check == check).collect()
    }

    fn failing(facts: &Facts) -> Vec<Row> {
        rows(facts).into_iter().filter(|r| r.result == Verdict::Fail).collect()
    }

    #[test]
    fn check_all_good_is_ok_everywhere_and_exits_0() {
        let report = Report { rows: rows(&good()) };
        assert!(report.rows.iter().all(|r| r.result == Verdict::Ok), "{:#?}", report.rows);
        for check in [Check::Crds, Check::Rbac, Check::Credentials, Check::App, Check::Site, Check::Distribution] {
            assert!(!only(&report.rows, check).is_empty(), "a row for {check:?}");
        }
        assert_eq!(report.exit_code(), EXIT_OK);
        let credentials = only(&report.rows, Check::Credentials)[0];
        assert!(credentials.detail.contains("acts as Dev (account id 712020:abc"), "{}", credentials.detail);
        assert!(credentials.detail.contains("token expiry: unknown"), "{}", credentials.detail);
        assert!(credentials.detail.contains("used by forgeapp team/insights"), "{}", credentials.detail);
    }

    #[test]
    fn check_nothing_in_scope_still_reports_each_check() {
        let facts = Facts { apps: vec![], sites: vec![], policies: vec![], distribution_enabled: false, ..good() };
        let rows = rows(&facts);
        assert_eq!(only(&rows, Check::App)[0].detail, "no ForgeApp in scope");
        assert_eq!(only(&rows, Check::Site)[0].detail, "no Installation in scope");
        assert!(only(&rows, Check::Distribution)[0].detail.contains("--platform-distribution is off"));
        assert!(rows.iter().all(|r| r.result == Verdict::Ok));
    }

    #[test]
    fn check_table_has_a_header_aligned_columns_and_a_summary() {
        let mut facts = good();
        facts.crds.push(CrdFact { name: "installations.forgeops.dev".into(), state: CrdState::Missing });
        let report = Report { rows: rows(&facts) };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CHECK") && lines[0].contains("SUBJECT") && lines[0].ends_with("DETAIL"));
        let result_at = lines[0].find("RESULT").unwrap_or_default();
        assert_eq!(&lines[2][result_at..result_at + 4], "FAIL", "{table}");
        assert_eq!(&lines[1][result_at..result_at + 2], "ok", "{table}");
        assert!(table.ends_with(&format!("\n{}\n", report.summary())), "{table}");
        assert!(report.summary().ends_with("1 FAIL"), "{}", report.summary());
        assert_eq!(report.exit_code(), EXIT_FAILED);
    }

    #[test]
    fn check_json_has_the_rows_and_the_exit_code() {
        let mut facts = good();
        facts.crds[0].state = CrdState::Stale(vec!["v1alpha1: the schema differs at .properties.spec".into()]);
        let report = Report { rows: rows(&facts) };
        let value: Value = serde_json::from_str(&report.json()).unwrap_or_default();
        assert_eq!(value["exitCode"], 1);
        assert_eq!(value["fail"], 1);
        assert_eq!(value["rows"][0]["check"], "crds");
        assert_eq!(value["rows"][0]["result"], "fail");
        assert_eq!(value["rows"][0]["subject"], "forgeapps.forgeops.dev");
    }

    #[test]
    fn check_crds_missing_stale_or_unreadable() {
        let mut facts = good();
        facts.crds = vec![
            CrdFact { name: "a".into(), state: CrdState::Missing },
            CrdFact { name: "b".into(), state: CrdState::Stale(vec!["v1alpha1: the printer columns X differ".into()]) },
            CrdFact { name: "c".into(), state: CrdState::Unreadable { served: true, why: "forbidden".into() } },
            CrdFact { name: "d".into(), state: CrdState::Unreadable { served: false, why: "forbidden".into() } },
        ];
        let rows = rows(&facts);
        let crds = only(&rows, Check::Crds);
        let verdicts: Vec<Verdict> = crds.iter().map(|r| r.result).collect();
        assert_eq!(verdicts, [Verdict::Fail, Verdict::Fail, Verdict::Warn, Verdict::Fail]);
        assert!(crds[0].detail.contains("kubectl apply --server-side -f crds/forgeops.dev.yaml"));
        assert!(
            crds[1].detail.contains("the printer columns X differ")
                && crds[1].detail.contains("crds/forgeops.dev.yaml")
        );
        assert!(crds[2].detail.contains("may not read CustomResourceDefinitions"), "{}", crds[2].detail);
    }

    fn with_column_removed(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
        if let Some(columns) = crd.spec.versions[0].additional_printer_columns.as_mut() {
            columns.pop();
        }
        crd
    }

    #[test]
    fn check_crd_differences_name_what_changed() {
        let crds = crate::api::all_crds();
        for crd in &crds {
            assert_eq!(crd_differences(crd, crd), Vec::<String>::new(), "{} equals itself", crd.name_any());
        }
        let app = crds[0].clone();
        let fewer = with_column_removed(app.clone());
        let found = crd_differences(&app, &fewer);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("v1alpha1: the printer columns are ["), "{found:?}");
        assert!(found[0].contains("Age] here"), "{found:?}");

        let mut schema = serde_json::to_value(&app).unwrap_or_default();
        schema["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            .as_object_mut()
            .map(|p| p.remove("refreshInterval"));
        let old: CustomResourceDefinition = serde_json::from_value(schema).unwrap_or_else(|_| app.clone());
        let found = crd_differences(&app, &old);
        assert_eq!(found, ["v1alpha1: the schema differs at .properties.spec.properties.refreshInterval"]);

        let mut other = serde_json::to_value(&app).unwrap_or_default();
        other["spec"]["versions"][0]["name"] = json!("v1beta1");
        let other: CustomResourceDefinition = serde_json::from_value(other).unwrap_or_else(|_| app.clone());
        let found = crd_differences(&app, &other);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0], "version v1alpha1 is missing");
        assert!(found[1].starts_with("version v1beta1 is not one this forgeops serves"));

        // What the API server adds on its own (status, defaults elsewhere) is not a difference;
        // an empty list and a missing one are the same.
        let mut served = serde_json::to_value(&app).unwrap_or_default();
        served["status"] =
            json!({"acceptedNames": {"kind": "ForgeApp", "plural": "forgeapps"}, "storedVersions": ["v1alpha1"]});
        served["spec"]["conversion"] = json!({"strategy": "None"});
        served["spec"]["names"]["listKind"] = json!("ForgeAppList");
        served["metadata"]["resourceVersion"] = json!("42");
        let served: CustomResourceDefinition = serde_json::from_value(served).unwrap_or_else(|_| app.clone());
        assert_eq!(crd_differences(&app, &served), Vec::<String>::new());
    }

    #[test]
    fn check_first_difference_finds_the_path() {
        let a = json!({"x": {"y": [1, 2, {"z": true}]}, "w": 1});
        assert_eq!(first_difference(&a, &a, ""), None);
        let b = json!({"x": {"y": [1, 2, {"z": false}]}, "w": 1});
        assert_eq!(first_difference(&a, &b, "").as_deref(), Some(".x.y[2].z"));
        let c = json!({"x": {"y": [1, 2]}, "w": 1});
        assert_eq!(first_difference(&a, &c, "").as_deref(), Some(".x.y"));
        let d = json!({"x": {"y": [1, 2, {"z": true}]}});
        assert_eq!(first_difference(&a, &d, "").as_deref(), Some(".w"));
        assert_eq!(first_difference(&json!(1), &json!(2), "").as_deref(), Some("."));
    }

    /// `(group, resource, verb)` of every rule of the ClusterRole `name` in `deploy/base/rbac.yaml`.
    fn role_in_rbac_yaml(name: &str) -> Option<BTreeSet<(String, String, String)>> {
        let text = include_str!("../deploy/base/rbac.yaml");
        for document in serde_yaml_ng::Deserializer::from_str(text) {
            let doc = Value::deserialize(document).ok()?;
            if doc["kind"] != "ClusterRole" || doc["metadata"]["name"] != name {
                continue;
            }
            let strings = |v: &Value| -> Vec<String> {
                v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
            };
            let mut out = BTreeSet::new();
            for rule in doc["rules"].as_array().into_iter().flatten() {
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            out.insert((group.clone(), resource.clone(), verb));
                        }
                    }
                }
            }
            return Some(out);
        }
        None
    }

    use serde::Deserialize as _;

    #[test]
    fn check_needs_are_exactly_the_roles_of_deploy_base_rbac_yaml() {
        for scope in [Scope::Watched, Scope::OperatorNamespace, Scope::AppSecrets] {
            let granted = role_in_rbac_yaml(scope.role());
            assert_eq!(
                granted.as_ref(),
                Some(&permissions(scope)),
                "ClusterRole {} of deploy/base/rbac.yaml",
                scope.role()
            );
        }
        // Every ClusterRole of the file is one the check knows.
        let text = include_str!("../deploy/base/rbac.yaml");
        let roles: Vec<String> = serde_yaml_ng::Deserializer::from_str(text)
            .filter_map(|d| Value::deserialize(d).ok())
            .filter(|d| d["kind"] == "ClusterRole")
            .filter_map(|d| d["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(roles, ["forgeops-operator", "forgeops-operator-credentials", "forgeops-operator-own-namespace"]);
    }

    fn access(
        scope: Scope,
        namespace: Option<&str>,
        name: Option<&str>,
        permission: &str,
        allowed: bool,
    ) -> AccessFact {
        AccessFact {
            scope,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            permission: permission.into(),
            allowed: Ok(allowed),
        }
    }

    #[test]
    fn check_rbac_rows_name_the_missing_verb_and_resource_and_the_binding() {
        let mut facts = good();
        facts.identity = Some("forgeops-operator".into());
        facts.access = vec![
            access(Scope::Watched, None, None, "list forgeapps.forgeops.dev", true),
            access(Scope::Watched, None, None, "patch installations/status.forgeops.dev", false),
            access(
                Scope::OperatorNamespace,
                Some("forgeops-system"),
                Some("forgeops-credentials"),
                "get secrets",
                false,
            ),
            access(Scope::OperatorNamespace, Some("forgeops-system"), None, "create leases.coordination.k8s.io", false),
            access(Scope::AppSecrets, Some("team-a"), Some("own"), "get secrets", true),
            access(Scope::AppSecrets, Some("team-b"), Some("theirs"), "get secrets", false),
        ];
        let rows = rows(&facts);
        let rbac = only(&rows, Check::Rbac);
        assert_eq!(rbac.len(), 4, "{rbac:#?}");
        assert_eq!(rbac[0].subject, "forgeops-operator in all namespaces");
        assert_eq!(rbac[0].result, Verdict::Fail);
        assert!(rbac[0].detail.starts_with("forgeops-operator may not patch installations/status.forgeops.dev"));
        assert!(rbac[0].detail.contains(
            "kubectl create clusterrolebinding forgeops-operator --clusterrole=forgeops-operator --user=forgeops-operator"
        ));
        assert_eq!(rbac[1].subject, "forgeops-operator-own-namespace in namespace forgeops-system");
        assert!(
            rbac[1].detail.contains("may not get secrets, create leases.coordination.k8s.io"),
            "{}",
            rbac[1].detail
        );
        assert!(
            rbac[1].detail.contains("kubectl create rolebinding forgeops-operator-own-namespace -n forgeops-system")
        );
        assert_eq!(rbac[2].subject, "forgeops-operator-credentials in namespace team-a (Secret own)");
        assert_eq!(rbac[2].result, Verdict::Ok);
        assert_eq!(rbac[3].result, Verdict::Fail);
        assert!(rbac[3].detail.contains("cluster-wide-secrets"));
    }

    #[test]
    fn check_binding_subject_is_the_service_account_or_the_user() {
        let sa = "system:serviceaccount:ops:forgeops-operator";
        assert_eq!(binding_subject(Some(sa), "x"), "--serviceaccount=ops:forgeops-operator");
        assert_eq!(binding_subject(Some("alice"), "x"), "--user=alice");
        assert_eq!(binding_subject(None, "forgeops-system"), "--serviceaccount=forgeops-system:forgeops-operator");
    }

    #[test]
    fn check_unlisted_kinds_fail() {
        let mut facts = good();
        facts.unlisted.push(("installations.forgeops.dev".into(), "forbidden".into()));
        let failing = failing(&facts);
        assert_eq!(failing.len(), 1);
        assert_eq!(failing[0].subject, "list installations.forgeops.dev");
    }

    #[test]
    fn check_credentials_missing_refused_unanswered_or_not_granted() {
        let mut facts = good();
        facts.secrets = vec![
            SecretFact {
                source: "team/gone".into(),
                default: false,
                used_by: vec!["team/a".into()],
                state: SecretState::Unusable("no platform credentials: Secret team/gone does not exist".into()),
            },
            SecretFact {
                source: "team/bad".into(),
                default: false,
                used_by: vec!["team/b".into()],
                state: SecretState::Refused {
                    email: "dev@acme.example".into(),
                    message: "forge_cli_getUserDetails: Unauthorized".into(),
                },
            },
            SecretFact {
                source: "team/slow".into(),
                default: false,
                used_by: vec!["team/c".into()],
                state: SecretState::Unanswered {
                    email: "dev@acme.example".into(),
                    message: "forge_cli_getUserDetails: could not connect".into(),
                },
            },
            SecretFact {
                source: "forgeops-system/forgeops-credentials".into(),
                default: true,
                used_by: vec![],
                state: SecretState::Unusable("no platform credentials: Secret x does not exist".into()),
            },
        ];
        facts.ungranted =
            vec![("other/app".into(), "namespace other may not use the operator's shared credentials".into())];
        let rows = rows(&facts);
        let creds = only(&rows, Check::Credentials);
        let verdicts: Vec<Verdict> = creds.iter().map(|r| r.result).collect();
        assert_eq!(verdicts, [Verdict::Fail, Verdict::Fail, Verdict::Fail, Verdict::Warn, Verdict::Fail]);
        assert_eq!(creds[0].subject, "Secret team/gone");
        assert!(creds[0].detail.contains("does not exist; used by forgeapp team/a"));
        assert!(creds[1].detail.starts_with("the platform refused the credentials of dev@acme.example"));
        assert!(creds[1].detail.contains("`apiToken` of Secret team/bad"));
        assert_eq!(creds[3].subject, "Secret forgeops-system/forgeops-credentials (default)");
        assert!(creds[3].detail.contains("no ForgeApp in scope uses it"));
        assert_eq!(creds[4].subject, "forgeapp other/app");
    }

    #[test]
    fn check_apps_visible_with_missing_environments_not_visible_or_unchecked() {
        let mut facts = good();
        let app = facts.apps[0].clone();
        facts.apps = vec![
            AppFact {
                environments: vec!["production".into(), "default".into()],
                outcome: AppOutcome::Visible { email: "d@x".into(), environments: vec!["production".into()] },
                ..app.clone()
            },
            AppFact {
                outcome: AppOutcome::NotVisible {
                    email: "d@x".into(),
                    error: "forge_cli_listEnvironment: app not found".into(),
                },
                ..app.clone()
            },
            AppFact { outcome: AppOutcome::NoCredentials, ..app },
        ];
        let rows = rows(&facts);
        let apps = only(&rows, Check::App);
        assert_eq!(apps[0].result, Verdict::Warn);
        assert!(apps[0].detail.contains("no environment default"), "{}", apps[0].detail);
        assert_eq!(apps[1].result, Verdict::Fail);
        assert!(apps[1].detail.starts_with("the account d@x cannot see app ari:cloud:ecosystem::app/insights: "));
        assert_eq!(apps[2].result, Verdict::Warn);
        assert!(apps[2].detail.starts_with("not checked"));
    }

    #[test]
    fn check_sites_by_what_the_operator_learned() {
        let mut facts = good();
        let base = facts.sites[0].clone();
        let checked = |products: Vec<(String, Result<String, String>)>, administered, installed| SiteFact {
            outcome: SiteOutcome::Checked { email: "d@x".into(), products, administered, installed },
            ..base.clone()
        };
        let jira = || vec![("jira".to_string(), Ok("ctx".to_string()))];
        facts.sites = vec![
            checked(jira(), Some(true), true),
            checked(jira(), Some(false), true),
            checked(jira(), Some(false), false),
            checked(jira(), None, false),
            checked(vec![("compass".into(), Err("acme.atlassian.net does not run compass".into()))], None, false),
            SiteFact { outcome: SiteOutcome::NoApp, ..base.clone() },
            SiteFact { outcome: SiteOutcome::NoCredentials, ..base },
        ];
        let rows = rows(&facts);
        let sites = only(&rows, Check::Site);
        let verdicts: Vec<Verdict> = sites.iter().map(|r| r.result).collect();
        assert_eq!(
            verdicts,
            [Verdict::Ok, Verdict::Warn, Verdict::Fail, Verdict::Warn, Verdict::Fail, Verdict::Fail, Verdict::Warn]
        );
        assert_eq!(sites[0].subject, "installation team/acme (acme.atlassian.net)");
        assert!(sites[2].detail.starts_with("d@x does not administer acme.atlassian.net"), "{}", sites[2].detail);
        assert!(sites[3].detail.contains("the platform offers no read of site admin rights"));
        assert!(sites[4].detail.contains("compass: acme.atlassian.net does not run compass"));
        assert!(sites[5].detail.contains("its ForgeApp team/insights does not exist"));
    }

    #[test]
    fn check_distribution_off_unsupported_refused_or_listed() {
        let mut facts = good();
        let base = facts.policies[0].clone();
        let failed = |kind| PolicyFact {
            outcome: PolicyOutcome::Failed {
                email: "d@x".into(),
                app_id: "ari:cloud:ecosystem::app/insights".into(),
                kind,
                message: "forgeops_getAppSharing: no".into(),
            },
            ..base.clone()
        };
        let listed = PolicyFact {
            outcome: PolicyOutcome::Answered {
                email: "d@x".into(),
                app_id: "ari:cloud:ecosystem::app/insights".into(),
                state: SharingState { shared: false, listed_on_marketplace: true, link: None },
            },
            ..base.clone()
        };
        facts.policies = vec![
            PolicyFact { outcome: PolicyOutcome::NotEnabled, ..base.clone() },
            failed(ErrorKind::Unsupported),
            failed(ErrorKind::PermissionDenied),
            listed,
            PolicyFact { outcome: PolicyOutcome::NoApp, ..base },
        ];
        let rows = rows(&facts);
        let policies = only(&rows, Check::Distribution);
        let verdicts: Vec<Verdict> = policies.iter().map(|r| r.result).collect();
        assert_eq!(verdicts, [Verdict::Fail, Verdict::Fail, Verdict::Fail, Verdict::Warn, Verdict::Fail]);
        assert!(policies[0].detail.contains("--platform-distribution"));
        assert!(policies[1].detail.contains("does not offer the distribution operations"));
        assert!(policies[2].detail.contains("refused to read the sharing"));
        assert!(policies[3].detail.contains("never shared by link"));
        assert_eq!(policies[0].subject, "distributionpolicy team/insights");
    }

    #[test]
    fn check_exit_codes() {
        assert_eq!(Report::default().exit_code(), EXIT_OK);
        let warn = Report { rows: vec![row(Check::Site, "s", Verdict::Warn, "d")] };
        assert_eq!(warn.exit_code(), EXIT_OK);
        let fail =
            Report { rows: vec![row(Check::Site, "s", Verdict::Warn, "d"), row(Check::App, "a", Verdict::Fail, "d")] };
        assert_eq!(fail.exit_code(), EXIT_FAILED);
        assert_ne!(EXIT_NOT_RUN, EXIT_FAILED);
    }

    #[test]
    fn check_arguments_are_those_of_run_and_more() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            check: CheckArgs,
        }
        let cli = Cli::try_parse_from([
            "check",
            "--namespace=team",
            "--platform-distribution",
            "--leader-elect",
            "--output=json",
            "--as-operator",
            "--operator-namespace=ops",
        ]);
        let cli = cli.expect("the options of run, and those of check, parse");
        assert_eq!(cli.check.run.namespace.as_deref(), Some("team"));
        assert!(cli.check.run.platform_distribution && cli.check.as_operator);
        assert_eq!(cli.check.output, Output::Json);
        assert!(Cli::try_parse_from(["check", "--as=alice", "--as-operator"]).is_err(), "one identity");
        assert!(Cli::try_parse_from(["check", "--as-group=g"]).is_err(), "groups need --as");
    }
}
