//! Streams handed to the application: [`Subscription`] (one topic) and
//! [`DirectStream`] (direct messages). Both are bounded; when one is full
//! the link drops messages for it (and reports `SlowConsumer`) rather than
//! stalling everyone else.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use link_protocol::CanonicalData;
use link_protocol::codes::msg_type;
use tokio::sync::mpsc;

use crate::client::KeepAlive;
use crate::inner::{DirectMessage, Inner, TopicMessage};

/// Messages of one topic. Dropping the last subscription of a topic sends
/// `topic.unsubscribe`.
pub struct Subscription {
    inner: Arc<Inner>,
    _keep_alive: Arc<KeepAlive>,
    topic: String,
    id: u64,
    rx: mpsc::Receiver<TopicMessage>,
}

impl Subscription {
    pub(crate) fn new(
        inner: Arc<Inner>,
        keep_alive: Arc<KeepAlive>,
        topic: String,
        id: u64,
        rx: mpsc::Receiver<TopicMessage>,
    ) -> Self {
        Self {
            inner,
            _keep_alive: keep_alive,
            topic,
            id,
            rx,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next message (`None` once the subscription can no longer receive).
    pub async fn recv(&mut self) -> Option<TopicMessage> {
        self.rx.recv().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Stream for Subscription {
    type Item = TopicMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let last = {
            let mut core = self.inner.core();
            let Some(sinks) = core.subs.get_mut(&self.topic) else {
                return;
            };
            sinks.retain(|s| s.id != self.id);
            let last = sinks.is_empty();
            if last {
                core.subs.remove(&self.topic);
            }
            last && !core.stopped && self.inner.is_ready()
        };
        if last {
            let data = CanonicalData::new(&link_protocol::messages::topic_value(&self.topic));
            let _ = self.inner.enqueue(self.inner.item(
                None,
                msg_type::TOPIC_UNSUBSCRIBE,
                None,
                Some(data),
            ));
        }
    }
}

/// Direct messages received by this client.
pub struct DirectStream {
    _keep_alive: Arc<KeepAlive>,
    rx: mpsc::Receiver<DirectMessage>,
}

impl std::fmt::Debug for DirectStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectStream").finish_non_exhaustive()
    }
}

impl DirectStream {
    pub(crate) fn new(keep_alive: Arc<KeepAlive>, rx: mpsc::Receiver<DirectMessage>) -> Self {
        Self {
            _keep_alive: keep_alive,
            rx,
        }
    }

    /// The next direct message.
    pub async fn recv(&mut self) -> Option<DirectMessage> {
        self.rx.recv().await
    }
}

impl Stream for DirectStream {
    type Item = DirectMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
