//! Why a context ended: the [`Error`] kind and the richer [`Cause`].

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The reason [`Context::err`](crate::Context::err) reports once a context is
/// done: Go's `context.Canceled` and `context.DeadlineExceeded`.
///
/// # Examples
///
/// ```
/// use cancelctx::{Context, Error};
///
/// let (ctx, guard) = Context::background().with_cancel();
/// assert_eq!(ctx.err(), None);
/// guard.cancel();
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(Error::Canceled.to_string(), "context canceled");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// The context was canceled: its [`CancelGuard`](crate::CancelGuard) was
    /// used or dropped, or an ancestor was canceled.
    Canceled,
    /// The context's deadline (or an ancestor's) passed.
    DeadlineExceeded,
}

impl Error {
    /// Whether this error means "out of time", like Go's
    /// `DeadlineExceeded.Timeout()`.
    ///
    /// ```
    /// use cancelctx::Error;
    /// assert!(Error::DeadlineExceeded.is_timeout());
    /// assert!(!Error::Canceled.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::DeadlineExceeded)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Canceled => "context canceled",
            Error::DeadlineExceeded => "context deadline exceeded",
        })
    }
}

impl StdError for Error {}

/// For code that speaks `std::io` (a read loop bounded by a context, say):
/// `DeadlineExceeded` becomes [`TimedOut`](std::io::ErrorKind::TimedOut), as
/// Go's `DeadlineExceeded` is a `net.Error` whose `Timeout()` is true;
/// `Canceled` becomes [`Other`](std::io::ErrorKind::Other) (not
/// `Interrupted`, which `std`'s read and write loops retry). The
/// [`Error`] is the I/O error's inner error.
///
/// ```
/// use std::io;
/// use cancelctx::{Context, Error};
///
/// fn step(ctx: &Context) -> io::Result<()> {
///     if let Some(err) = ctx.err() {
///         return Err(err.into());
///     }
///     Ok(())
/// }
///
/// let (ctx, guard) = Context::background().with_cancel();
/// assert!(step(&ctx).is_ok());
/// guard.cancel();
/// let err = step(&ctx).unwrap_err();
/// assert_eq!(err.kind(), io::ErrorKind::Other);
/// assert_eq!(err.get_ref().unwrap().downcast_ref(), Some(&Error::Canceled));
/// let timed_out = io::Error::from(Error::DeadlineExceeded);
/// assert_eq!(timed_out.kind(), io::ErrorKind::TimedOut);
/// assert_eq!(timed_out.to_string(), "context deadline exceeded");
/// ```
impl From<Error> for std::io::Error {
    fn from(err: Error) -> std::io::Error {
        let kind = match err {
            Error::DeadlineExceeded => std::io::ErrorKind::TimedOut,
            Error::Canceled => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

static CANCELED: Error = Error::Canceled;
static DEADLINE_EXCEEDED: Error = Error::DeadlineExceeded;

/// Why a context ended, as Go's `context.Cause` reports it: any error value,
/// cheap to clone.
///
/// A context canceled with
/// [`cancel_with_cause`](crate::CancelGuard::cancel_with_cause), or whose
/// deadline from [`with_timeout_cause`](crate::Context::with_timeout_cause)
/// passed, holds that cause; one that ended any other way holds its [`Error`]
/// itself. The first cause wins and descendants inherit it.
///
/// Like `anyhow::Error`, `Cause` does not implement [`std::error::Error`]
/// itself (that would collide with the blanket `From`); it dereferences to
/// the inner `dyn Error + Send + Sync + 'static`.
///
/// # Examples
///
/// ```
/// use cancelctx::{Cause, Context, Error};
///
/// let (ctx, guard) = Context::background().with_cancel();
/// guard.cancel_with_cause(Cause::msg("client went away"));
/// assert_eq!(ctx.err(), Some(Error::Canceled));
/// assert_eq!(ctx.cause().unwrap().to_string(), "client went away");
///
/// let (ctx, guard) = Context::background().with_cancel();
/// drop(guard); // no explicit cause: the cause is the error itself
/// assert_eq!(ctx.cause().unwrap().downcast_ref::<Error>(), Some(&Error::Canceled));
/// ```
#[derive(Clone)]
pub struct Cause(Repr);

/// Canceled and deadline causes need neither an allocation nor a reference
/// count: they are the two most common causes by far.
#[derive(Clone)]
enum Repr {
    Error(Error),
    Shared(Arc<dyn StdError + Send + Sync + 'static>),
}

/// A plain-text cause made by [`Cause::msg`].
struct Message(String);

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}

impl Cause {
    /// Whether this is `err` itself ([`Cause::from_error`]`(err)`): what a
    /// done node need not store (its done bits say it).
    pub(crate) fn is_plain(&self, err: Error) -> bool {
        matches!(self.0, Repr::Error(e) if e == err)
    }

    /// Wraps any error as a cause.
    ///
    /// ```
    /// use cancelctx::Cause;
    /// let cause = Cause::new(std::io::Error::other("disk on fire"));
    /// assert!(cause.is::<std::io::Error>());
    /// ```
    pub fn new<E: StdError + Send + Sync + 'static>(error: E) -> Cause {
        if let Some(err) = (&error as &dyn Any).downcast_ref::<Error>() {
            return Cause::from_error(*err);
        }
        Cause(Repr::Shared(Arc::new(error)))
    }

    /// Wraps an already boxed error as a cause, keeping it (no new box):
    /// for `Box<dyn Error + Send + Sync>` results, which `?` cannot convert
    /// into a `Cause` (std reserves the right to make such a box an `Error`,
    /// so no `From` impl is allowed for it).
    ///
    /// ```
    /// use cancelctx::{Cause, Context, Group};
    ///
    /// fn parse(s: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    ///     Ok(s.parse()?)
    /// }
    ///
    /// let mut group = Group::new(&Context::background());
    /// group.spawn(async {
    ///     let _n = parse("x").map_err(Cause::from_boxed)?;
    ///     Ok(())
    /// });
    /// let err = futures::executor::block_on(group.wait()).unwrap_err();
    /// assert!(err.is::<std::num::ParseIntError>());
    /// ```
    pub fn from_boxed(error: Box<dyn StdError + Send + Sync + 'static>) -> Cause {
        match error.downcast::<Error>() {
            Ok(err) => Cause::from_error(*err),
            Err(error) => Cause(Repr::Shared(Arc::from(error))),
        }
    }

    /// A plain-text cause.
    ///
    /// ```
    /// use cancelctx::Cause;
    /// assert_eq!(Cause::msg("shutting down").to_string(), "shutting down");
    /// ```
    pub fn msg(message: impl Into<String>) -> Cause {
        Cause(Repr::Shared(Arc::new(Message(message.into()))))
    }

    /// The cause for an [`Error`] with no explicit cause; never allocates.
    pub(crate) fn from_error(err: Error) -> Cause {
        Cause(Repr::Error(err))
    }

    /// The inner error, if it is an `E`.
    ///
    /// ```
    /// use cancelctx::{Cause, Error};
    /// let cause = Cause::from(Error::DeadlineExceeded);
    /// assert_eq!(cause.downcast_ref::<Error>(), Some(&Error::DeadlineExceeded));
    /// assert!(cause.downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        (self.as_dyn() as &(dyn StdError + 'static)).downcast_ref::<E>()
    }

    /// Whether the inner error is an `E`.
    pub fn is<E: StdError + 'static>(&self) -> bool {
        self.downcast_ref::<E>().is_some()
    }

