//! A serde serializer writing compact JSON: exactly the bytes of
//! `serde_json::to_writer`, with strings scanned eight bytes at a time.
//!
//! serde_json escapes a string one byte at a time, through a table: about 12
//! instructions a byte. Every chat's messages are encoded twice (the upstream
//! request, and the observer's captured conversation), so for a chat of 40 KB
//! that loop was two thirds of the proxy's work for it. Here a run with
//! nothing to escape is found a word at a time ([`plain_prefix`]) and copied
//! whole; numbers go through serde_json's own formatter, so the bytes stay
//! serde_json's (property tests compare the two).

use serde::ser::{self, Error as _, Serialize};
use serde_json::ser::Formatter;

use crate::decode::plain_prefix;

/// `value`'s JSON appended to `out`.
pub fn to_writer<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut Writer { out, raw: false })
}

/// `value` as its JSON but with every string written raw, behind a `"` and
/// its length: not JSON, but as unambiguous (a string cannot be read as
/// structure, nor structure as a string's length), for taking a digest of.
/// Escaping was most of the cost of encoding text with quotes and newlines
/// in it.
pub fn to_digest_input<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    value.serialize(&mut Writer { out, raw: true })
}

/// A string value or key: raw ([`to_digest_input`]) or escaped (JSON).
fn write_string(out: &mut Vec<u8>, text: &str, raw: bool) {
    if raw {
        write_raw(out, text);
    } else {
        write_escaped(out, text);
    }
}

/// A string as [`to_digest_input`] writes it.
fn write_raw(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

/// `value`'s JSON.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    to_writer(&mut out, value)?;
    Ok(out)
}

/// `text` as a JSON string, escaped as serde_json escapes it.
pub fn write_escaped(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = text.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    loop {
        let plain = plain_prefix(rest);
        out.extend_from_slice(rest.get(..plain).unwrap_or_default());
        let Some((&byte, after)) = rest.get(plain..).and_then(<[u8]>::split_first) else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            control => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(control >> 4)],
                HEX[usize::from(control & 0xf)],
            ]),
        }
        rest = after;
    }
    out.push(b'"');
}

fn io(e: std::io::Error) -> serde_json::Error {
    serde_json::Error::io(e)
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// Strings written raw ([`to_digest_input`]) rather than escaped.
    raw: bool,
}

impl Writer<'_> {
    fn integer(&mut self, n: impl itoa::Integer) -> serde_json::Result<()> {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        Ok(())
    }
}

/// `serialize_<int>` for every integer type, through the serializer's `integer`.
macro_rules! integers {
    ($($method:ident: $int:ty),*) => {$(
        fn $method(self, v: $int) -> serde_json::Result<()> {
            self.integer(v)
        }
    )*};
}

/// An array or object being written; `first` until its first element.
pub struct Compound<'a, 'b> {
    writer: &'b mut Writer<'a>,
    first: bool,
    /// What closes it: `]`, `}`, or those plus the `}` of an enum variant.
    close: &'static [u8],
}

impl<'a, 'b> Compound<'a, 'b> {
    fn open(writer: &'b mut Writer<'a>, open: &[u8], close: &'static [u8]) -> Self {
        writer.out.extend_from_slice(open);
        Self {
            writer,
            first: true,
            close,
        }
    }

    fn comma(&mut self) {
        if !self.first {
            self.writer.out.push(b',');
        }
        self.first = false;
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.comma();
        value.serialize(&mut *self.writer)
    }

