//! Delegated delayed leave events (MSC4140), as lk-jwt-service's delayedEventManager: a
//! full-access user hands rtcbox the id of its delayed "leave" membership event; rtcbox keeps
//! the event from firing while the participant is in the SFU room (`restart`) and fires it
//! (`send`) when the participant leaves or its session times out.
//!
//! [`schedule`] decides when (sans-IO); [`DelayedLeaves::run`] is the one task doing the IO:
//! the homeserver requests (through [`FederationClient`], under the same address policy as the
//! OpenID check), the SFU's presence events, and the `delayed_leaves` table.
//!
//! Restart-safe: a delegation is stored before it is accepted and deleted when it ends. At start
//! every stored delegation waits [`schedule::resume_grace`] for its participant to reconnect
//! (the SFU starts empty) and otherwise sends the leave.
//!
//! The delay id authorises restarting and sending the event on its own: it is a [`Secret`], never
//! logged.

pub mod schedule;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::SqlitePool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;

use self::schedule::{Outcome, Schedule};
use crate::db::delayed_leaves::{self, StoredLeave};
use crate::matrix::{
    AddressPolicy, ClientApiUrl, DelayedEventAction, DelayedEventAnswer, FederationClient,
};
use crate::secret::Secret;
use crate::sfu::{PresenceEvent, SfuHandle};

/// A delegation the authorization service accepted (OpenID checked, full access).
#[derive(Clone, Debug)]
pub struct Delegation {
    /// The LiveKit room name (alias) and participant identity the token endpoints derive.
    pub room: String,
    pub identity: String,
    pub delay_id: Secret,
    pub delay_timeout: Duration,
    /// The user's homeserver and the address policy its requests run under.
    pub server_name: String,
    pub policy: AddressPolicy,
}

/// Why a delegation was not taken.
#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    #[error("the homeserver's client-server API cannot be resolved: {0}")]
    Unresolvable(String),
    #[error("the delegation cannot be stored: {0}")]
    Storage(String),
    #[error("the delayed-leave task has stopped")]
    ShuttingDown,
}

/// Takes delegations; the real one is [`DelayedLeavesHandle`], tests use a recording one.
pub trait DelegateLeave: Send + Sync {
    fn delegate(
        &self,
        delegation: Delegation,
    ) -> Pin<Box<dyn Future<Output = Result<(), DelegationError>> + Send + '_>>;
}

/// The authorization service's way to the task.
#[derive(Clone)]
pub struct DelayedLeavesHandle {
    commands: mpsc::Sender<Command>,
    federation: Arc<FederationClient>,
}

impl DelegateLeave for DelayedLeavesHandle {
    fn delegate(
        &self,
        delegation: Delegation,
    ) -> Pin<Box<dyn Future<Output = Result<(), DelegationError>> + Send + '_>> {
        Box::pin(async move {
            let api = self
                .federation
                .client_api(&delegation.server_name, delegation.policy)
                .await
                .map_err(|e| DelegationError::Unresolvable(e.to_string()))?;
            let (reply, answer) = oneshot::channel();
            self.commands
                .send(Command::Add {
                    delegation,
                    api,
                    reply,
                })
                .await
                .map_err(|_| DelegationError::ShuttingDown)?;
            answer.await.map_err(|_| DelegationError::ShuttingDown)?
        })
    }
}

enum Command {
    Add {
        delegation: Delegation,
        api: ClientApiUrl,
        reply: oneshot::Sender<Result<(), DelegationError>>,
    },
}

/// Computes the address policy for a homeserver (as the OpenID check does), for resumed rows.
pub type PolicyFor = Box<dyn Fn(&str) -> AddressPolicy + Send + Sync>;

/// The task's state: every live delegation, keyed by room and identity.
pub struct DelayedLeaves {
    pool: SqlitePool,
    federation: Arc<FederationClient>,
    sfu: SfuHandle,
    presence: broadcast::Receiver<PresenceEvent>,
    commands: mpsc::Receiver<Command>,
    policy_for: PolicyFor,
    jobs: HashMap<Key, Job>,
    next_generation: u64,
    requests: JoinSet<Answered>,
}

type Key = (String, String);

