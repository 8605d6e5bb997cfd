//! The transaction log: the record format (document revisions, index entries, commit
//! records, each checksummed), the group-commit batch, and recovery from persisted records.
//!
//! The persistence backend is the only commit point: a batch becomes durable in one backend
//! transaction. The in-memory window of recent commits used for conflict checks is the
//! separate [`crate::write_log`].

pub mod batch;
pub mod follow;
pub mod prune;
pub mod record;
pub mod recovery;
pub mod worker;