    /// A struct's field: its name is a Rust name or one of our renames, with
    /// nothing to escape, so it is copied without the scan a string value gets.
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.comma();
        let out = &mut *self.writer.out;
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        value.serialize(&mut *self.writer)
    }

    fn close(self) -> serde_json::Result<()> {
        self.writer.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl<'a, 'b> ser::Serializer for &'b mut Writer<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'a, 'b>;
    type SerializeTuple = Compound<'a, 'b>;
    type SerializeTupleStruct = Compound<'a, 'b>;
    type SerializeTupleVariant = Compound<'a, 'b>;
    type SerializeMap = Compound<'a, 'b>;
    type SerializeStruct = Compound<'a, 'b>;
    type SerializeStructVariant = Compound<'a, 'b>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    integers!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128
    );

    // Non-finite floats are `null`, as serde_json writes them.
    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        if v.is_finite() {
            serde_json::ser::CompactFormatter
                .write_f32(self.out, v)
                .map_err(io)
        } else {
            self.serialize_unit()
        }
    }

    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        if v.is_finite() {
            serde_json::ser::CompactFormatter
                .write_f64(self.out, v)
                .map_err(io)
        } else {
            self.serialize_unit()
        }
    }

    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_string(self.out, v, self.raw);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<()> {
        let mut seq = Compound::open(self, b"[", b"]");
        for byte in v {
            seq.element(byte)?;
        }
        seq.close()
    }

    fn serialize_none(self) -> serde_json::Result<()> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> serde_json::Result<()> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        let mut object = Compound::open(self, b"{", b"}");
        object.field(variant, value)?;
        object.close()
    }

    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Compound<'a, 'b>> {
        Ok(Compound::open(self, b"[", b"]"))
    }

    fn serialize_tuple(self, len: usize) -> serde_json::Result<Compound<'a, 'b>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'a, 'b>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Compound<'a, 'b>> {
        variant_head(self, variant, b'[');
        Ok(Compound::open(self, b"", b"]}"))
    }

    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Compound<'a, 'b>> {
        Ok(Compound::open(self, b"{", b"}"))
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'a, 'b>> {
        // serde_json writes a `RawValue` (its `raw_value` feature, which axum
        // turns on) verbatim; nothing here encodes one, so it is refused
        // rather than written as an object.
        if name == RAW_VALUE_TOKEN {
            return Err(serde_json::Error::custom(
                "encode::json does not write serde_json::value::RawValue",
            ));
        }
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Compound<'a, 'b>> {
        variant_head(self, variant, b'{');
        Ok(Compound::open(self, b"", b"}}"))
    }
}

/// The struct name serde_json's `RawValue` serializes under.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// `{"variant":` and the opening of its content.
fn variant_head(writer: &mut Writer<'_>, variant: &str, open: u8) {
    writer.out.push(b'{');
    write_escaped(writer.out, variant);
    writer.out.push(b':');
    writer.out.push(open);
}

/// The sequence-like compounds, whose elements are written alike.
macro_rules! sequences {
    ($($kind:ident::$method:ident),*) => {$(
        impl ser::$kind for Compound<'_, '_> {
            type Ok = ();
            type Error = serde_json::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
                self.element(value)
            }

            fn end(self) -> serde_json::Result<()> {
                self.close()
            }
        }
    )*};
}

sequences!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        self.comma();
        key.serialize(KeyWriter {
            out: self.writer.out,
            raw: self.writer.raw,
        })?;
        self.writer.out.push(b':');
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        value.serialize(&mut *self.writer)
    }

    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}

/// The struct-like compounds, whose fields are written alike.
macro_rules! structs {
    ($($kind:ident),*) => {$(
        impl ser::$kind for Compound<'_, '_> {
            type Ok = ();
            type Error = serde_json::Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> serde_json::Result<()> {
                self.field(key, value)
            }

            fn end(self) -> serde_json::Result<()> {
                self.close()
            }
        }
    )*};
}

structs!(SerializeStruct, SerializeStructVariant);

/// An object key: a string, or a number, bool or char written as one (as
/// serde_json does); anything else is an error.
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
    /// As [`Writer`]'s.
    raw: bool,
}

impl KeyWriter<'_> {
    fn quoted(self, text: &str) -> serde_json::Result<()> {
        self.out.push(b'"');
        self.out.extend_from_slice(text.as_bytes());
        self.out.push(b'"');
        Ok(())
    }

    fn integer(self, n: impl itoa::Integer) -> serde_json::Result<()> {
        self.quoted(itoa::Buffer::new().format(n))
    }
}

fn key_must_be_a_string() -> serde_json::Error {
    serde_json::Error::custom("key must be a string")
}

