//! The one file that calls llama.cpp (through `llama-cpp-sys-2`, which vendors and builds
//! it). The model runs on the CPU; the scheduler's eval callback asks for every tensor
//! named `ffn_moe_topk-N` (N = the model layer) and copies its I32 ids out with
//! `ggml_backend_tensor_get` once computed.
//!
//! Prompt batches ask for the logits of every token, not only the last: llama.cpp
//! evaluates the last layer for the output tokens only, so a batch with one output would
//! route one token in the last MoE layer and all of them in the others.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::Mutex;

use llama_cpp_sys_2 as sys;

use super::routing::Routing;
use super::signal::{interrupted, InterruptGuard};
use super::{Progress, Prompt, RecordSettings, Recorded};
use crate::error::{Error, Result};

/// Tokens per llama_decode call of a prompt (and per micro-batch).
const BATCH: usize = 512;

/// llama.cpp's log: kept off stderr (its error messages are quoted in ours), or passed
/// through with MOE_SPILL_LLAMA_LOG=1.
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static LOG_LEVEL: Mutex<u32> = Mutex::new(0);

unsafe extern "C" fn on_log(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if std::env::var_os("MOE_SPILL_LLAMA_LOG").is_some() {
        eprint!("{text}");
    }
    // A CONT message continues the one before, at its level.
    let cont = level == sys::GGML_LOG_LEVEL_CONT;
    let mut last = LOG_LEVEL.lock().unwrap_or_else(|e| e.into_inner());
    if !cont {
        *last = level;
    }
    if *last == sys::GGML_LOG_LEVEL_ERROR {
        let mut errors = ERRORS.lock().unwrap_or_else(|e| e.into_inner());
        match errors.last_mut() {
            Some(e) if cont => e.push_str(&text),
            _ => errors.push(text.into_owned()),
        }
    }
}

/// The error messages llama.cpp logged since the last call, as one line.
fn logged_errors() -> String {
    let mut errors = ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    let lines: Vec<String> = errors
        .drain(..)
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|e| !e.is_empty())
        .collect();
    if lines.is_empty() {
        "no reason given".into()
    } else {
        lines.join("; ")
    }
}

/// What the eval callback fills: the routing, and the first error it met (the
/// callback cannot return one; `false` only ends the current graph split).
struct Shared {
    routing: Routing,
    error: Option<Error>,
}

/// The layer number of a `ffn_moe_topk-N` tensor.
fn topk_layer(name: &[u8]) -> Option<u16> {
    std::str::from_utf8(name.strip_prefix(b"ffn_moe_topk-")?)
        .ok()?
        .parse()
        .ok()
}

unsafe extern "C" fn on_tensor(t: *mut sys::ggml_tensor, ask: bool, user: *mut c_void) -> bool {
    // SAFETY: the scheduler passes a live tensor; its name is NUL-terminated.
    let name = unsafe { CStr::from_ptr(sys::ggml_get_name(t)) };
    let Some(layer) = topk_layer(name.to_bytes()) else {
        return !ask; // not wanted; when observing, go on
    };
    if ask {
        return true;
    }
    // SAFETY: `user` is the &Mutex<Shared> given in the context parameters, alive for
    // the whole run.
    let shared = unsafe { &*(user as *const Mutex<Shared>) };
    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    if shared.error.is_some() {
        return false;
    }
    // SAFETY: a computed tensor of this graph.
    let result = unsafe { read_topk(t, layer, &mut shared.routing) };
    if let Err(e) = result {
        shared.error = Some(e);
        return false;
    }
    true
}

/// Copy a `ffn_moe_topk` tensor (I32, [k, n_tokens], possibly a strided view of the
/// router's argsort) out of its backend buffer into the routing.
unsafe fn read_topk(t: *mut sys::ggml_tensor, layer: u16, routing: &mut Routing) -> Result<()> {
    // SAFETY: the caller passes a live tensor.
    let t = unsafe { &*t };
    if t.type_ != sys::GGML_TYPE_I32 || t.ne[2] != 1 || t.ne[3] != 1 {
        return Err(routing.error(format!(
            "ffn_moe_topk-{layer}: expected an I32 matrix of expert ids, got type {} of shape {:?}",
            t.type_, t.ne
        )));
    }
    let (k, n) = (t.ne[0] as usize, t.ne[1] as usize);
    // SAFETY: as above.
    let bytes = unsafe { sys::ggml_nbytes(t) };
    let mut buf = vec![0u8; bytes];
    // SAFETY: reads `bytes` (the tensor's whole extent, strides included) into buf.
    unsafe { sys::ggml_backend_tensor_get(t, buf.as_mut_ptr().cast(), 0, bytes) };
    let (nb0, nb1) = (t.nb[0], t.nb[1]);
    routing.add(layer, k, n, |tok, i| {
        let at = tok * nb1 + i * nb0;
        i32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
    })
}

