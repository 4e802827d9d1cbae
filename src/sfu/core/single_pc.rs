//! LiveKit v1 negotiation (`/rtc/v1`, one peer connection): the client always offers and we
//! only answer.
//!
//! The client offers receive-only m-lines of its own (three audio and three video at first);
//! they are the *slots* our subscriptions are sent on. A subscription takes a free slot of its
//! kind when the client's next offer is answered; with no slot free we send
//! `MediaSectionsRequirement` with the number missing, and with slots to change but enough of
//! them a requirement of 0/0, and the client adds what is asked and offers again (it never gets
//! an offer from us). An unsubscribed slot is answered inactive once before it is used again,
//! so a new track on it reaches the client as a new remote track.
//!
//! str0m answers every receive-only m-line `sendonly` with a random msid, and keeps that msid
//! for the m-line's lifetime. The answer text is therefore shaped before it is sent: a slot in
//! use carries the subscription's msid (`PA_…|TR_… TR_…`, which both SDKs unpack, the Rust
//! SDK by `unwrap`), a free one does not send (`inactive`, or `recvonly` where the client also
//! sends on it). str0m is not told: it only sends on a slot once a subscription writes there.

use std::collections::HashMap;

use livekit_protocol as proto;
use proto::signal_response;
use str0m::change::SdpOffer;
use str0m::media::{MediaKind, Mid};

use super::negotiation::new_subscription;
use super::{ParticipantKey, Sfu, guard};

