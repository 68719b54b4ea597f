//! Platform credentials: an Atlassian account e-mail and API token, read from a Kubernetes Secret
//! (keys `email` and `apiToken`) that each ForgeApp names in its own namespace, or from the
//! operator-wide default Secret in the operator's namespace. The default Secret is the platform
//! team's account: only the operator's own namespace, and the namespaces the cluster admin grants
//! it to ([`Grant`]: by name, or by a label selector on the Namespace), may use it; every other
//! namespace needs a Secret of its own. Messages about the shared account never show its e-mail
//! to the namespaces that borrow it. Secrets are re-read after a short time, and at once after
//! the platform refused them, so a rotated token is used without a restart. Credentials the
//! platform refused are not offered to it again while their Secret still holds them (for up to
//! [`REFUSED_FOR`]): a revoked token costs no platform request until someone fixes the Secret.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

/// The Secret key holding the account's e-mail address.
pub const EMAIL_KEY: &str = "email";
/// The Secret key holding the API token.
pub const TOKEN_KEY: &str = "apiToken";

/// An account's e-mail and API token. `Debug` never shows the token.
#[derive(Clone)]
pub struct Credentials {
    pub email: String,
    api_token: String,
    /// Where they came from (`namespace/name`), for messages.
    pub source: String,
    /// Lent to an object in another namespace (the operator's default Secret, by grant): messages
    /// that object sees do not show the account's e-mail or the Secret.
    lent: bool,
}

/// Two credentials are the same when their account, token and Secret are, however lent.
impl PartialEq for Credentials {
    fn eq(&self, other: &Self) -> bool {
        (&self.email, &self.api_token, &self.source) == (&other.email, &other.api_token, &other.source)
    }
}

impl Eq for Credentials {}

impl Credentials {
    pub fn new(email: impl Into<String>, api_token: impl Into<String>, source: impl Into<String>) -> Self {
        Credentials { email: email.into(), api_token: api_token.into(), source: source.into(), lent: false }
    }

    /// The same credentials, lent to an object in another namespace (see [`Credentials::who`]).
    pub fn lent(mut self) -> Self {
        self.lent = true;
        self
    }

    /// Who these credentials are, as messages and status may say it: the e-mail and the Secret
    /// for an object's own Secret; for the operator's shared account lent by grant, only that.
    pub fn who(&self) -> String {
        if self.lent {
            "the operator's shared account (granted to this namespace)".to_string()
        } else {
            format!("{} ({})", self.email, self.source)
        }
    }

    /// The token, only for building the `Authorization` header.
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// `Basic base64(email:token)`.
    pub fn authorization(&self) -> String {
        use base64::Engine as _;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", self.email, self.api_token))
        )
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("email", &self.email).field("source", &self.source).finish_non_exhaustive()
    }
}

/// Which namespaces besides the operator's own may use the operator's default credentials Secret:
/// those named, and those whose Namespace labels match the selector. Set by the cluster admin on
/// the operator (`--default-credentials-namespaces`, `--default-credentials-namespace-selector`),
/// in the manner of Flux's `--no-cross-namespace-refs` and cert-manager's ClusterIssuer; nothing
/// a namespace user writes can widen it. Empty: no other namespace.
#[derive(Clone, Debug, Default)]
pub struct Grant {
    namespaces: Vec<String>,
    selector: Option<(String, kube::core::Selector)>,
}

impl Grant {
    /// A grant to `namespaces` and to the namespaces `selector` matches (`key=value`, `key!=value`,
    /// `key` (exists) and `!key`, comma separated, as `kubectl -l` reads them without sets).
    pub fn new(namespaces: Vec<String>, selector: Option<&str>) -> Result<Grant, String> {
        let namespaces = namespaces.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        let selector = match selector.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some((text.to_string(), parse_selector(text)?)),
        };
        Ok(Grant { namespaces, selector })
    }

    /// Whether the grant names `namespace`, or needs its labels to tell.
    fn names(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }

    /// How a cluster admin grants `namespace`, for messages.
    pub fn how(&self, namespace: &str) -> String {
        match &self.selector {
            Some((text, _)) if !text.contains(',') && !text.contains('!') && text.contains('=') => {
                format!("`kubectl label namespace {namespace} {}`", text.replace("==", "="))
            }
            _ => "the operator's --default-credentials-namespaces or --default-credentials-namespace-selector".into(),
        }
    }

    /// Whether a namespace with these labels is granted by the selector.
    fn selects(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        use kube::core::SelectorExt as _;
        self.selector.as_ref().is_some_and(|(_, s)| s.matches(labels))
    }
}

