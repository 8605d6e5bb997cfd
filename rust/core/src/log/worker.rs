//! The group-commit worker: a thread that makes queued commits durable and visible.
//!
//! It waits for the engine's queue to change, takes everything queued as one batch, writes it
//! to a [`BatchSink`] (one backend transaction), publishes it (the engine applies it and
//! names the subscriptions it invalidates) and posts a [`Completion`]. While it writes, new
//! commits queue and become the next batch, so under load many commits share one durable
//! write and the writing overlaps the running of the next transactions — no Python and no
//! GIL are involved. Completions are announced by one byte on a pipe, which an event loop
//! can watch (`add_reader`), and collected with [`GroupCommitWorker::take_completions`].
//!
//! Invariants: one worker per engine; batches are written and published one at a time, in
//! order; a batch that fails to persist is aborted in the engine (never visible) and its
//! completion carries the error; stopping drains everything queued before the thread ends.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::engine::{Engine, PersistBatch};
use crate::error::{Error, Result};
use crate::subscriptions::SubscriptionId;
use crate::timestamp::Timestamp;

/// Where batches become durable.
pub trait BatchSink: Send + Sync + 'static {
    /// Write one batch in one backend transaction; durable when this returns `Ok`.
    fn write_batch(&self, batch: &PersistBatch) -> Result<()>;
}

/// The outcome of one batch.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Everything queued at or before this generation is now settled.
    pub generation: u64,
    /// The commits of the batch.
    pub timestamps: Vec<Timestamp>,
    /// Subscriptions the batch invalidated (empty on error).
    pub invalidated: Vec<SubscriptionId>,
    /// Why the batch did not persist, if it did not (its commits never happened).
    pub error: Option<Error>,
}

struct Shared {
    completions: Mutex<Vec<Completion>>,
    notify: Mutex<std::io::PipeWriter>,
    stop: AtomicBool,
    batches: std::sync::atomic::AtomicU64,
}

/// A running group-commit worker.
pub struct GroupCommitWorker {
    engine: Arc<Engine>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    reader: std::io::PipeReader,
}

/// How long the worker sleeps before retrying after a failed batch.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);
/// How often an idle worker looks at the stop flag.
const IDLE_WAKE: Duration = Duration::from_millis(200);

impl GroupCommitWorker {
    /// Start the worker thread for `engine`, writing to `sink`.
    pub fn start(engine: Arc<Engine>, sink: Arc<dyn BatchSink>) -> Result<GroupCommitWorker> {
        let (reader, writer) = std::io::pipe()
            .map_err(|e| Error::Persistence(format!("cannot create the worker's pipe: {e}")))?;
        let shared = Arc::new(Shared {
            completions: Mutex::new(Vec::new()),
            notify: Mutex::new(writer),
            stop: AtomicBool::new(false),
            batches: std::sync::atomic::AtomicU64::new(0),
        });
        let thread = {
            let engine = Arc::clone(&engine);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("reactive-group-commit".into())
                .spawn(move || run(&engine, sink.as_ref(), &shared))
                .map_err(|e| Error::Persistence(format!("cannot start the worker: {e}")))?
        };
        Ok(GroupCommitWorker {
            engine,
            shared,
            thread: Mutex::new(Some(thread)),
            reader,
        })
    }

    /// The pipe that gets one byte per completion (read it to drain).
    pub fn reader(&self) -> &std::io::PipeReader {
        &self.reader
    }

    /// Completions posted since the last call, oldest first.
    pub fn take_completions(&self) -> Vec<Completion> {
        std::mem::take(&mut *self.shared.completions.lock())
    }

    /// Batches written so far.
    pub fn batches_written(&self) -> u64 {
        self.shared.batches.load(Ordering::Relaxed)
    }

    /// Persist everything queued, then end the thread (blocks until it has).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.engine.wake();
        if let Some(thread) = self.thread.lock().take() {
            // A panicking worker is a bug; its panic is not re-raised into the caller.
            let _ = thread.join();
        }
    }
}

impl Drop for GroupCommitWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn post(shared: &Shared, completion: Completion) {
    shared.completions.lock().push(completion);
    // If the pipe is full the reader has plenty to wake for: a failed write loses nothing.
    let _ = shared.notify.lock().write(&[1]);
}

fn run(engine: &Engine, sink: &dyn BatchSink, shared: &Shared) {
    let mut seen = u64::MAX;
    let mut posted = 0;
    loop {
        let generation = engine.wait_queued(seen, IDLE_WAKE);
        let batch = engine.take_batch();
        if batch.is_empty() {
            seen = generation.max(batch.generation);
            if batch.generation > posted {
                // Queued work vanished (an aborted batch's commits): still settle waiters.
                posted = batch.generation;
                post(
                    shared,
                    Completion {
                        generation: posted,
                        timestamps: Vec::new(),
                        invalidated: Vec::new(),
                        error: None,
                    },
                );
            }
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            continue;
        }
        posted = batch.generation;
        seen = batch.generation;
        let timestamps = batch.commits.timestamps();
        match sink.write_batch(&batch) {
            Ok(()) => {
                let invalidated = engine.publish(&batch);
                shared.batches.fetch_add(1, Ordering::Relaxed);
                post(
                    shared,
                    Completion {
                        generation: batch.generation,
                        timestamps,
                        invalidated,
                        error: None,
                    },
                );
            }
            Err(error) => {
                let generation = batch.generation;
                engine.abort(batch);
                post(
                    shared,
                    Completion {
                        generation,
                        timestamps,
                        invalidated: Vec::new(),
                        error: Some(error),
                    },
                );
                if shared.stop.load(Ordering::Acquire) {
                    // Stopping with a failing backend: what is left cannot be persisted.
                    return;
                }
                std::thread::sleep(RETRY_BACKOFF);
            }
        }
    }
}
