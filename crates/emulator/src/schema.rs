//! The GraphQL schema: the part of the Forge gateway's schema (`graphql-types.d.ts` of
//! `@forge/cli-shared`) that the `forge` CLI and forgeops use, with the gateway's type, field and
//! argument names. Fields the emulator does not model answer null or empty lists.
//!
//! Every request carries a [`Caller`] (the authenticated account) in its data; the schema's data
//! holds the [`SharedModel`].

use std::sync::{Arc, Mutex, MutexGuard};

use async_graphql::{
    Context, EmptySubscription, Enum, ErrorExtensions, ID, InputObject, Json, Object, Schema, SimpleObject, Union,
};
use base64::Engine as _;

use super::model::{
    self as m, AccountStatus, DistributionStatus, EgressCategory, EgressType, EnvironmentType, Model, PlatformError,
    RolloutStatus, SecurityPolicyType, TaskState,
};

/// The model shared by the schema and the HTTP server.
pub type SharedModel = Arc<Mutex<Model>>;

/// The emulator's schema.
pub type EmulatorSchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// The authenticated account of a request (its account id).
#[derive(Clone, Debug)]
pub struct Caller(pub String);

/// Builds the schema over a model.
pub fn build_schema(model: SharedModel) -> EmulatorSchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription).data(model).finish()
}

/// The current time, epoch milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn lock<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<MutexGuard<'a, Model>> {
    let model = ctx.data::<SharedModel>()?;
    Ok(model.lock().unwrap_or_else(|e| e.into_inner()))
}

fn caller(ctx: &Context<'_>) -> async_graphql::Result<String> {
    ctx.data_opt::<Caller>()
        .map(|c| c.0.clone())
        .ok_or_else(|| gql_error(PlatformError::new(m::error_type::UNAUTHORIZED, 401, "Unauthorized")))
}

/// A top-level GraphQL error carrying `extensions { errorType statusCode }`.
pub fn gql_error(e: PlatformError) -> async_graphql::Error {
    async_graphql::Error::new(e.message.clone()).extend_with(|_, ext| {
        ext.set("errorType", e.error_type.clone());
        ext.set("statusCode", i32::from(e.status_code));
    })
}

fn ms_to_datetime(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

fn encode_cursor(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("cursor:{index}"))
}

fn decode_cursor(cursor: &str) -> async_graphql::Result<usize> {
    base64::engine::general_purpose::STANDARD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("cursor:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| gql_error(PlatformError::new(m::error_type::BAD_REQUEST, 400, format!("bad cursor {cursor:?}"))))
}

/// Cursor pagination over a list: `first` items after the cursor `after`.
fn paginate<T>(items: Vec<T>, first: Option<i32>, after: Option<&str>) -> async_graphql::Result<(Vec<T>, PageInfo)> {
    let start = match after {
        Some(c) => decode_cursor(c)? + 1,
        None => 0,
    };
    if let Some(f) = first
        && f < 0
    {
        return Err(gql_error(PlatformError::new(m::error_type::BAD_REQUEST, 400, "first must not be negative")));
    }
    let total = items.len();
    let end = match first {
        Some(f) => (start.saturating_add(f as usize)).min(total),
        None => total,
    };
    let page: Vec<T> = items.into_iter().skip(start).take(end.saturating_sub(start)).collect();
    let info = PageInfo {
        has_next_page: end < total,
        has_previous_page: start > 0,
        start_cursor: (!page.is_empty()).then(|| encode_cursor(start)),
        end_cursor: (!page.is_empty()).then(|| encode_cursor(end - 1)),
    };
    Ok((page, info))
}

/// `PageInfo` (also standing for the gateway's `AppInstallationPageInfo`, `AppEnvironmentPageInfo`
/// and `AppVersionRolloutPageInfo`, which have the same fields).
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
    pub has_previous_page: bool,
    pub start_cursor: Option<String>,
}

/// `MutationErrorExtension`.
#[derive(SimpleObject, Clone, Debug)]
pub struct MutationErrorExtension {
    pub error_type: Option<String>,
    pub status_code: Option<i32>,
}

/// `MutationError`.
#[derive(SimpleObject, Clone, Debug)]
pub struct MutationError {
    pub message: Option<String>,
    pub extensions: Option<MutationErrorExtension>,
}

impl From<PlatformError> for MutationError {
    fn from(e: PlatformError) -> Self {
        MutationError {
            message: Some(e.message),
            extensions: Some(MutationErrorExtension {
                error_type: Some(e.error_type),
                status_code: Some(i32::from(e.status_code)),
            }),
        }
    }
}

fn errors_of(r: &Result<impl Sized, PlatformError>) -> Option<Vec<MutationError>> {
    r.as_ref().err().map(|e| vec![e.clone().into()])
}

/// `User` (an Atlassian account).
#[derive(SimpleObject, Clone, Debug)]
pub struct User {
    pub account_id: ID,
    pub canonical_account_id: ID,
    pub id: ID,
    pub account_status: AccountStatus,
    pub name: String,
    pub picture: String,
}

impl From<&m::Account> for User {
    fn from(a: &m::Account) -> Self {
        User {
            account_id: ID(a.account_id.clone()),
            canonical_account_id: ID(a.account_id.clone()),
            id: ID(a.account_id.clone()),
            account_status: a.status,
            name: a.name.clone(),
            picture: String::new(),
        }
    }
}

/// `AuthenticationContext` (`me`).
#[derive(SimpleObject, Clone, Debug)]
pub struct AuthenticationContext {
    pub user: Option<User>,
}

/// `AppFeatureKey`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppFeatureKey {
    HasCustomLifecycle,
    HasExposedCredentials,
    HasResourceRestrictedToken,
    IsPersonalApp,
    SupportsCompute,
    SupportsCustomEnvironments,
}

/// `AppFeature` (none are modelled).
#[derive(SimpleObject, Clone, Debug)]
pub struct AppFeature {
    pub key: AppFeatureKey,
    pub value: bool,
}

/// `EcosystemRequiredProduct`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcosystemRequiredProduct {
    Compass,
    Confluence,
    Jira,
}

