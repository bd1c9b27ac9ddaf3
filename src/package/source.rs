//! What a bundle inside an offline package is read from: the package file
//! itself, or the numbered volumes of a split package read as one byte
//! stream (positioned reads cross volume boundaries, and a missing or
//! damaged volume is rebuilt stripe by stripe from parity in memory), so no
//! reader ever joins volumes on disk.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::volumes::VolumeSet;

/// Positioned reads, for the tar indexer and the hashing helpers, which
/// read packages, bundles and plain files alike.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
}

/// A bundle file, an offline package, or a split package's volumes.
#[derive(Debug)]
pub enum PackageFile {
    Plain(File),
    Volumes(Arc<VolumeSet>),
}

impl PackageFile {
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            PackageFile::Plain(f) => FileExt::read_exact_at(f, buf, offset),
            PackageFile::Volumes(v) => v.read_exact_at(buf, offset),
        }
    }

    pub fn try_clone(&self) -> std::io::Result<PackageFile> {
        Ok(match self {
            PackageFile::Plain(f) => PackageFile::Plain(f.try_clone()?),
            PackageFile::Volumes(v) => PackageFile::Volumes(v.clone()),
        })
    }

    /// Length of the whole byte stream.
    pub fn len(&self) -> std::io::Result<u64> {
        match self {
            PackageFile::Plain(f) => Ok(f.metadata()?.len()),
            PackageFile::Volumes(v) => Ok(v.stream_len()),
        }
    }

    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl ReadAt for PackageFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        PackageFile::read_exact_at(self, buf, offset)
    }
}

impl From<File> for PackageFile {
    fn from(f: File) -> Self {
        PackageFile::Plain(f)
    }
}

/// A split package's volumes shared by the bundle locations inside it
/// (equal when they are the same opened set).
#[derive(Clone, Debug)]
pub struct SharedVolumes(pub Arc<VolumeSet>);

impl PartialEq for SharedVolumes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SharedVolumes {}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }
}

impl ReadAt for VolumeSet {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        VolumeSet::read_exact_at(self, buf, offset)
    }
}
