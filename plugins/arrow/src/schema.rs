//! Structural checks of a flatbuffer `Schema` before arrow-ipc converts it.
//!
//! arrow-ipc 59's `fb_to_schema` panics (`panic!`, `unwrap`, `expect`) on
//! type parameters it does not support — an `Int` of bit width 7, a list with
//! two children, an unknown time unit, a union with duplicate type ids. This
//! module mirrors each of those conditions as an error, so hostile schemas
//! are refused with a message instead of relying on the reader's
//! `catch_unwind` guard (which stays as a last line of defence).
//!
//! Invariant: [`check_schema`] accepts exactly the schemas `fb_to_schema`
//! converts without panicking (for the arrow-ipc version pinned in
//! Cargo.toml); nesting deeper than [`MAX_DEPTH`] is refused.

use std::collections::HashSet;

use arrow_ipc::{
    DateUnit, Endianness, Field, IntervalUnit, Precision, Schema, TimeUnit, Type, UnionMode,
};

use crate::error::FormatError;

/// Deepest field nesting accepted.
pub const MAX_DEPTH: usize = 64;

fn bad(path: &str, what: impl std::fmt::Display) -> FormatError {
    FormatError::Malformed(format!("schema field `{path}`: {what}"))
}

/// Checks every field of `schema` (recursively).
pub fn check_schema(schema: &Schema<'_>) -> Result<(), FormatError> {
    let fields = schema
        .fields()
        .ok_or_else(|| FormatError::Malformed("the schema has no field list".into()))?;
    let big_endian = schema.endianness() == Endianness::Big;
    for field in fields {
        let name = field.name().unwrap_or_default().to_owned();
        if big_endian && field.type_type() == Type::Decimal {
            return Err(bad(&name, "big-endian decimals are not supported"));
        }
        check_field(&field, &name, 0)?;
    }
    Ok(())
}

fn int_ok(bit_width: i32) -> bool {
    matches!(bit_width, 8 | 16 | 32 | 64)
}

