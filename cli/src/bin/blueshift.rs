//! `blueshift`: watch object storage and load directories of data files into the warehouse
//! with upserts. See `cli::blueshift_cmd`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::blueshift_cmd::BlueshiftArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::blueshift_cmd::run(args).await
}
