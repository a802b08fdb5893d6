//! Every value that becomes a path component on disk or part of a URL is
//! checked here first. A value from the request is an `InvalidParameter`; a
//! value from the server (commit, etag, redirect target) is a `Network` error
//! saying the server is not a usable Hub endpoint. Nothing is written before
//! these checks pass.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::engine::{Error, Result};

/// Everything but RFC 3986's unreserved characters is escaped in a path
/// segment we send, so a name can never add a segment or a query.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Why `segments` rejected a value (the caller names the field or the header).
fn bad_segments(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("it is empty");
    }
    if value.chars().any(|c| c.is_control()) {
        return Some("it contains a control character");
    }
    // A server decodes percent escapes before it resolves dot segments, and
    // so would a file system seeing the decoded name: check what they see.
    let Ok(decoded) = percent_decode_str(value).decode_utf8() else {
        return Some("its percent escapes are not UTF-8");
    };
    for raw in [value, decoded.as_ref()] {
        if raw.starts_with('/') || raw.contains('\\') || raw.contains('\0') {
            return Some("it is an absolute path or contains a backslash");
        }
        if raw.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Some("it has an empty, '.' or '..' segment");
        }
    }
    None
}

/// `org/name` or `name` on the Hub.
pub(super) fn check_repo_id(repo_id: &str) -> Result<()> {
    let charset = repo_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    match bad_segments(repo_id) {
        None if charset && repo_id.split('/').count() <= 2 => Ok(()),
        reason => Err(Error::param(
            "repo_id",
            format!("'{repo_id}' is not a Hub repo id like 'org/name' ({})", reason.unwrap_or("bad characters")),
        )),
    }
}

pub(super) fn check_filename(filename: &str) -> Result<()> {
    match bad_segments(filename) {
        None => Ok(()),
        Some(reason) => {
            Err(Error::param("filename", format!("'{filename}' is not a file path inside the repo: {reason}")))
        }
    }
}

pub(super) fn check_revision(revision: &str) -> Result<()> {
    match bad_segments(revision) {
        None => Ok(()),
        Some(reason) => Err(Error::param("revision", format!("'{revision}' is not a branch, tag or commit: {reason}"))),
    }
}

pub(super) fn check_endpoint(endpoint: &str) -> Result<url::Url> {
    let bad = |why: &str| Error::param("endpoint", format!("'{endpoint}' is not an http(s) URL: {why}"));
    let url = url::Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad("the scheme must be http or https, with a host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it has a query or fragment"));
    }
    Ok(url)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A commit hash from `x-repo-commit` (or a revision that is one): 40 hex
/// digits (SHA-1) or 64 (SHA-256 repos), lowercased.
pub(super) fn commit_hash(value: &str) -> Option<String> {
    (matches!(value.len(), 40 | 64) && is_hex(value)).then(|| value.to_ascii_lowercase())
}

/// An etag as a hex digest (`W/` and quotes stripped), lowercased; the blob's
/// file name. Anything else is refused: it would name a file on disk.
pub(super) fn etag_digest(value: &str) -> Option<String> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
    (v.len() >= 32 && v.len() <= 128 && is_hex(v)).then(|| v.to_ascii_lowercase())
}

/// `{endpoint}/{repo}/resolve/{revision}/{filename}`, each name escaped (the
/// revision as one segment, as the Hub expects `refs%2Fpr%2F1`).
pub(super) fn resolve_url(endpoint: &url::Url, repo_id: &str, revision: &str, filename: &str) -> Result<url::Url> {
    let escape = |s: &str| s.split('/').map(|p| utf8_percent_encode(p, SEGMENT).to_string()).collect::<Vec<_>>();
    let base = endpoint.as_str().trim_end_matches('/');
    let text = format!(
        "{base}/{}/resolve/{}/{}",
        escape(repo_id).join("/"),
        utf8_percent_encode(revision, SEGMENT),
        escape(filename).join("/")
    );
    url::Url::parse(&text).map_err(|e| Error::param("endpoint", format!("cannot build a URL from it: {e}")))
}

