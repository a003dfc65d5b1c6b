//! Wire-safety for outgoing payloads (protocol §11): Rust's type system already
//! excludes most of what the reference checks for (cycles, BigInt, Map, …);
//! what remains is non-finite floats, which `serde_json` would silently turn
//! into `null`, and values serde cannot represent as JSON (e.g. maps with
//! non-string keys). This module refuses both with a [`WireError`].

use serde::ser::{self, Serialize};
use serde_json::Value;

use crate::error::WireError;

/// Converts `value` to JSON, refusing NaN/±Infinity anywhere inside it.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, WireError> {
    value.serialize(&mut FloatProbe).map_err(|e| match e {
        ProbeError::NonFinite => WireError::NonFinite,
        ProbeError::Custom(msg) => WireError::NotSerializable(msg),
    })?;
    serde_json::to_value(value).map_err(|e| WireError::NotSerializable(e.to_string()))
}

/// Checks an already-built JSON value. A `serde_json::Value` cannot hold a
/// non-finite number, so this only exists to make the rule explicit at call
/// sites that accept `Value`.
pub fn check_value(_value: &Value) -> Result<(), WireError> {
    Ok(())
}

/// A serializer that produces nothing and fails on non-finite floats.
struct FloatProbe;

#[derive(Debug)]
enum ProbeError {
    NonFinite,
    Custom(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NonFinite => f.write_str("non-finite float"),
            Self::Custom(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ProbeError {}

impl ser::Error for ProbeError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        Self::Custom(msg.to_string())
    }
}

fn finite(f: f64) -> Result<(), ProbeError> {
    if f.is_finite() {
        Ok(())
    } else {
        Err(ProbeError::NonFinite)
    }
}

macro_rules! ok_scalars {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(fn $name(self, _v: $ty) -> Result<(), ProbeError> { Ok(()) })*
    };
}

impl ser::Serializer for &mut FloatProbe {
    type Ok = ();
    type Error = ProbeError;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    ok_scalars!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char,
        serialize_str: &str, serialize_bytes: &[u8], serialize_unit_struct: &'static str,
    );

    fn serialize_f32(self, v: f32) -> Result<(), ProbeError> {
        finite(f64::from(v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), ProbeError> {
        finite(v)
    }
    fn serialize_none(self) -> Result<(), ProbeError> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<(), ProbeError> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), ProbeError> {
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
    ) -> Result<(), ProbeError> {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<(), ProbeError> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        v: &T,
    ) -> Result<(), ProbeError> {
        v.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, ProbeError> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, ProbeError> {
        Ok(self)
    }
}

macro_rules! probe_compound {
    ($trait:ident, $method:ident $(, $key:ty)?) => {
        impl ser::$trait for &mut FloatProbe {
            type Ok = ();
            type Error = ProbeError;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_key: $key,)? v: &T) -> Result<(), ProbeError> {
                v.serialize(&mut **self)
            }
            fn end(self) -> Result<(), ProbeError> {
                Ok(())
            }
        }
    };
}

probe_compound!(SerializeSeq, serialize_element);
probe_compound!(SerializeTuple, serialize_element);
probe_compound!(SerializeTupleStruct, serialize_field);
probe_compound!(SerializeTupleVariant, serialize_field);
probe_compound!(SerializeStruct, serialize_field, &'static str);
probe_compound!(SerializeStructVariant, serialize_field, &'static str);

impl ser::SerializeMap for &mut FloatProbe {
    type Ok = ();
    type Error = ProbeError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), ProbeError> {
        k.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), ProbeError> {
        v.serialize(&mut **self)
    }
    fn end(self) -> Result<(), ProbeError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn refuses_non_finite_anywhere() {
        assert_eq!(to_value(&f64::NAN), Err(WireError::NonFinite));
        assert_eq!(
            to_value(&vec![1.0, f64::INFINITY]),
            Err(WireError::NonFinite)
        );
        let mut m = BTreeMap::new();
        m.insert("x", Some(f32::NEG_INFINITY));
        assert_eq!(to_value(&m), Err(WireError::NonFinite));
        assert_eq!(
            to_value(&(1, "a", 2.5)).unwrap(),
            serde_json::json!([1, "a", 2.5])
        );
    }

    #[test]
    fn refuses_non_string_map_keys() {
        let mut m = BTreeMap::new();
        m.insert(vec![1], 1);
        assert!(matches!(to_value(&m), Err(WireError::NotSerializable(_))));
    }
}