impl EcosystemRequiredProduct {
    fn from_product(p: &str) -> Option<Self> {
        match p {
            "jira" => Some(Self::Jira),
            "confluence" => Some(Self::Confluence),
            "compass" => Some(Self::Compass),
            _ => None,
        }
    }
}

/// `AppHostServiceScope`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppHostServiceScope {
    pub key: String,
    pub name: String,
    pub description: String,
    pub restricted: Option<bool>,
}

/// `AppNetworkEgressPermission`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppNetworkEgressPermission {
    pub addresses: Option<Vec<String>>,
    pub category: Option<EgressCategory>,
    #[graphql(name = "inScopeEUD")]
    pub in_scope_eud: Option<bool>,
    #[graphql(name = "type")]
    pub kind: Option<EgressType>,
}

/// `AppSecurityPoliciesPermission`: a version's content security policy options of one type
/// (`AppSecurityPoliciesPermissionType` is [`SecurityPolicyType`]).
#[derive(SimpleObject, Clone, Debug)]
pub struct AppSecurityPoliciesPermission {
    pub policies: Option<Vec<String>>,
    #[graphql(name = "type")]
    pub kind: Option<SecurityPolicyType>,
}

/// `AppPermission`: one permission set of a version.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppPermission {
    pub scopes: Vec<AppHostServiceScope>,
    pub egress: Option<Vec<AppNetworkEgressPermission>>,
    pub security_policies: Option<Vec<AppSecurityPoliciesPermission>>,
    pub supports_configurable_egress: Option<bool>,
}

/// `Classification`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(rename_items = "lowercase")]
pub enum Classification {
    Other,
    Pii,
    Ugc,
}

/// `HostedStorage` (not modelled).
#[derive(SimpleObject, Clone, Debug)]
pub struct HostedStorage {
    pub classifications: Option<Vec<Classification>>,
    pub locations: Option<Vec<String>>,
}

/// `Remote`: a version's remote (classifications and locations are not modelled: null).
#[derive(SimpleObject, Clone, Debug)]
pub struct Remote {
    pub base_url: String,
    pub classifications: Option<Vec<Classification>>,
    pub key: String,
    pub locations: Option<Vec<String>>,
}

/// `Storage`: a version's remotes (null when it has none); hosted storage is not modelled (null).
#[derive(SimpleObject, Clone, Debug)]
pub struct Storage {
    pub hosted: Option<HostedStorage>,
    pub remotes: Option<Vec<Remote>>,
}

/// `MigrationKeys` (not modelled).
#[derive(SimpleObject, Clone, Debug)]
pub struct MigrationKeys {
    pub confluence: String,
    pub jira: String,
}

/// `AppVersionExtension`: one of a version's modules.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppVersionExtension {
    /// `{"type": <extensionTypeKey>}`.
    pub extension_data: Json<serde_json::Value>,
    /// The same for every module of a version.
    pub extension_group_id: ID,
    /// The module's extension type (`confluence:contentBylineItem`, `sql`, ...).
    pub extension_type_key: String,
    /// Not modelled (null).
    pub ic_id: Option<String>,
    /// `ari:cloud:ecosystem::extension/<app uuid>/<environment id>/static/<key>`.
    pub id: ID,
    /// The type with `:` replaced by `-`, then `-<index>` (`confluence-contentBylineItem-0`).
    pub key: String,
}

impl AppVersionExtension {
    /// The nodes of a version's modules: stable keys and ids, derived from the version.
    fn of_version(app_id: &str, environment_id: &str, v: &m::Version) -> Vec<Option<Self>> {
        let app_uuid = app_id.rsplit('/').next().unwrap_or(app_id);
        let group = m::stable_uuid(&format!("{}/extension-group", v.id));
        v.modules
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let key = format!("{}-{i}", t.replace(':', "-"));
                Some(AppVersionExtension {
                    extension_data: Json(serde_json::json!({ "type": t })),
                    extension_group_id: ID(group.clone()),
                    extension_type_key: t.clone(),
                    ic_id: None,
                    id: ID(format!("ari:cloud:ecosystem::extension/{app_uuid}/{environment_id}/static/{key}")),
                    key,
                })
            })
            .collect()
    }
}

/// `AppVersionExtensions` (null for a version without modules).
#[derive(SimpleObject, Clone, Debug)]
pub struct AppVersionExtensions {
    pub nodes: Option<Vec<Option<AppVersionExtension>>>,
}

/// `UpgradeableByRollout`.
#[derive(SimpleObject, Clone, Debug)]
pub struct UpgradeableByRollout {
    pub source_version_id: ID,
    pub upgrade_limit: Option<i32>,
    pub upgradeable_by_rollout: bool,
}

/// `AppEnvironmentVersion`: a deployed version.
#[derive(Clone, Debug)]
pub struct AppEnvironmentVersion {
    version: m::Version,
    app_id: String,
    environment_id: String,
    environment_key: String,
    is_latest: bool,
}

impl AppEnvironmentVersion {
    fn of(env: &m::Environment, app_id: &str, v: &m::Version) -> Self {
        AppEnvironmentVersion {
            version: v.clone(),
            app_id: app_id.to_string(),
            environment_id: env.id.clone(),
            environment_key: env.key.clone(),
            is_latest: env.latest().is_some_and(|l| l.id == v.id),
        }
    }
}

