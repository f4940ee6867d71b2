//! What agents do on their own: the contacts they take (queue and wrap-up code), and every
//! state change made on an agent's behalf rather than by a caller.
//!
//! Each agent draws from its own random stream, seeded from (tenant seed, agent index), so
//! what happens to one agent depends neither on the others nor on the order in which the
//! simulator happens to look at them.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::tenant::{ContactDetails, Tenant};

/// Queues a contact can come from.
const QUEUES: [&str; 5] = ["Support-T1", "Support-T2", "Billing", "Sales", "Retention"];
/// Wrap-up codes, `RESOLVED` weighted as the usual outcome.
const WRAP_UP_CODES: [&str; 6] = [
    "RESOLVED",
    "RESOLVED",
    "RESOLVED",
    "ESCALATED",
    "CALLBACK_SCHEDULED",
    "TRANSFERRED",
];

/// Keeps the activity streams apart from the tenant's and the faults' streams.
const ACTIVITY_SALT: u64 = 0xac71_7171_ac71_7171;

/// One agent's private randomness.
struct AgentActivity {
    rng: StdRng,
}

impl AgentActivity {
    fn new(seed: u64, index: usize) -> Self {
        // An odd multiplier spreads neighbouring indices over the whole seed space.
        let mixed = seed ^ ACTIVITY_SALT ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        AgentActivity {
            rng: StdRng::seed_from_u64(mixed),
        }
    }

    fn queue(&mut self) -> String {
        (*QUEUES.choose(&mut self.rng).expect("queues")).to_owned()
    }

    fn wrap_up_code(&mut self) -> String {
        (*WRAP_UP_CODES.choose(&mut self.rng).expect("codes")).to_owned()
    }
}

/// The agents' own behaviour, kept beside the tenant in the simulator state.
pub(crate) struct Activity {
    agents: Vec<AgentActivity>,
    /// Agent id to index (generation order, which is also id order).
    index: HashMap<String, usize>,
}

impl Activity {
    /// Prepares every agent of `tenant` and gives the contacts already in progress a queue.
    pub fn new(seed: u64, tenant: &mut Tenant) -> Self {
        let mut agents = Vec::with_capacity(tenant.agents.len());
        let mut index = HashMap::with_capacity(tenant.agents.len());
        for (i, (id, agent)) in tenant.agents.iter_mut().enumerate() {
            let mut activity = AgentActivity::new(seed, i);
            if agent.state == "ON_CONTACT" {
                let queue = activity.queue();
                agent.queue = Some(queue.clone());
                if let Some(first) = agent.state_log.first_mut() {
                    first.queue = Some(queue);
                }
            }
            agents.push(activity);
            index.insert(id.clone(), i);
        }
        Activity { agents, index }
    }

    /// Changes an agent's state from outside (a caller's POST, or `force_state`) at `at`.
    /// False for an unknown agent.
    pub fn change(
        &mut self,
        tenant: &mut Tenant,
        id: &str,
        state: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> bool {
        let (Some(&i), Some(agent)) = (self.index.get(id), tenant.agents.get_mut(id)) else {
            return false;
        };
        let activity = &mut self.agents[i];
        let contact = match state {
            "ON_CONTACT" => ContactDetails {
                queue: Some(activity.queue()),
                wrap_up_code: None,
            },
            // Wrap-up follows a contact: keep its queue when there was one.
            "ACW" => ContactDetails {
                queue: Some(agent.queue.clone().unwrap_or_else(|| activity.queue())),
                wrap_up_code: Some(activity.wrap_up_code()),
            },
            _ => ContactDetails::default(),
        };
        agent.set_state(state, reason, at, contact);
        true
    }
}
