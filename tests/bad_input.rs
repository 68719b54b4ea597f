//! Fault drill: bad input at volume. 1,000 objects of the four kinds, generated from the CRDs' own
//! schemas with random and boundary values for every field (empty, at and past every bound, wrong
//! types, odd text, unknown fields), sent through the API and through `kubectl apply` to the
//! shared real API server, while the operator runs as a process (loopback only). Each object is
//! either rejected at admission with a message, or accepted and reported by a condition of its
//! current generation; valid Installations created before, during and after the flood are all
//! installed; the operator never panics and its log stays bounded.
//!
//! The generator is seeded (`FORGEOPS_FUZZ_SEED` replays a run; the seed is printed). It is a few
//! lines over `rand` rather than a property-testing crate: the values come from the CRD schema
//! served to the API server, and the test needs each object's fate, not shrinking.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use forgeops::api::{ForgeApp, Installation};
use kube::api::{Api, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::discovery::ApiResource;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{TestNs, create};

const OBJECTS: usize = 1000;
/// Every this many objects, one goes through `kubectl apply` instead of the API.
const KUBECTL_EVERY: usize = 5;
const FUZZ_APP: &str = "ari:cloud:ecosystem::app/fuzz-target";

struct Kind {
    kind: &'static str,
    plural: &'static str,
    /// The CRD's `spec` schema.
    schema: Value,
}

fn kinds() -> Vec<Kind> {
    let text = std::fs::read_to_string(support::repo_path("crds/forgeops.dev.yaml")).unwrap();
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let crd: Value = serde::Deserialize::deserialize(doc).unwrap();
        let names = &crd["spec"]["names"];
        let leak = |v: &Value| -> &'static str { Box::leak(v.as_str().unwrap().to_string().into_boxed_str()) };
        out.push(Kind {
            kind: leak(&names["kind"]),
            plural: leak(&names["plural"]),
            schema: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone(),
        });
    }
    assert_eq!(out.len(), 4);
    out
}

/// Random and boundary values for a schema.
struct Fuzz {
    rng: StdRng,
    serial: usize,
    /// Odd values still to place in the object being generated; when none are left, fields get
    /// sensible values. A chaotic object has many.
    odd: u32,
}

