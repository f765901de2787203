//! The answers [`ServerLayer`](super::ServerLayer) gives by itself, in the
//! request's protocol: to a request whose context ended before the inner
//! service answered, and to one whose timeout header is malformed.

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use super::ServerBody;
use super::{GRPC_CONTENT_TYPE, Protocol};
use crate::error::Error;
use crate::grpc_timeout::ParseTimeoutError;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status codes used in the answers.
const GRPC_CANCELLED: &str = "1";
const GRPC_DEADLINE_EXCEEDED: &str = "4";
const GRPC_INTERNAL: &str = "13";

/// Sent by Connect clients on unary calls (`connect-go` always sends it).
const CONNECT_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("connect-protocol-version");
/// The content types of Connect streaming calls: `application/connect+proto`,
/// `application/connect+json`, ...
const CONNECT_STREAM_CONTENT_TYPE: &str = "application/connect+";
/// The flag of a Connect streaming call's end-of-stream message.
const CONNECT_END_STREAM: u8 = 0b10;
/// Connect's HTTP status for `canceled` (nginx's "client closed request").
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// How [`ServerLayer`](super::ServerLayer) answers a request by itself,
/// decided from the request when it arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// gRPC (gRPC-Web included): a trailers-only response, the status in
    /// its headers.
    Grpc,
    /// A Connect unary call: the code's HTTP status and a JSON error body.
    ConnectUnary,
    /// A Connect streaming call, with its content type: HTTP 200 and an
    /// end-of-stream message carrying the error.
    ConnectStream(HeaderValue),
    /// Anything else: an HTTP status and an empty body.
    Http,
}

impl Answer {
    /// The answer style of a request of `protocol` (`Protocol::of` its
    /// headers) with `headers` and URI `query`.
    pub(crate) fn of(protocol: Protocol, headers: &HeaderMap, query: Option<&str>) -> Answer {
        if protocol == Protocol::Grpc {
            return Answer::Grpc;
        }
        let stream = headers.get_all(CONTENT_TYPE).iter().find(|value| {
            value
                .as_bytes()
                .starts_with(CONNECT_STREAM_CONTENT_TYPE.as_bytes())
        });
        if let Some(content_type) = stream {
            return Answer::ConnectStream(content_type.clone());
        }
        // A unary call: POST with the version header, or GET with
        // `connect=v1` in its query.
        let get = query.is_some_and(|query| query.split('&').any(|pair| pair == "connect=v1"));
        if headers.contains_key(CONNECT_PROTOCOL_VERSION) || get {
            return Answer::ConnectUnary;
        }
        Answer::Http
    }

    /// The answer to a request whose context ended before its response.
    pub(crate) fn ended<B: Default>(&self, error: Error) -> Response<ServerBody<B>> {
        let message = error.to_string();
        match (self, error) {
            (Answer::Grpc, Error::DeadlineExceeded) => {
                grpc(StatusCode::OK, GRPC_DEADLINE_EXCEEDED, &message)
            }
            (Answer::Grpc, Error::Canceled) => grpc(StatusCode::OK, GRPC_CANCELLED, &message),
            (Answer::Http, Error::DeadlineExceeded) => http(StatusCode::GATEWAY_TIMEOUT),
            (Answer::Http, Error::Canceled) => http(StatusCode::SERVICE_UNAVAILABLE),
            (connect, Error::DeadlineExceeded) => {
                connect.connect("deadline_exceeded", StatusCode::GATEWAY_TIMEOUT, &message)
            }
            (connect, Error::Canceled) => {
                let status = StatusCode::from_u16(CLIENT_CLOSED_REQUEST)
                    .expect("499 is a valid status code");
                connect.connect("canceled", status, &message)
            }
        }
    }

    /// The answer to a request whose timeout header does not parse.
    pub(crate) fn malformed<B: Default>(
        &self,
        error: &ParseTimeoutError,
    ) -> Response<ServerBody<B>> {
        match self {
            // grpc-go: earlyAbortStream{httpStatus: http.StatusBadRequest,
            // status: status.Newf(codes.Internal, "malformed grpc-timeout: %v", err)}
            Answer::Grpc => grpc(
                StatusCode::BAD_REQUEST,
                GRPC_INTERNAL,
                &format!("malformed grpc-timeout: {error}"),
            ),
            // The reason, so that whoever reads the answer can fix the call.
            Answer::Http => with_body(
                StatusCode::BAD_REQUEST,
                HeaderValue::from_static("text/plain; charset=utf-8"),
                format!("malformed connect-timeout-ms: {error}\n").into_bytes(),
            ),
            connect => connect.connect(
                "invalid_argument",
                StatusCode::BAD_REQUEST,
                &format!("malformed connect-timeout-ms: {error}"),
            ),
        }
    }

