//! One async suite, every executor: each case in `cases` is written once as
//! an `async fn` and runs under tokio (current-thread and multi-thread, both
//! built *without* the time driver: no `enable_time()`, so every deadline
//! here is the crate's own), async-std, smol and `futures::executor`; the
//! blocking API runs on plain threads; and the waker edge cases (a new waker
//! on every poll, a `Done` dropped while registered) run both by hand and
//! under every executor.
//!
//! Test names are `<executor>::<case>`, e.g.
//! `cargo test --test runtimes tokio_current_thread::`.

mod common;

use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::pin::Pin;

use futures::FutureExt;

type Payload = Box<dyn std::any::Any + Send + 'static>;
type Task = Pin<Box<dyn Future<Output = Result<(), Payload>> + Send + 'static>>;
type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;
type Case = fn(Exec) -> BoxFuture;

/// The executor under test, as a case sees it: a way to spawn more tasks.
#[derive(Clone, Copy)]
struct Exec {
    /// Spawns a task that reports a panic instead of unwinding; the returned
    /// future is its join handle.
    spawn_task: fn(Task) -> Task,
}

impl Exec {
    /// Spawns `fut` as a task of the executor under test; awaiting the result
    /// joins it (and re-raises its panic).
    fn spawn(self, fut: impl Future<Output = ()> + Send + 'static) -> BoxFuture {
        let task = (self.spawn_task)(Box::pin(AssertUnwindSafe(fut).catch_unwind()));
        Box::pin(async move {
            if let Err(panic) = task.await {
                resume_unwind(panic);
            }
        })
    }
}

/// Builds the matrix: one module per executor, one `#[test]` per case.
macro_rules! matrix {
    (executors: [$($exec:ident),* $(,)?], cases: $cases:tt $(,)?) => {
        $( matrix!(@module $exec $cases); )*
    };
    (@module $exec:ident [$($case:ident),* $(,)?]) => {
        mod $exec {
            $(
                #[test]
                fn $case() {
                    super::runners::$exec(|exec| Box::pin(super::cases::$case(exec)));
                }
            )*
        }
    };
}

matrix! {
    executors: [tokio_current_thread, tokio_multi_thread, async_std, smol, futures_executor],
    cases: [
        done_resolves_when_a_plain_thread_cancels,
        deadline_fires_with_no_runtime_timer,
        deadline_reaches_a_task_that_never_yields,
        sleep_completes_or_is_cut_short,
        run_returns_the_output_or_the_error,
        run_stream_ends_with_the_context,
        many_tasks_wait_on_one_tree,
        a_task_cancels_another,
        select_between_done_and_work,
        after_func_signals_a_task,
        blocking_thread_and_task_share_a_context,
        values_and_deadlines_cross_await_points,
        new_waker_on_every_poll_only_the_last_is_woken,
        done_dropped_while_registered,
        done_dropped_racing_a_cancel,
    ],
}

mod runners {
    //! How each executor runs a case. The tokio runtimes are built without
    //! `enable_time()` (and without I/O): the crate needs neither.

    use super::{Case, Exec, Task};

    fn tokio_exec() -> Exec {
        Exec {
            spawn_task: |task| {
                let handle = tokio::spawn(task);
                Box::pin(async move { handle.await.unwrap_or_else(|join| Err(join.into_panic())) })
            },
        }
    }

    pub(super) fn tokio_current_thread(case: Case) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(case(tokio_exec()));
    }

    pub(super) fn tokio_multi_thread(case: Case) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        // On a worker thread, not the test thread.
        rt.block_on(async { tokio_exec().spawn(case(tokio_exec())).await });
    }

    pub(super) fn async_std(case: Case) {
        let exec = Exec {
            spawn_task: |task: Task| Box::pin(async_std::task::spawn(task)),
        };
        async_std::task::block_on(exec.spawn(case(exec)));
    }

    pub(super) fn smol(case: Case) {
        let exec = Exec {
            spawn_task: |task: Task| Box::pin(smol::spawn(task)),
        };
        smol::block_on(exec.spawn(case(exec)));
    }

    /// `futures::executor::block_on` on the test thread; a spawned task gets
    /// a plain thread of its own, also driven by `block_on`.
    pub(super) fn futures_executor(case: Case) {
        let exec = Exec {
            spawn_task: |task: Task| {
                let (tx, rx) = futures::channel::oneshot::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(futures::executor::block_on(task));
                });
                Box::pin(async move { rx.await.expect("the task's thread ended early") })
            },
        };
        futures::executor::block_on(case(exec));
    }
}

