//! Policy specs: parse `lru`, `linux:ratio=3`, `pinned:3:clock`, ... into a typed
//! [`PolicySpec`] once at the edge, print them back canonically, and build them.
//! Adding a policy is one file, one [`BaseSpec`] variant and one [`POLICIES`] line.

use std::fmt;

use crate::linux_eager::DEFAULT_ACTIVE_FRACTION;
use crate::opt::OptFuture;
use crate::{
    Arc, Clock, Fifo, Lfu, Linux, LinuxEager, Lru, ObjId, Opt, Pinned, Policy, S3Fifo, Sieve,
};

/// Every spec form with a one-line description, for help text.
pub const POLICIES: &[(&str, &str)] = &[
    ("lru", "least recently used"),
    ("fifo", "first in, first out"),
    (
        "clock",
        "CLOCK: FIFO with a one-bit second chance (libCacheSim Clock)",
    ),
    (
        "arc",
        "ARC, Megiddo & Modha FAST'03: adaptive recency/frequency split with ghosts",
    ),
    (
        "opt",
        "Belady MIN: evicts the object used farthest in the future (an oracle bound)",
    ),
    (
        "lfu",
        "least frequently used, ties broken by least recently used",
    ),
    (
        "sieve",
        "SIEVE, NSDI'24: FIFO with a visited bit and a lazy hand",
    ),
    (
        "s3fifo",
        "S3-FIFO, SOSP'23: 10% probation FIFO, 90% main CLOCK, ghost ids",
    ),
    (
        "linux[:ratio=R]",
        "Linux page cache (split LRU): sampled reference bits, refault activation, active <= R x inactive (default: the kernel's isqrt(10 x cache GiB), 1 below 1 GiB)",
    ),
    (
        "linux-eager[:FRACTION]",
        "earlier Linux model: every access seen at once, promotion on the second, active <= FRACTION of the cache (default 0.5)",
    ),
    (
        "pinned:N[:POLICY]",
        "pin the experts of the first N cached MoE layers; POLICY (default lru) runs the rest",
    ),
    (
        "pin-hot:K[:POLICY]",
        "pin the K most used experts of a profile; POLICY (default lru) runs the rest",
    ),
];

/// A policy that is not a decorator (what `pinned:` and `pin-hot:` can wrap).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaseSpec {
    Lru,
    Fifo,
    Clock,
    Arc,
    Opt,
    Lfu,
    Sieve,
    S3Fifo,
    /// `ratio` >= 1; None: the kernel's ratio for capacity x `BuildContext::expert_bytes`.
    Linux {
        ratio: Option<u32>,
    },
    /// `active_fraction` in [0, 1).
    LinuxEager {
        active_fraction: f64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PolicySpec {
    Base(BaseSpec),
    /// Pin every id of the first `layers` MoE layers that reach the cache.
    Pinned {
        layers: usize,
        inner: BaseSpec,
    },
    /// Pin the `k` most used ids of a profile (ties: lower id first).
    PinHot {
        k: usize,
        inner: BaseSpec,
    },
}

/// A spec string that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let valid: Vec<&str> = POLICIES.iter().map(|(n, _)| *n).collect();
        write!(
            f,
            "invalid policy spec \"{}\": {}; valid specs: {}",
            self.spec,
            self.reason,
            valid.join(", ")
        )
    }
}

impl std::error::Error for SpecError {}

/// A valid spec that cannot be built in this context (missing future or profile,
/// pinned set larger than the cache, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildError {
    pub spec: String,
    pub reason: String,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot build policy \"{}\": {}", self.spec, self.reason)
    }
}

impl std::error::Error for BuildError {}

/// What building a policy may need besides its spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildContext<'a> {
    pub capacity: usize,
    /// Every id is `< n_ids` (at most 65536).
    pub n_ids: usize,
    /// Experts per MoE layer: `id / n_experts` = slot.
    pub n_experts: usize,
    /// First slot whose experts reach the cache (earlier slots live in VRAM).
    pub first_slot: usize,
    /// The exact id sequence that will be replayed (needed by opt).
    pub future: Option<&'a [u16]>,
    /// The same sequence prepared for opt once (next-use keys) and shared by many
    /// builds; an undecorated opt uses it instead of `future` when given.
    pub opt_future: Option<&'a OptFuture>,
    /// Per-id use counts (needed by pin-hot).
    pub profile: Option<&'a [u64]>,
    /// Bytes of one object: `linux` sizes its active:inactive ratio from the cache's
    /// bytes as the kernel does (None: ratio 1, the kernel's value below 1 GiB).
    pub expert_bytes: Option<u64>,
}