impl Fuzz {
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())].clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// Whether this field gets an odd value.
    fn odd_here(&mut self) -> bool {
        let here = self.odd > 0 && self.chance(0.25);
        if here {
            self.odd -= 1;
        }
        here
    }

    fn value(&mut self, key: &str, schema: &Value) -> Value {
        let odd = self.odd_here();
        if odd && self.chance(0.2) {
            return self.wrong_type();
        }
        if !odd {
            return self.sensible(key, schema);
        }
        match schema["type"].as_str() {
            Some("string") => self.string(key, schema),
            Some("integer") => self.integer(schema),
            Some("boolean") => json!(self.chance(0.5)),
            Some("array") => self.array(key, schema),
            Some("object") => self.object(schema),
            _ => Value::Null,
        }
    }

    /// A value the schema allows (the odd ones left may still land below it).
    fn sensible(&mut self, key: &str, schema: &Value) -> Value {
        match schema["type"].as_str() {
            Some("string") => match schema["enum"].as_array() {
                Some(values) => self.pick(values),
                None => json!(self.sensible_text(key)),
            },
            Some("integer") => {
                let min = schema["minimum"].as_f64().unwrap_or(0.0) as i64;
                json!(min + self.rng.random_range(0..3))
            }
            Some("boolean") => json!(self.chance(0.3)),
            Some("array") => {
                let min = schema["minItems"].as_u64().unwrap_or(0) as usize;
                let n = self.rng.random_range(min.max(1)..=min.max(2));
                let mut items: Vec<Value> = Vec::new();
                for _ in 0..n * 3 {
                    let item = self.value(key, &schema["items"]);
                    if !items.contains(&item) && items.len() < n {
                        items.push(item);
                    }
                }
                Value::Array(items)
            }
            Some("object") => self.object(schema),
            _ => Value::Null,
        }
    }

    fn sensible_text(&mut self, key: &str) -> String {
        self.serial += 1;
        let n = self.serial;
        let sensible: Vec<String> = match key {
            "appId" => vec![FUZZ_APP.into(), format!("ari:cloud:ecosystem::app/fz-{n}")],
            "name" => vec!["fuzz-target".into(), "missing".into(), support::platform::CREDENTIALS_SECRET.into()],
            "site" => vec![format!("fz-{n}.atlassian.net"), "fuzz-site.atlassian.net".into()],
            "environment" | "environments" => vec!["production".into(), "staging".into(), "default".into()],
            "refreshInterval" => vec!["1s".into(), "10m".into(), "1h30m".into(), "0s".into(), "99999999999h".into()],
            _ => vec!["production".into()],
        };
        self.pick(&sensible)
    }

    fn wrong_type(&mut self) -> Value {
        self.pick(&[
            Value::Null,
            json!("text"),
            json!(1.5),
            json!(true),
            json!([]),
            json!({}),
            json!(-7),
            json!([1, "a"]),
        ])
    }

    fn object(&mut self, schema: &Value) -> Value {
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let mut out = serde_json::Map::new();
        for (key, property) in schema["properties"].as_object().into_iter().flatten() {
            let p = if required.contains(&key.as_str()) { 0.93 } else { 0.6 };
            if self.chance(p) {
                out.insert(key.clone(), self.value(key, property));
            }
        }
        if self.chance(0.03) {
            out.insert("notAField".into(), json!("x"));
        }
        Value::Object(out)
    }

    fn array(&mut self, key: &str, schema: &Value) -> Value {
        let max = schema["maxItems"].as_u64().unwrap_or(8) as usize;
        let n = self.pick(&[0, 1, 1, 1, 2, 3, max, max + 1]);
        let mut items: Vec<Value> = (0..n).map(|_| self.value(key, &schema["items"])).collect();
        if n >= 2 && self.chance(0.2) {
            items[1] = items[0].clone();
        }
        Value::Array(items)
    }

    fn integer(&mut self, schema: &Value) -> Value {
        let min = schema["minimum"].as_f64().map(|m| m as i64);
        let max = schema["maximum"].as_f64().map(|m| m as i64);
        let mut candidates = vec![
            json!(0),
            json!(1),
            json!(2),
            json!(3),
            json!(-1),
            json!(i32::MAX),
            json!(u32::MAX),
            json!(1u64 << 32),
        ];
        candidates.extend([json!(1u64 << 53), json!(i64::MAX), json!(u64::MAX), json!(1e30)]);
        for bound in [min, max].into_iter().flatten() {
            candidates.extend([json!(bound - 1), json!(bound), json!(bound + 1)]);
        }
        self.pick(&candidates)
    }

    fn string(&mut self, key: &str, schema: &Value) -> Value {
        if self.chance(0.2) {
            return json!(format!("{}x", self.sensible_text(key)));
        }
        let at_most = schema["maxLength"].as_u64().unwrap_or(64) as usize;
        let odd: Vec<String> = vec![
            String::new(),
            " ".into(),
            "a".into(),
            "UPPER".into(),
            "-lead".into(),
            "trail-".into(),
            "a b".into(),
            "ünïcode".into(),
            "😀".into(),
            "null".into(),
            "0".into(),
            "a\u{0}b".into(),
            "line\nbreak".into(),
            "../../etc/passwd".into(),
            "${HOME}".into(),
            "a".repeat(at_most),
            "a".repeat(at_most + 1),
            "x".repeat(5000),
        ];
        json!(self.pick(&odd))
    }

    /// Object `i` of `kind`: a generated spec and, sometimes, an odd refresh annotation.
    fn object_of(&mut self, kind: &Kind, i: usize) -> Value {
        // Most objects have one or two odd fields; some are chaos.
        self.odd = self.pick(&[0, 1, 1, 1, 2, 2, 3, 20]);
        let spec = if self.chance(0.02) { self.wrong_type() } else { self.object(&kind.schema) };
        let mut body = json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": kind.kind,
            "metadata": {"name": format!("fz-{}-{i}", kind.kind.to_lowercase())}, "spec": spec});
        if self.chance(0.1) {
            let at = self.pick(&["", "now", "x".repeat(300).as_str()]).to_string();
            body["metadata"]["annotations"] = json!({ forgeops::api::REFRESH_ANNOTATION: at });
        }
        body
    }
}