mod cases {
    //! The async suite, written once. Each case takes well under a second.

    use std::future::{Future, poll_fn};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context as TaskContext, Poll, Wake, Waker};
    use std::thread;
    use std::time::{Duration, Instant};

    use cancelctx::{Cause, Context, Error};
    use futures::StreamExt;

    use super::Exec;
    use crate::common::PATIENCE;

    /// Yields to the executor once (every executor's `yield_now`).
    async fn yield_now() {
        let mut yielded = false;
        poll_fn(|cx| {
            if yielded {
                Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
    }

    pub(super) async fn done_resolves_when_a_plain_thread_cancels(_: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            guard.cancel_with_cause(Cause::msg("from a thread"));
        });
        assert_eq!(ctx.done().await, Error::Canceled);
        assert_eq!(ctx.cause().unwrap().to_string(), "from a thread");
        canceller.join().unwrap();
    }

    pub(super) async fn deadline_fires_with_no_runtime_timer(_: Exec) {
        let start = Instant::now();
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        assert_eq!(ctx.done().await, Error::DeadlineExceeded);
        assert!(start.elapsed() >= Duration::from_millis(20), "never early");
        assert_eq!(ctx.remaining(), Some(Duration::ZERO));
        assert!(ctx.err().unwrap().is_timeout());
    }

    /// CPU-bound work that checks `is_done()` and never yields: on a
    /// current-thread runtime it holds the only thread, so no runtime timer
    /// could fire. The crate's timer thread ends the context regardless.
    pub(super) async fn deadline_reaches_a_task_that_never_yields(exec: Exec) {
        let start = Instant::now();
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        let worker = exec.spawn(async move {
            let mut rounds = 0u64;
            while !ctx.is_done() {
                rounds = std::hint::black_box(rounds + 1);
                assert!(start.elapsed() < PATIENCE, "the deadline never fired");
            }
            assert!(rounds > 0);
            assert_eq!(ctx.err(), Some(Error::DeadlineExceeded));
        });
        worker.await;
        assert!(start.elapsed() >= Duration::from_millis(20));
    }

    pub(super) async fn sleep_completes_or_is_cut_short(_: Exec) {
        let ctx = Context::background();
        let start = Instant::now();
        assert_eq!(ctx.sleep(Duration::from_millis(5)).await, Ok(()));
        assert!(start.elapsed() >= Duration::from_millis(5));

        let (ctx, _guard) = ctx.with_timeout(Duration::from_millis(10));
        assert_eq!(
            ctx.sleep(Duration::from_secs(3600)).await,
            Err(Error::DeadlineExceeded)
        );
    }

    pub(super) async fn run_returns_the_output_or_the_error(_: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        assert_eq!(ctx.run(async { 7 }).await, Ok(7));
        let pending = ctx.run(std::future::pending::<u8>());
        let cancel = async {
            yield_now().await;
            guard.cancel();
        };
        let (result, ()) = futures::join!(pending, cancel);
        assert_eq!(result, Err(Error::Canceled));
    }

    pub(super) async fn run_stream_ends_with_the_context(_: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let mut numbers = ctx.run_stream(futures::stream::iter(0..));
        assert_eq!(numbers.next().await, Some(0));
        assert_eq!(numbers.next().await, Some(1));
        guard.cancel();
        assert_eq!(numbers.next().await, None);
    }

    pub(super) async fn many_tasks_wait_on_one_tree(exec: Exec) {
        let (root, guard) = Context::background().with_cancel();
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let ctx = root.with_value(i);
            let (ctx, child_guard) = ctx.with_cancel();
            tasks.push(exec.spawn(async move {
                let _child_guard = child_guard;
                assert_eq!(ctx.done().await, Error::Canceled);
                assert_eq!(ctx.value::<u32>(), Some(&i));
                assert_eq!(ctx.cause().unwrap().to_string(), "shutdown");
            }));
        }
        assert_eq!(root.child_count(), 8);
        // Some tasks are probably parked in `done()` by now; either way works.
        yield_now().await;
        guard.cancel_with_cause(Cause::msg("shutdown"));
        futures::future::join_all(tasks).await;
        assert_eq!(root.child_count(), 0);
    }

    pub(super) async fn a_task_cancels_another(exec: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let canceller = exec.spawn(async move {
            yield_now().await;
            guard.cancel();
        });
        assert_eq!(ctx.done().await, Error::Canceled);
        canceller.await;
    }

    pub(super) async fn select_between_done_and_work(exec: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let (tx, mut rx) = futures::channel::mpsc::unbounded::<u32>();
        let producer = exec.spawn({
            let ctx = ctx.clone();
            async move {
                tx.unbounded_send(1).unwrap();
                tx.unbounded_send(2).unwrap();
                // Keep the channel open: only the context ends the loop below.
                ctx.done().await;
                drop(tx);
            }
        });
        let mut received = Vec::new();
        let mut done = ctx.done();
        loop {
            futures::select_biased! {
                err = done => {
                    assert_eq!(err, Error::Canceled);
                    break;
                }
                item = rx.next() => {
                    received.push(item.unwrap());
                    if received.len() == 2 {
                        guard.cancel();
                    }
                }
            }
        }
        assert_eq!(received, [1, 2]);
        producer.await;
    }

    pub(super) async fn after_func_signals_a_task(_: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let (tx, rx) = futures::channel::oneshot::channel();
        let observed = ctx.clone();
        let _registration = ctx.after_func(move || {
            tx.send(observed.err()).unwrap();
        });
        guard.cancel();
        assert_eq!(rx.await.unwrap(), Some(Error::Canceled));
    }

    pub(super) async fn blocking_thread_and_task_share_a_context(_: Exec) {
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        let blocking = {
            let ctx = ctx.clone();
            thread::spawn(move || ctx.wait_done())
        };
        assert_eq!(ctx.done().await, Error::DeadlineExceeded);
        assert_eq!(blocking.join().unwrap(), Error::DeadlineExceeded);
    }

    pub(super) async fn values_and_deadlines_cross_await_points(exec: Exec) {
        struct RequestId(u64);
        let outer = Instant::now() + Duration::from_secs(60);
        let (ctx, _g1) = Context::background()
            .with_value(RequestId(7))
            .with_deadline(outer);
        let handler = exec.spawn(async move {
            yield_now().await;
            let (child, _g2) = ctx.with_timeout(Duration::from_secs(3600));
            yield_now().await;
            assert_eq!(child.value::<RequestId>().map(|r| r.0), Some(7));
            assert_eq!(child.deadline(), Some(outer), "capped by the parent's");
        });
        handler.await;
    }

    /// A future polled with a fresh waker on every poll. Each waker counts its
    /// own wakes and forwards them to the task.
    struct FreshWakers<F> {
        inner: F,
        wakers: Vec<(Arc<Forward>, bool)>, // (waker, poll returned pending)
    }

    struct Forward {
        task: Waker,
        wakes: AtomicUsize,
    }

    impl Wake for Forward {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.task.wake_by_ref();
        }
    }

    impl<F: Future + Unpin> Future for FreshWakers<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
            let forward = Arc::new(Forward {
                task: cx.waker().clone(),
                wakes: AtomicUsize::new(0),
            });
            let waker = Waker::from(forward.clone());
            let poll = Pin::new(&mut self.inner).poll(&mut TaskContext::from_waker(&waker));
            self.wakers.push((forward, poll.is_pending()));
            poll
        }
    }

    pub(super) async fn new_waker_on_every_poll_only_the_last_is_woken(_: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        let mut done = FreshWakers {
            inner: ctx.done(),
            wakers: Vec::new(),
        };
        let mut run = FreshWakers {
            inner: Box::pin(ctx.run(std::future::pending::<()>())),
            wakers: Vec::new(),
        };
        // One task: `join!` re-polls both futures on every wake, each time
        // with a new waker, and the cancel happens between two polls.
        let cancel_later = async {
            for _ in 0..5 {
                yield_now().await;
            }
            guard.cancel();
        };
        let (err, result, ()) = futures::join!(&mut done, &mut run, cancel_later);
        assert_eq!(err, Error::Canceled);
        assert_eq!(result, Err(Error::Canceled));
        for wakers in [&done.wakers, &run.wakers] {
            assert!(wakers.len() >= 6, "polled once per yield at least");
            let last_pending = wakers.iter().rposition(|(_, pending)| *pending).unwrap();
            for (i, (waker, _)) in wakers.iter().enumerate() {
                let expected = usize::from(i == last_pending);
                assert_eq!(
                    waker.wakes.load(Ordering::SeqCst),
                    expected,
                    "waker {i} of {}",
                    wakers.len()
                );
            }
        }
    }

    pub(super) async fn done_dropped_while_registered(exec: Exec) {
        let (ctx, guard) = Context::background().with_cancel();
        // Registered with this task's waker, then dropped.
        let mut done = ctx.done();
        assert!(futures::poll!(&mut done).is_pending());
        drop(done);
        // Registered here, dropped by another task.
        let mut elsewhere = ctx.done();
        assert!(futures::poll!(&mut elsewhere).is_pending());
        exec.spawn(async move { drop(elsewhere) }).await;
        // A survivor on the same context is still woken.
        let mut survivor = ctx.done();
        assert!(futures::poll!(&mut survivor).is_pending());
        guard.cancel();
        assert_eq!(survivor.await, Error::Canceled);
        assert_eq!(ctx.done().await, Error::Canceled);
    }

    pub(super) async fn done_dropped_racing_a_cancel(exec: Exec) {
        for _ in 0..50 {
            let (ctx, guard) = Context::background().with_cancel();
            let mut registered = Vec::new();
            for _ in 0..4 {
                let mut done = ctx.done();
                assert!(futures::poll!(&mut done).is_pending());
                registered.push(done);
            }
            let dropper = exec.spawn(async move { drop(registered) });
            let canceller = thread::spawn(move || guard.cancel());
            dropper.await;
            canceller.join().unwrap();
            assert_eq!(ctx.done().await, Error::Canceled);
        }
    }
}

