//! An in-process test harness: the sans-IO core driven by str0m client peers over an in-memory
//! network, with a virtual clock.
//!
//! Each [`Client`] plays a LiveKit v0 client: a publisher and a subscriber str0m `Rtc` (full ICE,
//! frame mode) on addresses of its own, and a signaling connection to the core. The harness
//! carries datagrams between the clients' `Rtc`s and [`Sfu::handle_receive`] by address, hands
//! the core's signaling output to the addressed client (which answers offers at once, or holds
//! its answers back when told to) and moves a virtual `now` forward to the earliest timeout of
//! anyone instead of sleeping, so a run is deterministic: no sockets, threads or wall clock
//! (quinn's two-endpoint tests are the model).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use livekit_protocol as proto;
use proto::{signal_request, signal_response};
use str0m::change::{SdpAnswer, SdpApi, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaData, MediaKind, Mid, Rid, Simulcast, SimulcastLayer, Writer};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::{Candidate, Event, Input, Output as RtcOutput, Rtc};

use super::core::{
    ConnId, JoinRequest, Output, RESUME_WINDOW, ResumeError, ResumeRequest, Sfu, SfuConfig,
};
use crate::rooms::RoomOptions;

/// The core's one media address (what its host candidate says).
const SFU_ADDR: &str = "10.0.0.1:7882";

pub struct Harness {
    pub sfu: Sfu,
    pub now: Instant,
    pub clients: BTreeMap<ConnId, Client>,
    sfu_addr: SocketAddr,
    /// Where the SFU's address moved ([`Harness::move_public_address`]).
    moved_to: Option<SocketAddr>,
    /// SFU addresses that no longer reach anyone.
    dead: Vec<SocketAddr>,
}

/// A LiveKit client: v0's two str0m peers, or v1's one (`publisher`, which then also receives),
/// and what it received.
pub struct Client {
    pub publisher: Rtc,
    pub subscriber: Rtc,
    publisher_addr: SocketAddr,
    subscriber_addr: SocketAddr,
    pending_offer: Option<SdpPendingOffer>,
    publisher_timeout: Instant,
    subscriber_timeout: Instant,
    /// Every signaling message the core sent this client, in order.
    pub signals: Vec<signal_response::Message>,
    /// Media frames its subscriber connection received.
    pub received: Vec<MediaData>,
    pub publisher_connected: bool,
    pub subscriber_connected: bool,
    /// Keep subscriber answers (and their trickle) back until [`Harness::release_answers`].
    pub hold_answers: bool,
    held: Vec<signal_request::Message>,
    /// Rewrites the SDP of the next subscriber answer before it is sent (a misbehaving client).
    pub rewrite_next_answer: Option<fn(&str) -> String>,
    /// Its identity and participant sid, from the JoinResponse (what a resume names).
    identity: String,
    sid: String,
    /// The simulcast layers (rids) its publisher was asked for a keyframe on, not yet taken
    /// ([`Harness::take_keyframe_request`]).
    pub keyframe_requests: Vec<Option<Rid>>,
    /// A bottleneck before its subscriber connection: at most this many bits per second
    /// arrive (a token bucket holding 150 ms of it), the rest is dropped (0: none).
    pub downlink_bps: u64,
    bucket: f64,
    bucket_at: Option<Instant>,
    /// Datagrams the bottleneck dropped.
    pub downlink_dropped: u64,
    /// A lossy uplink: every n-th datagram it sends is lost (0: none).
    pub drop_every: u32,
    sent: u32,
    /// v1 (single peer connection): it offers on `publisher`, and adds receive-only m-lines
    /// and offers again when asked (`MediaSectionsRequirement`).
    single: bool,
    /// v1: the m-lines asked for while its own offer was outstanding (audio, video).
    asked: Option<(u32, u32)>,
    /// v1: its receive-only m-lines.
    slots: Vec<Mid>,
}

impl Harness {
    /// A core with auto-created rooms at a fixed start time (the `Instant` is only an origin).
    pub fn new() -> Self {
        str0m::crypto::from_feature_flags().install_process_default();
        let now = Instant::now();
        let sfu_addr: SocketAddr = SFU_ADDR.parse().expect("a valid address");
        let config = SfuConfig {
            udp_candidates: vec![sfu_addr],
            tcp_candidates: Vec::new(),
            auto_create_rooms: true,
            node_id: "ND_harness".into(),
        };
        let mut sfu = Sfu::new(config, now, 1_700_000_000_000);
        sfu.create_room(now, "room", RoomOptions::MATRIX_RTC, None)
            .expect("a room");
        Harness {
            sfu,
            now,
            clients: BTreeMap::new(),
            sfu_addr,
            moved_to: None,
            dead: Vec::new(),
        }
    }

    /// The SFU's public address moves to `to` (a home line's new IP): the core is told, and
    /// from now on nothing sent to or from the old address arrives.
    pub fn move_public_address(&mut self, to: SocketAddr) {
        self.sfu.set_candidates(self.now, vec![to], Vec::new());
        self.dead.push(self.sfu_addr);
        self.moved_to = Some(to);
        self.settle();
    }

    /// Joins `identity` to "room" on signaling connection `conn`.
    pub fn join(&mut self, conn: ConnId, identity: &str) {
        let client = Client::new(conn, self.now);
        self.clients.insert(conn, client);
        self.sfu
            .join(self.now, join_request(conn, identity))
            .expect("join accepted");
        self.settle();
    }

