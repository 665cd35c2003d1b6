//! What a PostgreSQL error means for the caller. The database being away
//! (connection refused or lost, shutting down, starting up, a failover in
//! progress, a standby that cannot take writes) is back-pressure, answered
//! `Overloaded` (503 with Retry-After) while the pool reconnects on its own;
//! contention the store retries itself; the rest are storage failures with
//! the server's message.

use tokio_postgres::error::SqlState;

use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Deadlock or serialization failure: a new transaction may succeed.
    Transient,
    /// The database cannot be reached or cannot serve us right now.
    Unavailable,
    /// A statement ran past the query budget and was cancelled.
    Budget,
    /// Disk or quota full.
    Full,
    /// A value past one of PostgreSQL's own limits (SQLSTATE 54000: a
    /// payload whose search vector is over 1 MB): the request's fault.
    Limit,
    Other,
}

pub(crate) fn classify(e: &tokio_postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection failed or closed under us.
        return Class::Unavailable;
    };
    let c = code.code();
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        Class::Transient
    } else if *code == SqlState::QUERY_CANCELED {
        Class::Budget
    } else if *code == SqlState::DISK_FULL {
        Class::Full
    } else if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
        Class::Limit
    } else if c.starts_with("08")
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
        || *code == SqlState::IDLE_SESSION_TIMEOUT
    {
        Class::Unavailable
    } else {
        Class::Other
    }
}

/// The error with the server's own message and SQLSTATE, when it sent one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} (SQLSTATE {}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// A read's error as a store error.
pub(crate) fn store_error(e: tokio_postgres::Error, budget: std::time::Duration) -> StoreError {
    match classify(&e) {
        Class::Transient | Class::Unavailable => StoreError::Overloaded,
        Class::Budget => StoreError::QueryBudget(budget),
        Class::Full => StoreError::Full(describe(&e)),
        Class::Limit => StoreError::TooLarge(describe(&e)),
        Class::Other => StoreError::Storage(describe(&e)),
    }
}

/// No connection came from the pool: busy (every connection taken past the
/// wait) or the database unreachable. Either way the caller is told to retry.
pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Closed => StoreError::ShuttingDown,
        other => {
            tracing::debug!(error = %other, "no database connection");
            StoreError::Overloaded
        }
    }
}
