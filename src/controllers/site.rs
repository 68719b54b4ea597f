//! Carrying out installs, upgrades and uninstalls of one site on the platform: find the platform's
//! version id, start the task, wait for it. The platform takes no idempotency key, so an install or
//! upgrade that the platform says is already done (`APP_ALREADY_INSTALLED`,
//! `INSTALLATION_ALREADY_UPGRADED`) counts as done, and callers record the task id before waiting.

use std::time::Duration;

use kube::ResourceExt;

use super::Context;
use crate::api::{ForgeApp, Installation, TaskAction};
use crate::platform::{Credentials, ErrorKind, InstallationFilter, PlatformError, Target, TaskState};
use crate::rules::versions::{Version, latest};

/// How often a task is polled (the CLI polls every 500 ms).
pub const TASK_POLL: Duration = Duration::from_millis(250);
/// How long an uninstall waits for its task before it lets go (and tries again later).
pub const TASK_WAIT: Duration = Duration::from_secs(120);

/// How a start went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// A task was started: wait for it.
    Task(String),
    /// The platform says the site already has it.
    AlreadyDone,
}

/// Where `inst` lives on the platform: the app, environment, site and the product to install into
/// (the app's required product when the Installation lists it, else its first product).
pub fn target(inst: &Installation, app: &ForgeApp) -> Target {
    let required = latest(app.deployed(&inst.spec.environment)).map(|v| v.compatibility.required);
    let product = required
        .filter(|p| inst.spec.products.contains(p))
        .or_else(|| inst.spec.products.first().copied())
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "jira".into());
    Target {
        app_id: app.spec.app_id.clone(),
        environment_key: crate::platform::environment_key(&inst.spec.environment).to_string(),
        site: inst.spec.site.clone(),
        product,
    }
}

/// The platform's id of version `to` (its highest patch) in the app environment.
pub async fn version_id(
    ctx: &Context,
    creds: &Credentials,
    target: &Target,
    to: Version,
) -> Result<String, PlatformError> {
    let versions = ctx.platform.versions(creds, &target.app_id, &target.environment_key).await?;
    versions
        .iter()
        .filter(|v| Version::parse(&v.version) == Some(to) && !v.id.is_empty())
        .max_by_key(|v| v.version.rsplit('.').next().and_then(|p| p.parse::<u32>().ok()).unwrap_or(0))
        .map(|v| v.id.clone())
        .ok_or_else(|| {
            PlatformError::new(
                ErrorKind::NotFound,
                "forge_cli_getApplicationIdentityVersionDetails",
                format!(
                    "version {to} of {} is not deployed in environment {} on the platform: deploy it with `forge deploy -e {}`",
                    target.app_id, target.environment_key, target.environment_key
                ),
            )
        })
}

/// Starts installing or upgrading to `to`.
pub async fn start(
    ctx: &Context,
    creds: &Credentials,
    target: &Target,
    action: TaskAction,
    to: Version,
) -> Result<Started, PlatformError> {
    let id = version_id(ctx, creds, target, to).await?;
    let started = match action {
        TaskAction::Install => ctx.platform.start_install(creds, target, Some(&id)).await,
        _ => ctx.platform.start_upgrade(creds, target, Some(&id)).await,
    };
    match started {
        Ok(task) => Ok(Started::Task(task)),
        Err(e) if matches!(e.kind, ErrorKind::AlreadyInstalled | ErrorKind::AlreadyUpgraded) => {
            Ok(Started::AlreadyDone)
        }
        Err(e) => Err(e),
    }
}

/// How a task stands (or how waiting on it ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    Complete,
    /// The task failed only because the site already had what it asked for
    /// (`APP_ALREADY_INSTALLED`, `INSTALLATION_ALREADY_UPGRADED`): read what is installed.
    AlreadyDone,
    /// The task failed, with what the platform said (or the platform no longer knows it).
    Failed(String),
    /// Still running: look again later.
    StillRunning,
}

