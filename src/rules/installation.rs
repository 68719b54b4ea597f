//! The Installation rules: whether a site may install, which version it gets, when minors roll out
//! and when a major upgrade needs the site admin's consent. A developer installs with the rights of
//! the app's account (as `forge install` does); sharing by link is for customers and the platform,
//! so no DistributionPolicy gates an Installation.

use crate::api::Condition;

use super::conditions::{self, Outcome};
use super::versions::{self, Version};
use crate::api::{
    AppVersion, Compatibility, ForgeApp, Installation, InstallationStatus, Product, TaskAction, TaskRecord,
    UnconfirmedRequest,
};
use crate::platform::PlatformError;

pub mod lifecycle;

pub use lifecycle::{Answer, Decision, Effect, Inputs, OnSite, Requeue, decide};

crate::named! {
    /// The condition types an Installation reports.
    pub enum Type { Installed, UpToDate, Ready, Reconciling, Stalled }
}

crate::named! {
    /// Every reason an Installation condition can give.
    pub enum Reason {
        Installed,
        Installing,
        AppNotFound,
        NotDeployed,
        IncompatibleProducts,
        AlreadyInstalled,
        VersionNotDeployed,
        UpToDate,
        UpgradeAvailable,
        PermissionsOutdated,
        ConsentRequired,
        DowngradeNotAllowed,
        MinorRollingOut,
        AwaitingAdminConsent,
        CustomerSite,
        /// Another ForgeApp owns the app: nothing is done on the platform.
        Conflict,
        /// The ForgeApp has not claimed the app yet.
        Claiming,
        Confirming,
        PlatformError,
        Ready,
        AsExpected,
    }
}

crate::summarized!(Type, Reason);

pub type Decided = conditions::Decided<Type, Reason>;

/// Everything the rules look at besides the Installation itself.
#[derive(Clone, Debug, Default)]
pub struct Facts<'a> {
    pub app: Option<&'a ForgeApp>,
    /// An older Installation of the same app, environment and site.
    pub duplicate_of: Option<String>,
    /// The platform refused to let the account install on the site, or the installation was
    /// adopted: the site is a customer's, and forgeops never installs or upgrades there.
    pub customer_site: bool,
    /// The app's installation link, when a DistributionPolicy holds one (for the site's admin).
    pub link: Option<String>,
    /// Whether the app's ForgeApp owns the appId (see [`crate::ownership`]).
    pub claim: crate::ownership::Claim,
}

/// What to do on the platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Install(Version),
    /// Move to a newer major.
    UpgradeMajor(Version),
    /// A customer's site: look (read only) for the install its admin makes through the link.
    AwaitLinkInstall,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub step: Step,
    /// `Installed` and `UpToDate`.
    pub conditions: Vec<Decided>,
    /// Where the Installation stands, for `Ready`, `Reconciling` and `Stalled`.
    pub outcome: Outcome<Reason>,
    /// While a version is installed (and works on the site), `Ready` says so whatever the outcome.
    pub serving: Option<(Reason, String)>,
    pub available: Option<Version>,
}

impl Plan {
    /// Every condition: `Installed`, `UpToDate`, then `Ready`, `Reconciling` and `Stalled`.
    pub fn all_conditions(&self) -> Vec<Decided> {
        let mut out = self.conditions.clone();
        out.extend(conditions::summary(&self.outcome, self.serving.as_ref()));
        out
    }
}

/// What moving from `from` to `to` newly asks of the site admin, from the whole permission set
/// (see [`super::permissions`]).
pub fn added_permissions(from: Option<&AppVersion>, to: &AppVersion) -> Vec<String> {
    super::permissions::difference(from, to).iter().map(ToString::to_string).collect()
}

fn not_installed(reason: Reason, message: String, available: Option<Version>) -> Plan {
    Plan {
        step: Step::Nothing,
        conditions: vec![
            Decided::new(Type::Installed, false, reason, message.clone()),
            Decided::new(Type::UpToDate, false, reason, "not installed".to_string()),
        ],
        outcome: Outcome::Stalled(reason, message),
        serving: None,
        available,
    }
}

