//! Platform credentials: an Atlassian account e-mail and API token, read from a Kubernetes Secret
//! (keys `email` and `apiToken`) that each ForgeApp names, or from the operator-wide default
//! Secret in the operator's namespace. Secrets are re-read after a short time, and at once after
//! the platform refused them, so a rotated token is used without a restart.

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
}

/// Reads credentials Secrets, caching each for `ttl`.
pub struct CredentialStore {
    client: Client,
    /// The operator namespace, where the default Secret lives.
    operator_namespace: String,
    /// The default Secret's name, for apps that name none.
    default_secret: String,
    ttl: Duration,
    cache: Mutex<HashMap<(String, String), (Instant, Credentials)>>,
}

impl CredentialStore {
    pub fn new(client: Client, operator_namespace: String, default_secret: String, ttl: Duration) -> Self {
        CredentialStore { client, operator_namespace, default_secret, ttl, cache: Mutex::new(HashMap::new()) }
    }

    /// The credentials of an app in `namespace` that names `secret` (or none: the default Secret).
    pub async fn get(&self, namespace: &str, secret: Option<&str>) -> Result<Credentials, CredentialsError> {
        let key = match secret {
            Some(name) => (namespace.to_string(), name.to_string()),
            None => (self.operator_namespace.clone(), self.default_secret.clone()),
        };
        if let Some((read_at, creds)) = self.cache.lock().unwrap().get(&key)
            && read_at.elapsed() < self.ttl
        {
            return Ok(creds.clone());
        }
        let creds = self.read(&key.0, &key.1).await?;
        self.cache.lock().unwrap().insert(key, (Instant::now(), creds.clone()));
        Ok(creds)
    }

    /// Forgets cached credentials that the platform refused, so the next call re-reads the Secret.
    pub fn invalidate(&self, creds: &Credentials) {
        self.cache.lock().unwrap().retain(|_, (_, c)| c != creds);
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
