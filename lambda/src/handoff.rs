//! Starting the invocations that come next: the partitions a completion
//! made ready, and continuations. Where events go is the deployment's
//! choice; the runner only says which.

use async_trait::async_trait;

use crate::event::StepEvent;

/// Sends events to new invocations: Lambda's asynchronous Invoke
/// (`InvocationType::Event` with the AWS SDK), an SQS queue, or a local
/// runtime. Called after the state that made them due is stored; an error
/// fails the invocation, whose retry hands them off again (a completed
/// partition's retry is [`crate::StepOutcome::AlreadyDone`] and sends
/// what is still ready).
#[async_trait]
pub trait Handoff: Send + Sync {
    /// Sends `events`, each to one new invocation.
    async fn send(&self, events: &[StepEvent]) -> Result<(), crate::BatchError>;
}

/// Sends nothing: the events are only in the outcome the function returns
/// (a Step Functions map, or a caller that reads the response, starts them).
#[derive(Debug, Clone, Copy, Default)]
pub struct ReturnOnly;

#[async_trait]
impl Handoff for ReturnOnly {
    async fn send(&self, _events: &[StepEvent]) -> Result<(), crate::BatchError> {
        Ok(())
    }
}