impl ser::Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = ser::Impossible<(), serde_json::Error>;
    type SerializeTuple = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = ser::Impossible<(), serde_json::Error>;
    type SerializeMap = ser::Impossible<(), serde_json::Error>;
    type SerializeStruct = ser::Impossible<(), serde_json::Error>;
    type SerializeStructVariant = ser::Impossible<(), serde_json::Error>;

    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_string(self.out, v, self.raw);
        Ok(())
    }

    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.quoted(if v { "true" } else { "false" })
    }

    integers!(
        serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32,
        serialize_u64: u64, serialize_u128: u128
    );

    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        if !v.is_finite() {
            return Err(serde_json::Error::custom(
                "float key must be a finite number",
            ));
        }
        self.out.push(b'"');
        serde_json::ser::CompactFormatter
            .write_f32(self.out, v)
            .map_err(io)?;
        self.out.push(b'"');
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        if !v.is_finite() {
            return Err(serde_json::Error::custom(
                "float key must be a finite number",
            ));
        }
        self.out.push(b'"');
        serde_json::ser::CompactFormatter
            .write_f64(self.out, v)
            .map_err(io)?;
        self.out.push(b'"');
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }

    fn serialize_bytes(self, _v: &[u8]) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_none(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }

    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeSeq> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple(self, _len: usize) -> serde_json::Result<Self::SerializeTuple> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleStruct> {
        Err(key_must_be_a_string())
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleVariant> {
        Err(key_must_be_a_string())
    }

    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeMap> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStruct> {
        Err(key_must_be_a_string())
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStructVariant> {
        Err(key_must_be_a_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::openai::{ChatRequest, Usage};

    fn same_as_serde<T: Serialize + ?Sized>(value: &T) {
        let ours = to_vec(value).unwrap();
        let serde = serde_json::to_vec(value).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&serde)
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            "[\"\\\\\\x00-\\x1f\\x7f a-zé中]{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_is_written_as_serde_writes_it(value in json_value()) {
            same_as_serde(&value);
        }

        #[test]
        fn any_string_is_escaped_as_serde_escapes_it(text in any::<String>()) {
            same_as_serde(&text);
        }

        /// Two values have the same digest input exactly when they have the
        /// same JSON: a string's length keeps its quotes, commas or
        /// brackets from being read as structure.
        #[test]
        fn digest_inputs_differ_exactly_when_the_json_does(a in json_value(), b in json_value()) {
            let input = |v: &Value| {
                let mut out = Vec::new();
                to_digest_input(&mut out, v).unwrap();
                out
            };
            prop_assert_eq!(input(&a) == input(&b), to_vec(&a).unwrap() == to_vec(&b).unwrap());
        }
    }

    /// Strings made to read as the structure around them, or as another
    /// value's encoding behind a length.
    #[test]
    fn a_string_never_reads_as_structure_in_a_digest_input() {
        let input = |v: &Value| {
            let mut out = Vec::new();
            to_digest_input(&mut out, v).unwrap();
            out
        };
        assert_ne!(input(&json!(["a", "b"])), input(&json!(["a\",\"b"])));
        // Parts whose encoding, read as a length and bytes, would spell a
        // string: a string's encoding starts with `"`, an array's with `[`.
        let parts = json!([{"type": "text", "text": "a"}]);
        let spelled = input(&parts);
        let text = String::from_utf8(spelled.get(9..).unwrap().to_vec()).unwrap();
        assert_ne!(input(&parts), input(&Value::String(text)));
        assert_eq!(input(&json!("ab")), b"\"\x02\0\0\0\0\0\0\0ab");
    }

    proptest! {
        #[test]
        fn digest_inputs_of_strings_are_their_bytes_behind_a_quote_and_length(text in any::<String>()) {
            let mut out = Vec::new();
            to_digest_input(&mut out, &text).unwrap();
            prop_assert_eq!(out.first(), Some(&b'"'));
            prop_assert_eq!(out.get(1..9), Some(&(text.len() as u64).to_le_bytes()[..]));
            prop_assert_eq!(out.get(9..), Some(text.as_bytes()));
        }
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Unit,
        Newtype(u8),
        Tuple(u8, String),
        Struct { side: f32, name: &'static str },
    }

    #[derive(serde::Serialize)]
    struct Unit;

    #[test]
    fn every_serde_shape_is_written_as_serde_writes_it() {
        same_as_serde(&[
            Shape::Unit,
            Shape::Newtype(3),
            Shape::Tuple(1, "a\"b".into()),
        ]);
        same_as_serde(&Shape::Struct {
            side: 1.5,
            name: "sq\u{1}",
        });
        same_as_serde(&(Unit, 'x', '\n', (), Some(1u8), None::<u8>, b"ab".as_slice()));
        same_as_serde(&(
            f64::NAN,
            f32::INFINITY,
            0.1f32,
            1e300f64,
            -0.0f64,
            u128::MAX,
            i128::MIN,
        ));
        let keys: BTreeMap<i32, bool> = [(-1, true), (7, false)].into();
        same_as_serde(&keys);
        let keys: BTreeMap<char, ()> = [('"', ())].into();
        same_as_serde(&keys);
        same_as_serde(&Vec::<u8>::new());
        same_as_serde(&BTreeMap::<String, u8>::new());
    }

    #[test]
    fn a_key_that_is_no_string_is_refused() {
        let map: BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert!(to_vec(&map).is_err());
        assert!(serde_json::to_vec(&map).is_err());
        let some: BTreeMap<Option<&str>, u8> = [(Some("k"), 1)].into();
        same_as_serde(&some);
    }

    #[test]
    fn a_raw_value_is_refused_not_written_as_an_object() {
        /// Serializes as serde_json's `RawValue` does (whose type exists only
        /// when another crate of the build turns on `raw_value`).
        struct Raw;
        impl Serialize for Raw {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeStruct;
                let mut raw = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
                raw.serialize_field(RAW_VALUE_TOKEN, "[1]")?;
                raw.end()
            }
        }
        assert!(to_vec(&Raw).is_err());
    }

    #[test]
    fn requests_and_usage_are_written_as_serde_writes_them() {
        let request: ChatRequest = serde_json::from_value(json!({
            "model": "m", "temperature": 0.7, "x_extra": {"deep": [1, "two\t", null]},
            "messages": [{"role": "user", "content": [{"type": "text", "text": "a\u{7f}\"b"}]},
                         {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                          "function": {"name": "f", "arguments": "{\"a\":1}"}}]}],
            "stream_options": {"include_usage": true}
        }))
        .unwrap();
        same_as_serde(&request);
        let usage: Usage =
            serde_json::from_value(json!({"prompt_tokens": 3, "cost": 0.25, "cached_tokens": 1}))
                .unwrap();
        same_as_serde(&usage);
    }
}
