//! The GraphQL operations forgeops sends to the gateway, verbatim from the pinned `@forge/cli` 13.3.0
//! package (each `.graphql` file names its source; `tests/graphql_ops_match_cli.rs` fails when the CLI's
//! text and ours drift apart). `forgeops_*.graphql` are forgeops' own operations for the distribution
//! capability, which the CLI does not offer, and `forgeops_getTenantContexts`, the CLI's tenant-context
//! lookup asked for many sites at once.

/// `forge_cli_cancelAppVersionUpgradeRollout`.
pub const CANCEL_APP_VERSION_UPGRADE_ROLLOUT: &str =
    include_str!("ops/forge_cli_cancelAppVersionUpgradeRollout.graphql");
/// `forge_cli_createAppVersionUpgradeRollout`.
pub const CREATE_APP_VERSION_UPGRADE_ROLLOUT: &str =
    include_str!("ops/forge_cli_createAppVersionUpgradeRollout.graphql");
/// `forge_cli_getAppUpgradableToList`.
pub const GET_APP_UPGRADABLE_TO_LIST: &str = include_str!("ops/forge_cli_getAppUpgradableToList.graphql");
/// `forge_cli_getAppUpgradeVersionsList`.
pub const GET_APP_UPGRADE_VERSIONS_LIST: &str = include_str!("ops/forge_cli_getAppUpgradeVersionsList.graphql");
/// `forge_cli_getAppVersionRollout`.
pub const GET_APP_VERSION_ROLLOUT: &str = include_str!("ops/forge_cli_getAppVersionRollout.graphql");
/// `forge_cli_getAppVersionRolloutsList`.
pub const GET_APP_VERSION_ROLLOUTS_LIST: &str = include_str!("ops/forge_cli_getAppVersionRolloutsList.graphql");
/// `forge_cli_getApplicationEnvironmentLatestVersions`.
pub const GET_APPLICATION_ENVIRONMENT_LATEST_VERSIONS: &str =
    include_str!("ops/forge_cli_getApplicationEnvironmentLatestVersions.graphql");
/// `forge_cli_getApplicationIdentityVersionDetails`.
pub const GET_APPLICATION_IDENTITY_VERSION_DETAILS: &str =
    include_str!("ops/forge_cli_getApplicationIdentityVersionDetails.graphql");
/// `forge_cli_getApplicationVersionDetails`.
pub const GET_APPLICATION_VERSION_DETAILS: &str = include_str!("ops/forge_cli_getApplicationVersionDetails.graphql");
/// `forge_cli_getEcosystemInstallationsByApp`.
pub const GET_ECOSYSTEM_INSTALLATIONS_BY_APP: &str =
    include_str!("ops/forge_cli_getEcosystemInstallationsByApp.graphql");
/// `forge_cli_getHostnameForTenantContexts`.
pub const GET_HOSTNAME_FOR_TENANT_CONTEXTS: &str = include_str!("ops/forge_cli_getHostnameForTenantContexts.graphql");
/// `forge_cli_getInstallationTask`.
pub const GET_INSTALLATION_TASK: &str = include_str!("ops/forge_cli_getInstallationTask.graphql");
/// `forge_cli_getUserDetails`.
pub const GET_USER_DETAILS: &str = include_str!("ops/forge_cli_getUserDetails.graphql");
/// `forge_cli_installApplication`.
pub const INSTALL_APPLICATION: &str = include_str!("ops/forge_cli_installApplication.graphql");
/// `forge_cli_listEnvironment`.
pub const LIST_ENVIRONMENT: &str = include_str!("ops/forge_cli_listEnvironment.graphql");
/// `forge_cli_uninstallApplication`.
pub const UNINSTALL_APPLICATION: &str = include_str!("ops/forge_cli_uninstallApplication.graphql");
/// `forge_cli_upgradeApplication`.
pub const UPGRADE_APPLICATION: &str = include_str!("ops/forge_cli_upgradeApplication.graphql");
/// `getTenantContextDetails`.
pub const GET_TENANT_CONTEXT_DETAILS: &str = include_str!("ops/getTenantContextDetails.graphql");