fn check_field(field: &Field<'_>, path: &str, depth: usize) -> Result<(), FormatError> {
    if depth > MAX_DEPTH {
        return Err(bad(path, format!("nested deeper than {MAX_DEPTH}")));
    }
    if let Some(dictionary) = field.dictionary() {
        let index = dictionary
            .indexType()
            .ok_or_else(|| bad(path, "dictionary without an index type"))?;
        if !int_ok(index.bitWidth()) {
            return Err(bad(
                path,
                format!("dictionary index of {} bits", index.bitWidth()),
            ));
        }
    }
    let missing = |what: &str| bad(path, format!("{what} type without its parameters"));
    let children = field.children();
    let n_children = children.map_or(0, |c| c.len());
    let exactly = |n: usize, what: &str| {
        if children.is_some() && n_children == n {
            Ok(())
        } else {
            Err(bad(
                path,
                format!("{what} with {n_children} children, expected {n}"),
            ))
        }
    };
    match field.type_type() {
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::BinaryView
        | Type::LargeBinary
        | Type::Utf8
        | Type::Utf8View
        | Type::LargeUtf8
        | Type::Struct_ => {}
        Type::Int => {
            let int = field.type_as_int().ok_or_else(|| missing("int"))?;
            if !int_ok(int.bitWidth()) {
                return Err(bad(path, format!("int of {} bits", int.bitWidth())));
            }
        }
        Type::FixedSizeBinary => {
            let fsb = field
                .type_as_fixed_size_binary()
                .ok_or_else(|| missing("fixed-size binary"))?;
            if fsb.byteWidth() < 0 {
                return Err(bad(path, format!("byte width {}", fsb.byteWidth())));
            }
        }
        Type::FloatingPoint => {
            let float = field
                .type_as_floating_point()
                .ok_or_else(|| missing("floating-point"))?;
            if !matches!(
                float.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            ) {
                return Err(bad(
                    path,
                    format!("float precision {:?}", float.precision()),
                ));
            }
        }
        Type::Date => {
            let date = field.type_as_date().ok_or_else(|| missing("date"))?;
            if !matches!(date.unit(), DateUnit::DAY | DateUnit::MILLISECOND) {
                return Err(bad(path, format!("date unit {:?}", date.unit())));
            }
        }
        Type::Time => {
            let time = field.type_as_time().ok_or_else(|| missing("time"))?;
            let ok = matches!(
                (time.bitWidth(), time.unit()),
                (32, TimeUnit::SECOND | TimeUnit::MILLISECOND)
                    | (64, TimeUnit::MICROSECOND | TimeUnit::NANOSECOND)
            );
            if !ok {
                return Err(bad(
                    path,
                    format!("time of {} bits in {:?}", time.bitWidth(), time.unit()),
                ));
            }
        }
        Type::Timestamp => {
            let ts = field
                .type_as_timestamp()
                .ok_or_else(|| missing("timestamp"))?;
            check_time_unit(ts.unit(), path)?;
        }
        Type::Duration => {
            let duration = field
                .type_as_duration()
                .ok_or_else(|| missing("duration"))?;
            check_time_unit(duration.unit(), path)?;
        }
        Type::Interval => {
            let interval = field
                .type_as_interval()
                .ok_or_else(|| missing("interval"))?;
            if !matches!(
                interval.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            ) {
                return Err(bad(path, format!("interval unit {:?}", interval.unit())));
            }
        }
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => {
            exactly(1, "list")?;
        }
        Type::FixedSizeList => {
            exactly(1, "fixed-size list")?;
            let fsl = field
                .type_as_fixed_size_list()
                .ok_or_else(|| missing("fixed-size list"))?;
            if fsl.listSize() < 0 {
                return Err(bad(path, format!("list size {}", fsl.listSize())));
            }
        }
        Type::Map => {
            exactly(1, "map")?;
            field.type_as_map().ok_or_else(|| missing("map"))?;
        }
        Type::RunEndEncoded => exactly(2, "run-end encoded")?,
        Type::Decimal => {
            let decimal = field.type_as_decimal().ok_or_else(|| missing("decimal"))?;
            if u8::try_from(decimal.precision()).is_err()
                || i8::try_from(decimal.scale()).is_err()
                || !matches!(decimal.bitWidth(), 32 | 64 | 128 | 256)
            {
                return Err(bad(
                    path,
                    format!(
                        "decimal({}, {}) of {} bits",
                        decimal.precision(),
                        decimal.scale(),
                        decimal.bitWidth()
                    ),
                ));
            }
        }
        Type::Union => {
            let union = field.type_as_union().ok_or_else(|| missing("union"))?;
            if !matches!(union.mode(), UnionMode::Dense | UnionMode::Sparse) {
                return Err(bad(path, format!("union mode {:?}", union.mode())));
            }
            match union.typeIds() {
                None if n_children > 128 => {
                    return Err(bad(path, "union of more than 128 members"));
                }
                None => {}
                Some(ids) => {
                    let mut seen = HashSet::new();
                    let valid = ids.len() == n_children
                        && ids.iter().all(|id| {
                            let id = id as i8; // arrow-ipc truncates the same way
                            id >= 0 && seen.insert(id)
                        });
                    if !valid {
                        return Err(bad(path, "union type ids do not match its members"));
                    }
                }
            }
        }
        other => return Err(bad(path, format!("unsupported type {other:?}"))),
    }
    for child in children.into_iter().flatten() {
        let name = format!("{path}.{}", child.name().unwrap_or_default());
        check_field(&child, &name, depth + 1)?;
    }
    Ok(())
}

fn check_time_unit(unit: TimeUnit, path: &str) -> Result<(), FormatError> {
    if matches!(
        unit,
        TimeUnit::SECOND | TimeUnit::MILLISECOND | TimeUnit::MICROSECOND | TimeUnit::NANOSECOND
    ) {
        Ok(())
    } else {
        Err(bad(path, format!("time unit {unit:?}")))
    }
}

