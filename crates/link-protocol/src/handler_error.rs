//! [`HandlerError`]: what an RPC handler (client or hub side) fails with,
//! and the sanitisation rule that turns it into a wire response (protocol §7).
//!
//! An *exposed* error (the reference's `RpcHandlerError`, or any error with
//! `expose`) goes on the wire with its code, message and data; any other
//! failure becomes `Internal handler error` / `RPC_HANDLER_ERROR`, unless the
//! handler side sets `expose_rpc_errors`.

use std::fmt;

use serde_json::Value;

use crate::codes::{RpcErrorCode, rpc_error_text};
use crate::messages::RpcResponse;

/// An RPC handler's failure.
///
/// Any `std::error::Error` converts into an unexposed (sanitised) one, so
/// handlers can use `?`; build an exposed one with [`HandlerError::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct HandlerError {
    code: String,
    message: String,
    data: Option<Value>,
    expose: bool,
}

impl HandlerError {
    /// An error the caller sees as is: `code`, `message` (and `data`).
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            data: None,
            expose: true,
        }
    }

    /// An exposed error with the default code `RPC_HANDLER_ERROR`.
    pub fn message(message: impl Into<String>) -> Self {
        Self::new(RpcErrorCode::HandlerError.as_str(), message)
    }

    /// An internal failure: logged locally, sanitised on the wire.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            expose: false,
            ..Self::message(message)
        }
    }

    /// Attaches structured detail (sent only when exposed).
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The real message (never sanitised).
    pub fn text(&self) -> &str {
        &self.message
    }

    /// The attached data.
    pub fn data(&self) -> Option<&Value> {
        self.data.as_ref()
    }

    /// Whether the caller sees the real error.
    pub fn is_exposed(&self) -> bool {
        self.expose
    }

    /// The wire response: exposed as is when `expose` or `expose_all`,
    /// otherwise `Internal handler error` / `RPC_HANDLER_ERROR`.
    pub fn to_response(&self, expose_all: bool) -> RpcResponse {
        if self.expose || expose_all {
            RpcResponse::Err {
                error: self.message.clone(),
                code: self.code.clone(),
                data: self.data.clone(),
            }
        } else {
            RpcResponse::error(RpcErrorCode::HandlerError, rpc_error_text::INTERNAL)
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        Self::internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sanitises_unless_exposed() {
        let err: HandlerError = std::io::Error::other("disk on fire").into();
        assert_eq!(
            err.to_response(false).to_value(),
            json!({"ok":false,"error":"Internal handler error","code":"RPC_HANDLER_ERROR"})
        );
        assert_eq!(err.to_response(true).to_value()["error"], "disk on fire");
        let exposed = HandlerError::new("ORDER_NOT_FOUND", "Order not found")
            .with_data(json!({"orderId": 42}));
        assert_eq!(
            exposed.to_response(false).to_value(),
            json!({"ok":false,"error":"Order not found","code":"ORDER_NOT_FOUND","data":{"orderId":42}})
        );
    }
}
