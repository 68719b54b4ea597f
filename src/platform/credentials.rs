//! Platform credentials: an Atlassian account e-mail and API token, read from a Kubernetes Secret
//! (keys `email` and `apiToken`) that each ForgeApp names, or from the operator-wide default
//! Secret in the operator's namespace. Secrets are re-read after a short time, and at once after
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
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub email: String,
    api_token: String,
    /// Where they came from (`namespace/name`), for messages.
    pub source: String,
}

impl Credentials {
    pub fn new(email: impl Into<String>, api_token: impl Into<String>, source: impl Into<String>) -> Self {
        Credentials { email: email.into(), api_token: api_token.into(), source: source.into() }
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
        "the platform refused the credentials of {email} ({secret}): put a valid `{EMAIL_KEY}` and `{TOKEN_KEY}` in \
         the Secret (the same ones are not sent to the platform again for {} minutes)",
        REFUSED_FOR.as_secs() / 60
    )]
    Refused { email: String, secret: String },
}

/// How long credentials the platform refused are held back while their Secret is unchanged (an
/// account may be re-activated; after this they are tried once more).
pub const REFUSED_FOR: Duration = Duration::from_secs(300);

/// How long a Secret that holds refused credentials is served from the cache before it is read
/// again: a fixed Secret is seen at the next attempt, and a thousand objects waiting on one bad
/// Secret read it at most once a second.
pub const REREAD_REFUSED: Duration = Duration::from_secs(1);

/// Reads credentials Secrets, caching each for `ttl`.
pub struct CredentialStore {
    client: Client,
    /// The operator namespace, where the default Secret lives.
    operator_namespace: String,
    /// The default Secret's name, for apps that name none.
    default_secret: String,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Instant, Credentials)>>,
    /// Credentials the platform refused, and when.
    refused: Mutex<Vec<(Credentials, Instant)>>,
}

impl CredentialStore {
    pub fn new(client: Client, operator_namespace: String, default_secret: String, ttl: Duration) -> Self {
        CredentialStore {
            client,
            operator_namespace,
            default_secret,
            ttl,
            cache: Mutex::new(HashMap::new()),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The credentials of an app in `namespace` that names `secret` (or none: the default Secret).
    pub async fn get(&self, namespace: &str, secret: Option<&str>) -> Result<Credentials, CredentialsError> {
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
        self.not_refused(creds, Instant::now())
    }

    /// `creds`, unless the platform refused them less than [`REFUSED_FOR`] before `now`.
    fn not_refused(&self, creds: Credentials, now: Instant) -> Result<Credentials, CredentialsError> {
        if self.is_refused(&creds, now) {
            return Err(CredentialsError::Refused { email: creds.email, secret: creds.source });
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
            .map_err(|e| CredentialsError::Unreadable { secret: source.clone(), message: e.to_string() })?
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
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn debug_never_shows_the_token() {
        let c = Credentials::new("dev@acme.example", "s3cr3t-token", "ns/creds");
        let shown = format!("{c:?}");
        assert!(shown.contains("dev@acme.example") && !shown.contains("s3cr3t"), "{shown}");
        assert_eq!(c.authorization(), "Basic ZGV2QGFjbWUuZXhhbXBsZTpzM2NyM3QtdG9rZW4=");
    }

    #[tokio::test]
    async fn refused_credentials_are_held_back_until_the_secret_changes_or_a_while_passes() {
        // No API server is reached: the client points nowhere and every check below is answered
        // from the store's own memory.
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let store = CredentialStore::new(
            Client::try_from(config).unwrap(),
            "ops".into(),
            "creds".into(),
            Duration::from_secs(15),
        );
        let (t0, old) = (Instant::now(), Credentials::new("a@b.example", "revoked", "ops/creds"));
        store.invalidate_at(&old, t0);
        let held = store.not_refused(old.clone(), t0 + Duration::from_secs(60)).unwrap_err();
        assert!(matches!(&held, CredentialsError::Refused { secret, .. } if secret == "ops/creds"));
        let message = held.to_string();
        assert!(
            message.contains("apiToken") && message.contains("5 minutes") && !message.contains("revoked"),
            "{message}"
        );
        let rotated = Credentials::new("a@b.example", "new-token", "ops/creds");
        assert_eq!(store.not_refused(rotated.clone(), t0 + Duration::from_secs(60)), Ok(rotated));
        assert_eq!(store.not_refused(old.clone(), t0 + REFUSED_FOR), Ok(old), "tried once more after a while");
    }

    #[test]
    fn secrets_must_hold_both_keys() {
        let mut s = Secret {
            data: Some([(EMAIL_KEY.to_string(), ByteString(b"a@b.example\n".to_vec()))].into()),
            ..Default::default()
        };
        assert_eq!(
            from_secret(&s, "ns/x"),
            Err(CredentialsError::MissingKey { secret: "ns/x".into(), key: TOKEN_KEY })
        );
        s.data.as_mut().unwrap().insert(TOKEN_KEY.into(), ByteString(b"tok".to_vec()));
        let c = from_secret(&s, "ns/x").unwrap();
        assert_eq!((c.email.as_str(), c.api_token()), ("a@b.example", "tok"));
        let message = CredentialsError::MissingKey { secret: "ns/x".into(), key: TOKEN_KEY }.to_string();
        assert!(message.contains("apiToken"), "{message}");
    }
}
