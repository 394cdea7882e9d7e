//! The `fractalnet` command line: train, evaluate, per-column (anytime) reports, info.

mod cli;

use clap::Parser;

#[global_allocator]
static ALLOC: cli::alloc::PeakAlloc = cli::alloc::PeakAlloc;

fn main() {
    cli::alloc::keep_freed_memory();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return;
        }
        Err(e) => {
            // One line, as for every other bad input; --help has the rest.
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("error: bad arguments");
            eprintln!("{first} (see --help)");
            std::process::exit(2);
        }
    };
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
