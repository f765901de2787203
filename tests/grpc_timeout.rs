//! Integration tests for `cancelctx::grpc_timeout`.

use std::time::Duration;

use cancelctx::grpc_timeout::{
    CONNECT_HEADER, HEADER, ParseTimeoutError, ParseTimeoutErrorKind as Kind, encode,
    encode_connect_timeout_ms, parse, parse_connect_timeout_ms,
};
use proptest::prelude::*;

const HOUR: u64 = 3_600;
/// `99999999H`, the largest encodable gRPC timeout.
const GRPC_SATURATION: Duration = Duration::from_secs(99_999_999 * HOUR);
/// `9999999999` ms, the largest encodable Connect timeout.
const CONNECT_SATURATION: Duration = Duration::from_millis(9_999_999_999);

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
const fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}
const fn us(u: u64) -> Duration {
    Duration::from_micros(u)
}
const fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

fn unit_nanos(unit: char) -> u128 {
    match unit {
        'n' => 1,
        'u' => 1_000,
        'm' => 1_000_000,
        'S' => 1_000_000_000,
        'M' => 60_000_000_000,
        'H' => 3_600_000_000_000,
        other => panic!("not a unit: {other:?}"),
    }
}

/// Hand-written matcher for the regex `^[0-9]{1,8}[HMSmun]$`.
fn matches_grpc_grammar(s: &str) -> bool {
    let bytes = s.as_bytes();
    let Some((unit, digits)) = bytes.split_last() else {
        return false;
    };
    (1..=8).contains(&digits.len())
        && digits.iter().all(u8::is_ascii_digit)
        && b"HMSmun".contains(unit)
}

/// Hand-written matcher for the regex `^[0-9]{1,10}$`.
fn matches_connect_grammar(s: &str) -> bool {
    (1..=10).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn duration_from_nanos(n: u128) -> Duration {
    let secs = u64::try_from(n / 1_000_000_000).expect("at most Duration::MAX");
    Duration::new(secs, (n % 1_000_000_000) as u32)
}

/// Durations in `min..=max`, spread log-uniformly so every unit gets exercised.
fn durations(min: Duration, max: Duration) -> impl Strategy<Value = Duration> {
    let (min, max) = (min.as_nanos(), max.as_nanos());
    let max_bits = 128 - max.leading_zeros();
    (0..=max_bits, any::<u128>()).prop_map(move |(bits, raw)| {
        let n = if bits == 0 { 0 } else { raw >> (128 - bits) };
        duration_from_nanos(min.saturating_add(n).min(max))
    })
}

fn arbitrary_strings() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter)
}

#[test]
fn parses_valid_grpc_timeouts() {
    let cases = [
        ("0S", Duration::ZERO),
        ("0n", Duration::ZERO),
        ("00000000H", Duration::ZERO),
        ("00000001S", secs(1)),
        ("1H", secs(HOUR)),
        ("2M", secs(120)),
        ("30S", secs(30)),
        ("100m", ms(100)),
        ("1u", us(1)),
        ("1n", ns(1)),
        ("99999999n", ns(99_999_999)),
        ("12345678u", us(12_345_678)),
        ("99999999m", ms(99_999_999)),
        ("99999999S", secs(99_999_999)),
        ("99999999M", secs(99_999_999 * 60)),
        ("99999999H", GRPC_SATURATION),
    ];
    for (input, expected) in cases {
        assert_eq!(parse(input), Ok(expected), "parse({input:?})");
    }
}

