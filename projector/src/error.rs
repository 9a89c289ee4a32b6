//! The projector's one error type, and what each failure means for the work it stopped
//! ([`Error::fault`]): the same classes the command service answers by, so an outage is
//! an outage everywhere.

use event_store::Fault;

/// Why projector work did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event store or read-model database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stream entry that is not what the relay writes (a field missing or malformed).
    #[error("stream entry {id}: {reason}")]
    Entry {
        /// The entry id.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An event that cannot be projected: it does not decode, or the read-model database
    /// refuses its rows. Retrying it fails the same way; it ends up parked.
    #[error("{0}")]
    Poison(String),
    /// The stream and the event store disagree (for instance about which shard an event
    /// belongs to): a configuration mistake no retry fixes.
    #[error("{0}")]
    Inconsistent(String),
    /// An operator command that cannot be carried out as asked.
    #[error("{0}")]
    Refused(String),
    /// `verify` found the read model differs from the event store in this many cells or
    /// rows.
    #[error("verify found {0} differences")]
    Differences(u64),
}

impl Error {
    /// The class of this failure.
    pub fn fault(&self) -> Fault {
        match self {
            Error::Database(e) => Fault::of_sqlx(e),
            Error::Redis(e) => redis_fault(e),
            Error::Entry { .. } | Error::Poison(_) => Fault::Poison,
            Error::Inconsistent(_) => Fault::Poison,
            Error::Refused(_) | Error::Differences(_) => Fault::Client,
        }
    }
}

/// Redis's part of the one classification: a connection that cannot be made, was dropped
/// or timed out is an outage; Redis refusing a command for its content is not.
fn redis_fault(e: &redis::RedisError) -> Fault {
    if e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN")
        )
    {
        Fault::Outage
    } else {
        Fault::Poison
    }
}

/// Shorthand for the projector's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_like_everywhere_else() {
        assert_eq!(
            Error::Database(sqlx::Error::PoolTimedOut).fault(),
            Fault::Outage
        );
        assert_eq!(Error::Poison("x".into()).fault(), Fault::Poison);
        assert_eq!(Error::Refused("x".into()).fault(), Fault::Client);
        let dropped = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        assert_eq!(Error::Redis(dropped).fault(), Fault::Outage);
        let refused_command =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "not a stream"));
        assert_eq!(Error::Redis(refused_command).fault(), Fault::Poison);
    }
}
