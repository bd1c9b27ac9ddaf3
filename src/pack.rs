//! `bundler pack`.
pub async fn run(args: &crate::cli::PackArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("pack: not implemented yet")
}