    /// Joins `identity` to "room" on `conn` the way v1 clients do (`/rtc/v1`): one peer
    /// connection whose first offer (three receive-only audio and video m-lines and a data
    /// channel, as livekit-client lays it out) travels in the join request.
    pub fn join_v1(&mut self, conn: ConnId, identity: &str) {
        let mut client = Client::new(conn, self.now);
        client.single = true;
        let mut api = client.publisher.sdp_api();
        api.add_channel("_reliable".into());
        for kind in [MediaKind::Audio, MediaKind::Video] {
            for _ in 0..3 {
                let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
                client.slots.push(mid);
            }
        }
        let (offer, pending) = api.apply().expect("an offer");
        client.pending_offer = Some(pending);
        self.clients.insert(conn, client);
        let request = JoinRequest {
            single_pc: true,
            publisher_offer: Some(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                ..Default::default()
            }),
            ..join_request(conn, identity)
        };
        self.sfu.join(self.now, request).expect("join accepted");
        self.settle();
    }

    /// The answers the core sent a client, in order.
    pub fn answers(&self, conn: ConnId) -> Vec<&proto::SessionDescription> {
        self.clients[&conn]
            .signals
            .iter()
            .filter_map(|m| match m {
                signal_response::Message::Answer(answer) => Some(answer),
                _ => None,
            })
            .collect()
    }

    /// The client on `old` lost its signaling connection (the core hears `SignalClose`); it
    /// keeps its peers and, if `resume_on` is given, resumes on that new connection the way
    /// LiveKit clients do (`reconnect=1&sid=…`).
    pub fn lose_signaling(&mut self, old: ConnId, resume_on: Option<ConnId>) {
        self.sfu
            .leave(self.now, old, proto::DisconnectReason::SignalClose);
        self.settle();
        if let Some(new) = resume_on {
            self.resume(old, new).expect("resume accepted");
        }
    }

    /// Resumes the session of the client on `old` on connection `new` (the client moves).
    pub fn resume(&mut self, old: ConnId, new: ConnId) -> Result<(), ResumeError> {
        let client = self.clients.remove(&old).expect("a client");
        let identity = client.identity.clone();
        let sid = client.sid.clone();
        self.clients.insert(new, client);
        let request = ResumeRequest {
            conn: new,
            room: "room".into(),
            identity,
            sid,
            ice_servers: Default::default(),
        };
        let result = self.sfu.resume(self.now, request);
        self.settle();
        result
    }

    /// The client restarts ICE on its publisher connection (what it does after a resume): a
    /// new offer with fresh credentials.
    pub fn restart_publisher_ice(&mut self, conn: ConnId) {
        self.offer_publisher_change(conn, 2, |api| {
            api.ice_restart(true);
        });
    }

    /// Renegotiates the publisher connection with `mid` in direction `direction` (a LiveKit
    /// client unpublishes by making it inactive; it republishes on it with sendonly).
    pub fn set_publisher_direction(&mut self, conn: ConnId, mid: Mid, direction: Direction) {
        self.offer_publisher_change(conn, 3, |api| api.set_direction(mid, direction));
    }

    /// Makes a change on a client's publisher connection and sends the core its offer (id
    /// `id`); the answer is applied when it comes back. Returns what `change` returned.
    fn offer_publisher_change<T>(
        &mut self,
        conn: ConnId,
        id: u32,
        change: impl FnOnce(&mut SdpApi<'_>) -> T,
    ) -> T {
        let client = self.clients.get_mut(&conn).expect("a client");
        let mut api = client.publisher.sdp_api();
        let changed = change(&mut api);
        let (offer, pending) = api.apply().expect("a change to offer");
        client.pending_offer = Some(pending);
        self.send(
            conn,
            signal_request::Message::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id,
                ..Default::default()
            }),
        );
        changed
    }

    /// A client's signaling message to the core.
    pub fn send(&mut self, conn: ConnId, message: signal_request::Message) {
        self.sfu.handle_signal(self.now, conn, message);
        self.settle();
    }

    /// Publishes an audio track the LiveKit way: AddTrack, then a publisher offer with a
    /// sendonly m-line whose msid track id is the cid. Returns the m-line.
    pub fn publish_audio(&mut self, conn: ConnId, cid: &str) -> Mid {
        self.publish(conn, cid, MediaKind::Audio)
    }

    /// Publishes a single-layer camera track; returns the m-line.
    pub fn publish_video(&mut self, conn: ConnId, cid: &str) -> Mid {
        self.publish(conn, cid, MediaKind::Video)
    }

    /// Publishes a camera track in three simulcast layers (rids q, h, f: 320x180, 640x360,
    /// 1280x720), as livekit-client does; returns the m-line.
    pub fn publish_simulcast_video(&mut self, conn: ConnId, cid: &str) -> Mid {
        let layers = [(0, 320, 180), (1, 640, 360), (2, 1280, 720)]
            .map(|(quality, width, height)| proto::VideoLayer {
                quality,
                width,
                height,
                ..Default::default()
            })
            .to_vec();
        self.send(
            conn,
            signal_request::Message::AddTrack(proto::AddTrackRequest {
                cid: cid.into(),
                r#type: proto::TrackType::Video as i32,
                source: proto::TrackSource::Camera as i32,
                width: 1280,
                height: 720,
                layers,
                ..Default::default()
            }),
        );
        self.offer_publisher_change(conn, 1, |api| {
            let simulcast = Simulcast {
                send: ["q", "h", "f"].map(SimulcastLayer::new).to_vec(),
                recv: Vec::new(),
            };
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some("stream".into()),
                Some(cid.into()),
                Some(simulcast),
            )
        })
    }

    /// Whether the publisher on `conn` was asked for a keyframe on layer `rid` since the last
    /// call (the request is taken).
    pub fn take_keyframe_request(&mut self, conn: ConnId, rid: &str) -> bool {
        let client = self.clients.get_mut(&conn).expect("a client");
        let before = client.keyframe_requests.len();
        client
            .keyframe_requests
            .retain(|r| r.as_deref() != Some(rid));
        client.keyframe_requests.len() != before
    }

    /// Writes one VP8 frame of `bytes` bytes (a keyframe when `key`) on simulcast layer `rid`.
    pub fn write_layer(
        &mut self,
        conn: ConnId,
        mid: Mid,
        rid: &str,
        elapsed: Duration,
        key: bool,
        bytes: usize,
    ) {
        self.write_frame(conn, mid, Codec::Vp8, elapsed, vp8_frame(key, bytes), |w| {
            w.rid(rid.into())
        });
    }

    /// Writes one frame of `codec` on a client's published m-line, the writer shaped by
    /// `shape` (a simulcast layer, an audio level), and lets everything settle.
    fn write_frame(
        &mut self,
        conn: ConnId,
        mid: Mid,
        codec: Codec,
        elapsed: Duration,
        frame: Vec<u8>,
        shape: impl FnOnce(Writer<'_>) -> Writer<'_>,
    ) {
        let now = self.now;
        let client = self.clients.get_mut(&conn).expect("a client");
        let writer = client.publisher.writer(mid).expect("a negotiated m-line");
        let pt = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .unwrap_or_else(|| panic!("{codec:?} negotiated"))
            .pt();
        shape(writer)
            .write(pt, now, elapsed.into(), frame)
            .expect("frame written");
        client.publisher_timeout = now;
        self.settle();
    }

    fn publish(&mut self, conn: ConnId, cid: &str, kind: MediaKind) -> Mid {
        let (r#type, source) = match kind {
            MediaKind::Audio => (proto::TrackType::Audio, proto::TrackSource::Microphone),
            MediaKind::Video => (proto::TrackType::Video, proto::TrackSource::Camera),
        };
        self.send(
            conn,
            signal_request::Message::AddTrack(proto::AddTrackRequest {
                cid: cid.into(),
                r#type: r#type as i32,
                source: source as i32,
                ..Default::default()
            }),
        );
        self.offer_publisher_change(conn, 1, |api| {
            api.add_media(
                kind,
                Direction::SendOnly,
                Some("stream".into()),
                Some(cid.into()),
                None,
            )
        })
    }

    /// Sends the subscriber answers a client held back, in order.
    pub fn release_answers(&mut self, conn: ConnId) {
        let held = match self.clients.get_mut(&conn) {
            Some(client) => std::mem::take(&mut client.held),
            None => Vec::new(),
        };
        for message in held {
            self.send(conn, message);
        }
    }

    /// The subscriber offers the core sent a client, in order.
    pub fn offers(&self, conn: ConnId) -> Vec<&proto::SessionDescription> {
        self.clients[&conn]
            .signals
            .iter()
            .filter_map(|m| match m {
                signal_response::Message::Offer(offer) => Some(offer),
                _ => None,
            })
            .collect()
    }

    /// Writes one Opus frame on a client's published m-line.
    pub fn write_audio(&mut self, conn: ConnId, mid: Mid, elapsed: Duration, frame: &[u8]) {
        self.write_audio_at_level(conn, mid, elapsed, frame, None);
    }

    /// Writes one Opus frame carrying an audio level (−dBov) in its header extension.
    pub fn write_audio_at_level(
        &mut self,
        conn: ConnId,
        mid: Mid,
        elapsed: Duration,
        frame: &[u8],
        level: Option<i8>,
    ) {
        self.write_frame(
            conn,
            mid,
            Codec::Opus,
            elapsed,
            frame.to_vec(),
            |w| match level {
                Some(level) => w.audio_level(level, level > -40),
                None => w,
            },
        );
    }

    /// Writes one VP8 frame (a keyframe when `key`) on a client's published m-line.
    pub fn write_video(&mut self, conn: ConnId, mid: Mid, elapsed: Duration, key: bool) {
        self.write_frame(conn, mid, Codec::Vp8, elapsed, vp8_frame(key, 200), |w| w);
    }

    /// Moves the virtual clock forward by `by`, waking everyone at their timeouts on the way.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        let mut spins = 0;
        loop {
            let next = self
                .clients
                .values()
                .flat_map(|c| [c.publisher_timeout, c.subscriber_timeout])
                .fold(self.sfu.poll_timeout(), Instant::min)
                .max(self.now);
            if next > until {
                break;
            }
            // A deadline that never moves on would spin here forever: fail instead.
            spins = if next == self.now { spins + 1 } else { 0 };
            assert!(
                spins < 10_000,
                "the virtual clock is stuck at {:?}",
                self.now
            );
            self.now = next;
            self.sfu.handle_timeout(self.now);
            for client in self.clients.values_mut() {
                client.timeout(self.now);
            }
            self.settle();
        }
        self.now = until;
        self.sfu.handle_timeout(self.now);
        for client in self.clients.values_mut() {
            client.timeout(self.now);
        }
        self.settle();
    }

    /// Gives every client's peers a timeout input at the current instant and lets everything
    /// move, without waking the core: what the core sends now, it sent at this instant.
    pub fn tick_clients(&mut self) {
        for client in self.clients.values_mut() {
            client.timeout(self.now);
        }
        self.settle();
    }

    /// Runs until nothing moves at this instant: datagrams delivered, signaling answered.
    pub fn settle(&mut self) {
        loop {
            let mut moved = false;
            while let Some(output) = self.sfu.poll_output() {
                moved = true;
                match output {
                    Output::Transmit(t) => self.deliver_to_client(t),
                    Output::Signal(conn, message) => {
                        let replies = match self.clients.get_mut(&conn) {
                            Some(client) => client.on_signal(self.now, *message),
                            None => Vec::new(),
                        };
                        for reply in replies {
                            self.sfu.handle_signal(self.now, conn, reply);
                        }
                    }
                    Output::Close(conn) => {
                        self.clients.remove(&conn);
                    }
                    Output::Left { .. } => {}
                }
            }
            let mut datagrams = Vec::new();
            for client in self.clients.values_mut() {
                client.poll(&mut datagrams);
            }
            for t in datagrams {
                moved = true;
                if self.dead.contains(&t.destination) {
                    continue;
                }
                self.sfu
                    .handle_receive(self.now, t.proto, t.source, t.destination, &t.contents);
            }
            if !moved {
                break;
            }
        }
    }

    fn deliver_to_client(&mut self, t: Transmit) {
        if self.dead.contains(&t.source) {
            return;
        }
        assert!(
            t.source == self.sfu_addr || self.moved_to == Some(t.source),
            "the core sends from its candidate"
        );
        let now = self.now;
        for client in self.clients.values_mut() {
            let rtc = if t.destination == client.publisher_addr {
                &mut client.publisher
            } else if t.destination == client.subscriber_addr {
                if !client.bottleneck_passes(now, t.contents.len()) {
                    client.downlink_dropped += 1;
                    return;
                }
                &mut client.subscriber
            } else {
                continue;
            };
            let receive = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents)
                .expect("str0m parses what str0m sent");
            rtc.handle_input(Input::Receive(now, receive))
                .expect("client accepts the datagram");
            return;
        }
    }
}

