//! bundler — carry a Helm-packaged product (charts, images, hints) into an
//! air-gapped Kubernetes site.
//!
//! Module map (by concern):
//! - [`cli`]: argument parsing and dispatch to the verbs.
//! - [`config`]: `load-image.yaml` (sync) and the bundle manifest (pack).
//! - [`oci`]: references, digests, media types, registry client and auth,
//!   OCI layouts and docker archives.
//! - [`bundle`]: the `*.bundle.tar` format: writer, seeking reader/index,
//!   verification, inspection.
//! - [`chart`]: chart loading, hints, relocation, packaging, repo targets.
//! - [`package`]: the offline package: table of contents, signature,
//!   volumes with parity, free-space checks.
//! - [`pack`], [`sync`], [`upgrade`], [`inventory`], [`diff`]: one module
//!   per verb.
//! - [`atomic_file`], [`interrupt`]: temp files, locks and modes safe for
//!   concurrent runs; SIGINT/SIGTERM cleanup.
//! - [`yaml_bounds`]: the alias-expansion bound every YAML read goes through.
//! - [`referrers`]: signatures, attestations and SBOMs carried with the
//!   images (pack, sync, serve, inspect) and `--require-signature`.
pub mod apply;
pub mod atomic_file;
pub mod bundle;
pub mod carried;
pub mod chart;
pub mod cli;
pub mod config;
pub mod diff;
pub mod diff_charts;
pub mod error;
pub mod file_kind;
pub mod graceful;
pub mod interrupt;
pub mod inventory;
pub mod manifests;
pub mod oci;
pub mod outcome;
pub mod pack;
pub mod package;
pub mod paths;
pub mod progress;
pub mod referrers;
pub mod serve;
pub mod state;
pub mod status;
pub mod sync;
pub mod transfer;
pub mod upgrade;
pub mod yaml_bounds;
