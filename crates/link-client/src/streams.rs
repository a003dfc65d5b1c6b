//! What the application holds to receive: [`Subscription`] (a stream of
//! one topic), [`TopicHandler`] (a callback on one topic) and
//! [`DirectStream`] (direct messages). Streams are bounded; when one is
//! full the link drops messages for it (and reports `SlowConsumer`) rather
//! than stalling everyone else.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use link_protocol::CanonicalData;
use link_protocol::codes::msg_type;
use tokio::sync::mpsc;

use crate::inner::{DirectMessage, Inner, KeepAlive, TopicMessage};

/// A stream's or handler's place in a topic: leaving it (on drop) removes
/// it, and the topic's last one sends `topic.unsubscribe`.
struct TopicMembership {
    inner: Arc<Inner>,
    _keep_alive: Arc<KeepAlive>,
    topic: String,
    id: u64,
}

impl Drop for TopicMembership {
    fn drop(&mut self) {
        leave_topic(&self.inner, &self.topic, self.id);
    }
}

/// Messages of one topic. Dropping it unsubscribes it; dropping the last
/// subscription of a topic sends `topic.unsubscribe`. Hold it for as long
/// as you want the messages (`let _ = link.subscribe(..)` unsubscribes at
/// once; `let _sub = ...` keeps it to the end of the scope).
///
/// Discarding one is a `must_use` warning:
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn boot(link: &link_client::LinkClient) -> Result<(), link_client::LinkError> {
///     link.subscribe("news")?; // dropped here: unsubscribed at once
///     Ok(())
/// }
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// fn boot(link: &link_client::LinkClient) -> Result<(), link_client::LinkError> {
///     let _news = link.subscribe("news")?; // held to the end of the scope
///     Ok(())
/// }
/// ```
#[must_use = "dropping a Subscription unsubscribes it: hold it (`let _sub = ...`) for as long as you want messages"]
pub struct Subscription {
    member: TopicMembership,
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
            member: TopicMembership {
                inner,
                _keep_alive: keep_alive,
                topic,
                id,
            },
            rx,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.member.topic
    }

    /// The next message (`None` once the subscription can no longer receive).
    pub async fn recv(&mut self) -> Option<TopicMessage> {
        self.rx.recv().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topic", &self.topic())
            .finish()
    }
}

impl Stream for Subscription {
    type Item = TopicMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// A handler registered with
/// [`LinkClient::subscribe_with`](crate::LinkClient::subscribe_with).
/// Dropping it (or calling [`unsubscribe`](Self::unsubscribe)) removes the
/// handler; removing the last stream or handler of a topic sends
/// `topic.unsubscribe`.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn boot(link: &link_client::LinkClient) -> Result<(), link_client::LinkError> {
///     link.subscribe_with("news", |_| {})?; // dropped here: the handler never runs
///     Ok(())
/// }
/// ```
#[must_use = "dropping a TopicHandler unsubscribes its handler: hold it (`let _handler = ...`) for as long as it should run"]
pub struct TopicHandler {
    member: TopicMembership,
}

impl TopicHandler {
    pub(crate) fn new(
        inner: Arc<Inner>,
        keep_alive: Arc<KeepAlive>,
        topic: String,
        id: u64,
    ) -> Self {
        Self {
            member: TopicMembership {
                inner,
                _keep_alive: keep_alive,
                topic,
                id,
            },
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.member.topic
    }

    /// Removes the handler (the same as dropping it). A call the driver is
    /// making at this moment still completes.
    pub fn unsubscribe(self) {}
}

impl std::fmt::Debug for TopicHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicHandler")
            .field("topic", &self.topic())
            .finish()
    }
}

/// Removes stream or handler `id` from `topic`, and unsubscribes at the hub
/// when it was the topic's last.
fn leave_topic(inner: &Inner, topic: &str, id: u64) {
    let last = {
        let mut core = inner.core();
        let Some(subs) = core.subs.get_mut(topic) else {
            return;
        };
        subs.remove(id);
        let last = subs.is_empty();
        if last {
            core.subs.remove(topic);
        }
        last && !core.stopped && inner.is_ready()
    };
    if last {
        let data = CanonicalData::new(&link_protocol::messages::topic_value(topic));
        let _ = inner.enqueue(inner.item(None, msg_type::TOPIC_UNSUBSCRIBE, None, Some(data)));
    }
}

/// Direct messages received by this client. Dropping it stops the
/// delivery to it.
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn boot(link: &link_client::LinkClient) {
///     link.directs(); // dropped here: receives nothing
/// }
/// ```
#[must_use = "dropping a DirectStream unsubscribes it from direct messages: hold it for as long as you want them"]
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