unsafe extern "C" fn on_abort(_: *mut c_void) -> bool {
    interrupted()
}

struct Model(*mut sys::llama_model);
impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: loaded by llama_model_load_from_file, freed once.
        unsafe { sys::llama_model_free(self.0) }
    }
}

struct Context(*mut sys::llama_context);
impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: made by llama_init_from_model, freed once (before its model).
        unsafe { sys::llama_free(self.0) }
    }
}

struct Sampler(*mut sys::llama_sampler);
impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: a sampler chain, freed once (it frees the samplers added to it).
        unsafe { sys::llama_sampler_free(self.0) }
    }
}

struct Batch(sys::llama_batch);
impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by llama_batch_init, freed once.
        unsafe { sys::llama_batch_free(self.0) }
    }
}

impl Batch {
    /// Fill with `tokens` at positions from `pos`, every one an output.
    fn set(&mut self, tokens: &[sys::llama_token], pos: usize) {
        let b = &mut self.0;
        b.n_tokens = tokens.len() as i32;
        for (i, &tok) in tokens.iter().enumerate() {
            // SAFETY: the batch was allocated for BATCH tokens and one sequence each;
            // tokens.len() <= BATCH.
            unsafe {
                *b.token.add(i) = tok;
                *b.pos.add(i) = (pos + i) as sys::llama_pos;
                *b.n_seq_id.add(i) = 1;
                *(*b.seq_id.add(i)) = 0;
                *b.logits.add(i) = 1;
            }
        }
    }
}

/// The start of a GGUF file: llama.cpp's loader on anything else can abort the process.
fn check_gguf(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::in_file(
            path,
            "is a directory, not a GGUF model file",
        ));
    }
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    if n < 4 || &magic != b"GGUF" {
        return Err(Error::in_file(
            path,
            "not a GGUF file (it does not start with the bytes GGUF)",
        ));
    }
    Ok(())
}

