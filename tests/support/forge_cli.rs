#![allow(dead_code)] // each test binary uses a different part of this module

//! The real Forge CLI (`@forge/cli`, pinned by `tests/forge-cli/package-lock.json`), installed on
//! first use into a cache outside the work tree, and a helper that runs it against a local
//! GraphQL gateway (the platform emulator) with no network access other than loopback.
//!
//! Cache: `$FORGEOPS_CACHE_DIR/forge-cli/<sha256 prefix of package-lock.json>/`, where
//! `FORGEOPS_CACHE_DIR` defaults to `$XDG_CACHE_HOME/forgeops` or `~/.cache/forgeops` (as in
//! `hack/controlplane/build.sh`). The install runs `npm ci --ignore-scripts` in a temporary
//! directory next to the cache entry, under an exclusive lock file, and is renamed into place
//! only when complete, so parallel test binaries neither collide nor see a half install.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The pinned CLI version (checked against the installed package).
pub const CLI_VERSION: &str = "13.3.0";

/// Written inside a cache entry once `npm ci` has finished there.
const COMPLETE_MARKER: &str = ".forgeops-complete";

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `$FORGEOPS_CACHE_DIR`, else `$XDG_CACHE_HOME/forgeops`, else `~/.cache/forgeops`.
pub fn cache_dir() -> PathBuf {
    let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = nonempty("FORGEOPS_CACHE_DIR") {
        return dir;
    }
    let base = nonempty("XDG_CACHE_HOME")
        .unwrap_or_else(|| nonempty("HOME").expect("HOME or XDG_CACHE_HOME must be set").join(".cache"));
    base.join("forgeops")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache entry for the committed lock file (it need not exist yet).
pub fn cli_install_dir_path() -> PathBuf {
    let lock =
        fs::read(repo_path("tests/forge-cli/package-lock.json")).expect("reading tests/forge-cli/package-lock.json");
    let digest = ring::digest::digest(&ring::digest::SHA256, &lock);
    cache_dir().join("forge-cli").join(&hex(digest.as_ref())[..16])
}

/// The directory holding `node_modules/` with the pinned CLI, installed on first use.
pub fn cli_install_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| install().unwrap_or_else(|e| panic!("installing the pinned Forge CLI: {e:#}"))).clone()
}

/// The installed `@forge/cli` package directory (`.../node_modules/@forge/cli`).
pub fn cli_package_dir() -> PathBuf {
    cli_install_dir().join("node_modules/@forge/cli")
}

/// The `forge` executable of the pinned CLI.
pub fn forge_bin() -> PathBuf {
    cli_install_dir().join("node_modules/.bin/forge")
}

/// Resolves a path such as `@forge/cli-shared/out/x.js` (as named in the `src/platform/ops`
/// headers) inside the installed packages.
pub fn resolve_package_file(rel: &str) -> Option<PathBuf> {
    let root = cli_install_dir().join("node_modules");
    let mut candidates = vec![root.join(rel)];
    // npm may nest a dependency under the CLI's own node_modules.
    candidates.push(cli_package_dir().join("node_modules").join(rel));
    candidates.into_iter().find(|p| p.is_file())
}

fn is_complete(dir: &Path) -> bool {
    dir.join(COMPLETE_MARKER).is_file() && dir.join("node_modules/.bin/forge").exists()
}

/// Holds an exclusive lock (`flock`, through std's `File::lock`) on a file until dropped.
struct FileLock(File);

impl FileLock {
    fn acquire(path: &Path) -> anyhow::Result<FileLock> {
        let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
        file.lock().map_err(|e| anyhow::anyhow!("locking {}: {e}", path.display()))?;
        Ok(FileLock(file))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release the lock too.
        let _ = self.0.unlock();
    }
}