impl Sfu {
    /// Answers a v1 client's offer: binds waiting subscriptions to free slots, shapes the
    /// answer (msids, directions), and asks for more slots if some are still missing.
    pub(super) fn answer_single_pc_offer(
        &mut self,
        key: ParticipantKey,
        offer: proto::SessionDescription,
    ) {
        let waiting = self.waiting_subscriptions(key);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let parsed = match SdpOffer::from_sdp_string(&offer.sdp) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(identity = p.identity, %error, "unparsable offer");
                return self.fail(key, "unparsable offer");
            }
        };
        let answer = match guard(|| p.media.uplink_mut().sdp_api().accept_offer(parsed)) {
            Some(Ok(answer)) => answer,
            Some(Err(error)) => {
                tracing::debug!(identity = p.identity, %error, "offer refused");
                return self.fail(key, "offer refused");
            }
            None => return self.fail(key, "panic while accepting an offer"),
        };
        let slots = receiving_slots(&offer.sdp);
        p.negotiation.slots = slots.clone();
        // A slot the client no longer receives on ends its subscription.
        p.unsubscribe_where(|s| !slots.iter().any(|(mid, _)| *mid == s.mid));
        // Slots unsubscribed since the last answer are answered inactive now, and free after.
        let released = std::mem::take(&mut p.negotiation.to_remove);
        let mut free: Vec<(Mid, MediaKind)> = slots
            .iter()
            .filter(|(mid, _)| !released.contains(mid) && !p.subs.iter().any(|s| s.mid == *mid))
            .copied()
            .collect();
        let mut still_waiting = Vec::new();
        let mut renamed_ssrcs = Vec::new();
        for track in waiting {
            let kind = track.kind();
            match free.iter().position(|(_, k)| *k == kind) {
                Some(index) => {
                    let (mid, _) = free.remove(index);
                    let msid = format!(
                        "{}|{} {}",
                        track.publisher_sid, track.track_sid, track.track_sid
                    );
                    if p.negotiation.msids.insert(mid, msid).is_some() {
                        match guard(|| new_ssrcs(p.media.downlink_mut(), mid)) {
                            Some(renamed) => renamed_ssrcs.extend(renamed),
                            None => return self.fail(key, "panic while renewing an SSRC"),
                        }
                    }
                    p.subs.push(new_subscription(
                        track.publisher,
                        &track.track_sid,
                        mid,
                        track.video,
                        track.simulcast,
                    ));
                }
                None => still_waiting.push(track),
            }
        }
        p.negotiation.to_add = still_waiting
            .iter()
            .map(|t| (t.publisher, t.track_sid.clone()))
            .collect();
        p.negotiation.offer_awaited = false;
        let msids: HashMap<Mid, String> = p
            .subs
            .iter()
            .filter_map(|s| Some((s.mid, p.negotiation.msids.get(&s.mid)?.clone())))
            .collect();
        // str0m wrote the answer before the slots were bound: it names the SSRCs they had.
        let sdp = rename_ssrcs(&answer.to_sdp_string(), &renamed_ssrcs);
        let sdp = shape_answer(&sdp, &slots, &msids);
        let mut mid_to_track_id = p.mid_to_track_id();
        mid_to_track_id.extend(
            p.subs
                .iter()
                .map(|s| (s.mid.to_string(), s.track_sid.clone())),
        );
        let uplink = p.media.uplink_pc();
        p.media.peer_mut(uplink).first_mid = super::media::first_mid(&offer.sdp);
        let message = signal_response::Message::Answer(proto::SessionDescription {
            r#type: "answer".into(),
            sdp,
            id: offer.id,
            mid_to_track_id,
        });
        self.signal(key, message);
        self.mark_uplink(key);
        if !still_waiting.is_empty() {
            self.ask_for_offer(key, &still_waiting);
        }
    }

    /// v1's counterpart of our subscriber offer: when subscriptions wait for a slot or slots
    /// were released, the client is asked (once per offer) to offer again, with as many new
    /// slots of each kind as the free ones do not cover.
    pub(super) fn negotiate_single_pc(&mut self, key: ParticipantKey) {
        let waiting = self.waiting_subscriptions(key);
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.negotiation.to_add = waiting
            .iter()
            .map(|t| (t.publisher, t.track_sid.clone()))
            .collect();
        let n = &p.negotiation;
        if n.offer_awaited || (n.to_add.is_empty() && n.to_remove.is_empty()) {
            return;
        }
        self.ask_for_offer(key, &waiting);
    }

    /// Sends `MediaSectionsRequirement`: the slots `waiting` needs beyond the free ones.
    fn ask_for_offer(&mut self, key: ParticipantKey, waiting: &[WaitingTrack]) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let free_of = |kind: MediaKind| {
            p.negotiation
                .slots
                .iter()
                .filter(|(mid, k)| {
                    *k == kind
                        && !p.negotiation.to_remove.contains(mid)
                        && !p.subs.iter().any(|s| s.mid == *mid)
                })
                .count()
        };
        let missing = |kind: MediaKind| {
            let wanted = waiting.iter().filter(|t| t.kind() == kind).count();
            u32::try_from(wanted.saturating_sub(free_of(kind))).unwrap_or(u32::MAX)
        };
        let requirement = proto::MediaSectionsRequirement {
            num_audios: missing(MediaKind::Audio),
            num_videos: missing(MediaKind::Video),
        };
        p.negotiation.offer_awaited = true;
        self.signal(
            key,
            signal_response::Message::MediaSectionsRequirement(requirement),
        );
    }

    /// The subscriptions `key` waits for, with what a slot needs to know about each; entries
    /// whose publisher or track is gone are dropped.
    fn waiting_subscriptions(&self, key: ParticipantKey) -> Vec<WaitingTrack> {
        let Some(p) = self.participants.get(&key) else {
            return Vec::new();
        };
        p.negotiation
            .to_add
            .iter()
            .filter_map(|(publisher, sid)| {
                let owner = self.participants.get(publisher)?;
                let track = owner.tracks.iter().find(|t| &t.info.sid == sid)?;
                Some(WaitingTrack {
                    publisher: *publisher,
                    publisher_sid: owner.sid.clone(),
                    track_sid: sid.clone(),
                    video: track.video,
                    simulcast: track.info.simulcast,
                })
            })
            .collect()
    }
}