impl Client {
    fn new(conn: ConnId, now: Instant) -> Self {
        // Each client gets two addresses of its own, derived from its connection id.
        let octet = u8::try_from(conn).expect("small connection ids in tests");
        let publisher_addr = SocketAddr::from(([10, 0, 1, octet], 5000));
        let subscriber_addr = SocketAddr::from(([10, 0, 2, octet], 5000));
        let peer = |addr| {
            let mut rtc = Rtc::builder().build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("a host candidate"));
            rtc
        };
        Client {
            publisher: peer(publisher_addr),
            subscriber: peer(subscriber_addr),
            publisher_addr,
            subscriber_addr,
            pending_offer: None,
            publisher_timeout: now,
            subscriber_timeout: now,
            signals: Vec::new(),
            received: Vec::new(),
            publisher_connected: false,
            subscriber_connected: false,
            hold_answers: false,
            held: Vec::new(),
            rewrite_next_answer: None,
            identity: String::new(),
            sid: String::new(),
            keyframe_requests: Vec::new(),
            downlink_bps: 0,
            bucket: 0.0,
            bucket_at: None,
            downlink_dropped: 0,
            drop_every: 0,
            sent: 0,
            single: false,
            asked: None,
            slots: Vec::new(),
        }
    }

    /// Whether a datagram of `bytes` gets through the subscriber's bottleneck at `now`.
    fn bottleneck_passes(&mut self, now: Instant, bytes: usize) -> bool {
        if self.downlink_bps == 0 {
            self.bucket_at = None;
            return true;
        }
        let rate = self.downlink_bps as f64 / 8.0;
        let depth = rate * 0.15;
        let since = self.bucket_at.map_or(depth / rate, |at| {
            now.saturating_duration_since(at).as_secs_f64()
        });
        self.bucket = (self.bucket + since * rate).min(depth);
        self.bucket_at = Some(now);
        if self.bucket < bytes as f64 {
            return false;
        }
        self.bucket -= bytes as f64;
        true
    }

    /// Handles a message from the core; returns the client's replies (answers, candidates).
    fn on_signal(
        &mut self,
        now: Instant,
        message: signal_response::Message,
    ) -> Vec<signal_request::Message> {
        use signal_response::Message as M;
        let mut replies = Vec::new();
        match &message {
            M::Offer(_) if self.single => panic!("a v1 client got an offer: {message:?}"),
            M::Offer(offer) => {
                let parsed = SdpOffer::from_sdp_string(&offer.sdp).expect("a parsable offer");
                let answer = self
                    .subscriber
                    .sdp_api()
                    .accept_offer(parsed)
                    .expect("offer accepted");
                let mut sdp = answer.to_sdp_string();
                if let Some(rewrite) = self.rewrite_next_answer.take() {
                    sdp = rewrite(&sdp);
                }
                let answer = signal_request::Message::Answer(proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp,
                    id: offer.id,
                    ..Default::default()
                });
                let candidate = trickle(self.subscriber_addr, proto::SignalTarget::Subscriber);
                if self.hold_answers {
                    self.held.extend([answer, candidate]);
                } else {
                    replies.extend([answer, candidate]);
                }
                self.subscriber_timeout = now;
            }
            M::Join(join) => {
                if let Some(me) = &join.participant {
                    self.identity = me.identity.clone();
                    self.sid = me.sid.clone();
                }
            }
            M::Trickle(trickle) => {
                // The core's own candidates (a public address it moved to), as clients take them.
                let init: serde_json::Value =
                    serde_json::from_str(&trickle.candidate_init).expect("candidate JSON");
                assert!(
                    init["sdpMid"].as_str().is_some_and(|mid| !mid.is_empty()),
                    "a trickled candidate names its m-line: {init}"
                );
                let line = init["candidate"].as_str().expect("a candidate line");
                let candidate = Candidate::from_sdp_string(line).expect("a parsable candidate");
                let rtc = if trickle.target == proto::SignalTarget::Subscriber as i32 {
                    &mut self.subscriber
                } else {
                    &mut self.publisher
                };
                rtc.add_remote_candidate(candidate);
            }
            M::Answer(answer) => {
                let pending = self.pending_offer.take().expect("an answer to our offer");
                let parsed = SdpAnswer::from_sdp_string(&answer.sdp).expect("a parsable answer");
                self.publisher
                    .sdp_api()
                    .accept_answer(pending, parsed)
                    .expect("answer accepted");
                replies.push(trickle(self.publisher_addr, proto::SignalTarget::Publisher));
                self.publisher_timeout = now;
                if let Some(asked) = self.asked.take() {
                    replies.push(self.offer_sections(asked));
                }
            }
            M::MediaSectionsRequirement(r) => {
                assert!(self.single, "a v0 client was asked for m-lines");
                let asked = (r.num_audios, r.num_videos);
                if self.pending_offer.is_some() {
                    // Like livekit-client: offer again once the outstanding offer is answered.
                    let (audios, videos) = self.asked.unwrap_or((0, 0));
                    self.asked = Some((audios + asked.0, videos + asked.1));
                } else {
                    replies.push(self.offer_sections(asked));
                }
                self.publisher_timeout = now;
            }
            _ => {}
        }
        self.signals.push(message);
        replies
    }

    /// v1: adds the receive-only m-lines asked for and offers. Like a browser's transceivers,
    /// its m-lines stay receive-only whatever the last answer said (str0m takes an answer's
    /// `inactive` as its own direction). With nothing changed the offer restarts ICE, the one
    /// change a str0m peer can offer alone (browsers offer their unchanged state).
    fn offer_sections(&mut self, (audios, videos): (u32, u32)) -> signal_request::Message {
        let mut api = self.publisher.sdp_api();
        for mid in &self.slots {
            api.set_direction(*mid, Direction::RecvOnly);
        }
        for _ in 0..audios {
            let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            self.slots.push(mid);
        }
        for _ in 0..videos {
            let mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
            self.slots.push(mid);
        }
        if !api.has_changes() {
            api.ice_restart(true);
        }
        let (offer, pending) = api.apply().expect("a change to offer");
        self.pending_offer = Some(pending);
        signal_request::Message::Offer(proto::SessionDescription {
            r#type: "offer".into(),
            sdp: offer.to_sdp_string(),
            id: 10,
            ..Default::default()
        })
    }

    /// Feeds both peers the time. Always both: str0m only starts ICE checks for a new remote
    /// candidate on a timeout input, and the timeout it reported before that may be far off.
    fn timeout(&mut self, now: Instant) {
        self.publisher
            .handle_input(Input::Timeout(now))
            .expect("timeout accepted");
        self.subscriber
            .handle_input(Input::Timeout(now))
            .expect("timeout accepted");
    }

    /// Drains both peers: datagrams to send, events to record, next timeouts.
    fn poll(&mut self, datagrams: &mut Vec<Transmit>) {
        for publisher in [true, false] {
            let rtc = if publisher {
                &mut self.publisher
            } else {
                &mut self.subscriber
            };
            loop {
                match rtc.poll_output().expect("client peer healthy") {
                    RtcOutput::Timeout(at) => {
                        if publisher {
                            self.publisher_timeout = at;
                        } else {
                            self.subscriber_timeout = at;
                        }
                        break;
                    }
                    RtcOutput::Transmit(t) => {
                        self.sent += 1;
                        if self.drop_every == 0 || !self.sent.is_multiple_of(self.drop_every) {
                            datagrams.push(t);
                        }
                    }
                    RtcOutput::Event(Event::Connected) => {
                        if publisher {
                            self.publisher_connected = true;
                        } else {
                            self.subscriber_connected = true;
                        }
                    }
                    RtcOutput::Event(Event::MediaData(data)) if !publisher || self.single => {
                        self.received.push(data)
                    }
                    RtcOutput::Event(Event::KeyframeRequest(request)) if publisher => {
                        self.keyframe_requests.push(request.rid)
                    }
                    RtcOutput::Event(_) => {}
                }
            }
        }
    }
}

/// A VP8 frame of `bytes` bytes: bit 0 of the header clear marks a keyframe, whose start code
/// and a 16x16 size follow.
fn vp8_frame(key: bool, bytes: usize) -> Vec<u8> {
    let mut frame = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    frame.extend_from_slice(&[16, 0, 16, 0]);
    frame.resize(bytes.max(10), 0x55);
    frame
}

/// A v0 join of `identity` to "room" on `conn`, as the signaling layer hands it to the core.
fn join_request(conn: ConnId, identity: &str) -> JoinRequest {
    JoinRequest::for_test(conn, "room", identity, 16)
}

/// The trickle message a LiveKit client sends for its host candidate (the load generator's).
fn trickle(addr: SocketAddr, target: proto::SignalTarget) -> signal_request::Message {
    crate::loadtest::client::trickle(addr, target).expect("a host candidate")
}

#[test]
fn a_publishers_audio_reaches_a_subscriber_through_the_core() {
    let mut h = Harness::new();
    h.join(1, "alice");
    h.join(2, "bob");
    let mid = h.publish_audio(1, "mic-1");
    h.advance(Duration::from_millis(500));
    assert!(
        h.clients[&1].publisher_connected,
        "alice's publisher connects"
    );
    assert!(
        h.clients[&2].subscriber_connected,
        "bob's subscriber connects"
    );
    let announced = h.clients[&2].signals.iter().any(|m| {
        matches!(m, signal_response::Message::Update(u)
            if u.participants.iter().any(|p| p.identity == "alice" && !p.tracks.is_empty()))
    });
    assert!(announced, "bob was told about alice's track");

    // 50 frames, one every 20 ms of virtual time, each tagged with its number.
    for n in 0..50u8 {
        let elapsed = Duration::from_millis(20 * u64::from(n));
        h.write_audio(1, mid, elapsed, &[n; 40]);
        h.advance(Duration::from_millis(20));
    }
    // No loss on this network: every frame arrives, in order, with its payload intact.
    let got: Vec<u8> = h.clients[&2].received.iter().map(|d| d.data[0]).collect();
    assert_eq!(got, (0..50).collect::<Vec<u8>>());
    assert!(h.clients[&2].received.iter().all(|d| d.data.len() == 40));
    assert!(
        h.clients[&1].received.is_empty(),
        "alice does not get her own audio"
    );
    // The counters `/metrics` and the dashboard read saw the same: 50 packets of 40 bytes in,
    // 50 out (one subscriber), one room with two participants and one track.
    let c = h.sfu.counters();
    assert_eq!(
        (c.packets_received.get(), c.bytes_received.get()),
        (50, 2000)
    );
    assert_eq!(
        (c.packets_forwarded.get(), c.bytes_forwarded.get()),
        (50, 2000)
    );
    assert_eq!(
        (c.rooms.get(), c.participants.get(), c.tracks.get()),
        (1, 2, 1)
    );
    assert_eq!(c.subscriptions.get(), 1);
    // The frames fell inside the first rate interval (2 s), which ends now.
    h.advance(Duration::from_millis(600));
    assert!(
        c.bitrate_forwarded.get() > 0,
        "a bitrate over the last interval"
    );
}

