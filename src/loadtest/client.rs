//! One load-test participant: a LiveKit v0 client with a publisher and a subscriber str0m `Rtc`
//! (frame mode, as the harness's client), each on its own loopback UDP socket, and a real
//! signaling WebSocket to the server under test.
//!
//! A publisher sends synthetic media at real rates, never encoded: Opus frames every 20 ms and
//! three VP8 simulcast layers at 30 frames/s whose frames start with a valid VP8 frame header
//! (bit 0 clear on a keyframe, as `sfu::keyframe` reads it). Every frame carries a [`Tag`]: who
//! sent it, which stream, its index and its send time, so a subscriber counts frames, packets,
//! loss and reordering per stream and the forwarding latency without any clock but this
//! process's. A keyframe request (PLI/FIR) is answered with a keyframe on that layer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use livekit_protocol as proto;
use prost::Message as _;
use proto::{signal_request, signal_response};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What a participant does.
#[derive(Clone, Debug)]
pub struct Role {
    pub index: u32,
    pub publish_audio: bool,
    pub publish_video: bool,
    pub subscribe: bool,
}

/// Simulcast layers as LiveKit names them, with the bytes of one frame each (about 150 kb/s,
/// 500 kb/s and 1.7 Mb/s at 30 frames/s, LiveKit's default 180p/360p/720p ladder).
pub const LAYERS: [(&str, usize); 3] = [("q", 625), ("h", 2_083), ("f", 7_083)];
const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
/// An Opus frame of about 40 kb/s.
const AUDIO_BYTES: usize = 100;
/// Where the tag sits in a video frame: after the 10-byte VP8 keyframe header.
const VIDEO_TAG_AT: usize = 10;
const MAGIC: [u8; 4] = *b"RBLT";
const TAG_LEN: usize = 21;

/// What every synthetic frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub publisher: u32,
    /// 0: audio, 1..=3: video layer q, h, f.
    pub stream: u8,
    pub index: u32,
    /// Microseconds since the load test's epoch.
    pub sent_us: u64,
}

impl Tag {
    fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.publisher.to_be_bytes());
        out[8] = self.stream;
        out[9..13].copy_from_slice(&self.index.to_be_bytes());
        out[13..21].copy_from_slice(&self.sent_us.to_be_bytes());
    }

    fn read(data: &[u8], at: usize) -> Option<Tag> {
        let b = data.get(at..at + TAG_LEN)?;
        if b[..4] != MAGIC {
            return None;
        }
        Some(Tag {
            publisher: u32::from_be_bytes(b[4..8].try_into().ok()?),
            stream: b[8],
            index: u32::from_be_bytes(b[9..13].try_into().ok()?),
            sent_us: u64::from_be_bytes(b[13..21].try_into().ok()?),
        })
    }
}

/// A synthetic Opus frame.
pub fn audio_frame(tag: Tag) -> Vec<u8> {
    let mut frame = vec![0xfc; AUDIO_BYTES];
    tag.write(&mut frame);
    frame
}

/// A synthetic VP8 frame of `len` bytes: a keyframe header (bit 0 clear, start code, 16x16)
/// or an interframe's first byte, then the tag.
pub fn video_frame(tag: Tag, key: bool, len: usize) -> Vec<u8> {
    let mut frame = vec![if key { 0x10 } else { 0x11 }, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    frame.extend_from_slice(&[16, 0, 16, 0]);
    frame.resize(len.max(VIDEO_TAG_AT + TAG_LEN), 0x55);
    tag.write(&mut frame[VIDEO_TAG_AT..]);
    frame
}

/// What a subscriber saw of one stream during the measurement window.
#[derive(Clone, Debug, Default)]
pub struct StreamStats {
    pub frames: u64,
    pub packets: u64,
    pub first_index: Option<u32>,
    pub max_index: u32,
    pub reordered: u64,
}

impl StreamStats {
    /// Frames between the first and the highest index seen that never arrived.
    pub fn lost(&self) -> u64 {
        match self.first_index {
            Some(first) => (u64::from(self.max_index - first) + 1).saturating_sub(self.frames),
            None => 0,
        }
    }
}

/// Everything one participant reports when it stops.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub index: u32,
    /// From opening the WebSocket until every peer connection it uses is connected.
    pub join: Option<Duration>,
    /// (publisher, stream) → what arrived in the window.
    pub streams: BTreeMap<(u32, u8), StreamStats>,
    pub audio_latency_us: Vec<u32>,
    pub video_latency_us: Vec<u32>,
    pub frames_sent: u64,
    pub keyframe_requests: u64,
    pub error: Option<String>,
}