#[test]
fn rejects_invalid_grpc_timeouts() {
    let cases = [
        ("", Kind::Empty),
        // missing digits
        ("S", Kind::NoDigits),
        ("H", Kind::NoDigits),
        ("mS", Kind::NoDigits),
        // missing unit
        ("5", Kind::MissingUnit),
        ("99999999", Kind::MissingUnit),
        // signs
        ("+5S", Kind::NoDigits),
        ("-5S", Kind::NoDigits),
        ("5-S", Kind::InvalidUnit),
        // whitespace anywhere
        (" 5S", Kind::NoDigits),
        ("\t5S", Kind::NoDigits),
        ("5 S", Kind::InvalidUnit),
        ("5\u{a0}S", Kind::InvalidUnit),
        ("5S ", Kind::TrailingCharacters),
        ("5S\r\n", Kind::TrailingCharacters),
        ("1 0S", Kind::InvalidUnit),
        // other or case-swapped units
        ("5s", Kind::InvalidUnit),
        ("5h", Kind::InvalidUnit),
        ("5U", Kind::InvalidUnit),
        ("5N", Kind::InvalidUnit),
        ("5x", Kind::InvalidUnit),
        ("5\u{b5}", Kind::InvalidUnit), // micro sign
        ("1.5S", Kind::InvalidUnit),
        ("1_000S", Kind::InvalidUnit),
        ("0x10S", Kind::InvalidUnit),
        // too many digits
        ("123456789S", Kind::TooManyDigits),
        ("000000001S", Kind::TooManyDigits),
        ("123456789", Kind::TooManyDigits),
        ("18446744073709551616H", Kind::TooManyDigits),
        // non-ASCII digits
        ("\u{663}S", Kind::InvalidDigit),  // Arabic-Indic three
        ("\u{ff15}S", Kind::InvalidDigit), // fullwidth five
        ("1\u{663}S", Kind::InvalidDigit),
        ("1\u{ff15}", Kind::InvalidDigit),
        // control bytes
        ("\0", Kind::NoDigits),
        ("\x7f5S", Kind::NoDigits),
        ("5\0S", Kind::InvalidUnit),
        ("5S\0", Kind::TrailingCharacters),
        // multiple units
        ("5SS", Kind::TrailingCharacters),
        ("5ms", Kind::TrailingCharacters),
        ("5HM", Kind::TrailingCharacters),
        ("5S5S", Kind::TrailingCharacters),
    ];
    for (input, expected) in cases {
        let err = parse(input).expect_err(input);
        assert_eq!(err.kind(), expected, "parse({input:?}): {err}");
        assert_eq!(err.header(), HEADER);
    }
}

