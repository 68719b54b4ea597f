//! Query drift: every operation in `src/platform/ops/` that says it was copied from the pinned
//! Forge CLI must still be, up to whitespace, the operation that CLI file sends.
//!
//! Each such file starts with `# From @forge/<package>/<path> (@forge/cli <version>).` and the
//! rest is the operation text. The CLI file is read from the installed pinned CLI (see
//! `support/forge_cli.rs`); the operation is the template literal there that holds
//! `query|mutation <same name>` with the same variable list (some names are used by two
//! different operations). Files named `forgeops_*.graphql` are forgeops' own and skipped.

#[path = "support/forge_cli.rs"]
mod forge_cli;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One operation file of `src/platform/ops/`.
struct OpFile {
    file_name: String,
    /// `@forge/cli/out/...` as named by the header, with the CLI version it names.
    source: Option<(String, String)>,
    /// The text after the header line.
    text: String,
}

fn ops_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/platform/ops")
}

fn read_ops() -> Vec<OpFile> {
    let mut ops = Vec::new();
    for entry in fs::read_dir(ops_dir()).expect("reading src/platform/ops") {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let content = fs::read_to_string(&path).unwrap();
        let (first, rest) = content.split_once('\n').unwrap_or((content.as_str(), ""));
        ops.push(OpFile { file_name, source: parse_header(first), text: rest.to_string() });
    }
    ops.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    ops
}

/// `# From @forge/cli/out/x.js (@forge/cli 13.3.0).` → (`@forge/cli/out/x.js`, `13.3.0`).
fn parse_header(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?.trim().strip_prefix("From ")?;
    let (path, rest) = rest.split_once(' ')?;
    let version = rest.trim().strip_prefix("(@forge/cli ")?.strip_suffix(").")?;
    path.starts_with("@forge/").then(|| (path.to_string(), version.trim().to_string()))
}

