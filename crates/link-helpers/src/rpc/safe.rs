//! [`SafePublisher`] and [`SafeSend`]: fire-and-forget that never fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use link_client::{LinkClient, LinkError};
use link_protocol::wire_safe;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Default)]
struct Once {
    warned: AtomicBool,
}

fn report(once: &Once, op: &str, target: &str, result: Result<(), LinkError>) -> bool {
    let Err(e) = result else {
        return true;
    };
    let code = e.code();
    match &e {
        LinkError::NotReady { .. } => {
            tracing::debug!(op, target, code, "skipped: {e}");
        }
        LinkError::Backpressure { .. } => {
            tracing::warn!(op, target, code, "dropped: {e}");
        }
        LinkError::FeatureUnsupported { .. } => {
            if once.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!(op, target, code, "skipped: {e}");
            } else {
                tracing::warn!(
                    op,
                    target,
                    code,
                    "skipped: {e} (further skips are logged at debug)"
                );
            }
        }
        _ => {
            tracing::error!(op, target, code, "not sent: {e}");
        }
    }
    false
}

/// Publishes without ever failing. Cheap to clone.
///
/// Each call returns `true` when the message was queued and `false` when
/// it was skipped, with a log line instead of an error:
///
/// | failure | log level |
/// |---|---|
/// | `LINK_NOT_READY` (disabled, stopped) | `debug` |
/// | `BACKPRESSURE` (outbox full) | `warn` |
/// | `FEATURE_UNSUPPORTED` | `warn` the first time per wrapper, then `debug` |
/// | `INVALID_ARGUMENT` and any other error (a bug in the caller) | `error` |
///
/// While the link is reconnecting, `publish` and `send` queue in the
/// client's outbox and succeed.
#[derive(Clone, Debug)]
pub struct SafePublisher {
    client: LinkClient,
    once: Arc<Once>,
}

impl SafePublisher {
    /// Wraps `client`.
    pub fn new(client: LinkClient) -> Self {
        Self {
            client,
            once: Arc::default(),
        }
    }

    /// Publishes `payload` on `topic`; `false` if it was skipped.
    pub fn publish(&self, topic: &str, payload: Value) -> bool {
        report(
            &self.once,
            "publish",
            topic,
            self.client.publish(topic, payload),
        )
    }

    /// Serialises and publishes; `false` if it was skipped.
    pub fn publish_typed<T: Serialize + ?Sized>(&self, topic: &str, payload: &T) -> bool {
        report(
            &self.once,
            "publish",
            topic,
            self.client.publish_typed(topic, payload),
        )
    }
}

/// Sends direct messages without ever failing, with the same rules as
/// [`SafePublisher`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SafeSend {
    client: LinkClient,
    once: Arc<Once>,
}

impl SafeSend {
    /// Wraps `client`.
    pub fn new(client: LinkClient) -> Self {
        Self {
            client,
            once: Arc::default(),
        }
    }

    /// Sends `direct_type` to `to`; `false` if it was skipped.
    pub fn send(&self, to: &str, direct_type: &str, data: Option<Value>) -> bool {
        report(
            &self.once,
            "send",
            to,
            self.client.send(to, direct_type, data),
        )
    }

    /// Serialises `data` and sends it; `false` if it was skipped.
    pub fn send_typed<T: Serialize + ?Sized>(&self, to: &str, direct_type: &str, data: &T) -> bool {
        let data = wire_safe::to_value(data).map_err(|e| LinkError::InvalidArgument(e.to_string()));
        let result = data.and_then(|d| self.client.send(to, direct_type, Some(d)));
        report(&self.once, "send", to, result)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use link_client::ClientConfig;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Records (level, message) of every event.
    #[derive(Clone, Default)]
    struct Levels(Arc<Mutex<Vec<(Level, String)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Levels {
        fn on_event(&self, e: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Msg(String);
            impl tracing::field::Visit for Msg {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0 = format!("{v:?}");
                    }
                }
            }
            let mut m = Msg(String::new());
            e.record(&mut m);
            self.0.lock().unwrap().push((*e.metadata().level(), m.0));
        }
    }

    fn unsupported() -> LinkError {
        LinkError::FeatureUnsupported {
            feature: "topics",
            op: "publish",
        }
    }

    #[test]
    fn feature_unsupported_warns_once_then_debugs() {
        let levels = Levels::default();
        let sub = tracing_subscriber::registry().with(levels.clone());
        tracing::subscriber::with_default(sub, || {
            let once = Once::default();
            assert!(!report(&once, "publish", "t", Err(unsupported())));
            assert!(!report(&once, "publish", "t", Err(unsupported())));
            assert!(report(&once, "publish", "t", Ok(())));
            assert!(!report(
                &once,
                "publish",
                "t",
                Err(LinkError::Backpressure {
                    msg_type: "topic.message".into(),
                    to: String::new(),
                    outbox_bytes: 10,
                    max_outbox_bytes: 10,
                    buffered_amount: 0,
                    rpc_type: None,
                    id: None,
                })
            ));
            assert!(!report(
                &once,
                "publish",
                "t",
                Err(LinkError::InvalidArgument("bad".into()))
            ));
        });
        let got: Vec<Level> = levels.0.lock().unwrap().iter().map(|(l, _)| *l).collect();
        assert_eq!(got, [Level::WARN, Level::DEBUG, Level::WARN, Level::ERROR]);
    }

    #[tokio::test]
    async fn skips_instead_of_failing_on_a_disabled_or_stopped_link() {
        let disabled = LinkClient::new(ClientConfig::builder().build().unwrap());
        let p = SafePublisher::new(disabled.clone());
        assert!(!p.publish("news", serde_json::json!(1)));
        assert!(!p.publish_typed("news", &[1, 2]));
        assert!(!p.publish("bad topic!", serde_json::json!(1)));
        let s = SafeSend::new(disabled);
        assert!(!s.send("beta", "ping", None));
        assert!(!s.send_typed("beta", "ping", &f64::NAN));
    }
}
