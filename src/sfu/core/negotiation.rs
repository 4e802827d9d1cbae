//! Negotiation: the client's publisher offers, our subscriber offers and their answers,
//! trickled candidates, and which tracks a participant subscribes to.

use std::collections::HashMap;
use std::time::Instant;

use livekit_protocol as proto;
use proto::signal_response;
use str0m::Candidate;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::channel::{ChannelConfig, ChannelId, Reliability};
use str0m::media::{Direction, MediaKind, Mid};

use super::data::DataKind;
use super::forwarding::Subscription;
use super::session::Participant;
use super::{ParticipantKey, Sfu, guard};
use crate::sfu::forward::Forwarder;

#[derive(Default)]
pub(super) struct Negotiation {
    pub(super) pending: Option<PendingOffer>,
    pub(super) next_id: u32,
    pub(super) channels_created: bool,
    pub(super) to_add: Vec<(ParticipantKey, String)>,
    pub(super) to_remove: Vec<Mid>,
    /// The client's subscriber ICE credentials (ufrag, pwd) from its last accepted answer.
    pub(super) remote_ice: Option<(String, String)>,
    /// The next offer restarts ICE (the client changed its credentials on its own).
    pub(super) restart_ice: bool,
    /// v1: the m-lines the client receives on, from its last offer ([`super::single_pc`]).
    pub(super) slots: Vec<(Mid, MediaKind)>,
    /// v1: the msid each slot in use was answered with.
    pub(super) msids: HashMap<Mid, String>,
    /// v1: the client was asked to offer (or has yet to make its first offer).
    pub(super) offer_awaited: bool,
}

/// Our one outstanding subscriber offer.
pub(super) struct PendingOffer {
    id: u32,
    offer: SdpPendingOffer,
    restarts_ice: bool,
    /// The offer as sent, to send again when the client resumes before answering.
    sent: proto::SessionDescription,
}

