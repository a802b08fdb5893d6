//! `download_model` against a hostile server speaking the Hub's protocol
//! (tests/common/hub_server.rs with its `Faults`): one test per class of
//! attack found on hf-hub. Each checks the typed error and that nothing was
//! written outside the chosen directory (nor, where the answer is refused
//! before any byte, inside it).

mod common;

use std::sync::atomic::Ordering;

use common::hub_server::{sha256_hex, HubServer, Sandbox, COMMIT};
use phi_mobile::{download_model, DownloadRequest, DownloadedModel, LlmError};

const REPO: &str = "example-org/tiny-model-gguf";
const FILE: &str = "tiny-q4.gguf";

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn request(server: &HubServer, filename: &str) -> DownloadRequest {
    DownloadRequest { endpoint: Some(server.endpoint.clone()), ..DownloadRequest::new(REPO, filename) }
}

fn get(server: &HubServer, sandbox: &Sandbox) -> Result<DownloadedModel, LlmError> {
    download_model(request(server, FILE), sandbox.dir_string(), None, None)
}

fn assert_network(err: &LlmError, needle: &str) {
    assert!(matches!(err, LlmError::Network { reason } if reason.contains(needle)), "expected '{needle}': {err:?}");
}

#[test]
fn path_traversal_in_etag_linked_etag_or_commit_writes_nothing() {
    let sandbox_probe = Sandbox::new();
    let outside = sandbox_probe.parent.path().join("escape");
    for (small, header, value) in [
        (false, "x-linked-etag", "\"../../../../escape\"".to_string()),
        (false, "x-linked-etag", format!("\"{}\"", outside.display())),
        (true, "etag", "\"../../../escape\"".to_string()),
        (true, "etag", format!("W/\"{}\"", outside.display())),
        (false, "x-repo-commit", "../../../escape".to_string()),
        (false, "x-repo-commit", outside.display().to_string()),
        (true, "x-repo-commit", "../../..".to_string()),
    ] {
        let server = HubServer::start(REPO, &[(FILE, payload(10_000))]);
        server.faults.small.store(small, Ordering::SeqCst);
        *server.faults.header.lock().unwrap() = Some((header.to_string(), value.clone()));
        let sandbox = Sandbox::new();
        let err = get(&server, &sandbox).unwrap_err();
        assert_network(&err, "not a usable Hub endpoint");
        sandbox.assert_nothing_written();
        assert!(!outside.exists());
        // No body was asked for.
        assert_eq!(server.requests().len(), 1, "{header}={value}: {:?}", server.requests());
    }
}

#[test]
fn percent_encoded_dot_segments_in_a_redirect_are_refused() {
    let server = HubServer::start(REPO, &[(FILE, payload(10_000))]);
    for location in [
        "/example-org/tiny-model-gguf/resolve/main/%2e%2e/%2e%2e/%2e%2e/other-org/secret/resolve/main/tiny-q4.gguf",
        "/cdn/%2E%2E/%2e%2e/etc/passwd",
        "{endpoint}/a/./b",
    ] {
        *server.faults.cdn_location.lock().unwrap() = Some(location.replace("{endpoint}", &server.endpoint));
        let sandbox = Sandbox::new();
        let err = get(&server, &sandbox).unwrap_err();
        assert_network(&err, "'.' or '..' segments");
        sandbox.assert_nothing_written();
    }
    // Only the resolve requests: the refused targets were never fetched.
    assert!(server.requests().iter().all(|s| s.path.contains("/resolve/main/tiny-q4.gguf")), "{:?}", server.requests());
}

#[test]
fn a_body_longer_than_announced_is_an_error_and_not_kept() {
    // 1: a Content-Length above the announced size; 2: no Content-Length,
    // more bytes than announced until the server closes.
    for mode in [1, 2] {
        let server = HubServer::start(REPO, &[(FILE, payload(300_000))]);
        server.faults.longer_body.store(mode, Ordering::SeqCst);
        let sandbox = Sandbox::new();
        let err = get(&server, &sandbox).unwrap_err();
        assert_network(&err, if mode == 1 { "announced 301000 bytes" } else { "more than the 300000 bytes" });
        sandbox.assert_nothing_written();
    }
}