/// `forgeops_updateAppDetails` (distribution capability).
pub const FORGEOPS_UPDATE_APP_DETAILS: &str = include_str!("ops/forgeops_updateAppDetails.graphql");
/// `forgeops_generateDistributionLink` (distribution capability).
pub const FORGEOPS_GENERATE_DISTRIBUTION_LINK: &str = include_str!("ops/forgeops_generateDistributionLink.graphql");
/// `forgeops_getTenantContexts`: `getTenantContextDetails` for many sites in one request.
pub const FORGEOPS_GET_TENANT_CONTEXTS: &str = include_str!("ops/forgeops_getTenantContexts.graphql");
/// `forgeops_getAppMetricsInvocations`: the App metrics API's invocations per version and context.
pub const FORGEOPS_GET_APP_METRICS_INVOCATIONS: &str = include_str!("ops/forgeops_getAppMetricsInvocations.graphql");
/// `forgeops_getAppMetricsErrors`: the App metrics API's failed invocations per version and context.
pub const FORGEOPS_GET_APP_METRICS_ERRORS: &str = include_str!("ops/forgeops_getAppMetricsErrors.graphql");
/// `forgeops_getAppSharing` (distribution capability).
pub const FORGEOPS_GET_APP_SHARING: &str = include_str!("ops/forgeops_getAppSharing.graphql");

/// Every CLI operation above, by operation name.
pub const CLI_OPERATIONS: &[(&str, &str)] = &[
    ("forge_cli_cancelAppVersionUpgradeRollout", CANCEL_APP_VERSION_UPGRADE_ROLLOUT),
    ("forge_cli_createAppVersionUpgradeRollout", CREATE_APP_VERSION_UPGRADE_ROLLOUT),
    ("forge_cli_getAppUpgradableToList", GET_APP_UPGRADABLE_TO_LIST),
    ("forge_cli_getAppUpgradeVersionsList", GET_APP_UPGRADE_VERSIONS_LIST),
    ("forge_cli_getAppVersionRollout", GET_APP_VERSION_ROLLOUT),
    ("forge_cli_getAppVersionRolloutsList", GET_APP_VERSION_ROLLOUTS_LIST),
    ("forge_cli_getApplicationEnvironmentLatestVersions", GET_APPLICATION_ENVIRONMENT_LATEST_VERSIONS),
    ("forge_cli_getApplicationIdentityVersionDetails", GET_APPLICATION_IDENTITY_VERSION_DETAILS),
    ("forge_cli_getApplicationVersionDetails", GET_APPLICATION_VERSION_DETAILS),
    ("forge_cli_getEcosystemInstallationsByApp", GET_ECOSYSTEM_INSTALLATIONS_BY_APP),
    ("forge_cli_getHostnameForTenantContexts", GET_HOSTNAME_FOR_TENANT_CONTEXTS),
    ("forge_cli_getInstallationTask", GET_INSTALLATION_TASK),
    ("forge_cli_getUserDetails", GET_USER_DETAILS),
    ("forge_cli_installApplication", INSTALL_APPLICATION),
    ("forge_cli_listEnvironment", LIST_ENVIRONMENT),
    ("forge_cli_uninstallApplication", UNINSTALL_APPLICATION),
    ("forge_cli_upgradeApplication", UPGRADE_APPLICATION),
    ("getTenantContextDetails", GET_TENANT_CONTEXT_DETAILS),
];

/// The operation text without its leading `#` comment lines, as it is sent.
pub fn text(op: &str) -> &str {
    let mut rest = op;
    while rest.starts_with('#') {
        rest = rest.split_once('\n').map(|(_, r)| r).unwrap_or("");
    }
    rest
}
