//! The relay sockets, read by the TURN core task itself: no task, channel or buffer per relay.
//!
//! Each socket has a slot and a waker of its own. When tokio finds a socket readable it wakes
//! that waker, which queues the slot (once) and wakes the core task; the core then reads only
//! the queued sockets, each until it would block ([`RelaySockets::read_ready`]), into the
//! core's one buffer. A socket that still has data after [`BATCH`] datagrams is queued again,
//! so one busy relay cannot starve the others or the listener.

use std::collections::HashMap;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use tokio::net::UdpSocket;

/// Most datagrams read from one socket before the others get their turn.
pub const BATCH: usize = 64;

/// The open relay sockets, by advertised relay address.
#[derive(Default)]
pub struct RelaySockets {
    slots: Vec<Option<Relay>>,
    free: Vec<usize>,
    by_address: HashMap<SocketAddr, usize>,
    ready: Arc<Ready>,
    /// The ready list of the turn being read; swapped with [`Ready`]'s, so neither allocates
    /// once grown.
    reading: Vec<usize>,
}

struct Relay {
    socket: UdpSocket,
    advertised: SocketAddr,
    waker: Arc<SlotWaker>,
}

/// Slots whose socket may be readable, and the core task to wake for them.
#[derive(Default)]
pub struct Ready {
    list: Mutex<ReadyList>,
}

