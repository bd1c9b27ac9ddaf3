//! `bundler serve PATH...`: a read-only OCI distribution registry and Helm
//! chart repository served straight from the bundle files.
//!
//! Why: a site without a registry yet (the first install, or a cluster that
//! must pull its registry's own images) has nowhere to `sync` to. Rather
//! than copy images into a registry store first, `serve` reads each blob by
//! position from the bundle (or offline package) it sits in: no copy, no
//! extra disk, constant memory per client.
//!
//! Concerns, one module each: [`index`] (what is served, from the bundles),
//! [`names`] (origin names or the load-image.yaml's rewrite rules),
//! [`charts`] (the `/charts/` repository), [`routes`] (HTTP routing and the
//! distribution API), [`negotiate`] (manifest content negotiation),
//! [`blobs`] (streaming, `Range`, digest checks), [`auth`] (htpasswd),
//! [`tls`], [`log`] (access log).
pub mod auth;
pub mod blobs;
pub mod charts;
pub mod guard;
pub mod index;
pub mod log;
pub mod names;
pub mod negotiate;
pub mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::load_image::SyncConfig;
use crate::oci::media::Platform;

const SERVE_EXAMPLES: &str = "\
Examples:
  bundler serve out/ --listen 0.0.0.0:5000
  bundler serve skoala_0.28.1_amd64.tar --config load-image.yaml --listen 10.0.0.5:5000
  bundler serve out/ --tls-cert server.crt --tls-key server.key --htpasswd htpasswd --verify --json";

#[derive(clap::Args, Debug)]
#[command(after_help = SERVE_EXAMPLES)]
pub struct ServeArgs {
    /// Bundles (*.bundle.tar), offline packages, or directories of them; read in place
    /// (default with --config: its source.intermediateBundlesPath).
    #[arg(required_unless_present = "config")]
    pub paths: Vec<PathBuf>,
    /// Address to listen on (port 0: any free port, printed on the start line).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: String,
    /// PEM certificate (chain) for HTTPS; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS; needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require HTTP basic auth against this htpasswd file (bcrypt entries, htpasswd -B).
    #[arg(long)]
    pub htpasswd: Option<PathBuf>,
    /// Name images by this load-image.yaml's rewrite rules and relocate charts for it, as sync would.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Platform served by tag to clients that do not accept an index.
    #[arg(long, default_value = "linux/amd64")]
    pub platform: String,
    /// Check every blob's digest before serving (otherwise each is checked on first use).
    #[arg(long)]
    pub verify: bool,
    /// JSON start line on stdout and JSON access-log lines on stderr.
    #[arg(long)]
    pub json: bool,
}

/// The start line: where the server listens and what it serves.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct StartLine<'a> {
    address: String,
    url: String,
    images: &'a [index::ServedImage],
    charts: Vec<String>,
    /// `original` (as packed, not relocated: without --config) or
    /// `relocated` (for --config's rewrite rules).
    charts_are: &'static str,
    bundles: Vec<String>,
}

