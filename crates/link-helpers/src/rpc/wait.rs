//! [`wait_for_peer`]: wait until a kind is in the client's peer list.

use std::time::Duration;

use link_client::{LinkClient, LinkEvent};
use link_protocol::PeerInfo;
use tokio::sync::broadcast::error::RecvError;

/// Why [`wait_for_peer`] gave up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The peer did not show up in time.
    #[error("peer {kind} did not appear within {timeout:?}")]
    Timeout {
        /// The kind waited for.
        kind: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The link stopped (or will not reconnect) before the peer appeared.
    #[error("link stopped while waiting for peer {kind}")]
    Stopped {
        /// The kind waited for.
        kind: String,
    },
    /// The client is disabled (no url, secret or kind).
    #[error("link is disabled")]
    Disabled,
}

impl WaitError {
    /// Stable code: `WAIT_TIMEOUT`, `WAIT_STOPPED` or `LINK_NOT_READY`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "WAIT_TIMEOUT",
            Self::Stopped { .. } => "WAIT_STOPPED",
            Self::Disabled => "LINK_NOT_READY",
        }
    }
}

fn find(client: &LinkClient, kind: &str, require_connected: bool) -> Option<PeerInfo> {
    client
        .peers()
        .into_iter()
        .find(|p| p.kind == kind && (p.connected || !require_connected))
}

/// Resolves with `kind`'s entry once it is in the peer list (with
/// `connected: true` if `require_connected`). Event-driven: it checks the
/// list now, then again on each membership event. It does not start the
/// client. `timeout: None` waits as long as the link lives; a link that
/// stops or gives up reconnecting ends the wait with
/// [`WaitError::Stopped`].
pub async fn wait_for_peer(
    client: &LinkClient,
    kind: &str,
    timeout: Option<Duration>,
    require_connected: bool,
) -> Result<PeerInfo, WaitError> {
    if client.is_disabled() {
        return Err(WaitError::Disabled);
    }
    let stopped = || WaitError::Stopped {
        kind: kind.to_owned(),
    };
    // Subscribe before looking, so an update between the two is not lost.
    let mut events = client.events();
    let wait = async {
        loop {
            if let Some(p) = find(client, kind, require_connected) {
                return Ok(p);
            }
            if client.health().stopped {
                return Err(stopped());
            }
            // Wait for the next event that can change the answer.
            loop {
                match events.recv().await {
                    Ok(e) => match &*e {
                        LinkEvent::PeerConnect(_)
                        | LinkEvent::PeerReplaced { .. }
                        | LinkEvent::PeerDisconnect(_)
                        | LinkEvent::Ready { .. } => break,
                        LinkEvent::Disconnect { will_reconnect, .. } if !will_reconnect => {
                            return Err(stopped());
                        }
                        LinkEvent::ReconnectExhausted { .. } => return Err(stopped()),
                        _ => {}
                    },
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Err(stopped()),
                }
            }
        }
    };
    match timeout {
        None => wait.await,
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .map_err(|_| WaitError::Timeout {
                kind: kind.to_owned(),
                timeout: t,
            })?,
    }
}