/// Decides what to do for an Installation whose installed version is `installed` (from status).
pub fn plan(inst: &Installation, installed: Option<Version>, facts: &Facts) -> Plan {
    let spec = &inst.spec;
    let deployed: &[AppVersion] = facts.app.map(|a| a.deployed(&spec.environment)).unwrap_or_default();
    let newest = versions::latest(deployed);
    let available = newest.map(Version::of);
    match installed {
        None => plan_first_install(inst, facts, deployed, available),
        Some(current) => plan_installed(inst, current, deployed, available, facts),
    }
}

fn plan_first_install(inst: &Installation, facts: &Facts, deployed: &[AppVersion], available: Option<Version>) -> Plan {
    let spec = &inst.spec;
    if facts.app.is_none() {
        let message = format!("ForgeApp {} does not exist in this namespace", spec.app_ref.name);
        return not_installed(Reason::AppNotFound, message, None);
    }
    let Some(newest) = versions::latest(deployed) else {
        // Nothing known: say whether that is because the app cannot be read from the platform.
        let unread = facts.app.and_then(|a| a.status.as_ref()).and_then(|s| {
            conditions::find(&s.conditions, crate::rules::forge_app::Type::Synced)
                .filter(|c| c.status != crate::api::TRUE)
        });
        let message = match unread {
            Some(c) => format!(
                "the versions of app {} are not known: ForgeApp {} says {} ({}); fix that first",
                spec.app_ref.name, spec.app_ref.name, c.reason, c.message
            ),
            None => format!(
                "app {} has no version deployed in environment {}: deploy one with `forge deploy -e {}`",
                spec.app_ref.name, spec.environment, spec.environment
            ),
        };
        return not_installed(Reason::NotDeployed, message, None);
    };
    if facts.customer_site {
        let message = format!(
            "the app's developer account does not administer {}: forgeops installs only on sites the account \
             administers. Share the installation link{} with the site's admin; once they install, this Installation \
             adopts it",
            spec.site,
            facts
                .link
                .as_ref()
                .map(|l| format!(" ({l})"))
                .unwrap_or_else(|| " (a DistributionPolicy makes one)".into())
        );
        let mut d = not_installed(Reason::CustomerSite, message, available);
        d.step = Step::AwaitLinkInstall;
        return d;
    }
    if let Some(first) = &facts.duplicate_of {
        let message = format!(
            "Installation {first} already installs app {} environment {} on {}",
            spec.app_ref.name, spec.environment, spec.site
        );
        return not_installed(Reason::AlreadyInstalled, message, available);
    }
    if let Err(message) = products_to_install(&spec.products, &newest.compatibility) {
        return not_installed(Reason::IncompatibleProducts, message, available);
    }
    let target_major = spec.major_version.unwrap_or(newest.major);
    let Some(target) = versions::latest_of_major(deployed, target_major) else {
        let message = format!("major version {target_major} is not deployed in environment {}", spec.environment);
        return not_installed(Reason::VersionNotDeployed, message, available);
    };
    let target = Version::of(target);
    let installing = format!("installing version {target} on {}", spec.site);
    Plan {
        step: Step::Install(target),
        conditions: vec![
            Decided::new(Type::Installed, false, Reason::Installing, installing.clone()),
            Decided::new(Type::UpToDate, false, Reason::Installing, "not installed yet"),
        ],
        outcome: Outcome::InProgress(Reason::Installing, installing),
        serving: None,
        available,
    }
}

