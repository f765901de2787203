//! Parsing and encoding of the `grpc-timeout` and `connect-timeout-ms` request headers.
//!
//! A gRPC client tells the server how long it is willing to wait with the
//! [`grpc-timeout`](HEADER) header. Its value is a *relative* timeout, so a server
//! turns it into a deadline (`now + timeout`) when the request arrives. The grammar,
//! from the gRPC HTTP/2 protocol description, is:
//!
//! ```text
//! Timeout      = TimeoutValue TimeoutUnit
//! TimeoutValue = 1*8 ASCII digit        ; "0".."99999999", leading zeros allowed
//! TimeoutUnit  = "H" / "M" / "S" / "m" / "u" / "n"
//!              ; hour / minute / second / millisecond / microsecond / nanosecond
//! ```
//!
//! [`parse`] accepts exactly that grammar and nothing else: no sign, no whitespace
//! (not even around the value), no Unicode digits, no other or case-swapped unit and
//! no more than 8 digits. `"0S"` is a valid zero timeout, i.e. a request that has
//! already expired. The largest value, `99999999H`, is about 11 400 years and fits
//! in a [`Duration`], so parsing never overflows.
//!
//! [`encode`] picks the most precise unit whose value fits in 8 digits, trying
//! `n`, `u`, `m`, `S`, `M` then `H` as grpc-go's `encodeTimeout` does. The value is
//! rounded **up**, so an encoded timeout is never shorter than the real one (it is
//! longer by less than one unit). Anything above `99999999H`, including
//! [`Duration::MAX`], saturates to `"99999999H"`.
//!
//! The Connect protocol uses the [`connect-timeout-ms`](CONNECT_HEADER) header
//! instead: 1 to 10 ASCII digits counting milliseconds, with no unit and no sign.
//! [`parse_connect_timeout_ms`] and [`encode_connect_timeout_ms`] handle it with the
//! same strictness, rounding up to whole milliseconds and saturating at
//! `9999999999`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use cancelctx::grpc_timeout;
//!
//! # fn main() -> Result<(), grpc_timeout::ParseTimeoutError> {
//! assert_eq!(grpc_timeout::parse("100m")?, Duration::from_millis(100));
//! assert_eq!(grpc_timeout::encode(Duration::from_millis(1500)), "1500000u");
//! // 100 s + 1 ns fits 8 digits only in ms or coarser, and is rounded up, never down.
//! assert_eq!(grpc_timeout::encode(Duration::new(100, 1)), "100001m");
//!
//! let err = grpc_timeout::parse("5 S").unwrap_err();
//! assert_eq!(err.kind(), grpc_timeout::ParseTimeoutErrorKind::InvalidUnit);
//!
//! assert_eq!(grpc_timeout::parse_connect_timeout_ms("250")?, Duration::from_millis(250));
//! assert_eq!(grpc_timeout::encode_connect_timeout_ms(Duration::from_micros(1)), "1");
//! # Ok(())
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// Name of the gRPC timeout request header.
pub const HEADER: &str = "grpc-timeout";

/// Name of the Connect protocol's timeout request header.
pub const CONNECT_HEADER: &str = "connect-timeout-ms";

/// Most digits a `grpc-timeout` value may have.
const GRPC_MAX_DIGITS: usize = 8;
/// Most digits a `connect-timeout-ms` value may have.
const CONNECT_MAX_DIGITS: usize = 10;
/// Largest `grpc-timeout` value: 8 nines.
const GRPC_MAX_VALUE: u128 = 99_999_999;
/// Largest `connect-timeout-ms` value: 10 nines.
const CONNECT_MAX_VALUE: u128 = 9_999_999_999;
/// The gRPC units, for error messages.
const UNITS_TEXT: &str = "H, M, S, m, u, n";
/// Longest input (in chars) kept in an error, so errors stay small.
const MAX_ERROR_INPUT_CHARS: usize = 32;

const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The gRPC units, from the most to the least precise, with their length in nanoseconds.
const GRPC_UNITS: [(u8, u128); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', NANOS_PER_MILLI),
    (b'S', NANOS_PER_SEC),
    (b'M', 60 * NANOS_PER_SEC),
    (b'H', 3_600 * NANOS_PER_SEC),
];

