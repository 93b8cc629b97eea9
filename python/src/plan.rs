//! A pipeline's plan from Python: the shape of the CLI's `--step` /
//! `--after` flags and of `pipeline.yaml`, as a list.
//!
//! ```python
//! ["extract:4", "transform:4", "load"]                      # a chain: each waits for the one before
//! [{"step": "extract", "shards": 4},
//!  {"step": "transform", "shards": 4, "after": ["extract:aligned"]},   # shard i after extract@i
//!  {"step": "index", "after": ["extract"]},                            # after every extract shard
//!  {"step": "load", "after": ["transform", "index"]}]
//! ```
//!
//! A step that says nothing waits for the step before it (the first for
//! nothing); `"after": []` makes it a root. `"aligned": True` makes every
//! dependency of the step aligned. The core checks the plan (cycles,
//! unknown steps, shard counts) when the pipeline is created.

use oxiflow_core::{Dependency, StepId, StepPlan};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::errors::Failure;

fn invalid(message: String) -> PyErr {
    Failure::invalid(message).into()
}

fn step_id(name: &str) -> PyResult<StepId> {
    Ok(name.parse::<StepId>().map_err(Failure::from)?)
}

/// `name` or `name:N`.
fn step_spec(s: &str) -> PyResult<(StepId, Option<u32>)> {
    match s.split_once(':') {
        Some((name, n)) => {
            let n = n
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| invalid(format!("step {s:?}: shards must be a positive number, as in {name}:4")))?;
            Ok((step_id(name)?, Some(n)))
        }
        None => Ok((step_id(s)?, None)),
    }
}

/// `step` (wait for all of it) or `step:aligned` (shard by shard).
fn dependency(s: &str, aligned: bool) -> PyResult<Dependency> {
    match s.split_once(':') {
        Some((name, "aligned")) => Ok(Dependency::aligned(step_id(name)?)),
        Some((name, other)) => Err(invalid(format!(
            "dependency {s:?}: {other:?} is not a kind; write {name:?} to wait for every partition, or \"{name}:aligned\" for shard by shard"
        ))),
        None if aligned => Ok(Dependency::aligned(step_id(s)?)),
        None => Ok(Dependency::barrier(step_id(s)?)),
    }
}

const KEYS: &str = "step (or name), shards, after, aligned";

/// One entry of the list: a string or a dict.
fn entry(item: &Bound<'_, PyAny>) -> PyResult<(StepId, Option<u32>, Option<Vec<Dependency>>)> {
    if let Ok(s) = item.downcast::<PyString>() {
        let (id, shards) = step_spec(&s.to_cow()?)?;
        return Ok((id, shards, None));
    }
    let Ok(d) = item.downcast::<PyDict>() else {
        return Err(invalid(format!(
            "a step is a string (\"extract\", \"extract:4\") or a dict with {KEYS}, not {}",
            item.get_type().name()?
        )));
    };
    let (mut name, mut shards, mut after, mut aligned) = (None, None, None, false);
    for (k, v) in d.iter() {
        let k: String = k.extract().map_err(|_| invalid(format!("step keys are strings: {KEYS}")))?;
        let what = |t: &str| invalid(format!("step key {k:?} must be {t}"));
        match k.as_str() {
            "step" | "name" => name = Some(v.extract::<String>().map_err(|_| what("a string"))?),
            "shards" if v.is_none() => {}
            "shards" => {
                let n: i64 = v.extract().map_err(|_| what("a positive integer"))?;
                shards = Some(u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| what("a positive integer"))?);
            }
            "after" if v.is_none() => {}
            "after" => {
                after = Some(if let Ok(one) = v.extract::<String>() {
                    vec![one]
                } else {
                    v.extract::<Vec<String>>().map_err(|_| what("a list of step names"))?
                })
            }
            "aligned" => aligned = v.extract::<bool>().map_err(|_| what("True or False"))?,
            other => return Err(invalid(format!("unknown step key {other:?}; a step has {KEYS}"))),
        }
    }
    let name = name.ok_or_else(|| invalid(format!("a step dict needs \"step\": the step's name (keys: {KEYS})")))?;
    let (id, spec_shards) = step_spec(&name)?;
    if spec_shards.is_some() && shards.is_some() {
        return Err(invalid(format!("step {name:?} gives its shards twice; use \"shards\"")));
    }
    let deps = after.map(|list| list.iter().map(|d| dependency(d, aligned)).collect::<PyResult<Vec<_>>>()).transpose()?;
    if aligned && deps.is_none() {
        return Err(invalid(format!("step {name:?} is aligned but names no \"after\"; list the steps it waits for shard by shard")));
    }
    Ok((id, shards.or(spec_shards), deps))
}

/// The plan from the Python list; steps without `after` wait for the one before.
pub(crate) fn from_python(steps: &Bound<'_, PyAny>) -> PyResult<Vec<StepPlan>> {
    if steps.is_instance_of::<PyString>() {
        return Err(invalid("steps is a list of steps, not one string: write [\"extract\", \"load\"]".into()));
    }
    let mut plan: Vec<StepPlan> = Vec::new();
    let mut named: Vec<(StepId, Vec<Dependency>)> = Vec::new();
    for item in steps.try_iter().map_err(|_| invalid("steps must be a list of steps".into()))? {
        let (step_id, shards, after) = entry(&item?)?;
        if plan.iter().any(|s| s.step_id == step_id) {
            return Err(invalid(format!("step {step_id} is listed twice")));
        }
        let after = match after {
            Some(deps) => {
                named.push((step_id.clone(), deps.clone()));
                deps
            }
            None => plan.last().map(|prev| vec![Dependency::barrier(prev.step_id.clone())]).unwrap_or_default(),
        };
        plan.push(StepPlan { step_id, shards, after });
    }
    if plan.is_empty() {
        return Err(invalid("a pipeline needs at least one step".into()));
    }
    for (step, deps) in named {
        if let Some(unknown) = deps.iter().find(|d| !plan.iter().any(|s| s.step_id == d.step_id)) {
            return Err(invalid(format!("step {step} waits for {}, which is not one of the steps", unknown.step_id)));
        }
    }
    Ok(plan)
}
