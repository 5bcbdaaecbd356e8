//! Progress bars on stderr, hidden when output is not for a person (not a terminal,
//! --quiet, or work too small to need one).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar of a command's work: its checks have passed, so the held notes go out.
pub fn bar(len: u64, what: &str, hidden: bool) -> ProgressBar {
    crate::notes::release();
    bar_before_checks(len, what, hidden)
}

/// A bar for work that comes before the command's checks (reading the traces).
pub fn bar_before_checks(len: u64, what: &str, hidden: bool) -> ProgressBar {
    if hidden || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} ({eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