/// Reads a task once.
pub async fn poll(ctx: &Context, creds: &Credentials, task_id: &str) -> Result<TaskOutcome, PlatformError> {
    let task = match ctx.platform.task(creds, task_id).await {
        Ok(task) => task,
        Err(e) if e.kind == ErrorKind::NotFound => {
            return Ok(TaskOutcome::Failed(format!("the platform no longer knows task {task_id}")));
        }
        Err(e) => return Err(e),
    };
    Ok(match task.state {
        TaskState::Complete => TaskOutcome::Complete,
        TaskState::Failed if task.already_done() => TaskOutcome::AlreadyDone,
        TaskState::Failed => TaskOutcome::Failed(task.messages()),
        _ => TaskOutcome::StillRunning,
    })
}

/// Waits for a task, for at most [`TASK_WAIT`] (for uninstalls, which record no task).
pub async fn wait(ctx: &Context, creds: &Credentials, task_id: &str) -> Result<TaskOutcome, PlatformError> {
    let deadline = tokio::time::Instant::now() + TASK_WAIT;
    loop {
        match poll(ctx, creds, task_id).await? {
            TaskOutcome::StillRunning if tokio::time::Instant::now() < deadline => tokio::time::sleep(TASK_POLL).await,
            outcome => return Ok(outcome),
        }
    }
}

/// Waits for a task to complete; failing, or still running after [`TASK_WAIT`], is an error.
pub async fn finish(ctx: &Context, creds: &Credentials, task_id: &str, what: &str) -> Result<(), PlatformError> {
    let failed = |m: String| PlatformError::new(ErrorKind::Unavailable, "forge_cli_getInstallationTask", m);
    match wait(ctx, creds, task_id).await? {
        TaskOutcome::Complete | TaskOutcome::AlreadyDone => Ok(()),
        TaskOutcome::Failed(said) => Err(failed(format!("{what} failed on the platform: {said}"))),
        TaskOutcome::StillRunning => Err(failed(format!("{what} task {task_id} is still running after {TASK_WAIT:?}"))),
    }
}

/// The platform's installation of the app environment on the target's site, if any.
pub async fn find_installation(
    ctx: &Context,
    creds: &Credentials,
    target: &Target,
) -> Result<Option<crate::platform::InstallationInfo>, PlatformError> {
    let context = match ctx.platform.installation_context(creds, &target.site, &target.product).await {
        Ok(c) => c,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let filter = InstallationFilter { contexts: vec![context], ..Default::default() };
    let mut after: Option<String> = None;
    loop {
        let page = ctx.platform.installations(creds, &target.app_id, &filter, after.as_deref()).await?;
        if let Some(found) = page.items.into_iter().find(|i| i.environment_key == target.environment_key) {
            return Ok(Some(found));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(None),
        }
    }
}

/// The platform's installation with the id forgeops recorded, if it still exists.
pub async fn installation_by_id(
    ctx: &Context,
    creds: &Credentials,
    target: &Target,
    id: &str,
) -> Result<Option<crate::platform::InstallationInfo>, PlatformError> {
    let filter = InstallationFilter { ids: vec![id.to_string()], ..Default::default() };
    let page = ctx.platform.installations(creds, &target.app_id, &filter, None).await?;
    Ok(page.items.into_iter().find(|i| i.id == id))
}

/// Starts uninstalling the installation with the recorded id (found by app, environment and site
/// only when no id was recorded). `None`: nothing is installed any more.
pub async fn start_uninstall(
    ctx: &Context,
    creds: &Credentials,
    inst: &Installation,
    target: &Target,
    recorded_id: Option<&str>,
) -> Result<Option<String>, PlatformError> {
    let found = match recorded_id {
        Some(id) => installation_by_id(ctx, creds, target, id).await?,
        None => find_installation(ctx, creds, target).await?,
    };
    let Some(found) = found else {
        tracing::info!(installation = %inst.name_any(), site = %target.site, "nothing installed on the platform");
        return Ok(None);
    };
    let context = Some(found.installation_context.as_str());
    match ctx.platform.start_uninstall(creds, &target.app_id, &target.environment_key, &found.id, context).await {
        Ok(task) => Ok(Some(task)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