fn dynamic_api(t: &TestNs, kind: &Kind) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "forgeops.dev".into(),
        version: "v1alpha1".into(),
        api_version: "forgeops.dev/v1alpha1".into(),
        kind: kind.kind.into(),
        plural: kind.plural.into(),
    };
    Api::namespaced_with(t.client.clone(), &t.name, &resource)
}

/// `kubectl apply` of one object: `Ok` if applied, else kubectl's message.
fn kubectl_apply(namespace: &str, dir: &std::path::Path, name: &str, body: &Value) -> Result<(), String> {
    let shared = support::shared();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, body.to_string()).unwrap();
    let out = std::process::Command::new(&shared.kubectl)
        .arg("--kubeconfig")
        .arg(&shared.kubeconfig)
        .args(["apply", "-n", namespace, "-f"])
        .arg(&file)
        .output()
        .expect("running kubectl");
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

fn control_installation(i: usize) -> Value {
    json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "Installation", "metadata": {"name": format!("ctl-{i}")},
        "spec": {"appRef": {"name": "control"}, "site": format!("ctl-{i}.atlassian.net"), "products": ["jira"]}})
}

/// Whether an object's status has a condition of its current generation.
fn reported(obj: &DynamicObject) -> bool {
    let generation = obj.metadata.generation;
    let conditions = obj.data["status"]["conditions"].as_array().cloned().unwrap_or_default();
    !conditions.is_empty()
        && conditions.iter().all(|c| c["observedGeneration"].as_i64() == generation && c["reason"].as_str().is_some())
}

fn log_lines(path: &std::path::Path, level: &str) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter(|l| l.contains(level)).count()
}

