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

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::trace::{Geometry, Trace};

pub const HEADER_START: &[u8] = b"Layer ID,";

pub fn read(path: &Path, reader: impl Read) -> Result<Trace> {
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
    loop {
        let more = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| csv_error(path, &e))?;
        if !more {
            break;
        }
        let line = rec.position().map_or(0, |p| p.line());
        if rec.len() != 4 {
            return Err(Error::at_line(
                path,
                line,
                format!("expected 4 fields, found {}", rec.len()),
            ));
        }
        let layer = parse_field(&rec[0]).ok_or_else(|| {
            Error::at_line(path, line, "Layer ID is not a number from 0 to 65535")
        })?;
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
        parse_list(&rec[3], &mut experts).ok_or_else(|| {
            Error::at_line(
                path,
                line,
                "Activated Expert IDs is not a list like \"[8, 22, 43]\"",
            )
        })?;
        let k = *top_k.get_or_insert(experts.len());
        if experts.len() != k || k == 0 {
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

fn csv_error(path: &Path, e: &csv::Error) -> Error {
    match e.position() {
        Some(p) => Error::at_line(path, p.line(), csv_kind(e)),
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

fn parse_field(s: &[u8]) -> Option<u16> {
    std::str::from_utf8(s).ok()?.trim().parse().ok()
}

/// `[8, 22, 43]` -> experts.
fn parse_list(s: &[u8], out: &mut Vec<u16>) -> Option<()> {
    let s = std::str::from_utf8(s).ok()?.trim();
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return Some(());
    }
    for part in inner.split(',') {
        out.push(part.trim().parse().ok()?);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,How,\"[8, 2]\"\n1,0,\"Ġ,\",\"[1, 3]\"\n2,0,How,\"[0, 4]\"\n2,0,\"Ġ,\",\"[5, 6]\"\n";

    #[test]
    fn transposes_layer_blocks_into_tokens() {
        let t = read(Path::new("p.csv"), TEXT.as_bytes()).unwrap();
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
        let e = read(Path::new("p.csv"), text.as_bytes()).unwrap_err();
        assert_eq!(e.0, "p.csv: layer 2 has 1 tokens but layer 1 has 2");
        let text = "Layer ID,Batch Number,Token,Activated Expert IDs\n1,0,a,\"[8, x]\"\n";
        let e = read(Path::new("p.csv"), text.as_bytes()).unwrap_err();
        assert!(e.0.starts_with("p.csv:2: Activated Expert IDs"), "{e}");
    }
}