    /// A Connect error answer with `code` (and, for a unary call, `status`).
    fn connect<B: Default>(
        &self,
        code: &str,
        status: StatusCode,
        message: &str,
    ) -> Response<ServerBody<B>> {
        let error = format!(
            r#"{{"code":"{code}","message":"{}"}}"#,
            json_escape(message)
        );
        let (status, content_type, body) = match self {
            Answer::ConnectStream(content_type) => {
                let message = format!(r#"{{"error":{error}}}"#).into_bytes();
                let length = u32::try_from(message.len()).expect("a short message");
                let mut body = Vec::with_capacity(5 + message.len());
                body.push(CONNECT_END_STREAM);
                body.extend_from_slice(&length.to_be_bytes());
                body.extend_from_slice(&message);
                (StatusCode::OK, content_type.clone(), body)
            }
            _ => (
                status,
                HeaderValue::from_static("application/json"),
                error.into_bytes(),
            ),
        };
        with_body(status, content_type, body)
    }
}

/// A trailers-only gRPC answer: `http_status` (200, or 400 for a malformed
/// request as grpc-go answers) with the gRPC status in the headers.
fn grpc<B: Default>(
    http_status: StatusCode,
    status: &'static str,
    message: &str,
) -> Response<ServerBody<B>> {
    let mut response = http(http_status);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.insert(GRPC_STATUS, HeaderValue::from_static(status));
    let message = HeaderValue::try_from(percent_encode(message))
        .expect("percent-encoded text is visible ASCII");
    headers.insert(GRPC_MESSAGE, message);
    response
}

/// An answer with only an HTTP status.
fn http<B: Default>(status: StatusCode) -> Response<ServerBody<B>> {
    let mut response = Response::new(ServerBody::answer(B::default(), None));
    *response.status_mut() = status;
    response
}

/// An answer with an HTTP status and a body of `content_type`.
fn with_body<B: Default>(
    status: StatusCode,
    content_type: HeaderValue,
    body: Vec<u8>,
) -> Response<ServerBody<B>> {
    let mut response = Response::new(ServerBody::answer(B::default(), Some(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// Percent-encodes a `grpc-message` value as the gRPC spec asks: every byte
/// outside printable ASCII (0x20..=0x7E), and `%` itself, becomes `%XX`.
pub(crate) fn percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

/// Escapes `text` for a JSON string: quotes, backslashes and control
/// characters.
fn json_escape(text: &str) -> String {
    use std::fmt::Write as _;
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            // Writing to a String cannot fail.
            c if c < ' ' => {
                let _ = write!(escaped, "\\u{:04x}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc_timeout;

    #[test]
    fn percent_encoding_keeps_printable_ascii() {
        assert_eq!(
            percent_encode("context deadline exceeded"),
            "context deadline exceeded"
        );
        assert_eq!(percent_encode("100% \"é\"\n"), "100%25 \"%C3%A9\"%0A");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_escape(r#"a "b" \ c"#), r#"a \"b\" \\ c"#);
        assert_eq!(json_escape("é\n\u{1}"), "é\\u000a\\u0001");
    }

    #[test]
    fn answer_follows_the_request() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, None),
            Answer::Http
        );
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, Some("a=1&connect=v1")),
            Answer::ConnectUnary
        );
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, Some("connect=v10")),
            Answer::Http
        );
        headers.insert(CONNECT_PROTOCOL_VERSION, HeaderValue::from_static("1"));
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, None),
            Answer::ConnectUnary
        );
        let stream = HeaderValue::from_static("application/connect+json");
        headers.insert(CONTENT_TYPE, stream.clone());
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, None),
            Answer::ConnectStream(stream)
        );
        // gRPC wins: a peer reading the request as gRPC reads the answer so.
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert_eq!(
            Answer::of(Protocol::of(&headers), &headers, None),
            Answer::Grpc
        );
    }

    #[test]
    fn malformed_grpc_answer_is_internal() {
        let error = grpc_timeout::parse("5 S").unwrap_err();
        let response: Response<ServerBody<()>> = Answer::Grpc.malformed(&error);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[GRPC_STATUS], "13");
        let message = response.headers()[GRPC_MESSAGE].to_str().unwrap();
        assert!(message.starts_with("malformed grpc-timeout: "), "{message}");
    }

    #[test]
    fn connect_answers() {
        let unary: Response<ServerBody<()>> = Answer::ConnectUnary.ended(Error::Canceled);
        assert_eq!(unary.status().as_u16(), 499);
        assert_eq!(unary.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            unary.body().answer_bytes(),
            Some(&br#"{"code":"canceled","message":"context canceled"}"#[..])
        );
        let content_type = HeaderValue::from_static("application/connect+proto");
        let stream: Response<ServerBody<()>> =
            Answer::ConnectStream(content_type.clone()).ended(Error::DeadlineExceeded);
        assert_eq!(stream.status(), StatusCode::OK);
        assert_eq!(stream.headers()[CONTENT_TYPE], content_type);
        let body = stream.body().answer_bytes().unwrap();
        let message =
            br#"{"error":{"code":"deadline_exceeded","message":"context deadline exceeded"}}"#;
        assert_eq!(body[0], 0b10);
        assert_eq!(body[1..5], (message.len() as u32).to_be_bytes());
        assert_eq!(&body[5..], &message[..]);
    }
}
