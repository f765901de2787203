//! What the ports of Go's context tests share (`tests/golang*.rs`).

use std::fmt;
use std::time::Duration;

use cancelctx::Context;

/// Go's `shortDuration`: a reasonable duration to block in a test.
pub const SHORT_DURATION: Duration = Duration::from_millis(1);
/// Go's `veryLongDuration`: an arbitrary upper bound on the test's running time.
pub const VERY_LONG_DURATION: Duration = Duration::from_secs(1000 * 60 * 60);
/// Go's `quiescent(t)` (5 s without a test deadline): the time by which any
/// remaining work must have finished. Generous, for a loaded 2-core machine.
pub const QUIESCENT: Duration = Duration::from_secs(10);

/// A comparable error, so that a cause can be checked for identity the way Go
/// compares `Cause(ctx) != want` on distinct `fmt.Errorf` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestError(pub &'static str);

impl fmt::Display for TestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TestError {}

/// Stand-in for Go's `otherContext`, "a Context that's not one of the types
/// defined in context.go". Rust has no `Context` trait, so the closest thing is
/// a derived context that adds nothing but forwards everything: a value
/// context holding this marker.
#[derive(Debug)]
pub struct OtherContext;

pub fn other_context(c: &Context) -> Context {
    c.with_value(OtherContext)
}
