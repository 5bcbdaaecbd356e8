//! The MoE-Beyond CSV format (one response per file), as recorded for
//! DeepSeek-V2-Lite in ../shared/traces/deepseek-v2-lite:
//!
//! ```text
//! Layer ID,Batch Number,Token,Activated Expert IDs
//! 1,0,How,"[8, 22, 43, 46, 63, 7]"
//! ```
//!
//! Rows are grouped by layer (all tokens of the first MoE layer, then the next, ...); a
//! token's position is the row's index inside its layer block. The experts are in the
//! router's top-k order. The recording is a prefill pass, but routing is causal, so the
//! tokens are what decoding the same text would route: they are read as decode tokens.

use std::io::{BufRead, Read};
use std::path::Path;

use super::{expert_out_of_range, layer_out_of_range, show, ExpertLimit, MAX_EXPERT_ID};
use crate::error::{Error, Result};
use crate::trace::{Geometry, Trace};

pub const HEADER_START: &[u8] = b"Layer ID,";
/// The header's columns, in order.
const COLUMNS: [&str; 4] = ["Layer ID", "Batch Number", "Token", "Activated Expert IDs"];

/// The header must name the four columns in order: they are read by position, so a
/// reordered or renamed column would read the wrong field.
fn check_header(path: &Path, header: &csv::ByteRecord) -> Result<()> {
    let names: Vec<&[u8]> = header.iter().map(|f| f.trim_ascii()).collect();
    if names
        .iter()
        .copied()
        .eq(COLUMNS.iter().map(|c| c.as_bytes()))
    {
        return Ok(());
    }
    let want = COLUMNS.join(",");
    let msg = if names.len() != COLUMNS.len() {
        format!(
            "header has {} columns, expected the 4 of `{want}`",
            names.len()
        )
    } else {
        let mut sorted = names.clone();
        sorted.sort();
        let mut cols: Vec<&[u8]> = COLUMNS.iter().map(|c| c.as_bytes()).collect();
        cols.sort();
        if sorted == cols {
            format!(
                "header columns are out of order: the header must be `{want}` (columns are read by position)"
            )
        } else {
            let (i, name) = names
                .iter()
                .enumerate()
                .find(|(i, n)| **n != COLUMNS[*i].as_bytes())
                .expect("a column differs");
            format!(
                "header column {} is `{}`, expected `{}` (the header must be `{want}`)",
                i + 1,
                show(name, 40),
                COLUMNS[i]
            )
        }
    };
    Err(Error::at_line(path, 1, msg))
}

/// Read one MoE-Beyond CSV (one response); `limit` is the chosen model's expert count.
pub fn read(path: &Path, reader: impl Read, limit: Option<ExpertLimit>) -> Result<Trace> {
    // The csv crate numbers the lines after a header that ends in CRLF one too low
    // (BurntSushi/rust-csv#395), as the DeepSeek recording's files do: add it back.
    let mut reader = std::io::BufReader::new(reader);
    let head = reader.fill_buf().map_err(|e| Error::io(path, e))?;
    let crlf = head
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|i| i > 0 && head[i - 1] == b'\r');
    let fix = u64::from(crlf);
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let mut layers: Vec<u16> = Vec::new();
    let mut rows_in_layer: Vec<usize> = Vec::new();
    // Layer-major raw experts; transposed to token-major at the end.
    let mut raw: Vec<u16> = Vec::new();
    let mut top_k: Option<usize> = None;
    let mut max_expert: u16 = 0;
    let mut rec = csv::ByteRecord::new();
    let mut experts: Vec<u16> = Vec::with_capacity(16);
    let header = rdr
        .byte_headers()
        .map_err(|e| csv_error(path, &e, 0))?
        .clone();
    check_header(path, &header)?;
    loop {
        let more = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_error(path, &e, fix))?;
        if !more {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line() + fix);
        if rec.len() != 4 {
            return Err(Error::at_line(
                path,
                line,
                format!("expected 4 fields, found {}", rec.len()),
            ));
        }
        let layer = parse_layer(&rec[0]).map_err(|m| Error::at_line(path, line, m))?;
        match layers.last() {
            Some(&l) if l == layer => *rows_in_layer.last_mut().unwrap() += 1,
            _ => {
                if layers.contains(&layer) {
                    return Err(Error::at_line(
                        path,
                        line,
                        format!("rows of layer {layer} are not contiguous (rows must be grouped by layer)"),
                    ));
                }
                if let (Some(&prev), Some(&n)) = (layers.last(), rows_in_layer.first()) {
                    let got = *rows_in_layer.last().unwrap();
                    if got != n {
                        return Err(Error::at_line(
                            path,
                            line,
                            format!(
                                "layer {prev} has {got} tokens but layer {} has {n}",
                                layers[0]
                            ),
                        ));
                    }
                }
                layers.push(layer);
                rows_in_layer.push(1);
            }
        }
        experts.clear();
        parse_list(&rec[3], &mut experts).map_err(|m| Error::at_line(path, line, m))?;
        if experts.is_empty() {
            return Err(Error::at_line(
                path,
                line,
                "empty expert list: every row routes its token to at least one expert",
            ));
        }
        let k = *top_k.get_or_insert(experts.len());
        if experts.len() != k {
            return Err(Error::at_line(
                path,
                line,
                format!(
                    "{} experts where the first row has {k} (top-k)",
                    experts.len()
                ),
            ));
        }
        for (i, &e) in experts.iter().enumerate() {
            if let Some(limit) = limit.filter(|l| e >= l.n_experts) {
                return Err(Error::at_line(path, line, limit.refusal(e)));
            }
            if experts[..i].contains(&e) {
                return Err(Error::at_line(
                    path,
                    line,
                    format!("expert {e} appears twice in one row"),
                ));
            }
            max_expert = max_expert.max(e);
        }
        raw.extend_from_slice(&experts);
    }
    let Some(k) = top_k else {
        return Err(Error::in_file(path, "empty trace: the CSV has no rows"));
    };
    let n_tokens = rows_in_layer[0];
    if let Some((i, &n)) = rows_in_layer
        .iter()
        .enumerate()
        .find(|(_, &n)| n != n_tokens)
    {
        return Err(Error::in_file(
            path,
            format!(
                "layer {} has {n} tokens but layer {} has {n_tokens}",
                layers[i], layers[0]
            ),
        ));
    }
    let geometry = Geometry {
        layers,
        n_experts: max_expert + 1,
        top_k: k as u16,
    };
    super::check_id_space(path, &geometry)?;
    // Transpose: raw[(slot * n_tokens + t) * k + j] -> ids[t * A + slot * k + j].
    let n_layers = geometry.n_layers();
    let a = geometry.accesses_per_token();
    let mut ids = vec![0u16; n_tokens * a];
    for slot in 0..n_layers {
        for t in 0..n_tokens {
            let src = (slot * n_tokens + t) * k;
            let dst = t * a + slot * k;
            ids[dst..dst + k].copy_from_slice(&raw[src..src + k]);
        }
    }
    super::make_dense(&mut ids, &geometry);
    let mut trace = Trace::empty(geometry, false);
    trace.ids = ids.into();
    trace.prompt = vec![false; n_tokens];
    trace.end_response();
    Ok(trace)
}