fn install() -> anyhow::Result<PathBuf> {
    let dir = cli_install_dir_path();
    if is_complete(&dir) {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap();
    fs::create_dir_all(parent)?;
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let _lock = FileLock::acquire(&parent.join(format!("{name}.lock")))?;
    if is_complete(&dir) {
        return Ok(dir); // another process installed it while we waited
    }
    if dir.exists() {
        // A leftover that is not complete (cannot happen through this code, which renames only
        // complete installs into place, but a user may have interfered): start over.
        fs::remove_dir_all(&dir)?;
    }
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    for file in ["package.json", "package-lock.json"] {
        fs::copy(repo_path(&format!("tests/forge-cli/{file}")), tmp.join(file))?;
    }
    eprintln!("forge_cli: installing @forge/cli {CLI_VERSION} into {} (first run only)", dir.display());
    let out = Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&tmp)
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            anyhow::bail!("running npm (is Node.js installed?): {e}");
        }
    };
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        anyhow::bail!(
            "npm ci failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let pkg: serde_json::Value = serde_json::from_slice(&fs::read(tmp.join("node_modules/@forge/cli/package.json"))?)?;
    if pkg["version"] != CLI_VERSION {
        let _ = fs::remove_dir_all(&tmp);
        anyhow::bail!("npm installed @forge/cli {}, expected {CLI_VERSION}", pkg["version"]);
    }
    File::create(tmp.join(COMPLETE_MARKER))?.write_all(b"ok\n")?;
    fs::rename(&tmp, &dir)?;
    Ok(dir)
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "forgeops-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&path).expect("creating a temporary directory");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Preloaded into the CLI's Node.js process: refuses every TCP connection that is not to a
/// loopback address, so a test can never reach the real platform (or anything else).
const LOOPBACK_ONLY_JS: &str = r#"'use strict';
const net = require('net');
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']);
function target(args) {
  let a = args[0];
  if (Array.isArray(a)) a = a[0];
  if (a !== null && typeof a === 'object') return a.path ? null : (a.host || a.hostname || 'localhost');
  if (typeof a === 'string' && isNaN(Number(a))) return null; // a unix socket path
  return typeof args[1] === 'string' ? args[1] : 'localhost';
}
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const host = target(args);
  if (host !== null && !LOOPBACK.has(String(host).replace(/^\[|\]$/g, '')) && !/^127\./.test(String(host))) {
    const err = new Error('forgeops tests: network access to ' + host + ' is blocked (loopback only)');
    err.code = 'ECONNREFUSED';
    process.nextTick(() => this.destroy(err));
    return this;
  }
  return connect.apply(this, args);
};
"#;

/// How to run the CLI: the gateway it talks to and the credentials it presents.
#[derive(Clone, Debug)]
pub struct ForgeEnv {
    /// `FORGE_GRAPHQL_GATEWAY`, e.g. the emulator's `graphql_url()`.
    pub gateway: String,
    pub email: String,
    pub api_token: String,
    /// When set, the working directory holds a `manifest.yml` with `app: { id: <this>, runtime }`
    /// (the `version` commands read the app from it).
    pub app_ari: Option<String>,
    /// Extra environment variables.
    pub extra_env: Vec<(String, String)>,
    pub timeout: Duration,
}

