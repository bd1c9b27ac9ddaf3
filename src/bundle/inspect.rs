//! inspect (bundle work).
pub fn run(args: &crate::cli::InspectArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("inspect: not implemented yet")
}
