//! `bundler repair VOLUME|DIR`: write back the volumes of a split package
//! that are missing or damaged, rebuilt from the others and the parity
//! volumes, each checked against the volume table before it replaces
//! anything; then the package is checked against its `package.json`.
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::volumes;

#[derive(clap::Args, Debug)]
pub struct RepairArgs {
    /// A volume of the split package (`NAME.tar.001`), its table, or the directory holding them.
    #[arg(value_name = "VOLUME|DIR")]
    pub path: PathBuf,
}

/// The split packages `path` names (`DIR/NAME.tar` each).
fn bases(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_dir() {
        let found = volumes::sets_in_dir(path);
        if found.is_empty() {
            bail!("{}: no split package here (no NAME.tar.001, NAME.tar.parN or NAME.tar.volumes.json)", path.display());
        }
        return Ok(found);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if !volumes::is_volume_name(path) {
        bail!("{}: not a volume of a split package (NAME.tar.001, NAME.tar.parN or NAME.tar.volumes.json)", path.display());
    }
    let base = name
        .strip_suffix(volumes::TABLE_SUFFIX)
        .or_else(|| name.rsplit_once('.').map(|(b, _)| b))
        .unwrap_or(name);
    Ok(vec![path.with_file_name(base)])
}

pub fn run(args: &RepairArgs) -> anyhow::Result<()> {
    let progress = crate::progress::Progress::auto(false);
    for base in bases(&args.path)? {
        let written = volumes::repair(&base, &progress)?;
        // The rebuilt stream must still be the package that was packed.
        let check = super::read::PackageCheck {
            contents: true,
            volumes: true,
            key: None,
        };
        super::read::open_volumes(&base, &check)?;
        progress.finish();
        if written.is_empty() {
            println!(
                "OK {}: every volume is whole, nothing to repair",
                base.display()
            );
        }
        for w in written {
            println!("repaired {}", w.display());
        }
    }
    Ok(())
}
