//! One context shared by a blocking thread and an async task: either side can
//! end it, and both see the end, with the same error and cause.
//!
//! 1. A blocking producer thread feeds an async consumer task over a channel,
//!    until the producer hits a fatal error and cancels the shared context
//!    with a cause: the consumer, waiting on `ctx.done()` and the channel at
//!    once, stops at the same moment and reads why.
//! 2. A deadline ends a context that a thread waits on with `wait_done()`
//!    and a task awaits with `done()`: both wake, from the crate's timer
//!    thread.
//! 3. The async side ends it: a task cancels with a plain-message cause, and
//!    a thread blocked in `wait_done()` wakes and reads it.
//!
//! The async side runs on `futures::executor` here; any executor does.
//!
//! Run with `cargo run --example shared_context`; it also runs under
//! `cargo test --examples`. It checks what it prints.

use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{Cause, Context, Error};
use futures::StreamExt;
use futures::channel::mpsc;

/// The producer's fatal error, carried to the consumer as the cause.
#[derive(Debug)]
struct DiskFull;

impl std::fmt::Display for DiskFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("disk full")
    }
}

impl std::error::Error for DiskFull {}

fn producer_ends_it() {
    let (ctx, guard) = Context::background().with_timeout(Duration::from_secs(5));
    let (tx, mut rx) = mpsc::unbounded::<u32>();

    let producer = {
        let ctx = ctx.clone();
        thread::spawn(move || {
            for item in 1.. {
                // Blocking work, bounded by the shared context.
                if ctx.sleep_blocking(Duration::from_millis(2)).is_err() {
                    return;
                }
                if item == 5 {
                    guard.cancel_with_cause(DiskFull);
                    return;
                }
                tx.unbounded_send(item).unwrap();
            }
        })
    };

    let received = futures::executor::block_on(async {
        let mut received = Vec::new();
        let mut done = ctx.done();
        loop {
            // The channel first: what was sent before the cancel is still
            // taken, however late this task runs (on a loaded machine the
            // cancel can be ready alongside items not yet received).
            futures::select_biased! {
                item = rx.next() => match item {
                    Some(item) => received.push(item),
                    None => {
                        // The producer is gone; its cancel is already visible.
                        assert!(ctx.is_done());
                    }
                },
                err = done => {
                    assert_eq!(err, Error::Canceled);
                    break received;
                }
            }
        }
    });
    producer.join().unwrap();

    let cause = ctx.cause().expect("ended");
    println!("consumer got {received:?}, then the context ended: {cause}");
    assert_eq!(received, [1, 2, 3, 4]);
    assert!(cause.is::<DiskFull>());
}

fn deadline_ends_it() {
    let start = Instant::now();
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(30));
    let blocking = {
        let ctx = ctx.clone();
        thread::spawn(move || (ctx.wait_done(), start.elapsed()))
    };
    let (task_err, task_woke) =
        futures::executor::block_on(async { (ctx.done().await, start.elapsed()) });
    let (thread_err, thread_woke) = blocking.join().unwrap();
    println!(
        "deadline: the task woke after {:.1} ms, the thread after {:.1} ms",
        task_woke.as_secs_f64() * 1e3,
        thread_woke.as_secs_f64() * 1e3
    );
    assert_eq!(
        (task_err, thread_err),
        (Error::DeadlineExceeded, Error::DeadlineExceeded)
    );
    for woke in [task_woke, thread_woke] {
        assert!(woke >= Duration::from_millis(30) && woke < Duration::from_secs(5));
    }
}

fn task_ends_it() {
    let (ctx, guard) = Context::background().with_cancel();
    let blocking = {
        let ctx = ctx.clone();
        thread::spawn(move || (ctx.wait_done(), ctx.cause().map(|c| c.to_string())))
    };
    // A cause that is a plain message works the same way as `DiskFull`.
    futures::executor::block_on(async move {
        guard.cancel_with_cause(Cause::msg("consumer gave up"));
    });
    let (err, cause) = blocking.join().unwrap();
    println!(
        "task -> thread: the thread woke with {err:?}, cause: {}",
        cause.as_deref().unwrap_or("-")
    );
    assert_eq!(err, Error::Canceled);
    assert_eq!(cause.as_deref(), Some("consumer gave up"));
}

fn main() {
    let started = Instant::now();
    producer_ends_it();
    deadline_ends_it();
    task_ends_it();
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "took {:?}",
        started.elapsed()
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_context() {
        super::main();
    }
}
