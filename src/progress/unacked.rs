//! Bytes this process handed to its TCP connections that the peer has not
//! acknowledged yet (issue 22), so upload progress counts what the
//! registry received rather than what sits in socket buffers.
//!
//! On a slow link the kernel's send buffers hold megabytes per connection:
//! counting bytes as they are written made the total reach 100 % and the
//! ETA 0 s while the link still had seconds of data to carry. Linux lists
//! every TCP socket's send queue (`tx_queue`: written but not acknowledged)
//! in `/proc/self/net/tcp{,6}`; the sockets that are this process's are the
//! `socket:[inode]` links in `/proc/self/fd`. Elsewhere (or when /proc is
//! not readable) this answers `None` and progress counts bytes sent.
use std::collections::HashSet;

/// Whether the send queues can be read here (Linux /proc).
pub fn available() -> bool {
    std::path::Path::new("/proc/self/net/tcp").exists()
        && std::path::Path::new("/proc/self/fd").exists()
}

/// Sum of the send queues of this process's TCP sockets, in bytes.
pub fn unacked_bytes() -> Option<u64> {
    let inodes = own_socket_inodes()?;
    if inodes.is_empty() {
        return Some(0);
    }
    let mut sum = 0u64;
    let mut read_any = false;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        read_any = true;
        sum += queued_in(&text, &inodes);
    }
    read_any.then_some(sum)
}

fn own_socket_inodes() -> Option<HashSet<u64>> {
    let mut out = HashSet::new();
    for e in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(e.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                out.insert(n);
            }
        }
    }
    Some(out)
}

/// `tx_queue` summed over the rows of a `/proc/net/tcp` table whose inode
/// is in `inodes`.
fn queued_in(table: &str, inodes: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let inode: u64 = f.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            let tx = f.get(4)?.split(':').next()?;
            u64::from_str_radix(tx, 16).ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_process_sockets_are_counted() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:B687 0100007F:1F90 01 00010000:00000000 00:00000000 00000000     0        0 111 1 0 100 0 0 10 0\n   1: 0100007F:B688 0100007F:1F90 01 00000400:00000000 00:00000000 00000000     0        0 222 1 0 100 0 0 10 0\n";
        let mine: HashSet<u64> = [111].into_iter().collect();
        assert_eq!(queued_in(table, &mine), 0x10000);
        // A socket of this process really is found (a live listener has
        // an empty queue).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!own_socket_inodes().unwrap().is_empty());
        assert_eq!(unacked_bytes(), Some(0));
        drop(l);
    }
}