#[Object]
impl AppEnvironmentVersion {
    async fn id(&self) -> ID {
        ID(self.version.id.clone())
    }
    /// `M.m.p`; the first component is the major.
    async fn version(&self) -> &str {
        &self.version.version
    }
    /// Epoch milliseconds.
    async fn created_at(&self) -> String {
        self.version.created_at.to_string()
    }
    async fn updated_at(&self) -> String {
        self.version.created_at.to_string()
    }
    async fn is_latest(&self) -> bool {
        self.is_latest
    }
    async fn requires_license(&self) -> bool {
        self.version.requires_license
    }
    async fn permissions(&self) -> Vec<AppPermission> {
        vec![AppPermission {
            scopes: self
                .version
                .scopes
                .iter()
                .map(|s| AppHostServiceScope {
                    key: s.clone(),
                    name: s.clone(),
                    description: s.clone(),
                    restricted: None,
                })
                .collect(),
            egress: Some(
                self.version
                    .egress
                    .iter()
                    .map(|e| AppNetworkEgressPermission {
                        addresses: Some(e.addresses.clone()),
                        category: e.category,
                        in_scope_eud: Some(e.in_scope_eud),
                        kind: Some(e.kind),
                    })
                    .collect(),
            ),
            security_policies: Some(
                self.version
                    .security_policies
                    .iter()
                    .map(|p| AppSecurityPoliciesPermission { policies: Some(p.policies.clone()), kind: Some(p.kind) })
                    .collect(),
            ),
            supports_configurable_egress: None,
        }]
    }
    async fn required_products(&self) -> Option<Vec<EcosystemRequiredProduct>> {
        Some(self.version.required_products.iter().filter_map(|p| EcosystemRequiredProduct::from_product(p)).collect())
    }
    async fn primary_product(&self) -> Option<EcosystemRequiredProduct> {
        self.version.required_products.first().and_then(|p| EcosystemRequiredProduct::from_product(p))
    }
    /// One node per module (null when the version declares none, as the skeleton).
    async fn extensions(&self) -> Option<AppVersionExtensions> {
        (!self.version.modules.is_empty()).then(|| AppVersionExtensions {
            nodes: Some(AppVersionExtension::of_version(&self.app_id, &self.environment_id, &self.version)),
        })
    }
    /// `remotes`: one per remote of the version (null when it has none).
    async fn storage(&self) -> Storage {
        let remotes = &self.version.remotes;
        Storage {
            hosted: None,
            remotes: (!remotes.is_empty()).then(|| {
                remotes
                    .iter()
                    .map(|r| Remote {
                        base_url: r.base_url.clone(),
                        classifications: None,
                        key: r.key.clone(),
                        locations: None,
                    })
                    .collect()
            }),
        }
    }
    async fn migration_keys(&self) -> Option<MigrationKeys> {
        None
    }
    /// Installations on this version.
    async fn installations(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<AppInstallationByIndexConnection>> {
        let model = lock(ctx)?;
        let items: Vec<&m::Installation> = model
            .installations
            .of_app(&self.app_id)
            .filter(|i| i.environment_key == self.environment_key && i.version_id == self.version.id)
            .collect();
        Ok(Some(AppInstallationByIndexConnection::page(&model, items, first, after.as_deref())?))
    }
    /// Whether installations on `sourceVersionId` may be bulk-upgraded to this version.
    async fn upgradeable_by_rollout_from_version(
        &self,
        ctx: &Context<'_>,
        source_version_id: ID,
    ) -> async_graphql::Result<UpgradeableByRollout> {
        let model = lock(ctx)?;
        let ok = model.upgradeable(&source_version_id, &self.version.id).map_err(gql_error)?;
        Ok(UpgradeableByRollout {
            source_version_id,
            upgrade_limit: Some(model.settings.upgrade_limit as i32),
            upgradeable_by_rollout: ok,
        })
    }
}

/// `AppEnvironmentVersionConnection`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppEnvironmentVersionConnection {
    pub nodes: Option<Vec<Option<AppEnvironmentVersion>>>,
    pub page_info: PageInfo,
    pub total_count: Option<i32>,
}

/// `AppVersionRolloutProgress`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppVersionRolloutProgress {
    pub completed_upgrade_count: i32,
    pub failed_upgrade_count: i32,
    pub pending_upgrade_count: i32,
}

/// `AppVersionRollout`: a bulk upgrade.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppVersionRollout {
    pub id: ID,
    pub app_id: ID,
    pub app_environment_id: ID,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub created_by_account_id: String,
    pub cancelled_by_account_id: Option<String>,
    pub progress: AppVersionRolloutProgress,
    pub source_version_id: ID,
    pub target_version_id: ID,
    pub status: RolloutStatus,
    pub upgrade_limit: Option<i32>,
}

impl From<&m::Rollout> for AppVersionRollout {
    fn from(r: &m::Rollout) -> Self {
        AppVersionRollout {
            id: ID(r.id.clone()),
            app_id: ID(r.app_id.clone()),
            app_environment_id: ID(r.environment_id.clone()),
            created_at: ms_to_datetime(r.created_at),
            completed_at: r.completed_at.map(ms_to_datetime),
            created_by_account_id: r.created_by.clone(),
            cancelled_by_account_id: r.cancelled_by.clone(),
            progress: AppVersionRolloutProgress {
                completed_upgrade_count: r.completed as i32,
                failed_upgrade_count: r.failed as i32,
                pending_upgrade_count: r.pending.len() as i32,
            },
            source_version_id: ID(r.source_version_id.clone()),
            target_version_id: ID(r.target_version_id.clone()),
            status: r.status,
            upgrade_limit: Some(r.upgrade_limit as i32),
        }
    }
}

/// `AppEnvironmentAppVersionRolloutConnection`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppEnvironmentAppVersionRolloutConnection {
    pub nodes: Option<Vec<Option<AppVersionRollout>>>,
    pub page_info: Option<PageInfo>,
    pub total_count: Option<i32>,
}

/// `AppEnvironment`.
#[derive(Clone, Debug)]
pub struct AppEnvironment {
    app_id: String,
    key: String,
}

impl AppEnvironment {
    fn with<T>(
        &self,
        ctx: &Context<'_>,
        f: impl FnOnce(&Model, &m::Environment) -> async_graphql::Result<T>,
    ) -> async_graphql::Result<T> {
        let model = lock(ctx)?;
        let env = model.app(&self.app_id).and_then(|a| a.environment(&self.key)).ok_or_else(|| {
            gql_error(PlatformError::new(m::error_type::APP_NOT_FOUND, 404, "The environment no longer exists"))
        })?;
        f(&model, env)
    }
}

