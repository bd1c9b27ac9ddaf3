//! `bundler sync`.
pub async fn run(args: &crate::cli::SyncArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("sync: not implemented yet")
}
