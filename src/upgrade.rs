//! `bundler upgrade` (upgrade work).
pub async fn run(args: &crate::cli::UpgradeArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("upgrade: not implemented yet")
}
