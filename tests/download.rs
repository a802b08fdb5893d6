//! `download_model` against a local Hub stand-in (tests/common/hub_server.rs):
//! the resolve protocol, progress, resume within and across calls, integrity
//! checks, cancellation (also of a stalled transfer), timeouts, the lock and
//! typed errors. The hostile server's classes are in tests/download_hostile.rs.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hub_server::{git_sha1_hex, sha256_hex, HubServer, Sandbox, COMMIT};
use phi_mobile::{download_model, CancellationToken, DownloadProgress, DownloadRequest, DownloadedModel, LlmError};

const REPO: &str = "example-org/tiny-model-gguf";
const FILE: &str = "tiny-q4.gguf";

fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn request(server: &HubServer, filename: &str) -> DownloadRequest {
    DownloadRequest { endpoint: Some(server.endpoint.clone()), ..DownloadRequest::new(REPO, filename) }
}

/// Records every progress report; can cancel (return false) or throw.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(i64, i64)>>,
    stop_after_first_bytes: bool,
    throw: bool,
}

impl DownloadProgress for Recorder {
    fn on_progress(&self, done: i64, total: i64) -> Result<bool, LlmError> {
        self.seen.lock().unwrap().push((done, total));
        if self.throw {
            return Err(LlmError::Callback { reason: "progress view is gone".into() });
        }
        Ok(!(self.stop_after_first_bytes && done > 0))
    }
}

fn download(
    server: &HubServer,
    dir: &Path,
    progress: Option<Arc<Recorder>>,
    cancel: Option<Arc<CancellationToken>>,
) -> Result<DownloadedModel, LlmError> {
    download_model(
        request(server, FILE),
        dir.to_string_lossy().into_owned(),
        progress.map(|p| p as Arc<dyn DownloadProgress>),
        cancel,
    )
}

/// Where hf-hub's layout puts the finished file, and its partial download.
fn final_path(dir: &Path) -> PathBuf {
    dir.join("models--example-org--tiny-model-gguf/snapshots").join(COMMIT).join(FILE)
}

