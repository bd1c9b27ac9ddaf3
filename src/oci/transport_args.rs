//! TLS and transport flags shared by every verb that talks to a registry or
//! a chart repository. Lives beside the registry client rather than in
//! `cli` so that verbs can own their argument structs without importing
//! the command-line layer.
use std::path::PathBuf;

use clap::Args;

/// TLS and transport options shared by verbs that talk to registries.
#[derive(Args, Debug, Clone, Default)]
pub struct TransportArgs {
    /// Accept plain HTTP and self-signed TLS certificates (`--insecure`,
    /// `--insecure=false`; charts-syncer's `--insecure true` also works).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL", value_parser = clap::value_parser!(bool))]
    pub insecure: Option<bool>,
    /// Trust this CA certificate (PEM) in addition to the system ones.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl TransportArgs {
    pub fn insecure(&self) -> bool {
        self.insecure.unwrap_or(false)
    }
}
