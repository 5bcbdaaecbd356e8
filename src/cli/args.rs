//! Every clap type of the command line, raw as clap parses them, and the one step that
//! turns them into the settings the commands take (`into_*`/`From`): clap-free types
//! owned by the modules that use them. Help text comes from the doc comments here.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::commands::{
    analyze::AnalyzeOptions, convert::ConvertOptions, estimate::EstimateOptions, info::InfoOptions,
    kernel_replay::KernelReplayOptions, models::ModelsOptions, record::RecordOptions,
    simulate::SimulateOptions, sweep::SweepOptions, synth::SynthOptions,
};
use crate::cpu::Kernels;
use crate::hardware::{HardwareOverrides, MAX_DRIVES, MAX_GPUS};
use crate::input::TraceSource;
use crate::io_engine::{EngineChoice, EngineKind};
use crate::kernel::sweep::KernelSweepOptions;
use crate::kernel::Advice;
use crate::replay::Partition;
use crate::report::OutputFormat;
use crate::setup::SetupOptions;
use crate::units::{parse_bytes, parse_read_ahead_kb, parse_size_gib};

/// Where traces come from and how they are read.
#[derive(Args, Debug, Clone)]
pub struct TraceArgs {
    /// Trace files or directories (forum text, MoE-Beyond CSV or .mst; detected from content).
    #[arg(value_name = "TRACE")]
    pub traces: Vec<PathBuf>,
    /// Model preset (inferred from the trace geometry when exactly one preset matches).
    #[arg(long, value_name = "NAME", conflicts_with = "gguf")]
    pub model: Option<String>,
    /// A GGUF model file (any part of a split one) instead of --model and --quant: its
    /// geometry, every layer's expert types and sizes, its non-expert bytes and layout.
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    /// Replay generated tokens only (decode), or prompt-processing tokens too (all).
    #[arg(long, value_enum, ignore_case = true, default_value_t = PhaseArg::Decode)]
    pub phase: PhaseArg,
    /// No progress or notes on stderr (errors are always reported).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PhaseArg {
    Decode,
    All,
}

#[derive(Args, Debug, Clone)]
pub struct FormatArgs {
    /// Output format (default: table on a terminal, CSV otherwise).
    #[arg(long, value_enum, ignore_case = true)]
    pub format: Option<FormatArg>,
}

/// `models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Expert quant: TYPE, gate=T,up=T,down=T, or a llama.cpp file type in capitals
    /// (Q4_K_M, IQ2_XXS ...: its per-layer types) (default: each model's usual, iq4_xs for most).
    #[arg(long, value_name = "SPEC", conflicts_with = "gguf")]
    pub quant: Option<String>,
    /// Describe a GGUF model file instead of the presets: geometry, every MoE layer's
    /// expert types and sizes, non-expert bytes.
    #[arg(long, value_name = "FILE")]
    pub gguf: Option<PathBuf>,
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Tokens per chunk.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk: u32,
    /// Add per-layer routing uniformity (entropy, top-10% share, distinct experts per chunk).
    #[arg(long)]
    pub per_layer: bool,
    #[command(flatten)]
    pub out: FormatArgs,
    /// Write the results to FILE (atomically) instead of stdout (`-`: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// Tag every token as prompt processing: a recording of prompts (the MoE-Beyond
    /// CSV is one) then replays in ubatches with --phase all.
    #[arg(long)]
    pub as_prompt: bool,
}

#[derive(Args, Debug)]
pub struct HardwareListArgs {
    /// List the drive presets (--ssd) instead of the machines
    #[arg(long)]
    pub drives: bool,
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    #[command(flatten)]
    pub out: FormatArgs,
}

