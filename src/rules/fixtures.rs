//! Test fixtures that read like sentences: each kind has a `test` constructor with defaults and
//! one method per fact, for example `AppVersion::test(2, 0).scopes(["read:jira-work"]).licensed()`
//! or `DistributionPolicy::test("p").enabled().products([Product::Jira]).revision(2)`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    AppRef, AppVersion, Compatibility, DistributionPolicy, DistributionPolicySpec, EgressPermission, EnvironmentStatus,
    ForgeApp, ForgeAppSpec, ForgeAppStatus, Installation, InstallationSpec, InstallationStatus, Product, Sharing,
};

fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    items.into_iter().map(str::to_string).collect()
}

fn at(second: i64) -> Time {
    Time(jiff::Timestamp::from_second(second).unwrap())
}

impl AppVersion {
    /// Version `major.minor` (`major.minor.0` on the platform, id `v-major-minor`), requiring
    /// Jira, asking for no scope or egress, without the SQL module or licensing.
    pub fn test(major: u32, minor: u32) -> AppVersion {
        AppVersion {
            major,
            minor,
            scopes: vec![],
            egress: vec![],
            egress_permissions: vec![],
            remotes: vec![],
            security_policies: vec![],
            sql_module: false,
            licensing: false,
            compatibility: Compatibility {
                required_products: vec![Product::Jira],
                optional: vec![Product::Confluence, Product::Compass],
            },
            version: Some(format!("{major}.{minor}.0")),
            id: Some(format!("v-{major}-{minor}")),
            created_at: None,
            latest: false,
            installations: None,
        }
    }

    /// It asks for these scopes.
    pub fn scopes<'a>(mut self, scopes: impl IntoIterator<Item = &'a str>) -> Self {
        self.scopes = strings(scopes);
        self
    }

    /// It may reach these egress domains.
    pub fn egress<'a>(mut self, domains: impl IntoIterator<Item = &'a str>) -> Self {
        self.egress = strings(domains);
        self
    }

    /// Its egress to `address` has `category` (for example `ANALYTICS`).
    pub fn egress_category(mut self, address: &str, category: &str) -> Self {
        self.egress_permission(address).category = Some(category.to_string());
        self
    }

    /// Its egress to `address` is in scope of end-user data.
    pub fn egress_in_scope_of_end_user_data(mut self, address: &str) -> Self {
        self.egress_permission(address).in_scope_eud = true;
        self
    }

    fn egress_permission(&mut self, address: &str) -> &mut EgressPermission {
        let at = match self.egress_permissions.iter().position(|e| e.address == address) {
            Some(at) => at,
            None => {
                self.egress_permissions.push(EgressPermission { address: address.to_string(), ..Default::default() });
                self.egress_permissions.len() - 1
            }
        };
        &mut self.egress_permissions[at]
    }

    /// It calls these remotes (`key baseUrl`).
    pub fn remotes<'a>(mut self, remotes: impl IntoIterator<Item = &'a str>) -> Self {
        self.remotes = strings(remotes);
        self
    }

    /// It declares these content security policies (`type policy`).
    pub fn security_policies<'a>(mut self, policies: impl IntoIterator<Item = &'a str>) -> Self {
        self.security_policies = strings(policies);
        self
    }

    /// It uses the SQL module.
    pub fn sql(mut self) -> Self {
        self.sql_module = true;
        self
    }

    /// It enables licensing (a paid app).
    pub fn licensed(mut self) -> Self {
        self.licensing = true;
        self
    }

    /// It requires `product` (instead of Jira).
    pub fn requires(self, product: Product) -> Self {
        self.requires_all([product])
    }

    /// A cross-product app that requires every one of `products` (and may go into the other
    /// cross-product products).
    pub fn requires_all(mut self, products: impl IntoIterator<Item = Product>) -> Self {
        let required: Vec<Product> = products.into_iter().collect();
        self.compatibility.optional =
            crate::rules::forge_app::CROSS_PRODUCT.into_iter().filter(|p| !required.contains(p)).collect();
        self.compatibility.required_products = required;
        self
    }

    /// A single-app app whose modules extend `product`.
    pub fn single_app(mut self, product: Product) -> Self {
        self.compatibility = Compatibility { required_products: vec![], optional: vec![product] };
        self
    }

    /// It may also be installed into these products.
    pub fn optional(mut self, products: impl IntoIterator<Item = Product>) -> Self {
        self.compatibility.optional = products.into_iter().collect();
        self
    }
}

impl ForgeApp {
    /// ForgeApp `name` (app `ari:cloud:ecosystem::app/<name>`) managing the production
    /// environment, not read from the platform yet.
    pub fn test(name: &str) -> ForgeApp {
        ForgeApp::new(
            name,
            ForgeAppSpec {
                credentials_secret_ref: None,
                app_id: format!("ari:cloud:ecosystem::app/{name}"),
                environments: vec!["production".into()],
                refresh_interval: None,
            },
        )
    }

