//! `reactive-core`: the engine of `reactive`, a reactive document database.
//!
//! Layers, bottom up: [`value`] and [`keys`] (Convex's value model and its order-preserving
//! key encoding), [`id`], [`codec`] (stored values), [`document`], [`catalog`], [`mvcc`]
//! (multi-versioned documents and indexes), [`transaction`] (snapshot reads, read sets,
//! buffered writes), [`write_log`] and [`committer`] (optimistic concurrency control and
//! timestamps), [`log`] (records, group-commit batches, recovery), [`subscriptions`] (which
//! live queries a commit invalidates), [`search`] (full-text and vector indexes), [`engine`] (all of it together) and [`sqlite`] (the
//! embedded persistence backend). No Python here: the bindings crate converts and releases
//! the GIL.

pub mod catalog;
pub mod codec;
pub mod committer;
pub mod document;
pub mod engine;
pub mod error;
pub mod filter;
pub mod forward;
pub mod id;
pub mod interval;
pub mod keys;
pub mod limits;
pub mod log;
pub mod mvcc;
pub mod query;
pub mod search;
pub mod sqlite;
pub mod subscriptions;
pub mod timestamp;
pub mod transaction;
pub mod value;
pub mod write_log;

pub use error::{Error, Result};