/// One record batch's field nodes and buffers, walked in the order
/// arrow-ipc's reader consumes them, checking what that reader would
/// otherwise assert (and panic on): validity bitmaps long enough for their
/// node, union type-id and offset buffers long enough, one variadic count
/// per view column.
pub struct Layout {
    /// `(length, null_count)` of each field node, in order.
    pub nodes: Vec<(u64, u64)>,
    /// The (uncompressed) length of each buffer, in order.
    pub buffers: Vec<u64>,
    /// `variadicBufferCounts`, in order.
    pub variadic: Vec<i64>,
    /// Whether the message predates metadata V5 (unions had validity).
    pub v4: bool,
}

struct Cursor<'l> {
    layout: &'l Layout,
    node: usize,
    buffer: usize,
    variadic: usize,
}

fn layout_error(what: impl std::fmt::Display) -> FormatError {
    FormatError::Malformed(format!("record batch layout: {what}"))
}

impl Cursor<'_> {
    fn node(&mut self, field: &arrow_schema::Field) -> Result<(u64, u64), FormatError> {
        let node =
            self.layout.nodes.get(self.node).copied().ok_or_else(|| {
                layout_error(format!("no field node left for `{}`", field.name()))
            })?;
        self.node += 1;
        Ok(node)
    }

    fn buffer(&mut self, field: &arrow_schema::Field) -> Result<u64, FormatError> {
        let len = self
            .layout
            .buffers
            .get(self.buffer)
            .copied()
            .ok_or_else(|| layout_error(format!("no buffer left for `{}`", field.name())))?;
        self.buffer += 1;
        Ok(len)
    }

    /// A buffer of fixed-width values must hold whole values (arrow-buffer's
    /// `typed_data` asserts it).
    fn whole(field: &arrow_schema::Field, len: u64, width: u64) -> Result<(), FormatError> {
        if !len.is_multiple_of(width) {
            return Err(layout_error(format!(
                "`{}` has a {len}-byte buffer of {width}-byte values",
                field.name()
            )));
        }
        Ok(())
    }

    fn validity(
        field: &arrow_schema::Field,
        (len, nulls): (u64, u64),
        bitmap: u64,
    ) -> Result<(), FormatError> {
        if nulls > 0 && bitmap < len.div_ceil(8) {
            return Err(layout_error(format!(
                "`{}` has {len} rows but a {bitmap}-byte validity bitmap",
                field.name()
            )));
        }
        Ok(())
    }

    fn field(&mut self, field: &arrow_schema::Field, depth: usize) -> Result<(), FormatError> {
        use arrow_schema::{DataType as D, UnionMode as M};
        if depth > MAX_DEPTH {
            return Err(layout_error("nested too deep"));
        }
        match field.data_type() {
            D::Null => {
                self.node(field)?;
            }
            D::Utf8 | D::Binary | D::LargeBinary | D::LargeUtf8 => {
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                let offsets = self.buffer(field)?;
                Self::whole(field, offsets, offset_width(field.data_type()))?;
                self.buffer(field)?;
                Self::validity(field, node, validity)?;
            }
            D::BinaryView | D::Utf8View => {
                let count = self
                    .layout
                    .variadic
                    .get(self.variadic)
                    .copied()
                    .filter(|count| *count >= 0)
                    .ok_or_else(|| {
                        layout_error(format!("no variadic count for `{}`", field.name()))
                    })?;
                self.variadic += 1;
                let validity = self.buffer(field)?;
                let views = self.buffer(field)?;
                Self::whole(field, views, 16)?;
                for _ in 0..count {
                    self.buffer(field)?;
                }
                let node = self.node(field)?;
                Self::validity(field, node, validity)?;
            }
            D::List(child) | D::LargeList(child) | D::Map(child, _) => {
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                let offsets = self.buffer(field)?;
                Self::whole(field, offsets, offset_width(field.data_type()))?;
                Self::validity(field, node, validity)?;
                self.field(child, depth + 1)?;
            }
            D::ListView(child) | D::LargeListView(child) => {
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                let width = offset_width(field.data_type());
                Self::whole(field, self.buffer(field)?, width)?;
                Self::whole(field, self.buffer(field)?, width)?;
                Self::validity(field, node, validity)?;
                self.field(child, depth + 1)?;
            }
            D::FixedSizeList(child, _) => {
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                Self::validity(field, node, validity)?;
                self.field(child, depth + 1)?;
            }
            D::Struct(children) => {
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                Self::validity(field, node, validity)?;
                for child in children {
                    self.field(child, depth + 1)?;
                }
            }
            D::RunEndEncoded(run_ends, values) => {
                self.node(field)?;
                self.field(run_ends, depth + 1)?;
                self.field(values, depth + 1)?;
            }
            D::Union(children, mode) => {
                let (len, _) = self.node(field)?;
                if self.layout.v4 {
                    self.buffer(field)?;
                }
                let type_ids = self.buffer(field)?;
                let offsets = match mode {
                    M::Dense => Some(self.buffer(field)?),
                    M::Sparse => None,
                };
                let short = type_ids < len
                    || offsets.is_some_and(|o| len.checked_mul(4).is_none_or(|need| o < need));
                if short {
                    return Err(layout_error(format!(
                        "union `{}` of {len} rows has too short type-id or offset buffers",
                        field.name()
                    )));
                }
                for (_, child) in children.iter() {
                    self.field(child, depth + 1)?;
                }
            }
            _ => {
                // Primitives, booleans, decimals, temporal types, fixed-size
                // binary and dictionary indices: validity + one buffer.
                let node = self.node(field)?;
                let validity = self.buffer(field)?;
                let values = self.buffer(field)?;
                let width = match field.data_type() {
                    D::Dictionary(key, _) => key.primitive_width(),
                    other => other.primitive_width(),
                };
                if let Some(width) = width {
                    Self::whole(field, values, width as u64)?;
                }
                Self::validity(field, node, validity)?;
            }
        }
        Ok(())
    }
}