/// Command-line overrides of a profile's numbers.
#[derive(Args, Debug, Clone, Default)]
pub struct HardwareArgs {
    /// Hardware preset or profile file (TOML or JSON; see `moe-spill hardware`).
    #[arg(long = "hw", value_name = "NAME|FILE", default_value = "3090-ddr5")]
    pub hw: String,
    /// Override: number of GPUs (0 for CPU only); they share the first GPU's numbers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=MAX_GPUS as i64))]
    pub gpus: Option<u32>,
    /// Override: VRAM per GPU (24 or 24GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib)]
    pub vram: Option<f64>,
    /// Override: VRAM bandwidth per GPU, GB/s.
    #[arg(long, value_name = "GB/S")]
    pub vram_bw: Option<f64>,
    /// Override: VRAM reserve per GPU (KV cache, buffers; 3 or 3GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib)]
    pub vram_reserve: Option<f64>,
    /// Override: host-to-device GB/s of the GPUs' links, for the experts op offload
    /// copies (a prompt ubatch of 32 tokens or more; docs/VALIDATION.md, Prefill)
    #[arg(long, value_name = "GB/S")]
    pub h2d_gbs: Option<f64>,
    /// Override: TFLOP/s the GPUs reach multiplying a batch (prompt processing)
    #[arg(long, value_name = "TFLOP/S")]
    pub gemm_tflops: Option<f64>,
    /// Override: effective RAM bandwidth, GB/s.
    #[arg(long, value_name = "GB/S")]
    pub ram_bw: Option<f64>,
    /// Override: RAM the page cache cannot use (OS, buffers; 6 or 6GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib)]
    pub ram_reserve: Option<f64>,
    /// Override: the drive, a preset (moe-spill hardware --drives): its rated read and
    /// largest request; --ssd-bw and the other SSD flags override it in turn
    #[arg(long, value_name = "DRIVE")]
    pub ssd: Option<String>,
    /// Override: SSD read bandwidth per drive, GB/s.
    #[arg(long, value_name = "GB/S")]
    pub ssd_bw: Option<f64>,
    /// Override: SSD drives in RAID0.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_DRIVES as i64))]
    pub ssd_drives: Option<u32>,
    /// Override: fixed cost of one SSD read request, microseconds (I/O model).
    #[arg(long, value_name = "US")]
    pub ssd_latency_us: Option<f64>,
    /// Override: rate at which one SSD read request streams, GB/s (I/O model).
    #[arg(long, value_name = "GB/S")]
    pub ssd_stream_gbs: Option<f64>,
    /// Override: the drive's rated random-read IOPS in thousands (1400 for 1.4M), which
    /// caps small requests (I/O model) [default: the profile's or --ssd preset's, else 740]
    #[arg(long, value_name = "K")]
    pub ssd_kiops: Option<f64>,
    /// Override: the drive queue's max_sectors_kb, the largest read request (I/O model:
    /// buffered reads ahead and O_DIRECT splits in requests of this size) [default: the
    /// profile's or --ssd preset's, else 1280]
    #[arg(long, value_name = "KB")]
    pub max_sectors_kb: Option<u64>,
    /// Override: the CPU threads that multiply and fault (llama.cpp --threads).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Override: whose CPU kernels multiply, for the published per-type rates
    /// (ik_llama.cpp discussion 164 measured both on one machine)
    #[arg(long, value_enum, ignore_case = true, value_name = "ENGINE")]
    pub cpu_kernels: Option<KernelsArg>,
    /// Override: GB/s one core moves through the page cache by buffered reads (I/O
    /// model: allocate, insert, copy out, reclaim).
    #[arg(long, value_name = "GB/S")]
    pub page_cache_gbs: Option<f64>,
    /// Override: GB/s one core brings in through the page cache by page faults (I/O
    /// model, `--io mmap`: allocate, insert, map, reclaim; default: the page cache's
    /// rate for reads).
    #[arg(long, value_name = "GB/S")]
    pub fault_gbs: Option<f64>,
    /// Override: GB/s one core brings in through the page cache by MADV_WILLNEED and
    /// the faults that map its pages (I/O model, `--mmap-advice willneed`: order-0 pages;
    /// default: the rate for faults).
    #[arg(long, value_name = "GB/S")]
    pub willneed_gbs: Option<f64>,
}

/// The weights' types, when a model preset is priced (a GGUF file says its own).
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Expert quant: TYPE, gate=T,up=T,down=T, or a llama.cpp file type in capitals
    /// (Q4_K_M, IQ2_XXS ...: its per-layer types) (default: the model's usual, iq4_xs for most).
    #[arg(long, value_name = "SPEC", conflicts_with = "gguf")]
    pub quant: Option<String>,
    /// GGUF type of the non-expert weights (attention, shared experts, dense layers, head).
    #[arg(
        long,
        value_name = "TYPE",
        default_value = "q8_0",
        conflicts_with = "gguf"
    )]
    pub non_expert_quant: String,
}

/// What every replay takes, kernel-replay's too: the trace, the weights, the machine,
/// where the experts sit, and the warm-up.
#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    #[command(flatten)]
    pub weights: QuantArgs,
    #[command(flatten)]
    pub hw: HardwareArgs,
    #[command(flatten)]
    pub placement: PlacementArgs,
    /// Leave the first N replayed tokens out of the statistics (the cache still sees them).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub warmup_tokens: usize,
}

/// Where the experts sit beside today's first-layers-in-VRAM (docs/placement.md).
#[derive(Args, Debug, Clone)]
pub struct PlacementArgs {
    /// Every MoE layer's experts on the CPU, whatever VRAM is left (llama.cpp --cpu-moe,
    /// -ot exps=CPU)
    #[arg(long)]
    pub cpu_moe: bool,
    /// The experts of the first N model layers on the CPU, every later MoE layer's in
    /// VRAM (llama.cpp --n-cpu-moe N with all layers offloaded; docs/placement.md)
    #[arg(long, value_name = "N")]
    pub n_cpu_moe: Option<u32>,
}