    fn as_dyn(&self) -> &(dyn StdError + Send + Sync + 'static) {
        match &self.0 {
            Repr::Error(Error::Canceled) => &CANCELED,
            Repr::Error(Error::DeadlineExceeded) => &DEADLINE_EXCEEDED,
            Repr::Shared(err) => &**err,
        }
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for Cause {
    fn from(error: E) -> Cause {
        Cause::new(error)
    }
}

/// A [`Cause`] as a boxed error, so `?` works on a
/// [`Group::wait`](crate::Group::wait) result (or any `Result<_, Cause>`) in
/// a function returning `Result<_, Box<dyn Error + Send + Sync>>`, as it does
/// with `anyhow::Error`.
///
/// The box displays and formats like the cause and has the same
/// [`source`](StdError::source); a cause with no explicit cause boxes the
/// [`Error`] itself. Downcast a cause to its inner error with
/// [`Cause::downcast_ref`] before converting it: once boxed, a cause made
/// from your own error type is not that type any more.
///
/// ```
/// use std::error::Error as StdError;
/// use cancelctx::{Cause, Context, Error, Group};
///
/// fn run() -> Result<(), Box<dyn StdError + Send + Sync>> {
///     let mut group = Group::new(&Context::background());
///     group.spawn(async { Err(Cause::msg("backend down")) });
///     futures::executor::block_on(group.wait())?;
///     Ok(())
/// }
/// assert_eq!(run().unwrap_err().to_string(), "backend down");
///
/// let boxed: Box<dyn StdError + Send + Sync> = Cause::from(Error::Canceled).into();
/// assert_eq!(boxed.downcast_ref::<Error>(), Some(&Error::Canceled));
/// ```
impl From<Cause> for Box<dyn StdError + Send + Sync + 'static> {
    fn from(cause: Cause) -> Self {
        match cause.0 {
            Repr::Error(err) => Box::new(err),
            // `Arc<E>` is an error that displays, formats and has the source
            // of `E`, as the cause does.
            Repr::Shared(err) => Box::new(err),
        }
    }
}

/// As the conversion to `Box<dyn Error + Send + Sync>`, for functions
/// returning `Box<dyn Error>`.
///
/// ```
/// use cancelctx::Cause;
///
/// fn run() -> Result<(), Box<dyn std::error::Error>> {
///     Err(Cause::msg("shutting down"))?
/// }
/// assert_eq!(run().unwrap_err().to_string(), "shutting down");
/// ```
impl From<Cause> for Box<dyn StdError + 'static> {
    fn from(cause: Cause) -> Self {
        let boxed: Box<dyn StdError + Send + Sync + 'static> = cause.into();
        boxed
    }
}

