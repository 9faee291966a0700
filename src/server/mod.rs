//! The server: pingora with the sluice proxy service (every connection under client
//! deadlines, [`crate::conn`]) and the background services (the plugins' file watchers, the
//! refresher or mirror follower, the search index's keeper, the memory trimmer), run until
//! SIGTERM or a test's stop signal.

pub mod tls;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::app::App;
use crate::config::Config;
use crate::conn::{Deadlines, Limits};
use crate::memory::resident_bytes;
use crate::proxy::SluiceProxy;

/// How soon after the last event an edit of a watched file is applied.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// How often watched files are re-read even without events.
const POLL: Duration = Duration::from_secs(5);

/// Watches the files the plugins read (the whitelist, deny files), the users file and the TLS
/// certificate while the server runs.
struct FileWatcher {
    app: Arc<App>,
    certificate: Option<Arc<tls::Certificate>>,
}

#[async_trait]
impl BackgroundService for FileWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut handles = Vec::new();
        let mut files = self.app.host.watched();
        files.push(self.app.auth.watched());
        if let Some(certificate) = &self.certificate {
            files.push(certificate.clone());
        }
        for file in files {
            let path = file.path().to_path_buf();
            match sluice_plugin_api::watch::watch_file(&path, DEBOUNCE, POLL, move |confirm| {
                file.reread(confirm)
            }) {
                Ok(handle) => handles.push(handle),
                Err(error) => tracing::error!(
                    path = %path.display(),
                    %error,
                    "cannot watch this file: edits need a restart"
                ),
            }
        }
        let _ = shutdown.changed().await;
        drop(handles);
    }
}

/// Revalidates every whitelisted packument on schedule, or follows the replication feed.
struct Refresher {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for Refresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let app = self.app.clone();
        let mut leading = shutdown.clone();
        let lead = crate::jobs::leader::lead(app.clone(), async move {
            let _ = leading.changed().await;
        });
        let work = async move {
            tokio::select! {
                _ = background_work(app) => {}
                _ = shutdown.changed() => {}
            }
        };
        // The lease is released once shutdown is asked for, after the work stopped.
        tokio::join!(lead, work);
    }
}

/// The refresh schedule, or in mirror mode with a feed the follower, as the live mode says:
/// started again whenever a live setting changes (the mode, the refresh interval).
async fn background_work(app: Arc<App>) {
    let mut changes = app.settings.changes();
    loop {
        let mirror = app.settings.mode() == crate::config::Mode::Mirror;
        let work = {
            let app = app.clone();
            async move {
                if mirror && app.config.upstream.changes.is_some() {
                    // The feed keeps every package fresh; no schedule needed.
                    crate::jobs::mirror::follow(app).await;
                } else {
                    crate::jobs::refresh::refresh_loop(app).await;
                }
            }
        };
        tokio::select! {
            _ = work => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                tracing::info!(mode = ?app.settings.mode(), refresh = ?app.settings.refresh(), "live settings changed: background work follows them");
            }
        }
    }
}

/// Every `cluster.sync`, reads the live settings and stored users again, and in a fleet
/// publishes this node's changes and takes in the others'.
struct FleetSync {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for FleetSync {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.app.sync_live().await;
            self.app.sync_fleet().await;
            tokio::select! {
                _ = tokio::time::sleep(self.app.config.cluster.sync) => {}
                _ = shutdown.changed() => break,
            }
        }
        // What this node changed last reaches the others.
        self.app.sync_fleet().await;
    }
}

/// Keeps the search index: builds it when missing, applies every changed packument, swaps in
/// a rebuilt one (`crate::search`).
struct SearchKeeper {
    app: Arc<App>,
}

#[async_trait]
impl BackgroundService for SearchKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        let journal = self
            .app
            .fleet
            .clone()
            .map(|fleet| fleet as Arc<dyn crate::search::Journal>);
        self.app
            .search
            .clone()
            .run(self.app.store.clone(), journal, stop)
            .await;
    }
}

/// Gives the heap pages freed after a burst back to the system within seconds: glibc keeps them
/// in its per-thread arenas otherwise, and RSS would stay at the burst's peak (5,000
/// connections held pingora's sessions of about 23 KiB each).
struct MemoryTrimmer;

/// How often [`MemoryTrimmer`] trims.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// How far RSS must have grown since the last trim before the next one: at a steady state
/// nothing is trimmed, so no arena is locked for it.
const TRIM_ABOVE: u64 = 8 << 20;

#[async_trait]
impl BackgroundService for MemoryTrimmer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut after_last = resident_bytes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TRIM_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            let now = resident_bytes();
            if now > after_last.saturating_add(TRIM_ABOVE) {
                let _ = tokio::task::spawn_blocking(crate::memory::release_freed_memory).await;
                after_last = resident_bytes();
            } else {
                // Follow RSS down too (the hot cache shrinking, a trim after a large render).
                after_last = after_last.min(now);
            }
        }
    }
}

/// The certificate `[server]` names, loaded (a bad one stops the start).
fn certificate(config: &Config) -> anyhow::Result<Option<Arc<tls::Certificate>>> {
    match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(Arc::new(
            tls::Certificate::load(cert, key)
                .map_err(|e| anyhow::anyhow!("{}: server.tls_cert: {e}", config.source))?,
        ))),
        _ => Ok(None),
    }
}