/// simulate's and sweep's: a replay through the simulated policies and the I/O model.
#[derive(Args, Debug, Clone)]
pub struct SetupArgs {
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// One global cache (the page cache) or one cache per MoE layer.
    #[arg(long, value_enum, ignore_case = true, default_value_t = PartitionArg::Global)]
    pub partition: PartitionArg,
    /// Profile trace for pin-hot (without it the replayed trace itself is used: an oracle).
    #[arg(long, value_name = "TRACE")]
    pub pin_profile: Option<PathBuf>,
    /// Add per-layer miss counts.
    #[arg(long)]
    pub per_layer: bool,
    /// Prompt tokens per ubatch (llama.cpp -ub), with --phase all: the cache sees each
    /// expert a ubatch routes to once per layer (docs/batches.md) [default: 512]
    #[arg(long, value_name = "N")]
    pub ubatch: Option<usize>,
    /// Responses decoding in lock step (llama-server -np): each step the cache sees
    /// each expert their tokens route to once per layer [default: 1]
    #[arg(long, value_name = "P")]
    pub parallel: Option<usize>,
    /// Time the first token of prompts this long (with --phase all and the I/O model):
    /// one replay and row per length, every prompt run of the trace cut to its first N tokens
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub prompt_tokens: Vec<u64>,
    /// Multiply ubatches of 32 tokens or more on the CPU, as llama.cpp --no-op-offload,
    /// instead of copying the CPU-side weights they use to the GPU
    #[arg(long)]
    pub no_op_offload: bool,
    #[command(flatten)]
    pub io: IoArgs,
    #[command(flatten)]
    pub out: FormatArgs,
}

/// The I/O model: how the engine reads missed experts (docs/VALIDATION.md).
#[derive(Args, Debug, Clone)]
pub struct IoArgs {
    /// How missed experts are read and timed: as this engine reads them (page faults,
    /// pread workers, O_DIRECT) through the drive's curve, with the CPU bound by RAM or
    /// compute; `rated` divides SSD bytes by the rated bandwidth (the analytic model)
    #[arg(long, value_enum, ignore_case = true, value_name = "ENGINE", default_value_t = EngineArg::Mmap)]
    pub io: EngineArg,
    /// Reader threads of pread and direct [default: 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub io_workers: Option<u32>,
    /// pread and direct: the engine waits for a layer's reads before it multiplies any of
    /// its experts (colibri before its PIPE pool, Flash-MoE); by default the reads overlap
    /// the compute of the layer's hits. (Under mmap each thread faults in its own rows: one
    /// thread's products overlap another's faults.)
    #[arg(long)]
    pub no_read_overlap: bool,
    /// The drive's read_ahead_kb (mmap read-around, pread's readahead windows) [default: 128]
    #[arg(long, value_name = "KB", value_parser = parse_read_ahead_kb)]
    pub read_ahead_kb: Option<u64>,
    /// Advice on the mapping (mmap): llama.cpp sets sequential; --numa gives random;
    /// a per-expert prefetch (ik_llama.cpp, --lazy-experts) is willneed [default: sequential]
    #[arg(long, value_enum, ignore_case = true)]
    pub mmap_advice: Option<AdviceArg>,
}

/// The I/O model's read_ahead_kb without `--read-ahead-kb`: the kernel's default
/// (VM_READAHEAD_PAGES), common on NVMe drives.
pub const DEFAULT_READ_AHEAD_KB: u64 = 128;

/// `--io-workers` without the flag.
const DEFAULT_IO_WORKERS: u32 = 8;

/// `--cpu-kernels`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelsArg {
    /// Mainline llama.cpp's
    #[value(name = "llama.cpp")]
    LlamaCpp,
    /// ik_llama.cpp's, weights repacked (-rtr, or its _R4/_R8 types)
    #[value(name = "ik_llama.cpp")]
    IkLlamaCpp,
}

/// `--io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// Page faults on llama.cpp's mapping
    Mmap,
    /// Buffered reads by worker threads (Flash-MoE, colibri)
    Pread,
    /// O_DIRECT reads by worker threads
    Direct,
    /// SSD bytes over the drive's rated bandwidth, CPU bound by RAM alone
    Rated,
}

impl IoArgs {
    /// Flags the chosen engine would ignore are refused, each with what it is for and
    /// what the chosen engine does instead.
    pub fn check(&self) -> crate::error::Result<()> {
        let workers = matches!(self.io, EngineArg::Pread | EngineArg::Direct);
        let advice = self.mmap_advice.unwrap_or(AdviceArg::Sequential);
        let chosen = match self.io {
            EngineArg::Mmap => {
                "under --io mmap the threads that multiply fault the experts in (--threads)"
            }
            EngineArg::Pread => "--io pread reads with worker threads, through no mapping",
            EngineArg::Direct => "--io direct reads with O_DIRECT, around the page cache",
            EngineArg::Rated => {
                "--io rated reads nothing: it divides the SSD bytes by the rated bandwidth"
            }
        };
        let refused = if self.no_read_overlap && !workers {
            Some(format!("--no-read-overlap is for --io pread and direct, whose worker threads read while the compute threads multiply; {chosen}"))
        } else if self.io_workers.is_some() && !workers {
            Some(format!(
                "--io-workers is for --io pread and direct, their reader threads; {chosen}"
            ))
        } else if self.mmap_advice.is_some() && self.io != EngineArg::Mmap {
            Some(format!(
                "--mmap-advice is for --io mmap, the advice on llama.cpp's mapping; {chosen}"
            ))
        } else if self.read_ahead_kb.is_some()
            && !matches!(self.io, EngineArg::Mmap | EngineArg::Pread)
        {
            Some(format!("--read-ahead-kb is for --io mmap and pread, which read through the page cache's readahead; {chosen}"))
        } else if self.read_ahead_kb.is_some()
            && matches!(advice, AdviceArg::Random | AdviceArg::Willneed)
        {
            Some("--read-ahead-kb sets the read-around of --mmap-advice sequential and normal; under random a fault reads one page, under willneed the expert alone".to_string())
        } else {
            None
        };
        match refused {
            Some(why) => Err(crate::error::Error::new(why)),
            None => Ok(()),
        }
    }
}