mod plain_threads {
    //! The blocking API, no executor anywhere.

    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use cancelctx::{Cause, Context, Error};

    use crate::common::PATIENCE;

    #[test]
    fn wait_done_on_many_threads_is_woken_by_one_cancel() {
        let (root, guard) = Context::background().with_cancel();
        let waiters: Vec<_> = (0..8)
            .map(|i| {
                let ctx = if i % 2 == 0 {
                    root.clone()
                } else {
                    root.with_value(i).with_cancel().0
                };
                thread::spawn(move || (ctx.wait_done(), ctx.cause().map(|c| c.to_string())))
            })
            .collect();
        guard.cancel_with_cause(Cause::msg("stop"));
        for (i, waiter) in waiters.into_iter().enumerate() {
            let (err, cause) = waiter.join().unwrap();
            assert_eq!(err, Error::Canceled);
            // Odd waiters' own guards were dropped at once: their own cause.
            let expected = if i % 2 == 0 {
                "stop"
            } else {
                "context canceled"
            };
            assert_eq!(cause.as_deref(), Some(expected));
        }
    }

    #[test]
    fn wait_done_timeout_and_deadline() {
        let (ctx, guard) = Context::background().with_cancel();
        let start = Instant::now();
        assert_eq!(ctx.wait_done_timeout(Duration::from_millis(5)), None);
        assert!(start.elapsed() >= Duration::from_millis(5));
        assert_eq!(ctx.wait_done_deadline(Instant::now()), None);
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(5));
            guard.cancel();
        });
        assert_eq!(ctx.wait_done_timeout(PATIENCE), Some(Error::Canceled));
        canceller.join().unwrap();
    }

    #[test]
    fn sleep_blocking_is_cut_short_by_a_deadline() {
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(10));
        let start = Instant::now();
        assert_eq!(
            ctx.sleep_blocking(Duration::from_secs(3600)),
            Err(Error::DeadlineExceeded)
        );
        assert!(start.elapsed() < PATIENCE);
        assert_eq!(
            Context::background().sleep_blocking(Duration::from_millis(1)),
            Ok(())
        );
    }

    #[test]
    fn after_func_runs_off_the_cancelling_thread() {
        let (ctx, guard) = Context::background().with_cancel();
        let (tx, rx) = mpsc::channel();
        let _registration = ctx.after_func(move || tx.send(thread::current().id()).unwrap());
        guard.cancel();
        let ran_on = rx.recv_timeout(PATIENCE).unwrap();
        assert_ne!(ran_on, thread::current().id());
    }

    #[test]
    fn a_worker_pool_stops_at_its_deadline() {
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(20));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let ctx = ctx.clone();
                thread::spawn(move || {
                    let mut jobs = 0u32;
                    while ctx.sleep_blocking(Duration::from_millis(1)).is_ok() {
                        jobs += 1;
                    }
                    (jobs, ctx.err())
                })
            })
            .collect();
        for worker in workers {
            let (_jobs, err) = worker.join().unwrap();
            assert_eq!(err, Some(Error::DeadlineExceeded));
        }
    }
}