fn plan_installed(
    inst: &Installation,
    current: Version,
    deployed: &[AppVersion],
    available: Option<Version>,
    facts: &Facts,
) -> Plan {
    let spec = &inst.spec;
    let on_site = format!("version {current} is installed on {}", spec.site);
    let installed_ok = Decided::new(Type::Installed, true, Reason::Installed, on_site.clone());
    // The installed version's permissions; if it was withdrawn, its major's latest minor stands in.
    let current_version = deployed
        .iter()
        .find(|v| Version::of(v) == current)
        .or_else(|| versions::latest_of_major(deployed, current.major));
    // A newer minor of the installed major: the platform moves every site to it by itself,
    // progressively (forgeops never pushes a minor).
    let minor =
        versions::latest_of_major(deployed, current.major).filter(|m| Version::of(m) > current).map(Version::of);
    let serving = Some((Reason::Ready, on_site.clone()));
    let decision = |step: Step, up_to_date: Decided, outcome: Outcome<Reason>, serving: Option<(Reason, String)>| {
        Plan { step, conditions: vec![installed_ok.clone(), up_to_date], outcome, serving, available }
    };
    // A step under way (a minor rolled out while another change waits) is progress; what waits
    // for a change of the spec is stalled.
    let blocked = |step: Step, reason: Reason, message: String| {
        decision(
            step,
            Decided::new(Type::UpToDate, false, reason, message.clone()),
            Outcome::Stalled(reason, message),
            serving.clone(),
        )
    };

    let desired_major = spec.major_version.unwrap_or(current.major);
    if desired_major < current.major {
        let message = format!(
            "spec.majorVersion {desired_major} is below the installed major {}: the platform cannot downgrade. Set \
             spec.majorVersion back to {} or more, or delete this Installation (deletionPolicy Uninstall) and create it \
             again with majorVersion {desired_major}",
            current.major, current.major
        );
        return blocked(Step::Nothing, Reason::DowngradeNotAllowed, message);
    }
    if desired_major > current.major {
        let Some(target) = versions::latest_of_major(deployed, desired_major) else {
            let message = format!("major version {desired_major} is not deployed in environment {}", spec.environment);
            let up_to_date = Decided::new(Type::UpToDate, false, Reason::VersionNotDeployed, message.clone());
            return decision(Step::Nothing, up_to_date, Outcome::Stalled(Reason::VersionNotDeployed, message), None);
        };
        let added = added_permissions(current_version, target);
        if facts.customer_site {
            let asks = if added.is_empty() { "no new permissions".to_string() } else { added.join(", ") };
            let message = format!(
                "major {desired_major} ({}) is for the site's admin to install: {} is a customer's site, where \
                 forgeops never upgrades. It asks for {asks}. The admin updates the app in their site's \
                 administration{}, or a BulkUpgrade moves it when it needs no consent; this status follows",
                Version::of(target),
                spec.site,
                facts.link.as_ref().map(|l| format!(" or through the installation link {l}")).unwrap_or_else(|| {
                    " or through the app's installation link (a DistributionPolicy makes one)".into()
                })
            );
            return blocked(Step::Nothing, Reason::AwaitingAdminConsent, message);
        }
        if added.is_empty() || spec.approved_major.is_some_and(|a| a >= desired_major) {
            let to = Version::of(target);
            let message = format!("upgrading from {current} to {to}");
            let up_to_date = Decided::new(Type::UpToDate, false, Reason::UpgradeAvailable, message.clone());
            return decision(
                Step::UpgradeMajor(to),
                up_to_date,
                Outcome::InProgress(Reason::Installing, message),
                serving,
            );
        }
        let message = format!(
            "upgrading to major {desired_major} needs the site admin's consent for new permissions: {}. Set spec.approvedMajor to {desired_major} once they approve",
            added.join(", ")
        );
        return blocked(Step::Nothing, Reason::ConsentRequired, message);
    }
    if let Some(to) = minor {
        let message = format!(
            "{to} available, rolling out on the platform (it moves every site of major {} by itself)",
            current.major
        );
        let up_to_date = Decided::new(Type::UpToDate, false, Reason::MinorRollingOut, message);
        return decision(Step::Nothing, up_to_date, Outcome::Done(Reason::Ready, on_site), None);
    }
    let newest = versions::latest(deployed);
    let up_to_date = match newest {
        Some(n) if Version::of(n) > current => {
            let added = added_permissions(current_version, n);
            if added.is_empty() {
                Decided::new(
                    Type::UpToDate,
                    false,
                    Reason::UpgradeAvailable,
                    format!("version {} is available and needs no new permissions", Version::of(n)),
                )
            } else {
                Decided::new(
                    Type::UpToDate,
                    false,
                    Reason::PermissionsOutdated,
                    format!("version {} is available and needs new permissions: {}", Version::of(n), added.join(", ")),
                )
            }
        }
        _ => Decided::new(
            Type::UpToDate,
            true,
            Reason::UpToDate,
            format!("version {current} is the newest in {}", spec.environment),
        ),
    };
    decision(Step::Nothing, up_to_date, Outcome::Done(Reason::Ready, on_site), None)
}

