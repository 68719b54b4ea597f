//! The platform calls of one site's installation: find the platform's version id, start an
//! install, upgrade or uninstall, read its task, and find what is installed. The platform takes no
//! idempotency key, so an install or upgrade the platform says is already done
//! (`APP_ALREADY_INSTALLED`, `INSTALLATION_ALREADY_UPGRADED`) answers [`Sent::AlreadyDone`], and
//! what is installed is read, never assumed. What to do with an answer is decided by
//! [`crate::rules::installation::decide`]; nothing here decides.

use std::time::Duration;

use super::{Credentials, ErrorKind, InstallationFilter, InstallationInfo, Platform, PlatformError, Target, TaskState};
use crate::rules::versions::Version;

/// How often a task is polled (the CLI polls every 500 ms).
pub const TASK_POLL: Duration = Duration::from_millis(250);

/// How the platform answered a mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A task was started: wait for it.
    Task(String),
    /// The platform says the site already has what was asked.
    AlreadyDone,
    /// An uninstall found nothing installed any more.
    NothingInstalled,
}

/// How a task stands.
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

/// The platform's id of version `to` (its highest patch) in the app environment.
pub async fn version_id(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    to: Version,
) -> Result<String, PlatformError> {
    let versions = platform.versions(creds, &target.app_id, &target.environment_key).await?;
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

/// Starts installing (`upgrade` false) or upgrading to `to`.
pub async fn start(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    upgrade: bool,
    to: Version,
) -> Result<Sent, PlatformError> {
    let id = version_id(platform, creds, target, to).await?;
    let started = if upgrade {
        platform.start_upgrade(creds, target, Some(&id)).await
    } else {
        platform.start_install(creds, target, Some(&id)).await
    };
    match started {
        Ok(task) => Ok(Sent::Task(task)),
        Err(e) if matches!(e.kind, ErrorKind::AlreadyInstalled | ErrorKind::AlreadyUpgraded) => Ok(Sent::AlreadyDone),
        Err(e) => Err(e),
    }
}

/// Starts uninstalling the installation `id` (in `context`, as the CLI sends them).
pub async fn start_uninstall(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    id: &str,
    context: &str,
) -> Result<Sent, PlatformError> {
    let context = Some(context).filter(|c| !c.is_empty());
    match platform.start_uninstall(creds, &target.app_id, &target.environment_key, id, context).await {
        Ok(task) => Ok(Sent::Task(task)),
        Err(e) if e.kind == ErrorKind::NotFound => Ok(Sent::NothingInstalled),
        Err(e) => Err(e),
    }
}

/// Reads a task once.
pub async fn poll(platform: &dyn Platform, creds: &Credentials, task_id: &str) -> Result<TaskOutcome, PlatformError> {
    let task = match platform.task(creds, task_id).await {
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

/// The platform's installation of the app environment on the target's site and product, if any.
pub async fn find_installation(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
) -> Result<Option<InstallationInfo>, PlatformError> {
    let context = match platform.installation_context(creds, &target.site, &target.product).await {
        Ok(c) => c,
        Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let filter = InstallationFilter { contexts: vec![context], ..Default::default() };
    let mut after: Option<String> = None;
    loop {
        let page = platform.installations(creds, &target.app_id, &filter, after.as_deref()).await?;
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
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    id: &str,
) -> Result<Option<InstallationInfo>, PlatformError> {
    let filter = InstallationFilter { ids: vec![id.to_string()], ..Default::default() };
    let page = platform.installations(creds, &target.app_id, &filter, None).await?;
    Ok(page.items.into_iter().find(|i| i.id == id))
}