impl BaseSpec {
    fn parse(spec: &str, name: &str, arg: Option<&str>) -> Result<BaseSpec, SpecError> {
        let err = |reason: String| SpecError {
            spec: spec.to_string(),
            reason,
        };
        let no_arg = |b: BaseSpec| match arg {
            None => Ok(b),
            Some(a) => Err(err(format!("{name} takes no parameter (got \"{a}\")"))),
        };
        match name {
            "lru" => no_arg(BaseSpec::Lru),
            "fifo" => no_arg(BaseSpec::Fifo),
            "clock" => no_arg(BaseSpec::Clock),
            "arc" => no_arg(BaseSpec::Arc),
            "opt" => no_arg(BaseSpec::Opt),
            "lfu" => no_arg(BaseSpec::Lfu),
            "sieve" => no_arg(BaseSpec::Sieve),
            "s3fifo" => no_arg(BaseSpec::S3Fifo),
            "linux" => {
                let ratio = match arg.map(|a| (a, a.strip_prefix("ratio="))) {
                    None | Some((_, Some("auto"))) => None,
                    Some((_, Some(r))) => match r.parse::<u32>() {
                        Ok(r) if r >= 1 => Some(r),
                        _ => {
                            return Err(err(format!(
                                "linux ratio=R needs a whole number R >= 1 (got \"{r}\")"
                            )))
                        }
                    },
                    Some((a, None)) => {
                        return Err(err(format!(
                            "linux takes ratio=R, the largest active:inactive ratio (got \"{a}\"; the active-fraction model is linux-eager:FRACTION)"
                        )))
                    }
                };
                Ok(BaseSpec::Linux { ratio })
            }
            "linux-eager" => {
                let active_fraction = match arg {
                    None => DEFAULT_ACTIVE_FRACTION,
                    Some(a) => match a.parse::<f64>() {
                        Ok(f) if (0.0..1.0).contains(&f) => f,
                        _ => {
                            return Err(err(format!(
                                "linux-eager FRACTION must be a number in [0, 1) (got \"{a}\")"
                            )))
                        }
                    },
                };
                Ok(BaseSpec::LinuxEager { active_fraction })
            }
            "pinned" | "pin-hot" => Err(err(format!("{name} cannot wrap another decorator"))),
            "" => Err(err("empty policy name".into())),
            _ => Err(err(format!("unknown policy \"{name}\""))),
        }
    }

    pub fn needs_future(&self) -> bool {
        matches!(self, BaseSpec::Opt)
    }
}

impl fmt::Display for BaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseSpec::Lru => f.write_str("lru"),
            BaseSpec::Fifo => f.write_str("fifo"),
            BaseSpec::Clock => f.write_str("clock"),
            BaseSpec::Arc => f.write_str("arc"),
            BaseSpec::Opt => f.write_str("opt"),
            BaseSpec::Lfu => f.write_str("lfu"),
            BaseSpec::Sieve => f.write_str("sieve"),
            BaseSpec::S3Fifo => f.write_str("s3fifo"),
            BaseSpec::Linux { ratio: None } => f.write_str("linux"),
            BaseSpec::Linux { ratio: Some(r) } => write!(f, "linux:ratio={r}"),
            BaseSpec::LinuxEager { active_fraction }
                if *active_fraction == DEFAULT_ACTIVE_FRACTION =>
            {
                f.write_str("linux-eager")
            }
            BaseSpec::LinuxEager { active_fraction } => write!(f, "linux-eager:{active_fraction}"),
        }
    }
}

impl fmt::Display for PolicySpec {
    /// The canonical spec: defaults omitted (`pinned:3`, not `pinned:3:lru`; `linux`,
    /// not `linux:ratio=auto`), so `parse(x.to_string()) == x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (head, n, inner) = match self {
            PolicySpec::Base(b) => return b.fmt(f),
            PolicySpec::Pinned { layers, inner } => ("pinned", layers, inner),
            PolicySpec::PinHot { k, inner } => ("pin-hot", k, inner),
        };
        if *inner == BaseSpec::Lru {
            write!(f, "{head}:{n}")
        } else {
            write!(f, "{head}:{n}:{inner}")
        }
    }
}

impl std::str::FromStr for PolicySpec {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        PolicySpec::parse(s)
    }
}

