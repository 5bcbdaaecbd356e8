//! Policy specs: parse `lru`, `linux:ratio=3`, `pinned:3:clock`, ... into a typed
//! [`PolicySpec`] once at the edge, print them back canonically, and build them.
//! Everything per policy is generated from the policy table in `lib.rs`
//! (`policy_table!`): adding a policy is one file and one entry there.

use std::fmt;

use crate::linux_eager::DEFAULT_ACTIVE_FRACTION;
use crate::opt::OptFuture;
// The table's constructors and parameter types name policies from the crate root.
use crate::*;
use crate::{ObjId, Opt, Pinned, Policy};

/// The decorators, after the base policies of the table.
const DECORATORS: [(&str, &str); 2] = [
    (
        "pinned:N[:POLICY]",
        "pin the experts of the first N cached MoE layers; POLICY (default lru) runs the rest",
    ),
    (
        "pin-hot:K[:POLICY]",
        "pin the K most used experts of a profile; POLICY (default lru) runs the rest",
    ),
];

/// The parameter of a base policy: the text after `name:` in a spec.
pub trait Param {
    type Value: Copy + PartialEq + fmt::Debug;
    /// The value of a spec without the parameter; the canonical spec omits it.
    const DEFAULT: Self::Value;
    /// Parse the text after `name:`; Err: why not (the caller names the spec).
    fn parse(arg: &str) -> Result<Self::Value, String>;
    /// Print a value other than the default as `parse` reads it.
    fn fmt(value: &Self::Value, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

/// `linux:ratio=R`: the largest active:inactive ratio, a whole number >= 1; `auto` (the
/// default, None) takes the kernel's ratio for the cache's bytes.
pub struct LinuxRatio;

impl Param for LinuxRatio {
    type Value = Option<u32>;
    const DEFAULT: Option<u32> = None;
    fn parse(arg: &str) -> Result<Option<u32>, String> {
        match arg.strip_prefix("ratio=") {
            Some("auto") => Ok(None),
            Some(r) => match r.parse::<u32>() {
                Ok(r) if r >= 1 => Ok(Some(r)),
                _ => Err(format!(
                    "linux ratio=R needs a whole number R >= 1 (got \"{r}\")"
                )),
            },
            None => Err(format!(
                "linux takes ratio=R, the largest active:inactive ratio (got \"{arg}\"; the active-fraction model is linux-eager:FRACTION)"
            )),
        }
    }
    fn fmt(value: &Option<u32>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match value {
            Some(r) => write!(f, "ratio={r}"),
            None => f.write_str("ratio=auto"),
        }
    }
}

/// `linux-eager:FRACTION`: the largest share of the cache on the active list, in [0, 1).
pub struct ActiveFraction;

impl Param for ActiveFraction {
    type Value = f64;
    const DEFAULT: f64 = DEFAULT_ACTIVE_FRACTION;
    fn parse(arg: &str) -> Result<f64, String> {
        match arg.parse::<f64>() {
            Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
            _ => Err(format!(
                "linux-eager FRACTION must be a number in [0, 1) (got \"{arg}\")"
            )),
        }
    }
    fn fmt(value: &f64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{value}")
    }
}

/// One entry of the policy table, as data: for help text, and for the tests that must
/// cover every policy.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInfo {
    pub name: &'static str,
    /// The spec form, e.g. `linux[:ratio=R]`.
    pub form: &'static str,
    pub help: &'static str,
    /// Whether the entry names a naive implementation for `reference::build` (a test
    /// requires one of every policy).
    pub has_reference: bool,
    /// Specs with a parameter other than the default that the tests cover as well.
    pub examples: &'static [&'static str],
}

impl PolicyInfo {
    /// The bare name, then the examples.
    pub fn specs(&self) -> impl Iterator<Item = &'static str> {
        std::iter::once(self.name).chain(self.examples.iter().copied())
    }
}

