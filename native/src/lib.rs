//! meterline's native decoder (issue 17): token usage events, from the log's bytes straight
//! to Arrow column buffers, with no Python object per event. Built with the package
//! (setuptools-rust, pyproject.toml); schemas/native_decode.py is its only caller and wraps
//! the buffers as Arrow arrays without copying.
//!
//! It only ever ACCEPTS, like schemas/fast_decode.py: a record it does not fully check
//! comes back as an index for the Python path (fast_token_event, else parse_event), so a
//! gap here costs speed, never a wrong bill. The rules on the labels (source URI, media
//! type, provider name, lengths, control characters in them, status / error_type) are
//! NOT checked here: each event gets the index of its distinct label combination, and
//! Python checks each combination once with fast_decode's own `_labels_ok` (a few hundred
//! per log), so those rules cannot drift from the reference. native/README.md has the
//! table of which rules are in; tests/schemas/test_native_decode_differential.py proves
//! that whatever this accepts, the reference accepts with equal column values.
//!
//! A panic must never take the processor down: the crate unwinds (Cargo.toml), the
//! decode pass runs under `catch_unwind` and a panic there comes back as a RuntimeError.

use std::borrow::Cow;
use std::collections::HashMap;

use std::panic::AssertUnwindSafe;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use serde::{Deserialize, Deserializer};

const TOKENS: &str = "io.meterline.usage.tokens";
const MAX_TOKENS: u64 = 1_000_000_000_000; // schemas.usage.MAX_TOKENS
const MAX_LATENCY_MS: u64 = (1 << 32) - 1; // schemas.usage.MAX_LATENCY_MS
const MAX_HTTP_STATUS: u64 = 599;

/// A member that may be absent (`Unset`); JSON null is NOT absent: it fails to
/// deserialize (String/u64/bool refuse null) and the record falls back, as msgspec does.
#[derive(Default)]
enum Maybe<T> {
    #[default]
    Unset,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Maybe<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Maybe::Set)
    }
}

impl<T: Copy + Default> Maybe<T> {
    fn or_default(&self) -> T {
        match self {
            Maybe::Set(v) => *v,
            Maybe::Unset => T::default(),
        }
    }
}

fn text<'a, 'b>(m: &'b Maybe<Cow<'a, str>>) -> &'b str {
    match m {
        Maybe::Set(v) => v,
        Maybe::Unset => "",
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenData<'a> {
    #[serde(default, borrow)]
    feature: Maybe<Cow<'a, str>>,
    #[serde(default, borrow)]
    user: Maybe<Cow<'a, str>>,
    #[serde(default, borrow)]
    metadata: Maybe<HashMap<Cow<'a, str>, Cow<'a, str>>>,
    #[serde(default, borrow)]
    status: Maybe<Cow<'a, str>>,
    #[serde(default, borrow)]
    error_type: Maybe<Cow<'a, str>>,
    #[serde(default)]
    http_status: Maybe<u64>,
    #[serde(default)]
    latency_ms: Maybe<u64>,
    #[serde(borrow)]
    provider: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(default)]
    input_tokens: Maybe<u64>,
    #[serde(default)]
    output_tokens: Maybe<u64>,
    #[serde(default)]
    cache_read_tokens: Maybe<u64>,
    #[serde(default)]
    cache_write_tokens: Maybe<u64>,
    #[serde(default)]
    cache_write_1h_tokens: Maybe<u64>,
    #[serde(default)]
    reasoning_tokens: Maybe<u64>,
    #[serde(default)]
    input_audio_tokens: Maybe<u64>,
    #[serde(default)]
    output_audio_tokens: Maybe<u64>,
    #[serde(default)]
    estimated: Maybe<bool>,
    #[serde(default, borrow)]
    service_tier: Maybe<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEvent<'a> {
    #[serde(borrow)]
    specversion: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    subject: Cow<'a, str>,
    #[serde(borrow)]
    data: TokenData<'a>,
    #[serde(default, borrow)]
    time: Maybe<Cow<'a, str>>,
    #[serde(default, borrow)]
    datacontenttype: Maybe<Cow<'a, str>>,
}