impl Deref for Cause {
    type Target = dyn StdError + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        self.as_dyn()
    }
}

impl AsRef<dyn StdError + Send + Sync + 'static> for Cause {
    fn as_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.as_dyn()
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_dyn(), f)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_dyn(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Custom;
    impl fmt::Display for Custom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("custom")
        }
    }
    impl StdError for Custom {}

    #[test]
    fn error_causes_are_static() {
        let c = Cause::new(Error::Canceled);
        assert!(matches!(c.0, Repr::Error(Error::Canceled)));
        assert_eq!(c.downcast_ref::<Error>(), Some(&Error::Canceled));
        let d = Cause::from(Error::DeadlineExceeded);
        assert!(matches!(d.0, Repr::Error(Error::DeadlineExceeded)));
        assert_eq!(d.to_string(), "context deadline exceeded");
    }

    #[test]
    fn custom_and_message_causes() {
        let c = Cause::from(Custom);
        assert!(c.is::<Custom>());
        assert!(!c.is::<Error>());
        assert_eq!(c.to_string(), "custom");
        assert_eq!(format!("{c:?}"), "Custom");
        let m = Cause::msg("bye");
        assert_eq!(m.to_string(), "bye");
        assert_eq!(format!("{m:?}"), "\"bye\"");
        assert!(!m.is::<Custom>());
    }

    #[test]
    fn sizes_stay_small() {
        assert!(std::mem::size_of::<Cause>() <= 24);
    }
}
