//! A real Kubernetes control plane (etcd, kube-apiserver and kube-controller-manager) on loopback,
//! for tests and the local quick start. No container runtime is needed:
//! `hack/controlplane/build.sh` builds the binaries from pinned Go modules once and caches them.
//!
//! kube-controller-manager runs only the controllers a cluster without nodes needs for objects to
//! go away as they do in a real cluster: the namespace controller (a deleted namespace's contents
//! are deleted and the namespace is gone, instead of `Terminating` forever) and the garbage
//! collector (dependents of a deleted owner are deleted).
//!
//! Child processes die with the thread that keeps them (`PR_SET_PDEATHSIG`), and each child gets a
//! thread of its own that lives exactly as long as it does, so a test binary that exits or is killed
//! never leaves an API server behind.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::AuthInfo;
use kube::{Client, Config};

/// The identity the operator's own tests run as: a user bound by the RBAC manifests in `deploy/`.
pub const OPERATOR_USER: &str = "forgeops-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control plane binaries failed: {0}")]
    Build(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0} did not become ready in time; its log ends with:\n{1}")]
    NotReady(&'static str, String),
    #[error("{0} exited early; its log ends with:\n{1}")]
    Exited(&'static str, String),
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("CRD {0} was not Established in time")]
    CrdNotEstablished(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Builds (first time) or finds (cached) the control-plane binaries and returns their directory.
/// `FORGEOPS_CONTROLPLANE_BIN` overrides the location with a directory of ready-made binaries.
pub fn binaries() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os("FORGEOPS_CONTROLPLANE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = repo_root().join("hack/controlplane/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(io(format!("running {}", script.display())))?;
    if !out.status.success() {
        return Err(Error::Build(format!("{} exited with {}", script.display(), out.status)));
    }
    let dir = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
    Ok(PathBuf::from(dir))
}

/// The repository this crate was built from (it lives at `crates/testenv`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process kept by a thread of its own, which reaps it.
pub struct KeptProcess {
    name: &'static str,
    pid: u32,
    log: PathBuf,
    exited: Arc<Mutex<Option<std::process::ExitStatus>>>,
}

impl KeptProcess {
    /// Starts `cmd` with its output in `log`. The child is killed if this process dies.
    pub fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> Result<Self, Error> {
        let file = std::fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let file2 = file.try_clone().map_err(io("cloning a log handle"))?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let exited = Arc::new(Mutex::new(None));
        let (tx, rx) = std::sync::mpsc::channel();
        let exited_in_keeper = exited.clone();
        std::thread::Builder::new()
            .name(format!("keep-{name}"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let status = child.wait().ok();
                    *exited_in_keeper.lock().unwrap() = status;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(io("spawning a keeper thread"))?;
        let pid = rx.recv().map_err(|_| Error::Exited(name, String::new()))?.map_err(io(format!("starting {name}")))?;
        Ok(KeptProcess { name, pid, log: log.to_path_buf(), exited })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn has_exited(&self) -> bool {
        self.exited.lock().unwrap().is_some()
    }

    /// The last lines of the process's log, for error messages.
    /// Everything the process wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Sends a signal (for example `libc::SIGKILL`) unless the process already exited.
    pub fn signal(&self, signal: i32) {
        if !self.has_exited() {
            // SAFETY: plain syscall on a pid this process spawned and has not reaped yet.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(self.pid as i32, signal);
            }
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and waits until it is reaped.
    pub fn stop(&self, grace: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KeptProcess {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A running etcd, kube-apiserver and kube-controller-manager on loopback.
pub struct LocalCluster {
    dir: PathBuf,
    remove_dir: bool,
    // Stopped in this order by `drop`: the controller manager, the API server, then etcd.
    controller_manager: Option<KeptProcess>,
    apiserver: KeptProcess,
    etcd: KeptProcess,
    /// How the API server was started, so a fault drill can start it again the same way.
    apiserver_cmd: (PathBuf, Vec<String>),
    server: String,
    admin_token: String,
    operator_token: String,
}

fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("finding a free loopback port"))?;
    Ok(listener.local_addr().map_err(io("reading a port"))?.port())
}

fn random_token() -> String {
    let bytes: [u8; 24] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl LocalCluster {
    /// Starts etcd and kube-apiserver with their state in `dir`. With `dir` unset a fresh temporary
    /// directory is used and removed on drop. The loopback ports are picked free just before the
    /// processes bind them, so another process can take one in between ("address already in use"):
    /// a start whose process exits early is tried again, up to three times, on new ports.
    pub async fn start(dir: Option<PathBuf>) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::start_once(dir.clone()).await {
                Err(Error::Exited(what, log)) if attempt < 3 => {
                    let last = log.lines().last().unwrap_or_default().to_string();
                    eprintln!("{what} exited early (attempt {attempt}), starting again on new ports: {last}");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn start_once(dir: Option<PathBuf>) -> Result<Self, Error> {
        let bin = binaries()?;
        let remove_dir = dir.is_none();
        let dir = match dir {
            Some(d) => d,
            None => std::env::temp_dir().join(format!("forgeops-cp-{}-{}", std::process::id(), random_token())),
        };
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("clearing {}", dir.display())))?;
        }
        std::fs::create_dir_all(dir.join("certs")).map_err(io(format!("creating {}", dir.display())))?;

        let (client_port, peer_port, secure_port) = (free_port()?, free_port()?, free_port()?);
        let mut etcd_cmd = Command::new(bin.join("etcd"));
        etcd_cmd.args([
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{client_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{client_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"),
            format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ]);
        let etcd = KeptProcess::spawn("etcd", etcd_cmd, &dir.join("etcd.log"))?;

        let (admin_token, operator_token) = (random_token(), random_token());
        let tokens = format!(
            "{admin_token},admin,admin-uid,system:masters\n{operator_token},{OPERATOR_USER},{OPERATOR_USER}-uid\n"
        );
        write(&dir.join("tokens.csv"), &tokens)?;
        let key = rcgen::KeyPair::generate().map_err(|e| Error::Build(format!("generating a key: {e}")))?;
        write(&dir.join("sa.key"), &key.serialize_pem())?;
        write(&dir.join("sa.pub"), &key.public_key_pem())?;

        let api_args: Vec<String> = vec![
            format!("--etcd-servers=http://127.0.0.1:{client_port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--secure-port={secure_port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // The endpoint reconciler refuses loopback addresses, and nothing here needs the
            // `kubernetes` service endpoints.
            "--endpoint-reconciler-type=none".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            format!("--token-auth-file={}", dir.join("tokens.csv").display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", dir.join("sa.pub").display()),
            format!("--service-account-signing-key-file={}", dir.join("sa.key").display()),
            // The controller manager runs no service-account controllers, so no default service
            // account or token would ever be created for a pod to mount.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--enable-priority-and-fairness=false".into(),
            "--allow-privileged=true".into(),
            "--v=1".into(),
        ];
        let mut api_cmd = Command::new(bin.join("kube-apiserver"));
        api_cmd.args(&api_args);
        let apiserver = KeptProcess::spawn("kube-apiserver", api_cmd, &dir.join("kube-apiserver.log"))?;

        let mut cluster = LocalCluster {
            dir,
            remove_dir,
            controller_manager: None,
            apiserver,
            etcd,
            apiserver_cmd: (bin.join("kube-apiserver"), api_args),
            server: format!("https://127.0.0.1:{secure_port}"),
            admin_token,
            operator_token,
        };
        std::fs::write(cluster.kubeconfig_path(), cluster.kubeconfig_yaml(&cluster.admin_token, "admin"))
            .map_err(io("writing the kubeconfig"))?;
        std::fs::write(
            cluster.operator_kubeconfig_path(),
            cluster.kubeconfig_yaml(&cluster.operator_token, OPERATOR_USER),
        )
        .map_err(io("writing the operator kubeconfig"))?;
        cluster.wait_ready().await?;
        cluster.controller_manager = Some(cluster.start_controller_manager(&bin)?);
        Ok(cluster)
    }

    /// kube-controller-manager as the cluster admin, with only the namespace controller and the
    /// garbage collector, serving nothing (no port, no leader election: it is the only one).
    fn start_controller_manager(&self, bin: &Path) -> Result<KeptProcess, Error> {
        let mut cmd = Command::new(bin.join("kube-controller-manager"));
        cmd.args([
            format!("--kubeconfig={}", self.kubeconfig_path().display()),
            "--controllers=namespace-controller,garbage-collector-controller".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--use-service-account-credentials=false".into(),
            // A deleted namespace is emptied as soon as it is seen, not on the next resync.
            "--concurrent-namespace-syncs=4".into(),
            "--v=1".into(),
        ]);
        KeptProcess::spawn("kube-controller-manager", cmd, &self.dir.join("kube-controller-manager.log"))
    }

    async fn wait_ready(&self) -> Result<(), Error> {
        let client = Client::try_from(self.admin_config())?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for p in [&self.etcd, &self.apiserver].into_iter().chain(self.controller_manager.as_ref()) {
                if p.has_exited() {
                    return Err(Error::Exited(p.name, p.log_tail()));
                }
            }
            // Poll the port before asking over HTTP, so the client does not log connection errors.
            let port_open = std::net::TcpStream::connect(self.server.trim_start_matches("https://")).is_ok();
            let req = http::Request::get("/readyz").body(Vec::new()).expect("a static request is valid");
            if port_open
                && let Ok(body) = client.request_text(req).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady("kube-apiserver", self.apiserver.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The API server's URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The directory holding the control plane's state and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A kubeconfig file for the cluster admin, for kubectl.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A kubeconfig file for the operator's own identity (see [`LocalCluster::operator_config`]).
    pub fn operator_kubeconfig_path(&self) -> PathBuf {
        self.dir.join("kubeconfig-operator")
    }

    fn kubeconfig_yaml(&self, token: &str, user: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: forgeops-local\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: forgeops-local\n  context:\n    cluster: forgeops-local\n    user: {user}\ncurrent-context: forgeops-local\nusers:\n- name: {user}\n  user:\n    token: {token}\n",
            self.server
        )
    }

    fn config_for(&self, token: &str) -> Config {
        let mut config = Config::new(self.server.parse().expect("a loopback URL is a valid URI"));
        // The API server serves a self-signed certificate it generated at start.
        config.accept_invalid_certs = true;
        config.auth_info = AuthInfo { token: Some(token.to_string().into()), ..Default::default() };
        config
    }

    /// Client configuration with cluster-admin rights.
    pub fn admin_config(&self) -> Config {
        self.config_for(&self.admin_token)
    }

    /// Client configuration for the operator's own identity, which has only the rights that the
    /// RBAC manifests in `deploy/` grant the user `forgeops-operator`.
    pub fn operator_config(&self) -> Config {
        self.config_for(&self.operator_token)
    }

    /// Fault drill: stops the API server (SIGTERM, as a rolling restart does), keeps it down for
    /// `down`, then starts it again with the same flags, port, certificates and etcd, and waits
    /// until it is ready.
    pub async fn restart_apiserver(&mut self, down: Duration) -> Result<(), Error> {
        self.apiserver.stop(Duration::from_secs(10));
        tokio::time::sleep(down).await;
        let (bin, args) = &self.apiserver_cmd;
        let mut cmd = Command::new(bin);
        cmd.args(args);
        self.apiserver = KeptProcess::spawn("kube-apiserver", cmd, &self.dir.join("kube-apiserver-restarted.log"))?;
        self.wait_ready().await
    }

    /// The API server process, for tests that look at its log.
    pub fn apiserver(&self) -> &KeptProcess {
        &self.apiserver
    }

    /// The controller manager process, for tests that look at its log.
    pub fn controller_manager(&self) -> Option<&KeptProcess> {
        self.controller_manager.as_ref()
    }

    /// The etcd process (for the benchmark's memory figures).
    pub fn etcd(&self) -> &KeptProcess {
        &self.etcd
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if let Some(cm) = &self.controller_manager {
            cm.stop(Duration::from_secs(5));
        }
        self.apiserver.stop(Duration::from_secs(5));
        self.etcd.stop(Duration::from_secs(5));
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(io(format!("writing {}", path.display())))
}

/// Installs (server-side apply) the given CRDs and waits until each is Established.
pub async fn install_crds(client: &Client, crds: &[CustomResourceDefinition]) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("forgeops").force();
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let current = api.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::CrdNotEstablished(name));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
