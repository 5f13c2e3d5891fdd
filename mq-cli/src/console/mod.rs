//! `mq console`: a web console over every backend at once, served by the
//! `mq` binary itself (the page, its script and its style are compiled in).
//!
//! It shows each backend's topics with partitions and lag, a live view of
//! a group's lag per partition, a message browser with search over a
//! bounded window, dead letters with their headers, and a live tail. With
//! `--allow-actions` it also redrives and purges dead letters and produces
//! test messages; each such request needs the token printed at start.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mq_console::ConsoleError> {
//! use mq_console::{Backend, Console, Settings};
//! let client = mq::connect("memory://demo").await?;
//! let console = Console::start(
//!     vec![Backend::new("memory://demo", client)],
//!     Settings::new("127.0.0.1:0".parse().unwrap()).with_actions(true),
//! )
//! .await?;
//! println!("open {}", console.url());
//! console.stop().await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod api;
mod auth;
mod dead_letters;
mod error;
mod tail;
mod views;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;

/// `mq console`: what to show and where to serve it.
#[derive(clap::Args, Clone, Debug)]
pub struct ConsoleArgs {
    /// Backend URL; repeat it to show several backends at once.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// Address to serve the console on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Enables redrive, purge and produce; each needs the printed token.
    #[arg(long)]
    pub allow_actions: bool,
    /// Allows a `--listen` address other than loopback. Anyone who can
    /// reach it can then read every backend's messages.
    #[arg(long)]
    pub allow_remote: bool,
}

/// Why the console could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// No `--url` was given.
    #[error("no backend: pass --url at least once")]
    NoBackend,
    /// `--listen` names a non-loopback address without `--allow-remote`.
    #[error(
        "refusing to listen on {0}: not a loopback address \
         (pass --allow-remote to serve other hosts)"
    )]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// A backend could not be opened; `url` has its secrets redacted.
    #[error("cannot open {url}: {source}")]
    Connect {
        /// The backend's URL, secrets redacted.
        url: String,
        /// Why it failed.
        source: mq::Error,
    },
    /// A backend failed while closing.
    #[error(transparent)]
    Mq(#[from] mq::Error),
    /// The HTTP server stopped with an error.
    #[error("the console server failed: {0}")]
    Serve(std::io::Error),
}

/// One backend the console shows: a client and the name it goes by.
#[derive(Debug)]
pub struct Backend {
    label: String,
    client: mq::Client,
    /// Dead-letter reads and redrives go through one consumer group per
    /// dead-letter topic; two at once would split its letters between
    /// them, so the console runs them one at a time per backend.
    dead_letter_lock: Mutex<()>,
}

impl Backend {
    /// `client`, shown as `label`, which must hold no secrets: pass a
    /// [`mq::Config`]'s `Display` form, which redacts them.
    pub fn new(label: impl Into<String>, client: mq::Client) -> Self {
        Backend {
            label: label.into(),
            client,
            dead_letter_lock: Mutex::new(()),
        }
    }
}

/// Where and how the console serves.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    listen: SocketAddr,
    allow_actions: bool,
    allow_remote: bool,
}

impl Settings {
    /// Read-only, on `listen`, which must be a loopback address.
    pub fn new(listen: SocketAddr) -> Self {
        Settings {
            listen,
            allow_actions: false,
            allow_remote: false,
        }
    }

    /// Enables the actions (redrive, purge, produce), behind a token.
    pub fn with_actions(mut self, allow: bool) -> Self {
        self.allow_actions = allow;
        self
    }

    /// Allows a non-loopback `listen` address.
    pub fn with_remote(mut self, allow: bool) -> Self {
        self.allow_remote = allow;
        self
    }
}

/// What every handler shares.
pub(crate) struct State {
    pub(crate) backends: Vec<Backend>,
    pub(crate) guard: auth::Guard,
}

pub(crate) type Shared = Arc<State>;

