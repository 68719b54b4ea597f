//! Installation links: signed with an HMAC key that only the operator holds, so a link can be
//! verified and cannot be forged, and carrying the revision it was issued for, so a rotated link
//! is recognised as revoked rather than merely invalid.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use crate::api::Product;

const PREFIX: &str = "https://forgeops.dev/install/";

/// What a link admits installations of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSubject {
    pub namespace: String,
    pub app: String,
    pub environment: String,
    pub products: Vec<Product>,
    pub revision: i64,
}

impl LinkSubject {
    fn products_param(&self) -> String {
        let mut products = self.products.clone();
        products.sort();
        products.dedup();
        products.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
    }

    fn signed_payload(&self) -> String {
        format!("{}/{}/{}/{}/{}", self.namespace, self.app, self.environment, self.products_param(), self.revision)
    }
}

/// The link for `subject`, signed with `key`.
pub fn make_link(key: &[u8], subject: &LinkSubject) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), subject.signed_payload().as_bytes());
    format!(
        "{PREFIX}{}/{}/{}?products={}&revision={}&signature={}",
        subject.namespace,
        subject.app,
        subject.environment,
        subject.products_param(),
        subject.revision,
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// How a link compares with the current one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkCheck {
    /// The current link.
    Current,
    /// A genuine link, but of an earlier revision (or products since changed).
    Revoked { revision: i64 },
    /// Not a link the operator issued for this app environment.
    Invalid(String),
}

fn parse(link: &str) -> Option<(LinkSubject, Vec<u8>)> {
    let rest = link.strip_prefix(PREFIX)?;
    let (path, query) = rest.split_once('?')?;
    let mut parts = path.split('/');
    let (namespace, app, environment) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (mut products, mut revision, mut signature) = (None, None, None);
    for pair in query.split('&') {
        match pair.split_once('=')? {
            ("products", v) => {
                products = Some(
                    v.split(',')
                        .map(|p| serde_json::from_value::<Product>(serde_json::Value::String(p.into())).ok())
                        .collect::<Option<Vec<_>>>()?,
                )
            }
            ("revision", v) => revision = v.parse::<i64>().ok(),
            ("signature", v) => signature = URL_SAFE_NO_PAD.decode(v).ok(),
            _ => return None,
        }
    }
    let subject = LinkSubject {
        namespace: namespace.into(),
        app: app.into(),
        environment: environment.into(),
        products: products?,
        revision: revision?,
    };
    Some((subject, signature?))
}

/// Checks `link` against the current link subject.
pub fn check_link(key: &[u8], link: &str, current: &LinkSubject) -> LinkCheck {
    let Some((claimed, signature)) = parse(link) else {
        return LinkCheck::Invalid("the link is not a forgeops installation link".into());
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    if hmac::verify(&key, claimed.signed_payload().as_bytes(), &signature).is_err() {
        return LinkCheck::Invalid("the link's signature does not verify".into());
    }
    if (&claimed.namespace, &claimed.app, &claimed.environment)
        != (&current.namespace, &current.app, &current.environment)
    {
        return LinkCheck::Invalid(format!(
            "the link is for {}/{} environment {}",
            claimed.namespace, claimed.app, claimed.environment
        ));
    }
    if claimed.revision == current.revision && claimed.products_param() == current.products_param() {
        LinkCheck::Current
    } else if claimed.revision <= current.revision {
        LinkCheck::Revoked { revision: claimed.revision }
    } else {
        LinkCheck::Invalid(format!("the link claims revision {}, newer than the current one", claimed.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(revision: i64) -> LinkSubject {
        LinkSubject {
            namespace: "team".into(),
            app: "insights".into(),
            environment: "production".into(),
            products: vec![Product::Jira, Product::Confluence],
            revision,
        }
    }

    #[test]
    fn a_link_verifies_against_its_own_subject() {
        let link = make_link(b"key", &subject(1));
        assert!(link.starts_with(
            "https://forgeops.dev/install/team/insights/production?products=jira,confluence&revision=1&signature="
        ));
        assert_eq!(check_link(b"key", &link, &subject(1)), LinkCheck::Current);
        assert_eq!(make_link(b"key", &subject(1)), link, "links are stable");
    }

    #[test]
    fn a_rotated_link_is_revoked_not_invalid() {
        let old = make_link(b"key", &subject(1));
        assert_eq!(check_link(b"key", &old, &subject(2)), LinkCheck::Revoked { revision: 1 });
        let mut other_products = subject(1);
        other_products.products = vec![Product::Jira];
        assert_eq!(check_link(b"key", &old, &other_products), LinkCheck::Revoked { revision: 1 });
    }

    #[test]
    fn forged_or_foreign_links_are_invalid() {
        let link = make_link(b"key", &subject(1));
        assert!(matches!(check_link(b"other key", &link, &subject(1)), LinkCheck::Invalid(_)));
        let tampered = link.replace("revision=1", "revision=2");
        assert!(matches!(check_link(b"key", &tampered, &subject(2)), LinkCheck::Invalid(_)));
        let mut other_app = subject(1);
        other_app.app = "other".into();
        assert!(matches!(check_link(b"key", &link, &other_app), LinkCheck::Invalid(m) if m.contains("team/insights")));
        assert!(matches!(check_link(b"key", "https://example.com/x", &subject(1)), LinkCheck::Invalid(_)));
        assert!(matches!(check_link(b"key", "", &subject(1)), LinkCheck::Invalid(_)));
        let future = make_link(b"key", &subject(5));
        assert!(matches!(check_link(b"key", &future, &subject(2)), LinkCheck::Invalid(_)));
    }
}
