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
    let result = runtime.block_on(rtcbox::app::run(cli));
    if rtcbox::restart::requested() {
        // Every task ends with the runtime; then the same binary starts again in this process.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        let error = rtcbox::restart::exec_self();
        eprintln!("rtcbox: cannot restart itself: {error}");
        return ExitCode::FAILURE;
    }
    match result {
        Ok(code) => code,
        Err(error) => {
            // `{:#}` prints the whole context chain on one line: "what failed: why".
            eprintln!("rtcbox: {error:#}");
            ExitCode::FAILURE
        }
    }
}
