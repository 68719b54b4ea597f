//! The platform's list of an app's installations (`forge_cli_getEcosystemInstallationsByApp`, 100
//! a page), kept per app. What the platform did on its own (a minor rolled out, a bulk-upgrade
//! rollout) reaches the Installations from here: each Installation whose entry changed is
//! reconciled again, with no request of its own.

use std::collections::BTreeSet;

use kube::ResourceExt;

use super::{Context, PlatformInstallation, PlatformListing};
use crate::api::ForgeApp;
use crate::platform::{Credentials, InstallationFilter, PlatformError, environment_key, environment_type};

/// Lists the installations of `app` in the environments it manages (asking the platform for their
/// environment types only, so installations in other environments cost no page), stores the
/// listing, and triggers the Installations in the app's namespace whose (environment, site) entry
/// changed. Answers how many changed.
pub async fn refresh(ctx: &Context, app: &ForgeApp, creds: &Credentials) -> Result<usize, PlatformError> {
    let app_id = app.spec.app_id.as_str();
    let managed: BTreeSet<&str> = app.spec.environments.iter().map(|e| environment_key(e)).collect();
    let types: BTreeSet<&str> = managed.iter().map(|k| environment_type(k)).collect();
    let filter =
        InstallationFilter { environment_types: types.into_iter().map(str::to_string).collect(), ..Default::default() };
    let mut listed = PlatformListing::default();
    let mut after: Option<String> = None;
    loop {
        let page = ctx.platform.installations(creds, app_id, &filter, after.as_deref()).await?;
        for i in page.items {
            if !managed.contains(i.environment_key.as_str()) {
                continue;
            }
            if let Some(site) = i.site {
                let entry = PlatformInstallation {
                    id: i.id.into(),
                    version: i.version.map(Into::into),
                    product: i.product.unwrap_or_default().into(),
                    compute_version: i.compute_version.map(Into::into),
                };
                listed.add(&i.environment_key, &site, entry);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let changed = ctx.set_platform_installations(app_id, listed);
    let count = changed.len();
    if count > 0 {
        let namespace = app.namespace().unwrap_or_default();
        let changed: std::collections::HashSet<(String, String)> = changed.into_iter().collect();
        for inst in ctx.caches.installations_of_app(&namespace, &app.name_any()) {
            let key = crate::platform::environment_key(&inst.spec.environment).to_string();
            if changed.contains(&(key, inst.spec.site.clone())) {
                ctx.trigger_installation(&inst);
            }
        }
    }
    Ok(count)
}