/// A running console. Dropping it leaves the server running until the
/// runtime ends; [`stop`](Console::stop) ends it.
#[derive(Debug)]
pub struct Console {
    addr: SocketAddr,
    token: Option<String>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Console {
    /// Binds `settings.listen` and serves `backends` in the background.
    pub async fn start(
        backends: Vec<Backend>,
        settings: Settings,
    ) -> Result<Console, ConsoleError> {
        if backends.is_empty() {
            return Err(ConsoleError::NoBackend);
        }
        if !settings.allow_remote && !settings.listen.ip().is_loopback() {
            return Err(ConsoleError::NotLoopback(settings.listen));
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ConsoleError::Listen {
                addr: settings.listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ConsoleError::Listen {
                addr: settings.listen,
                source,
            })?;
        let token = settings.allow_actions.then(auth::new_token);
        let guard = auth::Guard::new(addr, token.clone(), settings.allow_remote);
        let state = Arc::new(State { backends, guard });
        let app = router(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Console {
            addr,
            token,
            stop,
            server,
        })
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token actions need; `None` when read-only.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The page's address, with the token in its fragment when actions are
    /// on (a fragment never leaves the browser: no log or proxy sees it).
    pub fn url(&self) -> String {
        match &self.token {
            Some(token) => format!("http://{}/#token={token}", self.addr),
            None => format!("http://{}/", self.addr),
        }
    }

    /// Stops serving, letting requests in flight finish.
    pub async fn stop(self) -> Result<(), ConsoleError> {
        let _ = self.stop.send(());
        match self.server.await {
            Ok(result) => result.map_err(ConsoleError::Serve),
            Err(join) => Err(ConsoleError::Serve(std::io::Error::other(join))),
        }
    }
}

/// `mq console`: opens every `--url`, serves until Ctrl-C, closes them.
pub async fn run(args: ConsoleArgs) -> Result<(), ConsoleError> {
    let mut backends = Vec::new();
    for url in &args.urls {
        // Only the redacted form is ever shown: in errors, the terminal
        // and the page.
        let label = mq::Config::from_url(url)
            .map(|config| config.to_string())
            .map_err(|source| ConsoleError::Connect {
                url: "(unparsable URL)".into(),
                source,
            })?;
        let client = mq::connect(url.as_str())
            .await
            .map_err(|source| ConsoleError::Connect {
                url: label.clone(),
                source,
            })?;
        backends.push(Backend::new(label, client));
    }
    let clients: Vec<mq::Client> = backends.iter().map(|b| b.client.clone()).collect();
    let settings = Settings::new(args.listen)
        .with_actions(args.allow_actions)
        .with_remote(args.allow_remote);
    let console = Console::start(backends, settings).await?;
    eprintln!("mq console: serving {} backend(s)", clients.len());
    if console.token().is_some() {
        eprintln!("actions enabled: open the address below (its #token= part unlocks them)");
    } else {
        eprintln!("read-only (start with --allow-actions to redrive, purge and produce)");
    }
    println!("{}", console.url());
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("mq console: stopping");
    let served = console.stop().await;
    let mut closed = Ok(());
    for client in clients {
        closed = closed.and(client.close().await);
    }
    served.and(closed.map_err(ConsoleError::from))
}

fn router(state: Shared) -> Router {
    let api = Router::new()
        .route("/info", get(api::info))
        .route("/backends/{b}/topics", get(api::topics))
        .route("/backends/{b}/topics/{topic}/groups", get(api::groups))
        .route(
            "/backends/{b}/topics/{topic}/messages",
            get(api::browse).post(api::produce),
        )
        .route("/backends/{b}/topics/{topic}/tail", get(tail::tail))
        .route("/backends/{b}/dead-letters", get(dead_letters::list))
        .route(
            "/backends/{b}/dead-letters/{dlq}",
            get(dead_letters::letters),
        )
        .route(
            "/backends/{b}/dead-letters/{dlq}/redrive",
            post(dead_letters::redrive),
        )
        .route(
            "/backends/{b}/dead-letters/{dlq}/purge",
            post(dead_letters::purge),
        )
        .fallback(error::no_such_api)
        .method_not_allowed_fallback(error::wrong_method);
    Router::new()
        .route("/", get(asset_page))
        .route("/app.js", get(asset_script))
        .route("/style.css", get(asset_style))
        .nest("/api", api)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::protect,
        ))
        .with_state(state)
}

async fn asset_page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("assets/index.html"),
    )
}

async fn asset_script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
}

async fn asset_style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
}
