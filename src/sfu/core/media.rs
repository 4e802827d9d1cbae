//! A participant's media: the str0m peer connections it holds and which one carries what.
//!
//! [`Media`] is the one type that owns a participant's `Rtc`s: LiveKit's v0 dual peer
//! connection (the client publishes on a publisher `Rtc`, where its RTP, new m-lines and data
//! arrive, and we send on a subscriber `Rtc`), or v1's single peer connection (one `Rtc`, the
//! client's "publisher", that is both). The rest of the core never counts them: it asks for the
//! uplink (what the client sends us) or the downlink (what we send the client), and whether an
//! event's connection is one or the other.

use std::net::SocketAddr;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response;
use str0m::net::{Protocol, TcpType};
use str0m::{Candidate, Input, Rtc};

use super::{ParticipantKey, Sfu, guard};

/// How often str0m reports a connection's loss and round-trip time (connection quality).
const STATS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// One of a participant's peer connections, named as LiveKit's `SignalTarget` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Pc {
    Publisher,
    Subscriber,
}

/// A participant's peer connections.
pub(super) enum Media {
    /// v0: the client's publisher connection and our subscriber connection (boxed: the
    /// variants then weigh one `Rtc` each).
    Dual {
        publisher: Peer,
        subscriber: Box<Peer>,
    },
    /// v1: one connection the client offers on, named [`Pc::Publisher`] as the client names it.
    Single { peer: Peer },
}

/// One str0m `Rtc` and the run-loop state the core keeps for it.
pub(super) struct Peer {
    pub(super) rtc: Rtc,
    /// When str0m wants `Input::Timeout` next (its last `Output::Timeout`).
    pub(super) timeout: Instant,
    /// Whether it waits in `Sfu::dirty` to be drained.
    pub(super) queued: bool,
    /// Whether media or feedback was written to it since it was last drained: str0m's send
    /// queue releases what was written only on a timeout input, so the drain feeds it one.
    pub(super) written: bool,
    pub(super) connected: bool,
    /// The first m-line's mid of the last description exchanged, which a trickled candidate
    /// names (clients refuse a candidate without a known mid).
    pub(super) first_mid: Option<String>,
}

impl Media {
    /// LiveKit v0: two peer connections, built by [`Sfu::new_rtc`].
    pub(super) fn dual(publisher: Rtc, subscriber: Rtc, now: Instant) -> Self {
        Media::Dual {
            publisher: Peer::new(publisher, now),
            subscriber: Box::new(Peer::new(subscriber, now)),
        }
    }

    /// LiveKit v1: one peer connection the client offers on, carrying both directions.
    pub(super) fn single(rtc: Rtc, now: Instant) -> Self {
        Media::Single {
            peer: Peer::new(rtc, now),
        }
    }

    /// Whether this is v1's single peer connection (the client offers, we only answer).
    pub(super) fn is_single(&self) -> bool {
        matches!(self, Media::Single { .. })
    }

    /// The connections this participant has.
    pub(super) fn pcs(&self) -> &'static [Pc] {
        match self {
            Media::Dual { .. } => &[Pc::Publisher, Pc::Subscriber],
            Media::Single { .. } => &[Pc::Publisher],
        }
    }

    /// The connection `pc` names (v1 has one, whatever the name).
    pub(super) fn peer(&self, pc: Pc) -> &Peer {
        match (self, pc) {
            (Media::Dual { publisher, .. }, Pc::Publisher) => publisher,
            (Media::Dual { subscriber, .. }, Pc::Subscriber) => subscriber,
            (Media::Single { peer }, _) => peer,
        }
    }

    pub(super) fn peer_mut(&mut self, pc: Pc) -> &mut Peer {
        match (self, pc) {
            (Media::Dual { publisher, .. }, Pc::Publisher) => publisher,
            (Media::Dual { subscriber, .. }, Pc::Subscriber) => subscriber,
            (Media::Single { peer }, _) => peer,
        }
    }

    /// The connection the client's media and data arrive on.
    pub(super) fn uplink_pc(&self) -> Pc {
        Pc::Publisher
    }

    /// The connection we send media and data to the client on.
    pub(super) fn downlink_pc(&self) -> Pc {
        match self {
            Media::Dual { .. } => Pc::Subscriber,
            Media::Single { .. } => Pc::Publisher,
        }
    }

    pub(super) fn uplink(&self) -> &Rtc {
        &self.peer(self.uplink_pc()).rtc
    }

    pub(super) fn uplink_mut(&mut self) -> &mut Rtc {
        &mut self.peer_mut(self.uplink_pc()).rtc
    }

    pub(super) fn downlink(&self) -> &Rtc {
        &self.peer(self.downlink_pc()).rtc
    }

    pub(super) fn downlink_mut(&mut self) -> &mut Rtc {
        &mut self.peer_mut(self.downlink_pc()).rtc
    }

    /// Whether events of `pc` are the client's (its RTP, m-lines, data).
    pub(super) fn is_uplink(&self, pc: Pc) -> bool {
        pc == self.uplink_pc()
    }

    /// Whether events of `pc` are about what we send (keyframe requests from the client).
    pub(super) fn is_downlink(&self, pc: Pc) -> bool {
        pc == self.downlink_pc()
    }

    /// The connection a trickled candidate is for.
    pub(super) fn for_target(&self, target: i32) -> Pc {
        if target == proto::SignalTarget::Subscriber as i32 && !self.is_single() {
            Pc::Subscriber
        } else {
            Pc::Publisher
        }
    }

    /// The connection that accepts `input` (a STUN request names it by ICE credentials); `None`
    /// when none does or str0m panicked.
    pub(super) fn accepting(&self, input: &Input) -> Option<Pc> {
        self.pcs().iter().copied().find(|pc| {
            let rtc = &self.peer(*pc).rtc;
            guard(|| rtc.accepts(input)).unwrap_or(false)
        })
    }

    /// Whether every connection is alive (DTLS open, ICE not gone for good).
    pub(super) fn is_alive(&self) -> bool {
        self.pcs().iter().all(|pc| self.peer(*pc).rtc.is_alive())
    }

    /// The earliest time a connection wants `Input::Timeout`.
    pub(super) fn next_timeout(&self) -> Instant {
        let timeout = self.peer(self.uplink_pc()).timeout;
        timeout.min(self.peer(self.downlink_pc()).timeout)
    }

    pub(super) fn disconnect(&mut self) {
        for pc in self.pcs() {
            self.peer_mut(*pc).rtc.disconnect();
        }
    }
}