/// Parses a `grpc-timeout` header value such as `"100m"` into a [`Duration`].
///
/// See the [module documentation](self) for the grammar.
///
/// # Errors
///
/// Returns a [`ParseTimeoutError`] if `value` is not 1 to 8 ASCII digits followed by
/// exactly one of the units `H`, `M`, `S`, `m`, `u` or `n`; its
/// [`kind`](ParseTimeoutError::kind) tells what is wrong.
pub fn parse(value: &str) -> Result<Duration, ParseTimeoutError> {
    let (amount, rest) = scan_digits(HEADER, value, GRPC_MAX_DIGITS)?;
    let error = |kind, found| Err(ParseTimeoutError::new(kind, HEADER, value, found));
    let mut chars = rest.chars();
    let Some(unit) = chars.next() else {
        return error(ParseTimeoutErrorKind::MissingUnit, None);
    };
    // `amount` has at most 8 digits, so `amount * 3_600` < 2^39: no overflow.
    let duration = match unit {
        'H' => Duration::from_secs(amount * 3_600),
        'M' => Duration::from_secs(amount * 60),
        'S' => Duration::from_secs(amount),
        'm' => Duration::from_millis(amount),
        'u' => Duration::from_micros(amount),
        'n' => Duration::from_nanos(amount),
        other => return error(ParseTimeoutErrorKind::InvalidUnit, Some(other)),
    };
    match chars.next() {
        None => Ok(duration),
        Some(extra) => error(ParseTimeoutErrorKind::TrailingCharacters, Some(extra)),
    }
}

/// Encodes `timeout` as a `grpc-timeout` header value.
///
/// Uses the most precise unit whose value fits in 8 digits, rounding up so the
/// deadline is never shortened, and saturates at `"99999999H"`. A zero timeout is
/// `"0n"`. Parsing the result gives back at least `timeout` (unless it saturated).
#[must_use]
pub fn encode(timeout: Duration) -> String {
    let nanos = timeout.as_nanos();
    for (unit, unit_nanos) in GRPC_UNITS {
        let amount = nanos.div_ceil(unit_nanos);
        if amount <= GRPC_MAX_VALUE {
            return format!("{amount}{}", char::from(unit));
        }
    }
    format!("{GRPC_MAX_VALUE}H")
}

/// Parses a `connect-timeout-ms` header value (milliseconds) into a [`Duration`].
///
/// # Errors
///
/// Returns a [`ParseTimeoutError`] if `value` is not 1 to 10 ASCII digits; its
/// [`kind`](ParseTimeoutError::kind) tells what is wrong.
pub fn parse_connect_timeout_ms(value: &str) -> Result<Duration, ParseTimeoutError> {
    let (millis, rest) = scan_digits(CONNECT_HEADER, value, CONNECT_MAX_DIGITS)?;
    match rest.chars().next() {
        None => Ok(Duration::from_millis(millis)),
        Some(found) => Err(ParseTimeoutError::new(
            ParseTimeoutErrorKind::InvalidDigit,
            CONNECT_HEADER,
            value,
            Some(found),
        )),
    }
}

/// Encodes `timeout` as a `connect-timeout-ms` header value.
///
/// The timeout is rounded up to whole milliseconds and saturates at `"9999999999"`.
/// A zero timeout is `"0"`.
#[must_use]
pub fn encode_connect_timeout_ms(timeout: Duration) -> String {
    let millis = timeout.as_nanos().div_ceil(NANOS_PER_MILLI);
    millis.min(CONNECT_MAX_VALUE).to_string()
}

