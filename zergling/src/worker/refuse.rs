//! The requests a worker answers itself with a 4xx, before the app is called: what RFC 9112
//! and RFC 9110 say a server must or may refuse, and the size limits of the config. hyper
//! refuses the rest on its own (a bad request line or header syntax, differing or invalid
//! `Content-Length`s, a `Transfer-Encoding` that does not end in `chunked`, too many fields),
//! so that one parser and one set of rules decide for every request. README's "What zerg
//! refuses" lists the decisions.
//!
//! The checks read the head hyper parsed, in one pass over its fields: for a request with a
//! few headers, a few dozen instructions.

use http::{header, HeaderMap, Method, StatusCode, Uri};
use zerg::config::Config;

/// The limits on a request head (`limit-request-line`, `limit-request-field-size`,
/// `buffer-size`; `limit-request-fields` is hyper's `max_headers`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub request_line: usize,
    pub field_size: usize,
    pub head_size: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            request_line: config.limit_request_line as usize,
            field_size: config.limit_request_field_size as usize,
            head_size: config.buffer_size as usize,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The request line is longer than `limit-request-line`.
    LineTooLong,
    /// A field is longer than `limit-request-field-size`.
    FieldTooLarge,
    /// The head is bigger than `buffer-size`.
    HeadTooLarge,
    /// More than one `Host` field line (RFC 9112 §3.2).
    RepeatedHost,
    /// More than one `Content-Type`, a field that takes one value (RFC 9110 §5.3).
    RepeatedContentType,
    /// `*` as the target of anything but OPTIONS (RFC 9112 §3.2.4).
    AsteriskForm,
    /// An authority as the target of anything but CONNECT (RFC 9112 §3.2.3).
    AuthorityForm,
    /// CONNECT: zerg is no tunnel.
    Connect,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::LineTooLong => StatusCode::URI_TOO_LONG,
            Refusal::FieldTooLarge | Refusal::HeadTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            Refusal::LineTooLong => "request line longer than limit-request-line",
            Refusal::FieldTooLarge => "header field longer than limit-request-field-size",
            Refusal::HeadTooLarge => "request head bigger than buffer-size",
            Refusal::RepeatedHost => "more than one Host field",
            Refusal::RepeatedContentType => "more than one Content-Type field",
            Refusal::AsteriskForm => "* is a target for OPTIONS only",
            Refusal::AuthorityForm => "an authority is a target for CONNECT only",
            Refusal::Connect => "CONNECT is not served",
        }
    }
}

/// The methods a 405 says the server takes (RFC 9110 §15.5.6 wants the list): every one but
/// CONNECT reaches the app, which decides for itself.
pub const ALLOWED: &str = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE";

/// Whether a request must be refused, and why.
pub fn check(method: &Method, uri: &Uri, headers: &HeaderMap, limits: &Limits) -> Option<Refusal> {
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Some(if method == Method::CONNECT {
            Refusal::Connect
        } else {
            Refusal::AuthorityForm
        });
    }
    if method == Method::CONNECT {
        return Some(Refusal::Connect);
    }
    if uri.path() == "*" && uri.query().is_none() && method != Method::OPTIONS {
        return Some(Refusal::AsteriskForm);
    }
    // "METHOD SP target SP HTTP/1.1"
    let line = method.as_str().len() + 1 + target_len(uri) + 9;
    if line > limits.request_line {
        return Some(Refusal::LineTooLong);
    }
    let mut head = line + 2;
    let (mut hosts, mut content_types) = (0u8, 0u8);
    for (name, value) in headers {
        // "name: value\r\n"
        let field = name.as_str().len() + 2 + value.len();
        if field > limits.field_size {
            return Some(Refusal::FieldTooLarge);
        }
        head += field + 2;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::CONTENT_TYPE {
            content_types += 1;
        }
    }
    if head + 2 > limits.head_size {
        return Some(Refusal::HeadTooLarge);
    }
    if hosts > 1 {
        return Some(Refusal::RepeatedHost);
    }
    if content_types > 1 {
        return Some(Refusal::RepeatedContentType);
    }
    None
}

/// The length of the request target as the client sent it (hyper keeps it whole for the
/// origin form, which nearly every request uses).
fn target_len(uri: &Uri) -> usize {
    match (uri.scheme(), uri.path_and_query()) {
        (None, Some(pq)) => pq.as_str().len(),
        (None, None) => uri.authority().map_or(0, |a| a.as_str().len()),
        // The absolute form: "scheme://authority" and the rest.
        (Some(scheme), pq) => {
            scheme.as_str().len()
                + 3
                + uri.authority().map_or(0, |a| a.as_str().len())
                + pq.map_or(0, |pq| pq.as_str().len())
        }
    }
}

