//! Helm charts: loading ([`load`]), image hints ([`hints`]) and their
//! discovery ([`discover`]), relocation of image references in values
//! ([`relocate`]), packaging and repo indexes ([`package`]), fetching from
//! sources and publishing to targets ([`repo`]).
//!
//! Relocation is planned as a pipeline, one module per step:
//! [`find_images`] (every image a render names) -> [`learn_controls`]
//! (which values control each, by rendering with sentinels; [`discover`]'s
//! shape-guessing proposes the first candidates) -> [`relocate`] (the
//! smallest values edit that makes each image the target) ->
//! [`render_check`] (prove it by rendering the relocated chart).
//! CONTRACT: the signatures here are what `pack`, `sync` and `upgrade` call;
//! bodies belong to the chart work.
pub mod discover;
pub mod find_images;
pub mod helmignore;
pub mod hints;
pub mod learn_cache;
pub mod learn_controls;
pub mod load;
pub mod package;
pub mod plan;
pub mod relocate;
pub mod render_check;
pub mod repo;
pub mod tgz;
pub mod yamledit;

pub use load::Chart;
