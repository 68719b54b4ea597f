//! Tests of `credentials.rs` (test code only: its `unwrap`s and panics are assertions).

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
    let store =
        CredentialStore::new(Client::try_from(config).unwrap(), "ops".into(), "creds".into(), Duration::from_secs(15));
    let (t0, old) = (Instant::now(), Credentials::new("a@b.example", "revoked", "ops/creds"));
    store.invalidate_at(&old, t0);
    let held = store.not_refused(old.clone(), t0 + Duration::from_secs(60)).unwrap_err();
    assert!(matches!(&held, CredentialsError::Refused { who } if who.contains("ops/creds")));
    let message = held.to_string();
    assert!(message.contains("apiToken") && message.contains("5 minutes") && !message.contains("revoked"), "{message}");
    let rotated = Credentials::new("a@b.example", "new-token", "ops/creds");
    assert_eq!(store.not_refused(rotated.clone(), t0 + Duration::from_secs(60)), Ok(rotated));
    assert_eq!(store.not_refused(old.clone(), t0 + REFUSED_FOR), Ok(old), "tried once more after a while");
}

#[test]
fn the_shared_account_is_never_shown_to_the_namespaces_it_is_lent_to() {
    let own = Credentials::new("team@acme.example", "t", "apps/creds");
    assert_eq!(own.who(), "team@acme.example (apps/creds)");
    let lent = Credentials::new("platform@acme.example", "t", "forgeops-system/forgeops-credentials").lent();
    assert!(!lent.who().contains("platform@") && !lent.who().contains("forgeops-credentials"), "{}", lent.who());
    assert_eq!(lent, lent.clone().lent(), "lending does not make other credentials");
    let refused = CredentialsError::Refused { who: lent.who() }.to_string();
    assert!(!refused.contains("platform@"), "{refused}");
    let how = Grant::new(vec![], Some("forgeops.dev/default-credentials=granted")).unwrap().how("team-b");
    assert_eq!(how, "`kubectl label namespace team-b forgeops.dev/default-credentials=granted`");
    let not_granted = CredentialsError::NotGranted { namespace: "team-b".into(), how }.to_string();
    assert!(
        not_granted.contains("spec.credentialsSecretRef") && not_granted.contains("kubectl label"),
        "{not_granted}"
    );
}

#[test]
fn a_grant_names_namespaces_or_selects_them_by_label() {
    let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let grant = Grant::new(vec![" apps ".into(), "".into()], Some("forgeops.dev/credentials=shared, !frozen")).unwrap();
    assert!(grant.names("apps") && !grant.names("other"));
    assert!(grant.selects(&labels(&[("forgeops.dev/credentials", "shared")])));
    assert!(!grant.selects(&labels(&[("forgeops.dev/credentials", "shared"), ("frozen", "")])));
    assert!(!grant.selects(&labels(&[("forgeops.dev/credentials", "own")])));
    assert!(!Grant::default().selects(&labels(&[])), "no selector selects nothing");
    let all = Grant::new(vec![], Some("kubernetes.io/metadata.name")).unwrap();
    assert!(all.selects(&labels(&[("kubernetes.io/metadata.name", "x")])));
    assert!(Grant::new(vec![], Some("team in (a,b)")).is_err());
    assert!(Grant::new(vec![], Some("a=1,b!=2")).is_ok());
}

#[tokio::test]
async fn a_namespace_not_granted_never_reads_the_default_secret() {
    // The client points nowhere: a refusal must come before any request.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let grant = Grant::new(vec!["granted".into()], None).unwrap();
    let store = CredentialStore::granting(
        Client::try_from(config).unwrap(),
        "ops".into(),
        "creds".into(),
        grant,
        Duration::from_secs(15),
    );
    let refused = store.get("team-b", None).await.unwrap_err();
    assert!(matches!(refused, CredentialsError::NotGranted { namespace, .. } if namespace == "team-b"));
    // A granted namespace (and the operator's own) goes on to read the Secret: here it
    // cannot, which shows it tried.
    assert!(matches!(store.get("granted", None).await, Err(CredentialsError::Unreadable { .. })));
    assert!(matches!(store.get("ops", None).await, Err(CredentialsError::Unreadable { .. })));
}

#[test]
fn secrets_must_hold_both_keys() {
    let mut s = Secret {
        data: Some([(EMAIL_KEY.to_string(), ByteString(b"a@b.example\n".to_vec()))].into()),
        ..Default::default()
    };
    assert_eq!(from_secret(&s, "ns/x"), Err(CredentialsError::MissingKey { secret: "ns/x".into(), key: TOKEN_KEY }));
    s.data.as_mut().unwrap().insert(TOKEN_KEY.into(), ByteString(b"tok".to_vec()));
    let c = from_secret(&s, "ns/x").unwrap();
    assert_eq!((c.email.as_str(), c.api_token()), ("a@b.example", "tok"));
    let message = CredentialsError::MissingKey { secret: "ns/x".into(), key: TOKEN_KEY }.to_string();
    assert!(message.contains("apiToken"), "{message}");
}