#[Object]
impl AppEnvironment {
    async fn id(&self, ctx: &Context<'_>) -> async_graphql::Result<ID> {
        self.with(ctx, |_, e| Ok(ID(e.id.clone())))
    }
    async fn app_id(&self) -> ID {
        ID(self.app_id.clone())
    }
    async fn key(&self) -> &str {
        &self.key
    }
    #[graphql(name = "type")]
    async fn env_type(&self, ctx: &Context<'_>) -> async_graphql::Result<EnvironmentType> {
        self.with(ctx, |_, e| Ok(e.env_type))
    }
    /// Epoch milliseconds.
    async fn created_at(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        self.with(ctx, |_, e| Ok(e.created_at.to_string()))
    }
    async fn scopes(&self) -> Option<Vec<String>> {
        None
    }
    /// Versions, newest first; with `majorVersion`, only that major's.
    async fn versions(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        major_version: Option<i32>,
        version_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<Option<AppEnvironmentVersionConnection>> {
        self.with(ctx, |_, env| {
            let items: Vec<AppEnvironmentVersion> = env
                .versions
                .iter()
                .rev()
                .filter(|v| major_version.is_none_or(|mv| mv >= 0 && v.major() == mv as u64))
                .filter(|v| version_ids.as_ref().is_none_or(|ids| ids.iter().any(|id| id.0 == v.id)))
                .map(|v| AppEnvironmentVersion::of(env, &self.app_id, v))
                .collect();
            let total = items.len() as i32;
            let (page, page_info) = paginate(items, first, after.as_deref())?;
            Ok(Some(AppEnvironmentVersionConnection {
                nodes: Some(page.into_iter().map(Some).collect()),
                page_info,
                total_count: Some(total),
            }))
        })
    }
    /// Bulk upgrades of this environment, newest first.
    async fn app_version_rollouts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<AppEnvironmentAppVersionRolloutConnection>> {
        self.with(ctx, |model, env| {
            let items: Vec<AppVersionRollout> =
                model.rollouts.iter().rev().filter(|r| r.environment_id == env.id).map(Into::into).collect();
            let total = items.len() as i32;
            let (page, page_info) = paginate(items, first, after.as_deref())?;
            Ok(Some(AppEnvironmentAppVersionRolloutConnection {
                nodes: Some(page.into_iter().map(Some).collect()),
                page_info: Some(page_info),
                total_count: Some(total),
            }))
        })
    }
}

/// `AppEnvironmentConnection`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppEnvironmentConnection {
    pub nodes: Option<Vec<Option<AppEnvironment>>>,
    pub page_info: PageInfo,
    pub total_count: Option<i32>,
}

/// `App`.
#[derive(Clone, Debug)]
pub struct App {
    id: String,
}

impl App {
    fn with<T>(&self, ctx: &Context<'_>, f: impl FnOnce(&Model, &m::App) -> T) -> async_graphql::Result<T> {
        let model = lock(ctx)?;
        let app = model
            .app(&self.id)
            .ok_or_else(|| gql_error(PlatformError::new(m::error_type::APP_NOT_FOUND, 404, "App not found")))?;
        Ok(f(&model, app))
    }
}

#[Object]
impl App {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        self.with(ctx, |_, a| a.name.clone())
    }
    async fn description(&self) -> String {
        String::new()
    }
    async fn created_at(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        self.with(ctx, |_, a| a.created_at.to_string())
    }
    async fn updated_at(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        self.with(ctx, |_, a| ms_to_datetime(a.created_at))
    }
    /// `DEVELOPMENT` (sharing off) or `PUBLIC` (sharing on).
    async fn distribution_status(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        self.with(ctx, |_, a| {
            match a.distribution_status {
                DistributionStatus::Development => "DEVELOPMENT",
                DistributionStatus::Public => "PUBLIC",
            }
            .to_string()
        })
    }
    /// App details: the vendor's name (sharing needs it).
    async fn vendor_name(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.with(ctx, |_, a| a.vendor_name.clone())
    }
    /// App details: the privacy policy's URL (sharing needs it).
    async fn privacy_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.with(ctx, |_, a| a.privacy_policy.clone())
    }
    /// App details: the terms of service's URL (sharing needs it).
    async fn terms_of_service(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.with(ctx, |_, a| a.terms_of_service.clone())
    }
    /// App details: a contact link.
    async fn contact_link(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        self.with(ctx, |_, a| a.contact_link.clone())
    }
    /// The app's Marketplace listing: null unless it is listed on (or submitted to) the
    /// Marketplace, which an app shared by link must not be.
    async fn marketplace_app(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<MarketplaceApp>> {
        self.with(ctx, |_, a| {
            a.marketplace_app_key().map(|key| MarketplaceApp {
                app_id: ID(m::stable_marketplace_id(&a.id)),
                app_key: key.to_string(),
                name: a.name.clone(),
            })
        })
    }
    async fn stores_personal_data(&self) -> bool {
        false
    }
    async fn created_by(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        self.with(ctx, |model, a| model.account(&a.owner).map(User::from))
    }
    async fn app_features(&self) -> Option<Vec<AppFeature>> {
        Some(Vec::new())
    }
    async fn environment_by_key(
        &self,
        ctx: &Context<'_>,
        key: String,
    ) -> async_graphql::Result<Option<AppEnvironment>> {
        self.with(ctx, |_, a| a.environment(&key).map(|e| AppEnvironment { app_id: a.id.clone(), key: e.key.clone() }))
    }
    async fn environments(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<AppEnvironment>> {
        self.with(ctx, |_, a| {
            a.environments.iter().map(|e| AppEnvironment { app_id: a.id.clone(), key: e.key.clone() }).collect()
        })
    }
    async fn environments_page(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<AppEnvironmentConnection>> {
        let items = self.environments(ctx).await?;
        let total = items.len() as i32;
        let (page, page_info) = paginate(items, first, after.as_deref())?;
        Ok(Some(AppEnvironmentConnection {
            nodes: Some(page.into_iter().map(Some).collect()),
            page_info,
            total_count: Some(total),
        }))
    }
}

/// `MarketplaceApp` (a subset of its fields): an app's Marketplace listing.
#[derive(SimpleObject, Clone, Debug)]
pub struct MarketplaceApp {
    /// The Marketplace's id of the app (numeric).
    pub app_id: ID,
    /// The Marketplace app key (the emulator uses the Forge app's uuid).
    pub app_key: String,
    /// The listing's name (the app's name).
    pub name: String,
}

/// `AppInstallation`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppInstallation {
    pub id: ID,
    pub installation_context: ID,
    pub secondary_installation_contexts: Option<Vec<ID>>,
    pub app_environment: Option<AppEnvironment>,
    pub app_environment_version: Option<AppEnvironmentVersion>,
    pub compute_version: Option<AppEnvironmentVersion>,
    pub created_at: String,
    pub is_recoverable: bool,
    pub provisioned_externally: Option<bool>,
}

impl AppInstallation {
    /// Whether [`AppInstallation::of`] answers the installation (its app environment exists).
    fn answerable(model: &Model, i: &m::Installation) -> bool {
        model.app(&i.app_id).is_some_and(|a| a.environment(&i.environment_key).is_some())
    }
    fn of(model: &Model, i: &m::Installation) -> Option<Self> {
        let app = model.app(&i.app_id)?;
        let env = app.environment(&i.environment_key)?;
        let version = env.version(&i.version_id).map(|v| AppEnvironmentVersion::of(env, &app.id, v));
        let compute = env.version(i.compute_version()).map(|v| AppEnvironmentVersion::of(env, &app.id, v));
        Some(AppInstallation {
            id: ID(i.id.clone()),
            installation_context: ID(i.context.clone()),
            secondary_installation_contexts: Some(Vec::new()),
            app_environment: Some(AppEnvironment { app_id: app.id.clone(), key: env.key.clone() }),
            // The code running: the installed (permissions) version's unless a code-only upgrade
            // moved it ahead.
            compute_version: compute,
            app_environment_version: version,
            created_at: ms_to_datetime(i.created_at),
            is_recoverable: false,
            provisioned_externally: Some(false),
        })
    }
}

/// `AppInstallationByIndexConnection`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppInstallationByIndexConnection {
    pub nodes: Option<Vec<Option<AppInstallation>>>,
    pub page_info: PageInfo,
    pub total_count: Option<i32>,
}