/// A label selector from its text. kube-core matches selectors but parses none from text, and
/// the grammar needed here (no set expressions) is four forms, so it is parsed here.
fn parse_selector(text: &str) -> Result<kube::core::Selector, String> {
    use kube::core::Expression;
    let valid =
        |k: &str| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    let mut expressions = Vec::new();
    for part in text.split(',').map(str::trim) {
        let expression = if let Some((k, v)) = part.split_once("!=") {
            Expression::NotEqual(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if let Some(k) = part.strip_prefix('!') {
            Expression::DoesNotExist(k.trim().into())
        } else {
            Expression::Exists(part.into())
        };
        let key = match &expression {
            Expression::NotEqual(k, _)
            | Expression::Equal(k, _)
            | Expression::DoesNotExist(k)
            | Expression::Exists(k) => k,
            Expression::In(k, _) | Expression::NotIn(k, _) => k,
        };
        if !valid(key) {
            return Err(format!(
                "the namespace selector {text:?} is not one forgeops reads: use comma-separated `key=value`,                  `key!=value`, `key` or `!key`"
            ));
        }
        expressions.push(expression);
    }
    Ok(expressions.into_iter().collect())
}

/// Why no credentials could be had. Messages name the Secret and the fix, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no platform credentials: Secret {0} does not exist; create it with keys `{EMAIL_KEY}` and `{TOKEN_KEY}` \
         (an Atlassian API token), or set spec.credentialsSecretRef"
    )]
    Missing(String),
    #[error("Secret {secret} has no usable `{key}` key: set it (with `{EMAIL_KEY}` and `{TOKEN_KEY}`)")]
    MissingKey { secret: String, key: &'static str },
    #[error("reading Secret {secret}: {message}")]
    Unreadable { secret: String, message: String },
    #[error(
        "the operator may not read Secrets in namespace {namespace}: a cluster admin grants it with `kubectl \
         create rolebinding forgeops-operator-credentials -n {namespace} \
         --clusterrole=forgeops-operator-credentials --serviceaccount=<operator namespace>:forgeops-operator` \
         (or installs the cluster-wide Secret read, deploy/components/cluster-wide-secrets)"
    )]
    NotPermitted { namespace: String },
    #[error(
        "namespace {namespace} may not use the operator's shared credentials: create a Secret in {namespace} with \
         keys `{EMAIL_KEY}` and `{TOKEN_KEY}` and set spec.credentialsSecretRef to it, or ask a cluster admin to \
         grant this namespace ({how})"
    )]
    NotGranted { namespace: String, how: String },
    #[error(
        "the platform refused the credentials of {who}: put a valid `{EMAIL_KEY}` and `{TOKEN_KEY}` in \
         the Secret (the same ones are not sent to the platform again for {} minutes)",
        REFUSED_FOR.as_secs() / 60
    )]
    Refused { who: String },
}

/// How long credentials the platform refused are held back while their Secret is unchanged (an
/// account may be re-activated; after this they are tried once more).
pub const REFUSED_FOR: Duration = Duration::from_secs(300);

/// How long a Secret that holds refused credentials is served from the cache before it is read
/// again: a fixed Secret is seen at the next attempt, and a thousand objects waiting on one bad
/// Secret read it at most once a second.
pub const REREAD_REFUSED: Duration = Duration::from_secs(1);

/// A Namespace's labels.
type Labels = std::collections::BTreeMap<String, String>;

/// Reads credentials Secrets, caching each for `ttl`.
pub struct CredentialStore {
    client: Client,
    /// The operator namespace, where the default Secret lives.
    operator_namespace: String,
    /// The default Secret's name, for apps that name none.
    default_secret: String,
    /// The namespaces besides the operator's own that may use the default Secret.
    grant: Grant,
    /// Namespace labels, for the grant's selector: read at most once per `ttl`.
    namespace_labels: Mutex<HashMap<String, (Instant, Labels)>>,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Instant, Credentials)>>,
    /// Credentials the platform refused, and when.
    refused: Mutex<Vec<(Credentials, Instant)>>,
}

impl CredentialStore {
    pub fn new(client: Client, operator_namespace: String, default_secret: String, ttl: Duration) -> Self {
        Self::granting(client, operator_namespace, default_secret, Grant::default(), ttl)
    }

