//! The WIRE rendering (`stowage show`): schema, row and batch counts,
//! compression, and the first few rows formatted by hand.
//!
//! Invariant: output is bounded — at most [`ROWS_SHOWN`] rows, each cell cut
//! to [`CELL_CHARS`] characters — whatever the table's size.
//!
//! Decision: values are formatted here for the common scalar types; nested
//! and other types show their type in angle brackets (no prettyprint crate).

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_schema::DataType;

use crate::read::Table;

/// Rows shown.
pub const ROWS_SHOWN: usize = 5;
/// Characters per cell before it is cut.
pub const CELL_CHARS: usize = 40;

/// Renders a validated table.
pub fn describe(table: &Table) -> String {
    let rows: usize = table.batches.iter().map(|b| b.num_rows()).sum();
    let mut out = format!(
        "arrow table: {rows} rows, {} columns, {} batches, compression {}\nschema:",
        table.schema.fields().len(),
        table.batches.len(),
        table.codec.name()
    );
    for field in table.schema.fields() {
        let _ = write!(
            out,
            "\n  {}: {}{}",
            field.name(),
            field.data_type(),
            if field.is_nullable() { "" } else { " not null" }
        );
        let mut meta: Vec<_> = field.metadata().iter().collect();
        meta.sort();
        for (key, value) in meta {
            let _ = write!(out, "\n    {key} = {}", cut(value));
        }
    }
    let mut meta: Vec<_> = table.schema.metadata().iter().collect();
    meta.sort();
    for (key, value) in meta {
        let _ = write!(out, "\n  metadata {key} = {}", cut(value));
    }
    if rows > 0 {
        out.push_str("\nfirst rows:");
        let mut shown = 0;
        'batches: for batch in &table.batches {
            for row in 0..batch.num_rows() {
                if shown == ROWS_SHOWN {
                    break 'batches;
                }
                let cells: Vec<String> = batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), row))
                    .collect();
                let _ = write!(out, "\n  {}", cells.join(" | "));
                shown += 1;
            }
        }
        if rows > shown {
            let _ = write!(out, "\n  … {} more", rows - shown);
        }
    }
    out
}

fn cut(text: &str) -> String {
    if text.chars().count() <= CELL_CHARS {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(CELL_CHARS).collect();
        short.push('…');
        short
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::from("0x");
    for byte in bytes.iter().take(CELL_CHARS / 2) {
        let _ = write!(out, "{byte:02x}");
    }
    if bytes.len() > CELL_CHARS / 2 {
        out.push('…');
    }
    out
}

/// One cell, formatted.
fn cell(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "null".to_owned();
    }
    let text = match array.data_type() {
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).to_string(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).to_string(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).to_string(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).to_string(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).to_string(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).to_string(),
        DataType::Float16 => array.as_primitive::<Float16Type>().value(row).to_string(),
        DataType::Float32 => array.as_primitive::<Float32Type>().value(row).to_string(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Date32 => format!("date32 {}", array.as_primitive::<Date32Type>().value(row)),
        DataType::Utf8 => format!("{:?}", array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => format!("{:?}", array.as_string::<i64>().value(row)),
        DataType::Utf8View => format!("{:?}", array.as_string_view().value(row)),
        DataType::Binary => hex(array.as_binary::<i32>().value(row)),
        DataType::LargeBinary => hex(array.as_binary::<i64>().value(row)),
        DataType::FixedSizeBinary(_) => hex(array.as_fixed_size_binary().value(row)),
        other => format!("<{other}>"),
    };
    cut(&text)
}
