//! The room registry: which LiveKit rooms exist, with their timeouts.
//!
//! Rooms are created by the authorization service for full-access users (later also by Twirp
//! `CreateRoom` and by auto-create), and the SFU will join participants only to rooms listed here.
//! Sans-IO: every method takes `now`; the caller owns the clock and runs [`RoomRegistry::expire`]
//! periodically.
//!
//! Lifetime, as LiveKit's: a room nobody has joined closes `empty_timeout` after it was created
//! (or last re-requested); a room whose last participant left closes `departure_timeout` after
//! that departure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Limits of the registry itself, so token requests cannot grow it without bound.
pub const MAX_ROOMS: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomOptions {
    pub empty_timeout: Duration,
    pub departure_timeout: Duration,
    /// 0 means unlimited.
    pub max_participants: u32,
}

impl RoomOptions {
    /// What lk-jwt-service asks for when a full-access user requests a token.
    pub const MATRIX_RTC: RoomOptions = RoomOptions {
        empty_timeout: Duration::from_secs(300),
        departure_timeout: Duration::from_secs(20),
        max_participants: 0,
    };

    /// A room created because someone joined it (auto-create on): LiveKit's defaults.
    pub const AUTO_CREATED: RoomOptions = RoomOptions {
        empty_timeout: Duration::from_secs(300),
        departure_timeout: Duration::from_secs(20),
        max_participants: 0,
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    Reused,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    #[error("too many rooms ({MAX_ROOMS})")]
    Full,
    #[error("no such room")]
    NotFound,
    #[error("the SFU is not running")]
    Unavailable,
}

/// A boxed future, so [`RoomDirectory`] can be a trait object.
pub type RoomFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the authorization service needs from whoever owns the rooms: the SFU in production,
/// a bare registry in tests.
pub trait RoomDirectory: Send + Sync {
    fn create<'a>(
        &'a self,
        name: &'a str,
        options: RoomOptions,
    ) -> RoomFuture<'a, Result<CreateOutcome, RoomError>>;
    fn exists<'a>(&'a self, name: &'a str) -> RoomFuture<'a, bool>;
}

impl RoomDirectory for std::sync::Mutex<RoomRegistry> {
    fn create<'a>(
        &'a self,
        name: &'a str,
        options: RoomOptions,
    ) -> RoomFuture<'a, Result<CreateOutcome, RoomError>> {
        let result = self
            .lock()
            .expect("room registry lock")
            .create(name, options, Instant::now());
        Box::pin(std::future::ready(result))
    }

    fn exists<'a>(&'a self, name: &'a str) -> RoomFuture<'a, bool> {
        let exists = self
            .lock()
            .expect("room registry lock")
            .exists(name, Instant::now());
        Box::pin(std::future::ready(exists))
    }
}

#[derive(Clone, Debug)]
struct Room {
    options: RoomOptions,
    /// When the empty-room clock started: creation, a re-request, or the last departure.
    idle_since: Instant,
    participants: u32,
    ever_joined: bool,
}

#[derive(Debug, Default)]
pub struct RoomRegistry {
    rooms: HashMap<String, Room>,
}

impl RoomRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates `name`, or reuses it if it exists (idempotent, like Twirp `CreateRoom`). Reusing an
    /// empty room restarts its empty clock: someone is about to join.
    pub fn create(
        &mut self,
        name: &str,
        options: RoomOptions,
        now: Instant,
    ) -> Result<CreateOutcome, RoomError> {
        self.expire(now);
        if let Some(room) = self.rooms.get_mut(name) {
            if room.participants == 0 {
                room.idle_since = now;
            }
            return Ok(CreateOutcome::Reused);
        }
        if self.rooms.len() >= MAX_ROOMS {
            return Err(RoomError::Full);
        }
        self.rooms.insert(
            name.to_owned(),
            Room {
                options,
                idle_since: now,
                participants: 0,
                ever_joined: false,
            },
        );
        Ok(CreateOutcome::Created)
    }

    /// Whether `name` is listed, timed out or not (until the next [`Self::expire`]).
    pub fn contains(&self, name: &str) -> bool {
        self.rooms.contains_key(name)
    }

    /// Closes `name` now (Twirp `DeleteRoom`).
    pub fn remove(&mut self, name: &str) -> bool {
        self.rooms.remove(name).is_some()
    }

    /// Whether `name` exists and has not timed out.
    pub fn exists(&self, name: &str, now: Instant) -> bool {
        self.rooms.get(name).is_some_and(|room| !room.expired(now))
    }

    pub fn participant_joined(&mut self, name: &str, now: Instant) -> Result<(), RoomError> {
        let room = self
            .rooms
            .get_mut(name)
            .filter(|room| !room.expired(now))
            .ok_or(RoomError::NotFound)?;
        room.participants += 1;
        room.ever_joined = true;
        Ok(())
    }

    pub fn participant_left(&mut self, name: &str, now: Instant) {
        if let Some(room) = self.rooms.get_mut(name) {
            room.participants = room.participants.saturating_sub(1);
            if room.participants == 0 {
                room.idle_since = now;
            }
        }
    }

    /// Removes rooms whose timeout has passed and returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> = self
            .rooms
            .iter()
            .filter(|(_, room)| room.expired(now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            self.rooms.remove(name);
        }
        expired
    }

    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }
}

