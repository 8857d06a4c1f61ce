//! The byte codec of the column snapshot: the body's streaming encoder and its decoder.

use std::io::Write;

use super::{combine, word_sum, SUM_PIECE};
use crate::columns::Cell;

/// The body's encoder: writes whole pieces of [`SUM_PIECE`] bytes to the sink as they
/// fill (the checksum is made of their sums, see [`body_sum`]).
pub(super) struct Out<'w> {
    sink: &'w mut dyn Write,
    piece: Vec<u8>,
    sums: Vec<u64>,
    length: u64,
    error: Option<std::io::Error>,
}

impl<'w> Out<'w> {
    pub(super) fn new(sink: &'w mut dyn Write) -> Out<'w> {
        Out {
            sink,
            piece: Vec::with_capacity(2 * SUM_PIECE),
            sums: Vec::new(),
            length: 0,
            error: None,
        }
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.piece.extend_from_slice(bytes);
        while self.piece.len() >= SUM_PIECE {
            self.spill(SUM_PIECE);
        }
    }

    pub(super) fn byte(&mut self, byte: u8) {
        self.bytes(&[byte]);
    }

    /// Sum and write the first `n` bytes held (one piece of the checksum, see
    /// [`body_sum`]); the buffer is kept, so no piece allocates.
    pub(super) fn spill(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.sums.push(word_sum(&self.piece[..n]));
        self.length += n as u64;
        if self.error.is_none() {
            if let Err(e) = self.sink.write_all(&self.piece[..n]) {
                self.error = Some(e);
            }
        }
        self.piece.drain(..n);
    }

    /// Write the last piece and the trailer.
    pub(super) fn finish(mut self) -> std::io::Result<()> {
        self.spill(self.piece.len());
        if let Some(e) = self.error {
            return Err(e);
        }
        self.sink.write_all(&self.length.to_le_bytes())?;
        self.sink.write_all(&combine(&self.sums, self.length))
    }

    pub(super) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    pub(super) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    pub(super) fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    pub(super) fn f64(&mut self, v: f64) {
        self.bytes(&v.to_bits().to_le_bytes());
    }
    pub(super) fn str(&mut self, s: &str) {
        // No string of a record summary comes near 4 GiB; one that did makes the
        // snapshot fail to save rather than be wrong.
        match u32::try_from(s.len()) {
            Ok(n) => {
                self.u32(n);
                self.bytes(s.as_bytes());
            }
            Err(_) => {
                let e = std::io::Error::other("a string too long for a column snapshot");
                self.error.get_or_insert(e);
            }
        }
    }
    pub(super) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.byte(1);
                self.str(s);
            }
            None => self.byte(0),
        }
    }
    pub(super) fn cell(&mut self, cell: &Cell) {
        match cell {
            Cell::Missing => self.byte(0),
            Cell::Null => self.byte(1),
            Cell::Bool(b) => self.byte(2 + u8::from(*b)),
            Cell::Int(v) => {
                self.byte(4);
                self.i64(*v);
            }
            Cell::UInt(v) => {
                self.byte(5);
                self.u64(*v);
            }
            Cell::Float(v) => {
                self.byte(6);
                self.f64(*v);
            }
            Cell::Str(s) => {
                self.byte(7);
                self.str(s);
            }
            Cell::Json(v) => {
                self.byte(8);
                self.str(&v.to_string());
            }
        }
    }
}

pub(super) struct In<'a> {
    pub(super) data: &'a [u8],
    pub(super) at: usize,
}

impl<'a> In<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let bytes = self.data.get(self.at..end)?;
        self.at = end;
        Some(bytes)
    }
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(super) fn i128(&mut self) -> Option<i128> {
        Some(i128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    pub(super) fn len32(&mut self) -> Option<usize> {
        let v = self.u32()? as usize;
        (v <= self.data.len()).then_some(v)
    }
    /// A count or position: bounded by what is left, so a forged length cannot ask for
    /// an allocation bigger than the file.
    pub(super) fn len(&mut self) -> Option<usize> {
        let v = usize::try_from(self.u64()?).ok()?;
        (v <= self.data.len()).then_some(v)
    }
    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(super) fn f64(&mut self) -> Option<f64> {
        self.u64().map(f64::from_bits)
    }
    pub(super) fn str(&mut self) -> Option<String> {
        let n = self.len32()?;
        std::str::from_utf8(self.take(n)?).ok().map(str::to_string)
    }
    pub(super) fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }
    pub(super) fn cell(&mut self) -> Option<Cell> {
        Some(match self.u8()? {
            0 => Cell::Missing,
            1 => Cell::Null,
            2 => Cell::Bool(false),
            3 => Cell::Bool(true),
            4 => Cell::Int(self.i64()?),
            5 => Cell::UInt(self.u64()?),
            6 => Cell::Float(self.f64()?),
            7 => Cell::Str(self.str()?),
            8 => Cell::Json(serde_json::from_str(&self.str()?).ok()?),
            _ => return None,
        })
    }
    pub(super) fn many<T>(
        &mut self,
        n: usize,
        mut one: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(one(self)?);
        }
        Some(out)
    }
}