/// The first `a=ice-ufrag` of an SDP.
fn ice_ufrag(sdp: &str) -> &str {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .expect("an ice-ufrag")
}

/// Whether `conn`'s subscriber received a frame whose payload starts with `tag`.
fn received_tag(h: &Harness, conn: ConnId, tag: u8) -> bool {
    h.clients[&conn].received.iter().any(|d| d.data[0] == tag)
}

#[test]
fn a_subscriber_has_one_offer_in_flight_while_twenty_publishers_arrive() {
    let mut h = Harness::new();
    h.join(1, "bob");
    h.clients.get_mut(&1).expect("bob").hold_answers = true;
    let mut answered = 1;
    let mut mics = Vec::new();
    for n in 2..22u64 {
        h.join(n, &format!("p{n}"));
        mics.push((n, h.publish_audio(n, &format!("mic-{n}"))));
        // Bob answers late, every third arrival, while the others keep coming.
        if n % 3 == 0 {
            answered += h.clients[&1]
                .held
                .iter()
                .filter(|m| matches!(m, signal_request::Message::Answer(_)))
                .count();
            h.release_answers(1);
        }
        assert!(
            h.offers(1).len() <= answered + 1,
            "a second offer while one is unanswered"
        );
    }
    h.clients.get_mut(&1).expect("bob").hold_answers = false;
    h.release_answers(1);
    h.advance(Duration::from_millis(500));
    assert!(h.clients.contains_key(&1), "bob is still in the room");
    let offers = h.offers(1);
    let last = offers.last().expect("offers");
    assert_eq!(last.mid_to_track_id.len(), 20, "one m-line per track");
    assert!(
        offers
            .iter()
            .all(|o| ice_ufrag(&o.sdp) == ice_ufrag(&offers[0].sdp)),
        "no offer restarts ICE"
    );
    for (n, (conn, mid)) in mics.into_iter().enumerate() {
        h.write_audio(conn, mid, Duration::ZERO, &[n as u8; 40]);
    }
    h.advance(Duration::from_millis(100));
    assert!((0..20).all(|n| received_tag(&h, 1, n)), "bob hears all 20");
}

#[test]
fn a_stale_subscriber_answer_is_ignored() {
    let mut h = Harness::new();
    h.join(1, "bob");
    h.join(2, "alice");
    h.clients.get_mut(&1).expect("bob").hold_answers = true;
    h.publish_audio(2, "mic-a");
    let old_answer = h.clients[&1].held.clone();
    h.release_answers(1);
    h.join(3, "carol");
    let mic = h.publish_audio(3, "mic-c");
    // The answer to the previous offer arrives again while the next one is out.
    for message in old_answer {
        h.send(1, message);
    }
    h.clients.get_mut(&1).expect("bob").hold_answers = false;
    h.release_answers(1);
    h.advance(Duration::from_millis(500));
    assert!(h.clients.contains_key(&1), "bob is still in the room");
    h.write_audio(3, mic, Duration::ZERO, &[7; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 1, 7), "bob hears carol");
}

/// A client that answers with ICE credentials other than those of its previous answer, without
/// our offer restarting ICE, is what makes str0m refuse an answer with "Ice restart in answer
/// without one in the preceeding offer" (the core's offers keep their credentials, see above).
#[test]
fn an_answer_with_new_ice_credentials_restarts_ice_instead_of_dropping_the_subscriber() {
    let mut h = Harness::new();
    h.join(1, "alice");
    let mic_a = h.publish_audio(1, "mic-a");
    h.join(2, "bob");
    h.advance(Duration::from_millis(500));
    h.write_audio(1, mic_a, Duration::ZERO, &[1; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 2, 1), "bob hears alice");

    h.clients.get_mut(&2).expect("bob").rewrite_next_answer = Some(|sdp| {
        sdp.lines()
            .map(|l| {
                if l.starts_with("a=ice-ufrag:") {
                    "a=ice-ufrag:newufrag".to_owned()
                } else if l.starts_with("a=ice-pwd:") {
                    "a=ice-pwd:newpasswordnewpassword1234".to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
            + "\r\n"
    });
    h.join(3, "carol");
    let mic_c = h.publish_audio(3, "mic-c");
    h.advance(Duration::from_millis(1000));
    assert!(h.clients.contains_key(&2), "bob is still in the room");
    let offers = h.offers(2);
    let last = offers.last().expect("offers");
    assert_ne!(
        ice_ufrag(&last.sdp),
        ice_ufrag(&offers[0].sdp),
        "the core restarted ICE"
    );
    assert_eq!(last.mid_to_track_id.len(), 2, "alice's and carol's tracks");
    h.write_audio(1, mic_a, Duration::from_millis(20), &[2; 40]);
    h.write_audio(3, mic_c, Duration::ZERO, &[3; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 2, 2), "bob still hears alice");
    assert!(received_tag(&h, 2, 3), "bob hears carol");
}

/// Whether `conn` was told that `identity` left.
fn told_left(h: &Harness, conn: ConnId, identity: &str) -> bool {
    h.clients[&conn].signals.iter().any(|m| {
        matches!(m, signal_response::Message::Update(u) if u.participants.iter().any(|p|
            p.identity == identity
                && p.state == proto::participant_info::State::Disconnected as i32))
    })
}

/// How many participant updates naming `identity` the client on `conn` got.
fn updates_about(h: &Harness, conn: ConnId, identity: &str) -> usize {
    h.clients[&conn]
        .signals
        .iter()
        .filter(|m| {
            matches!(m, signal_response::Message::Update(u)
            if u.participants.iter().any(|p| p.identity == identity))
        })
        .count()
}

/// Alice publishes, Bob hears her; returns Alice's m-line.
fn call_with_media(h: &mut Harness) -> Mid {
    h.join(1, "alice");
    let mic = h.publish_audio(1, "mic-a");
    h.join(2, "bob");
    h.advance(Duration::from_millis(500));
    h.write_audio(1, mic, Duration::ZERO, &[1; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(h, 2, 1), "bob hears alice");
    mic
}

#[test]
fn a_forwarded_packet_leaves_the_core_at_the_instant_it_arrived() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    let cam = h.publish_video(1, "cam-a");
    h.advance(Duration::from_millis(500));
    let before = h.now;
    // Frames written at this instant; the clients' peers send and receive at this instant
    // too, and the core is never woken by its own deadlines: only the datagrams reach it.
    h.write_audio(1, mic, Duration::from_millis(1000), &[7; 40]);
    h.write_video(1, cam, Duration::from_millis(1000), true);
    h.tick_clients();
    h.tick_clients();
    assert_eq!(h.now, before, "no virtual time passed");
    assert!(received_tag(&h, 2, 7), "bob hears the frame at once");
    let video = h.clients[&2].received.iter().any(|d| d.data.len() == 200);
    assert!(video, "bob sees the keyframe at once");
}

#[test]
fn a_lost_signaling_connection_is_resumed_and_the_others_notice_nothing() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    let bob_offers = h.offers(2).len();
    let bob_updates = updates_about(&h, 1, "bob");

    h.lose_signaling(2, None);
    // Media does not depend on signaling: Bob keeps hearing Alice while he is away.
    h.advance(Duration::from_secs(3));
    h.write_audio(1, mic, Duration::from_millis(20), &[2; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 2, 2), "bob hears alice while detached");
    assert_eq!(h.sfu.participant_count(), 2);

    h.resume(2, 12).expect("resume accepted");
    let bob = &h.clients[&12];
    let after: Vec<&signal_response::Message> = bob
        .signals
        .iter()
        .skip_while(|m| !matches!(m, signal_response::Message::Reconnect(_)))
        .collect();
    assert!(
        matches!(after.first(), Some(signal_response::Message::Reconnect(_))),
        "the first message on the new connection is the ReconnectResponse"
    );
    assert!(
        after
            .iter()
            .any(|m| matches!(m, signal_response::Message::Update(u)
            if u.participants.iter().any(|p| p.identity == "alice" && p.tracks.len() == 1))),
        "bob gets everyone's current state"
    );
    let offers = h.offers(12);
    assert_eq!(offers.len(), bob_offers + 1, "one new subscriber offer");
    assert_ne!(
        ice_ufrag(&offers.last().expect("offers").sdp),
        ice_ufrag(&offers[0].sdp),
        "the subscriber offer restarts ICE"
    );
    h.advance(Duration::from_secs(1));
    h.write_audio(1, mic, Duration::from_millis(40), &[3; 40]);
    h.advance(Duration::from_millis(100));
    assert!(
        received_tag(&h, 12, 3),
        "bob hears alice after the ICE restart"
    );
    // Past the resume window nothing happens: the session is attached again.
    h.advance(Duration::from_secs(30));
    assert_eq!(h.sfu.participant_count(), 2);
    assert!(!told_left(&h, 1, "bob"), "alice never saw bob leave");
    assert_eq!(
        updates_about(&h, 1, "bob"),
        bob_updates,
        "alice saw no change of bob at all"
    );
}

#[test]
fn a_publisher_that_resumes_and_restarts_ice_keeps_publishing() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    h.lose_signaling(1, Some(11));
    h.restart_publisher_ice(11);
    h.advance(Duration::from_secs(1));
    let answered = h.clients[&11]
        .signals
        .iter()
        .filter(|m| matches!(m, signal_response::Message::Answer(_)))
        .count();
    assert_eq!(answered, 2, "the ICE-restart offer was answered");
    h.write_audio(11, mic, Duration::from_millis(20), &[4; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 2, 4), "bob hears alice after her resume");
    assert!(!told_left(&h, 2, "alice"));
}

#[test]
fn a_call_survives_the_public_address_moving_without_a_rejoin() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    let offers_before = h.offers(2).len();
    let new_addr: SocketAddr = "198.51.100.9:3478".parse().expect("an address");
    h.move_public_address(new_addr);
    // Alice publishes, Bob subscribes: the connection each has negotiated is told.
    for (conn, target) in [
        (1, proto::SignalTarget::Publisher),
        (2, proto::SignalTarget::Subscriber),
    ] {
        let trickled: Vec<&proto::TrickleRequest> = h.clients[&conn]
            .signals
            .iter()
            .filter_map(|m| match m {
                signal_response::Message::Trickle(t) => Some(t),
                _ => None,
            })
            .collect();
        assert!(
            trickled.iter().any(|t| t.target == target as i32),
            "connection {target:?} of client {conn} is told the new candidate: {trickled:?}"
        );
        assert!(
            trickled
                .iter()
                .all(|t| t.candidate_init.contains("198.51.100.9 3478")),
            "{trickled:?}"
        );
    }
    let offers = h.offers(2);
    assert_eq!(offers.len(), offers_before + 1, "one new subscriber offer");
    let last = &offers.last().expect("offers").sdp;
    assert!(
        last.contains("198.51.100.9 3478"),
        "the offer carries the new address"
    );
    assert_ne!(
        ice_ufrag(last),
        ice_ufrag(&offers[0].sdp),
        "and restarts ICE"
    );
    // The old address is dead. The clients check the new one; once their ICE agents give up
    // the old pair (a str0m client takes about 20 s, browsers a few) Bob hears Alice again,
    // with nobody having rejoined.
    let mut heard = None;
    for second in 1..=30u8 {
        h.advance(Duration::from_secs(1));
        let tag = 100 + second;
        h.write_audio(
            1,
            mic,
            Duration::from_millis(20 * u64::from(second)),
            &[tag; 40],
        );
        h.advance(Duration::from_millis(100));
        if received_tag(&h, 2, tag) {
            heard = Some(second);
            break;
        }
    }
    assert!(heard.is_some(), "bob hears alice over the new address");
    assert_eq!(h.sfu.participant_count(), 2);
    assert!(!told_left(&h, 1, "bob") && !told_left(&h, 2, "alice"));
}

