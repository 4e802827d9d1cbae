//! The Twirp room service backed by the running SFU: each call runs on the SFU task.

use std::time::Duration;

use livekit_protocol as proto;

use super::twirp::{ApiFuture, RoomApi, RoomApiError};
use crate::rooms::{RoomError, RoomOptions};
use crate::sfu::SfuHandle;

/// What an unset CreateRoom timeout means (LiveKit's defaults).
const DEFAULT_EMPTY_TIMEOUT: Duration = Duration::from_secs(300);
const DEFAULT_DEPARTURE_TIMEOUT: Duration = Duration::from_secs(20);

fn gone<T>(_: T) -> RoomApiError {
    RoomApiError::Unavailable("the SFU task has stopped".into())
}

fn room_not_found() -> RoomApiError {
    RoomApiError::NotFound("room not found".into())
}

fn participant_not_found() -> RoomApiError {
    RoomApiError::NotFound("participant not found".into())
}

impl RoomApi for SfuHandle {
    fn create_room(&self, req: proto::CreateRoomRequest) -> ApiFuture<'_, proto::Room> {
        Box::pin(async move {
            let seconds = |value: u32, default: Duration| match value {
                0 => default,
                s => Duration::from_secs(s.into()),
            };
            let options = RoomOptions {
                empty_timeout: seconds(req.empty_timeout, DEFAULT_EMPTY_TIMEOUT),
                departure_timeout: seconds(req.departure_timeout, DEFAULT_DEPARTURE_TIMEOUT),
                max_participants: req.max_participants,
            };
            let metadata = (!req.metadata.is_empty()).then_some(req.metadata);
            let name = req.name;
            let created = self
                .call(move |sfu, now| sfu.create_room(now, &name, options, metadata))
                .await
                .map_err(gone)?;
            match created {
                Ok((_, room)) => Ok(room),
                Err(RoomError::Full) => Err(RoomApiError::ResourceExhausted(
                    "too many rooms on this server".into(),
                )),
                Err(error) => Err(RoomApiError::Unavailable(error.to_string())),
            }
        })
    }

    fn list_rooms(&self, req: proto::ListRoomsRequest) -> ApiFuture<'_, proto::ListRoomsResponse> {
        Box::pin(async move {
            let rooms = self
                .call(move |sfu, _| sfu.list_rooms(&req.names))
                .await
                .map_err(gone)?;
            Ok(proto::ListRoomsResponse { rooms })
        })
    }

    fn delete_room(
        &self,
        req: proto::DeleteRoomRequest,
    ) -> ApiFuture<'_, proto::DeleteRoomResponse> {
        Box::pin(async move {
            let deleted = self
                .call(move |sfu, now| sfu.delete_room(now, &req.room))
                .await
                .map_err(gone)?;
            if deleted {
                Ok(proto::DeleteRoomResponse {})
            } else {
                Err(room_not_found())
            }
        })
    }

    fn list_participants(
        &self,
        req: proto::ListParticipantsRequest,
    ) -> ApiFuture<'_, proto::ListParticipantsResponse> {
        Box::pin(async move {
            let participants = self
                .call(move |sfu, _| sfu.participants_of(&req.room))
                .await
                .map_err(gone)?
                .ok_or_else(room_not_found)?;
            Ok(proto::ListParticipantsResponse { participants })
        })
    }

    fn get_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::ParticipantInfo> {
        Box::pin(async move {
            self.call(move |sfu, _| sfu.participant(&req.room, &req.identity))
                .await
                .map_err(gone)?
                .ok_or_else(participant_not_found)
        })
    }

    fn remove_participant(
        &self,
        req: proto::RoomParticipantIdentity,
    ) -> ApiFuture<'_, proto::RemoveParticipantResponse> {
        Box::pin(async move {
            let removed = self
                .call(move |sfu, now| sfu.remove_by_identity(now, &req.room, &req.identity))
                .await
                .map_err(gone)?;
            if removed {
                Ok(proto::RemoveParticipantResponse {})
            } else {
                Err(participant_not_found())
            }
        })
    }

    fn mute_published_track(
        &self,
        req: proto::MuteRoomTrackRequest,
    ) -> ApiFuture<'_, proto::MuteRoomTrackResponse> {
        Box::pin(async move {
            let track = self
                .call(move |sfu, now| {
                    sfu.mute_track(now, &req.room, &req.identity, &req.track_sid, req.muted)
                })
                .await
                .map_err(gone)?
                .ok_or_else(|| RoomApiError::NotFound("track not found".into()))?;
            Ok(proto::MuteRoomTrackResponse { track: Some(track) })
        })
    }
}