mod by_hand {
    //! The waker edge cases with no executor at all: counting wakers, polled
    //! by hand, exact wake counts.

    use std::task::Poll;
    use std::thread;
    use std::time::Duration;

    use cancelctx::{Context, Error};

    use crate::common::{CountingWaker, eventually, poll_once};

    #[test]
    fn a_new_waker_on_every_poll_only_the_last_is_woken() {
        let (ctx, guard) = Context::background().with_cancel();
        let mut done = ctx.done();
        let mut run = Box::pin(ctx.run(std::future::pending::<()>()));
        let mut sleep = ctx.sleep(Duration::from_secs(3600));
        let mut counters = Vec::new();
        for _ in 0..5 {
            let (counter, waker) = CountingWaker::new();
            assert!(poll_once(&mut done, &waker).is_pending());
            assert!(poll_once(&mut run, &waker).is_pending());
            assert!(poll_once(&mut sleep, &waker).is_pending());
            counters.push((counter, waker));
        }
        guard.cancel();
        let wakes: Vec<usize> = counters.iter().map(|(c, _)| c.wakes()).collect();
        // The last waker is woken once per future (three), the others never.
        assert_eq!(wakes, [0, 0, 0, 0, 3]);
        let waker = &counters[4].1;
        assert_eq!(poll_once(&mut done, waker), Poll::Ready(Error::Canceled));
        assert_eq!(
            poll_once(&mut run, waker),
            Poll::Ready(Err(Error::Canceled))
        );
        assert_eq!(
            poll_once(&mut sleep, waker),
            Poll::Ready(Err(Error::Canceled))
        );
    }