/// The phases the coordinator moves every client through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Warmup,
    Measure,
    Stop,
}

pub struct Shared {
    pub epoch: Instant,
    pub phase: watch::Receiver<Phase>,
    /// Participants whose peer connections are all up.
    pub joined: Arc<AtomicU32>,
}

struct Peer {
    rtc: Rtc,
    socket: UdpSocket,
    addr: SocketAddr,
    timeout: Instant,
    connected: bool,
}

impl Peer {
    async fn new(now: Instant) -> anyhow::Result<Peer> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let mut rtc = Rtc::builder().build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        Ok(Peer {
            rtc,
            socket,
            addr,
            timeout: now,
            connected: false,
        })
    }

    fn receive(&mut self, from: SocketAddr, data: &[u8]) -> anyhow::Result<()> {
        let now = Instant::now();
        let receive = Receive::new(Protocol::Udp, from, self.addr, data)?;
        self.rtc.handle_input(Input::Receive(now, receive))?;
        // Frame mode depacketizes on a timeout: deliver what is complete now.
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }
}

/// The trickle message a LiveKit client sends for its host candidate.
pub(crate) fn trickle(
    addr: SocketAddr,
    target: proto::SignalTarget,
) -> anyhow::Result<signal_request::Message> {
    let candidate = Candidate::host(addr, "udp")?;
    Ok(signal_request::Message::Trickle(proto::TrickleRequest {
        candidate_init: serde_json::json!({
            "candidate": candidate.to_sdp_string(),
            "sdpMid": "0",
            "sdpMLineIndex": 0,
        })
        .to_string(),
        target: target as i32,
        ..Default::default()
    }))
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn send(ws: &mut Ws, message: signal_request::Message) -> anyhow::Result<()> {
    let bytes = proto::SignalRequest {
        message: Some(message),
    }
    .encode_to_vec();
    ws.send(WsMessage::Binary(bytes.into())).await?;
    Ok(())
}

/// Runs one participant until the phase says stop; never panics on what the server does.
pub async fn run(
    server: SocketAddr,
    token: String,
    role: Role,
    shared: Arc<Shared>,
) -> ClientReport {
    let mut report = ClientReport {
        index: role.index,
        ..Default::default()
    };
    if let Err(error) = drive(server, &token, &role, &shared, &mut report).await {
        report.error = Some(format!("{error:#}"));
    }
    report
}

struct Sender {
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    audio_index: u32,
    video_index: [u32; 3],
    want_key: [bool; 3],
    next_audio: Instant,
    next_video: Instant,
}

async fn drive(
    server: SocketAddr,
    token: &str,
    role: &Role,
    shared: &Shared,
    report: &mut ClientReport,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let tcp = TcpStream::connect(server)
        .await
        .context("connecting to the signaling port")?;
    tcp.set_nodelay(true)?;
    let url = format!(
        "ws://{server}/rtc?access_token={token}&auto_subscribe={}&protocol=16&sdk=rust&version=rtcbox-loadtest",
        u8::from(role.subscribe)
    );
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .context("the signaling WebSocket handshake")?;
    let now = Instant::now();
    let publishing = role.publish_audio || role.publish_video;
    let mut publisher = Peer::new(now).await?;
    let mut subscriber = Peer::new(now).await?;
    let mut pending: Option<SdpPendingOffer> = None;
    let mut sender = Sender {
        audio_mid: None,
        video_mid: None,
        audio_index: 0,
        video_index: [0; 3],
        want_key: [true; 3],
        next_audio: now,
        next_video: now,
    };
    let mut phase_rx = shared.phase.clone();
    let mut next_ping = now + Duration::from_secs(5);
    let mut pub_buf = vec![0u8; 2048];
    let mut sub_buf = vec![0u8; 2048];
    let mut joined = false;
    loop {
        let phase = *phase_rx.borrow();
        if phase == Phase::Stop {
            break;
        }
        let measuring = phase == Phase::Measure;
        // Media due now.
        let now = Instant::now();
        if publisher.connected
            && send_media(&mut publisher.rtc, &mut sender, role, shared, now, report)?
        {
            // str0m's pacer sees written media only on a timeout: without one now, frames
            // would wait for the peer's next deadline and the latency would be ours.
            publisher.rtc.handle_input(Input::Timeout(now))?;
        }
        // Drain both peers.
        for (is_pub, peer) in [(true, &mut publisher), (false, &mut subscriber)] {
            loop {
                match peer.rtc.poll_output()? {
                    Output::Timeout(at) => {
                        peer.timeout = at;
                        break;
                    }
                    Output::Transmit(t) => {
                        // Loopback never blocks for long; a full buffer is a lost datagram.
                        let _ = peer.socket.try_send_to(&t.contents, t.destination);
                    }
                    Output::Event(Event::Connected) => peer.connected = true,
                    Output::Event(Event::KeyframeRequest(request)) if is_pub => {
                        report.keyframe_requests += 1;
                        let layer = request
                            .rid
                            .as_deref()
                            .and_then(|rid| LAYERS.iter().position(|(name, _)| *name == rid))
                            .unwrap_or(2);
                        sender.want_key[layer] = true;
                    }
                    Output::Event(Event::MediaData(data)) if !is_pub && measuring => {
                        let video = data.params.spec().codec == Codec::Vp8;
                        let at = if video { VIDEO_TAG_AT } else { 0 };
                        let Some(tag) = Tag::read(&data.data, at) else {
                            continue;
                        };
                        let packets =
                            (**data.seq_range.end()).saturating_sub(**data.seq_range.start()) + 1;
                        let stats = report
                            .streams
                            .entry((tag.publisher, tag.stream))
                            .or_default();
                        stats.frames += 1;
                        stats.packets += packets;
                        match stats.first_index {
                            None => {
                                stats.first_index = Some(tag.index);
                                stats.max_index = tag.index;
                            }
                            Some(_) if tag.index > stats.max_index => stats.max_index = tag.index,
                            Some(_) => stats.reordered += 1,
                        }
                        let latency =
                            (shared.epoch.elapsed().as_micros() as u64).saturating_sub(tag.sent_us);
                        let latency = u32::try_from(latency).unwrap_or(u32::MAX);
                        if video {
                            report.video_latency_us.push(latency);
                        } else {
                            report.audio_latency_us.push(latency);
                        }
                    }
                    Output::Event(_) => {}
                }
            }
        }
        if !joined
            && (!publishing || publisher.connected)
            && (!role.subscribe || subscriber.connected)
            && (publishing || role.subscribe)
        {
            joined = true;
            report.join = Some(started.elapsed());
            shared.joined.fetch_add(1, Ordering::Relaxed);
        }
        let mut deadline = publisher.timeout.min(subscriber.timeout).min(next_ping);
        if publisher.connected {
            if sender.audio_mid.is_some() {
                deadline = deadline.min(sender.next_audio);
            }
            if sender.video_mid.is_some() {
                deadline = deadline.min(sender.next_video);
            }
        }
        tokio::select! {
            biased;
            changed = phase_rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            received = publisher.socket.recv_from(&mut pub_buf) => {
                let (n, from) = received?;
                publisher.receive(from, &pub_buf[..n])?;
            }
            received = subscriber.socket.recv_from(&mut sub_buf) => {
                let (n, from) = received?;
                subscriber.receive(from, &sub_buf[..n])?;
            }
            message = next_ws(&mut ws) => {
                let Some(message) = message? else {
                    bail!("the server closed the signaling connection");
                };
                for reply in on_signal(message, role, &mut publisher, &mut subscriber, &mut pending, &mut sender)? {
                    send(&mut ws, reply).await?;
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now >= next_ping {
                    let ms = shared.epoch.elapsed().as_millis() as i64;
                    send(&mut ws, signal_request::Message::Ping(ms)).await?;
                    next_ping = now + Duration::from_secs(5);
                }
                for peer in [&mut publisher, &mut subscriber] {
                    if now >= peer.timeout {
                        peer.rtc.handle_input(Input::Timeout(now))?;
                    }
                }
            }
        }
    }
    let leave = signal_request::Message::Leave(proto::LeaveRequest {
        can_reconnect: false,
        reason: proto::DisconnectReason::ClientInitiated as i32,
        ..Default::default()
    });
    let _ = send(&mut ws, leave).await;
    let _ = ws.close(None).await;
    Ok(())
}

async fn next_ws(ws: &mut Ws) -> anyhow::Result<Option<signal_response::Message>> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(error)) => return Err(anyhow!(error).context("the signaling connection")),
            Some(Ok(WsMessage::Binary(bytes))) => {
                let response = proto::SignalResponse::decode(bytes.as_ref())
                    .context("a SignalResponse from the server")?;
                if let Some(message) = response.message {
                    return Ok(Some(message));
                }
            }
            Some(Ok(WsMessage::Close(_))) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

fn on_signal(
    message: signal_response::Message,
    role: &Role,
    publisher: &mut Peer,
    subscriber: &mut Peer,
    pending: &mut Option<SdpPendingOffer>,
    sender: &mut Sender,
) -> anyhow::Result<Vec<signal_request::Message>> {
    use signal_response::Message as M;
    let mut replies = Vec::new();
    match message {
        M::Join(_) => {
            if !(role.publish_audio || role.publish_video) {
                return Ok(replies);
            }
            let mut api = publisher.rtc.sdp_api();
            if role.publish_audio {
                replies.push(add_track(
                    "a",
                    proto::TrackType::Audio,
                    proto::TrackSource::Microphone,
                ));
                sender.audio_mid = Some(api.add_media(
                    MediaKind::Audio,
                    Direction::SendOnly,
                    Some("stream".into()),
                    Some("a".into()),
                    None,
                ));
            }
            if role.publish_video {
                let mut request =
                    add_track("v", proto::TrackType::Video, proto::TrackSource::Camera);
                if let signal_request::Message::AddTrack(add) = &mut request {
                    add.width = 1280;
                    add.height = 720;
                    add.layers = [
                        (proto::VideoQuality::Low, 320, 180, 150_000),
                        (proto::VideoQuality::Medium, 640, 360, 500_000),
                        (proto::VideoQuality::High, 1280, 720, 1_700_000),
                    ]
                    .into_iter()
                    .map(|(quality, width, height, bitrate)| proto::VideoLayer {
                        quality: quality as i32,
                        width,
                        height,
                        bitrate,
                        ..Default::default()
                    })
                    .collect();
                }
                replies.push(request);
                let simulcast = Simulcast {
                    send: LAYERS
                        .iter()
                        .map(|(rid, _)| SimulcastLayer::new(rid))
                        .collect(),
                    recv: Vec::new(),
                };
                sender.video_mid = Some(api.add_media(
                    MediaKind::Video,
                    Direction::SendOnly,
                    Some("stream".into()),
                    Some("v".into()),
                    Some(simulcast),
                ));
            }
            let (offer, pend) = api.apply().ok_or_else(|| anyhow!("nothing to offer"))?;
            *pending = Some(pend);
            replies.push(signal_request::Message::Offer(proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                ..Default::default()
            }));
        }
        M::Answer(answer) => {
            let Some(pend) = pending.take() else {
                bail!("an answer to no offer");
            };
            let parsed = SdpAnswer::from_sdp_string(&answer.sdp)?;
            publisher.rtc.sdp_api().accept_answer(pend, parsed)?;
            replies.push(trickle(publisher.addr, proto::SignalTarget::Publisher)?);
        }
        M::Offer(offer) => {
            let parsed = SdpOffer::from_sdp_string(&offer.sdp)?;
            let answer = subscriber.rtc.sdp_api().accept_offer(parsed)?;
            replies.push(signal_request::Message::Answer(proto::SessionDescription {
                r#type: "answer".into(),
                sdp: answer.to_sdp_string(),
                id: offer.id,
                ..Default::default()
            }));
            replies.push(trickle(subscriber.addr, proto::SignalTarget::Subscriber)?);
        }
        M::Leave(leave) => bail!("the server asked us to leave: {:?}", leave.reason()),
        _ => {}
    }
    Ok(replies)
}