/// The products an Installation listing `products` installs the app into, one platform
/// installation each, in the order they are installed: a cross-product app's required products
/// (every one must be listed) and then the other listed products it supports; a single-app app's
/// listed products, which must be its modules' (when the platform says which those are). Products
/// that share an installation context (Jira Service Management is Jira's) count once. Refused
/// with what to change in `spec.products`.
pub fn products_to_install(products: &[Product], compat: &Compatibility) -> Result<Vec<Product>, String> {
    let context = |p: &Product| crate::platform::context_product(p.as_str());
    let has = |list: &[Product], p: &Product| list.iter().any(|l| context(l) == context(p));
    let required = &compat.required_products;
    let missing: Vec<String> = required.iter().filter(|p| !has(products, p)).map(|p| p.to_string()).collect();
    if !missing.is_empty() {
        let them = if missing.len() == 1 { "it" } else { "them" };
        return Err(format!("spec.products must include {}: the app requires {them}", missing.join(", ")));
    }
    let supported: Vec<Product> = required.iter().chain(&compat.optional).copied().collect();
    // A single-app app whose modules the platform did not describe: the platform judges.
    let unknown = required.is_empty() && compat.optional.is_empty();
    let unsupported: Vec<String> =
        products.iter().filter(|p| !unknown && !has(&supported, p)).map(|p| p.to_string()).collect();
    if !unsupported.is_empty() {
        let supports = supported.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
        let kind = if required.is_empty() { "its modules extend only" } else { "it can be installed into" };
        return Err(format!(
            "the app cannot be installed into {} ({kind} {supports}): remove it from spec.products",
            unsupported.join(", ")
        ));
    }
    let mut out: Vec<Product> = Vec::new();
    for p in required.iter().chain(products) {
        if !has(&out, p) {
            out.push(*p);
        }
    }
    Ok(out)
}

/// The products `inst` has the app in, or is to: those its spec and the app's newest version ask
/// for (see [`products_to_install`]; the first product listed when they do not agree), then any
/// other product its status records an installation in. Never empty.
pub fn products_of(inst: &Installation, status: &InstallationStatus, app: Option<&ForgeApp>) -> Vec<Product> {
    let spec = &inst.spec;
    let newest = app.and_then(|a| versions::latest(a.deployed(&spec.environment)));
    let mut out = newest
        .and_then(|v| products_to_install(&spec.products, &v.compatibility).ok())
        .unwrap_or_else(|| spec.products.first().copied().into_iter().collect());
    if out.is_empty() {
        out.push(Product::Jira);
    }
    for recorded in &status.products {
        if !out.contains(&recorded.product) {
            out.push(recorded.product);
        }
    }
    out
}

/// Where `inst` lives on the platform in `product`: the app, environment, site and product.
pub fn target_in(inst: &Installation, app: &ForgeApp, product: Product) -> crate::platform::Target {
    crate::platform::Target {
        app_id: app.spec.app_id.clone(),
        environment_key: crate::platform::environment_key(&inst.spec.environment).to_string(),
        site: inst.spec.site.clone(),
        product: product.as_str().to_string(),
    }
}

/// Where `inst` lives on the platform in its first product (see [`products_of`]).
pub fn target(inst: &Installation, app: &ForgeApp) -> crate::platform::Target {
    let status = inst.status.clone().unwrap_or_default();
    let first = products_of(inst, &status, Some(app)).first().copied().unwrap_or(Product::Jira);
    target_in(inst, app, first)
}

/// The platform's id of version `to` in `inst`'s environment as the ForgeApp last observed it:
/// its highest patch (`M.m.p`), as [`crate::platform::site::version_id`] would ask the platform.
/// `None` when the observation has no id for it (the version was deployed since; the platform is
/// asked then).
pub fn observed_version_id(inst: &Installation, app: &ForgeApp, to: Version) -> Option<String> {
    let patch = |v: &AppVersion| {
        v.version.as_deref().and_then(|t| t.rsplit('.').next()).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0)
    };
    app.deployed(&inst.spec.environment)
        .iter()
        .filter(|v| Version { major: v.major, minor: v.minor } == to)
        .filter(|v| v.id.as_deref().is_some_and(|id| !id.is_empty()))
        .max_by_key(|v| patch(v))
        .and_then(|v| v.id.clone())
}

/// The step a recorded platform task carries out.
pub fn step_of(task: &TaskRecord) -> Step {
    let version = task.version.as_deref().and_then(Version::parse).unwrap_or(Version { major: 0, minor: 0 });
    match task.action {
        TaskAction::Install => Step::Install(version),
        _ => Step::UpgradeMajor(version),
    }
}