/// What a base policy's constructor in the table gets: the capacity left to it (net of
/// pinned objects), the context it may size itself from, and its parsed parameter.
#[derive(Clone, Copy, Debug)]
pub struct BaseArgs<'a, T = ()> {
    pub capacity: usize,
    pub n_ids: usize,
    pub expert_bytes: Option<u64>,
    future: Option<&'a [u16]>,
    /// The parameter (`()` for a policy without one).
    pub param: T,
}

impl<'a, T> BaseArgs<'a, T> {
    /// The id sequence to be replayed (pinned ids filtered out), for an entry marked
    /// `needs future`: `build` checks it is there and in range.
    pub fn future(&self) -> &'a [u16] {
        self.future.expect("the entry says `needs future`")
    }

    fn with<U>(self, param: U) -> BaseArgs<'a, U> {
        BaseArgs {
            capacity: self.capacity,
            n_ids: self.n_ids,
            expert_bytes: self.expert_bytes,
            future: self.future,
            param,
        }
    }
}

/// Calls a constructor of the table (a closure, typed by this signature).
#[inline(always)]
fn construct<'a, T, P: Policy + 'static>(
    args: BaseArgs<'a, T>,
    f: impl FnOnce(BaseArgs<'a, T>) -> P,
) -> P {
    f(args)
}

fn construct_boxed<'a, T, P: Policy + 'static>(
    args: BaseArgs<'a, T>,
    f: impl FnOnce(BaseArgs<'a, T>) -> P,
) -> Box<dyn Policy> {
    Box::new(f(args))
}

/// `pick!(short, form)` is `short`, `pick!(form)` is `form`.
macro_rules! pick {
    ($short:literal, $form:literal) => {
        $short
    };
    ($form:literal) => {
        $form
    };
}

/// Whether an entry says `needs future` (any other word is an error).
macro_rules! needs_future {
    () => {
        false
    };
    (future) => {
        true
    };
}

/// Whether an optional part of an entry is there.
macro_rules! present {
    () => {
        false
    };
    ($($t:tt)+) => {
        true
    };
}

/// `Some(e)`, or `None` without an `e`.
macro_rules! some {
    () => {
        None
    };
    ($e:expr) => {
        Some($e)
    };
}

/// The parse of one entry's parameter (`arg` is what follows `name:`, if anything).
macro_rules! parse_base {
    ($arg:ident, $name:literal, $variant:ident) => {
        match $arg {
            None => Ok(BaseSpec::$variant),
            Some(a) => Err(format!("{} takes no parameter (got \"{a}\")", $name)),
        }
    };
    ($arg:ident, $name:literal, $variant:ident { $field:ident: $param:ty }) => {
        match $arg {
            None => Ok(BaseSpec::$variant {
                $field: <$param as Param>::DEFAULT,
            }),
            Some(a) => <$param as Param>::parse(a).map(|v| BaseSpec::$variant { $field: v }),
        }
    };
}

/// Everything generated from the table for this module.
macro_rules! base_specs {
    ($(
        $(#[$meta:meta])*
        $variant:ident $({
            $field:ident: $param:ty, $form:literal $(/ $short:literal)? $(, tests $($example:literal),+)?
        })?
            = $name:literal in $module:ident::$type:ident $(needs $needs:ident)?: $help:literal,
            fast $fast:expr $(, naive $naive:expr)?;
    )*) => {
        /// A policy that is not a decorator (what `pinned:` and `pin-hot:` can wrap): one
        /// variant per entry of the policy table.
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub enum BaseSpec {
            $(
                $(#[$meta])*
                $variant $({ $field: <$param as Param>::Value })?,
            )*
        }

        /// Every base policy, in table order.
        pub const BASE_POLICIES: &[PolicyInfo] = &[$(PolicyInfo {
            name: $name,
            form: concat!($name $(, $form)?),
            help: $help,
            has_reference: present!($($naive)?),
            examples: &[$($($(concat!($name, ":", $example)),+)?)?],
        }),*];

        /// Every spec form with a one-line description, for help text.
        pub const POLICIES: &[(&str, &str)] = &[
            $((concat!($name $(, $form)?), $help),)*
            DECORATORS[0],
            DECORATORS[1],
        ];

        /// The `--policy` help of the command line: every spec form.
        pub const POLICY_HELP: &str = concat!(
            "Eviction policy: ",
            $(concat!($name $(, pick!($($short,)? $form))?), ", ",)*
            "pinned:N[:POLICY], pin-hot:K[:POLICY]"
        );

        impl BaseSpec {
            /// The policy's name in specs.
            pub fn name(&self) -> &'static str {
                match self {
                    $(BaseSpec::$variant { .. } => $name,)*
                }
            }

            pub fn needs_future(&self) -> bool {
                match self {
                    $(BaseSpec::$variant { .. } => needs_future!($($needs)?),)*
                }
            }

            /// None: no policy of that name; Err: the reason its parameter is wrong.
            fn parse_table(name: &str, arg: Option<&str>) -> Option<Result<BaseSpec, String>> {
                Some(match name {
                    $($name => parse_base!(arg, $name, $variant $({ $field: $param })?),)*
                    _ => return None,
                })
            }
        }

        impl fmt::Display for BaseSpec {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())?;
                match self {
                    $(BaseSpec::$variant $({ $field })? => {
                        $(if *$field != <$param as Param>::DEFAULT {
                            f.write_str(":")?;
                            <$param as Param>::fmt($field, f)?;
                        })?
                    })*
                }
                Ok(())
            }
        }

        /// Monomorphised per (wrapper, policy): a pinned LRU is a `Pinned<Lru>`, so the
        /// inner access is inlined rather than a virtual call.
        fn make_fast<W: Wrap>(base: BaseSpec, args: BaseArgs, w: W) -> Box<dyn Policy> {
            match base {
                $(BaseSpec::$variant $({ $field })? => {
                    w.wrap(construct(args.with(($($field)?)), $fast))
                })*
            }
        }

        /// The naive implementation of `base`, None if its entry has none.
        pub(crate) fn make_naive(base: BaseSpec, args: BaseArgs) -> Option<Box<dyn Policy>> {
            match base {
                $(BaseSpec::$variant $({ $field })? => {
                    let _args = args.with(($($field)?));
                    some!($(construct_boxed(_args, $naive))?)
                })*
            }
        }
    };
}

policy_table!(base_specs);

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
        match BaseSpec::parse_table(name, arg) {
            Some(parsed) => parsed.map_err(err),
            None => Err(err(match name {
                "pinned" | "pin-hot" => format!("{name} cannot wrap another decorator"),
                "" => "empty policy name".into(),
                _ => format!("unknown policy \"{name}\""),
            })),
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
    /// Parse a spec (surrounding whitespace ignored, names in any case: `LRU` is `lru`).
    pub fn parse(spec: &str) -> Result<PolicySpec, SpecError> {
        let s = spec.trim();
        let err = |reason: String| SpecError {
            spec: s.to_string(),
            reason,
        };
        let lowered = s.to_ascii_lowercase();
        let (name, rest) = match lowered.split_once(':') {
            Some((n, r)) => (n, Some(r)),
            None => (lowered.as_str(), None),
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
                return Err(self.build_err(format!(
                    "{} needs the future id sequence",
                    self.base().name()
                )));
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
        let args = |capacity, future| BaseArgs {
            capacity,
            n_ids: ctx.n_ids,
            expert_bytes: ctx.expert_bytes,
            future,
            param: (),
        };
        if let PolicySpec::Base(_) = self {
            return f
                .make(base, args(ctx.capacity, future), None)
                .map_err(|e| self.build_err(e));
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
        f.make(base, args(inner_cap, filtered.as_deref()), Some(pin))
            .map_err(|e| self.build_err(e))
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
/// `reference`. Err: why not (the caller names the spec).
pub(crate) trait BaseFactory {
    fn make(
        &self,
        base: BaseSpec,
        args: BaseArgs,
        pin: Option<PinSet>,
    ) -> Result<Box<dyn Policy>, String>;
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
        args: BaseArgs,
        pin: Option<PinSet>,
    ) -> Result<Box<dyn Policy>, String> {
        Ok(match pin {
            None => make_fast(base, args, Plain),
            Some(pin) => make_fast(base, args, pin),
        })
    }
}
