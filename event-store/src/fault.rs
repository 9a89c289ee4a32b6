//! What a failure means for the one who saw it: retry soon, wait for an outage to pass,
//! give up on this input, or tell the client.
//!
//! Every Herald crate classifies database failures here, so "is this an outage?" has one
//! answer: the command service answers 503 for exactly the failures the projector waits
//! out without counting them against an event.

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Lost a race with another transaction (serialization failure, deadlock, lock
    /// timeout): the same work is expected to succeed when tried again at once.
    Transient,
    /// A dependency is unreachable, shutting down or starting up: nothing is wrong with
    /// the input; wait and retry.
    Outage,
    /// The input itself cannot be processed (a value the database refuses, a broken
    /// constraint, undecodable data): retrying the same input fails the same way.
    Poison,
    /// The client's request is at fault (only raised by request handling, never by a
    /// database driver).
    Client,
}

impl Fault {
    /// Whether waiting and retrying the same work may succeed.
    pub const fn is_retryable(self) -> bool {
        matches!(self, Fault::Transient | Fault::Outage)
    }

    /// The class of a database failure.
    pub fn of_sqlx(e: &sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Fault::Outage,
            sqlx::Error::Database(db) => Self::of_sqlstate(db.code().as_deref().unwrap_or("")),
            _ => Fault::Poison,
        }
    }

    /// The class of a PostgreSQL error code (SQLSTATE).
    pub fn of_sqlstate(code: &str) -> Self {
        match code {
            // serialization_failure, deadlock_detected, lock_not_available
            "40001" | "40P01" | "55P03" => Fault::Transient,
            // connection exceptions (08xxx), operator intervention: admin or crash shutdown,
            // cannot connect now (57P0x), a statement cancelled by its timeout (57014: the
            // server is too slow, not the input wrong), insufficient resources (53xxx: out
            // of connections, disk full, out of memory)
            c if c.starts_with("08")
                || c.starts_with("57P")
                || c == "57014"
                || c.starts_with("53") =>
            {
                Fault::Outage
            }
            _ => Fault::Poison,
        }
    }
}

/// True when `e` means the database is unreachable or going away (retry later), rather
/// than a defect or bad data.
pub fn is_outage(e: &sqlx::Error) -> bool {
    Fault::of_sqlx(e) == Fault::Outage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(Fault::of_sqlstate("40001"), Fault::Transient);
        assert_eq!(Fault::of_sqlstate("40P01"), Fault::Transient);
        assert_eq!(Fault::of_sqlstate("55P03"), Fault::Transient);
        assert_eq!(Fault::of_sqlstate("08006"), Fault::Outage);
        assert_eq!(Fault::of_sqlstate("57P01"), Fault::Outage);
        assert_eq!(Fault::of_sqlstate("53300"), Fault::Outage);
        assert_eq!(Fault::of_sqlstate("57014"), Fault::Outage);
        // jsonb refuses \u0000; a CHECK constraint fails; a unique key is taken.
        assert_eq!(Fault::of_sqlstate("22P05"), Fault::Poison);
        assert_eq!(Fault::of_sqlstate("23514"), Fault::Poison);
        assert_eq!(Fault::of_sqlstate("23505"), Fault::Poison);
        assert!(Fault::Outage.is_retryable() && Fault::Transient.is_retryable());
        assert!(!Fault::Poison.is_retryable() && !Fault::Client.is_retryable());
    }

    #[test]
    fn transport_failures_are_outages() {
        assert_eq!(Fault::of_sqlx(&sqlx::Error::PoolTimedOut), Fault::Outage);
        assert_eq!(
            Fault::of_sqlx(&sqlx::Error::Protocol("dropped".into())),
            Fault::Outage
        );
        assert_eq!(Fault::of_sqlx(&sqlx::Error::RowNotFound), Fault::Poison);
    }
}
