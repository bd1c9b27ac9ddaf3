//! Bytes this process handed to its TCP connections that the peer has not
//! acknowledged yet (issue 22), so upload progress counts what the
//! registry received rather than what sits in socket buffers.
//!
//! On a slow link the kernel's send buffers hold megabytes per connection:
//! counting bytes as they are written made the total reach 100 % and the
//! ETA 0 s while the link still had seconds of data to carry. Linux says
//! how much of a socket's send queue is not acknowledged yet
//! (`ioctl(SIOCOUTQ)`); this process's sockets are the `socket:[inode]`
//! links in `/proc/self/fd`. Asking each costs a few system calls, never a
//! read of the machine-wide socket table. Elsewhere this answers `None`
//! and progress counts bytes sent.

/// Whether the send queues can be read here (Linux, /proc mounted).
pub fn available() -> bool {
    cfg!(target_os = "linux") && std::path::Path::new("/proc/self/fd").exists()
}

/// Sum of the unacknowledged send queues of this process's sockets.
pub fn unacked_bytes() -> Option<u64> {
    if !available() {
        return None;
    }
    let mut sum = 0u64;
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let is_socket =
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:["));
        let fd = e.file_name().to_string_lossy().parse::<i32>().ok();
        if let (true, Some(fd)) = (is_socket, fd) {
            sum += send_queue(fd);
        }
    }
    Some(sum)
}

/// Bytes in `fd`'s send queue not yet acknowledged (0 when it is not a
/// connected TCP socket any more: the fd may have been closed and reused
/// since the directory was listed, which only makes this a non-socket).
#[cfg(target_os = "linux")]
fn send_queue(fd: i32) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int; on fds it does not apply
    // to it fails with ENOTTY/EINVAL and writes nothing.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    if rc == 0 && n > 0 {
        n as u64
    } else {
        0
    }
}

#[cfg(not(target_os = "linux"))]
fn send_queue(_fd: i32) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bytes_a_peer_has_not_taken_are_counted() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        // The peer reads nothing: fill its buffer and then ours.
        tx.set_nonblocking(true).unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut written = 0u64;
        for _ in 0..4096 {
            match tx.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(_) => break,
            }
        }
        let queued = unacked_bytes().unwrap();
        assert!(queued > 0, "{queued} of {written} queued");
        drop(rx);
    }
}
