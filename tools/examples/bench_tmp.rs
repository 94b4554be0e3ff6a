//! Temporary: runs the bench with this example as the baseline node executable.
use clap::{Parser, Subcommand};
use tocsin_tools::baseline::{gossipsub_node_main, GossipsubNodeArgs};
use tocsin_tools::bench::{run, BenchArgs};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Bench(BenchArgs),
    GossipsubNode(GossipsubNodeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Bench(a) => run(&a).await.map(|_| ()),
        Cmd::GossipsubNode(a) => gossipsub_node_main(&a).await,
    }
}