#[test]
fn a_lost_session_that_is_not_resumed_leaves_after_the_resume_window() {
    let mut h = Harness::new();
    call_with_media(&mut h);
    h.lose_signaling(2, None);
    h.advance(RESUME_WINDOW - Duration::from_secs(1));
    assert_eq!(h.sfu.participant_count(), 2, "held for a resume");
    assert!(!told_left(&h, 1, "bob"));
    h.advance(Duration::from_secs(2));
    assert_eq!(h.sfu.participant_count(), 1);
    assert!(told_left(&h, 1, "bob"), "alice is told bob left");
    // Too late: the client is told to join again (the signaling layer sends the leave).
    assert_eq!(h.resume(2, 12), Err(ResumeError::SessionGone));
}

#[test]
fn a_resume_is_refused_for_a_session_that_said_goodbye_or_another_sid() {
    let mut h = Harness::new();
    call_with_media(&mut h);
    // Another participant sid under the same identity: not this session.
    h.clients.get_mut(&2).expect("bob").sid = "PA_someoneelse".into();
    assert_eq!(h.resume(2, 12), Err(ResumeError::SessionGone));
    h.sfu
        .leave(h.now, 12, proto::DisconnectReason::ClientInitiated);
    h.settle();
    assert_eq!(h.sfu.participant_count(), 2, "conn 12 never had a session");
    // A goodbye ends the session at once; nothing is held.
    h.sfu
        .leave(h.now, 1, proto::DisconnectReason::ClientInitiated);
    h.settle();
    assert_eq!(h.sfu.participant_count(), 1);
    assert_eq!(h.resume(1, 11), Err(ResumeError::SessionGone));
}

#[test]
fn a_resume_on_a_new_connection_closes_the_one_still_held() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    // The client gave up on connection 2 before the core noticed it was dead.
    h.resume(2, 12).expect("resume accepted");
    // `Output::Close(2)` was seen (it would have dropped a client still keyed by 2), and
    // what the core says to Bob now goes to 12.
    h.write_audio(1, mic, Duration::from_millis(20), &[5; 40]);
    h.advance(Duration::from_secs(1));
    assert!(received_tag(&h, 12, 5));
    // The old connection's end, reported later by the signaling layer, changes nothing.
    h.sfu.leave(h.now, 2, proto::DisconnectReason::SignalClose);
    h.advance(RESUME_WINDOW + Duration::from_secs(1));
    assert_eq!(h.sfu.participant_count(), 2);
}

#[test]
fn an_offer_the_client_never_answered_is_sent_again_on_resume() {
    let mut h = Harness::new();
    call_with_media(&mut h);
    h.clients.get_mut(&2).expect("bob").hold_answers = true;
    h.join(3, "carol");
    let mic_c = h.publish_audio(3, "mic-c");
    let unanswered = h.offers(2).last().map(|o| (*o).clone()).expect("an offer");
    // Bob's answer is lost with his connection.
    h.clients.get_mut(&2).expect("bob").held.clear();
    h.clients.get_mut(&2).expect("bob").hold_answers = false;
    h.lose_signaling(2, Some(12));
    let resent = h
        .offers(12)
        .iter()
        .any(|o| o.id == unanswered.id && o.sdp == unanswered.sdp);
    assert!(resent, "the unanswered offer is sent again");
    h.advance(Duration::from_secs(1));
    h.write_audio(3, mic_c, Duration::ZERO, &[6; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 12, 6), "bob hears carol");
}
/// ICE consent and DTLS keep every connection up with no media on it (Alice's subscriber
/// carries only data channels); nobody is dropped as dead.
#[test]
fn every_connection_stays_up_through_a_long_quiet_call() {
    let mut h = Harness::new();
    call_with_media(&mut h);
    h.advance(Duration::from_secs(40));
    for conn in [1, 2] {
        assert!(h.clients[&conn].subscriber_connected, "{conn}: subscriber");
    }
    assert!(h.clients[&1].publisher_connected);
    assert_eq!(h.sfu.participant_count(), 2);
}

/// The tracks `identity` has in the last snapshot the client on `conn` got.
fn tracks_seen(h: &Harness, conn: ConnId, identity: &str) -> Option<usize> {
    h.clients[&conn].signals.iter().rev().find_map(|m| match m {
        signal_response::Message::Update(u) => u
            .participants
            .iter()
            .find(|p| p.identity == identity)
            .map(|p| p.tracks.len()),
        _ => None,
    })
}

#[test]
fn an_unpublished_track_is_gone_for_everyone_and_its_publisher_stays() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    assert_eq!(tracks_seen(&h, 2, "alice"), Some(1));
    let bob_offers = h.offers(2).len();

    h.set_publisher_direction(1, mic, Direction::Inactive);
    h.advance(Duration::from_millis(200));
    assert_eq!(
        tracks_seen(&h, 2, "alice"),
        Some(0),
        "bob sees the track go"
    );
    assert_eq!(
        tracks_seen(&h, 1, "alice"),
        Some(0),
        "alice's own snapshot agrees"
    );
    let offers = h.offers(2);
    assert_eq!(offers.len(), bob_offers + 1, "bob's m-line is renegotiated");
    assert!(
        offers.last().expect("an offer").mid_to_track_id.is_empty(),
        "no subscription is left"
    );
    assert_eq!(h.sfu.participant_count(), 2, "alice is still in the room");
    assert!(!told_left(&h, 2, "alice"));

    // A new track on the same transceiver: AddTrack, then sendonly again.
    h.send(
        1,
        signal_request::Message::AddTrack(proto::AddTrackRequest {
            cid: "mic-2".into(),
            r#type: proto::TrackType::Audio as i32,
            source: proto::TrackSource::Microphone as i32,
            ..Default::default()
        }),
    );
    h.set_publisher_direction(1, mic, Direction::SendOnly);
    h.advance(Duration::from_millis(500));
    assert_eq!(
        tracks_seen(&h, 2, "alice"),
        Some(1),
        "the new track is announced"
    );
    h.write_audio(1, mic, Duration::from_millis(20), &[9; 40]);
    h.advance(Duration::from_millis(100));
    assert!(received_tag(&h, 2, 9), "bob hears the new track");
}

/// The speaker changes the client on `conn` was told: (participant sid, active) in order.
fn speaker_changes(h: &Harness, conn: ConnId) -> Vec<(String, bool)> {
    h.clients[&conn]
        .signals
        .iter()
        .filter_map(|m| match m {
            signal_response::Message::SpeakersChanged(c) => Some(c.speakers.clone()),
            _ => None,
        })
        .flatten()
        .map(|s| (s.sid, s.active))
        .collect()
}

#[test]
fn a_participant_who_speaks_is_an_active_speaker_until_quiet() {
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    let alice = h.clients[&1].sid.clone();
    assert!(speaker_changes(&h, 2).is_empty());
    let mut elapsed = Duration::from_millis(20);
    let mut talk = |h: &mut Harness, level: i8, seconds: u64| {
        for _ in 0..seconds * 50 {
            h.write_audio_at_level(1, mic, elapsed, &[0; 40], Some(level));
            h.advance(Duration::from_millis(20));
            elapsed += Duration::from_millis(20);
        }
    };
    // Room noise is not speech.
    talk(&mut h, -60, 2);
    assert!(speaker_changes(&h, 2).is_empty(), "noise made a speaker");
    talk(&mut h, -25, 2);
    assert_eq!(speaker_changes(&h, 2), vec![(alice.clone(), true)], "bob");
    assert_eq!(
        speaker_changes(&h, 1),
        vec![(alice.clone(), true)],
        "alice sees herself"
    );
    talk(&mut h, -127, 2);
    assert_eq!(
        speaker_changes(&h, 2),
        vec![(alice.clone(), true), (alice.clone(), false)]
    );
    // A muted track does not speak, whatever its packets say.
    h.send(
        1,
        signal_request::Message::Mute(proto::MuteTrackRequest {
            sid: h.sfu.participant("room", "alice").expect("alice").tracks[0]
                .sid
                .clone(),
            muted: true,
        }),
    );
    talk(&mut h, -20, 2);
    assert_eq!(speaker_changes(&h, 2).len(), 2, "muted alice spoke");
}

