//! `download_model` against a local Hub stand-in (tests/common/hub_server.rs):
//! the resolve protocol, progress, resume within and across calls, integrity
//! checks, cancellation (also of a stalled transfer) and typed errors.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hub_server::{sha256_hex, HubServer, COMMIT};
use phi_mobile::{download_model, CancellationToken, DownloadProgress, DownloadRequest, LlmError};

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
    DownloadRequest {
        repo_id: REPO.into(),
        filename: filename.into(),
        revision: None,
        endpoint: Some(server.endpoint.clone()),
        token: None,
    }
}

/// Records every progress report; can cancel (return false) or throw.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(u64, u64)>>,
    stop_after_first_bytes: bool,
    throw: bool,
}

impl DownloadProgress for Recorder {
    fn on_progress(&self, done: u64, total: u64) -> Result<bool, LlmError> {
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
) -> Result<String, LlmError> {
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

    let path = download(&server, dir.path(), Some(recorder.clone()), None).unwrap();
    assert_eq!(PathBuf::from(&path), final_path(&std::fs::canonicalize(dir.path()).unwrap()));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
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

    // Second call: the file is there, no request is made.
    let n = server.requests().len();
    let again = download(&server, dir.path(), None, None).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests().len(), n);
}

#[test]
fn a_dropped_connection_resumes_where_it_stopped() {
    let bytes = payload(1_000_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.drop_bodies.store(2, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    let path = download(&server, dir.path(), None, None).unwrap();
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
    let path = download(&server, dir.path(), None, None).unwrap();
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
    let path = download(&server, dir.path(), None, None).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_server_ignoring_range_on_resume_cannot_produce_a_corrupt_file() {
    let bytes = payload(400_000);
    let server = HubServer::start(REPO, &[(FILE, bytes.clone())]);
    server.faults.drop_bodies.store(1, std::sync::atomic::Ordering::SeqCst);
    server.faults.ignore_range.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();

    // The resumed request gets the whole file again, appended to the half
    // already there: the size check catches it.
    let err = download(&server, dir.path(), None, None).unwrap_err();
    assert!(matches!(&err, LlmError::Network { reason } if reason.contains("announced")), "{err:?}");
    assert!(!final_path(dir.path()).exists());
}

#[test]
fn a_missing_file_or_repo_is_model_not_found() {
    let server = HubServer::start(REPO, &[(FILE, payload(1000))]);
    let dir = tempfile::tempdir().unwrap();
    let err =
        download_model(request(&server, "other.gguf"), dir.path().to_string_lossy().into(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::ModelNotFound { .. }), "{err:?}");
    let mut other_repo = request(&server, FILE);
    other_repo.repo_id = "example-org/nope".into();
    let err = download_model(other_repo, dir.path().to_string_lossy().into(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::ModelNotFound { .. }), "{err:?}");
}

#[test]
fn an_unreachable_endpoint_is_a_network_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let req = DownloadRequest {
        repo_id: REPO.into(),
        filename: FILE.into(),
        revision: None,
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        token: None,
    };
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
    let path = download(&server, dir.path(), None, None).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(server.body_range_starts().last().unwrap() > &0, "{:?}", server.body_range_starts());
}

#[test]
fn a_cancellation_token_stops_even_a_stalled_transfer_promptly() {
    let server = HubServer::start(REPO, &[(FILE, payload(1_000_000))]);
    server.faults.stall.store(true, std::sync::atomic::Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            token.cancel();
        })
    };
    let start = Instant::now();
    let err = download(&server, dir.path(), None, Some(token)).unwrap_err();
    let elapsed = start.elapsed();
    canceller.join().unwrap();
    assert_eq!(err, LlmError::Cancelled);
    // 300 ms until cancel, then at most the one-second grace for the worker.
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    assert!(!final_path(dir.path()).exists());
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
    for (repo, file, endpoint) in [
        (REPO, "../escape.gguf", server.endpoint.clone()),
        (REPO, "/etc/passwd", server.endpoint.clone()),
        ("", FILE, server.endpoint.clone()),
        ("a/b/c", FILE, server.endpoint.clone()),
        (REPO, FILE, "ftp://mirror.example".to_string()),
    ] {
        let req = DownloadRequest {
            repo_id: repo.into(),
            filename: file.into(),
            revision: None,
            endpoint: Some(endpoint),
            token: None,
        };
        let err = download_model(req, to.clone(), None, None).unwrap_err();
        assert!(matches!(err, LlmError::InvalidParameter { .. }), "{repo} {file}: {err:?}");
    }
    assert!(server.requests().is_empty());

    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let err = download_model(request(&server, FILE), not_a_dir.to_string_lossy().into(), None, None).unwrap_err();
    assert!(matches!(err, LlmError::Storage { .. }), "{err:?}");
}
