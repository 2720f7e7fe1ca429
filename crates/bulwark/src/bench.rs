//! `bulwark bench`: a load generator (being written).

use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> ExitCode {
    eprintln!("bench: not yet");
    ExitCode::from(2)
}