pub async fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let platform = Platform::parse(&args.platform)
        .map_err(|e| crate::error::input_error(format!("--platform: {e}")))?;
    let config = match &args.config {
        Some(p) => Some(SyncConfig::load(p)?),
        None => None,
    };
    let naming = match &config {
        Some(c) => names::Naming::Rules(c.rewrite.clone()),
        None => names::Naming::Origin,
    };
    let auth = match &args.htpasswd {
        Some(p) => Some(Arc::new(auth::Htpasswd::load(p).map_err(bad_input)?)),
        None => None,
    };
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => Some(tls::acceptor(c, k).map_err(bad_input)?),
        _ => None,
    };
    let paths = match (&config, args.paths.is_empty()) {
        (Some(c), true) => match &c.source {
            crate::config::load_image::Source::Bundles(p) => vec![p.clone()],
            crate::config::load_image::Source::Repo { .. } => {
                return Err(crate::error::input_error(format!(
                    "{}: source is a chart repository; give the bundles to serve as PATH",
                    c.file.display()
                )))
            }
        },
        _ => args.paths.clone(),
    };
    // source.requireSignature of the config holds for what is served too.
    let key = match config
        .as_ref()
        .and_then(|c| c.package_signature_key.clone())
    {
        Some(k) => Some((
            crate::package::sign::load_verify_key(&k, "source.signatureKey").map_err(bad_input)?,
            k,
        )),
        None => None,
    };
    let locations = index::list_bundles(&paths, key).map_err(bad_input)?;
    if locations.is_empty() {
        return Err(crate::error::input_error(format!(
            "no *.bundle.tar found in {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let created = crate::chart::package::now_rfc3339();
    let mut catalog = index::Catalog::default();
    let mut charts = charts::ChartRepo::default();
    let verifier = blobs::Verifier::default();
    let mut labels = Vec::new();
    for loc in &locations {
        let reader = loc
            .open()
            .context("the bundle was refused; nothing is served")?;
        if args.verify {
            let progress = crate::progress::Progress::auto(args.json);
            crate::bundle::verify::verify(&reader, &progress).with_context(|| {
                format!(
                    "bundle {} failed verification; nothing is served",
                    reader.label
                )
            })?;
            progress.finish();
        } else {
            // The files bundle.json lists (the chart's among them) are
            // checked as sync checks them: a chart sync would refuse is
            // not served either.
            crate::sync::bundles::check_small_files(&reader).with_context(|| {
                format!("bundle {} was refused; nothing is served", reader.label)
            })?;
        }
        catalog.add_bundle(&reader, &naming)?;
        charts.add_bundle(&reader, config.as_ref(), &created)?;
        labels.push(reader.label.clone());
    }
    charts.finish(&created);
    if args.verify {
        for (d, loc) in &catalog.blobs {
            verifier.mark_ok(d, &catalog.sources[loc.source].file);
        }
    }

    let addr: SocketAddr = args.listen.parse().map_err(|e| {
        crate::error::input_error(format!(
            "--listen {:?}: {e} (expected HOST:PORT, e.g. 0.0.0.0:5000)",
            args.listen
        ))
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let start = StartLine {
        address: local.to_string(),
        url: format!("{scheme}://{local}"),
        images: &catalog.images,
        charts: charts
            .charts
            .iter()
            .map(|(n, v)| format!("{n}-{v}"))
            .collect(),
        charts_are: if config.is_some() {
            "relocated"
        } else {
            "original"
        },
        bundles: labels,
    };
    if args.json {
        println!("{}", serde_json::to_string(&start)?);
    } else {
        // Which charts /charts/ holds: without --config they still name
        // the images' original registries (issue 22).
        let which = match &args.config {
            Some(c) => format!("relocated for {}", c.display()),
            None => "the original charts, not relocated: their images still name their \
                     original registries; --config load-image.yaml serves them relocated"
                .to_string(),
        };
        println!(
            "serving {} images and {} charts from {} bundles on {}://{} (charts: {}://{}/charts, {which})",
            start.images.len(),
            start.charts.len(),
            start.bundles.len(),
            scheme,
            local,
            scheme,
            local
        );
    }
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let state = Arc::new(routes::State {
        catalog,
        charts,
        verifier,
        auth,
        log: log::AccessLog { json: args.json },
        platform,
    });
    accept_loop(listener, acceptor, state).await
}

/// A problem with what the command line names (files, flags): exit 2.
fn bad_input(e: anyhow::Error) -> anyhow::Error {
    crate::error::input_error(format!("{e:#}"))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<routes::State>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let limits = Arc::new(guard::Limits::default());
    let idle = guard::idle_timeout();
    loop {
        let (stream, remote) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving
                    // the connections there are, try again shortly.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let Some(slot) = limits.admit(remote.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Silent since accept: closed (see guard). `peek` waits for a
            // real byte (readiness alone may be reported early).
            let mut first = [0u8; 1];
            match tokio::time::timeout(idle, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let svc =
                hyper::service::service_fn(move |req| routes::handle(state.clone(), remote, req));
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(idle);
            let result = match acceptor {
                Some(tls) => match tokio::time::timeout(idle, tls.accept(stream)).await {
                    Ok(Ok(s)) => builder.serve_connection(TokioIo::new(s), svc).await,
                    Ok(Err(e)) => {
                        tracing::info!("TLS handshake with {remote} failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
            };
            if let Err(e) = result {
                tracing::debug!("connection from {remote}: {e}");
            }
        });
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