    /// It manages these environments.
    pub fn environments<'a>(mut self, environments: impl IntoIterator<Item = &'a str>) -> Self {
        self.spec.environments = strings(environments);
        self
    }

    /// Read from the platform as this developer account (its credentials act as it).
    pub fn read_as(mut self, account: &str) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.account = Some(crate::api::AccountStatus { account_id: account.into(), name: account.into() });
        self
    }

    /// Its spec is at this generation.
    pub fn generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    /// Read from the platform: its production environment has `versions` deployed.
    pub fn deploys(mut self, versions: impl IntoIterator<Item = AppVersion>) -> Self {
        let account = self.status.as_ref().and_then(|s| s.account.clone());
        self.status = Some(ForgeAppStatus {
            account,
            environments: vec![EnvironmentStatus {
                name: "production".into(),
                latest_version: None,
                majors: vec![],
                versions: versions.into_iter().collect(),
                installed_versions: vec![],
            }],
            ..Default::default()
        });
        self
    }
}

impl DistributionPolicy {
    /// DistributionPolicy `name` in namespace `team` for app `insights` in production, sharing
    /// disabled, for no product, link revision 1.
    pub fn test(name: &str) -> DistributionPolicy {
        let mut p = DistributionPolicy::new(
            name,
            DistributionPolicySpec {
                app_ref: AppRef { name: "insights".into() },
                sharing: Sharing::Disabled,
                products: vec![],
                link_revision: 1,
                on_drift: Default::default(),
                refresh_interval: None,
                deletion_policy: Default::default(),
                app_details: None,
            },
        );
        p.metadata.namespace = Some("team".into());
        p
    }

    /// It shares the app.
    pub fn enabled(mut self) -> Self {
        self.spec.sharing = Sharing::Enabled;
        self
    }

    /// Its link installs into these products.
    pub fn products(mut self, products: impl IntoIterator<Item = Product>) -> Self {
        self.spec.products = products.into_iter().collect();
        self
    }

    /// It asks for link revision `revision`.
    pub fn revision(mut self, revision: i64) -> Self {
        self.spec.link_revision = revision;
        self
    }

    /// It only reports changes made outside the cluster (`onDrift: Report`).
    pub fn reporting_drift(mut self) -> Self {
        self.spec.on_drift = crate::api::DriftAction::Report;
        self
    }

    /// Deleting it turns sharing off (`deletionPolicy: StopSharing`).
    pub fn stops_sharing_when_deleted(mut self) -> Self {
        self.spec.deletion_policy = crate::api::PolicyDeletion::StopSharing;
        self
    }

    /// Its spec is at this generation.
    pub fn generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    /// It was created at this second.
    pub fn created_at(mut self, second: i64) -> Self {
        self.metadata.creation_timestamp = Some(at(second));
        self
    }
}

impl Installation {
    /// Installation `name` of app `insights` in production on site `<name>.atlassian.net`, into
    /// Jira, neither pinned nor approved, with no status.
    pub fn test(name: &str) -> Installation {
        Installation::new(
            name,
            InstallationSpec {
                app_ref: AppRef { name: "insights".into() },
                environment: "production".into(),
                site: format!("{name}.atlassian.net"),
                products: vec![Product::Jira],
                deletion_policy: None,
                major_version: None,
                approved_major: None,
            },
        )
    }

    /// It installs into these products.
    pub fn products(mut self, products: impl IntoIterator<Item = Product>) -> Self {
        self.spec.products = products.into_iter().collect();
        self
    }

    /// Its spec pins this major (`spec.majorVersion`).
    pub fn pinned_to(mut self, major: u32) -> Self {
        self.spec.major_version = Some(major);
        self
    }

    /// The site admin approved this major (`spec.approvedMajor`).
    pub fn approved(mut self, major: u32) -> Self {
        self.spec.approved_major = Some(major);
        self
    }

    /// Its status says a version of this major is installed.
    pub fn installed_major(mut self, major: u32) -> Self {
        self.status = Some(InstallationStatus { installed_major: Some(major), ..Default::default() });
        self
    }
}

impl crate::api::BulkUpgrade {
    /// BulkUpgrade `name` of app `insights` in production from major 1 to major 2, in one step,
    /// with no status.
    pub fn test(name: &str) -> crate::api::BulkUpgrade {
        crate::api::BulkUpgrade::new(
            name,
            crate::api::BulkUpgradeSpec {
                app_ref: AppRef { name: "insights".into() },
                environment: "production".into(),
                from_major: 1,
                to_major: 2,
                steps: vec![],
                max_failures: None,
                max_failure_percent: None,
                limit: None,
                paused: false,
                cancelled: false,
                analysis: None,
                notifications: None,
                windows: vec![],
                ttl_seconds_after_finished: None,
            },
        )
    }

    /// It runs in this many steps (each with no limit of its own).
    pub fn in_steps(mut self, steps: usize) -> Self {
        self.spec.steps = vec![crate::api::UpgradeStep::default(); steps];
        self
    }

    /// It is in `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.into());
        self
    }
}
