//! Herald's domain model: the Message aggregate, pure (no I/O, no clock, no randomness).
//!
//! One event stream per message. Clients submit and cancel; providers report observations
//! (asynchronously, at least once, out of order); Herald's timer expires. The aggregate
//! turns all of that into a status on a ranked lattice plus delivery and engagement facts,
//! such that the outcome does not depend on the order reports arrive in.
//!
//! * [`types`]: the public vocabulary (channels, statuses, observation kinds).
//! * [`command`]: [`MessageCommand`] and [`message_id_for`].
//! * [`validate`]: state-free input checks and their limits.
//! * [`rules`]: every invariant as a named, documented, tested function.
//! * [`event`]: [`MessageEvent`], self-describing for a stateless projector.
//! * [`Message`], [`decide`], [`replay`]: the aggregate and its pure decision function.
//! * [`MessageError`]: typed refusals with stable codes and an [`ErrorKind`].

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod aggregate;
pub mod command;
pub mod error;
pub mod event;
pub mod rules;
pub mod types;
pub mod validate;

#[cfg(test)]
mod tests;

pub use aggregate::{decide, replay, Message, Submission};
pub use command::{
    message_id_for, MessageCommand, Observation, SubmitMessage, HERALD_MESSAGE_NAMESPACE,
};
pub use error::{ErrorKind, MessageError};
pub use event::{
    EngagementRecorded, EventHeader, LatencyChange, LatencySample, MessageBounced,
    MessageCancelled, MessageDeferred, MessageDelivered, MessageDispatched, MessageDropped,
    MessageEvent, MessageExpired, MessageFailed, MessageSubmitted, EVENT_VERSION,
};
pub use rules::{Outcome, TerminalClaim, MAX_DISPATCH_ATTEMPTS, MAX_OBSERVATIONS};
pub use types::{
    BounceKind, Channel, Engagement, EngagementKind, MessageContent, MessageStatus,
    ObservationKind, UnknownName,
};
