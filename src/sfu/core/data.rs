//! Data: `DataPacket`s from a participant's publisher data channels, stamped with the sender
//! and written to the others' subscriber channels of the same kind.

use livekit_protocol as proto;
use str0m::channel::{ChannelData, ChannelId};

use super::media::Pc;
use super::{ParticipantKey, Sfu, guard};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DataKind {
    Reliable,
    Lossy,
    Other,
}

impl Sfu {
    /// A data channel opened; on the publisher connection, its label says what it carries.
    pub(super) fn channel_opened(
        &mut self,
        key: ParticipantKey,
        pc: Pc,
        id: ChannelId,
        label: &str,
    ) {
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        let kind = match label {
            "_reliable" => DataKind::Reliable,
            "_lossy" => DataKind::Lossy,
            _ => DataKind::Other,
        };
        if p.media.is_uplink(pc) {
            p.pub_channels.insert(id, kind);
        }
        // v1: we send on the client's own channels (both SDKs read them too).
        if p.media.is_single() {
            match kind {
                DataKind::Reliable => p.sub_reliable = Some(id),
                DataKind::Lossy => p.sub_lossy = Some(id),
                DataKind::Other => {}
            }
        }
    }

    /// Data on one of the publisher connection's channels.
    pub(super) fn channel_data(&mut self, key: ParticipantKey, data: ChannelData) {
        let kind = self
            .participants
            .get(&key)
            .and_then(|p| p.pub_channels.get(&data.id).copied())
            .unwrap_or(DataKind::Other);
        if data.binary && kind != DataKind::Other {
            self.relay_data(key, kind, &data.data);
        }
    }

    /// Relays a `DataPacket` from `key`'s publisher channel to the others' subscriber channels,
    /// with the sender stamped by us (clients trust these fields for attribution and E2EE keys).
    pub(super) fn relay_data(&mut self, key: ParticipantKey, kind: DataKind, bytes: &[u8]) {
        use prost::Message as _;
        let Some(p) = self.participants.get_mut(&key) else {
            return;
        };
        if !p.permission.can_publish_data {
            return;
        }
        let Ok(mut packet) = proto::DataPacket::decode(bytes) else {
            tracing::debug!(identity = p.identity, "undecodable data packet; dropped");
            return;
        };
        if matches!(packet.value, Some(proto::data_packet::Value::Metrics(_))) {
            return;
        }
        if kind == DataKind::Reliable && packet.sequence > 0 {
            if packet.sequence <= p.last_data_sequence {
                return;
            }
            p.last_data_sequence = packet.sequence;
        }
        packet.participant_sid = p.sid.clone();
        packet.participant_identity = if p.permission.hidden {
            String::new()
        } else {
            p.identity.clone()
        };
        packet.kind = match kind {
            DataKind::Lossy => proto::data_packet::Kind::Lossy as i32,
            _ => proto::data_packet::Kind::Reliable as i32,
        };
        if let Some(proto::data_packet::Value::User(user)) = &mut packet.value {
            user.participant_sid = packet.participant_sid.clone();
            user.participant_identity = packet.participant_identity.clone();
            if packet.destination_identities.is_empty() {
                packet.destination_identities = user.destination_identities.clone();
            } else {
                user.destination_identities = packet.destination_identities.clone();
            }
        }
        let destinations = packet.destination_identities.clone();
        let encoded = packet.encode_to_vec();
        let room = p.room.clone();
        let members = self.members(&room);
        for other in members.into_iter().filter(|c| *c != key) {
            let Some(s) = self.participants.get_mut(&other) else {
                continue;
            };
            if !destinations.is_empty() && !destinations.contains(&s.identity) {
                continue;
            }
            let channel = match kind {
                DataKind::Lossy => s.sub_lossy,
                _ => s.sub_reliable,
            };
            let Some(id) = channel else {
                continue;
            };
            let sent = guard(|| match s.media.downlink_mut().channel(id) {
                Some(mut channel) => channel.write(true, &encoded).is_ok(),
                None => false,
            });
            match sent {
                Some(true) => self.mark_downlink(other),
                Some(false) => tracing::debug!(
                    identity = s.identity,
                    "data channel not open; packet dropped"
                ),
                None => self.fail(other, "panic while writing data"),
            }
        }
    }
}