/// The answer to a client that did not send its request header in time, written by the
/// connection layer before it closes the connection (no session exists to write it).
static LATE_HEADER: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = "{\"error\":\"the request header did not arrive in time\"}\n";
    format!(
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

fn build(app: Arc<App>, certificate: Option<Arc<tls::Certificate>>) -> Server {
    let config = app.config.clone();
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.grace_period.as_secs().max(1)),
        // Timeouts of a second or more on tokio's timer, not pingora's wheel: pingora wraps
        // every accepted connection's handshake in a 60 s timeout, and its wheel's first
        // timer starts a thread that wakes 100 times a second for good, busy or idle.
        fast_timeout_to_tokio_threshold_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let front = SluiceProxy::new(app.clone());
    let limits = Limits {
        header: config.server.header_timeout,
        body: config.server.body_timeout,
        send: config.server.send_timeout,
    };
    let expired = app.metrics.client_timeouts.clone();
    let mut proxy = Service::new(
        "sluice".to_string(),
        Deadlines::new(Arc::new(front), limits, expired, LATE_HEADER.as_slice()),
    );
    // No L4 read buffer: pingora's default is a zeroed 64 KiB per connection, which the HTTP
    // layer's own request buffer makes redundant; without it 10,000 connections take a tenth of
    // the memory.
    let mut listener = ListenerConfig::tcp(config.server.listen.to_string())
        .l4_buffer(L4BufferSettings::default().read(0));
    if let Some(certificate) = &certificate {
        // The paths are unused: the resolver answers with the certificate in use.
        if let Ok(mut settings) = pingora::listeners::tls::TlsSettings::intermediate("", "") {
            settings.set_cert_resolver(certificate.clone());
            settings.enable_h2();
            listener = listener.tls(settings);
        }
    }
    proxy.add_listener(listener);
    server.add_service(proxy);
    server.add_service(background_service(
        "file watcher",
        FileWatcher {
            app: app.clone(),
            certificate,
        },
    ));
    server.add_service(background_service(
        "fleet sync",
        FleetSync { app: app.clone() },
    ));
    server.add_service(background_service(
        "search index",
        SearchKeeper { app: app.clone() },
    ));
    server.add_service(background_service("refresher", Refresher { app }));
    server.add_service(background_service("memory trimmer", MemoryTrimmer));
    server
}

/// Serve until SIGTERM (graceful, within `server.grace_period`) or SIGINT.
pub fn serve(app: Arc<App>) -> anyhow::Result<()> {
    let listen = app.config.server.listen;
    // Fail with a clear message rather than a panic in the listener.
    TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (server.listen)"))?;
    tracing::info!(
        %listen,
        public_url = %app.config.server.public_url,
        upstream = %crate::config::redact_url(&app.config.upstream.registry),
        store = %app.store.location(),
        "sluice serving"
    );
    let certificate = certificate(&app.config)?;
    let termination = Termination {
        in_flight: app.metrics.in_flight.clone(),
        grace: app.config.server.grace_period,
    };
    build(app, certificate).run(RunArgs {
        shutdown_signal: Box::new(termination),
    });
    Ok(())
}

/// SIGTERM: stop accepting work once the requests in flight are answered, waiting at most
/// `server.grace_period` for them — an idle server exits at once. SIGINT stops at once; SIGQUIT
/// is pingora's graceful upgrade.
struct Termination {
    in_flight: Arc<std::sync::atomic::AtomicU64>,
    grace: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for Termination {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
        ) else {
            tracing::error!("cannot listen for signals: stopping");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => return ShutdownSignal::FastShutdown,
            _ = quit.recv() => return ShutdownSignal::GracefulUpgrade,
        }
        let deadline = tokio::time::Instant::now() + self.grace;
        let busy = self.in_flight.load(std::sync::atomic::Ordering::Relaxed);
        if busy > 0 {
            tracing::info!(requests = busy, grace = ?self.grace, "SIGTERM: finishing the requests in flight");
        }
        while self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                _ = int.recv() => break,
            }
        }
        ShutdownSignal::FastShutdown
    }
}

struct ChannelSignal(tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait]
impl ShutdownSignalWatch for ChannelSignal {
    async fn recv(&self) -> ShutdownSignal {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// A server running in this process (for tests and embedding); dropping it stops it.
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// What it serves from.
    pub app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stop the server and wait for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start a server for `config` on a thread; returns once it accepts connections.
pub fn spawn(config: Config) -> anyhow::Result<Running> {
    let store = crate::store::open(&config)?;
    spawn_on(config, store)
}

/// Start a server for `config` on `store` (tests wrap the store to inject faults).
pub fn spawn_on(mut config: Config, store: crate::store::SharedStore) -> anyhow::Result<Running> {
    config.server.grace_period = Duration::ZERO;
    let addr = config.server.listen;
    let app = App::with_store(config, store)?;
    let (stop, rx) = tokio::sync::oneshot::channel();
    let certificate = certificate(&app.config)?;
    let server = build(app.clone(), certificate);
    let thread = std::thread::Builder::new()
        .name("sluice-server".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(ChannelSignal(tokio::sync::Mutex::new(Some(rx)))),
            });
        })?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if std::time::Instant::now() > deadline {
            anyhow::bail!("sluice did not start listening on {addr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Running {
        addr,
        app,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// A free port on 127.0.0.1 (bound, read, released: a small race the caller retries on).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