/// The fields that must not come in a trailer (RFC 9110 §6.5.1): framing, routing,
/// authentication, request modifiers and content format, which a recipient has acted on
/// before the trailer arrives. zerg never puts trailer fields in the environ; a trailer that
/// carries one of these is refused as a malformed body.
const NOT_IN_TRAILERS: &[header::HeaderName] = &[
    header::TRANSFER_ENCODING,
    header::CONTENT_LENGTH,
    header::HOST,
    header::TRAILER,
    header::TE,
    header::CONNECTION,
    header::UPGRADE,
    header::EXPECT,
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::RANGE,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::CACHE_CONTROL,
    header::MAX_FORWARDS,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// The first field of `trailers` that may not be a trailer, if any.
pub fn forbidden_trailer(trailers: &HeaderMap) -> Option<&header::HeaderName> {
    trailers.keys().find(|name| {
        NOT_IN_TRAILERS.contains(name) || name.as_str().eq_ignore_ascii_case("keep-alive")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        request_line: 100,
        field_size: 50,
        head_size: 300,
    };

    fn refusal(method: &str, target: &str, headers: &[(&str, &str)]) -> Option<Refusal> {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = target.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check(&method, &uri, &map, &LIMITS)
    }

    #[test]
    fn ordinary_requests_pass() {
        assert_eq!(refusal("GET", "/a?b=c", &[("host", "x")]), None);
        assert_eq!(refusal("GET", "http://x/a", &[("host", "x")]), None);
        assert_eq!(refusal("OPTIONS", "*", &[("host", "x")]), None);
        assert_eq!(refusal("GET", "/", &[]), None, "no Host is the app's call");
    }

    #[test]
    fn target_forms_fit_their_methods() {
        assert_eq!(refusal("GET", "*", &[]), Some(Refusal::AsteriskForm));
        assert_eq!(refusal("GET", "x:443", &[]), Some(Refusal::AuthorityForm));
        assert_eq!(refusal("CONNECT", "x:443", &[]), Some(Refusal::Connect));
        assert_eq!(refusal("CONNECT", "/", &[]), Some(Refusal::Connect));
        assert_eq!(Refusal::Connect.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[test]
    fn repeated_singletons_are_refused() {
        let two_hosts = [("host", "a"), ("host", "b")];
        assert_eq!(refusal("GET", "/", &two_hosts), Some(Refusal::RepeatedHost));
        let two_types = [("content-type", "a"), ("content-type", "b")];
        assert_eq!(
            refusal("POST", "/", &two_types),
            Some(Refusal::RepeatedContentType)
        );
        let two_accepts = [("accept", "a"), ("accept", "b")];
        assert_eq!(refusal("GET", "/", &two_accepts), None);
    }

    #[test]
    fn limits_count_what_the_client_sent() {
        // "GET " + target + " HTTP/1.1" is exactly the limit, then one over.
        let fits = format!("/{}", "a".repeat(100 - 4 - 9 - 1));
        assert_eq!(refusal("GET", &fits, &[]), None);
        let over = format!("{fits}a");
        assert_eq!(refusal("GET", &over, &[]), Some(Refusal::LineTooLong));
        assert_eq!(Refusal::LineTooLong.status(), StatusCode::URI_TOO_LONG);
        // "x-a: " + value is exactly the field limit, then one over.
        let value = "v".repeat(50 - 5);
        assert_eq!(refusal("GET", "/", &[("x-a", &value)]), None);
        let value = format!("{value}v");
        let big = refusal("GET", "/", &[("x-a", &value)]);
        assert_eq!(big, Some(Refusal::FieldTooLarge));
        let many: Vec<(String, String)> = (0..10)
            .map(|i| (format!("x-{i}"), "v".repeat(30)))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(refusal("GET", "/", &many), Some(Refusal::HeadTooLarge));
    }

    #[test]
    fn framing_fields_may_not_be_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "1".parse().unwrap());
        assert_eq!(forbidden_trailer(&trailers), None);
        trailers.insert(header::CONTENT_LENGTH, "7".parse().unwrap());
        assert_eq!(forbidden_trailer(&trailers), Some(&header::CONTENT_LENGTH));
        let mut trailers = HeaderMap::new();
        trailers.insert("keep-alive", "1".parse().unwrap());
        assert!(forbidden_trailer(&trailers).is_some());
    }
}
