//! A resource used on a blocking thread, one job at a time: the job takes
//! it, and it comes back to the reconcile loop with the job's result, as an
//! event on a channel. For work of one system call per map entry (table
//! scans), which must neither run in the loop nor pile up behind itself.

use tokio::sync::mpsc;

pub(super) struct OneAtATime<T, R> {
    /// `None` while a job runs.
    held: Option<T>,
    done: mpsc::Sender<(T, R)>,
}

impl<T: Send + 'static, R: Send + 'static> OneAtATime<T, R> {
    pub fn new(resource: T, done: mpsc::Sender<(T, R)>) -> Self {
        Self { held: Some(resource), done }
    }

    /// Runs `job` on a blocking thread, unless one is running.
    pub fn start(&mut self, job: impl FnOnce(&mut T) -> R + Send + 'static) {
        let Some(mut resource) = self.held.take() else { return };
        let done = self.done.clone();
        tokio::task::spawn_blocking(move || {
            let result = job(&mut resource);
            let _ = done.blocking_send((resource, result));
        });
    }

    /// A job came back: the resource is free for the next; its result.
    pub fn finished(&mut self, (resource, result): (T, R)) -> R {
        self.held = Some(resource);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc as std_mpsc;

    use super::*;

    /// A second start while a job runs is dropped, not queued; after the
    /// result is taken back, the next start runs with the resource as left.
    #[tokio::test]
    async fn one_job_at_a_time_and_the_resource_comes_back() {
        let (done_tx, mut done) = mpsc::channel(4);
        let mut worker = OneAtATime::new(0u32, done_tx);
        let (release, wait) = std_mpsc::channel::<()>();
        worker.start(move |n| {
            wait.recv().unwrap();
            *n += 1;
            "first"
        });
        worker.start(|n| {
            *n += 100;
            "second"
        });
        release.send(()).unwrap();
        let event = done.recv().await.unwrap();
        assert_eq!(event, (1, "first"));
        assert_eq!(worker.finished(event), "first");
        worker.start(|n| {
            *n += 10;
            "third"
        });
        let event = done.recv().await.unwrap();
        assert_eq!(event, (11, "third"), "the second start must not have run");
        assert_eq!(worker.finished(event), "third");
        assert!(done.try_recv().is_err());
    }
}