    #[test]
    fn a_timer_wake_goes_to_the_last_waker_only() {
        let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(10));
        let mut done = ctx.done();
        let (first, w1) = CountingWaker::new();
        let (second, w2) = CountingWaker::new();
        assert!(poll_once(&mut done, &w1).is_pending());
        assert!(poll_once(&mut done, &w2).is_pending());
        eventually("deadline woke the task", || second.wakes() == 1);
        assert_eq!(first.wakes(), 0);
        assert_eq!(
            poll_once(&mut done, &w2),
            Poll::Ready(Error::DeadlineExceeded)
        );
    }

    #[test]
    fn a_done_dropped_while_registered_is_never_woken() {
        let (ctx, guard) = Context::background().with_cancel();
        let (dropped, w1) = CountingWaker::new();
        let (kept, w2) = CountingWaker::new();
        let mut gone = ctx.done();
        let mut stays = ctx.done();
        assert!(poll_once(&mut gone, &w1).is_pending());
        assert!(poll_once(&mut stays, &w2).is_pending());
        drop(gone);
        guard.cancel();
        assert_eq!((dropped.wakes(), kept.wakes()), (0, 1));
        assert_eq!(poll_once(&mut stays, &w2), Poll::Ready(Error::Canceled));
    }

    #[test]
    fn a_done_dropped_on_another_thread_while_the_context_is_canceled() {
        for _ in 0..200 {
            let (ctx, guard) = Context::background().with_cancel();
            let (counter, waker) = CountingWaker::new();
            let mut done = ctx.done();
            assert!(poll_once(&mut done, &waker).is_pending());
            let dropper = thread::spawn(move || drop(done));
            guard.cancel();
            dropper.join().unwrap();
            assert!(counter.wakes() <= 1);
        }
    }
}
