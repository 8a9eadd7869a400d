use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = tenantry::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tenantry::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes.
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            std::process::ExitCode::FAILURE
        }
    }
}