/// Reads the leading run of ASCII digits of `value` (at most `max_digits` of them)
/// and returns its numeric value together with the rest of the string.
///
/// Fails if `value` is empty, does not start with an ASCII digit, has too many
/// digits, or if the digits are followed by a non-ASCII digit such as `'٣'`.
fn scan_digits<'a>(
    header: &'static str,
    value: &'a str,
    max_digits: usize,
) -> Result<(u64, &'a str), ParseTimeoutError> {
    let len = value.bytes().take_while(u8::is_ascii_digit).count();
    // ASCII digits are single bytes, so `len` is a char boundary.
    let rest = &value[len..];
    let next = rest.chars().next();
    let kind = if value.is_empty() {
        ParseTimeoutErrorKind::Empty
    } else if len > max_digits {
        ParseTimeoutErrorKind::TooManyDigits
    } else if next.is_some_and(char::is_numeric) {
        ParseTimeoutErrorKind::InvalidDigit
    } else if len == 0 {
        ParseTimeoutErrorKind::NoDigits
    } else {
        // At most 10 digits: fits in a u64 with lots of room to spare.
        let amount = value
            .bytes()
            .take(len)
            .fold(0, |acc, digit| acc * 10 + u64::from(digit - b'0'));
        return Ok((amount, rest));
    };
    Err(ParseTimeoutError::new(kind, header, value, next))
}

/// What is wrong with a timeout header value; see [`ParseTimeoutError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParseTimeoutErrorKind {
    /// The value is empty.
    Empty,
    /// The value does not start with an ASCII digit (e.g. a sign, whitespace or a
    /// bare unit).
    NoDigits,
    /// The value has more digits than allowed (8 for `grpc-timeout`, 10 for
    /// `connect-timeout-ms`).
    TooManyDigits,
    /// A character that is not an ASCII digit stands where a digit is expected:
    /// a Unicode digit such as `'٣'` or `'５'`, or, in `connect-timeout-ms`,
    /// anything after the leading digits.
    InvalidDigit,
    /// The `grpc-timeout` value has digits but no unit.
    MissingUnit,
    /// The character after the digits of a `grpc-timeout` value is not one of
    /// `H`, `M`, `S`, `m`, `u`, `n`.
    InvalidUnit,
    /// Something follows the unit of a `grpc-timeout` value (e.g. a second unit or
    /// trailing whitespace).
    TrailingCharacters,
}

/// The error returned when a timeout header value does not follow its grammar.
///
/// Its [`Display`](fmt::Display) message names the header, the problem and the
/// offending value (escaped, and truncated if very long).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseTimeoutError {
    kind: ParseTimeoutErrorKind,
    header: &'static str,
    /// The offending value, cut to `MAX_ERROR_INPUT_CHARS` chars.
    input: String,
    truncated: bool,
    /// The offending character, when there is one.
    found: Option<char>,
}

impl ParseTimeoutError {
    fn new(
        kind: ParseTimeoutErrorKind,
        header: &'static str,
        value: &str,
        found: Option<char>,
    ) -> Self {
        let input: String = value.chars().take(MAX_ERROR_INPUT_CHARS).collect();
        let truncated = input.len() < value.len();
        Self {
            kind,
            header,
            input,
            truncated,
            found,
        }
    }

    /// What is wrong with the value.
    #[must_use]
    pub fn kind(&self) -> ParseTimeoutErrorKind {
        self.kind
    }

    /// The header whose value was rejected: [`HEADER`] or [`CONNECT_HEADER`].
    #[must_use]
    pub fn header(&self) -> &'static str {
        self.header
    }
}

impl fmt::Display for ParseTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ParseTimeoutErrorKind as Kind;
        let ellipsis = if self.truncated { "..." } else { "" };
        write!(
            f,
            "invalid {} value {:?}{ellipsis}: ",
            self.header, self.input
        )?;
        let found = self
            .found
            .map(|c| format!(", found {c:?}"))
            .unwrap_or_default();
        match self.kind {
            Kind::Empty => f.write_str("empty value"),
            Kind::NoDigits => write!(f, "must start with an ASCII digit{found}"),
            Kind::TooManyDigits => {
                let max = if self.header == HEADER {
                    GRPC_MAX_DIGITS
                } else {
                    CONNECT_MAX_DIGITS
                };
                write!(f, "more than {max} digits")
            }
            Kind::InvalidDigit => write!(f, "expected only ASCII digits 0-9{found}"),
            Kind::MissingUnit => write!(f, "missing unit, expected one of {UNITS_TEXT}"),
            Kind::InvalidUnit => write!(f, "invalid unit, expected one of {UNITS_TEXT}{found}"),
            Kind::TrailingCharacters => write!(f, "unexpected characters after the unit{found}"),
        }
    }
}

impl Error for ParseTimeoutError {}
