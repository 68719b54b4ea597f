//! `docs/reference.md`: every field of every kind, generated from the CRDs (the same schemas and
//! descriptions `kubectl explain` shows), so the reference cannot say what the API does not.
//! `forgeops reference -o docs/reference.md` writes it; `tests/crds_up_to_date.rs` fails when the
//! committed file is stale. Hand-written: the CRD generators of the Go world (crd-ref-docs) read Go
//! types, and no Rust crate renders an OpenAPI v3 schema as Markdown.

use std::fmt::Write as _;

use serde_json::Value;

/// The reference, as Markdown.
pub fn markdown() -> String {
    let mut out = String::from(
        "# API reference\n\n\
         Generated from the CRDs by `forgeops reference -o docs/reference.md`; do not edit by hand\n\
         (`tests/crds_up_to_date.rs` fails when it is stale). The same text is in `kubectl explain`.\n\n",
    );
    let crds = super::all_crds();
    for crd in &crds {
        let _ = writeln!(out, "- [{}](#{})", crd.spec.names.kind, crd.spec.names.kind.to_lowercase());
    }
    for crd in &crds {
        let names = &crd.spec.names;
        let _ = writeln!(out, "\n## {}\n", names.kind);
        let short = names.short_names.clone().unwrap_or_default().join("`, `");
        let _ = writeln!(
            out,
            "`{}/{}`, namespaced; `kubectl get {}` (short: `{short}`).\n",
            crd.spec.group,
            crd.spec.versions.first().map(|v| v.name.as_str()).unwrap_or_default(),
            names.plural,
        );
        for version in &crd.spec.versions {
            let Some(schema) = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()) else { continue };
            let schema = serde_json::to_value(schema).unwrap_or(Value::Null);
            if let Some(text) = description(&schema) {
                let _ = writeln!(out, "{text}\n");
            }
            out.push_str("| Field | Type | Description |\n| --- | --- | --- |\n");
            for part in ["spec", "status"] {
                if let Some(sub) = schema.pointer(&format!("/properties/{part}")) {
                    let required = required(&schema).contains(&part.to_string());
                    fields(&mut out, part, sub, required);
                }
            }
            rules(&mut out, &schema);
        }
    }
    out
}

fn description(schema: &Value) -> Option<String> {
    schema.get("description").and_then(Value::as_str).map(|d| d.trim().to_string()).filter(|d| !d.is_empty())
}

fn required(schema: &Value) -> Vec<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// A schema's type as a reader needs it: `[]string`, `map[string]integer`, `object`, with its enum.
fn type_of(schema: &Value) -> String {
    let base = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if schema.get("x-kubernetes-int-or-string").is_some() { "int-or-string" } else { "any" });
    let mut text = match base {
        "array" => format!("[]{}", schema.get("items").map(type_of).unwrap_or_else(|| "any".into())),
        "object" => match schema.get("additionalProperties") {
            Some(v) if v.is_object() => format!("map[string]{}", type_of(v)),
            _ => "object".into(),
        },
        other => other.to_string(),
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> =
            values.iter().map(|v| v.as_str().map(String::from).unwrap_or(v.to_string())).collect();
        let _ = write!(text, ": `{}`", values.join("`, `"));
    }
    text
}

/// Bounds and patterns, as the API server checks them.
fn constraints(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for (key, what) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(n) = schema.get(key).and_then(Value::as_f64) {
            // The bounds of the integer type itself are noise.
            let unsigned = schema.get("format").and_then(Value::as_str) == Some("uint32");
            let noise = [f64::from(u32::MAX), f64::from(i32::MAX), f64::from(i32::MIN)].contains(&n)
                || (key == "minimum" && n == 0.0 && unsigned);
            if !noise {
                let shown = if n.fract() == 0.0 { format!("{}", n as i64) } else { n.to_string() };
                out.push(format!("{what} {shown}"));
            }
        }
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
        out.push(format!("pattern `{p}`"));
    }
    if let Some(d) = schema.get("default") {
        out.push(format!("default `{d}`"));
    }
    out
}

