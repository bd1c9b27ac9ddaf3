//! `bundler` binary: everything lives in the library; this only maps the
//! outcome to an exit status.
fn main() {
    // A file-size limit (`ulimit -f`) must surface as a clear EFBIG write
    // error ("File too large") that pack reports and cleans up after, not
    // as a silent kill by SIGXFSZ that leaves temp files behind.
    // SAFETY: setting a signal to SIG_IGN before any thread starts.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    std::process::exit(bundler::cli::main());
}