impl Ready {
    fn lock(&self) -> MutexGuard<'_, ReadyList> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Until a relay socket may be readable.
    pub async fn readable(&self) {
        poll_fn(|cx| {
            let mut list = self.lock();
            if list.slots.is_empty() {
                if !list.core.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    list.core = Some(cx.waker().clone());
                }
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

#[derive(Default)]
struct ReadyList {
    slots: Vec<usize>,
    core: Option<Waker>,
}

/// The waker tokio holds for one relay socket.
struct SlotWaker {
    slot: usize,
    /// In the ready list already (cleared when the core reads the slot).
    queued: AtomicBool,
    ready: Arc<Ready>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let core = {
            let mut list = self.ready.lock();
            list.slots.push(self.slot);
            list.core.take()
        };
        if let Some(core) = core {
            core.wake();
        }
    }
}

impl RelaySockets {
    /// Takes `socket` (non-blocking, not yet registered with tokio) as the relay advertised
    /// under `advertised`; it is read from the next [`RelaySockets::read_ready`] on.
    pub fn insert(
        &mut self,
        advertised: SocketAddr,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<()> {
        let socket = UdpSocket::from_std(socket)?;
        self.remove(advertised);
        let slot = self.free.pop().unwrap_or(self.slots.len());
        let waker = Arc::new(SlotWaker {
            slot,
            queued: AtomicBool::new(false),
            ready: self.ready.clone(),
        });
        // Queued at once: the first read registers the socket's waker with tokio.
        waker.wake_by_ref();
        let relay = Relay {
            socket,
            advertised,
            waker,
        };
        match self.slots.get_mut(slot) {
            Some(free) => *free = Some(relay),
            None => self.slots.push(Some(relay)),
        }
        self.by_address.insert(advertised, slot);
        Ok(())
    }

    /// Closes the relay advertised under `advertised`, if open.
    pub fn remove(&mut self, advertised: SocketAddr) {
        if let Some(slot) = self.by_address.remove(&advertised) {
            if let Some(entry) = self.slots.get_mut(slot) {
                *entry = None;
            }
            self.free.push(slot);
        }
    }

    pub fn contains(&self, advertised: &SocketAddr) -> bool {
        self.by_address.contains_key(advertised)
    }

    /// The socket of the relay advertised under `advertised`.
    pub fn socket(&self, advertised: &SocketAddr) -> Option<&UdpSocket> {
        let slot = *self.by_address.get(advertised)?;
        Some(&self.slots.get(slot)?.as_ref()?.socket)
    }

    /// What tells the core task that a relay socket may be readable.
    pub fn ready(&self) -> Arc<Ready> {
        self.ready.clone()
    }

    /// Reads the queued sockets until each would block (or gave [`BATCH`] datagrams), into
    /// `buf[into]`, and calls `relayed(socket's advertised address, peer, length, buf)` for each
    /// datagram (the whole `buf`, so the caller can use the room around `into`). Receive errors
    /// (ICMP errors of earlier sends surface here) are skipped.
    pub fn read_ready(
        &mut self,
        buf: &mut [u8],
        into: Range<usize>,
        mut relayed: impl FnMut(SocketAddr, SocketAddr, usize, &mut [u8]),
    ) {
        {
            let mut list = self.ready.lock();
            std::mem::swap(&mut list.slots, &mut self.reading);
        }
        for slot in self.reading.drain(..) {
            let Some(Some(relay)) = self.slots.get(slot) else {
                continue;
            };
            // Before reading, so readiness from now on queues it again.
            relay.waker.queued.store(false, Ordering::Release);
            let waker = Waker::from(relay.waker.clone());
            let mut cx = Context::from_waker(&waker);
            let mut read = 0;
            loop {
                if read == BATCH {
                    relay.waker.wake_by_ref();
                    break;
                }
                let Some(datagram) = buf.get_mut(into.clone()) else {
                    return;
                };
                match relay.socket.try_recv_from(datagram) {
                    Ok((n, from)) => {
                        read += 1;
                        relayed(relay.advertised, from, n, buf);
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        // Registers the waker; ready again means data arrived meanwhile.
                        match relay.socket.poll_recv_ready(&mut cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(error)) => {
                                tracing::trace!(%error, "relay socket not readable");
                                break;
                            }
                            Poll::Pending => break,
                        }
                    }
                    Err(error) => {
                        read += 1;
                        tracing::trace!(%error, "relay receive error");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, UdpSocket as StdSocket};
    use std::time::Duration;

    fn bound() -> (StdSocket, SocketAddr) {
        let socket = StdSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        (socket, addr)
    }

    /// What one `read_ready` gives: (relay, payload) in the order read.
    fn read(relays: &mut RelaySockets) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut buf = vec![0u8; 2048];
        let mut got = Vec::new();
        relays.read_ready(&mut buf, 8..2040, |relay, _, n, buf| {
            got.push((relay, buf[8..8 + n].to_vec()));
        });
        got
    }

    /// Waits (bounded) until a relay socket is reported readable.
    async fn readable(ready: &Ready) -> bool {
        tokio::time::timeout(Duration::from_secs(5), ready.readable())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn one_reader_reads_every_socket_that_has_data_and_only_those() {
        let mut relays = RelaySockets::default();
        let ready = relays.ready();
        let (a, a_addr) = bound();
        let (b, b_addr) = bound();
        let (c, c_addr) = bound();
        relays.insert(a_addr, a).unwrap();
        relays.insert(b_addr, b).unwrap();
        relays.insert(c_addr, c).unwrap();
        // New sockets are read once, which registers them; nothing has come yet.
        assert!(readable(&ready).await);
        assert!(read(&mut relays).is_empty());

        let peer = StdSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        peer.send_to(b"a1", a_addr).unwrap();
        peer.send_to(b"a2", a_addr).unwrap();
        peer.send_to(b"c1", c_addr).unwrap();
        let mut got = Vec::new();
        while got.len() < 3 {
            assert!(readable(&ready).await, "woken for {got:?}");
            got.extend(read(&mut relays));
        }
        let mut expected = vec![
            (a_addr, b"a1".to_vec()),
            (a_addr, b"a2".to_vec()),
            (c_addr, b"c1".to_vec()),
        ];
        // The OS picks the ports, so the sockets' order is any.
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        // Everything was read: nothing wakes the reader until more comes.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), ready.readable())
                .await
                .is_err()
        );

        // A closed relay is neither read nor reported, its slot is reused.
        relays.remove(b_addr);
        assert!(!relays.contains(&b_addr));
        let (d, d_addr) = bound();
        relays.insert(d_addr, d).unwrap();
        peer.send_to(b"d1", d_addr).unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(readable(&ready).await);
            got.extend(read(&mut relays));
        }
        assert_eq!(got, [(d_addr, b"d1".to_vec())]);
    }

    #[tokio::test]
    async fn a_busy_socket_yields_after_a_batch() {
        let mut relays = RelaySockets::default();
        let ready = relays.ready();
        let (a, a_addr) = bound();
        relays.insert(a_addr, a).unwrap();
        assert!(readable(&ready).await);
        assert!(read(&mut relays).is_empty());
        let peer = StdSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        for i in 0..BATCH + 5 {
            peer.send_to(&[i as u8], a_addr).unwrap();
        }
        // Loopback delivers at once; still, wait for the wakeup.
        assert!(readable(&ready).await);
        let first = read(&mut relays);
        assert_eq!(first.len(), BATCH);
        // Queued again at once for the rest.
        assert!(readable(&ready).await);
        assert_eq!(read(&mut relays).len(), 5);
    }
}