impl HardwareArgs {
    /// A note naming the machine flags given that the run's time leaves out, and why:
    /// `engine` is the I/O model's engine and advice, None for the analytic estimate.
    /// (They describe the machine, so a script may pass them to every engine: a note,
    /// not a refusal.)
    pub fn unused_note(&self, engine: Option<(EngineArg, AdviceArg)>) -> Option<String> {
        let curve = [
            ("--ssd-latency-us", self.ssd_latency_us.is_some()),
            ("--ssd-stream-gbs", self.ssd_stream_gbs.is_some()),
            ("--max-sectors-kb", self.max_sectors_kb.is_some()),
            ("--ssd-kiops", self.ssd_kiops.is_some()),
        ];
        let read = ("--page-cache-gbs", self.page_cache_gbs.is_some());
        let fault = ("--fault-gbs", self.fault_gbs.is_some());
        let willneed = ("--willneed-gbs", self.willneed_gbs.is_some());
        let cpu = [
            ("--threads", self.threads.is_some()),
            ("--cpu-kernels", self.cpu_kernels.is_some()),
        ];
        let batches = [
            ("--gemm-tflops", self.gemm_tflops.is_some()),
            ("--h2d-gbs", self.h2d_gbs.is_some()),
        ];
        let io_model = curve.into_iter().chain([read, fault, willneed]);
        let (flags, why): (Vec<(&str, bool)>, &str) = match engine {
            None => (
                io_model.chain(cpu).chain(batches).collect(),
                "the analytic estimate prices the SSD bytes at the rated bandwidth and the rest at RAM and VRAM bandwidth",
            ),
            Some((EngineArg::Rated, _)) => (
                io_model.chain(cpu).collect(),
                "--io rated prices the SSD bytes at the rated bandwidth and the CPU side at RAM bandwidth",
            ),
            Some((EngineArg::Direct, _)) => (
                vec![read, fault, willneed],
                "--io direct reads around the page cache",
            ),
            Some((EngineArg::Pread, _)) => (
                vec![fault, willneed],
                "--io pread's buffered reads are priced at --page-cache-gbs",
            ),
            // Each path's figure falls back on the one before it: willneed on fault,
            // fault on page cache; a figure given makes its fallbacks unused.
            Some((EngineArg::Mmap, AdviceArg::Willneed)) if self.willneed_gbs.is_some() => (
                vec![read, fault],
                "--willneed-gbs prices --mmap-advice willneed",
            ),
            Some((EngineArg::Mmap, AdviceArg::Willneed)) if self.fault_gbs.is_some() => (
                vec![read],
                "--fault-gbs prices --mmap-advice willneed without --willneed-gbs",
            ),
            Some((EngineArg::Mmap, AdviceArg::Willneed)) => (Vec::new(), ""),
            Some((EngineArg::Mmap, _)) if self.fault_gbs.is_some() => (
                vec![read, willneed],
                "--fault-gbs prices the faults, and --willneed-gbs only --mmap-advice willneed",
            ),
            Some((EngineArg::Mmap, _)) => {
                (vec![willneed], "it prices --mmap-advice willneed alone")
            }
        };
        let given = crate::hardware::named(flags);
        (!given.is_empty()).then(|| {
            format!(
                "moe-spill: note: {} {} not enter this run's time: {why}",
                given.join(", "),
                if given.len() == 1 { "does" } else { "do" }
            )
        })
    }
}

impl IoArgs {
    /// The engine and advice, for [`HardwareArgs::unused_note`].
    pub fn engine(&self) -> (EngineArg, AdviceArg) {
        (self.io, self.mmap_advice.unwrap_or(AdviceArg::Sequential))
    }
}

impl From<&IoArgs> for Option<EngineChoice> {
    fn from(a: &IoArgs) -> Self {
        let kind = match a.io {
            EngineArg::Mmap => EngineKind::Mmap,
            EngineArg::Pread => EngineKind::Pread,
            EngineArg::Direct => EngineKind::Direct,
            EngineArg::Rated => return None,
        };
        Some(EngineChoice {
            kind,
            workers: a.io_workers.unwrap_or(DEFAULT_IO_WORKERS),
            read_ahead_kb: a.read_ahead_kb.unwrap_or(DEFAULT_READ_AHEAD_KB),
            advice: Advice::from(a.mmap_advice.unwrap_or(AdviceArg::Sequential)).into(),
            serial_reads: a.no_read_overlap,
        })
    }
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub study: SetupArgs,
    // The help lists every spec form: the policy table generates it.
    #[arg(long, value_name = "SPEC", default_value = "lru", help = moe_spill_policies::registry::POLICY_HELP)]
    pub policy: String,
    /// Installed RAM (e.g. 128GiB); the page cache gets what the reserve and non-expert
    /// weights leave [default: the hardware profile's]
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib, conflicts_with = "cache_experts")]
    pub ram: Option<f64>,
    /// Cache capacity in experts, exactly.
    #[arg(long, value_name = "N")]
    pub cache_experts: Option<usize>,
    /// Write the results to FILE (atomically) instead of stdout (`-`: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What `sweep` runs without --policies.
