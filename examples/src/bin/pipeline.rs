//! `pipeline`: the end-to-end job on embedded defaults. See `examples::pipeline`.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    examples::pipeline::run(&examples::pipeline::Args::parse()).map(drop)
}