/// What an Installation reports once the controller has acted.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `Installed`, `UpToDate`, `Ready`, `Reconciling`, `Stalled`.
    pub conditions: Vec<Decided>,
    /// Whether the installed version asks for every permission the newest one does; `None` when
    /// nothing is installed.
    pub permissions_up_to_date: Option<bool>,
}

/// The conditions after acting: what `plan` (made from what is installed now) says, except
/// that a platform task under way, or a platform failure of `step`, says so on the conditions it
/// affects (`Installed` and `Ready` for an install, `UpToDate` otherwise). What only a change
/// fixes stays stalled; a failure is retried unless the platform refused for good.
pub fn report(
    plan: &Plan,
    installed: bool,
    task: Option<&TaskRecord>,
    unconfirmed: Option<&UnconfirmedRequest>,
    failure: Option<(Step, &PlatformError)>,
) -> Report {
    let mut conditions = plan.conditions.clone();
    let mut outcome = plan.outcome.clone();
    let mut serving = plan.serving.clone();
    let mut set = |install: bool, reason: Reason, message: String, next: Outcome<Reason>| {
        let affected: &[Type] = if install { &[Type::Installed] } else { &[Type::UpToDate] };
        for d in conditions.iter_mut().filter(|d| affected.contains(&d.type_)) {
            *d = Decided::new(d.type_, false, reason, message.clone());
        }
        if install {
            serving = None;
        }
        if !outcome.is_stalled() {
            outcome = next;
        }
    };
    if let Some((step, error)) = failure {
        let message = format!("{error} (retrying with backoff)");
        let next = if error.retryable() {
            Outcome::Retrying(Reason::PlatformError, message.clone())
        } else {
            Outcome::Stalled(Reason::PlatformError, error.message.clone())
        };
        set(matches!(step, Step::Install(_)), Reason::PlatformError, message, next);
    } else if let Some(lost) = unconfirmed {
        let what = match lost.action {
            TaskAction::Install => "install",
            TaskAction::Upgrade => "upgrade",
            TaskAction::Uninstall => "uninstall",
        };
        let message = format!(
            "the answer to the {what} request ({}) was not recorded (lost, or the operator stopped while sending): \
             reading the platform's installations to see whether it was carried out before anything is sent again",
            lost.version.as_deref().unwrap_or("")
        );
        let next = Outcome::InProgress(Reason::Confirming, message.clone());
        set(lost.action == TaskAction::Install, Reason::Confirming, message, next);
    } else if let Some(task) = task {
        let message = format!(
            "platform task {} ({} {}) is under way",
            task.id,
            task.action_str(),
            task.version.as_deref().unwrap_or("")
        );
        let next = Outcome::InProgress(Reason::Installing, message.clone());
        set(task.action == TaskAction::Install, Reason::Installing, message, next);
    }
    let permissions_up_to_date = installed.then(|| {
        !conditions.iter().any(|d| {
            d.type_ == Type::UpToDate && matches!(d.reason, Reason::PermissionsOutdated | Reason::ConsentRequired)
        })
    });
    conditions.extend(conditions::summary(&outcome, serving.as_ref()));
    Report { conditions, permissions_up_to_date }
}