fn part_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let blobs = dir.join("models--example-org--tiny-model-gguf/blobs");
    std::fs::read_dir(blobs)
        .map(|r| {
            r.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "part"))
                .map(|p| {
                    let len = std::fs::metadata(&p).unwrap().len();
                    (p, len)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn downloads_with_progress_then_reuses_the_file_offline() {
    let bytes = payload(1_500_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());

    let got = download(&server, dir.path(), Some(recorder.clone()), None).unwrap();
    let path = got.path.clone();
    assert_eq!(PathBuf::from(&path), final_path(&std::fs::canonicalize(dir.path()).unwrap()));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!((got.size_bytes, got.commit.as_str(), got.verified), (1_500_000, COMMIT, true));
    assert_eq!(got.sha256, Some(sha256_hex(&bytes)));
    assert!(part_files(dir.path()).is_empty());
    // The blob is named by the etag, the SHA-256 the server announced.
    let blob = std::fs::canonicalize(&path).unwrap();
    assert_eq!(blob.file_name().unwrap().to_str().unwrap(), sha256_hex(&bytes));

    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen.last(), Some(&(1_500_000, 1_500_000)), "{seen:?}");
    assert!(seen.iter().all(|&(_, total)| total == 1_500_000));
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "progress went backwards: {seen:?}");

    // The protocol as the Hub speaks it: resolve (302 to the CDN), probe, body.
    let requests = server.requests();
    assert!(requests.iter().any(|s| s.path == format!("/{REPO}/resolve/main/{FILE}")), "{requests:?}");
    assert_eq!(server.body_range_starts(), vec![0]);
    assert!(requests.iter().all(|s| s.accept_encoding.as_deref() == Some("identity")), "{requests:?}");

    // Second call: the file is there, no request is made.
    let n = server.requests().len();
    let again = download(&server, dir.path(), None, None).unwrap();
    assert_eq!(again, got);
    assert_eq!(server.requests().len(), n);
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let bytes = payload(1_000_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.drop_bodies.store(2, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    let path = download(&server, dir.path(), None, None).unwrap().path;
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // Each retry asked for the rest only: 0, then half, then three quarters.
    assert_eq!(server.body_range_starts(), vec![0, 500_000, 750_000]);
}

#[test]
fn an_interrupted_download_resumes_in_the_next_call() {
    let bytes = payload(1_000_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.drop_bodies.store(usize::MAX, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    let err = download(&server, dir.path(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::Network { .. }), "{err:?}");
    // Nothing where the complete file goes; the partial file is kept.
    assert!(!final_path(dir.path()).exists());
    let parts = part_files(dir.path());
    assert_eq!(parts.len(), 1);
    let partial = parts[0].1;
    assert!(partial > 0 && partial < 1_000_000, "{partial}");

    server.faults.drop_bodies.store(0, std::sync::atomic::Ordering::SeqCst);
    let path = download(&server, dir.path(), None, None).unwrap().path;
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(server.body_range_starts().last(), Some(&partial));
}

#[test]
fn bytes_that_do_not_match_the_etag_are_deleted_not_returned() {
    let bytes = payload(300_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.corrupt.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    let err = download(&server, dir.path(), None, None).unwrap_err();
    assert!(matches!(&err, LlmError::Network { reason } if reason.contains("corrupt")), "{err:?}");
    assert!(!final_path(dir.path()).exists());
    let blob = dir.path().join("models--example-org--tiny-model-gguf/blobs").join(sha256_hex(&bytes));
    assert!(!blob.exists());

    server.faults.corrupt.store(false, std::sync::atomic::Ordering::SeqCst);
    let path = download(&server, dir.path(), None, None).unwrap().path;
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_server_ignoring_range_on_resume_restarts_cleanly() {
    let bytes = payload(400_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.drop_bodies.store(1, std::sync::atomic::Ordering::SeqCst);
    server.faults.ignore_range.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    // The resumed request gets the whole file again (200): it replaces the
    // half already there instead of being appended to it.
    let got = download(&server, dir.path(), None, None).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert_eq!(server.body_range_starts(), vec![0, 200_000]);
}

#[test]
fn a_missing_file_or_repo_is_model_not_found() {
    let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
    // 404, and the Hub's answer to anonymous clients: 401 + RepoNotFound.
    for hub_401 in [false, true] {
        server.faults.hub_401.store(hub_401, std::sync::atomic::Ordering::SeqCst);
        let sandbox = Sandbox::new();
        let err = download_model(request(&server, "other.gguf"), sandbox.dir_string(), None, None).unwrap_err();
        // Named in words, not as a made-up path.
        assert!(
            matches!(&err, LlmError::ModelNotFound { what } if what.contains("example-org/tiny-model-gguf/other.gguf at revision main")),
            "{err:?}"
        );
        let mut other_repo = request(&server, FILE);
        other_repo.repo_id = "example-org/nope".into();
        let err = download_model(other_repo, sandbox.dir_string(), None, None).unwrap_err();
        assert!(matches!(&err, LlmError::ModelNotFound { what } if what.contains("example-org/nope")), "{err:?}");
        sandbox.assert_nothing_written();
    }
}

#[test]
fn a_gated_repo_without_a_token_is_access_denied() {
    let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
    server.faults.gated.store(true, std::sync::atomic::Ordering::SeqCst);
    let sandbox = Sandbox::new();
    let err = download_model(request(&server, FILE), sandbox.dir_string(), None, None).unwrap_err();
    assert!(matches!(&err, LlmError::AccessDenied { reason } if reason.contains("token")), "{err:?}");
    assert!(err.to_string().contains("Hugging Face token with access"), "{err}");
    sandbox.assert_nothing_written();
}

#[test]
fn a_small_git_file_is_checked_against_its_git_sha1() {
    let bytes = b"{\"architectures\": [\"Phi3ForCausalLM\"]}\n".to_vec();
    let server = HubServer::start(REPO, &[("config.json", bytes.clone())]);
    server.faults.small.store(true, std::sync::atomic::Ordering::SeqCst);
    server.faults.corrupt.store(true, std::sync::atomic::Ordering::SeqCst);
    let sandbox = Sandbox::new();
    let err = download_model(request(&server, "config.json"), sandbox.dir_string(), None, None).unwrap_err();
    assert!(matches!(&err, LlmError::Network { reason } if reason.contains("corrupt")), "{err:?}");
    sandbox.assert_nothing_written();

    server.faults.corrupt.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = download_model(request(&server, "config.json"), sandbox.dir_string(), None, None).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
    assert!(got.verified);
    assert_eq!(got.sha256, None);
    let blob = std::fs::canonicalize(&got.path).unwrap();
    assert_eq!(blob.file_name().unwrap().to_str().unwrap(), git_sha1_hex(&bytes));
    sandbox.assert_nothing_outside();
}

#[test]
fn an_unreachable_endpoint_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let req =
        DownloadRequest { endpoint: Some(format!("http://127.0.0.1:{port}")), ..DownloadRequest::new(REPO, FILE) };
    let err = download_model(req, dir.path().to_string_lossy().into(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::Network { .. }), "{err:?}");
}

#[test]
fn progress_returning_false_cancels_and_the_next_call_resumes() {
    let bytes = payload(2_000_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.throttle_ms.store(40, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder { stop_after_first_bytes: true, ..Default::default() });

    let err = download(&server, dir.path(), Some(recorder), None).unwrap_err();
    assert_eq!(err, LlmError::Cancelled);
    assert!(!final_path(dir.path()).exists());

    server.faults.throttle_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let path = download(&server, dir.path(), None, None).unwrap().path;
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(server.body_range_starts().last().unwrap() > &0, "{:?}", server.body_range_starts());
}

/// Generous for a loaded 2-core machine, yet far below the old one-second
/// grace (and the read timeout): the cancel itself must end the call.
const CANCEL_BOUND: Duration = Duration::from_millis(50 + 250);

/// Cancels `token` once the partial file holds some bytes; returns how long
/// the download call took after the cancel.
fn cancel_mid_transfer(server: &HubServer, dir: &Path) -> (LlmError, Duration, Instant) {
    let token = CancellationToken::new();
    let cancelled_at = Arc::new(Mutex::new(None));
    let canceller = {
        let (token, at, dir) = (token.clone(), cancelled_at.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            for _ in 0..1000 {
                if part_files(&dir).iter().any(|(_, len)| *len > 0) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(100));
            *at.lock().unwrap() = Some(Instant::now());
            token.cancel();
        })
    };
    let err = download(server, dir, None, Some(token)).unwrap_err();
    let returned = Instant::now();
    canceller.join().unwrap();
    let at = cancelled_at.lock().unwrap().expect("the transfer never started");
    (err, returned - at, at)
}

#[test]
fn a_cancellation_token_stops_a_transfer_at_once_and_a_retry_resumes() {
    for stalled in [false, true] {
        let bytes = payload(2_000_000);
        let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
        if stalled {
            server.faults.stall.store(true, std::sync::atomic::Ordering::SeqCst);
        } else {
            server.faults.throttle_ms.store(30, std::sync::atomic::Ordering::SeqCst);
        }
        let sandbox = Sandbox::new();
        std::fs::create_dir_all(&sandbox.dir).unwrap();
        let (err, latency, at) = cancel_mid_transfer(&server, &sandbox.dir);
        assert_eq!(err, LlmError::Cancelled);
        eprintln!("stalled={stalled}: the call returned {latency:?} after the cancel");
        assert!(latency < CANCEL_BOUND, "stalled={stalled}: returned {latency:?} after the cancel");
        assert!(!final_path(&sandbox.dir).exists());
        // Nothing more was asked of the server after the cancel.
        std::thread::sleep(Duration::from_millis(200));
        let after: Vec<_> = server.requests().into_iter().filter(|s| s.at > at).collect();
        assert!(after.is_empty(), "requests after the cancel: {after:?}");

        // At once: the lock is free and the partial file resumes.
        server.faults.stall.store(false, std::sync::atomic::Ordering::SeqCst);
        server.faults.throttle_ms.store(0, std::sync::atomic::Ordering::SeqCst);
        let got = download(&server, &sandbox.dir, None, None).unwrap();
        assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
        assert!(*server.body_range_starts().last().unwrap() > 0, "{:?}", server.body_range_starts());
        sandbox.assert_nothing_outside();
    }
}

#[test]
fn a_stalled_server_without_a_cancel_token_times_out() {
    let server = HubServer::start(REPO, &[(FILE, payload(1_000_000))]);
    server.faults.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let sandbox = Sandbox::new();
    let req = DownloadRequest { read_timeout_ms: Some(300), ..request(&server, FILE) };
    let start = Instant::now();
    let err = download_model(req, sandbox.dir_string(), None, None).unwrap_err();
    let elapsed = start.elapsed();
    assert!(matches!(&err, LlmError::Network { reason } if reason.contains("no data for 300 ms")), "{err:?}");
    // Four attempts (three in-call retries) of 300 ms each, 1.75 s of backoff.
    assert!(elapsed < Duration::from_millis(4 * 300 + 1750 + 2000), "{elapsed:?}");
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    sandbox.assert_nothing_outside();
}

#[test]
fn a_second_download_of_the_same_file_is_busy_while_the_first_runs() {
    let bytes = payload(2_000_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.throttle_ms.store(30, std::sync::atomic::Ordering::SeqCst);
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(&sandbox.dir).unwrap();
    let token = CancellationToken::new();
    let first = {
        let (req, dir, token) = (request(&server, FILE), sandbox.dir_string(), token.clone());
        std::thread::spawn(move || download_model(req, dir, None, Some(token)))
    };
    for _ in 0..1000 {
        if part_files(&sandbox.dir).iter().any(|(_, len)| *len > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = download(&server, &sandbox.dir, None, None).unwrap_err();
    assert!(
        matches!(&err, LlmError::Busy { reason } if reason.contains("another download of example-org/tiny-model-gguf/tiny-q4.gguf")),
        "{err:?}"
    );
    token.cancel();
    assert_eq!(first.join().unwrap().unwrap_err(), LlmError::Cancelled);
    server.faults.throttle_ms.store(0, std::sync::atomic::Ordering::SeqCst);
    let got = download(&server, &sandbox.dir, None, None).unwrap();
    assert_eq!(std::fs::read(&got.path).unwrap(), bytes);
}

#[test]
fn a_throwing_progress_callback_is_a_callback_error() {
    let server = HubServer::start(REPO, &[(FILE, payload(500_000))]);
    server.faults.throttle_ms.store(20, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder { throw: true, ..Default::default() });
    let err = download(&server, dir.path(), Some(recorder), None).unwrap_err();
    assert_eq!(err, LlmError::Callback { reason: "progress view is gone".into() });
}

#[test]
fn bad_requests_are_invalid_parameters_and_an_unwritable_directory_is_storage() {
    let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_string_lossy().into_owned();
    let ok = request(&server, FILE);
    for (field, req) in [
        ("filename", request(&server, "../escape.gguf")),
        ("filename", request(&server, "/etc/passwd")),
        ("filename", request(&server, "%2e%2e/%2E%2E/other-org/x/resolve/main/a.gguf")),
        ("filename", request(&server, "a\\b.gguf")),
        ("repo_id", DownloadRequest { repo_id: "".into(), ..ok.clone() }),
        ("repo_id", DownloadRequest { repo_id: "a/b/c".into(), ..ok.clone() }),
        ("revision", DownloadRequest { revision: Some("..".into()), ..ok.clone() }),
        ("revision", DownloadRequest { revision: Some("%2e%2e".into()), ..ok.clone() }),
        ("endpoint", DownloadRequest { endpoint: Some("ftp://mirror.example".into()), ..ok.clone() }),
        ("token", DownloadRequest { token: Some("hf_x\r\nX-Evil: 1".into()), ..ok.clone() }),
        ("connect_timeout_ms", DownloadRequest { connect_timeout_ms: Some(0), ..ok.clone() }),
        ("read_timeout_ms", DownloadRequest { read_timeout_ms: Some(-5), ..ok.clone() }),
        ("read_timeout_ms", DownloadRequest { read_timeout_ms: Some(i64::MAX), ..ok.clone() }),
    ] {
        let what = format!("{req:?}");
        let err = download_model(req, to.clone(), None, None).unwrap_err();
        assert!(matches!(&err, LlmError::InvalidParameter { name, .. } if name == field), "{what}: {err:?}");
    }
    assert!(server.requests().is_empty());

    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let err = download_model(request(&server, FILE), not_a_dir.to_string_lossy().into(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::Storage { .. }), "{err:?}");
}
