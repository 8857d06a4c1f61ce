//! The array pandas builds from one column of cells, built here instead.
//!
//! `Results.to_dataframe()` used to hand pandas one Python list per column, which pandas
//! scans to infer a dtype and then converts. [`of_cells`] decides the dtype pandas
//! infers from the list of the column's values (`None` where a run lacks the key or
//! holds `null`) and lays the values out natively, for the unambiguous cases; every
//! other column (text, JSON, mixed kinds, integers a float cannot hold exactly) answers
//! `None` and keeps its list, so pandas decides as before. `tests/test_results_frames.py`
//! checks dtypes and values against `pandas.DataFrame` of the lists.

use crate::columns::Cell;

/// The largest integer magnitude every `f64` holds exactly.
const EXACT_IN_F64: i64 = 1 << 53;

/// A column as a native array: numpy dtype name and its bytes (native byte order).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub dtype: &'static str,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Kinds {
    ints: bool,
    floats: bool,
    bools: bool,
    gaps: bool,
    other: bool,
}

fn kinds(cells: &[Cell]) -> Kinds {
    let mut seen = Kinds::default();
    for cell in cells {
        match cell {
            Cell::Missing | Cell::Null => seen.gaps = true,
            Cell::Int(_) => seen.ints = true,
            Cell::Float(_) => seen.floats = true,
            Cell::Bool(_) => seen.bools = true,
            Cell::UInt(_) | Cell::Str(_) | Cell::Json(_) => {
                seen.other = true;
                break;
            }
        }
    }
    seen
}

/// The array pandas infers from the column's values, or `None` to let pandas decide.
///
/// - only integers, no gap: `int64`;
/// - only booleans, no gap: `bool`;
/// - numbers with at least one float or gap: `float64`, a gap as NaN, integers within
///   2^53 converted exactly (a larger one: `None`, pandas' rounding is its own);
/// - anything else (no rows, only gaps, text, JSON, integers past `i64`, booleans mixed
///   with anything): `None`.
pub fn of_cells(cells: &[Cell]) -> Option<Frame> {
    let seen = kinds(cells);
    if seen.other || cells.is_empty() {
        return None;
    }
    if seen.bools {
        if seen.ints || seen.floats || seen.gaps {
            return None;
        }
        let data = cells
            .iter()
            .map(|c| u8::from(matches!(c, Cell::Bool(true))))
            .collect();
        return Some(Frame {
            dtype: "bool",
            data,
        });
    }
    if !seen.ints && !seen.floats {
        return None;
    }
    let mut data = Vec::with_capacity(cells.len() * 8);
    if seen.ints && !seen.floats && !seen.gaps {
        for cell in cells {
            if let Cell::Int(i) = cell {
                data.extend_from_slice(&i.to_ne_bytes());
            }
        }
        return Some(Frame {
            dtype: "int64",
            data,
        });
    }
    for cell in cells {
        let value = match cell {
            Cell::Int(i) if (-EXACT_IN_F64..=EXACT_IN_F64).contains(i) => *i as f64,
            Cell::Float(f) => *f,
            Cell::Missing | Cell::Null => f64::NAN,
            _ => return None,
        };
        data.extend_from_slice(&value.to_ne_bytes());
    }
    Some(Frame {
        dtype: "float64",
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(frame: &Frame) -> Vec<f64> {
        frame
            .data
            .chunks(8)
            .map(|b| f64::from_ne_bytes(b.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn dtypes_follow_what_pandas_infers() {
        let int = of_cells(&[Cell::Int(1), Cell::Int(-2)]).unwrap();
        assert_eq!((int.dtype, int.data.len()), ("int64", 16));
        let gap = of_cells(&[Cell::Int(1), Cell::Missing]).unwrap();
        assert_eq!(gap.dtype, "float64");
        assert!(floats(&gap)[0] == 1.0 && floats(&gap)[1].is_nan());
        assert_eq!(of_cells(&[Cell::Bool(true)]).unwrap().data, vec![1]);
        assert!(of_cells(&[Cell::Bool(true), Cell::Null]).is_none());
        assert!(of_cells(&[Cell::Missing, Cell::Null]).is_none());
        assert!(of_cells(&[]).is_none());
        assert!(of_cells(&[Cell::Str("a".into())]).is_none());
        assert!(of_cells(&[Cell::Int(i64::MAX), Cell::Float(1.0)]).is_none());
        assert_eq!(of_cells(&[Cell::Int(i64::MAX)]).unwrap().dtype, "int64");
    }
}
