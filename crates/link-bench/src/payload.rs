//! The benchmark payload: a small JSON object padded to an exact
//! serialised size (default 80 bytes, about 350 bytes once wrapped in a
//! signed link envelope).

use serde_json::{Value, json};

/// The smallest payload size (the object without padding).
pub const MIN_BYTES: usize = 58;

/// A JSON object whose compact serialisation is exactly `bytes` long
/// (`bytes` ≥ [`MIN_BYTES`]; smaller requests get the minimum).
pub fn payload(bytes: usize) -> Value {
    let mut v = json!({
        "sku": "A-1042",
        "qty": 3,
        "price": 19.99,
        "ok": true,
        "note": "",
    });
    let base = serialised_len(&v);
    let pad = bytes.saturating_sub(base);
    v["note"] = Value::String("x".repeat(pad));
    v
}

/// Length of the compact serialisation.
pub fn serialised_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact() {
        assert_eq!(serialised_len(&payload(0)), MIN_BYTES);
        for n in [MIN_BYTES, 80, 81, 1000, 16_384] {
            assert_eq!(serialised_len(&payload(n)), n, "{n}");
        }
    }
}
