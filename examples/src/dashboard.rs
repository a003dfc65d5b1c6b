//! A live dashboard of a link: an [`EventRecorder`] on a client, streamed
//! as Server-Sent Events to a small self-contained HTML page.
//!
//! ```text
//!  LinkClient::events() ──► EventRecorder ──► snapshots (watch)
//!                                                │
//!  GET /events  (text/event-stream) ◄── `data: <snapshot json>\n\n` per snapshot
//!  GET /snapshot (application/json) ◄── one snapshot on demand
//!  GET /        (text/html)         ──► EventSource("/events") ──► peers + event log
//! ```
//!
//! The first event of a stream is a fresh snapshot; then one per recorder
//! push (membership changes and heartbeats). Each snapshot is
//! `{connected, ready, self, peers, statuses, startedAt, health, eventLog, at, reason}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures_util::{Stream, StreamExt, stream};
use link::CancellationToken;
use link::LinkClient;
use link::helpers::recorder::{EventRecorder, RecorderOptions, Snapshot};
use tokio::task::JoinHandle;

use crate::Result;

/// The page served at `/`.
pub const PAGE: &str = include_str!("dashboard.html");

/// Snapshot push interval besides membership changes.
const HEARTBEAT: Duration = Duration::from_secs(5);

struct AppState {
    recorder: EventRecorder,
    stop: CancellationToken,
}

/// A running dashboard; [`shutdown`](Self::shutdown) stops it.
#[derive(Debug)]
pub struct DashboardHandle {
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl DashboardHandle {
    /// Ends every event stream, stops serving, and waits for the server.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.cancel();
        self.task.await??;
        Ok(())
    }
}

/// Serves the dashboard of `client` on `addr` (port 0 picks one); the
/// bound address and a handle to stop it. Records `client`'s events from
/// now on.
pub async fn serve(addr: SocketAddr, client: &LinkClient) -> Result<(SocketAddr, DashboardHandle)> {
    let recorder = EventRecorder::new(
        client,
        RecorderOptions::default().heartbeat(Some(HEARTBEAT)),
    );
    let stop = CancellationToken::new();
    let state = Arc::new(AppState {
        recorder,
        stop: stop.clone(),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/snapshot", get(snapshot))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!("dashboard on http://{local}/");
    Ok((local, DashboardHandle { stop, task }))
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn snapshot(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        to_json(&state.recorder.snapshot()),
    )
}

async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut pushes = state.recorder.subscribe();
    // What is pushed from now on; the first event is a fresh snapshot.
    pushes.borrow_and_update();
    let first = stream::once(std::future::ready(state.recorder.snapshot()));
    let later = stream::unfold(pushes, |mut rx| async move {
        rx.changed().await.ok()?;
        let snapshot = (**rx.borrow_and_update()).clone();
        Some((snapshot, rx))
    });
    let events = first
        .chain(later)
        .map(|s| Ok(Event::default().data(to_json(&s))))
        .take_until(state.stop.clone().cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::default())
}

fn to_json(snapshot: &Snapshot) -> String {
    serde_json::to_string(snapshot).unwrap_or_else(|e| {
        tracing::error!("snapshot not serialisable: {e}");
        "{}".to_owned()
    })
}
