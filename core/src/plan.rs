//! A pipeline's plan: its steps, how many shards each is split into, and
//! what each step waits for. The plan lives in the pipeline document, so
//! every reader (worker, Lambda, dashboard, Python) schedules from the same
//! edges.
//!
//! Two kinds of edge: a *barrier* waits for every partition of the upstream
//! step; an *aligned* edge lets shard i start once shard i upstream is done
//! (both steps must have the same number of shards). Steps form a DAG: fan-out
//! and fan-in are allowed, cycles are refused when the plan is made.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::id::{PartitionId, StepId};

/// How a step waits for one upstream step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DependencyKind {
    /// Every partition of the upstream step must be completed.
    #[default]
    Barrier,
    /// Shard i waits only for shard i of the upstream step.
    Aligned,
}

impl DependencyKind {
    fn is_barrier(&self) -> bool {
        *self == DependencyKind::Barrier
    }
}

/// One edge: the step waits for `step_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    /// The upstream step.
    pub step_id: StepId,
    /// Whether it waits for all of it or shard by shard.
    #[serde(default, skip_serializing_if = "DependencyKind::is_barrier")]
    pub kind: DependencyKind,
}

impl Dependency {
    /// Wait for every partition of `step_id`.
    pub fn barrier(step_id: StepId) -> Self {
        Dependency { step_id, kind: DependencyKind::Barrier }
    }
    /// Wait shard by shard for `step_id`.
    pub fn aligned(step_id: StepId) -> Self {
        Dependency { step_id, kind: DependencyKind::Aligned }
    }
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepPlan {
    /// The step's name.
    pub step_id: StepId,
    /// Shards the step is split into (`step@0` … `step@n-1`); absent for a
    /// step that is one partition. Plans migrated from format 2 have it
    /// absent too: their partitions are the documents found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// The steps this one waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<Dependency>,
}

impl StepPlan {
    /// A step with no dependencies, in one partition (`shards: None`) or `n` shards.
    pub fn new(step_id: StepId, shards: Option<u32>) -> Self {
        StepPlan { step_id, shards, after: Vec::new() }
    }

    /// Adds an edge.
    pub fn after(mut self, dependency: Dependency) -> Self {
        self.after.push(dependency);
        self
    }

