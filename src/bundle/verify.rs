//! verify (bundle work).
pub fn run(args: &crate::cli::VerifyArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("verify: not implemented yet")
}
