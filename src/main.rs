//! The `rtcbox` binary: parse the command line, set up logging and the runtime, hand over to `app`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use rtcbox::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    rtcbox::app::init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("rtcbox: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rtcbox::app::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("rtcbox: {error:#}");
            ExitCode::FAILURE
        }
    }
}