struct Job {
    generation: u64,
    schedule: Schedule,
    delay_id: Secret,
    api: ClientApiUrl,
    policy: AddressPolicy,
}

struct Answered {
    key: Key,
    generation: u64,
    action: DelayedEventAction,
    answer: Option<DelayedEventAnswer>,
}

impl DelayedLeaves {
    /// The task (to be run with [`DelayedLeaves::run`]) and the handle for the auth service.
    /// Subscribes to the SFU's presence events at once, so none is missed.
    pub fn new(
        pool: SqlitePool,
        federation: Arc<FederationClient>,
        sfu: SfuHandle,
        policy_for: PolicyFor,
    ) -> (DelayedLeaves, DelayedLeavesHandle) {
        let (tx, rx) = mpsc::channel(256);
        let presence = sfu.subscribe_presence();
        let handle = DelayedLeavesHandle {
            commands: tx,
            federation: federation.clone(),
        };
        let task = DelayedLeaves {
            pool,
            federation,
            sfu,
            presence,
            commands: rx,
            policy_for,
            jobs: HashMap::new(),
            next_generation: 0,
            requests: JoinSet::new(),
        };
        (task, handle)
    }

    /// Resumes the stored delegations, then serves until `shutdown` completes, every handle is
    /// dropped or the SFU stops. Stopping sends nothing: the delegations stay stored, and the
    /// next start resumes them.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        self.resume().await;
        loop {
            self.start_due_requests(Instant::now());
            self.finish_ended().await;
            let next = self
                .jobs
                .values()
                .filter_map(|job| job.schedule.poll_timeout())
                .min();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                command = self.commands.recv() => match command {
                    Some(Command::Add { delegation, api, reply }) => {
                        let _ = reply.send(self.add(delegation, api).await);
                    }
                    None => break,
                },
                event = self.presence.recv() => match event {
                    Ok(PresenceEvent::Joined { room, identity }) => {
                        if let Some(job) = self.jobs.get_mut(&(room, identity)) {
                            job.schedule.joined(Instant::now());
                        }
                    }
                    Ok(PresenceEvent::Left { room, identity }) => {
                        self.check_presence((room, identity)).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed SFU presence events; asking the SFU");
                        let keys: Vec<Key> = self.jobs.keys().cloned().collect();
                        for key in keys {
                            self.check_presence(key).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(done) = self.requests.join_next(), if !self.requests.is_empty() => {
                    if let Ok(answered) = done {
                        self.answered(answered);
                    }
                }
                _ = sleep => {}
            }
        }
        tracing::debug!("delayed-leave task stopped");
    }

    async fn resume(&mut self) {
        let stored = match delayed_leaves::all(&self.pool).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(%error, "cannot read the delegated delayed leave events");
                return;
            }
        };
        let now = Instant::now();
        for row in stored {
            let api = match ClientApiUrl::parse(&row.client_api_url) {
                Ok(api) => api,
                Err(error) => {
                    tracing::warn!(room = row.room, identity = row.identity, %error, "dropping a stored delayed leave");
                    let _ =
                        delayed_leaves::delete(&self.pool, &row.room, &row.identity, &row.delay_id)
                            .await;
                    continue;
                }
            };
            let timeout = Duration::from_millis(row.delay_timeout_ms.max(1) as u64);
            tracing::info!(
                room = row.room,
                identity = row.identity,
                "resuming a delegated delayed leave; sent unless the participant returns"
            );
            let job = Job {
                generation: self.generation(),
                schedule: Schedule::resumed(now, timeout),
                delay_id: row.delay_id,
                policy: (self.policy_for)(&row.server_name),
                api,
            };
            self.jobs.insert((row.room, row.identity), job);
        }
    }

    async fn add(
        &mut self,
        delegation: Delegation,
        api: ClientApiUrl,
    ) -> Result<(), DelegationError> {
        let row = StoredLeave {
            room: delegation.room.clone(),
            identity: delegation.identity.clone(),
            delay_id: delegation.delay_id.clone(),
            delay_timeout_ms: delegation.delay_timeout.as_millis().min(i64::MAX as u128) as i64,
            client_api_url: api.as_string(),
            server_name: delegation.server_name.clone(),
            created_at: crate::db::unix_now(),
        };
        delayed_leaves::store(&self.pool, &row)
            .await
            .map_err(|e| DelegationError::Storage(e.to_string()))?;
        let present = self
            .sfu
            .is_present(delegation.room.clone(), delegation.identity.clone())
            .await
            .map_err(|_| DelegationError::ShuttingDown)?;
        tracing::info!(
            room = delegation.room,
            identity = delegation.identity,
            delay_timeout_ms = row.delay_timeout_ms,
            client_api = row.client_api_url,
            present,
            "delayed leave delegated"
        );
        let job = Job {
            generation: self.generation(),
            schedule: Schedule::new(Instant::now(), delegation.delay_timeout, present),
            delay_id: delegation.delay_id,
            api,
            policy: delegation.policy,
        };
        // A new delegation replaces the old one; answers to the old one's requests are ignored.
        self.jobs
            .insert((delegation.room, delegation.identity), job);
        Ok(())
    }

    /// A leave event, or lost events: the SFU says whether the participant is still there (a
    /// reconnection under the same identity is not a leave).
    async fn check_presence(&mut self, key: Key) {
        if !self.jobs.contains_key(&key) {
            return;
        }
        let present = self.sfu.is_present(key.0.clone(), key.1.clone()).await;
        let now = Instant::now();
        if let Some(job) = self.jobs.get_mut(&key) {
            match present {
                Ok(true) => job.schedule.joined(now),
                Ok(false) => job.schedule.left(now),
                Err(_) => {}
            }
        }
    }

    fn start_due_requests(&mut self, now: Instant) {
        for (key, job) in &mut self.jobs {
            let Some(action) = job.schedule.poll_action(now) else {
                continue;
            };
            tracing::debug!(
                room = key.0,
                identity = key.1,
                action = action.as_str(),
                "delayed leave request"
            );
            let federation = self.federation.clone();
            let api = job.api.clone();
            let delay_id = job.delay_id.clone();
            let policy = job.policy;
            let (key, generation) = (key.clone(), job.generation);
            self.requests.spawn(async move {
                let answer = match federation.delayed_event(&api, &delay_id, action, policy).await {
                    Ok(answer) => Some(answer),
                    Err(error) => {
                        // The error names host and port, never the path with the delay id.
                        tracing::info!(room = key.0, identity = key.1, action = action.as_str(), %error, "delayed leave request failed");
                        None
                    }
                };
                Answered {
                    key,
                    generation,
                    action,
                    answer,
                }
            });
        }
    }

    fn answered(&mut self, answered: Answered) {
        let Some(job) = self.jobs.get_mut(&answered.key) else {
            return;
        };
        if job.generation != answered.generation {
            return;
        }
        if let Some(answer @ (DelayedEventAnswer::Failed(_) | DelayedEventAnswer::RateLimited(_))) =
            answered.answer
        {
            tracing::info!(
                room = answered.key.0,
                identity = answered.key.1,
                action = answered.action.as_str(),
                ?answer,
                "the homeserver refused a delayed leave request"
            );
        }
        job.schedule
            .answered(Instant::now(), answered.action, answered.answer);
    }

    /// Forgets ended delegations, in memory and in the database.
    async fn finish_ended(&mut self) {
        let ended: Vec<Key> = self
            .jobs
            .iter()
            .filter(|(_, job)| job.schedule.outcome().is_some())
            .map(|(key, _)| key.clone())
            .collect();
        for key in ended {
            let Some(job) = self.jobs.remove(&key) else {
                continue;
            };
            let (room, identity) = (&key.0, &key.1);
            match job.schedule.outcome() {
                Some(Outcome::Sent) => tracing::info!(room, identity, "delayed leave event sent"),
                Some(Outcome::Gone) => tracing::info!(
                    room,
                    identity,
                    "delayed leave event already sent or cancelled"
                ),
                _ => tracing::warn!(
                    room,
                    identity,
                    "giving up on a delayed leave event: the homeserver kept failing"
                ),
            }
            if let Err(error) =
                delayed_leaves::delete(&self.pool, room, identity, &job.delay_id).await
            {
                tracing::warn!(room, identity, %error, "cannot delete an ended delayed leave");
            }
        }
    }

    fn generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }
}