#[test]
fn error_messages_name_problem_and_input() {
    let msg = |input: &str| parse(input).unwrap_err().to_string();
    assert_eq!(msg(""), r#"invalid grpc-timeout value "": empty value"#);
    assert_eq!(
        msg("+5S"),
        r#"invalid grpc-timeout value "+5S": must start with an ASCII digit, found '+'"#
    );
    assert_eq!(
        msg("5s"),
        r#"invalid grpc-timeout value "5s": invalid unit, expected one of H, M, S, m, u, n, found 's'"#
    );
    assert_eq!(
        msg("123456789S"),
        r#"invalid grpc-timeout value "123456789S": more than 8 digits"#
    );
    assert_eq!(
        msg("5\0S"),
        r#"invalid grpc-timeout value "5\0S": invalid unit, expected one of H, M, S, m, u, n, found '\0'"#
    );
    assert!(msg("5").contains("missing unit"));
    assert!(msg("5SS").contains("after the unit"));
    assert!(msg("\u{663}S").contains("ASCII digits"));

    let connect = parse_connect_timeout_ms("12345678901").unwrap_err();
    assert_eq!(connect.header(), CONNECT_HEADER);
    assert_eq!(
        connect.to_string(),
        r#"invalid connect-timeout-ms value "12345678901": more than 10 digits"#
    );
}

#[test]
fn long_inputs_are_truncated_in_errors() {
    let long = "1".repeat(100_000);
    let err = parse(&long).unwrap_err();
    assert_eq!(err.kind(), Kind::TooManyDigits);
    let msg = err.to_string();
    assert!(msg.len() < 120, "{msg}");
    assert!(msg.contains(&format!("\"{}\"...", "1".repeat(32))), "{msg}");
    // Truncation happens on a char boundary.
    let wide = "\u{ff15}".repeat(1_000);
    assert!(parse(&wide).unwrap_err().to_string().contains("..."));
    // Short inputs are not marked as truncated.
    assert!(!parse("5s").unwrap_err().to_string().contains("..."));
}

#[test]
fn error_is_a_std_error() {
    fn assert_error<E: std::error::Error + Send + Sync + Clone + 'static>() {}
    assert_error::<ParseTimeoutError>();
    let boxed: Box<dyn std::error::Error> = Box::new(parse("x").unwrap_err());
    assert!(boxed.source().is_none());
}

#[test]
fn encode_picks_most_precise_unit_and_rounds_up() {
    let cases = [
        (Duration::ZERO, "0n"),
        (ns(1), "1n"),
        (ns(99_999_999), "99999999n"),
        (ns(100_000_000), "100000u"),
        (ns(100_000_001), "100001u"),
        (us(99_999_999), "99999999u"),
        (Duration::new(99, 999_999_001), "100000m"),
        (secs(100), "100000m"),
        (Duration::new(1, 500_000_000), "1500000u"),
        (secs(HOUR), "3600000m"),
        (ms(99_999_999), "99999999m"),
        (ms(99_999_999) + ns(1), "100000S"),
        (secs(99_999_999), "99999999S"),
        (secs(100_000_000), "1666667M"),
        (secs(99_999_999 * 60), "99999999M"),
        (secs(99_999_999 * 60 + 1), "1666667H"),
        (secs(HOUR * 1_000_000) + ns(1), "60000001M"),
        (secs(HOUR * 2_000_000) + ns(1), "2000001H"),
        (GRPC_SATURATION, "99999999H"),
    ];
    for (timeout, expected) in cases {
        assert_eq!(encode(timeout), expected, "encode({timeout:?})");
    }
}

#[test]
fn encode_saturates() {
    assert_eq!(encode(GRPC_SATURATION + ns(1)), "99999999H");
    assert_eq!(encode(secs(100_000_000 * HOUR)), "99999999H");
    assert_eq!(encode(Duration::MAX), "99999999H");
    assert_eq!(parse(&encode(Duration::MAX)), Ok(GRPC_SATURATION));
}

#[test]
fn connect_timeout_ms_valid_and_invalid() {
    let valid = [
        ("0", Duration::ZERO),
        ("1", ms(1)),
        ("250", ms(250)),
        ("0000000001", ms(1)),
        ("9999999999", CONNECT_SATURATION),
    ];
    for (input, expected) in valid {
        assert_eq!(parse_connect_timeout_ms(input), Ok(expected), "{input:?}");
    }
    let invalid = [
        ("", Kind::Empty),
        ("ms", Kind::NoDigits),
        ("+5", Kind::NoDigits),
        ("-5", Kind::NoDigits),
        (" 5", Kind::NoDigits),
        ("\0", Kind::NoDigits),
        ("5 ", Kind::InvalidDigit),
        ("5\n", Kind::InvalidDigit),
        ("1 0", Kind::InvalidDigit),
        ("5m", Kind::InvalidDigit),
        ("5ms", Kind::InvalidDigit),
        ("5S", Kind::InvalidDigit),
        ("1.5", Kind::InvalidDigit),
        ("5\0", Kind::InvalidDigit),
        ("\u{663}", Kind::InvalidDigit),
        ("1\u{ff15}", Kind::InvalidDigit),
        ("12345678901", Kind::TooManyDigits),
        ("00000000000", Kind::TooManyDigits),
    ];
    for (input, expected) in invalid {
        let err = parse_connect_timeout_ms(input).expect_err(input);
        assert_eq!(err.kind(), expected, "{input:?}: {err}");
        assert_eq!(err.header(), CONNECT_HEADER);
    }
}

#[test]
fn encode_connect_timeout_ms_rounds_up_and_saturates() {
    let cases = [
        (Duration::ZERO, "0"),
        (ns(1), "1"),
        (ms(1), "1"),
        (ms(1) + ns(1), "2"),
        (secs(90), "90000"),
        (CONNECT_SATURATION, "9999999999"),
        (CONNECT_SATURATION + ns(1), "9999999999"),
        (Duration::MAX, "9999999999"),
    ];
    for (timeout, expected) in cases {
        assert_eq!(encode_connect_timeout_ms(timeout), expected, "{timeout:?}");
    }
}

proptest! {
    #[test]
    fn grpc_roundtrip_never_shortens(d in durations(Duration::ZERO, GRPC_SATURATION)) {
        let encoded = encode(d);
        let unit = encoded.chars().last().unwrap();
        prop_assert!(encoded.len() - 1 <= 8, "{}", encoded);
        let parsed = parse(&encoded).unwrap();
        prop_assert!(parsed >= d, "{:?} -> {} -> {:?}", d, encoded, parsed);
        // Rounded up by less than one unit.
        prop_assert!(parsed.saturating_sub(d).as_nanos() < unit_nanos(unit), "{:?} -> {}", d, encoded);
        // No finer unit would have fit in 8 digits.
        let finer = ['n', 'u', 'm', 'S', 'M', 'H'].into_iter().take_while(|&u| u != unit);
        for u in finer {
            prop_assert!(d.as_nanos().div_ceil(unit_nanos(u)) > 99_999_999, "{:?} -> {}", d, encoded);
        }
    }

    #[test]
    fn grpc_saturates_above_max(d in durations(GRPC_SATURATION + ns(1), Duration::MAX)) {
        prop_assert_eq!(encode(d), "99999999H");
        prop_assert_eq!(parse(&encode(d)), Ok(GRPC_SATURATION));
    }

    #[test]
    fn grpc_encode_output_always_parses(d in durations(Duration::ZERO, Duration::MAX)) {
        let encoded = encode(d);
        prop_assert!(matches_grpc_grammar(&encoded), "{}", encoded);
        prop_assert!(parse(&encoded).is_ok(), "{}", encoded);
    }

    #[test]
    fn grpc_accepts_every_grammar_string(s in "[0-9]{1,8}[HMSmun]") {
        let (digits, unit) = s.split_at(s.len() - 1);
        let value: u128 = digits.parse().unwrap();
        let expected = value * unit_nanos(unit.chars().next().unwrap());
        prop_assert_eq!(parse(&s).map(|d| d.as_nanos()), Ok(expected));
    }

    #[test]
    fn grpc_accepts_exactly_the_grammar(
        s in "[0-9HMSmunshU+\\- \t\0.\u{663}\u{ff15}]{0,11}",
    ) {
        prop_assert_eq!(parse(&s).is_ok(), matches_grpc_grammar(&s), "{:?}", s);
    }

    #[test]
    fn grpc_arbitrary_strings_never_panic(s in arbitrary_strings()) {
        let result = parse(&s);
        prop_assert_eq!(result.is_ok(), matches_grpc_grammar(&s), "{:?}", s);
        if let Err(err) = result {
            prop_assert!(err.to_string().len() < 512);
        }
    }

    #[test]
    fn grpc_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
        let s = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(parse(&s).is_ok(), matches_grpc_grammar(&s), "{:?}", s);
    }

    #[test]
    fn connect_roundtrip_never_shortens(d in durations(Duration::ZERO, CONNECT_SATURATION)) {
        let encoded = encode_connect_timeout_ms(d);
        prop_assert!(matches_connect_grammar(&encoded), "{}", encoded);
        let parsed = parse_connect_timeout_ms(&encoded).unwrap();
        prop_assert!(parsed >= d && parsed.saturating_sub(d) < ms(1), "{:?} -> {}", d, encoded);
    }

    #[test]
    fn connect_saturates_above_max(d in durations(CONNECT_SATURATION + ns(1), Duration::MAX)) {
        prop_assert_eq!(encode_connect_timeout_ms(d), "9999999999");
    }

    #[test]
    fn connect_accepts_every_grammar_string(s in "[0-9]{1,10}") {
        let expected: u64 = s.parse().unwrap();
        prop_assert_eq!(parse_connect_timeout_ms(&s), Ok(ms(expected)));
    }

    #[test]
    fn connect_accepts_exactly_the_grammar(s in "[0-9mS+\\- \t\0.\u{663}\u{ff15}]{0,13}") {
        prop_assert_eq!(parse_connect_timeout_ms(&s).is_ok(), matches_connect_grammar(&s));
    }

    #[test]
    fn connect_arbitrary_input_never_panics(
        s in arbitrary_strings(),
        bytes in prop::collection::vec(any::<u8>(), 0..24),
    ) {
        prop_assert_eq!(parse_connect_timeout_ms(&s).is_ok(), matches_connect_grammar(&s));
        let lossy = String::from_utf8_lossy(&bytes);
        prop_assert_eq!(parse_connect_timeout_ms(&lossy).is_ok(), matches_connect_grammar(&lossy));
    }
}