/// Gives the stream we send on `mid` a new SSRC (and RTX SSRC): a slot used again carries a new
/// track, which receivers must not take for the old one continued (its sequence numbers start
/// elsewhere, and SRTP's replay protection would drop them as old).
/// Returns the (old, new) pairs.
fn new_ssrcs(rtc: &mut str0m::Rtc, mid: Mid) -> Vec<(u32, u32)> {
    let mut api = rtc.direct_api();
    let Some((old, old_rtx)) = api.stream_tx_by_mid(mid, None).map(|s| (s.ssrc(), s.rtx())) else {
        return Vec::new();
    };
    let ssrc = api.new_ssrc();
    let rtx = old_rtx.map(|_| api.new_ssrc());
    if api.reset_stream_tx(mid, None, ssrc, rtx).is_none() {
        return Vec::new();
    }
    let mut renamed = vec![(*old, *ssrc)];
    if let (Some(old), Some(new)) = (old_rtx, rtx) {
        renamed.push((*old, *new));
    }
    renamed
}

/// `sdp` with the SSRCs on `a=ssrc` and `a=ssrc-group` lines renamed (old → new).
fn rename_ssrcs(sdp: &str, renamed: &[(u32, u32)]) -> String {
    if renamed.is_empty() {
        return sdp.to_owned();
    }
    let rename = |token: &str| -> String {
        let (number, rest) = token
            .find(|c: char| !c.is_ascii_digit())
            .map_or((token, ""), |at| token.split_at(at));
        match renamed
            .iter()
            .find(|(old, _)| number.parse::<u32>() == Ok(*old))
        {
            Some((_, new)) => format!("{new}{rest}"),
            None => token.to_owned(),
        }
    };
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end();
        let ending = &line[text.len()..];
        if let Some(ssrc_line) = text.strip_prefix("a=ssrc:") {
            let (first, rest) = ssrc_line.split_once(' ').unwrap_or((ssrc_line, ""));
            let rest = if rest.is_empty() {
                String::new()
            } else {
                format!(" {rest}")
            };
            out.push_str(&format!("a=ssrc:{}{rest}{ending}", rename(first)));
        } else if let Some(group) = text.strip_prefix("a=ssrc-group:") {
            let tokens: Vec<String> = group.split(' ').map(&rename).collect();
            out.push_str(&format!("a=ssrc-group:{}{ending}", tokens.join(" ")));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// A subscription waiting for its m-line.
pub(super) struct WaitingTrack {
    pub(super) publisher: ParticipantKey,
    pub(super) publisher_sid: String,
    pub(super) track_sid: String,
    pub(super) video: bool,
    pub(super) simulcast: bool,
}

impl WaitingTrack {
    fn kind(&self) -> MediaKind {
        if self.video {
            MediaKind::Video
        } else {
            MediaKind::Audio
        }
    }
}

/// The client's m-lines it receives on (offered `recvonly` or `sendrecv`), in offer order.
pub(super) fn receiving_slots(sdp: &str) -> Vec<(Mid, MediaKind)> {
    let mut slots = Vec::new();
    for section in sdp.split("\nm=").skip(1) {
        let kind = if section.starts_with("audio") {
            MediaKind::Audio
        } else if section.starts_with("video") {
            MediaKind::Video
        } else {
            continue;
        };
        // A rejected m-line (port 0) receives nothing.
        if section.split_whitespace().nth(1) == Some("0") {
            continue;
        }
        let mut mid = None;
        let mut receiving = true; // no direction attribute means sendrecv
        for line in section.lines().map(str::trim) {
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(Mid::from(m.trim()));
            }
            match line {
                "a=sendonly" | "a=inactive" => receiving = false,
                _ => {}
            }
        }
        if let (Some(mid), true) = (mid, receiving) {
            slots.push((mid, kind));
        }
    }
    slots
}

/// str0m's answer with each slot as the client must see it: a slot in `msids` carries that
/// msid (on `a=msid` and every `a=ssrc … msid:` line), any other slot does not send and names
/// no stream.
pub(super) fn shape_answer(
    sdp: &str,
    slots: &[(Mid, MediaKind)],
    msids: &HashMap<Mid, String>,
) -> String {
    let mut out = String::with_capacity(sdp.len() + 256);
    // What the current m-section is: not a slot, a slot in use (its msid) or a free slot.
    enum Section<'a> {
        Other,
        Used(&'a str),
        Free,
    }
    let mut section = Section::Other;
    let sections: Vec<&str> = sdp.split_inclusive('\n').collect();
    for (i, line) in sections.iter().enumerate() {
        let text = line.trim_end();
        let ending = &line[text.len()..];
        if text.starts_with("m=") {
            // Find this section's mid ahead of its lines.
            let mid = sections[i + 1..]
                .iter()
                .map(|l| l.trim_end())
                .take_while(|l| !l.starts_with("m="))
                .find_map(|l| l.strip_prefix("a=mid:"))
                .map(|m| Mid::from(m.trim()));
            section = match mid {
                Some(mid) if slots.iter().any(|(m, _)| *m == mid) => match msids.get(&mid) {
                    Some(msid) => Section::Used(msid),
                    None => Section::Free,
                },
                _ => Section::Other,
            };
        }
        let replaced = match (&section, text) {
            (Section::Free, "a=sendrecv") => Some("a=recvonly".to_owned()),
            (Section::Free, "a=sendonly") => Some("a=inactive".to_owned()),
            (Section::Used(msid), _) if text.starts_with("a=msid:") => {
                Some(format!("a=msid:{msid}"))
            }
            (Section::Used(msid), _) if text.starts_with("a=ssrc:") && text.contains(" msid:") => {
                let ssrc = text.split_whitespace().next().unwrap_or(text);
                Some(format!("{ssrc} msid:{msid}"))
            }
            _ => None,
        };
        let dropped = matches!(section, Section::Free)
            && (text.starts_with("a=msid:")
                || text.starts_with("a=ssrc:") && text.contains(" msid:"));
        if dropped {
            continue;
        }
        match replaced {
            Some(text) => {
                out.push_str(&text);
                out.push_str(ending);
            }
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\na=msid:abc def\r\n\
        a=ssrc:11 cname:x\r\na=ssrc:11 msid:abc def\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendonly\r\na=msid:ghi jkl\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:3\r\n";

    #[test]
    fn a_used_slot_names_its_subscription_and_a_free_one_sends_nothing() {
        let slots = [
            (Mid::from("0"), MediaKind::Audio),
            (Mid::from("1"), MediaKind::Video),
        ];
        let msids = HashMap::from([(Mid::from("0"), "PA_a|TR_b TR_b".to_owned())]);
        let shaped = shape_answer(ANSWER, &slots, &msids);
        let expected = ANSWER
            .replace("a=msid:abc def", "a=msid:PA_a|TR_b TR_b")
            .replace("a=ssrc:11 msid:abc def", "a=ssrc:11 msid:PA_a|TR_b TR_b")
            .replace("a=mid:1\r\na=sendonly", "a=mid:1\r\na=inactive")
            .replace("a=msid:ghi jkl\r\n", "");
        assert_eq!(shaped, expected);
    }

    #[test]
    fn renamed_ssrcs_change_on_their_lines_only() {
        let sdp = "a=ssrc-group:FID 11 12\r\na=ssrc:11 cname:x\r\na=ssrc:12 msid:a 11\r\n\
            a=ssrc:110 cname:y\r\na=rtpmap:11 x\r\n";
        assert_eq!(
            rename_ssrcs(sdp, &[(11, 21), (12, 22)]),
            "a=ssrc-group:FID 21 22\r\na=ssrc:21 cname:x\r\na=ssrc:22 msid:a 11\r\n\
            a=ssrc:110 cname:y\r\na=rtpmap:11 x\r\n"
        );
    }

    #[test]
    fn the_slots_are_the_m_lines_the_client_receives_on() {
        let offer = "v=0\r\nm=audio 9 X 111\r\na=mid:0\r\na=recvonly\r\n\
            m=video 9 X 96\r\na=mid:1\r\na=sendonly\r\n\
            m=video 9 X 96\r\na=mid:2\r\n\
            m=video 0 X 96\r\na=mid:3\r\na=recvonly\r\n\
            m=audio 9 X 111\r\na=mid:4\r\na=inactive\r\n\
            m=application 9 X webrtc-datachannel\r\na=mid:5\r\n";
        assert_eq!(
            receiving_slots(offer),
            vec![
                (Mid::from("0"), MediaKind::Audio),
                (Mid::from("2"), MediaKind::Video)
            ]
        );
    }
}
