//! `bundler` binary: everything lives in the library; this only maps the
//! outcome to an exit status.
fn main() {
    std::process::exit(bundler::cli::main());
}