impl Sfu {
    pub(super) fn handle_publisher_offer(
        &mut self,
        key: ParticipantKey,
        offer: proto::SessionDescription,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.media.is_single() {
            return self.answer_single_pc_offer(key, offer);
        }
        let parsed = match SdpOffer::from_sdp_string(&offer.sdp) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(identity = p.identity, %error, "unparsable publisher offer");
                return self.fail(key, "unparsable offer");
            }
        };
        let answer = guard(|| p.media.uplink_mut().sdp_api().accept_offer(parsed));
        match answer {
            Some(Ok(answer)) => {
                let mid_to_track_id = p.mid_to_track_id();
                let uplink = p.media.uplink_pc();
                p.media.peer_mut(uplink).first_mid = super::media::first_mid(&offer.sdp);
                let message = signal_response::Message::Answer(proto::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.to_sdp_string(),
                    id: offer.id,
                    mid_to_track_id,
                });
                self.signal(key, message);
                self.mark_uplink(key);
            }
            Some(Err(error)) => {
                tracing::debug!(identity = p.identity, %error, "publisher offer refused");
                self.fail(key, "offer refused");
            }
            None => self.fail(key, "panic while accepting an offer"),
        }
    }

    pub(super) fn handle_subscriber_answer(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        answer: proto::SessionDescription,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let Some(pending) = p.negotiation.pending.take() else {
            tracing::debug!(
                identity = p.identity,
                "subscriber answer without an offer; ignored"
            );
            return;
        };
        if answer.id != 0 && answer.id != pending.id {
            tracing::debug!(
                identity = p.identity,
                got = answer.id,
                want = pending.id,
                "stale subscriber answer; ignored"
            );
            p.negotiation.pending = Some(pending);
            return;
        }
        let mut sdp = answer.sdp;
        let creds = ice_credentials(&sdp);
        let mut resync_ice = false;
        if let (Some(known), Some(got)) = (&p.negotiation.remote_ice, &creds)
            && known != got
            && !pending.restarts_ice
        {
            // The client changed its ICE credentials in an answer to an offer that did not
            // restart ICE. JSEP forbids it and str0m refuses it ("Ice restart in answer without
            // one in the preceeding offer"); dropping the subscriber for it cost participants
            // in big rooms. The client has applied our offer, so we take the answer's media
            // changes with the credentials str0m knows, then resync ICE with a restart offer of
            // our own, which the client answers with its current credentials.
            tracing::debug!(
                identity = p.identity,
                "subscriber answer changed ICE credentials; restarting ICE"
            );
            sdp = with_ice_credentials(&sdp, known);
            resync_ice = true;
        }
        let parsed = match SdpAnswer::from_sdp_string(&sdp) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::debug!(identity = p.identity, %error, "unparsable subscriber answer");
                return self.fail(key, "unparsable answer");
            }
        };
        let PendingOffer { offer, .. } = pending;
        match guard(|| {
            p.media
                .downlink_mut()
                .sdp_api()
                .accept_answer(offer, parsed)
        }) {
            Some(Ok(())) => {
                if resync_ice {
                    p.negotiation.restart_ice = true;
                } else {
                    p.negotiation.remote_ice = creds;
                }
                self.mark_downlink(key);
                // New subscriptions start at a keyframe.
                self.negotiate_subscriber(now, key);
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "subscriber answer refused");
                self.fail(key, "answer refused");
            }
            None => self.fail(key, "panic while accepting an answer"),
        }
    }

    /// After a resume: the connection we offer restarts ICE (new credentials, so a client
    /// that moved networks reconnects). An offer the client may never have received is sent
    /// again first; the restart follows its answer.
    pub(super) fn restart_subscriber_ice(&mut self, key: ParticipantKey) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if p.media.is_single() {
            // v1: we never offer; the client restarts ICE in its own next offer.
            return;
        }
        p.negotiation.restart_ice = true;
        if let Some(sent) = p.negotiation.pending.as_ref().map(|o| o.sent.clone()) {
            self.signal(key, signal_response::Message::Offer(sent));
        }
    }

    pub(super) fn handle_trickle(&mut self, key: ParticipantKey, trickle: proto::TrickleRequest) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        #[derive(serde::Deserialize)]
        struct CandidateInit {
            candidate: String,
        }
        let Ok(init) = serde_json::from_str::<CandidateInit>(&trickle.candidate_init) else {
            return;
        };
        let line = init.candidate.trim();
        if line.is_empty() || line.contains(".local ") {
            // End of candidates, or an mDNS name we cannot resolve (ICE-lite: not needed).
            return;
        }
        let Ok(candidate) = Candidate::from_sdp_string(line) else {
            tracing::debug!(candidate = line, "unparsable remote candidate; ignored");
            return;
        };
        let pc = p.media.for_target(trickle.target);
        let peer = p.media.peer_mut(pc);
        if guard(|| peer.rtc.add_remote_candidate(candidate)).is_none() {
            return self.fail(key, "panic on a remote candidate");
        }
        self.mark(key, pc);
    }

    pub(super) fn handle_subscription(
        &mut self,
        now: Instant,
        key: ParticipantKey,
        update: proto::UpdateSubscription,
    ) {
        let mut sids = update.track_sids.clone();
        for pt in &update.participant_tracks {
            sids.extend(pt.track_sids.iter().cloned());
        }
        for sid in sids {
            if update.subscribe {
                self.subscribe(key, &sid);
            } else {
                self.unsubscribe(key, &sid);
            }
        }
        self.negotiate_subscriber(now, key);
    }

    pub(super) fn subscribe(&mut self, key: ParticipantKey, track_sid: &str) {
        let Some(room) = self.participants.get(&key).map(|p| p.room.clone()) else {
            return;
        };
        let publisher = self.rooms.get(&room).and_then(|r| {
            r.members.iter().copied().find(|c| {
                *c != key
                    && self.participants.get(c).is_some_and(|p| {
                        p.tracks
                            .iter()
                            .any(|t| t.info.sid == track_sid && t.mid.is_some())
                    })
            })
        });
        let Some(publisher) = publisher else {
            return;
        };
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if !p.permission.can_subscribe
            || p.subs.iter().any(|s| s.track_sid == track_sid)
            || p.negotiation.to_add.iter().any(|(_, s)| s == track_sid)
        {
            return;
        }
        p.negotiation.to_add.push((publisher, track_sid.to_owned()));
    }

    pub(super) fn unsubscribe(&mut self, key: ParticipantKey, track_sid: &str) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        p.negotiation.to_add.retain(|(_, s)| s != track_sid);
        p.unsubscribe_where(|s| s.track_sid == track_sid);
    }

    /// Sends the next subscriber offer if something changed and no offer is outstanding (str0m
    /// allows one pending offer; later changes wait for the answer).
    pub(super) fn negotiate_subscriber(&mut self, _now: Instant, key: ParticipantKey) {
        if self
            .participants
            .get(&key)
            .is_some_and(|p| p.media.is_single())
        {
            return self.negotiate_single_pc(key);
        }
        let mut tracks: Vec<(ParticipantKey, String, String, bool, bool)> = Vec::new();
        {
            let Some(p) = self.participants.get(&key) else {
                return;
            };
            let n = &p.negotiation;
            if n.pending.is_some()
                || (n.channels_created
                    && n.to_add.is_empty()
                    && n.to_remove.is_empty()
                    && !n.restart_ice)
            {
                return;
            }
            for (publisher, sid) in &n.to_add {
                let Some(owner) = self.participants.get(publisher) else {
                    continue;
                };
                if let Some(track) = owner.tracks.iter().find(|t| &t.info.sid == sid) {
                    tracks.push((
                        *publisher,
                        owner.sid.clone(),
                        sid.clone(),
                        track.video,
                        track.info.simulcast,
                    ));
                }
            }
        }
        let p = self.participants.get_mut(&key).expect("checked above");
        p.negotiation.to_add.clear();
        let removed = std::mem::take(&mut p.negotiation.to_remove);
        let create_channels = !p.negotiation.channels_created;
        let restart_ice = std::mem::take(&mut p.negotiation.restart_ice);
        let mut added: Vec<Subscription> = Vec::new();
        let mut channels: Vec<(DataKind, ChannelId)> = Vec::new();
        let result = guard(|| {
            let mut api = p.media.downlink_mut().sdp_api();
            if create_channels {
                let reliable = api.add_channel_with_config(ChannelConfig {
                    label: "_reliable".into(),
                    ordered: true,
                    reliability: Reliability::Reliable,
                    ..Default::default()
                });
                let lossy = api.add_channel_with_config(ChannelConfig {
                    label: "_lossy".into(),
                    ordered: false,
                    reliability: Reliability::MaxRetransmits { retransmits: 0 },
                    ..Default::default()
                });
                channels.push((DataKind::Reliable, reliable));
                channels.push((DataKind::Lossy, lossy));
            }
            if restart_ice {
                api.ice_restart(true);
            }
            for mid in &removed {
                api.stop_media(*mid);
            }
            for (publisher, publisher_sid, track_sid, video, simulcast) in &tracks {
                let kind = if *video {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                };
                let mid = api.add_media(
                    kind,
                    Direction::SendOnly,
                    Some(format!("{publisher_sid}|{track_sid}")),
                    Some(track_sid.clone()),
                    None,
                );
                added.push(new_subscription(
                    *publisher, track_sid, mid, *video, *simulcast,
                ));
            }
            api.apply()
        });
        let Some(applied) = result else {
            return self.fail(key, "panic while preparing an offer");
        };
        p.negotiation.channels_created = true;
        for (kind, id) in channels {
            match kind {
                DataKind::Reliable => p.sub_reliable = Some(id),
                _ => p.sub_lossy = Some(id),
            }
        }
        p.subs.extend(added);
        if let Some((offer, pending)) = applied {
            let id = p.negotiation.next_id;
            p.negotiation.next_id += 1;
            let sent = proto::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id,
                mid_to_track_id: p
                    .subs
                    .iter()
                    .map(|s| (s.mid.to_string(), s.track_sid.clone()))
                    .collect(),
            };
            let downlink = p.media.downlink_pc();
            p.media.peer_mut(downlink).first_mid = super::media::first_mid(&sent.sdp);
            p.negotiation.pending = Some(PendingOffer {
                id,
                offer: pending,
                restarts_ice: restart_ice,
                sent: sent.clone(),
            });
            self.signal(key, signal_response::Message::Offer(sent));
        }
        self.mark_downlink(key);
    }
}

