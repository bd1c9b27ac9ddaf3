//! Helm charts: loading ([`load`]), image hints ([`hints`]) and their
//! discovery ([`discover`]), relocation of image references in values
//! ([`relocate`]), packaging and repo indexes ([`package`]), fetching from
//! sources and publishing to targets ([`repo`]).
//! CONTRACT: the signatures here are what `pack`, `sync` and `upgrade` call;
//! bodies belong to the chart work.
pub mod discover;
pub mod helmignore;
pub mod hints;
pub mod load;
pub mod package;
pub mod plan;
pub mod relocate;
pub mod render_check;
pub mod repo;
pub mod tgz;
pub mod yamledit;

pub use load::Chart;
