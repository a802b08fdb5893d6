//! HTTP for downloads: ureq over our own TCP transport, so that a cancel
//! (checked every [`SLICE`]) and the read timeout stop a transfer on the
//! caller's thread, even one stalled mid-body, with no worker left behind.
//! Redirects are followed here, not by ureq: at most [`MAX_REDIRECTS`],
//! relative ones resolved against the current URL, checked by
//! `names::redirect_target`, and the token sent only to the caller's origin.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::http::{Response, StatusCode};
use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, RustlsConnector, Transport,
};
use ureq::Body;

use super::names;
use crate::engine::{Error, Result};

pub(super) const MAX_REDIRECTS: usize = 10;
/// How long one socket read or connect poll may block before the cancel flag
/// and the deadline are looked at again: the bound on cancel latency.
const SLICE: Duration = Duration::from_millis(20);

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub connect: Duration,
    /// Longest wait for the next byte.
    pub read: Duration,
}

/// Why a request failed: a broken connection is worth resuming, anything
/// else (a refused redirect, a bad answer, a cancel) is not.
pub(super) enum Failure {
    Transient(Error),
    Fatal(Error),
}

impl Failure {
    pub(super) fn into_error(self) -> Error {
        match self {
            Failure::Transient(e) | Failure::Fatal(e) => e,
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Fatal(e)
    }
}

pub(super) struct Client {
    agent: ureq::Agent,
    /// The endpoint the caller chose: only its origin gets the token.
    origin: url::Url,
    token: Option<String>,
    stop: Arc<AtomicBool>,
}

impl Client {
    pub(super) fn new(origin: url::Url, token: Option<String>, timeouts: Timeouts, stop: Arc<AtomicBool>) -> Self {
        let tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(RootCerts::WebPki).build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(format!("phi-mobile/{}", env!("CARGO_PKG_VERSION")))
            // No transparent decompression: the bytes on disk are the bytes
            // counted against the announced size.
            .accept_encoding("identity")
            .tls_config(tls)
            .build();
        let connector = CancellableTcp { stop: stop.clone(), timeouts }.chain(RustlsConnector::default());
        let agent = ureq::Agent::with_parts(config, connector, DefaultResolver::default());
        Self { agent, origin, token, stop }
    }

    pub(super) fn cancelled(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// GETs `url`, following redirects until `is_final` accepts a response
    /// (it sees every response, 3xx included) or one is not a redirect.
    /// Returns the URL the final response came from.
    pub(super) fn get(
        &self,
        url: &url::Url,
        range: Option<&str>,
        is_final: impl Fn(&Response<Body>) -> bool,
    ) -> Result<(url::Url, Response<Body>), Failure> {
        let mut current = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            if self.cancelled() {
                return Err(Error::Cancelled.into());
            }
            let mut request = self.agent.get(current.as_str()).header("Accept-Encoding", "identity");
            if let Some(range) = range {
                request = request.header("Range", range);
            }
            if let Some(token) = self.token.as_deref().filter(|_| names::same_origin(&current, &self.origin)) {
                request = request.header("Authorization", format!("Bearer {token}"));
            }
            let response = request.call().map_err(|e| match self.transport_error(&current, e) {
                e @ Error::Network(_) => Failure::Transient(e),
                e => Failure::Fatal(e),
            })?;
            if !response.status().is_redirection() || is_final(&response) {
                return Ok((current, response));
            }
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Error::Network(format!("{current} redirected without a usable Location")))?;
            current = names::redirect_target(&current, location)?;
        }
        Err(Error::Network(format!("{url} redirected more than {MAX_REDIRECTS} times")).into())
    }

    pub(super) fn transport_error(&self, url: &url::Url, e: ureq::Error) -> Error {
        if self.cancelled() {
            return Error::Cancelled;
        }
        let host = authority(url);
        match e {
            ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
                Error::Network(format!("{host} did not answer in time ({io})"))
            }
            other => Error::Network(format!("the connection to {host} failed: {other}")),
        }
    }

    /// An io error while reading a body: a cancel, or the network.
    pub(super) fn body_error(&self, url: &url::Url, e: io::Error) -> Error {
        if self.cancelled() {
            return Error::Cancelled;
        }
        Error::Network(format!("the transfer from {} broke off: {e}", authority(url)))
    }
}

/// `host:port`, as errors name a server.
fn authority(url: &url::Url) -> &str {
    &url[url::Position::BeforeHost..url::Position::AfterPort]
}

