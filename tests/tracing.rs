//! The `tracing` event when a context ends (feature `tracing`).

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context as TaskContext, Wake, Waker};
use std::time::Duration;

use cancelctx::{Cause, Context, Done};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records every event as text, or, `panicking`, panics on every event.
#[derive(Default, Clone)]
struct Collect {
    events: Arc<Mutex<Vec<String>>>,
    panicking: bool,
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
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
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