/// schemas.limits.CONTROL: U+0000-U+001F, U+007F-U+009F.
fn has_control(s: &str) -> bool {
    // Fast on ASCII: only bytes < 0x20 and 0x7f matter; C1 is two bytes (0xC2 0x80-0x9F).
    let b = s.as_bytes();
    for i in 0..b.len() {
        let c = b[i];
        if c < 0x20 || c == 0x7f {
            return true;
        }
        if c == 0xC2 && i + 1 < b.len() && (0x80..=0x9F).contains(&b[i + 1]) {
            return true;
        }
    }
    false
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Howard Hinnant's algorithm: days since 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (what the gateway writes) -> epoch ms; None for any
/// other form (the Python path reads those) or an impossible date / out-of-bounds time.
fn time_ms(t: &str, earliest: i64, latest: i64) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let mut v = 0i64;
        for &c in &b[from..to] {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + (c - b'0') as i64;
        }
        Some(v)
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, s, ms) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&mo) || h > 23 || mi > 59 || s > 59 || y < 1 {
        return None;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let dim = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][(mo - 1) as usize];
    if d < 1 || d > dim {
        return None;
    }
    let moment = (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1000 + ms;
    if moment < earliest || moment >= latest {
        return None;
    }
    Some(moment)
}

/// A string column as Arrow's offsets (int32) + data buffers.
#[derive(Default)]
struct StrCol {
    offsets: Vec<i32>,
    data: Vec<u8>,
}

impl StrCol {
    fn with_capacity(n: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StrCol { offsets, data: Vec::with_capacity(bytes) }
    }
    fn push(&mut self, s: &[u8]) {
        self.data.extend_from_slice(s);
        self.offsets.push(self.data.len() as i32);
    }
}

const INT_COLUMNS: usize = 12; // time, 8 token fields, http_status, latency_ms, estimated
const STR_COLUMNS: usize = 8; // id, source, subject, model, feature, user, status, error_type

struct Columns {
    rows: usize,
    ints: Vec<i64>, // INT_COLUMNS columns, column k at k * n (n = values given)
    strs: [StrCol; STR_COLUMNS],
    raw: StrCol, // the logged bytes (the `data` column)
    combo: Vec<i32>,
    combos: Vec<[Option<String>; 9]>,
    fallback: Vec<usize>,
    accepted: Vec<i32>,
}

fn push_key(key: &mut Vec<u8>, s: Option<&str>) {
    // Length-prefixed, so no two distinct combinations share a key.
    match s {
        None => key.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(s) => {
            key.extend_from_slice(&(s.len() as u32).to_le_bytes());
            key.extend_from_slice(s.as_bytes());
        }
    }
}