/// A subscription to `track_sid` of `publisher`, sent on our m-line `mid`.
pub(super) fn new_subscription(
    publisher: ParticipantKey,
    track_sid: &str,
    mid: Mid,
    video: bool,
    simulcast: bool,
) -> Subscription {
    Subscription {
        track_sid: track_sid.to_owned(),
        publisher,
        mid,
        video,
        // Simulcast starts on the top layer; housekeeping moves to what is live.
        forwarder: Forwarder::new(if simulcast { 2 } else { 0 }),
        wanted: 2,
        disabled: false,
        paused: false,
        pt_map: Vec::new(),
    }
}

impl Participant {
    /// Drops the subscriptions matching `which`; the next offer stops their m-lines.
    pub(super) fn unsubscribe_where(&mut self, which: impl Fn(&Subscription) -> bool) {
        let mids: Vec<Mid> = self
            .subs
            .iter()
            .filter(|s| which(s))
            .map(|s| s.mid)
            .collect();
        self.subs.retain(|s| !which(s));
        self.negotiation.to_remove.extend(mids);
    }

    pub(super) fn mid_to_track_id(&self) -> HashMap<String, String> {
        self.tracks
            .iter()
            .filter_map(|t| t.mid.map(|mid| (mid.to_string(), t.info.sid.clone())))
            .collect()
    }
}

/// The ICE credentials an SDP names, found as str0m finds them: session level first, then the
/// first m-line with both `a=ice-ufrag` and `a=ice-pwd`.
fn ice_credentials(sdp: &str) -> Option<(String, String)> {
    let mut sections: Vec<(Option<&str>, Option<&str>)> = vec![(None, None)];
    for line in sdp.lines().map(str::trim) {
        if line.starts_with("m=") {
            sections.push((None, None));
        }
        let section = sections.last_mut().expect("the session section");
        if let Some(ufrag) = line.strip_prefix("a=ice-ufrag:") {
            section.0.get_or_insert(ufrag);
        } else if let Some(pwd) = line.strip_prefix("a=ice-pwd:") {
            section.1.get_or_insert(pwd);
        }
    }
    sections.into_iter().find_map(|section| match section {
        (Some(ufrag), Some(pwd)) => Some((ufrag.to_owned(), pwd.to_owned())),
        _ => None,
    })
}

/// `sdp` with every `a=ice-ufrag`/`a=ice-pwd` line naming `creds` instead.
fn with_ice_credentials(sdp: &str, creds: &(String, String)) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let ending = &line[line.trim_end().len()..];
        if line.starts_with("a=ice-ufrag:") {
            out.push_str(&format!("a=ice-ufrag:{}{ending}", creds.0));
        } else if line.starts_with("a=ice-pwd:") {
            out.push_str(&format!("a=ice-pwd:{}{ending}", creds.1));
        } else {
            out.push_str(line);
        }
    }
    out
}
