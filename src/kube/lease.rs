//! Leader election on a coordination.k8s.io/v1 Lease, so that of several scheduler replicas
//! exactly one acts.
//!
//! Every write carries the resourceVersion it read (a replace, never a blind update), so two
//! replicas racing for an expired Lease cannot both win: the API server answers the loser 409.
//! A holder keeps acting only until `renew_deadline` after its last successful renewal, which
//! is shorter than the lease duration the others wait before taking over.

use super::Clock;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use std::sync::{Arc, Mutex};

/// Acquires and renews one Lease for one identity.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration_seconds: i32,
    clock: Arc<dyn Clock>,
    /// Until when this replica may act, from its last successful acquire or renewal.
    leading_until: Mutex<Option<Timestamp>>,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaderElector {
    /// An elector for the Lease `namespace/name`; `duration_seconds` is how long a holder that
    /// stops renewing keeps the Lease.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration_seconds: i32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration_seconds: duration_seconds.max(2),
            clock,
            leading_until: Mutex::new(None),
        }
    }

    /// This replica's holder identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn renew_deadline(&self) -> SignedDuration {
        // Two thirds of the lease: a holder that could not renew stops acting well before
        // another replica may take over.
        SignedDuration::from_millis(i64::from(self.duration_seconds) * 2000 / 3)
    }

    /// Whether this replica may act now (its last acquire or renewal is recent enough).
    pub fn is_leading(&self) -> bool {
        let until = *self
            .leading_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        until.is_some_and(|t| self.clock.now() < t)
    }

    fn set_leading(&self, since: Option<Timestamp>) {
        let until = since.and_then(|t| t.checked_add(self.renew_deadline()).ok());
        *self
            .leading_until
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = until;
    }

    /// Acquires the Lease if it is free or expired, renews it if held: true when this replica
    /// now leads. A lost race (409) is "not leading", not an error.
    pub async fn try_lead(&self) -> Result<bool, kube::Error> {
        let now = self.clock.now();
        let result = self.try_lead_at(now).await;
        match &result {
            Ok(true) => self.set_leading(Some(now)),
            // On an API error the last renewal stays valid until its deadline.
            Ok(false) => self.set_leading(None),
            Err(_) => {}
        }
        result
    }

    async fn try_lead_at(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "acquired the lease (new)");
                    Ok(true)
                }
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder != self.identity {
            let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
                (Some(renewed), Some(seconds)) => renewed
                    .0
                    .checked_add(SignedDuration::from_secs(i64::from(seconds)))
                    .map_or(true, |end| end < now),
                _ => true,
            };
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.duration_seconds);
        // `replace` sends the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                if holder != self.identity {
                    tracing::info!(identity = %self.identity, previous = %holder, lease = %self.name, "acquired the lease");
                }
                Ok(true)
            }
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown) so another replica takes over without waiting.
    pub async fn release(&self) -> Result<(), kube::Error> {
        self.set_leading(None);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
