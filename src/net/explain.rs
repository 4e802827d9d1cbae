//! Operating-system errors in words an admin can act on. The panel and the log showed the raw
//! text ("Network is unreachable (os error 101)", "Address in use (os error 98)"); these
//! functions say what happened and what to check instead. The raw text is kept only for an
//! error no sentence here covers.

use std::io;

/// What a socket error (bind, connect, send, receive) means, and what to check.
pub fn io_error(error: &io::Error) -> String {
    use io::ErrorKind as K;
    let words = match error.kind() {
        K::ConnectionRefused => {
            "the connection was refused: nothing listens on that port, or a firewall rejects it"
        }
        K::ConnectionReset | K::ConnectionAborted => {
            "the connection was cut: the other side or a firewall in between closed it"
        }
        K::TimedOut => {
            "no answer in time: a firewall drops the packets, the port is not forwarded, or the \
             address is wrong"
        }
        K::HostUnreachable => {
            "the host is unreachable: it is off, the address is wrong, or a router or firewall \
             on the way blocks it"
        }
        K::NetworkUnreachable => {
            "this machine has no route to that network: check its network connection and default \
             gateway (for an IPv6 address: does this machine have IPv6 internet access?)"
        }
        K::NetworkDown => "this machine's network is down: check its network connection",
        K::AddrInUse => {
            "the port is already in use by another program (coturn, a second rtcbox, DSM?): stop \
             that program or choose another port"
        }
        K::AddrNotAvailable => {
            "this machine does not have that address: check the address setting (0.0.0.0 means \
             all of this machine's addresses)"
        }
        K::PermissionDenied => {
            "permission denied: ports below 1024 need privileges rtcbox does not have (choose \
             1024 or above), or a security policy forbids it"
        }
        _ => return format!("the system reported: {error}"),
    };
    words.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: io::ErrorKind, expected: &str) {
        let text = io_error(&io::Error::from(kind));
        assert!(text.contains(expected), "{kind:?}: {text}");
        assert!(!text.contains("os error"), "{kind:?}: {text}");
    }

    #[test]
    fn each_socket_error_says_what_to_check() {
        use io::ErrorKind as K;
        check(K::ConnectionRefused, "nothing listens on that port");
        check(K::ConnectionReset, "closed it");
        check(K::TimedOut, "the port is not forwarded");
        check(K::HostUnreachable, "the address is wrong");
        check(K::NetworkUnreachable, "default gateway");
        check(K::NetworkDown, "network connection");
        check(K::AddrInUse, "choose another port");
        check(K::AddrNotAvailable, "does not have that address");
        check(K::PermissionDenied, "1024");
        // Raw OS errors become the same words (what the socket calls really return).
        for (errno, expected) in [
            (98, "already in use"),
            (99, "does not have that address"),
            (101, "no route to that network"),
            (111, "refused"),
            (113, "unreachable"),
        ] {
            let text = io_error(&io::Error::from_raw_os_error(errno));
            assert!(text.contains(expected), "errno {errno}: {text}");
        }
        // Anything else keeps the system's own words, said to be the system's.
        assert_eq!(
            io_error(&io::Error::other("strange")),
            "the system reported: strange"
        );
    }

    #[tokio::test]
    async fn a_real_refused_connection_and_a_taken_port() {
        // A port on loopback that was just free: nothing listens there.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
        assert!(io_error(&refused).starts_with("the connection was refused"));
        // A port this process holds cannot be bound again.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = std::net::TcpListener::bind(held.local_addr().unwrap()).unwrap_err();
        assert!(io_error(&taken).contains("already in use"), "{taken}");
    }
}