impl Sfu {
    /// A new peer connection: RTP mode (we forward packets, not frames), ICE-lite, our host
    /// candidates for UDP and passive TCP; str0m reports each one's statistics every second.
    pub(super) fn new_rtc(&self, now: Instant) -> Rtc {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_stats_interval(Some(STATS_INTERVAL))
            .build(now);
        for candidate in local_candidates(&self.config.udp_candidates, &self.config.tcp_candidates)
        {
            rtc.add_local_candidate(candidate);
        }
        rtc
    }

    /// The advertised addresses changed (the public IP moved): new peer connections get the
    /// new candidates; every session's connections add them and the client is sent them
    /// (trickle, both connections), and the connection we offer restarts ICE, so a client
    /// whose path died reconnects without rejoining. Candidates no longer advertised stay
    /// known to existing connections (their pairs die with the old address).
    pub fn set_candidates(&mut self, now: Instant, udp: Vec<SocketAddr>, tcp: Vec<SocketAddr>) {
        let added: Vec<Candidate> = local_candidates(&udp, &tcp)
            .into_iter()
            .filter(|c| {
                let known = match c.proto() {
                    Protocol::Udp => &self.config.udp_candidates,
                    _ => &self.config.tcp_candidates,
                };
                !known.contains(&c.addr())
            })
            .collect();
        self.config.udp_candidates = udp;
        self.config.tcp_candidates = tcp;
        if added.is_empty() {
            return;
        }
        let keys: Vec<ParticipantKey> = self.participants.keys().copied().collect();
        for key in keys {
            let mut trickles = Vec::new();
            if let Some(p) = self.participants.get_mut(&key) {
                for pc in p.media.pcs() {
                    let pc = *pc;
                    let peer = p.media.peer_mut(pc);
                    for candidate in &added {
                        if guard(|| peer.rtc.add_local_candidate(candidate.clone())).is_none() {
                            continue;
                        }
                        if let Some(mid) = &peer.first_mid {
                            trickles.push(trickle(pc, mid, candidate));
                        }
                    }
                }
            }
            for message in trickles {
                self.signal(key, message);
            }
            self.restart_subscriber_ice(key);
            self.negotiate_subscriber(now, key);
        }
    }
}

/// Host candidates for UDP and passive TCP.
fn local_candidates(udp: &[SocketAddr], tcp: &[SocketAddr]) -> Vec<Candidate> {
    let udp = udp
        .iter()
        .filter_map(|addr| Candidate::host(*addr, "udp").ok());
    let tcp = tcp.iter().filter_map(|addr| {
        Candidate::builder()
            .tcp()
            .host(*addr)
            .tcptype(TcpType::Passive)
            .build()
            .ok()
    });
    udp.chain(tcp).collect()
}

/// A `trickle` message carrying one of our candidates, as LiveKit servers send them: the
/// RTCIceCandidateInit JSON of the candidate line, for the connection `pc`.
fn trickle(pc: Pc, mid: &str, candidate: &Candidate) -> signal_response::Message {
    let target = match pc {
        Pc::Publisher => proto::SignalTarget::Publisher,
        Pc::Subscriber => proto::SignalTarget::Subscriber,
    };
    let init = serde_json::json!({
        "candidate": candidate.to_sdp_string(),
        "sdpMid": mid,
        "sdpMLineIndex": 0,
        "usernameFragment": null,
    });
    signal_response::Message::Trickle(proto::TrickleRequest {
        candidate_init: init.to_string(),
        target: target as i32,
        r#final: false,
    })
}

/// The first `a=mid:` of a session description.
pub(super) fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=mid:"))
        .map(|mid| mid.trim().to_owned())
}

impl Peer {
    fn new(rtc: Rtc, now: Instant) -> Self {
        Peer {
            rtc,
            timeout: now,
            queued: false,
            written: false,
            connected: false,
            first_mid: None,
        }
    }
}
