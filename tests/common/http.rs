//! HTTP to the emulators' own APIs on loopback (ureq), and the bits of S3 XML tests read.

use std::time::Duration;

/// A response from [`http`].
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP request to a loopback `http://127.0.0.1:PORT/...` URL, through `ureq` with
/// no proxy; any status is a response. Panics on connection errors or non-loopback hosts.
pub fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
    let host = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("http(): not an http:// URL: {url}"))
        .split('/')
        .next()
        .unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    assert!(
        matches!(host, "127.0.0.1" | "localhost" | "[::1]"),
        "http(): refusing non-loopback URL {url}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    // GET, HEAD and DELETE carry no body.
    let sent = if body.is_empty() && matches!(method, "GET" | "HEAD" | "DELETE") {
        agent.run(request.body(()).expect("an HTTP request"))
    } else {
        agent.run(request.body(body.to_vec()).expect("an HTTP request"))
    };
    let mut response = sent.unwrap_or_else(|e| panic!("http(): {method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        response
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("http(): read from {url}: {e}"))
    };
    HttpResponse {
        status,
        headers,
        body,
    }
}

pub(crate) fn url_encode_key(key: &str) -> String {
    let mut s = String::new();
    for &c in key.as_bytes() {
        if c.is_ascii_alphanumeric() || b"/-_.~".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

pub(crate) fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(
            rest[..j]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'"),
        );
        rest = &rest[j + close.len()..];
    }
    out
}
