//! The `*.bundle.tar` format: what is in it ([`format`]), how it is
//! written deterministically with blobs filled in parallel ([`writer`]), how it
//! is read without unpacking ([`reader`]: an offset index of every entry,
//! nested `images.tar` included), verified ([`verify`]) and described
//! ([`inspect`]).
pub mod delta;
pub mod format;
pub mod inspect;
pub mod location;
pub mod reader;
pub mod unhinted;
pub mod verify;
pub mod writer;

pub use format::BundleJson;
pub use reader::{BundleImage, BundleReader};
