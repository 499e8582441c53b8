//! `http-to-https` listeners (uWSGI's option): every request is answered with a redirect to
//! the same URL over HTTPS, the app never called. 301 for GET and HEAD, as uWSGI answers;
//! 308 for any other method, which keeps the method and body (RFC 9110 §15.4.9) where a 301
//! lets a client turn a POST into a GET and lose its body.
//!
//! The URL is `https://HOST[:PORT]/path?query`: HOST from the request's Host (or its
//! absolute-form target), without its port; PORT the `https` listener's unless it is 443
//! (`Config::https_redirect_port`). A request with no host to name, or one that could not
//! stand in a URL, is answered 400.

use http::{HeaderValue, Method, Request, StatusCode};

use crate::wsgi::reply::Reply;

/// Where an `http-to-https` listener sends its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    /// The port the URL names; `None` for 443, which it leaves out.
    port: Option<u16>,
}

impl Redirect {
    /// A redirect to `port`, or to 443 for `None`.
    pub fn new(port: Option<u16>) -> Redirect {
        Redirect {
            port: port.filter(|&p| p != 443),
        }
    }

    /// The answer to `req`.
    pub fn reply<B>(&self, req: &Request<B>) -> Reply {
        let Some(location) = self.location(req) else {
            return Reply::refusal(StatusCode::BAD_REQUEST);
        };
        let status = if req.method() == Method::GET || req.method() == Method::HEAD {
            StatusCode::MOVED_PERMANENTLY
        } else {
            StatusCode::PERMANENT_REDIRECT
        };
        let mut reply = Reply::error(status);
        reply.headers.push((http::header::LOCATION, location));
        reply
    }

    /// The URL to send `req` to, if it names a host that may stand in one.
    fn location<B>(&self, req: &Request<B>) -> Option<HeaderValue> {
        let authority = match req.headers().get(http::header::HOST) {
            Some(host) => host.to_str().ok()?,
            None => req.uri().authority()?.as_str(),
        };
        let host = host_of(authority)?;
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.starts_with('/'))
            .unwrap_or("/");
        let url = match self.port {
            Some(port) => format!("https://{host}:{port}{path}"),
            None => format!("https://{host}{path}"),
        };
        HeaderValue::from_str(&url).ok()
    }
}

/// The host of `authority` (`host[:port]`, `[v6][:port]`) without its port: `None` if it is
/// empty or holds what a host may not (RFC 3986 §3.2.2: a name or an IP literal; no user
/// info, no path).
fn host_of(authority: &str) -> Option<&str> {
    let host = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        if !(rest.is_empty() || port_part(rest)) {
            return None;
        }
        let literal = &authority[1..end];
        if literal.is_empty()
            || !literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b":.".contains(&b))
        {
            return None;
        }
        &authority[..=end]
    } else {
        let host = match authority.rfind(':') {
            Some(i) if port_part(&authority[i..]) => &authority[..i],
            Some(_) => return None,
            None => authority,
        };
        let name = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
        if host.is_empty() || !host.bytes().all(name) {
            return None;
        }
        host
    };
    Some(host)
}

/// `:` and digits (an empty port is allowed by RFC 3986).
fn port_part(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(redirect: Redirect, method: &str, target: &str, host: Option<&str>) -> (u16, String) {
        let mut req = Request::builder().method(method).uri(target);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let reply = redirect.reply(&req.body(()).unwrap());
        let location = reply
            .headers
            .iter()
            .find(|(n, _)| n == http::header::LOCATION)
            .map(|(_, v)| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (reply.status.as_u16(), location)
    }

    #[test]
    fn gets_move_permanently_and_others_keep_their_method() {
        let r = Redirect::new(Some(8443));
        assert_eq!(
            answer(r, "GET", "/a/b?x=1&y", Some("example.org:8080")),
            (301, "https://example.org:8443/a/b?x=1&y".into())
        );
        assert_eq!(
            answer(r, "HEAD", "/", Some("example.org")),
            (301, "https://example.org:8443/".into())
        );
        assert_eq!(
            answer(r, "POST", "/api/jobs", Some("[::1]:80")),
            (308, "https://[::1]:8443/api/jobs".into())
        );
        // 443 is the scheme's own port: left out.
        let r = Redirect::new(Some(443));
        assert_eq!(
            answer(r, "PUT", "/x", Some("Galaxy.Example.org")),
            (308, "https://Galaxy.Example.org/x".into())
        );
        assert_eq!(
            answer(Redirect::new(None), "GET", "http://h.example:80/p?q", None),
            (301, "https://h.example/p?q".into())
        );
        assert_eq!(
            answer(Redirect::new(None), "OPTIONS", "*", Some("h")),
            (308, "https://h/".into())
        );
    }

    #[test]
    fn a_host_that_cannot_stand_in_a_url_is_refused() {
        let r = Redirect::new(None);
        for host in [
            "",
            "evil.example/x",
            "a@b",
            "a:b",
            "[::1",
            "[::1]x",
            "[]",
            "h h",
        ] {
            assert_eq!(answer(r, "GET", "/", Some(host)).0, 400, "{host:?}");
        }
        assert_eq!(answer(r, "GET", "/", None).0, 400, "no host at all");
    }
}