    /// A store whose default Secret may also be used from the namespaces `grant` names.
    pub fn granting(
        client: Client,
        operator_namespace: String,
        default_secret: String,
        grant: Grant,
        ttl: Duration,
    ) -> Self {
        CredentialStore {
            client,
            operator_namespace,
            default_secret,
            grant,
            namespace_labels: Mutex::new(HashMap::new()),
            ttl,
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The credentials of an app in `namespace` that names `secret` (or none: the default Secret,
    /// if `namespace` is the operator's or is granted it).
    pub async fn get(&self, namespace: &str, secret: Option<&str>) -> Result<Credentials, CredentialsError> {
        let lent = secret.is_none() && namespace != self.operator_namespace;
        if lent && !self.granted(namespace).await? {
            let how = self.grant.how(namespace);
            return Err(CredentialsError::NotGranted { namespace: namespace.to_string(), how });
        }
        let key = match secret {
            Some(name) => (namespace.to_string(), name.to_string()),
            None => (self.operator_namespace.clone(), self.default_secret.clone()),
        };
        let cached = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&key).cloned().filter(
            |(at, creds)| {
                // Refused credentials are read again sooner: the user may have just fixed the Secret.
                let keep = if self.is_refused(creds, Instant::now()) { REREAD_REFUSED } else { self.ttl };
                at.elapsed() < keep
            },
        );
        let creds = match cached {
            Some((_, creds)) => creds,
            None => {
                let creds = self.read(&key.0, &key.1).await?;
                self.cache
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(key, (Instant::now(), creds.clone()));
                creds
            }
        };
        let creds = if lent { creds.lent() } else { creds };
        self.not_refused(creds, Instant::now())
    }

    /// Whether `namespace` may use the default Secret: named by the grant, or its labels match the
    /// grant's selector (read from the Namespace; a grant is then kept for `ttl`).
    async fn granted(&self, namespace: &str) -> Result<bool, CredentialsError> {
        if self.grant.names(namespace) {
            return Ok(true);
        }
        if self.grant.selector.is_none() {
            return Ok(false);
        }
        let cached = self
            .namespace_labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(namespace)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, labels)| labels.clone());
        let labels = match cached {
            Some(labels) => labels,
            None => {
                let api = Api::<k8s_openapi::api::core::v1::Namespace>::all(self.client.clone());
                let labels = api
                    .get_opt(namespace)
                    .await
                    .map_err(|e| CredentialsError::Unreadable {
                        secret: format!("(the labels of namespace {namespace})"),
                        message: e.to_string(),
                    })?
                    .and_then(|n| n.metadata.labels)
                    .unwrap_or_default();
                // Only a grant is kept: a label just added is seen at the next look.
                if self.grant.selects(&labels) {
                    self.namespace_labels
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(namespace.to_string(), (Instant::now(), labels.clone()));
                }
                labels
            }
        };
        Ok(self.grant.selects(&labels))
    }

    /// `creds`, unless the platform refused them less than [`REFUSED_FOR`] before `now`.
    fn not_refused(&self, creds: Credentials, now: Instant) -> Result<Credentials, CredentialsError> {
        if self.is_refused(&creds, now) {
            return Err(CredentialsError::Refused { who: creds.who() });
        }
        Ok(creds)
    }

    fn is_refused(&self, creds: &Credentials, now: Instant) -> bool {
        let mut refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        refused.retain(|(_, at)| now.saturating_duration_since(*at) < REFUSED_FOR);
        refused.iter().any(|(c, _)| c == creds)
    }

    /// Notes credentials that the platform refused: they are not handed out again while their
    /// Secret holds them, and the next call re-reads the Secret (it may hold new ones already).
    pub fn invalidate(&self, creds: &Credentials) {
        self.invalidate_at(creds, Instant::now());
    }

    fn invalidate_at(&self, creds: &Credentials, now: Instant) {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|_, (_, c)| c != creds);
        let mut refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !refused.iter().any(|(c, _)| c == creds) {
            refused.push((creds.clone(), now));
        }
    }

    async fn read(&self, namespace: &str, name: &str) -> Result<Credentials, CredentialsError> {
        let source = format!("{namespace}/{name}");
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => CredentialsError::NotPermitted { namespace: namespace.into() },
                e => CredentialsError::Unreadable { secret: source.clone(), message: e.to_string() },
            })?
            .ok_or_else(|| CredentialsError::Missing(source.clone()))?;
        from_secret(&secret, &source)
    }
}

/// The credentials held by a Secret (`data` or `stringData`).
pub fn from_secret(secret: &Secret, source: &str) -> Result<Credentials, CredentialsError> {
    let field = |key: &'static str| {
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
            .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.trim().to_string()))
            .filter(|v| !v.is_empty());
        value.ok_or(CredentialsError::MissingKey { secret: source.to_string(), key })
    };
    Ok(Credentials::new(field(EMAIL_KEY)?, field(TOKEN_KEY)?, source))
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