impl AppInstallationByIndexConnection {
    /// A page of the installations (only the page's are built into answers).
    fn page(
        model: &Model,
        items: Vec<&m::Installation>,
        first: Option<i32>,
        after: Option<&str>,
    ) -> async_graphql::Result<Self> {
        let items: Vec<&m::Installation> =
            items.into_iter().filter(|i| AppInstallation::answerable(model, i)).collect();
        let total = items.len() as i32;
        let (page, page_info) = paginate(items, first, after)?;
        Ok(AppInstallationByIndexConnection {
            nodes: Some(page.into_iter().filter_map(|i| AppInstallation::of(model, i)).map(Some).collect()),
            page_info,
            total_count: Some(total),
        })
    }
}

/// `AppInstallationTask`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppInstallationTask {
    pub id: ID,
    pub app_id: ID,
    pub app_environment_id: Option<ID>,
    pub app_version_id: Option<ID>,
    pub context: ID,
    pub state: TaskState,
    pub errors: Option<Vec<MutationError>>,
}

/// `TenantContextActivationId`.
#[derive(SimpleObject, Clone, Debug)]
pub struct TenantContextActivationId {
    pub active: Option<String>,
    pub product: Option<String>,
    pub target_region: Option<String>,
}

/// `HamsEntitlement` (not modelled; `entitlementInfo` answers null).
#[derive(SimpleObject, Clone, Debug)]
pub struct HamsEntitlement {
    pub id: ID,
    pub name: Option<String>,
    pub current_edition: Option<String>,
}

/// `CcpOffering`.
#[derive(SimpleObject, Clone, Debug)]
pub struct CcpOffering {
    pub id: ID,
    pub name: Option<String>,
}

/// `CcpEntitlement` (not modelled).
#[derive(SimpleObject, Clone, Debug)]
pub struct CcpEntitlement {
    pub id: ID,
    pub offering: Option<CcpOffering>,
}

/// `CommerceEntitlement`.
#[derive(Union, Clone, Debug)]
pub enum CommerceEntitlement {
    Hams(HamsEntitlement),
    Ccp(CcpEntitlement),
}

/// `CommerceEntitlementInfo`.
#[derive(SimpleObject, Clone, Debug)]
pub struct CommerceEntitlementInfo {
    pub entitlement: Option<CommerceEntitlement>,
    pub entitlement_id: ID,
}

/// `TenantContext`: a site.
#[derive(Clone, Debug)]
pub struct TenantContext {
    site: m::Site,
}

#[Object]
impl TenantContext {
    async fn cloud_id(&self) -> Option<ID> {
        Some(ID(self.site.cloud_id.clone()))
    }
    async fn host_name(&self) -> Option<String> {
        Some(self.site.host_name.clone())
    }
    async fn cloud_url(&self) -> Option<String> {
        Some(format!("https://{}", self.site.host_name))
    }
    async fn org_id(&self) -> Option<ID> {
        None
    }
    /// The product's activation id (`product` lowercase: `jira`, `confluence`, `compass`).
    async fn activation_id_by_product(&self, product: String) -> Option<TenantContextActivationId> {
        let product = product.to_ascii_lowercase();
        self.site.products.get(&product).map(|a| TenantContextActivationId {
            active: Some(a.clone()),
            product: Some(product.clone()),
            target_region: None,
        })
    }
    async fn activation_ids(&self) -> Option<Vec<TenantContextActivationId>> {
        Some(
            self.site
                .products
                .iter()
                .map(|(p, a)| TenantContextActivationId {
                    active: Some(a.clone()),
                    product: Some(p.clone()),
                    target_region: None,
                })
                .collect(),
        )
    }
    /// Not modelled: null.
    async fn entitlement_info(&self, hams_product_key: String) -> Option<CommerceEntitlementInfo> {
        let _ = hams_product_key;
        None
    }
}

/// `DevConsoleActiveDistributionLink`: an installation link.
#[derive(SimpleObject, Clone, Debug)]
pub struct DevConsoleActiveDistributionLink {
    pub products: Vec<String>,
    pub signature: String,
    /// `ACTIVE` while it admits installs (sharing on, the app neither listed nor licensed), else
    /// `INACTIVE`.
    pub status: String,
}