pub const DEFAULT_POLICIES: &str = "lru,clock,arc,linux,pinned:3,opt";

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub study: SetupArgs,
    /// Policies, comma-separated [default: lru,clock,arc,linux,pinned:3,opt; a default
    /// that cannot run on the trace is left out with a note]
    #[arg(long, value_name = "SPEC,...", value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// Installed-RAM range FROM..TO (default: 0GiB up to the RAM that holds every
    /// CPU-side expert).
    #[arg(long, value_name = "FROM..TO", conflicts_with = "cache_experts")]
    pub ram: Option<String>,
    /// Cache-capacity range FROM..TO in experts (instead of RAM; needs no model).
    #[arg(long, value_name = "FROM..TO")]
    pub cache_experts: Option<String>,
    /// Budgets, evenly spaced over the range, ends included.
    #[arg(long, value_name = "N", default_value_t = 33, conflicts_with = "step")]
    pub points: usize,
    /// Distance between budgets instead of --points (a size for --ram, experts for --cache-experts); TO is a budget only if the steps reach it.
    #[arg(long, value_name = "STEP")]
    pub step: Option<String>,
    /// VRAM sizes per GPU to sweep as well, comma-separated (24 or 24GiB; 0 = no GPU).
    #[arg(long, value_name = "SIZE,...", value_parser = parse_size_gib, value_delimiter = ',')]
    pub vrams: Vec<f64>,
    /// Worker threads (default: all cores).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Write the results to FILE (atomically) instead of stdout (`-`: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub kernel: KernelSweepArgs,
}

#[derive(Args, Debug)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub input: TraceArgs,
    /// Distinct experts per chunk (U), instead of measuring a trace (model: --model, default glm-5).
    #[arg(long, value_name = "N", requires = "d")]
    pub u: Option<f64>,
    /// New experts per chunk (D), with --u.
    #[arg(long, value_name = "N", requires = "u")]
    pub d: Option<f64>,
    /// Tokens per chunk (the seed's 128).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk: u32,
    #[command(flatten)]
    pub weights: QuantArgs,
    #[command(flatten)]
    pub hw: HardwareArgs,
    /// Installed RAM (default: the profile's).
    #[arg(long, value_name = "SIZE", value_parser = parse_size_gib)]
    pub ram: Option<f64>,
    #[command(flatten)]
    pub out: FormatArgs,
    /// Write the results to FILE (atomically) instead of stdout (`-`: stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `record`. Its files are required only in a binary that can record: one built