fn decode_all(values: &[&[u8]], earliest: i64, latest: i64) -> Columns {
    let n = values.len();
    let total: usize = values.iter().map(|v| v.len()).sum();
    let mut cols = Columns {
        rows: 0,
        ints: vec![0; n * INT_COLUMNS],
        // A value holds each of its strings: the values' total bounds every column, and
        // pages never written are never faulted in, so no column is ever reallocated.
        strs: std::array::from_fn(|_| StrCol::with_capacity(n, total)),
        raw: StrCol::with_capacity(n, total),
        combo: Vec::with_capacity(n),
        combos: Vec::new(),
        fallback: Vec::new(),
        accepted: Vec::with_capacity(n),
    };
    let mut seen: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut key: Vec<u8> = Vec::with_capacity(256);
    for (index, value) in values.iter().enumerate() {
        // serde_json by default; sonic-rs (SIMD) with `--features sonic`: same serde
        // derive, so the same members, types and refusals (duplicates, null, 1.0).
        #[cfg(not(feature = "sonic"))]
        let parsed: Result<TokenEvent, _> = serde_json::from_slice(value);
        #[cfg(feature = "sonic")]
        let parsed: Result<TokenEvent, _> = sonic_rs::from_slice(value);
        let event: TokenEvent = match parsed {
            Ok(e) => e,
            Err(_) => {
                cols.fallback.push(index);
                continue;
            }
        };
        let data = &event.data;
        let time = match &event.time {
            Maybe::Set(t) => time_ms(t, earliest, latest),
            Maybe::Unset => None, // the ingest time: left to the Python path here
        };
        let ok = event.specversion == "1.0"
            && event.kind == TOKENS
            && !event.id.is_empty()
            && !event.subject.is_empty()
            && time.is_some()
            && !has_control(&event.id)
            && !has_control(&event.subject)
            // time: its digits and letters were read above, no control character possible
            && match &data.metadata {
                Maybe::Unset => true,
                Maybe::Set(m) => m.is_empty(), // non-empty metadata: the Python path (not yet here)
            };
        if !ok {
            cols.fallback.push(index);
            continue;
        }
        let tokens = [
            data.input_tokens.or_default(),
            data.output_tokens.or_default(),
            data.cache_read_tokens.or_default(),
            data.cache_write_tokens.or_default(),
            data.cache_write_1h_tokens.or_default(),
            data.reasoning_tokens.or_default(),
            data.input_audio_tokens.or_default(),
            data.output_audio_tokens.or_default(),
        ];
        let http = data.http_status.or_default();
        let latency = data.latency_ms.or_default();
        if tokens.iter().any(|&t| t > MAX_TOKENS)
            || http > MAX_HTTP_STATUS
            || latency > MAX_LATENCY_MS
            || tokens[2] + tokens[3] + tokens[4] + tokens[6] > tokens[0]
            || tokens[5] + tokens[7] > tokens[1]
        {
            cols.fallback.push(index);
            continue;
        }
        // The label combination: its index, new ones kept for Python to check once.
        let media = match &event.datacontenttype {
            Maybe::Set(m) => Some(m.as_ref()),
            Maybe::Unset => None,
        };
        let labels: [Option<&str>; 9] = [
            Some(&event.source),
            media,
            Some(&data.provider),
            Some(&data.model),
            Some(text(&data.feature)),
            Some(text(&data.user)),
            Some(text(&data.service_tier)),
            Some(text(&data.status)),
            Some(text(&data.error_type)),
        ];
        key.clear();
        for l in labels {
            push_key(&mut key, l);
        }
        let combo = match seen.get(&key) {
            Some(&c) => c,
            None => {
                let c = cols.combos.len() as i32;
                cols.combos.push(labels.map(|l| l.map(str::to_owned)));
                seen.insert(key.clone(), c);
                c
            }
        };
        cols.combo.push(combo);
        let t = time.unwrap_or(0);
        let ints = [
            t,
            tokens[0] as i64,
            tokens[1] as i64,
            tokens[2] as i64,
            tokens[3] as i64,
            tokens[4] as i64,
            tokens[5] as i64,
            tokens[6] as i64,
            tokens[7] as i64,
            http as i64,
            latency as i64,
            data.estimated.or_default() as i64,
        ];
        let row = cols.rows;
        for (k, v) in ints.into_iter().enumerate() {
            cols.ints[k * n + row] = v;
        }
        let strs: [&str; STR_COLUMNS] = [
            &event.id,
            &event.source,
            &event.subject,
            &data.model,
            text(&data.feature),
            text(&data.user),
            text(&data.status),
            text(&data.error_type),
        ];
        for (col, s) in cols.strs.iter_mut().zip(strs) {
            col.push(s.as_bytes());
        }
        cols.raw.push(value);
        cols.accepted.push(index as i32);
        cols.rows += 1;
    }
    cols
}

enum Owned {
    U8(Vec<u8>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

/// A Vec handed to Python as is: Arrow wraps it through the buffer protocol (no copy).
#[pyclass(frozen)]
struct Buf {
    data: Owned,
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        match &self.data {
            Owned::U8(v) => v,
            Owned::I32(v) => as_bytes(v),
            Owned::I64(v) => as_bytes(v),
        }
    }
}

#[pymethods]
impl Buf {
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let data = slf.get().bytes();
        // Read-only: the bytes are Arrow's from here on.
        let rc = pyo3::ffi::PyBuffer_FillInfo(
            view,
            slf.as_ptr(),
            data.as_ptr() as *mut std::os::raw::c_void,
            data.len() as pyo3::ffi::Py_ssize_t,
            1,
            flags,
        );
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, _view: *mut pyo3::ffi::Py_buffer) {}