fn link_of(link: m::DistributionLink, active: bool) -> DevConsoleActiveDistributionLink {
    DevConsoleActiveDistributionLink {
        products: link.products,
        signature: link.signature,
        status: if active { "ACTIVE" } else { "INACTIVE" }.to_string(),
    }
}

/// Whether the app's link admits installs now.
fn link_active(app: Option<&m::App>) -> bool {
    app.is_some_and(|a| a.distribution_status == DistributionStatus::Public && a.link_sharing_refusal(403).is_none())
}

/// `DevConsoleQuery`.
pub struct DevConsoleQuery;

#[Object]
impl DevConsoleQuery {
    /// The app's current installation link, if any.
    async fn get_active_distribution_link(
        &self,
        ctx: &Context<'_>,
        app_id: String,
    ) -> async_graphql::Result<Option<DevConsoleActiveDistributionLink>> {
        let caller = caller(ctx)?;
        let model = lock(ctx)?;
        let link = model.active_link(&caller, &app_id).map_err(gql_error)?;
        let active = link_active(model.app(&app_id));
        Ok(link.map(|l| link_of(l, active)))
    }
}

/// `DevConsoleMutation`.
pub struct DevConsoleMutation;

#[Object]
impl DevConsoleMutation {
    /// A new installation link (a new signature; the previous link stops admitting installs, for
    /// good). Refused unless the app is shared, and when it is listed on the Marketplace or
    /// licensed.
    async fn generate_distribution_link(
        &self,
        ctx: &Context<'_>,
        app_id: String,
        products: Vec<String>,
    ) -> async_graphql::Result<Option<DevConsoleActiveDistributionLink>> {
        let caller = caller(ctx)?;
        let mut model = lock(ctx)?;
        let link = model.generate_link(&caller, &app_id, &products, now_ms()).map_err(gql_error)?;
        let active = link_active(model.app(&app_id));
        Ok(Some(link_of(link, active)))
    }
}

/// `InstallationsListFilterByApps`.
#[derive(InputObject, Clone, Debug)]
pub struct InstallationsListFilterByApps {
    pub ids: Vec<ID>,
}

/// `InstallationsListFilterByAppEnvironments`.
#[derive(InputObject, Clone, Debug)]
pub struct InstallationsListFilterByAppEnvironments {
    pub types: Vec<EnvironmentType>,
}

/// `InstallationsListFilterByAppInstallations`.
#[derive(InputObject, Clone, Debug)]
pub struct InstallationsListFilterByAppInstallations {
    pub contexts: Option<Vec<ID>>,
    pub ids: Option<Vec<ID>>,
}

/// `AppInstallationsByAppFilter`.
#[derive(InputObject, Clone, Debug)]
pub struct AppInstallationsByAppFilter {
    pub apps: InstallationsListFilterByApps,
    pub app_environments: Option<InstallationsListFilterByAppEnvironments>,
    pub app_installations: Option<InstallationsListFilterByAppInstallations>,
    pub include_system_apps: Option<bool>,
}

/// `EcosystemQuery`.
pub struct EcosystemQuery;

#[Object]
impl EcosystemQuery {
    /// Installations of apps (all the caller's), cursor-paginated, in creation order.
    async fn app_installations_by_app(
        &self,
        ctx: &Context<'_>,
        filter: AppInstallationsByAppFilter,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Option<AppInstallationByIndexConnection>> {
        let caller = caller(ctx)?;
        let model = lock(ctx)?;
        let f = m::InstallationFilter {
            app_ids: filter.apps.ids.into_iter().map(|i| i.0).collect(),
            environment_types: filter.app_environments.map(|e| e.types),
            contexts: filter
                .app_installations
                .as_ref()
                .and_then(|i| i.contexts.clone())
                .map(|c| c.into_iter().map(|i| i.0).collect()),
            ids: filter.app_installations.and_then(|i| i.ids).map(|c| c.into_iter().map(|i| i.0).collect()),
        };
        let found = model.installations_by_app(&caller, &f).map_err(gql_error)?;
        Ok(Some(AppInstallationByIndexConnection::page(&model, found, first, after.as_deref())?))
    }
    /// A bulk upgrade by id (null if unknown or forgotten).
    async fn app_version_rollout(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<AppVersionRollout>> {
        let caller = caller(ctx)?;
        let model = lock(ctx)?;
        let Some(r) = model.rollout(&id) else { return Ok(None) };
        model.owned_app(&caller, &r.app_id).map_err(gql_error)?;
        Ok(Some(r.into()))
    }
    async fn dev_console(&self) -> Option<DevConsoleQuery> {
        Some(DevConsoleQuery)
    }
    /// The App metrics API of an app the caller owns (needs the `X-ExperimentalApi` header).
    async fn forge_metrics(
        &self,
        ctx: &Context<'_>,
        app_id: ID,
    ) -> async_graphql::Result<Option<crate::schema_metrics::ForgeMetricsQuery>> {
        crate::schema_metrics::forge_metrics(ctx, &app_id).map(Some)
    }
}

/// The query root.
pub struct QueryRoot;

#[Object]
impl QueryRoot {
    /// The authenticated account.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<AuthenticationContext> {
        let caller = caller(ctx)?;
        let model = lock(ctx)?;
        Ok(AuthenticationContext { user: model.account(&caller).map(User::from) })
    }
    /// An app: null if unknown, PERMISSION_DENIED if another account owns it.
    async fn app(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<App>> {
        let caller = caller(ctx)?;
        let model = lock(ctx)?;
        match model.owned_app(&caller, &id) {
            Ok(a) => Ok(Some(App { id: a.id.clone() })),
            Err(e) if e.error_type == m::error_type::APP_NOT_FOUND => Ok(None),
            Err(e) => Err(gql_error(e)),
        }
    }
    /// An install/upgrade/uninstall task (null if unknown).
    async fn app_installation_task(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<AppInstallationTask>> {
        caller(ctx)?;
        let model = lock(ctx)?;
        Ok(model.task(&id).map(|t| AppInstallationTask {
            id: ID(t.id.clone()),
            app_id: ID(t.app_id.clone()),
            app_environment_id: model
                .app(&t.app_id)
                .and_then(|a| a.environment(&t.environment_key))
                .map(|e| ID(e.id.clone())),
            app_version_id: t.version_id.clone().map(ID),
            context: ID(t.context.clone()),
            state: t.state,
            errors: (!t.errors.is_empty()).then(|| t.errors.iter().cloned().map(Into::into).collect()),
        }))
    }
    async fn ecosystem(&self) -> Option<EcosystemQuery> {
        Some(EcosystemQuery)
    }
    /// Sites by host name, cloud id or activation id; answers are in the order asked, null for
    /// unknown ones.
    async fn tenant_contexts(
        &self,
        ctx: &Context<'_>,
        host_names: Option<Vec<String>>,
        cloud_ids: Option<Vec<ID>>,
        activation_ids: Option<Vec<ID>>,
    ) -> async_graphql::Result<Option<Vec<Option<TenantContext>>>> {
        caller(ctx)?;
        let model = lock(ctx)?;
        let mut out = Vec::new();
        for h in host_names.unwrap_or_default() {
            out.push(model.site_by_host(&h).cloned());
        }
        for c in cloud_ids.unwrap_or_default() {
            out.push(model.site_by_cloud_id(&c).cloned());
        }
        for a in activation_ids.unwrap_or_default() {
            out.push(model.site_by_activation_id(&a).cloned());
        }
        Ok(Some(out.into_iter().map(|s| s.map(|site| TenantContext { site })).collect()))
    }
}

/// `LicenseOverrideState`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LicenseOverrideState {
    Active,
    Advanced,
    Inactive,
    Standard,
    Trial,
}

/// `EcosystemLicenseMode`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcosystemLicenseMode {
    UserAccess,
}

/// `SourceBillingType`.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceBillingType {
    Ccp,
    Hams,
}