/// without llama.cpp says how to build one, whatever it is given.
#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The model: a GGUF file llama.cpp runs (the first part of a split model).
    #[arg(short = 'm', long, value_name = "FILE", required = cfg!(feature = "record"))]
    pub gguf: Option<PathBuf>,
    /// Prompts: one per line, or JSON Lines with a "prompt" field (fed as raw text).
    #[arg(short = 'f', long, value_name = "FILE", required = cfg!(feature = "record"))]
    pub prompts: Option<PathBuf>,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt (one per prompt).
    #[arg(short, long, value_name = "PATH", required = cfg!(feature = "record"))]
    pub output: Option<PathBuf>,
    /// Tokens generated per prompt after its own (fewer when the model ends its answer
    /// first, unless --ignore-eos).
    #[arg(short = 'n', long, value_name = "N", default_value_t = 128)]
    pub tokens: usize,
    /// Sampling temperature: 0 is greedy (always the most likely token).
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temp: f32,
    /// Seed of the sampler, with --temp above 0: the same seed gives the same trace.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u32,
    /// CPU threads [default: every core].
    #[arg(short = 't', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..1025))]
    pub threads: Option<u64>,
    /// Context size in tokens: every prompt plus -n must fit.
    #[arg(short = 'c', long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1 << 24))]
    pub ctx_size: u64,
    /// Generate all -n tokens, past the model's end-of-generation token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// No progress bar or report on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Model preset whose geometry to generate (`moe-spill models`).
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Decode tokens per response [default: 1000; with --fit: the recording's].
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Responses [default: 8; with --fit: the recording's, lengths repeated in turn].
    #[arg(long, value_name = "N")]
    pub responses: Option<usize>,
    /// Prompt-processing tokens at the start of every response (tagged prompt; skipped by
    /// analyze and replay unless --phase all).
    #[arg(long, value_name = "N")]
    pub prompt_tokens: Option<usize>,
    /// Random seed: the same seed and options give the same trace.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Output: FILE.mst for the binary format, any other name for a directory of
    /// forum-format files single_response_NNN.txt.
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Calibrate to this U (distinct experts per 128-token chunk); needs --target-d.
    #[arg(long, value_name = "U", requires = "target_d")]
    pub target_u: Option<f64>,
    /// Calibrate to this D (new experts per 128-token chunk); needs --target-u.
    #[arg(long, value_name = "D", requires = "target_u")]
    pub target_d: Option<f64>,
    /// Fit the generator to a recorded trace: its geometry, response lengths, shared
    /// opening tokens, per-layer skew (entropy), U and D.
    #[arg(long, value_name = "TRACE", conflicts_with_all = ["target_u", "target_d"])]
    pub fit: Option<PathBuf>,
    /// With --fit: print synthetic versus real (U/D table, per-layer entropy, LRU hit
    /// rates) as Markdown on stdout.
    #[arg(long, requires = "fit")]
    pub compare: bool,
    /// Override the popularity skew: A (every layer) or A:B (first:last MoE layer).
    #[arg(long, value_name = "A[:B]")]
    pub skew: Option<String>,
    /// Override the log-normal sigma of the topic affinity.
    #[arg(long, value_name = "X")]
    pub affinity: Option<f64>,
    /// Override the share of each layer's experts outside a response's topic (sets U).
    #[arg(long, value_name = "X")]
    pub dead: Option<f64>,
    /// Override the share of affinities redrawn per token (sets D).
    #[arg(long, value_name = "X")]
    pub drift: Option<f64>,
    /// Override the probability that a pick re-uses an expert of a recent token.
    #[arg(long, value_name = "X")]
    pub recall: Option<f64>,
    /// Override the exponent of the recall lag distribution (P(d) ~ d^-X).
    #[arg(long, value_name = "X")]
    pub recall_decay: Option<f64>,
    /// Override the number of leading tokens every response shares.
    #[arg(long, value_name = "N")]
    pub opening: Option<usize>,
    /// Route K experts per MoE layer and token instead of the model's top-k (Flash-MoE
    /// runs Qwen3.5-397B at 4 of 10); simulate prices the trace at K.
    #[arg(long, value_name = "K")]
    pub top_k: Option<u16>,
    /// No report on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("budget").required(true).args(["ram", "cache_experts"])))]
pub struct KernelReplayArgs {
    #[command(flatten)]
    pub replay: ReplayArgs,
    /// Installed RAM of the real machine, one or more (comma-separated): the page cache
    /// holds the experts `simulate --ram` gives it, at the scaled size.
    #[arg(long, value_name = "SIZE,...", value_parser = parse_size_gib, value_delimiter = ',')]
    pub ram: Vec<f64>,
    /// Cache capacities in experts, exactly (comma-separated).
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub cache_experts: Vec<usize>,
    /// Bytes of one expert in the laid-out file; the budget is scaled the same way, so
    /// the cache holds the same number of experts (with --gguf the file is laid out as
    /// the GGUF is, at its own sizes).
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_bytes, conflicts_with = "gguf")]
    pub expert_bytes: u64,
    /// 1: each expert's bytes contiguous; 3: gate/up/down slices in three tensors per
    /// layer, as in a GGUF.
    #[arg(long, value_name = "1|3", default_value_t = 1, conflicts_with = "gguf")]
    pub slices: u32,
    /// The model file to write, or reuse when it has this layout (default: a temporary
    /// file in the current directory, removed at the end).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Replay only the first N tokens.
    #[arg(long, value_name = "N")]
    pub tokens: Option<usize>,
    /// Advice on the mapping: llama.cpp's posix_fadvise(SEQUENTIAL) by default.
    #[arg(long, value_enum, ignore_case = true, default_value_t = AdviceArg::Sequential)]
    pub advice: AdviceArg,
    /// Set the device's read_ahead_kb to KB while the child opens the file (the open
    /// file keeps it), restoring it right after; the page model and the predicted wall
    /// time take the window the run had [default: leave the device alone]
    #[arg(long, value_name = "KB", value_parser = parse_read_ahead_kb)]
    pub read_ahead_kb: Option<u64>,
    /// Policies to compare, comma-separated (the page-level model, `page-model`, is
    /// always shown).
    #[arg(
        long,
        value_name = "SPEC,...",
        default_value = "linux,linux-eager,lru,clock,arc,fifo",
        value_delimiter = ','
    )]
    pub policies: Vec<String>,
    /// Also write the comparison as CSV to FILE (atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write per-token kernel numbers and policy misses as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub per_token: Option<PathBuf>,
    #[command(flatten)]
    pub out: FormatArgs,
}

#[derive(Args, Debug, Clone)]
pub struct KernelSweepArgs {
    /// Add the real Linux page cache as a `kernel` row at every budget (kernel-replay:
    /// needs root or a delegated memory cgroup; one replay of the whole trace per
    /// budget, serially: minutes each).
    #[arg(long)]
    pub kernel: bool,
    /// --kernel: bytes of one expert in the laid-out file (the budget is scaled with it;
    /// with --gguf the file is laid out as the GGUF is).
    #[arg(long, value_name = "SIZE", default_value = "2MiB", value_parser = parse_bytes, requires = "kernel", conflicts_with = "gguf")]
    pub kernel_expert_bytes: u64,
    /// --kernel: 1 = each expert contiguous, 3 = gate/up/down slices as in a GGUF.
    #[arg(
        long,
        value_name = "1|3",
        default_value_t = 1,
        requires = "kernel",
        conflicts_with = "gguf"
    )]
    pub kernel_slices: u32,
    /// --kernel: advice on the mapping (llama.cpp's by default).
    #[arg(long, value_enum, ignore_case = true, default_value_t = AdviceArg::Sequential, requires = "kernel")]
    pub kernel_advice: AdviceArg,
    /// --kernel: the device's read_ahead_kb while the child opens the file.
    #[arg(long, value_name = "KB", requires = "kernel", value_parser = parse_read_ahead_kb)]
    pub kernel_read_ahead_kb: Option<u64>,
    /// --kernel: the model file to write or reuse (default: a temporary file here).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub kernel_file: Option<PathBuf>,
}

