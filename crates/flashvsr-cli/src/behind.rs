//! Work queued to a thread of its own, done in order behind the caller: the caller's next send
//! reports what went wrong there, and dropping the queue lets the thread end on what it has.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::failure::{Failure, Outcome};

pub struct Behind<M: Send + 'static> {
    /// What the thread does, for errors ("the output assembly").
    what: &'static str,
    queue: Option<SyncSender<M>>,
    worker: Option<JoinHandle<Outcome<usize>>>,
}

impl<M: Send + 'static> Behind<M> {
    /// Runs `work` on a new thread over the messages sent, at most `waiting` of them queued.
    pub fn spawn(
        what: &'static str,
        waiting: usize,
        work: impl FnOnce(Receiver<M>) -> Outcome<usize> + Send + 'static,
    ) -> Behind<M> {
        let (tx, rx) = sync_channel::<M>(waiting);
        Behind {
            what,
            queue: Some(tx),
            worker: Some(std::thread::spawn(move || work(rx))),
        }
    }

    /// Queues `message`; when the thread has stopped, its error.
    pub fn send(&mut self, message: M) -> Outcome<()> {
        if self.queue.as_ref().is_some_and(|q| q.send(message).is_ok()) {
            return Ok(());
        }
        self.join()?;
        Err(Failure::failed(format!("{} stopped", self.what)))
    }

    /// Closes the queue and waits for the thread's result.
    pub fn join(&mut self) -> Outcome<usize> {
        self.queue = None;
        match self.worker.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Failure::failed(format!("{} panicked", self.what))),
            None => Err(Failure::failed(format!("{} already stopped", self.what))),
        }
    }
}

impl<M: Send + 'static> Drop for Behind<M> {
    fn drop(&mut self) {
        self.queue = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
