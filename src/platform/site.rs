//! The platform calls of one site's installation: find the platform's version id, start an
//! install, upgrade or uninstall, read its task, and find what is installed. The platform takes no
//! idempotency key, so an install or upgrade the platform says is already done
//! (`APP_ALREADY_INSTALLED`, `INSTALLATION_ALREADY_UPGRADED`) answers [`Sent::AlreadyDone`], and
//! what is installed is read, never assumed. What to do with an answer is decided by
//! [`crate::rules::installation::decide`]; nothing here decides.

use std::time::Duration;

use super::{Credentials, ErrorKind, InstallationInfo, Platform, PlatformError, Target, TaskState};
use crate::rules::versions::Version;

/// The first look at a task, after it starts (the CLI's poll interval).
pub const TASK_POLL: Duration = Duration::from_millis(500);
/// The longest wait between two looks at a task.
pub const TASK_POLL_MAX: Duration = Duration::from_secs(5);

/// When to look at a task again, `elapsed` after it started: the CLI's 500 ms at first, then half
/// the time it has run so far (a task that took 4 s is unlikely to end in the next 250 ms), at most
/// [`TASK_POLL_MAX`]. A platform that completes a task in under half a second is polled once.
pub fn task_poll_after(elapsed: Duration) -> Duration {
    (elapsed / 2).clamp(TASK_POLL, TASK_POLL_MAX)
}

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

/// Starts installing (`upgrade` false) or upgrading to `to`: to the version id `known` (the
/// ForgeApp's own observation of the environment, see
/// [`crate::rules::installation::observed_version_id`]), or, when the observation has none, the
/// id the platform answers now ([`version_id`]).
pub async fn start(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    upgrade: bool,
    to: Version,
    known: Option<String>,
) -> Result<Sent, PlatformError> {
    let id = match known {
        Some(id) => id,
        None => version_id(platform, creds, target, to).await?,
    };
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
    let found = platform.installations_in(creds, &target.app_id, &context).await?;
    Ok(found.into_iter().find(|i| i.environment_key == target.environment_key))
}

/// The platform's installation with the id forgeops recorded, if it still exists.
pub async fn installation_by_id(
    platform: &dyn Platform,
    creds: &Credentials,
    target: &Target,
    id: &str,
) -> Result<Option<InstallationInfo>, PlatformError> {
    platform.installation_with_id(creds, &target.app_id, id).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_polled_at_the_clis_interval_then_backing_off_to_five_seconds() {
        assert_eq!(task_poll_after(Duration::ZERO), TASK_POLL);
        assert_eq!(task_poll_after(Duration::from_millis(900)), TASK_POLL);
        assert_eq!(task_poll_after(Duration::from_secs(3)), Duration::from_millis(1500));
        assert_eq!(task_poll_after(Duration::from_secs(60)), TASK_POLL_MAX);
    }
}