/// Where a redirect goes: `location` resolved against `current`. Refused: a
/// scheme other than http(s), and dot segments (also percent-encoded ones,
/// which URL parsers silently resolve) that would point at another repo.
pub(super) fn redirect_target(current: &url::Url, location: &str) -> Result<url::Url> {
    let refuse = |why: &str| Error::Network(format!("the server redirected to '{location}', which {why}"));
    if location.chars().any(|c| c.is_control()) {
        return Err(refuse("contains control characters"));
    }
    let path_and_more = match location.split_once("://") {
        Some((scheme, rest)) if !scheme.contains('/') => rest.split_once('/').map_or("", |(_, p)| p),
        _ => location,
    };
    let path = path_and_more.split(['?', '#']).next().unwrap_or("");
    if let Ok(decoded) = percent_decode_str(path).decode_utf8() {
        if decoded.split('/').any(|s| s == "." || s == "..") || decoded.contains('\\') {
            return Err(refuse("has '.' or '..' segments"));
        }
    }
    let target = current.join(location).map_err(|e| refuse(&format!("is not a URL ({e})")))?;
    if !matches!(target.scheme(), "http" | "https") {
        return Err(refuse("is not http(s)"));
    }
    Ok(target)
}

/// Scheme, host and port: the `Authorization` header goes only to the
/// origin the caller chose.
pub(super) fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.origin() == b.origin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        for f in ["", "../a", "/etc/passwd", "a/../../b", "a\\b", "a//b", "./a", "%2e%2e/x", "a/%2E%2E/b", "%2fetc"] {
            assert!(check_filename(f).is_err(), "{f:?} accepted");
            assert!(check_revision(f).is_err(), "{f:?} accepted");
        }
        for r in ["", "a/b/c", "../x", "org name", "org/%2e%2e", "/org"] {
            assert!(check_repo_id(r).is_err(), "{r:?} accepted");
        }
        assert!(check_filename("onnx/model v2.onnx").is_ok());
        assert!(check_repo_id("microsoft/Phi-3-mini-4k-instruct-gguf").is_ok());
        assert!(check_revision("refs/pr/1").is_ok());
    }

    #[test]
    fn server_values_must_be_hex_digests() {
        assert_eq!(
            etag_digest("W/\"ABCDEF0123456789abcdef0123456789\"").as_deref(),
            Some("abcdef0123456789abcdef0123456789")
        );
        for e in ["\"../../x\"", "/etc/passwd", "\"\"", "abc", "W/\"zz\""] {
            assert_eq!(etag_digest(e), None, "{e}");
        }
        assert!(commit_hash(&"a".repeat(40)).is_some());
        assert!(commit_hash(&"a".repeat(64)).is_some());
        assert!(commit_hash("../../../tmp").is_none());
        assert!(commit_hash(&"g".repeat(40)).is_none());
    }

    #[test]
    fn redirects_are_resolved_and_checked() {
        let cur = url::Url::parse("http://127.0.0.1:9/org/name/resolve/main/a.gguf").unwrap();
        assert_eq!(redirect_target(&cur, "/x/y%20z").unwrap().as_str(), "http://127.0.0.1:9/x/y%20z");
        assert_eq!(
            redirect_target(&cur, "b.gguf").unwrap().as_str(),
            "http://127.0.0.1:9/org/name/resolve/main/b.gguf"
        );
        assert!(redirect_target(&cur, "ftp://host/x").is_err());
        assert!(redirect_target(&cur, "file:///etc/passwd").is_err());
        assert!(redirect_target(&cur, "/org/name/resolve/main/%2e%2e/%2e%2e/other/x").is_err());
        assert!(redirect_target(&cur, "http://h/a/../b").is_err());
        let url = resolve_url(&url::Url::parse("http://h:1/").unwrap(), "o/n", "refs/pr/1", "d/my file.gguf").unwrap();
        assert_eq!(url.as_str(), "http://h:1/o/n/resolve/refs%2Fpr%2F1/d/my%20file.gguf");
    }
}