/// Whitespace-insensitive form: runs of whitespace become one space, and none is kept next to
/// punctuation.
fn normalise(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let punct = |c: char| "{}()[]:,!=@|&".contains(c);
    let chars: Vec<char> = collapsed.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            if prev.is_some_and(punct) || next.is_some_and(punct) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The operation's type and name, and its variable definitions as a list of `$name:Type`
/// (whitespace and commas removed), from the operation text.
fn signature(text: &str) -> Option<(String, String, Vec<String>)> {
    let text = strip_comments(text);
    let t = text.trim_start();
    let (kind, rest) = t.split_once(char::is_whitespace)?;
    if kind != "query" && kind != "mutation" && kind != "subscription" {
        return None;
    }
    let rest = rest.trim_start();
    let name_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let name = rest[..name_end].to_string();
    let after = rest[name_end..].trim_start();
    let vars = if let Some(inner) = after.strip_prefix('(') {
        let close = inner.find(')')?;
        inner[..close]
            .split('$')
            .map(|v| v.chars().filter(|c| !c.is_whitespace() && *c != ',').collect::<String>())
            .filter(|v| !v.is_empty())
            .map(|v| format!("${v}"))
            .collect()
    } else {
        Vec::new()
    };
    Some((kind.to_string(), name, vars))
}

fn strip_comments(text: &str) -> String {
    text.lines().map(|l| if l.trim_start().starts_with('#') { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// Every template literal in `js` that contains `<kind> <name>` as an operation definition.
/// GraphQL text holds no backticks, so the literal runs from the backtick before the match to
/// the next one after it.
fn candidate_literals(js: &str, kind: &str, name: &str) -> Vec<String> {
    let needle = format!("{kind} {name}");
    let mut found = Vec::new();
    let bytes = js.as_bytes();
    let mut from = 0;
    while let Some(pos) = js[from..].find(&needle).map(|p| p + from) {
        from = pos + needle.len();
        // Whole word: the name must end here.
        let end_ok = bytes.get(from).is_none_or(|b| !(b.is_ascii_alphanumeric() || *b == b'_'));
        let start_ok = pos == 0 || !(bytes[pos - 1].is_ascii_alphanumeric() || bytes[pos - 1] == b'_');
        if !end_ok || !start_ok {
            continue;
        }
        let Some(open) = js[..pos].rfind('`') else { continue };
        let Some(close) = js[from..].find('`').map(|p| p + from) else { continue };
        let literal = &js[open + 1..close];
        // Must be the operation's own literal: nothing but whitespace before the keyword.
        if !literal[..pos - open - 1].trim().is_empty() {
            continue;
        }
        found.push(literal.to_string());
    }
    found
}

fn fail_text(op: &OpFile, source: &str, ours: &str, theirs: &[String]) -> String {
    let mut msg = format!(
        "src/platform/ops/{} no longer matches the operation in {source} of the pinned CLI.\n\
         --- ours (src/platform/ops/{})\n{}\n",
        op.file_name,
        op.file_name,
        ours.trim_end()
    );
    if theirs.is_empty() {
        msg.push_str("--- the CLI file holds no operation with that name\n");
    }
    for (i, t) in theirs.iter().enumerate() {
        msg.push_str(&format!("--- CLI candidate {} ({source})\n{}\n", i + 1, t.trim_matches('\n').trim_end()));
    }
    msg.push_str(&format!("--- normalised ours\n{}\n", normalise(ours)));
    for (i, t) in theirs.iter().enumerate() {
        msg.push_str(&format!("--- normalised CLI candidate {}\n{}\n", i + 1, normalise(t)));
    }
    msg
}

#[test]
fn operations_match_the_pinned_cli() {
    let ops = read_ops();
    assert!(!ops.is_empty(), "no operation files in {}", ops_dir().display());
    let mut failures = Vec::new();
    let mut checked = BTreeMap::new();
    let mut skipped = Vec::new();
    for op in &ops {
        if op.file_name.starts_with("forgeops_") {
            skipped.push(op.file_name.clone()); // forgeops' own operations: no CLI source
            continue;
        }
        let Some((source, version)) = &op.source else {
            failures.push(format!(
                "src/platform/ops/{}: first line must name the CLI file it was copied from, as \
                 `# From @forge/<file> (@forge/cli {}).` (or name the file forgeops_*.graphql if it is \
                 forgeops' own)",
                op.file_name,
                forge_cli::CLI_VERSION
            ));
            continue;
        };
        if version != forge_cli::CLI_VERSION {
            failures.push(format!(
                "src/platform/ops/{}: copied from @forge/cli {version}, but tests/forge-cli pins {}",
                op.file_name,
                forge_cli::CLI_VERSION
            ));
            continue;
        }
        let Some((kind, name, vars)) = signature(&op.text) else {
            failures.push(format!("src/platform/ops/{}: no `query|mutation <name>` operation found", op.file_name));
            continue;
        };
        let stem = op.file_name.trim_end_matches(".graphql");
        if stem != name {
            failures.push(format!(
                "src/platform/ops/{}: the file is named after `{stem}` but holds `{name}`",
                op.file_name
            ));
        }
        let Some(js_path) = forge_cli::resolve_package_file(source) else {
            failures.push(format!("src/platform/ops/{}: {source} does not exist in the installed CLI", op.file_name));
            continue;
        };
        let js = fs::read_to_string(&js_path).unwrap();
        let candidates = candidate_literals(&js, &kind, &name);
        let same_vars: Vec<&String> =
            candidates.iter().filter(|c| signature(c).is_some_and(|(_, _, v)| v == vars)).collect();
        match same_vars.as_slice() {
            [] => failures.push(format!(
                "{}(no operation `{kind} {name}` with variables ({}) in the CLI file)",
                fail_text(op, source, &op.text, &candidates),
                vars.join(", ")
            )),
            many => {
                if !many.iter().any(|c| normalise(c) == normalise(&op.text)) {
                    let many: Vec<String> = many.iter().map(|s| s.to_string()).collect();
                    failures.push(fail_text(op, source, &op.text, &many));
                }
            }
        }
        checked.insert(op.file_name.clone(), source.clone());
    }
    // Every forge_cli_* file must have been checked, none skipped silently.
    for op in &ops {
        if op.file_name.starts_with("forge_cli_") && !checked.contains_key(&op.file_name) {
            failures.push(format!("src/platform/ops/{} was not checked against the CLI", op.file_name));
        }
    }
    eprintln!("checked {} operation files against the pinned CLI: {:?}", checked.len(), checked.keys());
    eprintln!("skipped forgeops' own: {skipped:?}");
    assert!(
        failures.is_empty(),
        "{} operation file(s) drifted from the pinned CLI:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn normalise_ignores_only_whitespace() {
    assert_eq!(
        normalise("query a($x: ID!,\n  $y: Int) {\n  b(x: $x) { c }\n}\n"),
        "query a($x:ID!,$y:Int){b(x:$x){c}}"
    );
    assert_ne!(normalise("query a { b c }"), normalise("query a { bc }"));
    assert_eq!(
        signature("query q(\n  $appId: ID!,\n  $environmentKey: String!\n) { x }"),
        Some(("query".into(), "q".into(), vec!["$appId:ID!".into(), "$environmentKey:String!".into()]))
    );
    let js = "const a = `\n query q($a: ID!) { x }\n`; const b = `query q($b: ID!) { y }`; const c = `query qq { z }`;";
    assert_eq!(candidate_literals(js, "query", "q").len(), 2);
}

/// The matcher tells the two same-named operations of the CLI apart and sees a one-field drift.
#[test]
fn matcher_picks_the_same_operation_and_sees_drift() {
    let js = fs::read_to_string(
        forge_cli::resolve_package_file("@forge/cli/out/installations/site-translation/sited-products.js").unwrap(),
    )
    .unwrap();
    let candidates = candidate_literals(&js, "query", "forge_cli_getHostnameForTenantContexts");
    assert_eq!(candidates.len(), 2, "the CLI has two operations of that name: {candidates:#?}");
    let ours = "query forge_cli_getHostnameForTenantContexts($cloudIds: [ID!]!) {\n tenantContexts(cloudIds: $cloudIds) { hostName }\n}";
    let (_, _, vars) = signature(ours).unwrap();
    let same: Vec<&String> = candidates.iter().filter(|c| signature(c).unwrap().2 == vars).collect();
    assert_eq!(same.len(), 1);
    assert_eq!(normalise(same[0]), normalise(ours));
    let drifted = ours.replace("hostName", "hostName cloudId");
    assert_ne!(normalise(same[0]), normalise(&drifted));
}