impl ForgeEnv {
    pub fn new(gateway: impl Into<String>, email: impl Into<String>, api_token: impl Into<String>) -> ForgeEnv {
        ForgeEnv {
            gateway: gateway.into(),
            email: email.into(),
            api_token: api_token.into(),
            app_ari: None,
            extra_env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn with_app(mut self, app_ari: impl Into<String>) -> ForgeEnv {
        self.app_ari = Some(app_ari.into());
        self
    }
}

/// Runs `forge <args>` with a fresh `HOME`, the gateway and credentials of `env`, analytics off,
/// and loopback-only networking; kills it (and its process group) after `env.timeout`.
pub fn forge(args: &[&str], env: &ForgeEnv) -> Output {
    let bin = forge_bin();
    let home = TempDir::new("forge-home");
    let work = TempDir::new("forge-work");
    if let Some(app) = &env.app_ari {
        // The CLI validates the manifest before the `version` commands: `runtime` is required.
        fs::write(work.path().join("manifest.yml"), format!("app:\n  id: {app}\n  runtime:\n    name: nodejs22.x\n"))
            .unwrap();
    }
    let preload = home.path().join("loopback-only.js");
    fs::write(&preload, LOOPBACK_ONLY_JS).unwrap();

    let mut cmd = Command::new(&bin);
    cmd.args(args)
        .current_dir(work.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_CACHE_HOME", home.path().join(".cache"))
        .env("TMPDIR", home.path())
        .env("FORGE_GRAPHQL_GATEWAY", &env.gateway)
        .env("FORGE_EMAIL", &env.email)
        .env("FORGE_API_TOKEN", &env.api_token)
        .env("FORGE_DISABLE_ANALYTICS", "1")
        .env("NO_UPDATE_NOTIFIER", "1")
        .env("CI", "true")
        .env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0")
        .env("NODE_OPTIONS", format!("--require {}", preload.display()))
        // Anything that honours proxy variables is sent to a dead loopback port.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost,::1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in &env.extra_env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(env.timeout) {
        Ok(result) => result,
        Err(_) => {
            // The process group of the child we started (process_group(0)): the CLI and its children.
            forgeops_testenv::sys::kill_process_group(pid, forgeops_testenv::sys::SIGKILL);
            let out = rx.recv().expect("waiting for the killed CLI").expect("collecting the CLI's output");
            panic!(
                "`forge {}` did not finish within {:?}; killed.\n--- stdout\n{}\n--- stderr\n{}",
                args.join(" "),
                env.timeout,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    result.unwrap_or_else(|e| panic!("running `forge {}`: {e}", args.join(" ")))
}

/// `forge` that must succeed: panics with the command, exit status, stdout and stderr otherwise.
/// Returns stdout.
pub fn forge_ok(args: &[&str], env: &ForgeEnv) -> String {
    let out = forge(args, env);
    assert!(out.status.success(), "{}", describe(args, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command, its exit status and both output streams, for assertion messages.
pub fn describe(args: &[&str], out: &Output) -> String {
    format!(
        "`forge {}` exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON document in the CLI's stdout (it may print warnings before it): the text from the
/// first line that starts with `[`, `{` or `"` (some commands print one JSON string) to the end.
pub fn parse_json_output(stdout: &str) -> serde_json::Value {
    let lines: Vec<&str> = stdout.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with('[') || t.starts_with('{') || t.starts_with('"') {
            let rest = lines[i..].join("\n");
            if let Ok(v) = serde_json::from_str(&rest) {
                return v;
            }
        }
    }
    panic!("no JSON document in the CLI's output:\n{stdout}")
}

/// The operations the CLI sends that change platform state.
pub const MUTATIONS: &[&str] = &[
    "forge_cli_installApplication",
    "forge_cli_upgradeApplication",
    "forge_cli_uninstallApplication",
    "forge_cli_createAppVersionUpgradeRollout",
    "forge_cli_cancelAppVersionUpgradeRollout",
];

/// One platform-changing action, as a `forge` command line.
#[derive(Clone, Debug)]
pub enum CliAction {
    /// `forge install` (with `--major-version` when `major` is set).
    Install { app_uuid: String, site: String, product: String, environment: String, major: Option<u32> },
    /// `forge install --upgrade`.
    Upgrade { app_uuid: String, site: String, product: String, environment: String },
    /// `forge uninstall`.
    Uninstall { app_uuid: String, site: String, product: String, environment: String },
    /// `forge version bulk-upgrade start` (needs `ForgeEnv::app_ari`).
    BulkUpgradeStart { environment: String, from_major: u32, to_major: u32, limit: Option<u32> },
    /// `forge version bulk-upgrade cancel` (needs `ForgeEnv::app_ari`).
    BulkUpgradeCancel { environment: String, rollout_id: String },
}

impl CliAction {
    pub fn args(&self) -> Vec<String> {
        let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        match self {
            CliAction::Install { app_uuid, site, product, environment, major } => {
                let mut args = s(&["install", "--non-interactive", "--confirm-scopes"]);
                args.extend(s(&["--site", site, "--product", product, "--environment", environment]));
                args.extend(s(&["--app-id-override", app_uuid]));
                if let Some(major) = major {
                    args.extend(["--major-version".to_string(), major.to_string()]);
                }
                args
            }
            CliAction::Upgrade { app_uuid, site, product, environment } => {
                let mut args = s(&["install", "--upgrade", "--non-interactive", "--confirm-scopes"]);
                args.extend(s(&["--site", site, "--product", product, "--environment", environment]));
                args.extend(s(&["--app-id-override", app_uuid]));
                args
            }
            CliAction::Uninstall { app_uuid, site, product, environment } => {
                s(&["uninstall", "--site", site, "--product", product, "--environment", environment])
                    .into_iter()
                    .chain(s(&["--app-id-override", app_uuid]))
                    .collect()
            }
            CliAction::BulkUpgradeStart { environment, from_major, to_major, limit } => {
                let mut args = s(&["version", "bulk-upgrade", "start", "--non-interactive", "--json"]);
                args.extend(s(&["--environment", environment]));
                args.extend(["--from-version".to_string(), from_major.to_string()]);
                args.extend(["--to-version".to_string(), to_major.to_string()]);
                if let Some(limit) = limit {
                    args.extend(["--limit".to_string(), limit.to_string()]);
                }
                args
            }
            CliAction::BulkUpgradeCancel { environment, rollout_id } => s(&[
                "version",
                "bulk-upgrade",
                "cancel",
                "--non-interactive",
                "--json",
                "--environment",
                environment,
                "--app-upgrade-id",
                rollout_id,
            ]),
        }
    }

    /// The mutation this action sends.
    pub fn mutation(&self) -> &'static str {
        match self {
            CliAction::Install { .. } => "forge_cli_installApplication",
            CliAction::Upgrade { .. } => "forge_cli_upgradeApplication",
            CliAction::Uninstall { .. } => "forge_cli_uninstallApplication",
            CliAction::BulkUpgradeStart { .. } => "forge_cli_createAppVersionUpgradeRollout",
            CliAction::BulkUpgradeCancel { .. } => "forge_cli_cancelAppVersionUpgradeRollout",
        }
    }
}

/// Runs `action` with the real CLI against `emulator` (which must be the gateway of `env`),
/// requires it to succeed, and returns the CLI's stdout and every request the emulator recorded
/// while it ran, as (operation name, variables).
pub fn run_recorded(
    emulator: &forgeops_emulator::RunningEmulator,
    env: &ForgeEnv,
    args: &[&str],
) -> (String, Vec<(String, serde_json::Value)>) {
    let before = emulator.requests().len();
    let out = forge(args, env);
    let recorded: Vec<(String, serde_json::Value)> = emulator.requests()[before..]
        .iter()
        .map(|r| (r.operation_name.clone().unwrap_or_default(), r.variables.clone()))
        .collect();
    assert!(out.status.success(), "{}\n--- operations the emulator recorded\n{:#?}", describe(args, &out), recorded);
    (String::from_utf8_lossy(&out.stdout).into_owned(), recorded)
}

/// The (operation name, variables) of the one mutating operation the real CLI sends for
/// `action`, as recorded by `emulator`; panics unless the CLI succeeds and sends exactly one.
/// For comparing what the CLI sends with what forgeops' platform adapter sends for the same
/// action.
pub fn cli_mutation(
    emulator: &forgeops_emulator::RunningEmulator,
    env: &ForgeEnv,
    action: &CliAction,
) -> (String, serde_json::Value) {
    let args = action.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (_, recorded) = run_recorded(emulator, env, &args);
    let mutations: Vec<&(String, serde_json::Value)> =
        recorded.iter().filter(|(op, _)| MUTATIONS.contains(&op.as_str())).collect();
    assert!(
        mutations.len() == 1 && mutations[0].0 == action.mutation(),
        "`forge {}` should send exactly one {}; the emulator recorded {:#?}",
        args.join(" "),
        action.mutation(),
        recorded
    );
    mutations[0].clone()
}
