//! The `tracing` event when a context ends (feature `tracing`).

use std::sync::{Arc, Mutex};

use cancelctx::{Cause, Context};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

#[derive(Default, Clone)]
struct Collect(Arc<Mutex<Vec<String>>>);

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
        let mut fields = Fields(format!("{} ", event.metadata().target()));
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
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
    let events = collect.0.lock().unwrap().clone();
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