/// The SubscribedQualityUpdates the client on `conn` got: per update, the qualities enabled.
fn dynacast_updates(h: &Harness, conn: ConnId) -> Vec<Vec<bool>> {
    h.clients[&conn]
        .signals
        .iter()
        .filter_map(|m| match m {
            signal_response::Message::SubscribedQualityUpdate(u) => {
                assert_eq!(u.subscribed_codecs.len(), 1);
                assert_eq!(u.subscribed_codecs[0].codec, "vp8");
                Some(
                    u.subscribed_codecs[0]
                        .qualities
                        .iter()
                        .map(|q| q.enabled)
                        .collect(),
                )
            }
            _ => None,
        })
        .collect()
}

/// The stream states the client on `conn` was told, in order.
fn stream_states(h: &Harness, conn: ConnId) -> Vec<i32> {
    h.clients[&conn]
        .signals
        .iter()
        .filter_map(|m| match m {
            signal_response::Message::StreamStateUpdate(u) => Some(u.stream_states.clone()),
            _ => None,
        })
        .flatten()
        .map(|s| s.state)
        .collect()
}

#[test]
fn dynacast_pauses_an_unwatched_camera_and_the_subscriber_is_told() {
    const OFF: [bool; 3] = [false, false, false];
    const ON: [bool; 3] = [true, true, true];
    let mut h = Harness::new();
    h.join(1, "alice");
    let cam = h.publish_video(1, "cam-1");
    h.advance(Duration::from_millis(500));
    let mut elapsed = Duration::ZERO;
    let mut film = |h: &mut Harness, seconds: u64| {
        for n in 0..seconds * 10 {
            h.write_video(1, cam, elapsed, n == 0);
            h.advance(Duration::from_millis(100));
            elapsed += Duration::from_millis(100);
        }
    };
    // Nobody watches: after the grace period alice is asked to stop every layer.
    film(&mut h, 2);
    assert!(
        dynacast_updates(&h, 1).is_empty(),
        "paused before the grace period"
    );
    film(&mut h, 2);
    assert_eq!(dynacast_updates(&h, 1), vec![OFF.to_vec()]);

    // Bob arrives and subscribes: the camera is asked for at once.
    h.join(2, "bob");
    h.advance(Duration::from_millis(300));
    assert_eq!(dynacast_updates(&h, 1), vec![OFF.to_vec(), ON.to_vec()]);
    film(&mut h, 1);
    assert!(
        stream_states(&h, 2).is_empty(),
        "an active stream needs no message"
    );

    // Bob hides the tile: his stream is paused at once, alice stops after the grace period.
    let track_sid = h.sfu.participant("room", "alice").expect("alice").tracks[0]
        .sid
        .clone();
    h.send(
        2,
        signal_request::Message::TrackSetting(proto::UpdateTrackSettings {
            track_sids: vec![track_sid.clone()],
            disabled: true,
            ..Default::default()
        }),
    );
    film(&mut h, 1);
    assert_eq!(
        stream_states(&h, 2),
        vec![proto::StreamState::Paused as i32]
    );
    film(&mut h, 3);
    assert_eq!(dynacast_updates(&h, 1).last(), Some(&OFF.to_vec()));

    // Shown again: asked for at once, and active again.
    h.send(
        2,
        signal_request::Message::TrackSetting(proto::UpdateTrackSettings {
            track_sids: vec![track_sid],
            disabled: false,
            quality: proto::VideoQuality::Low as i32,
            ..Default::default()
        }),
    );
    film(&mut h, 1);
    assert_eq!(
        dynacast_updates(&h, 1).last(),
        Some(&vec![true, false, false]),
        "only the low layer is watched"
    );
    assert_eq!(
        stream_states(&h, 2),
        vec![
            proto::StreamState::Paused as i32,
            proto::StreamState::Active as i32
        ]
    );
}

/// The connection quality the client on `conn` was last told for participant `sid`.
fn quality_told(h: &Harness, conn: ConnId, sid: &str) -> Option<i32> {
    h.clients[&conn].signals.iter().rev().find_map(|m| match m {
        signal_response::Message::ConnectionQuality(u) => u
            .updates
            .iter()
            .find(|q| q.participant_sid == sid)
            .map(|q| q.quality),
        _ => None,
    })
}

#[test]
fn a_lossy_uplink_shows_as_poor_connection_quality_to_the_room() {
    use proto::ConnectionQuality as Q;
    let mut h = Harness::new();
    let mic = call_with_media(&mut h);
    let (alice, bob) = (h.clients[&1].sid.clone(), h.clients[&2].sid.clone());
    let mut elapsed = Duration::from_millis(20);
    let mut talk = |h: &mut Harness, seconds: u64| {
        for _ in 0..seconds * 50 {
            h.write_audio(1, mic, elapsed, &[1; 40]);
            h.advance(Duration::from_millis(20));
            elapsed += Duration::from_millis(20);
        }
    };
    talk(&mut h, 5);
    assert_eq!(quality_told(&h, 2, &alice), Some(Q::Excellent as i32));
    assert_eq!(quality_told(&h, 1, &bob), Some(Q::Excellent as i32));

    // One datagram in five from alice is lost: 20 % loss.
    h.clients.get_mut(&1).expect("alice").drop_every = 5;
    talk(&mut h, 5);
    assert_eq!(
        quality_told(&h, 2, &alice),
        Some(Q::Poor as i32),
        "bob sees alice's link"
    );
    assert_eq!(
        quality_told(&h, 1, &alice),
        Some(Q::Poor as i32),
        "alice sees her own"
    );
    assert_eq!(quality_told(&h, 2, &bob), Some(Q::Excellent as i32));

    h.clients.get_mut(&1).expect("alice").drop_every = 0;
    talk(&mut h, 5);
    assert_eq!(
        quality_told(&h, 2, &alice),
        Some(Q::Excellent as i32),
        "recovered"
    );
}

#[test]
fn a_lossy_uplink_shows_in_the_nack_counters() {
    let mut h = Harness::new();
    h.join(1, "alice");
    h.join(2, "bob");
    let cam = h.publish_video(1, "cam-1");
    h.advance(Duration::from_millis(500));
    let mut elapsed = Duration::ZERO;
    let mut film = |h: &mut Harness, seconds: u64| {
        for n in 0..seconds * 20 {
            h.write_video(1, cam, elapsed, n % 40 == 0);
            h.advance(Duration::from_millis(50));
            elapsed += Duration::from_millis(50);
        }
    };
    film(&mut h, 3);
    let c = h.sfu.counters();
    assert!(c.packets_forwarded.get() > 0, "bob gets alice's video");
    assert_eq!(c.nacks_to_publishers.get(), 0, "no loss, no NACK");
    // One datagram in seven from alice is lost: the SFU asks her again.
    h.clients.get_mut(&1).expect("alice").drop_every = 7;
    film(&mut h, 3);
    assert!(
        c.nacks_to_publishers.get() > 0,
        "str0m's NACKs to the publisher are counted"
    );
    // What the SFU could not recover before forwarding leaves a gap bob asks for in turn.
    assert!(
        c.nacks_from_subscribers.get() > 0,
        "the subscriber's NACKs are counted"
    );
}

/// Frame sizes per simulcast layer (q, h, f), so a received frame tells its layer.
const LAYER_BYTES: [usize; 3] = [300, 1000, 3000];
const RIDS: [&str; 3] = ["q", "h", "f"];
const AUDIO_BYTES: usize = 80;

/// A simulcast camera on the publisher on connection 1, filming at 10 fps.
struct Camera {
    mid: Mid,
    elapsed: Duration,
    frame: u64,
    /// Which layers it sends.
    sending: [bool; 3],
    /// Each layer's keyframe interval in frames.
    key_every: [u64; 3],
    /// Whether a keyframe request is answered with a keyframe on the next frame.
    answers_requests: bool,
    /// A microphone on this m-line, sending a frame every 20 ms.
    mic: Option<Mid>,
}

impl Camera {
    fn new(mid: Mid, key_every: [u64; 3], answers_requests: bool) -> Self {
        Camera {
            mid,
            elapsed: Duration::ZERO,
            frame: 0,
            sending: [true; 3],
            key_every,
            answers_requests,
            mic: None,
        }
    }

    fn film(&mut self, h: &mut Harness, frames: u64) {
        for _ in 0..frames {
            for layer in 0..3 {
                let requested = h.take_keyframe_request(1, RIDS[layer]);
                if !self.sending[layer] {
                    continue;
                }
                let key = self.frame.is_multiple_of(self.key_every[layer])
                    || (self.answers_requests && requested);
                let bytes = LAYER_BYTES[layer];
                h.write_layer(1, self.mid, RIDS[layer], self.elapsed, key, bytes);
            }
            for n in 0..5 {
                let at = self.elapsed + Duration::from_millis(20 * n);
                if let Some(mic) = self.mic {
                    h.write_audio(1, mic, at, &[7; AUDIO_BYTES]);
                }
                h.advance(Duration::from_millis(20));
            }
            self.elapsed += Duration::from_millis(100);
            self.frame += 1;
        }
    }
}

/// The layers of the video frames the client on `conn` received, with when each arrived.
fn layers_received(h: &Harness, conn: ConnId) -> Vec<(usize, Instant)> {
    h.clients[&conn]
        .received
        .iter()
        .filter_map(|data| {
            let layer = LAYER_BYTES
                .iter()
                .position(|bytes| *bytes == data.data.len())?;
            Some((layer, data.network_time))
        })
        .collect()
}

