//! A TCP relay from a loopback port inside a test's network namespace to a service outside
//! it: plugins run in a "node" namespace whose loopback is its own, while the test's etcd
//! listens on the machine's loopback. The relay's listening socket is opened from a thread
//! that entered the node namespace (a socket stays in the namespace it was made in); the
//! other end of each connection is made from the test process, outside. Nothing is added
//! to the machine's network, and dropping the relay makes the service unreachable from the
//! node (for "datastore down" tests) while the test still reaches it directly.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use shared::netns::NetNs;

/// How long the relay waits for the service to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(2);

/// Accepts on `127.0.0.1:<port>` inside a namespace, forwards to `target`; stops on drop.
#[derive(Debug)]
pub struct TcpRelay {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpRelay {
    /// Listens inside the namespace at `netns` (its `lo` must be up) and relays every
    /// connection to `target`.
    pub fn start(netns: &Path, target: SocketAddr) -> io::Result<TcpRelay> {
        let ns = NetNs::open(netns).map_err(io::Error::other)?;
        let listener = ns
            .run(|| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .map_err(io::Error::other)??;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        thread::spawn(move || pipe(inbound, target));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                    Err(_) => break,
                }
            }
        });
        Ok(TcpRelay {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// The relay's URL as seen from inside the namespace.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies both ways until each side has finished sending; a refused connection to the
/// target just closes the inbound one (the client sees the service as down).
fn pipe(inbound: TcpStream, target: SocketAddr) {
    let run = || -> io::Result<()> {
        inbound.set_nonblocking(false)?;
        let outbound = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)?;
        let (mut in_r, mut in_w) = (inbound.try_clone()?, inbound.try_clone()?);
        let (mut out_r, mut out_w) = (outbound.try_clone()?, outbound);
        let up = thread::spawn(move || {
            let _ = io::copy(&mut in_r, &mut out_w);
            let _ = out_w.shutdown(Shutdown::Write);
        });
        let _ = io::copy(&mut out_r, &mut in_w);
        let _ = in_w.shutdown(Shutdown::Write);
        let _ = up.join();
        Ok(())
    };
    let _ = run();
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::TestNetns;

    /// Needs root (a network namespace).
    #[test]
    fn relays_from_inside_a_namespace_and_stops_on_drop() {
        let ns = TestNetns::with_lo_up("relay").expect("netns");
        let service = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let target = service.local_addr().expect("addr");
        let server = thread::spawn(move || {
            let (mut s, _) = service.accept().expect("accept");
            let mut line = [0u8; 5];
            s.read_exact(&mut line).expect("read");
            s.write_all(b"pong!").expect("write");
            line
        });
        let relay = TcpRelay::start(ns.path(), target).expect("relay");
        let port = relay.port;
        let handle = NetNs::open(ns.path()).expect("open");
        let answer = handle
            .run(move || -> io::Result<[u8; 5]> {
                let mut c = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
                c.write_all(b"ping!")?;
                let mut got = [0u8; 5];
                c.read_exact(&mut got)?;
                Ok(got)
            })
            .expect("enter")
            .expect("exchange");
        assert_eq!(&answer, b"pong!");
        assert_eq!(&server.join().expect("server"), b"ping!");
        drop(relay);
        let refused = handle
            .run(move || TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err())
            .expect("enter");
        assert!(refused, "nothing listens once the relay is dropped");
    }
}
