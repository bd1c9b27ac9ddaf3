//! The offline package (`<name>_<version>_<arch>.tar`): a table of
//! contents as its first entry ([`toc`]), an optional signature
//! ([`sign`]), optional volumes with parity for removable media
//! ([`volumes`]), how readers open and check it ([`read`], [`source`]), how
//! pack writes it ([`write`]), and the free-space checks before writing
//! ([`space`]).
//!
//! Why a module of its own: every reader (inspect, verify, sync, serve,
//! diff) goes through the same checks in [`read`] before it reads a
//! single bundle, and pack writes exactly what those checks expect.
pub mod read;
pub mod repair;
pub mod sign;
pub mod source;
pub mod space;
pub mod toc;
pub mod volumes;
pub mod write;