#[test]
fn a_gzip_encoded_body_is_refused_not_inflated() {
    let server = HubServer::start(REPO, &[(FILE, payload(1_000_000))]);
    server.faults.gzip.store(true, Ordering::SeqCst);
    let sandbox = Sandbox::new();
    let err = get(&server, &sandbox).unwrap_err();
    assert_network(&err, "gzip-encoded");
    sandbox.assert_nothing_written();
    assert!(server.requests().iter().all(|s| s.accept_encoding.as_deref() == Some("identity")));
}

#[test]
fn a_redirect_loop_stops_after_ten_redirects() {
    for mode in [1, 2] {
        let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
        server.faults.redirect_loop.store(mode, Ordering::SeqCst);
        let sandbox = Sandbox::new();
        let err = get(&server, &sandbox).unwrap_err();
        assert_network(&err, "redirected more than 10 times");
        // The first request and ten redirects.
        assert_eq!(server.requests().len(), 11, "mode {mode}");
        sandbox.assert_nothing_written();
    }
}

#[test]
fn the_token_is_not_sent_to_another_host_after_a_redirect() {
    let bytes = payload(100_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    // The CDN: same server, another origin (localhost vs 127.0.0.1).
    let port = server.endpoint.rsplit(':').next().unwrap().to_string();
    *server.faults.cdn_location.lock().unwrap() = Some(format!("http://localhost:{port}/cdn/{{sha}}"));
    let sandbox = Sandbox::new();
    let req = DownloadRequest { token: Some("hf_secret".into()), ..request(&server, FILE) };
    let got = download_model(req, sandbox.dir_string(), None, None).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    let requests = server.requests();
    let (api, cdn): (Vec<_>, Vec<_>) = requests.iter().partition(|s| s.path.contains("/resolve/"));
    assert!(!cdn.is_empty() && cdn.iter().all(|s| s.host.as_deref().unwrap().starts_with("localhost")), "{requests:?}");
    assert!(api.iter().all(|s| s.authorization.as_deref() == Some("Bearer hf_secret")), "{requests:?}");
    assert!(cdn.iter().all(|s| s.authorization.is_none()), "the token went to the CDN: {requests:?}");
}

#[test]
fn an_lfs_file_whose_etag_is_not_a_sha256_is_refused() {
    let server = HubServer::start(REPO, &[(FILE, payload(10_000))]);
    // A git SHA-1 (40 hex digits) cannot verify an LFS file.
    *server.faults.header.lock().unwrap() = Some(("x-linked-etag".into(), format!("\"{COMMIT}\"")));
    let sandbox = Sandbox::new();
    let err = get(&server, &sandbox).unwrap_err();
    assert_network(&err, "is not a SHA-256");
    sandbox.assert_nothing_written();
}

#[test]
fn a_filename_with_a_space_behind_a_relative_redirect_downloads() {
    let bytes = payload(50_000);
    let name = "my model.gguf";
    let server = HubServer::start(REPO, &[(name, bytes.clone())]);
    // A renamed repo: the Hub answers 307 with a relative Location.
    *server.faults.renamed_to.lock().unwrap() = Some("/renamed/resolve/main/my%20model.gguf".into());
    let sandbox = Sandbox::new();
    let got = download_model(request(&server, name), sandbox.dir_string(), None, None).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert!(got.path.ends_with("/my model.gguf"), "{}", got.path);
    assert_eq!(got.sha256, Some(sha256_hex(&bytes)));
    let requests = server.requests();
    assert_eq!(requests[0].path, "/example-org/tiny-model-gguf/resolve/main/my%20model.gguf");
    assert_eq!(requests[1].path, "/renamed/resolve/main/my%20model.gguf");
    sandbox.assert_nothing_outside();
}

#[test]
fn a_redirect_to_another_scheme_is_refused() {
    let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
    for location in ["file:///etc/passwd", "ftp://127.0.0.1/x"] {
        *server.faults.cdn_location.lock().unwrap() = Some(location.into());
        let sandbox = Sandbox::new();
        let err = get(&server, &sandbox).unwrap_err();
        assert_network(&err, "is not http(s)");
        sandbox.assert_nothing_written();
    }
}