    fn __len__(&self) -> usize {
        self.bytes().len()
    }
}

fn buf(py: Python<'_>, data: Owned) -> PyResult<Py<Buf>> {
    Py::new(py, Buf { data })
}

fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // Plain integers, read as their bytes (native endian, as Arrow's buffers are).
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// decode_tokens(values, earliest_ms, latest_ms, release_gil) ->
///   (rows, ints, strs, raw, combo_ids, combos, fallback, accepted)
/// Each buffer is a Buf (buffer protocol, no copy). ints: INT_COLUMNS int64 columns, column
/// k from value k * len(values), `rows` of them;
/// strs: list of (offsets, data); raw: (offsets, data) of the accepted values;
/// combo_ids: int32 per row; combos: list of 9-tuples; fallback: indexes for Python;
/// accepted: int32 index of each row's value.
#[pyfunction]
#[pyo3(signature = (values, earliest_ms, latest_ms, release_gil=true))]
fn decode_tokens<'py>(
    py: Python<'py>,
    values: &Bound<'py, PyList>,
    earliest_ms: i64,
    latest_ms: i64,
    release_gil: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    let owned: Vec<Bound<'py, PyBytes>> =
        values.iter().map(|v| v.downcast_into::<PyBytes>().map_err(PyErr::from)).collect::<PyResult<_>>()?;
    let slices: Vec<&[u8]> = owned.iter().map(|b| b.as_bytes()).collect();
    // Arrow's string offsets are int32: past 2 GiB in one batch they would wrap and the
    // columns would silently point at the wrong bytes (a wrong bill). Refuse the batch;
    // the caller sends it whole to the Python path.
    let total: usize = slices.iter().map(|v| v.len()).sum();
    if total > i32::MAX as usize || slices.len() > i32::MAX as usize {
        return Err(PyValueError::new_err(format!(
            "decode_tokens: a batch of {} values, {total} bytes, exceeds Arrow's int32 offsets",
            slices.len()
        )));
    }
    // A panic in the pass (a decoder bug) becomes a RuntimeError the caller can catch
    // like any other error, rather than pyo3's PanicException (a BaseException).
    let pass = || {
        std::panic::catch_unwind(AssertUnwindSafe(|| decode_all(&slices, earliest_ms, latest_ms)))
    };
    let outcome = if release_gil {
        // The bytes objects are immutable and `owned` keeps them alive meanwhile.
        py.allow_threads(pass)
    } else {
        pass()
    };
    let cols = outcome.map_err(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        PyRuntimeError::new_err(format!("decode_tokens panicked: {why}"))
    })?;
    let rows = cols.rows;
    let strs = PyList::empty_bound(py);
    for col in cols.strs {
        strs.append((buf(py, Owned::I32(col.offsets))?, buf(py, Owned::U8(col.data))?))?;
    }
    let raw = (buf(py, Owned::I32(cols.raw.offsets))?, buf(py, Owned::U8(cols.raw.data))?);
    let combos = PyList::empty_bound(py);
    for c in &cols.combos {
        combos.append(PyTuple::new_bound(py, c.iter().map(|s| s.as_deref())))?;
    }
    Ok(PyTuple::new_bound(
        py,
        [
            rows.into_py(py),
            buf(py, Owned::I64(cols.ints))?.into_py(py),
            strs.into_py(py),
            raw.into_py(py),
            buf(py, Owned::I32(cols.combo))?.into_py(py),
            combos.into_py(py),
            cols.fallback.into_py(py),
            buf(py, Owned::I32(cols.accepted))?.into_py(py),
        ],
    ))
}

/// Panics on purpose: the test that a panic reaches Python as an exception (the crate
/// unwinds) instead of aborting the interpreter. Nothing else calls it.
#[pyfunction]
fn _panic_for_tests(message: &str) {
    panic!("{message}");
}

#[pymodule]
fn meterline_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add_class::<Buf>()?;
    Ok(())
}
