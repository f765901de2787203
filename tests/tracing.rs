//! The `tracing` event when a context ends (feature `tracing`).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context as TaskContext, Wake, Waker};
use std::thread;
use std::time::{Duration, Instant};

use cancelctx::{Cause, Context, Done};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every event as text, or, `panicking`, panics on every event.
/// `events_only`: enables events and nothing else (as a
/// `filter_fn(|m| m.is_event())` layer filter does), so the `enabled!` hint
/// callsite is disabled.
#[derive(Default, Clone)]
struct Collect {
    events: Arc<Mutex<Vec<String>>>,
    panicking: bool,
    events_only: bool,
}

impl Collect {
    /// The `name` field of every event, sorted.
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|event| {
                let name = &event[event.find("name=").expect("a name field") + 5..];
                name[..name.find(' ').unwrap_or(name.len())].to_owned()
            })
            .collect();
        names.sort();
        names
    }
}

struct Fields(String);
impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push_str(&format!("{}={} ", field.name(), value));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        !self.events_only || metadata.is_event()
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        assert!(!self.panicking, "subscriber panics");
        let mut fields = Fields(format!("{} ", event.metadata().target()));
        event.record(&mut fields);
        self.events.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn an_event_per_ended_context_with_name_kind_and_cause() {
    let collect = Collect::default();
    tracing::subscriber::with_default(collect.clone(), || {
        let (parent, guard) = Context::background().named("checkout").with_cancel();
        let (_child, _g) = parent.named("payment").with_cancel();
        guard.cancel_with_cause(Cause::msg("client went away"));
    });
    let events = collect.events.lock().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    let checkout = events
        .iter()
        .find(|e| e.contains("name=checkout"))
        .expect("checkout event");
    assert!(checkout.starts_with("cancelctx "), "{checkout}");
    assert!(checkout.contains("kind=explicit"), "{checkout}");
    assert!(checkout.contains("client went away"), "{checkout}");
    let payment = events
        .iter()
        .find(|e| e.contains("name=payment"))
        .expect("payment event");
    assert!(payment.contains("kind=parent"), "{payment}");
    assert!(payment.contains("client went away"), "{payment}");
}

/// A waker that records that it was woken.
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A `Done` of `ctx` polled once, and whether its waker has been woken since.
fn waiting(ctx: &Context) -> (Done, Arc<Flag>) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    let mut done = ctx.done();
    let waker = Waker::from(Arc::clone(&flag));
    assert!(
        Pin::new(&mut done)
            .poll(&mut TaskContext::from_waker(&waker))
            .is_pending()
    );
    (done, flag)
}

/// The hook runs after the cancel's wake-ups and callback hand-offs, so a
/// subscriber that panics (or a cause whose `Display` does) reaches the
/// canceller without costing a waiter its wake-up or a callback its run.
/// (Observed before the fix: neither happened.)
#[test]
fn a_panicking_subscriber_costs_no_wake_up_nor_callback() {
    let panicking = Collect {
        panicking: true,
        ..Collect::default()
    };
    tracing::subscriber::with_default(panicking, || {
        // A leaf: only a waiter.
        let (leaf, guard) = Context::background().with_cancel();
        let (_done, woken) = waiting(&leaf);
        let result = catch_unwind(AssertUnwindSafe(|| guard.cancel()));
        assert!(
            result.is_err(),
            "the subscriber's panic reaches the canceller"
        );
        assert!(leaf.is_done() && woken.0.load(Ordering::SeqCst));

        // A walk: a child, a waiter and an after_func.
        let (parent, guard) = Context::background().with_cancel();
        let (child, _g) = parent.with_cancel();
        let (_done, woken) = waiting(&parent);
        let (tx, rx) = mpsc::channel();
        let _registration = parent.after_func(move || tx.send(()).unwrap());
        let result = catch_unwind(AssertUnwindSafe(|| guard.cancel()));
        assert!(
            result.is_err(),
            "the subscriber's panic reaches the canceller"
        );
        assert!(parent.is_done() && child.is_done());
        assert!(woken.0.load(Ordering::SeqCst));
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the after_func ran");
        assert_eq!(parent.child_count(), 0);
    });
}

/// Regression: with a subscriber that wants the event, each
/// ended context's event carries its name, found by walking from the node
/// up to the nearest `named` link or the root. A cancel of a chain of `n`
/// nodes then walks `n²/2` links: a million-deep chain (which the crate
/// supports: "million-deep chains work") takes hours to cancel, on the
/// canceller's thread or the timer thread.
#[test]
fn regression_a_deep_cancel_is_linear() {
    struct Count(std::sync::atomic::AtomicUsize);
    impl Subscriber for Count {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    const DEPTH: usize = 1_000_000;
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let subscriber = std::sync::Arc::new(Count(Default::default()));
            let dispatch = tracing::Dispatch::from(subscriber.clone());
            tracing::dispatcher::with_default(&dispatch, || {
                let (root, guard) = Context::background().named("request").with_cancel();
                let mut ctx = root.clone();
                let mut guards = Vec::with_capacity(DEPTH);
                for _ in 0..DEPTH {
                    let (c, g) = ctx.with_cancel();
                    guards.push(g);
                    ctx = c;
                }
                let start = Instant::now();
                guard.cancel();
                let took = start.elapsed();
                assert!(ctx.is_done());
                let events = subscriber.0.load(std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send((took, events));
                drop(guards);
            });
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok((took, events)) => {
            assert_eq!(events, DEPTH + 1);
            eprintln!("canceled {DEPTH} nodes in {took:?}");
        }
        Err(_) => panic!("canceling a {DEPTH}-deep chain with tracing on took over 60 s"),
    }
}

/// The names the `tracing` events of one cancel walk carry: each node's
/// nearest `named` link, through values, `without_cancel` and nodes.
#[test]
fn names_in_a_cancel_walk() {
    let names = Collect::default();
    tracing::subscriber::with_default(names.clone(), || {
        let (top, guard) = Context::background()
            .named("outer")
            .with_value(1u8)
            .without_cancel()
            .with_cancel();
        let (a, _ga) = top.with_value(2u8).with_cancel(); // outer
        let (b, _gb) = a.named("b").with_value(3u8).with_cancel(); // b
        let (c, _gc) = b.with_cancel(); // b
        let (d, _gd) = top.named(String::from("d")).with_cancel(); // d
        let (e, _ge) = Context::background().with_cancel();
        let (f, _gf) = e.with_cancel(); // (none)
        guard.cancel();
        drop(_ge);
        let _ = (c, d, f);
    });
    assert_eq!(names.names(), ["", "", "b", "b", "d", "outer", "outer"]);
}

/// Regression: a subscriber that wants every event but not `enabled!` hints got the
/// event of every context a walk ended with an empty name (`name_of`
/// of a `Named` that was not computed), where `Context::name` said
/// "checkout" / "payment". (A leaf cancel, with no walk, named it.)
#[test]
fn walk_events_carry_names_for_an_events_only_subscriber() {
    let names = Collect {
        events_only: true,
        ..Collect::default()
    };
    tracing::subscriber::with_default(names.clone(), || {
        let (parent, guard) = Context::background().named("checkout").with_cancel();
        let (child, _g) = parent.named("payment").with_cancel();
        assert_eq!(parent.name(), Some("checkout"));
        assert_eq!(child.name(), Some("payment"));
        guard.cancel();
    });
    assert_eq!(names.names(), ["checkout", "payment"]);
}