fn meta(model: &Model, key: &str) -> Option<String> {
    let key = CString::new(key).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: buf is writable for its length; the result is NUL-terminated.
    let n = unsafe {
        sys::llama_model_meta_val_str(model.0, key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        return None;
    }
    buf.truncate((n as usize).min(buf.len() - 1));
    String::from_utf8(buf).ok()
}

fn tokenize(vocab: *const sys::llama_vocab, text: &str) -> Option<Vec<sys::llama_token>> {
    let len = i32::try_from(text.len()).ok()?;
    let mut tokens = vec![0; text.len() + 8];
    for _ in 0..2 {
        // SAFETY: text and tokens are valid for the lengths given.
        let n = unsafe {
            sys::llama_tokenize(
                vocab,
                text.as_ptr().cast(),
                len,
                tokens.as_mut_ptr(),
                tokens.len() as i32,
                true,
                true,
            )
        };
        if n >= 0 {
            tokens.truncate(n as usize);
            return Some(tokens);
        }
        if n == i32::MIN {
            return None;
        }
        tokens.resize((-n) as usize, 0);
    }
    None
}

pub fn run(
    s: &RecordSettings,
    prompts: &[Prompt],
    progress: &mut dyn Progress,
) -> Result<Recorded> {
    let path = s.gguf.as_path();
    check_gguf(path)?;
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::in_file(path, "the file name holds a NUL byte"))?;

    // SAFETY: plain calls into llama.cpp with valid arguments; every object is freed
    // by its guard, in reverse order of creation.
    unsafe {
        sys::llama_log_set(Some(on_log), ptr::null_mut());
        sys::llama_backend_init();
    }
    let mut mp = unsafe { sys::llama_model_default_params() };
    mp.n_gpu_layers = 0;
    logged_errors(); // forget what came before
    let model = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
    if model.is_null() {
        return Err(Error::in_file(
            path,
            format!("llama.cpp cannot load this model: {}", logged_errors()),
        ));
    }
    let model = Model(model);

    let arch = meta(&model, "general.architecture").unwrap_or_default();
    let n_experts: usize = meta(&model, &format!("{arch}.expert_count"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if n_experts == 0 {
        return Err(Error::in_file(
            path,
            format!("no routed experts ({arch}.expert_count is missing or 0): record needs a Mixture-of-Experts model"),
        ));
    }

    // SAFETY: the model outlives the vocabulary pointer's uses.
    let vocab = unsafe { sys::llama_model_get_vocab(model.0) };
    let mut tokenized = Vec::with_capacity(prompts.len());
    for p in prompts {
        let tokens = tokenize(vocab, &p.text).unwrap_or_default();
        if tokens.is_empty() {
            return Err(Error::at_line(
                &s.prompts,
                p.line as u64,
                "the prompt tokenizes to no tokens",
            ));
        }
        let need = tokens.len() + s.tokens;
        if need > s.ctx_size {
            return Err(Error::at_line(
                &s.prompts,
                p.line as u64,
                format!(
                    "the prompt's {} tokens plus -n {} need a context of {need} tokens; give --ctx-size {need} or more",
                    tokens.len(),
                    s.tokens
                ),
            ));
        }
        tokenized.push(tokens);
    }

    let shared = Mutex::new(Shared {
        routing: Routing::new(path, n_experts)?,
        error: None,
    });
    let threads = s.threads.clamp(1, i32::MAX as usize) as i32;
    let batch_size = BATCH.min(s.ctx_size) as u32;
    let mut cp = unsafe { sys::llama_context_default_params() };
    cp.n_ctx = s.ctx_size as u32;
    cp.n_batch = batch_size;
    cp.n_ubatch = batch_size;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    cp.cb_eval = Some(on_tensor);
    cp.cb_eval_user_data = &shared as *const Mutex<Shared> as *mut c_void;
    cp.abort_callback = Some(on_abort);
    cp.abort_callback_data = ptr::null_mut();
    // SAFETY: the parameters point at `shared`, which outlives the context.
    let ctx = unsafe { sys::llama_init_from_model(model.0, cp) };
    if ctx.is_null() {
        return Err(Error::in_file(
            path,
            format!(
                "llama.cpp cannot make a context for this model: {}",
                logged_errors()
            ),
        ));
    }
    let ctx = Context(ctx);

    let sampler = unsafe {
        let chain = Sampler(sys::llama_sampler_chain_init(
            sys::llama_sampler_chain_default_params(),
        ));
        if s.temp > 0.0 {
            sys::llama_sampler_chain_add(chain.0, sys::llama_sampler_init_temp(s.temp));
            sys::llama_sampler_chain_add(chain.0, sys::llama_sampler_init_dist(s.seed));
        } else {
            sys::llama_sampler_chain_add(chain.0, sys::llama_sampler_init_greedy());
        }
        chain
    };
    let mut batch = Batch(unsafe { sys::llama_batch_init(BATCH as i32, 0, 1) });

    let total: usize = tokenized.iter().map(|t| t.len() + s.tokens).sum();
    progress.start(total as u64);
    let _guard = InterruptGuard::install();
    let mut ended_early = 0;

    // One llama_decode of `tokens` at `pos`: Ok(false) when interrupted.
    let mut decode = |tokens: &[sys::llama_token], pos: usize, prompt: bool| -> Result<bool> {
        batch.set(tokens, pos);
        // SAFETY: a filled batch of at most n_batch tokens.
        let rc = unsafe { sys::llama_decode(ctx.0, batch.0) };
        let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = sh.error.take() {
            return Err(e);
        }
        if rc != 0 && interrupted() {
            sh.routing.commit_complete(prompt);
            return Ok(false);
        }
        if rc != 0 {
            return Err(Error::in_file(
                path,
                format!("llama_decode failed (status {rc}): {}", logged_errors()),
            ));
        }
        sh.routing.commit(tokens.len(), prompt)?;
        Ok(!interrupted())
    };

    'prompts: for tokens in &tokenized {
        // SAFETY: the context's own memory; clearing it starts a new sequence.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(ctx.0), true) };
        let mut pos = 0;
        for chunk in tokens.chunks(BATCH.min(s.ctx_size)) {
            let go_on = decode(chunk, pos, true)?;
            pos += chunk.len();
            progress.advance(chunk.len() as u64);
            if !go_on {
                break 'prompts;
            }
        }
        for generated in 0..s.tokens {
            // SAFETY: the last decode produced logits for its last token.
            let tok = unsafe { sys::llama_sampler_sample(sampler.0, ctx.0, -1) };
            if !s.ignore_eos && unsafe { sys::llama_vocab_is_eog(vocab, tok) } {
                ended_early += 1;
                progress.advance((s.tokens - generated) as u64);
                break;
            }
            let go_on = decode(&[tok], pos, false)?;
            pos += 1;
            progress.advance(1);
            if !go_on {
                break 'prompts;
            }
        }
        shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .routing
            .end_response();
    }
    let was_interrupted = interrupted();
    drop(batch);
    drop(sampler);
    drop(ctx);
    drop(model);
    let shared = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Recorded {
        trace: shared.routing.finish(),
        interrupted: was_interrupted,
        ended_early,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_names() {
        assert_eq!(topk_layer(b"ffn_moe_topk-0"), Some(0));
        assert_eq!(topk_layer(b"ffn_moe_topk-77"), Some(77));
        assert_eq!(topk_layer(b"ffn_moe_topk"), None);
        assert_eq!(topk_layer(b"ffn_moe_topk-x"), None);
        assert_eq!(topk_layer(b"ffn_moe_probs-3"), None);
    }
}