/// `--format` (OutputFormat, which is clap-free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Table,
    Csv,
    Json,
}

/// `--partition` (Partition, which is clap-free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PartitionArg {
    Global,
    PerLayer,
}

/// `--advice`, `--kernel-advice` (Advice, which is clap-free).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AdviceArg {
    /// No advice: mmap read-around of the device's read_ahead_kb.
    Normal,
    /// posix_fadvise(RANDOM) and madvise(MADV_RANDOM) (llama.cpp --numa): no readahead.
    Random,
    /// posix_fadvise(SEQUENTIAL) on the fd, llama.cpp's default: twice the read-around.
    Sequential,
    /// madvise(MADV_WILLNEED) on each routed expert before touching it (a per-expert
    /// prefetch, like ik_llama.cpp --prefetch-experts), no other advice: exactly the
    /// missing pages of the routed experts are read, nothing around them.
    Willneed,
}

// The raw -> validated step: each clap type into the settings of its command.

impl From<FormatArg> for OutputFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Table => OutputFormat::Table,
            FormatArg::Csv => OutputFormat::Csv,
            FormatArg::Json => OutputFormat::Json,
        }
    }
}

impl From<PartitionArg> for Partition {
    fn from(p: PartitionArg) -> Self {
        match p {
            PartitionArg::Global => Partition::Global,
            PartitionArg::PerLayer => Partition::PerLayer,
        }
    }
}

impl From<AdviceArg> for Advice {
    fn from(a: AdviceArg) -> Self {
        match a {
            AdviceArg::Normal => Advice::Normal,
            AdviceArg::Random => Advice::Random,
            AdviceArg::Sequential => Advice::Sequential,
            AdviceArg::Willneed => Advice::Willneed,
        }
    }
}

impl FormatArgs {
    pub fn format(&self) -> Option<OutputFormat> {
        self.format.map(Into::into)
    }
}

impl From<TraceArgs> for TraceSource {
    fn from(a: TraceArgs) -> Self {
        TraceSource {
            traces: a.traces,
            model: a.model,
            gguf: a.gguf,
            include_prompt: a.phase == PhaseArg::All,
            quiet: a.quiet,
        }
    }
}

impl From<HardwareArgs> for HardwareOverrides {
    fn from(a: HardwareArgs) -> Self {
        HardwareOverrides {
            hw: a.hw,
            gpus: a.gpus,
            vram: a.vram,
            vram_bw: a.vram_bw,
            vram_reserve: a.vram_reserve,
            h2d_gbs: a.h2d_gbs,
            gemm_tflops: a.gemm_tflops,
            ram_bw: a.ram_bw,
            ram_reserve: a.ram_reserve,
            ssd: a.ssd,
            ssd_bw: a.ssd_bw,
            ssd_drives: a.ssd_drives,
            ssd_latency_us: a.ssd_latency_us,
            ssd_stream_gbs: a.ssd_stream_gbs,
            ssd_kiops: a.ssd_kiops,
            max_sectors_kb: a.max_sectors_kb,
            threads: a.threads,
            cpu_kernels: a.cpu_kernels.map(|k| match k {
                KernelsArg::LlamaCpp => Kernels::LlamaCpp,
                KernelsArg::IkLlamaCpp => Kernels::IkLlamaCpp,
            }),
            page_cache_gbs: a.page_cache_gbs,
            fault_gbs: a.fault_gbs,
            willneed_gbs: a.willneed_gbs,
        }
    }
}

impl From<SetupArgs> for SetupOptions {
    fn from(a: SetupArgs) -> Self {
        SetupOptions {
            partition: a.partition.into(),
            pin_profile: a.pin_profile,
            per_layer: a.per_layer,
            io: (&a.io).into(),
            format: a.out.format(),
            ubatch: a.ubatch,
            parallel: a.parallel,
            prompt_tokens: a.prompt_tokens,
            op_offload: !a.no_op_offload,
            ..SetupOptions::replay(a.replay)
        }
    }
}

impl SetupOptions {
    /// A replay token by token through one global cache, read by page faults as
    /// llama.cpp does (kernel-replay's), from the options every replay takes; simulate
    /// and sweep set the rest from their own flags.
    fn replay(a: ReplayArgs) -> Self {
        SetupOptions {
            input: a.input.into(),
            quant: a.weights.quant,
            non_expert_quant: a.weights.non_expert_quant,
            hw: a.hw.into(),
            partition: Partition::Global,
            warmup_tokens: a.warmup_tokens,
            pin_profile: None,
            per_layer: false,
            io: Some(EngineChoice {
                kind: EngineKind::Mmap,
                workers: 1,
                read_ahead_kb: DEFAULT_READ_AHEAD_KB,
                advice: Advice::Sequential.into(),
                serial_reads: false,
            }),
            cpu_moe: a.placement.cpu_moe,
            n_cpu_moe: a.placement.n_cpu_moe,
            format: None,
            // Token by token, as the kernel run faults (prompt tokens too).
            ubatch: Some(1),
            parallel: Some(1),
            prompt_tokens: Vec::new(),
            op_offload: true,
        }
    }
}

