//! One call to set up `tracing` for a service: a level filter from the
//! environment or an option, human or JSON lines, and an optional
//! [`ErrorSink`] fed every `ERROR` event.
//!
//! ```text
//!  tracing::info!(..) ──► Registry ──┬─► EnvFilter ─► fmt (human | json) ─► stderr / writer
//!                                    └─► ERROR only ─► ErrorSinkLayer ─► callback / channel
//! ```
//!
//! Precedence of the level filter (any `EnvFilter` directive such as
//! `info,link_client=debug`): `LINK_LOG`, then `RUST_LOG`, then
//! [`LogOptions::level`], then `info` when [`LogOptions::production`] is set
//! and `debug` otherwise. The format is `LINK_LOG_FORMAT` (`human` or
//! `json`) if set, else [`LogOptions::format`] (default human).
//!
//! Human lines read `[HH:MM:SS.mmm] [context] LEVEL target: message k=v`
//! (time of day in UTC); JSON lines are one object per event with
//! `time` (Unix ms), `level`, `context`, `target`, `msg`, `spans` and the
//! event's fields.
//!
//! ```no_run
//! use link_helpers::logging::{self, ErrorSink, LogOptions};
//!
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let (sink, mut errors) = ErrorSink::channel(64);
//! logging::init(LogOptions::new().context("billing").production(true).error_sink(sink))?;
//! tracing::info!(port = 8080, "listening");
//! # drop(errors.try_recv());
//! # Ok(())
//! # }
//! ```

use std::cell::Cell;
use std::fmt;
use std::io::IsTerminal;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::env::{EnvSource, ProcessEnv};
use crate::wall_clock::{hms_millis, now_ms};

/// Output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `[HH:MM:SS.mmm] [context] LEVEL target: message k=v`.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Why logging could not be set up.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// A global subscriber is already installed (e.g. a second `init`).
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
    /// The level filter does not parse.
    #[error("invalid log filter {value:?} from {source_name}: {reason}")]
    InvalidFilter {
        /// `LINK_LOG`, `RUST_LOG` or `LogOptions::level`.
        source_name: String,
        /// The directive.
        value: String,
        /// The parser's message.
        reason: String,
    },
    /// `LINK_LOG_FORMAT` is neither `human` nor `json`.
    #[error("invalid LINK_LOG_FORMAT {0:?} (use human or json)")]
    InvalidFormat(String),
}

impl LoggingError {
    /// Stable code.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::AlreadyInitialized => "LOG_ALREADY_INITIALIZED",
            Self::InvalidFilter { .. } => "LOG_INVALID_FILTER",
            Self::InvalidFormat(_) => "LOG_INVALID_FORMAT",
        }
    }
}

/// One `ERROR` event, as handed to an [`ErrorSink`].
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRecord {
    /// Unix ms when it was logged.
    pub at_ms: u64,
    /// The event's target (module path by default).
    pub target: String,
    /// The `message` field (empty if none).
    pub message: String,
    /// Every other field, as JSON.
    pub fields: Map<String, Value>,
    /// The configured context, if any.
    pub context: Option<String>,
}

type SinkFn = Arc<dyn Fn(&ErrorRecord) + Send + Sync>;

/// Receives every `ERROR` event. A sink that panics or whose channel is
/// full or closed loses that record; the failure never reaches the code
/// that logged. Errors logged *from inside* the sink are not fed back to it.
#[derive(Clone)]
pub struct ErrorSink(SinkFn);

impl fmt::Debug for ErrorSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrorSink(..)")
    }
}

impl ErrorSink {
    /// Calls `f` for every error event, on the logging thread: keep it quick.
    pub fn callback<F: Fn(&ErrorRecord) + Send + Sync + 'static>(f: F) -> Self {
        Self(Arc::new(f))
    }

    /// A bounded channel of records; when it is full, new records are dropped.
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ErrorRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sink = Self::callback(move |r: &ErrorRecord| {
            let _ = tx.try_send(r.clone());
        });
        (sink, rx)
    }
}

thread_local! {
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// A [`Layer`] feeding `ERROR` events to an [`ErrorSink`]; add it to your
/// own subscriber if you do not use [`init`]. It applies no filter itself:
/// wrap it with `.with_filter(LevelFilter::ERROR)` to keep other levels
/// cheap.
#[derive(Clone, Debug)]
pub struct ErrorSinkLayer {
    sink: ErrorSink,
    context: Option<String>,
}

impl ErrorSinkLayer {
    /// A layer for `sink`; `context` is copied into every record.
    pub fn new(sink: ErrorSink, context: Option<String>) -> Self {
        Self { sink, context }
    }
}

impl<S: Subscriber> Layer<S> for ErrorSinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() != Level::ERROR || IN_SINK.with(Cell::get) {
            return;
        }
        let mut fields = FieldMap::default();
        event.record(&mut fields);
        let record = ErrorRecord {
            at_ms: now_ms(),
            target: event.metadata().target().to_owned(),
            message: fields.message.take().unwrap_or_default(),
            fields: fields.map,
            context: self.context.clone(),
        };
        IN_SINK.with(|c| c.set(true));
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| (self.sink.0)(&record)));
        IN_SINK.with(|c| c.set(false));
    }
}