/// The m-section of `sdp` whose mid is `mid`.
fn section_of(sdp: &str, mid: &str) -> String {
    sdp.split("m=")
        .find(|s| s.lines().any(|l| l.trim() == format!("a=mid:{mid}")))
        .unwrap_or_else(|| panic!("no m-line {mid} in {sdp}"))
        .to_owned()
}

/// The SSRCs an SDP names on `a=ssrc` lines.
fn ssrcs(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=ssrc:"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The MediaSectionsRequirements the core sent a client: (audios, videos).
fn requirements(h: &Harness, conn: ConnId) -> Vec<(u32, u32)> {
    h.clients[&conn]
        .signals
        .iter()
        .filter_map(|m| match m {
            signal_response::Message::MediaSectionsRequirement(r) => {
                Some((r.num_audios, r.num_videos))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_new_subscriber_starts_at_once_on_a_lower_layer_and_climbs_to_the_target() {
    let mut h = Harness::new();
    h.join(1, "alice");
    let mid = h.publish_simulcast_video(1, "cam-1");
    h.advance(Duration::from_millis(500));
    // Keyframes on q and h every second, on f every four (the big one comes late); keyframe
    // requests go unanswered.
    let mut cam = Camera::new(mid, [10, 10, 40], false);
    cam.film(&mut h, 11);
    h.join(2, "bob");
    let joined = h.now;
    cam.film(&mut h, 35);

    let received = layers_received(&h, 2);
    let (first_layer, first_at) = *received.first().expect("bob gets video");
    let waited = first_at.saturating_duration_since(joined);
    assert!(
        first_layer < 2 && waited < Duration::from_millis(1500),
        "bob starts on a lower layer's keyframe, not the top one's: layer {first_layer} after {waited:?}"
    );
    let tail: Vec<usize> = received.iter().rev().take(5).map(|(l, _)| *l).collect();
    assert_eq!(tail, vec![2; 5], "bob climbed to the top layer");
    assert!(
        h.clients[&2].received.iter().skip(1).all(|d| d.contiguous),
        "no gap in the sequence numbers across the switches"
    );
}

#[test]
fn a_subscriber_whose_layer_stops_moves_down_without_a_long_freeze() {
    let mut h = Harness::new();
    h.join(1, "alice");
    let mid = h.publish_simulcast_video(1, "cam-1");
    h.join(2, "bob");
    h.advance(Duration::from_millis(500));
    let mut cam = Camera::new(mid, [30, 30, 30], true);
    cam.film(&mut h, 30);
    let before = layers_received(&h, 2);
    assert_eq!(before.last().map(|(l, _)| *l), Some(2), "bob watches f");

    // The publisher drops its top layer (its own uplink estimate fell).
    cam.sending[2] = false;
    cam.film(&mut h, 30);
    let received = layers_received(&h, 2);
    let freeze = received[before.len() - 1..]
        .windows(2)
        .map(|w| w[1].1.saturating_duration_since(w[0].1))
        .max()
        .expect("frames after the stop");
    assert!(
        freeze < Duration::from_millis(1000),
        "the longest time without a frame was {freeze:?}"
    );
    assert_eq!(received.last().map(|(l, _)| *l), Some(1), "bob moved to h");
    assert!(
        h.clients[&2].received.iter().skip(1).all(|d| d.contiguous),
        "no gap in the sequence numbers across the switch"
    );
}

/// Asks for one quality of every track of `publisher` the client on `conn` subscribes to.
fn ask_quality(h: &mut Harness, conn: ConnId, publisher: &str, quality: proto::VideoQuality) {
    let track_sids = h
        .sfu
        .participant("room", publisher)
        .expect("the publisher")
        .tracks
        .iter()
        .map(|t| t.sid.clone())
        .collect();
    h.send(
        conn,
        signal_request::Message::TrackSetting(proto::UpdateTrackSettings {
            track_sids,
            quality: quality as i32,
            ..Default::default()
        }),
    );
}

#[test]
fn a_subscriber_gets_the_layer_it_asks_for_down_and_back_up() {
    let mut h = Harness::new();
    h.join(1, "alice");
    let mid = h.publish_simulcast_video(1, "cam-1");
    h.join(2, "bob");
    h.advance(Duration::from_millis(500));
    let mut cam = Camera::new(mid, [30, 30, 30], true);
    cam.film(&mut h, 20);
    let last_layer = |h: &Harness| layers_received(h, 2).last().map(|(l, _)| *l);
    assert_eq!(last_layer(&h), Some(2));
    for (quality, layer) in [
        (proto::VideoQuality::Low, 0),
        (proto::VideoQuality::High, 2),
        (proto::VideoQuality::Medium, 1),
        (proto::VideoQuality::High, 2),
    ] {
        ask_quality(&mut h, 2, "alice", quality);
        cam.film(&mut h, 10);
        assert_eq!(last_layer(&h), Some(layer), "asked for {quality:?}");
    }
    assert!(
        h.clients[&2].received.iter().skip(1).all(|d| d.contiguous),
        "no gap in the sequence numbers across the switches"
    );
}

/// The audio frames the client on `conn` received.
fn audio_received(h: &Harness, conn: ConnId) -> usize {
    h.clients[&conn]
        .received
        .iter()
        .filter(|data| data.data.len() == AUDIO_BYTES)
        .count()
}

#[test]
fn a_subscriber_behind_a_bottleneck_keeps_audio_drops_a_layer_and_climbs_back() {
    let mut h = Harness::new();
    h.join(1, "alice");
    let mid = h.publish_simulcast_video(1, "cam-1");
    let mic = h.publish_audio(1, "mic-1");
    h.join(2, "bob");
    h.advance(Duration::from_millis(500));
    let mut cam = Camera::new(mid, [50, 50, 50], true);
    cam.mic = Some(mic);
    cam.film(&mut h, 30);
    let last_layer = |h: &Harness| layers_received(h, 2).last().map(|(l, _)| *l);
    assert_eq!(
        last_layer(&h),
        Some(2),
        "an open link carries the top layer"
    );

    // 200 kbit/s: audio and the middle layer fit (~150 kbit/s), the top one (~300) does not.
    h.clients.get_mut(&2).expect("bob").downlink_bps = 200_000;
    cam.film(&mut h, 100);
    assert!(h.clients[&2].downlink_dropped > 0, "the bottleneck bites");
    let (frames, audio) = (layers_received(&h, 2).len(), audio_received(&h, 2));
    let dropped = h.clients[&2].downlink_dropped;
    cam.film(&mut h, 100);
    let layers: Vec<usize> = layers_received(&h, 2)[frames..]
        .iter()
        .map(|(l, _)| *l)
        .collect();
    let audio = audio_received(&h, 2) - audio;
    let lost = h.clients[&2].downlink_dropped - dropped;
    let top = layers.iter().filter(|l| **l == 2).count();
    eprintln!(
        "behind the bottleneck, 10 s: {} frames ({top} of the top layer), {audio} audio frames, {lost} datagrams lost",
        layers.len()
    );
    assert!(layers.len() >= 80, "bob still sees video");
    assert!(audio >= 480, "bob still hears alice");
    assert!(
        layers.iter().all(|l| *l >= 1),
        "bob stays on the middle layer, not ratcheted down to the lowest"
    );
    assert!(
        top < layers.len() / 2,
        "mostly the middle layer: {layers:?}"
    );
    assert!(
        lost < dropped,
        "fewer datagrams lost than while on the top layer"
    );

    // The bottleneck goes: bob is back on the top layer once a probe up succeeds.
    h.clients.get_mut(&2).expect("bob").downlink_bps = 0;
    cam.film(&mut h, 250);
    assert_eq!(last_layer(&h), Some(2), "bob climbed back");
}

/// The sid of the track `identity` published, as `conn` was told.
fn track_sid_of(h: &Harness, conn: ConnId, identity: &str) -> String {
    h.clients[&conn]
        .signals
        .iter()
        .rev()
        .find_map(|m| match m {
            signal_response::Message::Update(u) => u
                .participants
                .iter()
                .find(|p| p.identity == identity && !p.tracks.is_empty())
                .map(|p| p.tracks[0].sid.clone()),
            _ => None,
        })
        .expect("the track was announced")
}

/// The participant sid of `identity`, as `conn` was told.
fn sid_of(h: &Harness, conn: ConnId, identity: &str) -> String {
    h.clients[&conn]
        .signals
        .iter()
        .find_map(|m| match m {
            signal_response::Message::Update(u) => u
                .participants
                .iter()
                .find(|p| p.identity == identity)
                .map(|p| p.sid.clone()),
            signal_response::Message::Join(j) => j
                .other_participants
                .iter()
                .find(|p| p.identity == identity)
                .map(|p| p.sid.clone()),
            _ => None,
        })
        .expect("the participant was announced")
}

#[test]
fn a_v1_client_gets_its_join_offer_answered_after_the_join_response_and_connects() {
    let mut h = Harness::new();
    h.join_v1(1, "alice");
    let signals = &h.clients[&1].signals;
    let signal_response::Message::Join(join) = &signals[0] else {
        panic!("the JoinResponse comes first: {:?}", signals[0]);
    };
    assert!(
        !join.subscriber_primary,
        "v1: the client's connection leads"
    );
    // Its offer is answered (same id), and no offer of ours ever comes (the client panics).
    let answers = h.answers(1);
    assert_eq!(answers.len(), 1);
    assert_eq!(answers[0].id, 1);
    // Nobody publishes yet: every receive-only m-line is answered inactive, no msid of str0m's.
    let media: Vec<&str> = answers[0]
        .sdp
        .split("m=")
        .filter(|s| s.starts_with("audio") || s.starts_with("video"))
        .collect();
    assert_eq!(media.len(), 6, "three audio and three video m-lines");
    for section in media {
        assert!(section.contains("a=inactive"), "{section}");
        assert!(!section.contains("a=msid"), "{section}");
    }
    assert!(requirements(&h, 1).is_empty(), "nothing to ask for");
    h.advance(Duration::from_millis(500));
    assert!(
        h.clients[&1].publisher_connected,
        "its one connection is up"
    );
    assert!(h.sfu.participant_count() == 1);
}

/// Alice (v1) publishes audio; Bob (v1) is asked to offer again and receives it on one of his
/// own receive-only m-lines, named `PA_alice|TR_track` in the answer.
fn v1_call(h: &mut Harness) -> (Mid, String) {
    h.join_v1(1, "alice");
    h.join_v1(2, "bob");
    let mid = h.publish_audio(1, "mic-1");
    h.advance(Duration::from_millis(500));
    (mid, track_sid_of(h, 2, "alice"))
}

/// Whether Bob's last answer sends him `track` on a slot of his, with the msid of v1.
fn slot_sending(h: &Harness, conn: ConnId, track: &str) -> Option<String> {
    let answer = h.answers(conn).last().cloned()?.clone();
    let (mid, _) = answer.mid_to_track_id.iter().find(|(_, t)| *t == track)?;
    Some(section_of(&answer.sdp, mid))
}

#[test]
fn a_v1_client_publishes_and_another_subscribes_after_offering_again() {
    let mut h = Harness::new();
    let (mid, track) = v1_call(&mut h);
    let published = h.clients[&1].signals.iter().any(|m| {
        matches!(m, signal_response::Message::TrackPublished(t)
            if t.cid == "mic-1" && t.track.as_ref().is_some_and(|i| i.sid == track))
    });
    assert!(published, "alice got TrackPublished");
    // Bob had free audio m-lines: asked for none, he offered again, and his answer sends
    // alice's track on one of them.
    assert_eq!(requirements(&h, 2), vec![(0, 0)]);
    let alice = sid_of(&h, 2, "alice");
    let section = slot_sending(&h, 2, &track).expect("bob's answer maps the track");
    assert!(section.starts_with("audio"), "{section}");
    assert!(section.contains("a=sendonly"), "{section}");
    assert!(
        section.contains(&format!("a=msid:{alice}|{track} {track}")),
        "{section}"
    );
    for n in 0..20u8 {
        h.write_audio(1, mid, Duration::from_millis(20 * u64::from(n)), &[n; 40]);
        h.advance(Duration::from_millis(20));
    }
    let got: Vec<u8> = h.clients[&2].received.iter().map(|d| d.data[0]).collect();
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    assert!(
        h.clients[&1].received.is_empty(),
        "alice does not get her own audio"
    );
}

#[test]
fn a_v1_client_with_too_few_m_lines_is_asked_for_the_missing_ones() {
    let mut h = Harness::new();
    h.join(1, "carol");
    for n in 0..5 {
        h.publish_audio(1, &format!("mic-{n}"));
    }
    h.advance(Duration::from_millis(200));
    // Bob's join offer has three audio m-lines for five tracks: two more are asked for.
    h.join_v1(2, "bob");
    h.advance(Duration::from_millis(200));
    assert_eq!(requirements(&h, 2), vec![(2, 0)]);
    let answer = h.answers(2).last().cloned().expect("an answer").clone();
    let carol = sid_of(&h, 2, "carol");
    let sending: Vec<String> = answer
        .sdp
        .split("m=")
        .filter(|s| s.contains("a=sendonly"))
        .map(str::to_owned)
        .collect();
    assert_eq!(sending.len(), 5, "every track on an m-line of bob's");
    for (mid, track) in &answer.mid_to_track_id {
        let section = section_of(&answer.sdp, mid);
        assert!(
            section.contains(&format!("a=msid:{carol}|{track} {track}")),
            "{section}"
        );
    }
    assert_eq!(answer.mid_to_track_id.len(), 5);
}

#[test]
fn a_v1_subscriber_unsubscribes_its_m_line_goes_inactive_and_is_reused() {
    let mut h = Harness::new();
    let (mid, track) = v1_call(&mut h);
    let subscription = |subscribe| {
        signal_request::Message::Subscription(proto::UpdateSubscription {
            track_sids: vec![track.clone()],
            subscribe,
            ..Default::default()
        })
    };
    let slot = {
        let answer = h.answers(2).last().cloned().expect("an answer").clone();
        answer
            .mid_to_track_id
            .iter()
            .find(|(_, t)| **t == track)
            .map(|(m, _)| m.clone())
            .expect("subscribed")
    };
    h.send(2, subscription(false));
    h.advance(Duration::from_millis(200));
    assert_eq!(requirements(&h, 2), vec![(0, 0), (0, 0)]);
    let answer = h.answers(2).last().cloned().expect("an answer").clone();
    assert!(!answer.mid_to_track_id.values().any(|t| *t == track));
    let section = section_of(&answer.sdp, &slot);
    assert!(section.contains("a=inactive"), "{section}");
    let before = h.clients[&2].received.len();
    for n in 0..5u8 {
        h.write_audio(1, mid, Duration::from_millis(20 * u64::from(n)), &[n; 40]);
        h.advance(Duration::from_millis(20));
    }
    assert_eq!(
        h.clients[&2].received.len(),
        before,
        "nothing after unsubscribing"
    );
    // Subscribing again takes a free m-line (the released one is free now) and media flows.
    let ssrcs_before = ssrcs(&section_of(&h.answers(2)[1].sdp, &slot));
    h.send(2, subscription(true));
    h.advance(Duration::from_millis(200));
    let section = slot_sending(&h, 2, &track).expect("subscribed again");
    assert!(section.contains("a=sendonly"), "{section}");
    assert!(
        section.contains(&format!("a=mid:{slot}")),
        "the released m-line is reused"
    );
    // On a new SSRC: the old one's sequence numbers continued by another track's would be
    // dropped by the receiver (SRTP replay protection).
    let ssrc = ssrcs(&section);
    assert!(
        !ssrc.is_empty() && ssrc.iter().all(|s| !ssrcs_before.contains(s)),
        "{section}"
    );
    for n in 5..10u8 {
        h.write_audio(1, mid, Duration::from_millis(20 * u64::from(n)), &[n; 40]);
        h.advance(Duration::from_millis(20));
    }
    let got: Vec<u8> = h.clients[&2].received[before..]
        .iter()
        .map(|d| d.data[0])
        .collect();
    assert!(got.ends_with(&[7, 8, 9]), "media again: {got:?}");
}

#[test]
fn a_v1_client_that_leaves_is_gone_for_the_others_and_its_tracks_with_it() {
    let mut h = Harness::new();
    let (_, track) = v1_call(&mut h);
    // Alice (the publisher) leaves: bob is told, and his m-line is released at his next offer.
    h.send(
        1,
        signal_request::Message::Leave(proto::LeaveRequest {
            reason: proto::DisconnectReason::ClientInitiated as i32,
            ..Default::default()
        }),
    );
    h.advance(Duration::from_millis(200));
    assert!(told_left(&h, 2, "alice"));
    assert_eq!(h.sfu.participant_count(), 1);
    let answer = h.answers(2).last().cloned().expect("an answer").clone();
    assert!(!answer.mid_to_track_id.values().any(|t| *t == track));
    assert!(
        !answer.sdp.contains("a=sendonly"),
        "bob's m-lines send nothing now"
    );
}

#[test]
fn v0_and_v1_clients_hear_each_other_in_one_room() {
    let mut h = Harness::new();
    h.join_v1(1, "alice");
    h.join(2, "bob");
    let from_alice = h.publish_audio(1, "mic-a");
    let from_bob = h.publish_audio(2, "mic-b");
    h.advance(Duration::from_millis(500));
    for n in 0..10u8 {
        let elapsed = Duration::from_millis(20 * u64::from(n));
        h.write_audio(1, from_alice, elapsed, &[n; 40]);
        h.write_audio(2, from_bob, elapsed, &[100 + n; 40]);
        h.advance(Duration::from_millis(20));
    }
    let got = |conn| -> Vec<u8> {
        h.clients[&conn]
            .received
            .iter()
            .map(|d| d.data[0])
            .collect()
    };
    assert_eq!(
        got(2),
        (0..10).collect::<Vec<u8>>(),
        "v0 bob hears v1 alice"
    );
    assert_eq!(
        got(1),
        (100..110).collect::<Vec<u8>>(),
        "v1 alice hears v0 bob"
    );
}

#[test]
fn a_v1_call_survives_the_public_address_moving_without_a_rejoin() {
    let mut h = Harness::new();
    let (mic, _) = v1_call(&mut h);
    h.move_public_address("198.51.100.9:3478".parse().expect("an address"));
    // Each client's one connection is told the new candidate (as its publisher connection:
    // livekit-client drops a subscriber-target candidate in v1); nobody is sent an offer.
    for conn in [1, 2] {
        let told = h.clients[&conn].signals.iter().any(|m| {
            matches!(m, signal_response::Message::Trickle(t)
                if t.target == proto::SignalTarget::Publisher as i32
                    && t.candidate_init.contains("198.51.100.9 3478"))
        });
        assert!(told, "client {conn} is told the new address");
    }
    let mut heard = None;
    for second in 1..=30u8 {
        h.advance(Duration::from_secs(1));
        let tag = 100 + second;
        let elapsed = Duration::from_millis(20 * u64::from(second));
        h.write_audio(1, mic, elapsed, &[tag; 40]);
        h.advance(Duration::from_millis(100));
        if received_tag(&h, 2, tag) {
            heard = Some(second);
            break;
        }
    }
    assert!(heard.is_some(), "bob hears alice over the new address");
    assert_eq!(h.sfu.participant_count(), 2);
    assert!(!told_left(&h, 1, "bob") && !told_left(&h, 2, "alice"));
}