    /// The partitions the plan expects for this step.
    pub fn partitions(&self) -> Vec<PartitionId> {
        match self.shards {
            None => alloc::vec![PartitionId::step(self.step_id.clone())],
            Some(n) => (0..n).map(|i| PartitionId::shard(self.step_id.clone(), i)).collect(),
        }
    }
}

/// What a plain ordered list of steps means to a person: each step waits for
/// all of the one before it. Used for `--step a --step b` and to migrate
/// format 2 documents, whose steps were only a list.
pub fn chain(steps: impl IntoIterator<Item = (StepId, Option<u32>)>) -> Vec<StepPlan> {
    let mut plan: Vec<StepPlan> = Vec::new();
    for (step_id, shards) in steps {
        let mut step = StepPlan::new(step_id, shards);
        if let Some(prev) = plan.last() {
            step.after.push(Dependency::barrier(prev.step_id.clone()));
        }
        plan.push(step);
    }
    plan
}

fn invalid(reason: String) -> Error {
    Error::InvalidInput { reason }
}

/// Checks a plan: at least one step, no step twice, no shard count of 0,
/// dependencies on known steps only, no self-dependency, aligned edges only
/// between steps with equal shard counts, no cycle. Each refusal names the
/// steps involved.
pub fn validate(steps: &[StepPlan]) -> Result<(), Error> {
    if steps.is_empty() {
        return Err(invalid("a pipeline needs at least one step".into()));
    }
    let mut by_id: BTreeMap<&StepId, &StepPlan> = BTreeMap::new();
    for s in steps {
        if by_id.insert(&s.step_id, s).is_some() {
            return Err(invalid(alloc::format!("step {} is listed twice", s.step_id)));
        }
        if s.shards == Some(0) {
            return Err(invalid(alloc::format!("step {} has 0 shards; give it at least 1, or none for one partition", s.step_id)));
        }
    }
    for s in steps {
        for (i, d) in s.after.iter().enumerate() {
            if d.step_id == s.step_id {
                return Err(invalid(alloc::format!("step {} depends on itself", s.step_id)));
            }
            if s.after[..i].iter().any(|e| e.step_id == d.step_id) {
                return Err(invalid(alloc::format!("step {} lists its dependency on {} twice", s.step_id, d.step_id)));
            }
            let Some(up) = by_id.get(&d.step_id) else {
                return Err(invalid(alloc::format!("step {} depends on {}, which is not a step of this pipeline", s.step_id, d.step_id)));
            };
            if d.kind == DependencyKind::Aligned && (s.shards.is_none() || s.shards != up.shards) {
                let count = |n: Option<u32>| n.map_or_else(|| "no shards".into(), |n| alloc::format!("{n} shards"));
                return Err(invalid(alloc::format!(
                    "step {} ({}) cannot be aligned with {} ({}): aligned steps need the same number of shards",
                    s.step_id,
                    count(s.shards),
                    d.step_id,
                    count(up.shards)
                )));
            }
        }
    }
    topological_order(steps).map(drop)
}

/// Step indices in an order where every step comes after the steps it waits
/// for; among steps that could go next, plan order wins. A cycle is refused,
/// naming the steps on it.
pub fn topological_order(steps: &[StepPlan]) -> Result<Vec<usize>, Error> {
    let index: BTreeMap<&StepId, usize> = steps.iter().enumerate().map(|(i, s)| (&s.step_id, i)).collect();
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.after.iter().filter(|d| index.contains_key(&d.step_id)).count()).collect();
    let mut placed = alloc::vec![false; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    while order.len() < steps.len() {
        let Some(next) = (0..steps.len()).find(|&i| !placed[i] && waiting[i] == 0) else {
            let cycle = find_cycle(steps, &index, &placed);
            return Err(invalid(alloc::format!("the steps form a cycle: {cycle}; remove one of these dependencies")));
        };
        placed[next] = true;
        order.push(next);
        for (i, s) in steps.iter().enumerate() {
            if s.after.iter().any(|d| d.step_id == steps[next].step_id) {
                waiting[i] -= 1;
            }
        }
    }
    Ok(order)
}

/// Walks dependencies among the unplaced steps until one repeats, and names
/// the loop as `a -> b -> a` (a waits for b, which waits for a).
fn find_cycle(steps: &[StepPlan], index: &BTreeMap<&StepId, usize>, placed: &[bool]) -> String {
    let Some(mut at) = (0..steps.len()).find(|&i| !placed[i]) else { return String::new() };
    let mut path: Vec<usize> = Vec::new();
    loop {
        if let Some(pos) = path.iter().position(|&p| p == at) {
            let mut names: Vec<&str> = path[pos..].iter().map(|&i| steps[i].step_id.as_str()).collect();
            names.push(steps[at].step_id.as_str());
            return names.join(" -> ");
        }
        path.push(at);
        // Every unplaced step waits for at least one unplaced step.
        match steps[at].after.iter().filter_map(|d| index.get(&d.step_id).copied()).find(|&u| !placed[u]) {
            Some(u) => at = u,
            None => return String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> StepId {
        StepId::new(name).unwrap()
    }

    fn reason(steps: &[StepPlan]) -> String {
        match validate(steps).unwrap_err() {
            Error::InvalidInput { reason } => reason,
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn an_ordered_list_is_a_chain_of_barriers() {
        let plan = chain([(s("a"), Some(2)), (s("b"), None), (s("c"), None)]);
        assert!(plan[0].after.is_empty());
        assert_eq!(plan[1].after, [Dependency::barrier(s("a"))]);
        assert_eq!(plan[2].after, [Dependency::barrier(s("b"))]);
        validate(&plan).unwrap();
    }

    #[test]
    fn a_dag_with_fan_out_and_fan_in_is_accepted_in_dependency_order() {
        let plan = [
            StepPlan::new(s("load"), None).after(Dependency::barrier(s("transform"))).after(Dependency::barrier(s("index"))),
            StepPlan::new(s("extract"), Some(4)),
            StepPlan::new(s("transform"), Some(4)).after(Dependency::aligned(s("extract"))),
            StepPlan::new(s("index"), None).after(Dependency::barrier(s("extract"))),
        ];
        validate(&plan).unwrap();
        let order: Vec<&str> = topological_order(&plan).unwrap().into_iter().map(|i| plan[i].step_id.as_str()).collect();
        assert_eq!(order, ["extract", "transform", "index", "load"]);
    }

    #[test]
    fn bad_plans_are_refused_naming_the_steps() {
        let cycle = [
            StepPlan::new(s("a"), None).after(Dependency::barrier(s("c"))),
            StepPlan::new(s("b"), None).after(Dependency::barrier(s("a"))),
            StepPlan::new(s("c"), None).after(Dependency::barrier(s("b"))),
        ];
        let r = reason(&cycle);
        assert!(r.contains("cycle") && r.contains("a -> c -> b -> a"), "{r}");

        let unknown = [StepPlan::new(s("a"), None).after(Dependency::barrier(s("nope")))];
        assert!(reason(&unknown).contains("depends on nope, which is not a step"), "{}", reason(&unknown));

        let own = [StepPlan::new(s("a"), None).after(Dependency::barrier(s("a")))];
        assert!(reason(&own).contains("a depends on itself"));

        let mismatch = [StepPlan::new(s("a"), Some(4)), StepPlan::new(s("b"), Some(3)).after(Dependency::aligned(s("a")))];
        let r = reason(&mismatch);
        assert!(r.contains("b (3 shards) cannot be aligned with a (4 shards)"), "{r}");

        let unsharded = [StepPlan::new(s("a"), Some(2)), StepPlan::new(s("b"), None).after(Dependency::aligned(s("a")))];
        assert!(reason(&unsharded).contains("b (no shards)"));

        assert!(reason(&[StepPlan::new(s("a"), None), StepPlan::new(s("a"), Some(2))]).contains("a is listed twice"));
        assert!(reason(&[StepPlan::new(s("a"), Some(0))]).contains("0 shards"));
        assert!(reason(&[]).contains("at least one step"));
    }
}