/// A header as text, if present and readable.
pub(super) fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// An HTTP status that is not a success, as the error an app can act on.
/// The Hub answers anonymous requests for a missing repo with 401 and
/// `X-Error-Code: RepoNotFound` (it will not say whether a private repo
/// exists), so the code matters more than the status.
pub(super) fn status_error(response: &Response<Body>, what: &str, token_given: bool) -> Error {
    let status = response.status();
    let code = header(response, "x-error-code").unwrap_or("");
    let not_found = matches!(code, "RepoNotFound" | "EntryNotFound" | "RevisionNotFound");
    if status == StatusCode::NOT_FOUND || (not_found && matches!(status.as_u16(), 401 | 403)) {
        return Error::RemoteNotFound(what.to_string());
    }
    if matches!(status.as_u16(), 401 | 403) {
        let gated = if code == "GatedRepo" { " is gated" } else { " is private or gated" };
        return Error::AccessDenied(if token_given {
            format!("{what}{gated} and the token given has no access to it (accept its terms on the Hub, or use another token)")
        } else {
            format!("{what}{gated}: a Hugging Face token with access to it is needed")
        });
    }
    Error::Network(format!("the server answered HTTP {status} for {what}"))
}

/// Opens plain TCP connections whose every blocking step is cut into
/// [`SLICE`]s, so the cancel flag and the timeouts are seen promptly.
#[derive(Debug)]
struct CancellableTcp {
    stop: Arc<AtomicBool>,
    timeouts: Timeouts,
}

impl Connector<()> for CancellableTcp {
    type Out = SlicedTcp;

    fn connect(&self, details: &ConnectionDetails, _chained: Option<()>) -> Result<Option<SlicedTcp>, ureq::Error> {
        let deadline = Instant::now() + self.timeouts.connect;
        let mut last = None;
        for addr in details.addrs.iter() {
            match connect_one(*addr, deadline, &self.stop) {
                Ok(stream) => {
                    stream.set_read_timeout(Some(SLICE))?;
                    stream.set_write_timeout(Some(SLICE))?;
                    stream.set_nodelay(true)?;
                    let buffers =
                        LazyBuffers::new(details.config.input_buffer_size(), details.config.output_buffer_size());
                    return Ok(Some(SlicedTcp {
                        stream,
                        buffers,
                        stop: self.stop.clone(),
                        read_timeout: self.timeouts.read,
                    }));
                }
                Err(e) if self.stop.load(Ordering::SeqCst) || e.kind() == io::ErrorKind::TimedOut => {
                    return Err(e.into())
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host has no address")).into())
    }
}

/// Not `Interrupted`: std's and rustls's loops retry that at once, forever.
fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "cancelled")
}

/// A non-blocking connect, polled until it completes, fails, times out or
/// is cancelled (std's connect blocks for the whole timeout).
fn connect_one(addr: SocketAddr, deadline: Instant, stop: &AtomicBool) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    match socket.connect_timeout(&addr.into(), SLICE) {
        Ok(()) => return Ok(socket.into()),
        Err(e) if e.kind() != io::ErrorKind::TimedOut => return Err(e),
        Err(_) => {}
    }
    // Still connecting: completion shows as a peer address, failure as the
    // socket's pending error.
    loop {
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        if socket.peer_addr().is_ok() {
            return Ok(socket.into());
        }
        if stop.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connecting to {addr} timed out")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP stream whose reads and writes give up after [`SLICE`] and are
/// retried here until data moves, the cancel flag is set, or no byte has
/// moved for the read timeout.
#[derive(Debug)]
struct SlicedTcp {
    stream: TcpStream,
    buffers: LazyBuffers,
    stop: Arc<AtomicBool>,
    read_timeout: Duration,
}

impl SlicedTcp {
    /// Runs `op` until it moves data; `Ok(0)` is the peer closing.
    fn retry(
        &mut self,
        mut op: impl FnMut(&mut TcpStream, &mut LazyBuffers) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let deadline = Instant::now() + self.read_timeout;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(stopped());
            }
            match op(&mut self.stream, &mut self.buffers) {
                Ok(n) => return Ok(n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no data for {} ms", self.read_timeout.as_millis()),
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Transport for SlicedTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, _timeout: NextTimeout) -> Result<(), ureq::Error> {
        let mut sent = 0;
        while sent < amount {
            let n = self.retry(|stream, buffers| stream.write(&buffers.output()[sent..amount]))?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero).into());
            }
            sent += n;
        }
        Ok(())
    }

    fn await_input(&mut self, _timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let n = self.retry(|stream, buffers| stream.read(buffers.input_append_buf()))?;
        self.buffers.input_appended(n);
        Ok(n > 0)
    }

    fn is_open(&mut self) -> bool {
        // A pooled connection is reused only if the server has sent nothing
        // unasked and not closed it.
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut probe = [0u8; 1];
        let open = matches!(self.stream.read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        open && self.stream.set_nonblocking(false).is_ok()
    }
}