/// Logging settings; see the module docs for precedence.
#[must_use]
pub struct LogOptions {
    context: Option<String>,
    level: Option<String>,
    production: bool,
    format: LogFormat,
    ansi: Option<bool>,
    error_sink: Option<ErrorSink>,
    writer: Option<BoxMakeWriter>,
    env: Box<dyn EnvSource + Send + Sync>,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for LogOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogOptions")
            .field("context", &self.context)
            .field("level", &self.level)
            .field("production", &self.production)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl LogOptions {
    /// Defaults: no context, debug level, human format to stderr.
    pub fn new() -> Self {
        Self {
            context: None,
            level: None,
            production: false,
            format: LogFormat::Human,
            ansi: None,
            error_sink: None,
            writer: None,
            env: Box::new(ProcessEnv),
        }
    }

    /// The `[context]` of every human line and `context` of JSON lines,
    /// typically the service kind (default: none).
    pub fn context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// A filter directive used when `LINK_LOG`/`RUST_LOG` are unset
    /// (default: `info` in production, else `debug`).
    pub fn level(mut self, directive: impl Into<String>) -> Self {
        self.level = Some(directive.into());
        self
    }

    /// Production mode: default level `info` instead of `debug`.
    pub fn production(mut self, production: bool) -> Self {
        self.production = production;
        self
    }

    /// Human or JSON (default human; `LINK_LOG_FORMAT` wins).
    pub fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// Colours in human output (default: when stderr is a terminal and
    /// `NO_COLOR` is unset; never with a custom writer or JSON).
    pub fn ansi(mut self, ansi: bool) -> Self {
        self.ansi = Some(ansi);
        self
    }

    /// Feeds every `ERROR` event to `sink`, whatever the level filter.
    pub fn error_sink(mut self, sink: ErrorSink) -> Self {
        self.error_sink = Some(sink);
        self
    }

    /// Writes somewhere other than stderr.
    pub fn writer<W>(mut self, writer: W) -> Self
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        self.writer = Some(BoxMakeWriter::new(writer));
        self
    }

    /// Reads `LINK_LOG`, `RUST_LOG`, `LINK_LOG_FORMAT` and `NO_COLOR` from
    /// `env` instead of the process environment.
    pub fn env_source<S: EnvSource + Send + Sync + 'static>(mut self, env: S) -> Self {
        self.env = Box::new(env);
        self
    }

    fn nonblank(&self, key: &str) -> Option<String> {
        self.env
            .get(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn resolve_filter(&self) -> Result<(String, EnvFilter), LoggingError> {
        let (source_name, value) = if let Some(v) = self.nonblank("LINK_LOG") {
            ("LINK_LOG", v)
        } else if let Some(v) = self.nonblank("RUST_LOG") {
            ("RUST_LOG", v)
        } else if let Some(v) = &self.level {
            ("LogOptions::level", v.clone())
        } else if self.production {
            ("production default", "info".to_owned())
        } else {
            ("default", "debug".to_owned())
        };
        let filter = EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            .parse(&value)
            .map_err(|e| LoggingError::InvalidFilter {
                source_name: source_name.to_owned(),
                value: value.clone(),
                reason: e.to_string(),
            })?;
        Ok((value, filter))
    }

    fn resolve_format(&self) -> Result<LogFormat, LoggingError> {
        match self.nonblank("LINK_LOG_FORMAT") {
            None => Ok(self.format),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "human" | "text" | "pretty" => Ok(LogFormat::Human),
                "json" => Ok(LogFormat::Json),
                _ => Err(LoggingError::InvalidFormat(v)),
            },
        }
    }

    /// Builds the subscriber without installing it (for
    /// `tracing::dispatcher::with_default` in tests, or to install yourself).
    pub fn build(self) -> Result<(Dispatch, LogSetup), LoggingError> {
        let (filter_text, filter) = self.resolve_filter()?;
        let format = self.resolve_format()?;
        let custom_writer = self.writer.is_some();
        let ansi = format == LogFormat::Human
            && self.ansi.unwrap_or_else(|| {
                !custom_writer
                    && self.nonblank("NO_COLOR").is_none()
                    && std::io::stderr().is_terminal()
            });
        let writer = self
            .writer
            .unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
        let fmt_layer = match format {
            LogFormat::Human => tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .event_format(HumanFormat {
                    context: self.context.clone(),
                })
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .event_format(JsonFormat {
                    context: self.context.clone(),
                })
                .boxed(),
        };
        let sink_layer = self.error_sink.map(|sink| {
            ErrorSinkLayer::new(sink, self.context.clone()).with_filter(LevelFilter::ERROR)
        });
        let subscriber = tracing_subscriber::registry()
            .with(fmt_layer.with_filter(filter))
            .with(sink_layer);
        let setup = LogSetup {
            filter: filter_text,
            format,
            ansi,
        };
        Ok((Dispatch::new(subscriber), setup))
    }
}