/// A results file: `-o -` is stdout, as in most tools.
fn to_file(output: Option<PathBuf>) -> Option<PathBuf> {
    output.filter(|p| p.as_os_str() != "-")
}

impl From<ModelsArgs> for ModelsOptions {
    fn from(a: ModelsArgs) -> Self {
        ModelsOptions {
            quant: a.quant,
            gguf: a.gguf,
            format: a.out.format(),
        }
    }
}

impl From<AnalyzeArgs> for AnalyzeOptions {
    fn from(a: AnalyzeArgs) -> Self {
        AnalyzeOptions {
            format: a.out.format(),
            input: a.input.into(),
            chunk: a.chunk,
            per_layer: a.per_layer,
            output: to_file(a.output),
        }
    }
}

impl From<ConvertArgs> for ConvertOptions {
    fn from(a: ConvertArgs) -> Self {
        ConvertOptions {
            input: a.input.into(),
            output: a.output,
            as_prompt: a.as_prompt,
        }
    }
}

impl From<InfoArgs> for InfoOptions {
    fn from(a: InfoArgs) -> Self {
        InfoOptions {
            format: a.out.format(),
            input: a.input.into(),
        }
    }
}

impl From<SimulateArgs> for SimulateOptions {
    fn from(a: SimulateArgs) -> Self {
        SimulateOptions {
            study: a.study.into(),
            policy: a.policy,
            ram: a.ram,
            cache_experts: a.cache_experts,
            output: to_file(a.output),
        }
    }
}

impl From<SweepArgs> for SweepOptions {
    fn from(a: SweepArgs) -> Self {
        SweepOptions {
            study: a.study.into(),
            default_policies: a.policies.is_none(),
            policies: a
                .policies
                .unwrap_or_else(|| DEFAULT_POLICIES.split(',').map(String::from).collect()),
            ram: a.ram,
            cache_experts: a.cache_experts,
            points: a.points,
            step: a.step,
            vrams: a.vrams,
            jobs: a.jobs,
            output: to_file(a.output),
            kernel: a.kernel.into(),
        }
    }
}

impl From<EstimateArgs> for EstimateOptions {
    fn from(a: EstimateArgs) -> Self {
        EstimateOptions {
            format: a.out.format(),
            input: a.input.into(),
            u: a.u,
            d: a.d,
            chunk: a.chunk,
            quant: a.weights.quant,
            non_expert_quant: a.weights.non_expert_quant,
            hw: a.hw.into(),
            ram: a.ram,
            output: to_file(a.output),
        }
    }
}

impl From<SynthArgs> for SynthOptions {
    fn from(a: SynthArgs) -> Self {
        SynthOptions {
            model: a.model,
            tokens: a.tokens,
            responses: a.responses,
            prompt_tokens: a.prompt_tokens,
            seed: a.seed,
            output: a.output,
            target_u: a.target_u,
            target_d: a.target_d,
            fit: a.fit,
            compare: a.compare,
            skew: a.skew,
            affinity: a.affinity,
            dead: a.dead,
            drift: a.drift,
            recall: a.recall,
            recall_decay: a.recall_decay,
            opening: a.opening,
            top_k: a.top_k,
            quiet: a.quiet,
        }
    }
}

impl From<RecordArgs> for RecordOptions {
    fn from(a: RecordArgs) -> Self {
        RecordOptions {
            gguf: a.gguf,
            prompts: a.prompts,
            output: a.output,
            tokens: a.tokens,
            temp: a.temp,
            seed: a.seed,
            threads: a.threads.map(|t| t as usize),
            ctx_size: a.ctx_size as usize,
            ignore_eos: a.ignore_eos,
            quiet: a.quiet,
        }
    }
}

impl From<KernelReplayArgs> for KernelReplayOptions {
    fn from(a: KernelReplayArgs) -> Self {
        KernelReplayOptions {
            study: SetupOptions {
                format: a.out.format(),
                ..SetupOptions::replay(a.replay)
            },
            ram: a.ram,
            cache_experts: a.cache_experts,
            expert_bytes: a.expert_bytes,
            slices: a.slices,
            file: a.file,
            tokens: a.tokens,
            advice: a.advice.into(),
            read_ahead_kb: a.read_ahead_kb,
            policies: a.policies,
            output: a.output,
            per_token: a.per_token,
        }
    }
}

impl From<KernelSweepArgs> for KernelSweepOptions {
    fn from(a: KernelSweepArgs) -> Self {
        KernelSweepOptions {
            kernel: a.kernel,
            kernel_expert_bytes: a.kernel_expert_bytes,
            kernel_slices: a.kernel_slices,
            kernel_advice: a.kernel_advice.into(),
            kernel_read_ahead_kb: a.kernel_read_ahead_kb,
            kernel_file: a.kernel_file,
        }
    }
}
