//! The online subcommands: they join a running hub as a peer and talk on
//! the bus through [`link_client::LinkClient`].
//!
//! ```text
//!   conn::ConnArgs ──► LinkClient ──ready──► call:   rpc, health, topics, peers, status
//!   (--url --secret                          fire:   publish, send   (hub-confirmed)
//!    --kind --hash                           stream: subscribe, listen (until Ctrl-C / --count)
//!    --timeout --json)                           │
//!                                   output::render_* ──► stdout (JSON lines or pretty)
//! ```
//!
//! - [`conn`]: shared options (`LINK_URL`, `LINK_SECRET`,
//!   `LINK_HASH_ALGO`, `LINK_CA` for a `wss://` hub with a private CA;
//!   `LINK_KIND` for `listen` and `subscribe` only), readiness (a failed
//!   connect attempt ends the wait at once) and error codes.
//! - [`output`]: JSON lines when piped or with `--json`, pretty on a
//!   terminal.
//! - [`call`], [`fire`], [`stream`]: the subcommands.
//!
//! Exit status follows [`crate::exit`]: 0 success; 1 the bus said no (an
//! RPC error, `LINK_NOT_READY`, a rejected hello, a failed connect such as
//! `CONNECT_IO` or `WS_HANDSHAKE`, `SEND_NO_TARGET`), with `CODE: message`
//! on stderr; 2 unusable arguments (JSON that does not parse, no secret, a
//! URL that cannot be dialled: `INVALID_URL`).
//!
//! ## Getting started
//!
//! ```text
//! $ link-cli hub &                     # prints LINK_SECRET=… and listening=ws://127.0.0.1:8080
//! $ export LINK_SECRET=…
//! $ link-cli subscribe news &          # one line per message
//! $ link-cli publish news '{"n": 1}'
//! $ link-cli rpc server link.health
//! ```

pub(crate) mod call;
pub(crate) mod conn;
pub(crate) mod fire;
pub(crate) mod output;
pub(crate) mod stream;