/// A Warning to record when `Ready` turns False for a new reason (`before`: the conditions the
/// status had). A task under way is progress, not a blocker.
pub fn new_blocker(before: &[Condition], after: &[Decided]) -> Option<(Reason, String)> {
    let now = after
        .iter()
        .find(|d| d.type_ == Type::Ready)
        .filter(|d| !d.status && !matches!(d.reason, Reason::Installing | Reason::Confirming))?;
    let was = conditions::read::<Reason>(before, Type::Ready);
    if was.is_some_and(|(status, reason, _)| !status && reason == Some(now.reason)) {
        return None;
    }
    Some((now.reason, now.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AppVersion;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn ver(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    fn reasons(d: &Plan) -> Vec<(Type, bool, Reason)> {
        d.all_conditions().iter().map(|c| (c.type_, c.status, c.reason)).collect()
    }

    fn app() -> ForgeApp {
        ForgeApp::test("insights").read_as("dev").deploys(vec![
            AppVersion::test(1, 0).scopes(["read"]).optional([Product::Confluence]),
            AppVersion::test(1, 2).scopes(["read"]).optional([Product::Confluence]),
            AppVersion::test(2, 0).scopes(["read"]).optional([Product::Confluence]),
            AppVersion::test(3, 1).scopes(["read", "write"]).optional([Product::Confluence]),
        ])
    }

    #[test]
    fn the_version_id_comes_from_the_apps_observation_highest_patch_first() {
        let mut patched = AppVersion::test(1, 2);
        patched.version = Some("1.2.7".into());
        patched.id = Some("v-1-2-7".into());
        let mut no_id = AppVersion::test(2, 0);
        no_id.id = None;
        let app = ForgeApp::test("insights").read_as("dev").deploys(vec![
            AppVersion::test(1, 2),
            patched,
            no_id,
            AppVersion::test(3, 1),
        ]);
        let inst = Installation::test("acme");
        assert_eq!(observed_version_id(&inst, &app, ver(1, 2)).as_deref(), Some("v-1-2-7"));
        assert_eq!(observed_version_id(&inst, &app, ver(3, 1)).as_deref(), Some("v-3-1"));
        // No id observed, or not deployed as far as the app knows: the platform is asked.
        assert_eq!(observed_version_id(&inst, &app, ver(2, 0)), None);
        assert_eq!(observed_version_id(&inst, &app, ver(4, 0)), None);
        // Another environment's versions are not this one's.
        let mut staging = Installation::test("acme");
        staging.spec.environment = "staging".into();
        assert_eq!(observed_version_id(&staging, &app, ver(3, 1)), None);
    }

    #[test]
    fn first_install_takes_the_latest_minor_of_the_pinned_or_latest_major() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        assert_eq!(plan(&Installation::test("acme"), None, &facts).step, Step::Install(ver(3, 1)));
        assert_eq!(plan(&Installation::test("acme").pinned_to(1), None, &facts).step, Step::Install(ver(1, 2)));
        let d = plan(&Installation::test("acme").pinned_to(7), None, &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[2], (Type::Ready, false, Reason::VersionNotDeployed));
    }

    #[test]
    fn a_new_installation_needs_the_app_a_deployment_and_no_twin() {
        let d = plan(&Installation::test("acme"), None, &Facts::default());
        assert_eq!(reasons(&d)[0], (Type::Installed, false, Reason::AppNotFound));
        let empty = ForgeApp::test("insights").read_as("dev").deploys(vec![]);
        let d = plan(&Installation::test("acme"), None, &Facts { app: Some(&empty), ..Default::default() });
        assert_eq!(reasons(&d)[0], (Type::Installed, false, Reason::NotDeployed));
        let app = app();
        let facts = Facts { app: Some(&app), duplicate_of: Some("first".into()), ..Default::default() };
        let d = plan(&Installation::test("acme"), None, &facts);
        assert_eq!(reasons(&d)[0], (Type::Installed, false, Reason::AlreadyInstalled));
        assert!(d.conditions[0].message.contains("Installation first"));
    }

    #[test]
    fn the_required_product_is_needed() {
        let app = app();
        let d = plan(
            &Installation::test("acme").products([Product::Confluence]),
            None,
            &Facts { app: Some(&app), ..Default::default() },
        );
        assert_eq!(reasons(&d)[0], (Type::Installed, false, Reason::IncompatibleProducts));
        assert!(d.conditions[0].message.contains("spec.products must include jira"), "{}", d.conditions[0].message);
    }

    #[test]
    fn minors_are_the_platforms_to_roll_out() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = plan(&Installation::test("acme"), Some(ver(1, 0)), &facts);
        assert_eq!(d.step, Step::Nothing, "forgeops never pushes a minor");
        assert_eq!(reasons(&d)[0], (Type::Installed, true, Reason::Installed));
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::MinorRollingOut));
        assert!(
            d.conditions[1].message.contains("1.2 available, rolling out on the platform"),
            "{}",
            d.conditions[1].message
        );
        assert_eq!(reasons(&d)[2], (Type::Ready, true, Reason::Ready));
        assert_eq!(reasons(&d)[4], (Type::Stalled, false, Reason::AsExpected), "nothing for the user to do");
    }

    #[test]
    fn a_customers_site_is_never_installed_or_upgraded_by_forgeops() {
        let app = app();
        let facts =
            Facts { app: Some(&app), customer_site: true, link: Some("https://link".into()), ..Default::default() };
        let d = plan(&Installation::test("acme"), None, &facts);
        assert_eq!(d.step, Step::AwaitLinkInstall);
        assert_eq!(reasons(&d)[0], (Type::Installed, false, Reason::CustomerSite));
        assert!(d.conditions[0].message.contains("https://link"), "{}", d.conditions[0].message);
        // A new major, even approved, waits for the site's admin; the difference is told.
        let pinned = Installation::test("acme").pinned_to(3).approved(3);
        let d = plan(&pinned, Some(ver(1, 2)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::AwaitingAdminConsent));
        let message = &d.conditions[1].message;
        assert!(message.contains("scope write") && message.contains("https://link"), "{message}");
        assert_eq!(reasons(&d)[2], (Type::Ready, true, Reason::Ready), "it still serves");
        // Even a major that asks for nothing new.
        let d = plan(&Installation::test("acme").pinned_to(2), Some(ver(1, 2)), &facts);
        assert_eq!((d.step, reasons(&d)[1].2), (Step::Nothing, Reason::AwaitingAdminConsent));
    }

    #[test]
    fn enabling_licensing_needs_consent_even_without_new_scopes() {
        let paid = AppVersion::test(2, 0).scopes(["read"]).licensed();
        let app =
            ForgeApp::test("insights").read_as("dev").deploys(vec![AppVersion::test(1, 0).scopes(["read"]), paid]);
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = plan(&Installation::test("acme").pinned_to(2), Some(ver(1, 0)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::ConsentRequired));
        assert!(d.conditions[1].message.contains("licensing"), "{}", d.conditions[1].message);
        let approved = Installation::test("acme").pinned_to(2).approved(2);
        assert_eq!(plan(&approved, Some(ver(1, 0)), &facts).step, Step::UpgradeMajor(ver(2, 0)));
    }

    #[test]
    fn an_installation_never_changes_major_on_its_own() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = plan(&Installation::test("acme"), Some(ver(1, 2)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::PermissionsOutdated), "3.1 adds the write scope");
        assert_eq!(d.available, Some(ver(3, 1)));
        let no_new = ForgeApp::test("insights")
            .read_as("dev")
            .deploys(vec![AppVersion::test(1, 0).scopes(["read"]), AppVersion::test(2, 0).scopes(["read"])]);
        let d = plan(&Installation::test("acme"), Some(ver(1, 0)), &Facts { app: Some(&no_new), ..Default::default() });
        assert_eq!((d.step, reasons(&d)[1]), (Step::Nothing, (Type::UpToDate, false, Reason::UpgradeAvailable)));
        let d = plan(&Installation::test("acme"), Some(ver(3, 1)), &facts);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, true, Reason::UpToDate));
    }

    #[test]
    fn raising_the_major_upgrades_unless_consent_is_needed() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        assert_eq!(
            plan(&Installation::test("acme").pinned_to(2), Some(ver(1, 2)), &facts).step,
            Step::UpgradeMajor(ver(2, 0))
        );
        let d = plan(&Installation::test("acme").pinned_to(3), Some(ver(1, 2)), &facts);
        assert_eq!(d.step, Step::Nothing);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::ConsentRequired));
        assert!(d.conditions[1].message.contains("scope write"), "{}", d.conditions[1].message);
        assert_eq!(reasons(&d)[2], (Type::Ready, true, Reason::Ready));
        let approved = Installation::test("acme").pinned_to(3).approved(3);
        assert_eq!(plan(&approved, Some(ver(1, 2)), &facts).step, Step::UpgradeMajor(ver(3, 1)));
    }

    #[test]
    fn lowering_the_major_is_refused_and_missing_majors_are_reported() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let d = plan(&Installation::test("acme").pinned_to(1), Some(ver(2, 0)), &facts);
        assert_eq!(reasons(&d)[1], (Type::UpToDate, false, Reason::DowngradeNotAllowed));
        let message = &d.conditions[1].message;
        assert!(message.contains("delete this Installation") && message.contains("back to 2"), "{message}");
        let d = plan(&Installation::test("acme").pinned_to(9), Some(ver(2, 0)), &facts);
        assert_eq!(reasons(&d)[2], (Type::Ready, false, Reason::VersionNotDeployed));
    }

    #[test]
    fn added_permissions_lists_scopes_and_egress() {
        let to = AppVersion::test(2, 0).scopes(["read", "write"]).egress(["api.example.com"]);
        let from = AppVersion::test(1, 0).scopes(["read"]);
        assert_eq!(added_permissions(Some(&from), &to), vec!["scope write", "egress api.example.com"]);
        assert!(added_permissions(Some(&to), &from).is_empty(), "removing permissions adds nothing");
    }

    #[test]
    fn a_task_or_a_platform_failure_says_so_on_the_conditions_it_affects() {
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let kinds = |r: &Report| r.conditions.iter().map(|c| (c.type_, c.status, c.reason)).collect::<Vec<_>>();
        let installing = plan(&Installation::test("acme"), None, &facts);
        let task = TaskRecord {
            id: "t-1".into(),
            action: TaskAction::Install,
            version: Some("3.1".into()),
            started_at: Time(jiff::Timestamp::from_second(1).unwrap()),
        };
        let r = report(&installing, false, Some(&task), None, None);
        assert_eq!(kinds(&r)[0], (Type::Installed, false, Reason::Installing));
        assert_eq!(kinds(&r)[2], (Type::Ready, false, Reason::Installing));
        assert_eq!(kinds(&r)[3], (Type::Reconciling, true, Reason::Installing));
        assert!(r.conditions[0].message.contains("platform task t-1"), "{}", r.conditions[0].message);
        assert_eq!(r.permissions_up_to_date, None, "nothing installed");

        let down = PlatformError::new(crate::platform::ErrorKind::Unavailable, "op", "down");
        let r = report(&installing, false, None, None, Some((Step::Install(ver(3, 1)), &down)));
        assert_eq!(kinds(&r)[2], (Type::Ready, false, Reason::PlatformError));
        assert_eq!((kinds(&r)[3], kinds(&r)[4].1), ((Type::Reconciling, true, Reason::PlatformError), false));
        let refused = PlatformError::new(crate::platform::ErrorKind::InstallationLimitReached, "op", "limit");
        let r = report(&installing, false, None, None, Some((Step::Install(ver(3, 1)), &refused)));
        assert_eq!(kinds(&r)[4], (Type::Stalled, true, Reason::PlatformError), "not retried: a change is needed");

        // An installed site that fails to upgrade still serves: Ready stays True.
        let upgrading = plan(&Installation::test("acme").pinned_to(2), Some(ver(1, 2)), &facts);
        let r = report(&upgrading, true, None, None, Some((upgrading.step, &down)));
        assert_eq!(kinds(&r)[1], (Type::UpToDate, false, Reason::PlatformError));
        assert_eq!(kinds(&r)[2], (Type::Ready, true, Reason::Ready));
        assert_eq!(r.permissions_up_to_date, Some(true));
        // What only a change fixes stays stalled whatever else happens.
        let consent = plan(&Installation::test("acme").pinned_to(3), Some(ver(1, 2)), &facts);
        let r = report(&consent, true, None, None, None);
        assert_eq!(kinds(&r)[4], (Type::Stalled, true, Reason::ConsentRequired));
        assert_eq!(r.permissions_up_to_date, Some(false));
    }

    #[test]
    fn a_warning_is_told_once_per_new_blocker_and_never_for_progress() {
        let now = Time(jiff::Timestamp::from_second(1).unwrap());
        let app = app();
        let facts = Facts { app: Some(&app), ..Default::default() };
        let missing = plan(&Installation::test("acme"), None, &Facts::default()).all_conditions();
        assert_eq!(new_blocker(&[], &missing).map(|b| b.0), Some(Reason::AppNotFound));
        let written = conditions::merge(&[], &missing, None, &now);
        assert_eq!(new_blocker(&written, &missing), None, "told already");
        let installing = plan(&Installation::test("acme"), None, &facts).all_conditions();
        assert_eq!(new_blocker(&written, &installing), None, "a task under way is progress");
        let wrong = plan(&Installation::test("acme").products([Product::Confluence]), None, &facts).all_conditions();
        assert_eq!(new_blocker(&written, &wrong).map(|b| b.0), Some(Reason::IncompatibleProducts));
    }
}
