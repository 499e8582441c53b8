//! A future polled only when it was woken: for what waits beside hyper's connection in one
//! task.
//!
//! A connection's task waits in one `select!` for hyper's connection and for the rare things
//! beside it (the worker's stop, the drain grace, the watchdog's timer). A `select!` polls
//! every branch whenever the task wakes, and the task wakes for each read and write of every
//! request: polling the stop's watch and the two timers each time was ~270 instructions of a
//! hello-world request. [`WhenWoken`] gives its future a waker of its own and polls it only
//! once that waker has fired (and the first time, so that it can register).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use atomic_waker::AtomicWaker;

/// Polls `F` only when `F` asked to be.
pub struct WhenWoken<F> {
    inner: F,
    signal: Arc<Signal>,
}

/// The inner future's waker: notes the wake, then wakes the task.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        WhenWoken {
            inner,
            signal: Arc::new(Signal {
                woken: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is looked at: a wake in between is not lost.
        this.signal.task.register(cx.waker());
        if !this.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.signal.clone());
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    /// Counts its polls; ready once `ready` is set, pending otherwise, keeping the last waker.
    #[derive(Default)]
    struct Probe {
        polls: AtomicUsize,
        ready: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    impl Future for &Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// A task waker that counts its wakes.
    #[derive(Default)]
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_after_its_own_wake() {
        let probe = Probe::default();
        let task = Arc::new(Task::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut fut = WhenWoken::new(&probe);

        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "polled the first time"
        );
        for _ in 0..5 {
            // The task woke for something else.
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(
            probe.polls.load(Ordering::SeqCst),
            1,
            "not polled unless woken"
        );

        probe.ready.store(true, Ordering::SeqCst);
        let inner_waker = probe.waker.lock().unwrap().take().unwrap();
        inner_waker.wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "its wake wakes the task");
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
        assert_eq!(probe.polls.load(Ordering::SeqCst), 2);
    }

    /// Pending once after waking itself (as a tokio future out of its task budget does).
    struct WakesItself(bool);
    impl Future for WakesItself {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_from_inside_its_own_poll_is_kept() {
        let task = Arc::new(Task::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let mut fut = WhenWoken::new(WakesItself(false));
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert!(
            Pin::new(&mut fut).poll(&mut cx).is_ready(),
            "and polls it again"
        );
    }

    #[test]
    fn a_wake_reaches_the_task_that_polled_last() {
        let probe = Probe::default();
        let (first, second) = (Arc::new(Task::default()), Arc::new(Task::default()));
        let mut fut = WhenWoken::new(&probe);
        let w1 = Waker::from(first.clone());
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w1))
            .is_pending());
        let w2 = Waker::from(second.clone());
        assert!(Pin::new(&mut fut)
            .poll(&mut Context::from_waker(&w2))
            .is_pending());
        probe.waker.lock().unwrap().take().unwrap().wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }
}