/// `EcosystemAppInstallationOverridesInput` (accepted, not modelled).
#[derive(InputObject, Clone, Debug)]
pub struct EcosystemAppInstallationOverridesInput {
    pub license_modes: Option<Vec<EcosystemLicenseMode>>,
    pub users_with_access: Option<Vec<ID>>,
}

/// `AppInstallationInput`.
#[derive(InputObject, Clone, Debug)]
pub struct AppInstallationInput {
    pub app_id: ID,
    #[graphql(name = "async")]
    pub is_async: Option<bool>,
    pub environment_key: String,
    pub installation_context: ID,
    pub license_override: Option<LicenseOverrideState>,
    pub overrides: Option<EcosystemAppInstallationOverridesInput>,
    pub provision_request_id: Option<ID>,
    pub version_id: Option<ID>,
}

/// `AppInstallationUpgradeInput`.
#[derive(InputObject, Clone, Debug)]
pub struct AppInstallationUpgradeInput {
    pub app_id: ID,
    #[graphql(name = "async")]
    pub is_async: Option<bool>,
    pub compute_only: Option<bool>,
    pub environment_key: String,
    pub installation_context: ID,
    pub source_billing_type: Option<SourceBillingType>,
    pub version_id: Option<ID>,
}

/// `AppUninstallationInput`.
#[derive(InputObject, Clone, Debug)]
pub struct AppUninstallationInput {
    pub app_id: ID,
    #[graphql(name = "async")]
    pub is_async: Option<bool>,
    pub environment_key: String,
    pub forfeit_remaining_funds: Option<bool>,
    pub installation_context: Option<ID>,
    pub installation_id: Option<ID>,
    pub license_override: Option<LicenseOverrideState>,
    pub source_billing_type: Option<SourceBillingType>,
}

/// `AppInstallationResponse`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppInstallationResponse {
    pub success: bool,
    pub task_id: Option<ID>,
    pub installation_id: Option<ID>,
    pub errors: Option<Vec<MutationError>>,
}

/// `AppInstallationUpgradeResponse`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppInstallationUpgradeResponse {
    pub success: bool,
    pub task_id: Option<ID>,
    pub installation_id: Option<ID>,
    pub errors: Option<Vec<MutationError>>,
}

/// `AppUninstallationResponse`.
#[derive(SimpleObject, Clone, Debug)]
pub struct AppUninstallationResponse {
    pub success: bool,
    pub task_id: Option<ID>,
    pub errors: Option<Vec<MutationError>>,
}

/// `UpdateAppDetailsInput` (`distributionStatus`, `name`, `vendorName`, `privacyPolicy`,
/// `termsOfService` and `contactLink` have an effect; the others are accepted and ignored).
#[derive(InputObject, Clone, Debug)]
pub struct UpdateAppDetailsInput {
    pub app_id: ID,
    pub distribution_status: Option<DistributionStatus>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub avatar_file_id: Option<String>,
    pub contact_link: Option<String>,
    pub developer_space_id: Option<ID>,
    #[graphql(name = "hasPDReportingApiImplemented")]
    pub has_pd_reporting_api_implemented: Option<bool>,
    pub privacy_policy: Option<String>,
    pub stores_personal_data: Option<bool>,
    pub terms_of_service: Option<String>,
    pub vendor_name: Option<String>,
}

/// `UpdateAppDetailsResponse`.
#[derive(SimpleObject, Clone, Debug)]
pub struct UpdateAppDetailsResponse {
    pub success: bool,
    pub errors: Option<Vec<MutationError>>,
    pub app: Option<App>,
}

/// `CreateAppVersionRolloutInput`.
#[derive(InputObject, Clone, Debug)]
pub struct CreateAppVersionRolloutInput {
    pub limit: Option<i32>,
    pub source_version_id: ID,
    pub target_version_id: ID,
}

/// `CreateAppVersionRolloutPayload`.
#[derive(SimpleObject, Clone, Debug)]
pub struct CreateAppVersionRolloutPayload {
    pub success: bool,
    pub app_version_rollout: Option<AppVersionRollout>,
    pub total_eligible_upgrades: Option<i32>,
    pub expected_remaining_upgrades: Option<i32>,
    pub errors: Option<Vec<MutationError>>,
}

/// `CancelAppVersionRolloutInput`.
#[derive(InputObject, Clone, Debug)]
pub struct CancelAppVersionRolloutInput {
    pub id: ID,
}