/// What [`init`] installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSetup {
    /// The effective filter directive.
    pub filter: String,
    /// The output format.
    pub format: LogFormat,
    /// Whether human output is coloured.
    pub ansi: bool,
}

/// Builds and installs the global subscriber. A second call (or any
/// earlier global subscriber) gives [`LoggingError::AlreadyInitialized`];
/// it never panics.
pub fn init(options: LogOptions) -> Result<LogSetup, LoggingError> {
    let (dispatch, setup) = options.build()?;
    tracing::dispatcher::set_global_default(dispatch)
        .map_err(|_| LoggingError::AlreadyInitialized)?;
    Ok(setup)
}

/// Collects an event's fields as JSON.
#[derive(Default)]
struct FieldMap {
    message: Option<String>,
    map: Map<String, Value>,
}

impl FieldMap {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else {
            self.map.insert(field.name().to_owned(), value);
        }
    }
}

impl Visit for FieldMap {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.put(field, v);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::from(value));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::from(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::from(format!("{value:?}")));
    }
}

fn level_colour(level: Level) -> &'static str {
    match level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

/// `[HH:MM:SS.mmm] [context] LEVEL spans: target: message k=v`.
struct HumanFormat {
    context: Option<String>,
}

impl<S, N> FormatEvent<S, N> for HumanFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = writer.has_ansi_escapes();
        let meta = event.metadata();
        let (dim, reset) = if ansi {
            ("\x1b[2m", "\x1b[0m")
        } else {
            ("", "")
        };
        write!(writer, "{dim}[{}]{reset} ", hms_millis(now_ms()))?;
        if let Some(c) = &self.context {
            write!(writer, "[{c}] ")?;
        }
        if ansi {
            write!(
                writer,
                "{}{:>5}{reset} ",
                level_colour(*meta.level()),
                meta.level()
            )?;
        } else {
            write!(writer, "{:>5} ", meta.level())?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                writer.write_str(": ")?;
            }
        }
        write!(writer, "{dim}{}:{reset} ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// One JSON object per line.
struct JsonFormat {
    context: Option<String>,
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut fields = FieldMap::default();
        event.record(&mut fields);
        let mut obj = Map::new();
        obj.insert("time".into(), Value::from(now_ms()));
        obj.insert("level".into(), Value::from(meta.level().as_str()));
        if let Some(c) = &self.context {
            obj.insert("context".into(), Value::from(c.as_str()));
        }
        obj.insert("target".into(), Value::from(meta.target()));
        obj.insert(
            "msg".into(),
            Value::from(fields.message.take().unwrap_or_default()),
        );
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<Value> = scope.from_root().map(|s| Value::from(s.name())).collect();
            obj.insert("spans".into(), Value::Array(spans));
        }
        for (k, v) in fields.map {
            obj.entry(k).or_insert(v);
        }
        let line = serde_json::to_string(&Value::Object(obj)).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io;
    use std::sync::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn options(vars: &[(&str, &str)], out: &Capture) -> LogOptions {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let out = out.clone();
        LogOptions::new()
            .env_source(move |k: &str| map.get(k).cloned())
            .writer(move || out.clone())
    }

    fn log_all(dispatch: &Dispatch) {
        tracing::dispatcher::with_default(dispatch, || {
            tracing::trace!("t-line");
            tracing::debug!("d-line");
            tracing::info!(port = 8080, "i-line");
            tracing::warn!("w-line");
            tracing::error!(code = "E1", "e-line");
        });
    }

    fn is_stamp(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 14
            && b[0] == b'['
            && b[13] == b']'
            && b[3] == b':'
            && b[6] == b':'
            && b[9] == b'.'
            && [1, 2, 4, 5, 7, 8, 10, 11, 12]
                .iter()
                .all(|&i| b[i].is_ascii_digit())
    }

    #[test]
    fn human_lines_have_time_and_context_prefix() {
        let out = Capture::default();
        let (d, setup) = options(&[], &out).context("billing").build().unwrap();
        assert_eq!(setup.filter, "debug");
        assert!(!setup.ansi);
        log_all(&d);
        let text = out.text();
        let line = text.lines().find(|l| l.contains("i-line")).unwrap();
        assert!(is_stamp(&line[..14]), "{line}");
        assert!(line[14..].starts_with(" [billing]  INFO "), "{line}");
        assert!(line.ends_with("i-line port=8080"), "{line}");
        assert!(text.contains("d-line"));
        assert!(!text.contains("t-line"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn production_defaults_to_info() {
        let out = Capture::default();
        let (d, setup) = options(&[], &out).production(true).build().unwrap();
        assert_eq!(setup.filter, "info");
        log_all(&d);
        let text = out.text();
        assert!(!text.contains("d-line"));
        assert!(text.contains("i-line") && text.contains("e-line"));
    }

    #[test]
    fn env_wins_link_log_over_rust_log_over_option() {
        let out = Capture::default();
        let (d, setup) = options(&[("LINK_LOG", "warn"), ("RUST_LOG", "trace")], &out)
            .level("debug")
            .build()
            .unwrap();
        assert_eq!(setup.filter, "warn");
        log_all(&d);
        assert!(!out.text().contains("i-line"));
        assert!(out.text().contains("w-line"));

        let out = Capture::default();
        let (d, _) = options(&[("LINK_LOG", " "), ("RUST_LOG", "trace")], &out)
            .build()
            .unwrap();
        log_all(&d);
        assert!(out.text().contains("t-line"));

        let out = Capture::default();
        let (d, _) = options(&[], &out).level("error").build().unwrap();
        log_all(&d);
        assert!(!out.text().contains("w-line"));
        assert!(out.text().contains("e-line"));
    }

    #[test]
    fn bad_filter_and_format_are_errors() {
        let out = Capture::default();
        let err = options(&[("RUST_LOG", "info,=[")], &out)
            .build()
            .unwrap_err();
        assert_eq!(err.code(), "LOG_INVALID_FILTER");
        assert!(err.to_string().contains("RUST_LOG"), "{err}");
        let err = options(&[("LINK_LOG_FORMAT", "xml")], &out)
            .build()
            .unwrap_err();
        assert_eq!(err, LoggingError::InvalidFormat("xml".into()));
    }

    #[test]
    fn json_lines_carry_level_context_and_fields() {
        let out = Capture::default();
        let (d, setup) = options(&[("LINK_LOG_FORMAT", "JSON")], &out)
            .context("billing")
            .ansi(true)
            .build()
            .unwrap();
        assert_eq!(setup.format, LogFormat::Json);
        assert!(!setup.ansi);
        tracing::dispatcher::with_default(&d, || {
            let span = tracing::info_span!("request", id = 7);
            let _g = span.enter();
            tracing::info!(port = 8080, ok = true, msg = "shadowed", "hello");
        });
        let line: Value = serde_json::from_str(out.text().trim()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["context"], "billing");
        assert_eq!(line["msg"], "hello");
        assert_eq!(line["port"], 8080);
        assert_eq!(line["ok"], true);
        assert_eq!(line["spans"], serde_json::json!(["request"]));
        assert!(line["time"].as_u64().unwrap() > 0);
    }

    #[test]
    fn ansi_colours_the_level_when_asked() {
        let out = Capture::default();
        let (d, setup) = options(&[], &out).ansi(true).build().unwrap();
        assert!(setup.ansi);
        log_all(&d);
        assert!(out.text().contains("\x1b[33m WARN"));
    }

    #[test]
    fn error_sink_gets_errors_even_when_filtered_out() {
        let out = Capture::default();
        let (sink, mut rx) = ErrorSink::channel(8);
        let (d, _) = options(&[("LINK_LOG", "off")], &out)
            .context("svc")
            .error_sink(sink)
            .build()
            .unwrap();
        log_all(&d);
        assert_eq!(out.text(), "");
        let r = rx.try_recv().unwrap();
        assert_eq!(r.message, "e-line");
        assert_eq!(r.fields["code"], "E1");
        assert_eq!(r.context.as_deref(), Some("svc"));
        assert!(rx.try_recv().is_err(), "only ERROR events are fed");
    }

    #[test]
    fn failing_sinks_never_propagate() {
        let out = Capture::default();
        let calls = Arc::new(Mutex::new(0));
        let c = calls.clone();
        let sink = ErrorSink::callback(move |_| {
            *c.lock().unwrap() += 1;
            // Logging from the sink is not fed back to it.
            tracing::error!("from inside the sink");
            panic!("sink exploded");
        });
        let (d, _) = options(&[], &out).error_sink(sink).build().unwrap();
        tracing::dispatcher::with_default(&d, || {
            tracing::error!("first");
            tracing::error!("second");
        });
        assert_eq!(*calls.lock().unwrap(), 2);
        assert!(out.text().contains("second"));

        // A full or closed channel drops records silently.
        let (sink, rx) = ErrorSink::channel(1);
        drop(rx);
        let (d, _) = options(&[], &out).error_sink(sink).build().unwrap();
        tracing::dispatcher::with_default(&d, || tracing::error!("into the void"));
    }
}
