//! A pipeline's plan from the command line (`--step`, `--after`) or from a
//! `pipeline.yaml` kept in the repository. Both say the same thing the same
//! way: each step lists what it waits for; a step that says nothing waits
//! for all of the step listed before it (the first waits for nothing), and
//! an empty list makes it a root.
//!
//! ```yaml
//! steps:
//!   - name: extract
//!     shards: 4
//!   - name: transform
//!     shards: 4
//!     after: [extract:aligned]     # shard i waits for extract@i
//!   - name: index
//!     after: [extract]             # waits for every extract shard
//!   - name: load
//!     after: [transform, index]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use oxiflow_core::{Dependency, StepId, StepPlan};
use serde::Deserialize;

fn invalid(reason: String) -> anyhow::Error {
    crate::exit::usage(reason)
}

/// `name` or `name:N`.
fn step_spec(s: &str) -> anyhow::Result<(StepId, Option<u32>)> {
    match s.split_once(':') {
        Some((name, n)) => {
            let n: u32 = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(format!("--step {s:?}: shards must be a positive number, as in {name}:4")))?;
            Ok((name.parse()?, Some(n)))
        }
        None => Ok((s.parse()?, None)),
    }
}

/// `step` (barrier) or `step:aligned`.
fn dependency(s: &str) -> anyhow::Result<Dependency> {
    match s.split_once(':') {
        Some((name, "aligned")) => Ok(Dependency::aligned(name.parse()?)),
        Some((name, other)) => Err(invalid(format!(
            "dependency {s:?}: {other:?} is not a kind; write {name} to wait for every partition, or {name}:aligned for shard by shard"
        ))),
        None => Ok(Dependency::barrier(s.parse()?)),
    }
}

/// Builds the plan; steps not named by any `after` list wait for the step
/// before them. Checked by the core when the pipeline is created.
fn build(steps: Vec<(StepId, Option<u32>)>, mut after: BTreeMap<StepId, Vec<Dependency>>) -> anyhow::Result<Vec<StepPlan>> {
    if let Some(unknown) = after.keys().find(|s| !steps.iter().any(|(id, _)| id == *s)) {
        return Err(invalid(format!("--after names step {unknown}, which is not one of the --step steps")));
    }
    let mut plan: Vec<StepPlan> = Vec::with_capacity(steps.len());
    for (step_id, shards) in steps {
        let deps = match after.remove(&step_id) {
            Some(deps) => deps,
            None => plan.last().map(|prev| vec![Dependency::barrier(prev.step_id.clone())]).unwrap_or_default(),
        };
        plan.push(StepPlan { step_id, shards, after: deps });
    }
    Ok(plan)
}

/// The plan from `--step NAME[:SHARDS]` (in order) and `--after
/// STEP=DEP[,DEP…]` (a DEP is `step` or `step:aligned`; `STEP=` alone makes
/// STEP a root).
pub(crate) fn from_flags(steps: &[String], after: &[String]) -> anyhow::Result<Vec<StepPlan>> {
    let steps = steps.iter().map(|s| step_spec(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut deps: BTreeMap<StepId, Vec<Dependency>> = BTreeMap::new();
    for a in after {
        let (step, list) = a.split_once('=').ok_or_else(|| {
            invalid(format!("--after {a:?} must be STEP=DEP[,DEP…], as in load=transform,index or transform=extract:aligned"))
        })?;
        let list = list.split(',').filter(|d| !d.is_empty()).map(dependency).collect::<anyhow::Result<Vec<_>>>()?;
        if deps.insert(step.parse()?, list).is_some() {
            return Err(invalid(format!("--after names step {step} twice; list all its dependencies in one --after")));
        }
    }
    build(steps, deps)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    /// Optional: when present it must match the PIPELINE argument.
    pipeline: Option<String>,
    steps: Vec<StepEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepEntry {
    name: String,
    shards: Option<u32>,
    after: Option<Vec<String>>,
}

/// The plan in a `pipeline.yaml`; syntax errors name the file and line.
pub(crate) fn from_file(path: &Path, pipeline: &str) -> anyhow::Result<Vec<StepPlan>> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let file: PlanFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        let at = e.location().map(|l| format!(":{}:{}", l.line(), l.column())).unwrap_or_default();
        invalid(format!("{}{at}: {e}", path.display()))
    })?;
    if let Some(name) = file.pipeline.as_deref().filter(|n| *n != pipeline) {
        return Err(invalid(format!("{} describes pipeline {name}, not {pipeline}", path.display())));
    }
    let mut steps = Vec::with_capacity(file.steps.len());
    let mut deps = BTreeMap::new();
    for entry in file.steps {
        if entry.shards == Some(0) {
            return Err(invalid(format!("{}: step {} has shards: 0; give it at least 1, or leave shards out", path.display(), entry.name)));
        }
        let id: StepId = entry.name.parse()?;
        if let Some(after) = entry.after {
            deps.insert(id.clone(), after.iter().map(|d| dependency(d)).collect::<anyhow::Result<Vec<_>>>()?);
        }
        steps.push((id, entry.shards));
    }
    build(steps, deps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str) -> StepId {
        n.parse().unwrap()
    }

    #[test]
    fn flags_default_to_a_chain_and_after_overrides_it() {
        let plan = from_flags(
            &["extract:4".into(), "transform:4".into(), "index".into(), "load".into()],
            &["transform=extract:aligned".into(), "index=extract".into(), "load=transform,index".into()],
        )
        .unwrap();
        assert_eq!(plan[0].after, []);
        assert_eq!(plan[1].after, [Dependency::aligned(s("extract"))]);
        assert_eq!(plan[2].after, [Dependency::barrier(s("extract"))]);
        assert_eq!(plan[3].after, [Dependency::barrier(s("transform")), Dependency::barrier(s("index"))]);
        let chain = from_flags(&["a".into(), "b".into()], &[]).unwrap();
        assert_eq!(chain[1].after, [Dependency::barrier(s("a"))]);
        assert!(from_flags(&["a".into(), "b".into()], &["b=".into()]).unwrap()[1].after.is_empty(), "b= makes b a root");
    }

    #[test]
    fn bad_flags_say_how_to_write_them() {
        let err = |steps: &[&str], after: &[&str]| {
            let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
            let after: Vec<String> = after.iter().map(|s| s.to_string()).collect();
            from_flags(&steps, &after).unwrap_err().to_string()
        };
        assert!(err(&["a:0"], &[]).contains("shards must be a positive number"));
        assert!(err(&["a", "b"], &["b"]).contains("must be STEP=DEP"));
        assert!(err(&["a", "b"], &["b=a:sideways"]).contains("a:aligned"));
        assert!(err(&["a", "b"], &["c=a"]).contains("not one of the --step steps"));
        assert!(err(&["a", "b"], &["b=a", "b=a"]).contains("twice"));
    }

    #[test]
    fn a_yaml_syntax_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, "steps:\n  - name: a\n  - name: b\n    after: [a\n").unwrap();
        let e = from_file(&path, "p").unwrap_err().to_string();
        assert!(e.contains("pipeline.yaml:") && e.contains(":5:") || e.contains(":4:"), "{e}");
        std::fs::write(&path, "steps:\n  - name: a\n    shard: 2\n").unwrap();
        assert!(from_file(&path, "p").unwrap_err().to_string().contains("unknown field `shard`"));
        std::fs::write(&path, "pipeline: other\nsteps:\n  - name: a\n").unwrap();
        assert!(from_file(&path, "p").unwrap_err().to_string().contains("describes pipeline other, not p"));
    }
}