fn offset_width(data_type: &arrow_schema::DataType) -> u64 {
    use arrow_schema::DataType as D;
    match data_type {
        D::LargeUtf8 | D::LargeBinary | D::LargeList(_) | D::LargeListView(_) => 8,
        _ => 4,
    }
}

/// The value type of the dictionary with id `id` in `schema`, if any.
pub fn dictionary_value_type(
    schema: &arrow_schema::Schema,
    id: i64,
) -> Option<arrow_schema::DataType> {
    fn find(field: &arrow_schema::Field, id: i64) -> Option<arrow_schema::DataType> {
        use arrow_schema::DataType as D;
        #[allow(deprecated)] // arrow-ipc still assigns ids through `dict_id`
        let this = field.dict_id() == Some(id);
        match field.data_type() {
            D::Dictionary(_, value) if this => Some(value.as_ref().clone()),
            D::Dictionary(_, value) => find(
                &arrow_schema::Field::new("", value.as_ref().clone(), true),
                id,
            ),
            D::List(c) | D::LargeList(c) | D::ListView(c) | D::LargeListView(c) => find(c, id),
            D::FixedSizeList(c, _) | D::Map(c, _) => find(c, id),
            D::Struct(children) => children.iter().find_map(|c| find(c, id)),
            D::Union(children, _) => children.iter().find_map(|(_, c)| find(c, id)),
            D::RunEndEncoded(a, b) => find(a, id).or_else(|| find(b, id)),
            _ => None,
        }
    }
    schema.fields().iter().find_map(|f| find(f, id))
}

/// Walks `layout` against `schema`'s fields.
pub fn check_layout(schema: &arrow_schema::Schema, layout: &Layout) -> Result<(), FormatError> {
    let mut cursor = Cursor {
        layout,
        node: 0,
        buffer: 0,
        variadic: 0,
    };
    for field in schema.fields() {
        cursor.field(field, 0)?;
    }
    if cursor.variadic != layout.variadic.len() {
        return Err(layout_error("more variadic counts than view columns"));
    }
    Ok(())
}