/// `CancelAppVersionRolloutPayload`.
#[derive(SimpleObject, Clone, Debug)]
pub struct CancelAppVersionRolloutPayload {
    pub success: bool,
    pub errors: Option<Vec<MutationError>>,
}

/// `EcosystemMutation`.
pub struct EcosystemMutation;

#[Object]
impl EcosystemMutation {
    /// Starts a bulk upgrade of the installations on `sourceVersionId`.
    async fn create_app_version_rollout(
        &self,
        ctx: &Context<'_>,
        input: CreateAppVersionRolloutInput,
    ) -> async_graphql::Result<Option<CreateAppVersionRolloutPayload>> {
        let caller = caller(ctx)?;
        let mut model = lock(ctx)?;
        let r = model.create_rollout(
            &caller,
            &input.source_version_id,
            &input.target_version_id,
            input.limit.map(i64::from),
            now_ms(),
        );
        let errors = errors_of(&r);
        Ok(Some(match r {
            Ok(c) => CreateAppVersionRolloutPayload {
                success: true,
                app_version_rollout: model.rollout(&c.id).map(Into::into),
                total_eligible_upgrades: Some(c.total_eligible as i32),
                expected_remaining_upgrades: Some(c.expected_remaining as i32),
                errors,
            },
            Err(_) => CreateAppVersionRolloutPayload {
                success: false,
                app_version_rollout: None,
                total_eligible_upgrades: None,
                expected_remaining_upgrades: None,
                errors,
            },
        }))
    }
    /// Cancels a RUNNING bulk upgrade.
    async fn cancel_app_version_rollout(
        &self,
        ctx: &Context<'_>,
        input: CancelAppVersionRolloutInput,
    ) -> async_graphql::Result<Option<CancelAppVersionRolloutPayload>> {
        let caller = caller(ctx)?;
        let r = lock(ctx)?.cancel_rollout(&caller, &input.id, now_ms());
        Ok(Some(CancelAppVersionRolloutPayload { success: r.is_ok(), errors: errors_of(&r) }))
    }
    async fn dev_console(&self) -> Option<DevConsoleMutation> {
        Some(DevConsoleMutation)
    }
}

/// The mutation root.
pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Installs an app environment on a site's product, asynchronously (a task).
    async fn install_app(
        &self,
        ctx: &Context<'_>,
        input: AppInstallationInput,
    ) -> async_graphql::Result<Option<AppInstallationResponse>> {
        let caller = caller(ctx)?;
        let i = m::InstallInput {
            app_id: input.app_id.0,
            environment_key: input.environment_key,
            context: input.installation_context.0,
            version_id: input.version_id.map(|v| v.0),
            compute_only: false,
        };
        let r = lock(ctx)?.install(&caller, &i, now_ms());
        Ok(Some(AppInstallationResponse {
            success: r.is_ok(),
            errors: errors_of(&r),
            task_id: r.ok().map(ID),
            installation_id: None,
        }))
    }
    /// Upgrades an installation (to `versionId`, else the latest), asynchronously (a task); with
    /// `computeOnly`, only its code (its `computeVersion`; see [`Model::upgrade`]).
    async fn upgrade_app(
        &self,
        ctx: &Context<'_>,
        input: AppInstallationUpgradeInput,
    ) -> async_graphql::Result<Option<AppInstallationUpgradeResponse>> {
        let caller = caller(ctx)?;
        let i = m::InstallInput {
            app_id: input.app_id.0,
            environment_key: input.environment_key,
            context: input.installation_context.0,
            version_id: input.version_id.map(|v| v.0),
            compute_only: input.compute_only.unwrap_or(false),
        };
        let mut model = lock(ctx)?;
        let r = model.upgrade(&caller, &i, now_ms());
        let installation_id =
            r.as_ref().ok().and_then(|t| model.task(t)).and_then(|t| t.installation_id.clone()).map(ID);
        Ok(Some(AppInstallationUpgradeResponse {
            success: r.is_ok(),
            errors: errors_of(&r),
            task_id: r.ok().map(ID),
            installation_id,
        }))
    }
    /// Uninstalls an installation, asynchronously (a task).
    async fn uninstall_app(
        &self,
        ctx: &Context<'_>,
        input: AppUninstallationInput,
    ) -> async_graphql::Result<Option<AppUninstallationResponse>> {
        let caller = caller(ctx)?;
        let i = m::UninstallInput {
            app_id: input.app_id.0,
            environment_key: input.environment_key,
            installation_id: input.installation_id.map(|v| v.0),
            context: input.installation_context.map(|v| v.0),
        };
        let r = lock(ctx)?.uninstall(&caller, &i, now_ms());
        Ok(Some(AppUninstallationResponse { success: r.is_ok(), errors: errors_of(&r), task_id: r.ok().map(ID) }))
    }
    /// Sharing on (`PUBLIC`) or off (`DEVELOPMENT`), the app's name and its app details (see
    /// [`Model::update_app_details`]: refusals are in the payload's `errors`). A GraphQL error with
    /// errorType UNSUPPORTED when the distribution capability is off.
    async fn update_app_details(
        &self,
        ctx: &Context<'_>,
        input: UpdateAppDetailsInput,
    ) -> async_graphql::Result<Option<UpdateAppDetailsResponse>> {
        let caller = caller(ctx)?;
        let mut model = lock(ctx)?;
        if !model.settings.distribution {
            return Err(gql_error(PlatformError::new(
                m::error_type::UNSUPPORTED,
                403,
                "updateAppDetails is not available for API-token authentication",
            )));
        }
        let update = m::AppDetailsUpdate {
            distribution_status: input.distribution_status,
            name: input.name,
            vendor_name: input.vendor_name,
            privacy_policy: input.privacy_policy,
            terms_of_service: input.terms_of_service,
            contact_link: input.contact_link,
        };
        let r = model.update_app_details(&caller, &input.app_id, &update);
        Ok(Some(UpdateAppDetailsResponse {
            success: r.is_ok(),
            errors: errors_of(&r),
            app: r.is_ok().then(|| App { id: input.app_id.0.clone() }),
        }))
    }
    async fn ecosystem(&self) -> Option<EcosystemMutation> {
        Some(EcosystemMutation)
    }
}
