use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = moe_spill::cli::Cli::parse();
    match moe_spill::cli::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moe-spill: {e}");
            ExitCode::from(2)
        }
    }
}