impl PolicySpec {
    /// Parse a spec (surrounding whitespace ignored, names are lowercase).
    pub fn parse(spec: &str) -> Result<PolicySpec, SpecError> {
        let s = spec.trim();
        let err = |reason: String| SpecError {
            spec: s.to_string(),
            reason,
        };
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        match name {
            "pinned" | "pin-hot" => {
                let Some(rest) = rest else {
                    let what = if name == "pinned" {
                        "N layers"
                    } else {
                        "K experts"
                    };
                    return Err(err(format!("{name} needs a count ({name}:{what})")));
                };
                let (count, inner) = match rest.split_once(':') {
                    Some((c, i)) => (c, Some(i)),
                    None => (rest, None),
                };
                let n: usize = count
                    .parse()
                    .map_err(|_| err(format!("{name} needs a whole number, got \"{count}\"")))?;
                let inner = match inner {
                    None => BaseSpec::Lru,
                    Some(i) => {
                        let (iname, iarg) = match i.split_once(':') {
                            Some((a, b)) => (a, Some(b)),
                            None => (i, None),
                        };
                        BaseSpec::parse(s, iname, iarg)?
                    }
                };
                Ok(if name == "pinned" {
                    PolicySpec::Pinned { layers: n, inner }
                } else {
                    PolicySpec::PinHot { k: n, inner }
                })
            }
            _ => BaseSpec::parse(s, name, rest).map(PolicySpec::Base),
        }
    }

    /// The policy that manages the non-pinned objects (the policy itself if undecorated).
    pub fn base(&self) -> BaseSpec {
        match *self {
            PolicySpec::Base(b) => b,
            PolicySpec::Pinned { inner, .. } | PolicySpec::PinHot { inner, .. } => inner,
        }
    }

    /// Whether building needs `BuildContext::future` (opt anywhere inside).
    pub fn needs_future(&self) -> bool {
        self.base().needs_future()
    }

    /// Whether building needs `BuildContext::profile` (pin-hot).
    pub fn needs_profile(&self) -> bool {
        matches!(self, PolicySpec::PinHot { .. })
    }

    fn build_err(&self, reason: String) -> BuildError {
        BuildError {
            spec: self.to_string(),
            reason,
        }
    }

    /// The ids this spec pins in `ctx` (empty for an undecorated policy), ascending for
    /// `pinned`, hottest first for `pin-hot`. Errors as `build` would.
    pub fn pinned_ids(&self, ctx: &BuildContext) -> Result<Vec<ObjId>, BuildError> {
        let ids: Vec<ObjId> = match *self {
            PolicySpec::Base(_) => return Ok(Vec::new()),
            PolicySpec::Pinned { layers, .. } => {
                if ctx.n_experts == 0 {
                    return Err(self.build_err("n_experts is 0".into()));
                }
                let n_slots = ctx.n_ids.div_ceil(ctx.n_experts);
                if ctx.first_slot + layers > n_slots {
                    return Err(self.build_err(format!(
                        "cannot pin {layers} layers from slot {}: ids cover {n_slots} slots",
                        ctx.first_slot
                    )));
                }
                let lo = ctx.first_slot * ctx.n_experts;
                let hi = ((ctx.first_slot + layers) * ctx.n_experts).min(ctx.n_ids);
                (lo as ObjId..hi as ObjId).collect()
            }
            PolicySpec::PinHot { k, .. } => {
                let Some(profile) = ctx.profile else {
                    return Err(
                        self.build_err("pin-hot needs a profile (per-id use counts)".into())
                    );
                };
                if k > ctx.n_ids {
                    return Err(self.build_err(format!("cannot pin {k} of {} ids", ctx.n_ids)));
                }
                let count = |id: usize| profile.get(id).copied().unwrap_or(0);
                let mut ids: Vec<ObjId> = (0..ctx.n_ids as ObjId).collect();
                ids.sort_by(|&a, &b| count(b as usize).cmp(&count(a as usize)).then(a.cmp(&b)));
                ids.truncate(k);
                ids
            }
        };
        if ids.len() > ctx.capacity {
            return Err(self.build_err(format!(
                "{} pinned objects do not fit in a cache of {}",
                ids.len(),
                ctx.capacity
            )));
        }
        Ok(ids)
    }

    /// Build the policy. Errors: n_ids > 65536, opt without a future (or with an id
    /// >= n_ids in it), pin-hot without a profile, a pinned set larger than the cache.
    pub fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Policy>, BuildError> {
        if let (PolicySpec::Base(BaseSpec::Opt), Some(f)) = (self, ctx.opt_future) {
            if f.n_ids() != ctx.n_ids || ctx.future.is_some_and(|fu| fu.len() != f.ids().len()) {
                return Err(
                    self.build_err("the prepared opt future does not match the context".into())
                );
            }
            return Ok(Box::new(Opt::with_future(ctx.capacity, f)));
        }
        self.build_with(ctx, &Fast)
    }

