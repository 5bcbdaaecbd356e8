//! Sizes on the command line: the one grammar of `128GiB`, `512MiB`, `1.5TiB`, `64G`
//! (binary units), read as GiB ([`parse_size_gib`], a bare number is GiB) or as bytes
//! ([`parse_bytes`], a bare number is bytes, and KiB is allowed).

/// `128GiB`, `512MiB`, `1.5TiB`, `64G` (binary units; a bare number is GiB) -> GiB.
pub fn parse_size_gib(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, scale) = [
        ("tib", 1024.0),
        ("gib", 1.0),
        ("mib", 1.0 / 1024.0),
        ("kib", 1.0 / 1048576.0),
        ("t", 1024.0),
        ("g", 1.0),
        ("m", 1.0 / 1024.0),
    ]
    .iter()
    .find_map(|(suf, sc)| lower.strip_suffix(suf).map(|n| (n.trim().to_string(), *sc)))
    .unwrap_or((lower.clone(), 1.0));
    if lower.ends_with("gb") || lower.ends_with("mb") || lower.ends_with("tb") {
        // RAM is sold in binary units under decimal names: "64 GB" of modules is 64 GiB.
        let binary = format!("{}i{}", &t[..t.len() - 1], &t[t.len() - 1..]);
        return Err(format!(
            "`{t}`: sizes are binary: write {binary} (memory sold as {t} holds {binary})"
        ));
    }
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{t}` is not a size like 128GiB or 512MiB"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{t}`: a size must be zero or positive"));
    }
    Ok(v * scale)
}

/// A byte size: `2MiB`, `512KiB`, `1GiB` or plain bytes.
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<u64>() {
        return Ok(v);
    }
    let lower = t.to_ascii_lowercase();
    if let Some(n) = lower
        .strip_suffix("kib")
        .or_else(|| lower.strip_suffix('k'))
    {
        let v: f64 = n
            .trim()
            .parse()
            .map_err(|_| format!("`{t}` is not a size like 2MiB"))?;
        return Ok((v * 1024.0).round() as u64);
    }
    parse_size_gib(t).map(|g| (g * (1u64 << 30) as f64).round() as u64)
}

/// GiB rounded up to a tenth, for "fits from X GiB" and a range that reaches it: X
/// printed with one decimal never falls below the size it names.
pub fn tenth_up(gib: f64) -> f64 {
    (gib * 10.0).ceil() / 10.0
}

/// A number for a message, short: `1e-300` rather than its 300 digits.
pub fn shown(v: f64) -> String {
    if v.is_finite() && v != 0.0 && !(1e-6..1e15).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        v.to_string()
    }
}

/// The most `--read-ahead-kb` takes: 1 GiB, far beyond any device's (the kernel's
/// default is 128 KiB; a few MiB on RAID arrays).
pub const MAX_READ_AHEAD_KB: u64 = 1 << 20;

/// A read_ahead_kb: KiB in whole 4 KiB pages (the kernel keeps whole pages of it), from
/// one page to [`MAX_READ_AHEAD_KB`].
pub fn parse_read_ahead_kb(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let kb: u64 = t
        .parse()
        .map_err(|_| format!("`{t}` is not a whole number of KiB (128 by default)"))?;
    if !(4..=MAX_READ_AHEAD_KB).contains(&kb) || !kb.is_multiple_of(4) {
        return Err(format!(
            "`{t}`: read_ahead_kb is KiB in whole 4 KiB pages, from 4 to {MAX_READ_AHEAD_KB} (128 by default)"
        ));
    }
    Ok(kb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_from_rounds_up() {
        assert_eq!(tenth_up(24.04), 24.1);
        assert_eq!(tenth_up(24.0), 24.0);
        assert_eq!(tenth_up(20.31), 20.4);
    }

    #[test]
    fn numbers_in_messages_stay_short() {
        assert_eq!(shown(1e-300), "1e-300");
        assert_eq!(shown(-1e30), "-1e30");
        assert_eq!(shown(0.2), "0.2");
        assert_eq!(shown(-1.0), "-1");
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(f64::NAN), "NaN");
    }

    #[test]
    fn read_ahead_is_whole_pages_of_kib() {
        assert_eq!(parse_read_ahead_kb("128"), Ok(128));
        assert_eq!(parse_read_ahead_kb("4"), Ok(4));
        assert_eq!(parse_read_ahead_kb("1048576"), Ok(1 << 20));
        for bad in ["0", "5", "2", "1048580", "999999999", "-4", "128k", "1.5"] {
            assert!(parse_read_ahead_kb(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_gib("128GiB").unwrap(), 128.0);
        assert_eq!(parse_size_gib("512MiB").unwrap(), 0.5);
        assert_eq!(parse_size_gib("1TiB").unwrap(), 1024.0);
        assert_eq!(parse_size_gib("0GiB").unwrap(), 0.0);
        assert_eq!(parse_size_gib("64").unwrap(), 64.0);
        assert!(parse_size_gib("128GB").is_err());
        assert!(parse_size_gib("-1GiB").is_err());
        assert!(parse_size_gib("lots").is_err());
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_bytes("512KiB").unwrap(), 512 << 10);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert!(parse_bytes("2MB").is_err());
    }
}