fn cell(text: &str) -> String {
    text.replace("\n\n", "<br><br>").replace('\n', " ").replace('|', "\\|")
}

/// One row per field, depth first, in the schema's (alphabetical) order.
fn fields(out: &mut String, path: &str, schema: &Value, required: bool) {
    let mut notes = constraints(schema);
    if required {
        notes.insert(0, "required".into());
    }
    let notes = if notes.is_empty() { String::new() } else { format!(" ({})", notes.join("; ")) };
    let _ = writeln!(
        out,
        "| `{path}` | {} | {}{} |",
        cell(&type_of(schema)),
        cell(&description(schema).unwrap_or_default()),
        cell(&notes)
    );
    let (inner, prefix) = match schema.get("items") {
        Some(items) if schema.get("type").and_then(Value::as_str) == Some("array") => (items, format!("{path}[]")),
        _ => (schema, path.to_string()),
    };
    let req = required_of(inner);
    if let Some(props) = inner.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            fields(out, &format!("{prefix}.{name}"), sub, req.contains(name));
        }
    }
}

fn required_of(schema: &Value) -> Vec<String> {
    required(schema)
}

/// The CEL rules of the schema, anywhere in it, with the message each gives.
fn rules(out: &mut String, schema: &Value) {
    let mut found = Vec::new();
    collect_rules(schema, "", &mut found);
    if found.is_empty() {
        return;
    }
    out.push_str(
        "\nAdmission rules (CEL, checked by the API server):\n\n| Where | Rule | Message |\n| --- | --- | --- |\n",
    );
    for (path, rule, message) in found {
        let where_ = if path.is_empty() { "(object)".to_string() } else { format!("`{path}`") };
        let _ = writeln!(out, "| {where_} | `{}` | {} |", cell(&rule), cell(&message));
    }
}

fn collect_rules(schema: &Value, path: &str, found: &mut Vec<(String, String, String)>) {
    if let Some(list) = schema.get("x-kubernetes-validations").and_then(Value::as_array) {
        for r in list {
            let rule = r.get("rule").and_then(Value::as_str).unwrap_or_default().to_string();
            let message = r.get("message").and_then(Value::as_str).unwrap_or_default().to_string();
            found.push((path.trim_start_matches('.').to_string(), rule, message));
        }
    }
    if let Some(items) = schema.get("items") {
        collect_rules(items, &format!("{path}[]"), found);
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            collect_rules(sub, &format!("{path}.{name}"), found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_every_documented_field_is_in_the_reference() {
        let text = markdown();
        for kind in ["ForgeApp", "DistributionPolicy", "Installation", "BulkUpgrade"] {
            assert!(text.contains(&format!("\n## {kind}\n")), "{kind}");
        }
        for field in
            ["`spec.appId`", "`spec.steps[].requireApproval`", "`status.outbox[].event`", "`spec.windows[].timeZone`"]
        {
            assert!(text.contains(&format!("| {field} |")), "{field}");
        }
        assert!(text.contains("Admission rules (CEL"));
    }

    #[test]
    fn types_read_as_a_reader_needs_them() {
        let list = serde_json::json!({"type": "array", "items": {"type": "string", "enum": ["Jira", "Confluence"]}});
        assert_eq!(type_of(&list), "[]string: `Jira`, `Confluence`");
        let map = serde_json::json!({"type": "object", "additionalProperties": {"type": "integer"}});
        assert_eq!(type_of(&map), "map[string]integer");
        let bounded =
            serde_json::json!({"type": "integer", "format": "uint32", "minimum": 0, "maximum": 4294967295u64});
        assert!(constraints(&bounded).is_empty(), "the type's own bounds are not repeated");
        assert_eq!(cell("a | b\nc"), "a \\| b c");
    }
}