    /// Shared by `build` and `reference::build`: the decorator logic is written once,
    /// `f` supplies the implementation of each base policy.
    pub(crate) fn build_with<F: BaseFactory>(
        &self,
        ctx: &BuildContext,
        f: &F,
    ) -> Result<Box<dyn Policy>, BuildError> {
        if ctx.n_ids > 1 << 16 {
            return Err(self.build_err(format!("n_ids {} > 65536", ctx.n_ids)));
        }
        let future = if self.needs_future() {
            let Some(future) = ctx.future else {
                return Err(self.build_err("opt needs the future id sequence".into()));
            };
            if let Some(&id) = future.iter().find(|&&id| id as usize >= ctx.n_ids) {
                return Err(self.build_err(format!("future id {id} >= n_ids {}", ctx.n_ids)));
            }
            Some(future)
        } else {
            None
        };
        let pinned = self.pinned_ids(ctx)?;
        let base = self.base();
        let eb = ctx.expert_bytes;
        if let PolicySpec::Base(_) = self {
            return Ok(f.make(base, ctx.capacity, ctx.n_ids, eb, future, None));
        }
        let mut is_pinned = vec![false; ctx.n_ids];
        for &id in &pinned {
            is_pinned[id as usize] = true;
        }
        let filtered: Option<Vec<u16>> = future.map(|fu| {
            fu.iter()
                .copied()
                .filter(|&id| !is_pinned[id as usize])
                .collect()
        });
        let inner_cap = ctx.capacity - pinned.len();
        let pin = PinSet {
            name: self.to_string(),
            n_ids: ctx.n_ids,
            ids: pinned,
        };
        // A pinned (mlock'd) page is unevictable and leaves the file LRU: the inner
        // policy's ratio comes from its own capacity.
        Ok(f.make(
            base,
            inner_cap,
            ctx.n_ids,
            eb,
            filtered.as_deref(),
            Some(pin),
        ))
    }
}

/// The pinned part of a decorator spec, resolved against a build context.
pub(crate) struct PinSet {
    pub(crate) name: String,
    pub(crate) n_ids: usize,
    pub(crate) ids: Vec<ObjId>,
}

/// Makes a base policy (capacity already net of pinned slots) and wraps it in the
/// pinning decorator if `pin` is given: the fast policies here, the naive ones in
/// `reference`.
pub(crate) trait BaseFactory {
    #[allow(clippy::too_many_arguments)]
    fn make(
        &self,
        base: BaseSpec,
        capacity: usize,
        n_ids: usize,
        expert_bytes: Option<u64>,
        future: Option<&[u16]>,
        pin: Option<PinSet>,
    ) -> Box<dyn Policy>;
}

/// Turns a concrete policy into the boxed result, keeping its type for the wrapper.
trait Wrap {
    fn wrap<P: Policy + 'static>(self, p: P) -> Box<dyn Policy>;
}

struct Plain;

impl Wrap for Plain {
    fn wrap<P: Policy + 'static>(self, p: P) -> Box<dyn Policy> {
        Box::new(p)
    }
}

impl Wrap for PinSet {
    fn wrap<P: Policy + 'static>(self, p: P) -> Box<dyn Policy> {
        Box::new(Pinned::new(self.name, p, self.n_ids, self.ids))
    }
}

struct Fast;

impl BaseFactory for Fast {
    fn make(
        &self,
        base: BaseSpec,
        capacity: usize,
        n_ids: usize,
        expert_bytes: Option<u64>,
        future: Option<&[u16]>,
        pin: Option<PinSet>,
    ) -> Box<dyn Policy> {
        match pin {
            None => make_fast(base, capacity, n_ids, expert_bytes, future, Plain),
            Some(pin) => make_fast(base, capacity, n_ids, expert_bytes, future, pin),
        }
    }
}

/// Monomorphised per (wrapper, policy): a pinned LRU is a `Pinned<Lru>`, so the inner
/// access is inlined rather than a virtual call.
fn make_fast<W: Wrap>(
    base: BaseSpec,
    capacity: usize,
    n_ids: usize,
    expert_bytes: Option<u64>,
    future: Option<&[u16]>,
    w: W,
) -> Box<dyn Policy> {
    match base {
        BaseSpec::Lru => w.wrap(Lru::new(capacity, n_ids)),
        BaseSpec::Fifo => w.wrap(Fifo::new(capacity, n_ids)),
        BaseSpec::Clock => w.wrap(Clock::new(capacity, n_ids)),
        BaseSpec::Arc => w.wrap(Arc::new(capacity, n_ids)),
        BaseSpec::Opt => w.wrap(Opt::new(capacity, n_ids, future.expect("checked by build"))),
        BaseSpec::Lfu => w.wrap(Lfu::new(capacity, n_ids)),
        BaseSpec::Sieve => w.wrap(Sieve::new(capacity, n_ids)),
        BaseSpec::S3Fifo => w.wrap(S3Fifo::new(capacity, n_ids)),
        BaseSpec::Linux { ratio: None } => w.wrap(Linux::new(capacity, n_ids, expert_bytes)),
        BaseSpec::Linux { ratio: Some(r) } => w.wrap(Linux::with_ratio(capacity, n_ids, r)),
        BaseSpec::LinuxEager { active_fraction } => {
            w.wrap(LinuxEager::new(capacity, n_ids, active_fraction))
        }
    }
}