#[tokio::test]
async fn a_thousand_generated_bad_objects_are_rejected_or_reported_and_valid_work_goes_on() {
    let seed: u64 = std::env::var("FORGEOPS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    eprintln!("bad-input: seed {seed} (FORGEOPS_FUZZ_SEED={seed} replays this run)");
    let mut fuzz = Fuzz { rng: StdRng::seed_from_u64(seed), serial: 0, odd: 0 };
    let t = TestNs::new("bad-input").await;
    let platform = t.start_platform(forgeops_emulator::EmulatorConfig::default()).await;
    let apps: Api<ForgeApp> = t.api();
    let version = |major: u32| json!({"major": major, "minor": 0, "compatibility": {"required": "jira"}});
    for (name, id, versions) in [
        ("control", "ari:cloud:ecosystem::app/control", vec![version(1)]),
        ("fuzz-target", FUZZ_APP, vec![version(1), version(2)]),
    ] {
        create(
            &apps,
            json!({"apiVersion": "forgeops.dev/v1alpha1", "kind": "ForgeApp", "metadata": {"name": name},
            "spec": {"appId": id, "environments": [{"name": "production", "versions": versions}]}}),
        )
        .await;
    }
    let operator = t.spawn_operator_process(&platform.emulator.graphql_url(), 1);
    let log = t.operator_log(1);
    let insts: Api<Installation> = t.api();
    let kinds = kinds();
    let dir = tempdir();
    let mut controls = 0;
    let mut accepted: Vec<(usize, String, Value)> = Vec::new();
    let mut rejected: BTreeMap<&str, usize> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..OBJECTS {
        if i % (OBJECTS / 3) == 0 {
            // Valid work before, during and after the flood.
            for _ in 0..10 {
                create(&insts, control_installation(controls)).await;
                controls += 1;
            }
        }
        let k = i % kinds.len();
        let body = fuzz.object_of(&kinds[k], i);
        let name = body["metadata"]["name"].as_str().unwrap().to_string();
        let outcome = if i % KUBECTL_EVERY == 0 {
            let (ns, dir, b, n) = (t.name.clone(), dir.clone(), body.clone(), name.clone());
            tokio::task::spawn_blocking(move || kubectl_apply(&ns, &dir, &n, &b)).await.unwrap()
        } else {
            match dynamic_api(&t, &kinds[k])
                .create(&PostParams::default(), &serde_json::from_value(body.clone()).unwrap())
                .await
            {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) => {
                    assert!(
                        [400, 422].contains(&status.code),
                        "{name}: not an admission refusal: {status:?}\n{body:#}"
                    );
                    Err(status.message)
                }
                Err(e) => panic!("{name}: {e}"),
            }
        };
        match outcome {
            Ok(()) => accepted.push((k, name, body)),
            Err(message) => {
                assert!(message.len() > 10, "{name}: rejected without a message: {message:?}\n{body:#}");
                *rejected.entry(kinds[k].kind).or_default() += 1;
            }
        }
    }
    eprintln!(
        "bad-input: {OBJECTS} objects sent in {:.1} s ({} through kubectl): {} accepted, rejected by kind {rejected:?}",
        started.elapsed().as_secs_f64(),
        OBJECTS / KUBECTL_EVERY,
        accepted.len()
    );
    assert!(accepted.len() >= 50, "the generator hardly made anything valid: {}", accepted.len());
    assert!(accepted.len() <= OBJECTS - 200, "the generator hardly made anything invalid: {}", accepted.len());

    // Every accepted object is reported by conditions of its generation.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut silent: Vec<String>;
    loop {
        silent = Vec::new();
        for (k, kind) in kinds.iter().enumerate() {
            let live = dynamic_api(&t, kind).list(&ListParams::default()).await.unwrap().items;
            for (_, name, body) in accepted.iter().filter(|(ak, _, _)| *ak == k) {
                match live.iter().find(|o| o.metadata.name.as_deref() == Some(name)) {
                    Some(o) if reported(o) => {}
                    Some(o) => silent.push(format!("{name}: spec {} status {}", o.data["spec"], o.data["status"])),
                    // A finished BulkUpgrade goes away after its ttlSecondsAfterFinished.
                    None if body["spec"]["ttlSecondsAfterFinished"].is_i64() => {}
                    None => silent.push(format!("{name}: gone, spec {}", body["spec"])),
                }
            }
        }
        if silent.is_empty() {
            break;
        }
        assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
        assert!(
            Instant::now() < deadline,
            "{} accepted objects have no condition of their generation, e.g.\n{}\n{}",
            silent.len(),
            silent[..silent.len().min(5)].join("\n"),
            operator.log_tail()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "bad-input: all {} accepted objects reported {:.1} s after the first",
        accepted.len(),
        started.elapsed().as_secs_f64()
    );

    // The valid Installations were all installed.
    for i in 0..controls {
        let name = format!("ctl-{i}");
        support::wait_for(&insts, &name, Duration::from_secs(120), "installed", |inst| {
            inst.status.as_ref().and_then(|s| s.installed_version.as_deref()) == Some("1.0")
        })
        .await;
    }

    // The log stays bounded: what the operator says in a quiet 20 s is its backed-off retries.
    let (errors, warnings) = (log_lines(&log, "ERROR"), log_lines(&log, "WARN"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let (errors_later, warnings_later) = (log_lines(&log, "ERROR"), log_lines(&log, "WARN"));
    let bytes = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "bad-input: operator log {bytes} bytes, {errors} ERROR and {warnings} WARN lines; in a quiet 20 s after, {} and {} more",
        errors_later - errors,
        warnings_later - warnings
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!text.contains("panicked"), "the operator panicked:\n{}", operator.log_tail());
    assert!(!operator.has_exited(), "the operator exited:\n{}", operator.log_tail());
    assert_eq!(errors_later, 0, "bad input is not an operator error:\n{}", operator.log_tail());
    assert!(
        warnings_later - warnings <= accepted.len() / 10,
        "the log keeps growing: {warnings} then {warnings_later}"
    );
    assert!(bytes < 20 * 1024 * 1024, "the log is {bytes} bytes");
}

fn tempdir() -> std::path::PathBuf {
    let dir = support::shared().dir.join(format!("bad-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