/// A csv crate error at its line (`fix` added after a CRLF header, as in `read`).
fn csv_error(path: &Path, e: &csv::Error, fix: u64) -> Error {
    match e.position() {
        Some(p) => Error::at_line(path, p.line() + fix, csv_kind(e)),
        None => Error::in_file(path, csv_kind(e)),
    }
}

fn csv_kind(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields, found {len}")
        }
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

/// An integer as written (a sign and digits, of any size), or None.
fn integer(s: &str) -> Option<&str> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

fn parse_layer(s: &[u8]) -> std::result::Result<u16, String> {
    let s = std::str::from_utf8(s).map(str::trim);
    let n = s.ok().and_then(integer).ok_or_else(|| {
        format!(
            "Layer ID `{}` is not a number",
            show(s.unwrap_or("?").as_bytes(), 30)
        )
    })?;
    n.parse().map_err(|_| layer_out_of_range(n))
}

/// `[8, 22, 43]` -> experts.
fn parse_list(s: &[u8], out: &mut Vec<u16>) -> std::result::Result<(), String> {
    let not_a_list = || {
        format!(
            "Activated Expert IDs `{}` is not a list like \"[8, 22, 43]\"",
            show(s, 60)
        )
    };
    let inner = std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.trim().strip_prefix('[')?.strip_suffix(']'))
        .ok_or_else(not_a_list)?;
    if inner.trim().is_empty() {
        return Ok(());
    }
    for part in inner.split(',') {
        let n = integer(part.trim()).ok_or_else(not_a_list)?;
        match n.parse::<u16>() {
            Ok(id) if id <= MAX_EXPERT_ID => out.push(id),
            _ => return Err(expert_out_of_range(n)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,How,\"[8, 2]\"\n1,0,\"Ġ,\",\"[1, 3]\"\n2,0,How,\"[0, 4]\"\n2,0,\"Ġ,\",\"[5, 6]\"\n";

    #[test]
    fn transposes_layer_blocks_into_tokens() {
        let t = read(Path::new("p.csv"), TEXT.as_bytes(), None).unwrap();
        assert_eq!(t.geometry.layers, vec![1, 2]);
        assert_eq!(t.geometry.top_k, 2);
        assert_eq!(t.geometry.n_experts, 9);
        assert_eq!(t.n_tokens(), 2);
        assert_eq!(t.token(0), &[8, 2, 9, 13]);
        assert_eq!(t.token(1), &[1, 3, 14, 15]);
    }

    #[test]
    fn ragged_layers_are_an_error_with_the_line() {
        let text = "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,\"[8, 2]\"\n1,0,b,\"[1, 3]\"\n2,0,a,\"[0, 4]\"\n";
        let e = read(Path::new("p.csv"), text.as_bytes(), None).unwrap_err();
        assert_eq!(e.0, "p.csv: layer 2 has 1 tokens but layer 1 has 2");
        let text = "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,\"[8, x]\"\n";
        let e = read(Path::new("p.csv"), text.as_bytes(), None).unwrap_err();
        assert!(e.0.starts_with("p.csv:2: Activated Expert IDs"), "{e}");
        let text =
            "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,\"[8, 2]\"\n1,0,b,\"[]\"\n";
        let e = read(Path::new("p.csv"), text.as_bytes(), None).unwrap_err();
        assert_eq!(
            e.0,
            "p.csv:3: empty expert list: every row routes its token to at least one expert"
        );
    }
}
