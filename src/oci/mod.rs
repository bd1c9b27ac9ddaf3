//! OCI and docker image plumbing: references, digests, media types and
//! manifest parsing, the registry client with its auth, and the on-disk
//! formats (OCI image layout, docker archive).
pub mod archive;
pub mod auth;
pub mod digest;
pub mod helper_exec;
pub mod media;
pub mod reference;
pub mod registry;
pub mod transport_args;

pub use digest::Digest;
pub use reference::Reference;
pub use transport_args::TransportArgs;
