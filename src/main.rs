use std::process::ExitCode;

/// Runs before Rust's runtime reopens closed standard descriptors on /dev/null: notes
/// whether stdout was closed, so results are not written into nothing.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CHECK_STDOUT: extern "C" fn() = {
    extern "C" fn check() {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let closed = unsafe { libc::fcntl(1, libc::F_GETFD) } == -1;
        moe_spill::report::STDOUT_CLOSED.store(closed, std::sync::atomic::Ordering::Relaxed);
    }
    check
};

fn main() -> ExitCode {
    let cli = match moe_spill::cli::parse() {
        Ok(cli) => cli,
        Err(usage) => {
            moe_spill::notes::print(&format!("moe-spill: {usage}"));
            return ExitCode::from(2);
        }
    };
    match moe_spill::cli::dispatch(cli) {
        Ok(()) => {
            moe_spill::notes::release();
            ExitCode::SUCCESS
        }
        Err(e) => {
            // The error alone, unless the work had started (its notes are out).
            moe_spill::notes::drop_held();
            moe_spill::notes::print(&format!("moe-spill: {e}"));
            ExitCode::from(2)
        }
    }
}
