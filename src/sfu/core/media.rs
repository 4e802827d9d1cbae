//! A participant's media: its str0m peer connections (LiveKit v0: a publisher and a
//! subscriber `Rtc`) and how each is built.

use std::time::Instant;

use str0m::net::TcpType;
use str0m::{Candidate, Rtc};

use super::Sfu;
use super::session::Participant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Pc {
    Publisher,
    Subscriber,
}

pub(super) struct Peer {
    pub(super) rtc: Rtc,
    pub(super) timeout: Instant,
    pub(super) queued: bool,
    pub(super) connected: bool,
}

impl Sfu {
    pub(super) fn new_rtc(&self, now: Instant) -> Rtc {
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .build(now);
        for addr in &self.config.udp_candidates {
            if let Ok(candidate) = Candidate::host(*addr, "udp") {
                rtc.add_local_candidate(candidate);
            }
        }
        for addr in &self.config.tcp_candidates {
            if let Ok(candidate) = Candidate::builder()
                .tcp()
                .host(*addr)
                .tcptype(TcpType::Passive)
                .build()
            {
                rtc.add_local_candidate(candidate);
            }
        }
        rtc
    }
}

impl Peer {
    pub(super) fn new(rtc: Rtc, now: Instant) -> Self {
        Peer {
            rtc,
            timeout: now,
            queued: false,
            connected: false,
        }
    }
}

impl Participant {
    pub(super) fn peer(&self, pc: Pc) -> &Peer {
        match pc {
            Pc::Publisher => &self.publisher,
            Pc::Subscriber => &self.subscriber,
        }
    }

    pub(super) fn peer_mut(&mut self, pc: Pc) -> &mut Peer {
        match pc {
            Pc::Publisher => &mut self.publisher,
            Pc::Subscriber => &mut self.subscriber,
        }
    }
}
