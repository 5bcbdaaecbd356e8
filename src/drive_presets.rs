//! Drive presets (`--ssd NAME`, `moe-spill hardware --drives`): the figures of a drive
//! model that are published for it, each with its source in docs/drives.md.
//!
//! - The rated sequential read (the manufacturer's figure at the capacity named).
//! - The rated random-read IOPS (4 KiB at a deep queue), which caps small requests.
//! - The controller's largest transfer (NVMe MDTS, from `smartctl` dumps of the drive
//!   under Linux in linuxhw/SMART), which caps the requests a buffered read ahead or an
//!   O_DIRECT read sends (`max_sectors_kb`, `io_engine.rs`).
//!
//! How fast one request streams at queue depth 1 is published for too few drives to
//! tell them apart (docs/drives.md): every preset keeps the default curve's latency and
//! single-request rate, so presets differ in their ratings and transfer size only.

use crate::drive::DEFAULT_MAX_SECTORS_KB;

/// One drive model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DrivePreset {
    /// The name `--ssd` takes.
    pub name: &'static str,
    /// Model, capacity, interface and NAND: the drive whose figures these are.
    pub description: &'static str,
    /// Rated sequential read, GB/s (10^9 B/s).
    pub rated_gbs: f64,
    /// The controller's largest transfer, KiB (MDTS x 4 KiB pages); None where no dump
    /// of the drive was found.
    pub mdts_kib: Option<u64>,
    /// Rated random read, thousands of IOPS (4 KiB at a deep queue); None where no
    /// rating of the capacity was found.
    pub kiops: Option<f64>,
}

impl DrivePreset {
    /// The `max_sectors_kb` the preset gets: its largest transfer capped at the block
    /// layer's [`DEFAULT_MAX_SECTORS_KB`] (Linux up to 6.16), or that cap where the MDTS
    /// is unknown.
    pub fn max_sectors_kb(&self) -> u64 {
        self.mdts_kib
            .map_or(DEFAULT_MAX_SECTORS_KB, |m| m.min(DEFAULT_MAX_SECTORS_KB))
    }
}

/// The presets, by interface and then name.
pub const DRIVES: &[DrivePreset] = &[
    DrivePreset {
        name: "970-evo-plus",
        description: "Samsung 970 EVO Plus 2 TB (PCIe 3.0 x4, TLC)",
        rated_gbs: 3.5,
        mdts_kib: Some(512),
        kiops: Some(620.0),
    },
    DrivePreset {
        name: "p3",
        description: "Crucial P3 1 TB (PCIe 3.0 x4, QLC, DRAM-less)",
        rated_gbs: 3.5,
        mdts_kib: Some(256),
        kiops: None,
    },
    DrivePreset {
        name: "980-pro",
        description: "Samsung 980 PRO 1 TB (PCIe 4.0 x4, TLC)",
        rated_gbs: 7.0,
        mdts_kib: Some(512),
        kiops: Some(1000.0),
    },
    DrivePreset {
        name: "990-evo-plus",
        description: "Samsung 990 EVO Plus 2 TB (PCIe 4.0 x4 or 5.0 x2, TLC, DRAM-less)",
        rated_gbs: 7.25,
        mdts_kib: Some(512),
        kiops: Some(1000.0),
    },
    DrivePreset {
        name: "990-pro",
        description: "Samsung 990 PRO 2 TB (PCIe 4.0 x4, TLC)",
        rated_gbs: 7.45,
        mdts_kib: Some(2048),
        kiops: Some(1400.0),
    },
    DrivePreset {
        name: "sn580",
        description: "WD Blue SN580 1 TB (PCIe 4.0 x4, TLC, DRAM-less)",
        rated_gbs: 4.15,
        mdts_kib: Some(1024),
        kiops: Some(600.0),
    },
    DrivePreset {
        name: "sn770",
        description: "WD_BLACK SN770 1 TB (PCIe 4.0 x4, TLC, DRAM-less)",
        rated_gbs: 5.15,
        mdts_kib: Some(1024),
        kiops: Some(740.0),
    },
    DrivePreset {
        name: "sn850x",
        description: "WD_BLACK SN850X 2 TB (PCIe 4.0 x4, TLC)",
        rated_gbs: 7.3,
        mdts_kib: None,
        kiops: Some(1200.0),
    },
    DrivePreset {
        name: "9100-pro",
        description: "Samsung 9100 PRO 2 TB (PCIe 5.0 x4, TLC)",
        rated_gbs: 14.8,
        mdts_kib: Some(512),
        kiops: Some(2200.0),
    },
    DrivePreset {
        name: "sn8100",
        description: "WD_BLACK SN8100 2 TB (PCIe 5.0 x4, TLC)",
        rated_gbs: 14.9,
        mdts_kib: None,
        kiops: Some(2300.0),
    },
    DrivePreset {
        name: "t700",
        description: "Crucial T700 2 TB (PCIe 5.0 x4, TLC)",
        rated_gbs: 12.4,
        mdts_kib: Some(512),
        kiops: Some(1500.0),
    },
];

/// The preset of that name (in any case, as `--hw` takes its presets), or an error
/// listing the names.
pub fn find(name: &str) -> Result<&'static DrivePreset, String> {
    DRIVES
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            let names: Vec<&str> = DRIVES.iter().map(|d| d.name).collect();
            format!(
                "unknown drive `{}`: not a preset ({}; see `moe-spill hardware --drives`); another drive: --ssd-bw and --max-sectors-kb",
                crate::error::printable(name),
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_figures_plausible() {
        for (i, d) in DRIVES.iter().enumerate() {
            assert!(DRIVES[..i].iter().all(|e| e.name != d.name), "{}", d.name);
            assert!((0.5..=16.0).contains(&d.rated_gbs), "{}", d.name);
            // MDTS is a power of two of 4 KiB pages.
            if let Some(m) = d.mdts_kib {
                assert!(m >= 4 && m.is_power_of_two(), "{}", d.name);
            }
            assert_eq!(find(d.name), Ok(d));
        }
        let e = find("990pro").unwrap_err();
        assert!(
            e.starts_with("unknown drive `990pro`: not a preset (970-evo-plus, p3,"),
            "{e}"
        );
        assert!(e.contains("990-pro"), "{e}");
        assert_eq!(find("T700").unwrap().name, "t700");
        assert_eq!(find("990-pro").unwrap().max_sectors_kb(), 1280);
        assert_eq!(find("p3").unwrap().max_sectors_kb(), 256);
        assert_eq!(
            find("sn850x").unwrap().max_sectors_kb(),
            DEFAULT_MAX_SECTORS_KB
        );
    }
}