impl Room {
    fn expired(&self, now: Instant) -> bool {
        if self.participants > 0 {
            return false;
        }
        let timeout = if self.ever_joined {
            self.options.departure_timeout
        } else {
            self.options.empty_timeout
        };
        now.saturating_duration_since(self.idle_since) >= timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn create_is_idempotent() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        assert_eq!(
            rooms.create("r", RoomOptions::MATRIX_RTC, t0),
            Ok(CreateOutcome::Created)
        );
        assert_eq!(
            rooms.create("r", RoomOptions::MATRIX_RTC, t0 + S),
            Ok(CreateOutcome::Reused)
        );
        assert_eq!(rooms.len(), 1);
        assert!(rooms.exists("r", t0 + S));
        assert!(!rooms.exists("other", t0));
    }

    #[test]
    fn an_unjoined_room_closes_after_the_empty_timeout() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        rooms.create("r", RoomOptions::MATRIX_RTC, t0).unwrap();
        assert!(rooms.exists("r", t0 + 299 * S));
        assert!(!rooms.exists("r", t0 + 300 * S));
        assert_eq!(rooms.expire(t0 + 300 * S), ["r"]);
        assert!(rooms.is_empty());
    }

    #[test]
    fn re_requesting_an_empty_room_restarts_its_clock() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        rooms.create("r", RoomOptions::MATRIX_RTC, t0).unwrap();
        rooms
            .create("r", RoomOptions::MATRIX_RTC, t0 + 200 * S)
            .unwrap();
        assert!(rooms.exists("r", t0 + 450 * S));
        assert!(!rooms.exists("r", t0 + 500 * S));
    }

    #[test]
    fn an_occupied_room_stays_and_closes_after_the_departure_timeout() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        rooms.create("r", RoomOptions::MATRIX_RTC, t0).unwrap();
        rooms.participant_joined("r", t0 + S).unwrap();
        rooms.participant_joined("r", t0 + S).unwrap();
        assert!(
            rooms.expire(t0 + 3600 * S).is_empty(),
            "occupied rooms never expire"
        );
        rooms.participant_left("r", t0 + 3600 * S);
        assert!(
            rooms.exists("r", t0 + 3700 * S),
            "one participant is still there"
        );
        rooms.participant_left("r", t0 + 3700 * S);
        assert!(rooms.exists("r", t0 + 3719 * S));
        assert!(!rooms.exists("r", t0 + 3720 * S));
    }

    #[test]
    fn joining_a_missing_or_expired_room_fails() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        assert_eq!(
            rooms.participant_joined("nope", t0),
            Err(RoomError::NotFound)
        );
        rooms.create("r", RoomOptions::MATRIX_RTC, t0).unwrap();
        assert_eq!(
            rooms.participant_joined("r", t0 + 301 * S),
            Err(RoomError::NotFound)
        );
    }

    #[test]
    fn the_registry_is_bounded() {
        let t0 = Instant::now();
        let mut rooms = RoomRegistry::new();
        for i in 0..MAX_ROOMS {
            rooms
                .create(&i.to_string(), RoomOptions::MATRIX_RTC, t0)
                .unwrap();
        }
        assert_eq!(
            rooms.create("one more", RoomOptions::MATRIX_RTC, t0),
            Err(RoomError::Full)
        );
        // Expired rooms make room.
        assert_eq!(
            rooms.create("later", RoomOptions::MATRIX_RTC, t0 + 301 * S),
            Ok(CreateOutcome::Created)
        );
    }
}
