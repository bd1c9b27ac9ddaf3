//! Inputs that users write: `load-image.yaml` for `sync` ([`load_image`])
//! and the bundle manifest for `pack` ([`manifest`]). Both refuse unknown
//! keys and wrong types with file, line, column and key (exit status 2).
pub mod load_image;
pub mod manifest;
mod rewrite_rules;
mod suggest;
pub mod yaml;

pub use load_image::SyncConfig;
pub use manifest::BundleManifest;