fn add_track(
    cid: &str,
    kind: proto::TrackType,
    source: proto::TrackSource,
) -> signal_request::Message {
    signal_request::Message::AddTrack(proto::AddTrackRequest {
        cid: cid.into(),
        name: cid.into(),
        r#type: kind as i32,
        source: source as i32,
        ..Default::default()
    })
}

fn payload_type(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
) -> anyhow::Result<str0m::format::PayloadParams> {
    let writer = rtc
        .writer(mid)
        .ok_or_else(|| anyhow!("m-line {mid} not negotiated"))?;
    writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .cloned()
        .ok_or_else(|| anyhow!("{codec:?} not negotiated"))
}

/// Writes every frame that is due; whether it wrote any.
fn send_media(
    rtc: &mut Rtc,
    sender: &mut Sender,
    role: &Role,
    shared: &Shared,
    now: Instant,
    report: &mut ClientReport,
) -> anyhow::Result<bool> {
    let mut wrote = false;
    if let Some(mid) = sender.audio_mid {
        let mut due = false;
        while sender.next_audio <= now {
            sender.next_audio += AUDIO_INTERVAL;
            due = true;
        }
        if due {
            let pt = payload_type(rtc, mid, Codec::Opus)?.pt();
            let tag = Tag {
                publisher: role.index,
                stream: 0,
                index: sender.audio_index,
                sent_us: shared.epoch.elapsed().as_micros() as u64,
            };
            let rtp_time = MediaTime::new(
                u64::from(sender.audio_index) * 960,
                Frequency::FORTY_EIGHT_KHZ,
            );
            let writer = rtc.writer(mid).ok_or_else(|| anyhow!("audio m-line"))?;
            writer.write(pt, now, rtp_time, audio_frame(tag))?;
            sender.audio_index += 1;
            report.frames_sent += 1;
            wrote = true;
        }
    }
    if let Some(mid) = sender.video_mid {
        let mut due = false;
        while sender.next_video <= now {
            sender.next_video += VIDEO_INTERVAL;
            due = true;
        }
        if due {
            let pt = payload_type(rtc, mid, Codec::Vp8)?.pt();
            for (layer, (rid, len)) in LAYERS.iter().enumerate() {
                let index = sender.video_index[layer];
                let tag = Tag {
                    publisher: role.index,
                    stream: layer as u8 + 1,
                    index,
                    sent_us: shared.epoch.elapsed().as_micros() as u64,
                };
                let key = std::mem::take(&mut sender.want_key[layer]);
                let rtp_time = MediaTime::from_90khz(u64::from(index) * 3_000);
                let writer = rtc.writer(mid).ok_or_else(|| anyhow!("video m-line"))?;
                writer.rid(Rid::from(*rid)).write(
                    pt,
                    now,
                    rtp_time,
                    video_frame(tag, key, *len),
                )?;
                sender.video_index[layer] += 1;
                report.frames_sent += 1;
                wrote = true;
            }
        }
    }
    Ok(wrote)
}
