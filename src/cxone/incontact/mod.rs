//! [`IncontactClient`]: the [`ContactCenter`] of the `incontact` dialect of
//! docs/platform-api.md — the API NICE publishes, which a real tenant needs.
//!
//! Calls go through the shared `HttpCore`, as the v2 client's do (retries, budget,
//! tokens, the 401 refresh and circuit, one classification). Answers are read leniently
//! (`wire`): 204 and 304 are empty answers, ids and numbers may be strings, both casings
//! of unavailable codes and both error-body shapes (and the `icStatusDescription`
//! header) are read.
//!
//! What differs from v2 is the platform's shape:
//! - states: only `Available` and `Unavailable` + an unavailable code (`outStateId`) can
//!   be set; a wfmd reason becomes the agent's team's code of the same name, else the one
//!   `[cxone.reason_codes]` names; an unknown reason is refused before the state call,
//!   naming the team's codes. LOGGED_OUT is its own call (202), confirmed by reading the
//!   state until the platform shows it.
//! - the change feed is a delta cursor over `/agents/states` (`lastPollTime` ->
//!   `updatedSince`), starting from a full snapshot, and again after any error.
//! - schedules come from the WFM export, one agent at a time by its `userID`; break
//!   status is derived from them (there is no break-status call).
//!
//! Agents (team, `userID`, time zone) and each team's unavailable codes are cached, and
//! read again when a lookup misses.

mod auth;
mod mapping;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};

use self::auth::AccessKey;
pub(crate) use self::mapping::{
    break_status_from, error_details, reason_for_code, resolve_code, same_name, schedule_from,
};
use self::wire::{flag, instant, number, text};
use super::core::http::{Answer, Call, HttpCore, MAX_PAGES, path_segment};
use super::core::token::TokenCache;
use super::{
    Agent, AgentFilter, AgentSnapshot, Budget, ChangeFeed, ContactCenter, CxoneError, FeedPoll,
    ObservedAgent, Queue, RetryPolicy, Skill, StateChange, SubscriptionRequest,
};
use crate::domain::metrics::{QueueTile, SkillTile};
use crate::domain::{AgentState, BreakStatus, Schedule};

/// The API version used when none is configured.
pub const DEFAULT_API_VERSION: &str = "34.0";
/// The auth host used when none is configured.
pub const DEFAULT_AUTH_BASE: &str = "https://cxone.niceincontact.com";

/// Agents per page asked of `/agents`.
const PAGE: &str = "100";
/// How often the state is read while waiting for a logout to show.
const LOGOUT_CHECK_EVERY: Duration = Duration::from_millis(500);

/// What the client needs to reach one tenant.
#[derive(Clone)]
pub struct IncontactSettings {
    /// Where discovery and the token endpoint live.
    pub auth_base: String,
    pub access_key_id: String,
    pub access_key_secret: SecretString,
    /// The registered application's id and secret (HTTP Basic on the token call).
    pub client_id: String,
    pub client_secret: SecretString,
    /// The tenant id for discovery; `None` reads it from the `id_token`.
    pub tenant_id: Option<String>,
    /// The API host, overriding discovery (`https://api-na1.niceincontact.com`).
    pub base_url: Option<String>,
    /// `34.0`.
    pub api_version: String,
    /// wfmd reason -> unavailable code name or id.
    pub reason_codes: BTreeMap<String, String>,
    /// WFM activity titles that are mandatory breaks.
    pub mandatory_breaks: Vec<String>,
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    /// How long a 202 logout may take to show before the change counts as failed.
    pub logout_confirm: Duration,
}

impl fmt::Debug for IncontactSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncontactSettings")
            .field("auth_base", &self.auth_base)
            .field("access_key_id", &self.access_key_id)
            .field("client_id", &self.client_id)
            .field("tenant_id", &self.tenant_id)
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .finish_non_exhaustive()
    }
}

/// What wfmd keeps of an agent listed by the platform.
#[derive(Debug, Clone)]
struct AgentInfo {
    team_id: Option<String>,
    wfm_user_id: Option<String>,
    time_zone: Option<String>,
}

/// One of a team's unavailable codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableCode {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub acw: bool,
}

/// The `incontact` platform client of one tenant.
pub struct IncontactClient {
    core: HttpCore,
    settings: IncontactSettings,
    agents: Mutex<Arc<HashMap<String, AgentInfo>>>,
    /// Single-flight refresh of `agents`.
    agents_refresh: tokio::sync::Mutex<()>,
    codes: Mutex<HashMap<String, Arc<Vec<UnavailableCode>>>>,
    /// The time schedules are judged at (see [`IncontactClient::with_clock`]).
    clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
}

impl fmt::Debug for IncontactClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncontactClient")
            .field("settings", &self.settings)
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl IncontactClient {
    pub fn new(
        http: reqwest::Client,
        settings: IncontactSettings,
        budget: Arc<Budget>,
    ) -> IncontactClient {
        let tokens = TokenCache::new(AccessKey::new(http.clone(), settings.clone()));
        // Every token names the API base it was discovered for (or the configured one).
        let core = HttpCore::new(
            http,
            String::new(),
            settings.request_timeout,
            settings.retry,
            budget,
            tokens,
            error_details,
        );
        IncontactClient {
            core,
            settings,
            agents: Mutex::default(),
            agents_refresh: tokio::sync::Mutex::new(()),
            codes: Mutex::default(),
            clock: Arc::new(Utc::now),
        }
    }

    /// Judges schedules at `clock` instead of the system time. WFM gives shifts, not a
    /// status, so this client decides which shift and break are current itself (v2's
    /// platform decides at its own clock); a simulator whose clock the test steps
    /// answers consistently only when the client reads the same clock.
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> DateTime<Utc> + Send + Sync + 'static,
    ) -> IncontactClient {
        self.clock = Arc::new(clock);
        self
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// Changes how long calls pause after three 401s in a row (30 s by default).
    pub fn with_circuit_pause(mut self, pause: Duration) -> IncontactClient {
        self.core = self.core.with_circuit_pause(pause);
        self
    }

    /// The API base in use (`{api_endpoint}/inContactAPI/services/v34.0`), discovering
    /// it if needed: for `wfmd doctor`.
    pub async fn api_base(&self) -> Result<String, CxoneError> {
        let token = self.core.tokens.token().await?;
        Ok(token.base_url().unwrap_or_default().to_owned())
    }

    /// The call's answer: its body, or `None` for 204, 304 or an empty body.
    async fn execute(&self, call: &Call<'_>) -> Result<Option<Vec<u8>>, CxoneError> {
        self.core.execute(call).await.map(Answer::content)
    }

    /// Every agent of the tenant, and the cache refreshed from them.
    async fn all_agents(&self) -> Result<Vec<wire::AgentJson>, CxoneError> {
        let mut first = Call::new(Method::GET, "/agents", "agents");
        first.query = vec![("top", PAGE.to_owned()), ("skip", "0".to_owned())];
        let agents = self
            .core
            .all_pages(first, |body, out| {
                let page: wire::AgentsAnswer = wire::parse("agents", body)?;
                out.extend(page.agents);
                Ok(page.links.next)
            })
            .await?;
        let index: HashMap<String, AgentInfo> = agents
            .iter()
            .filter_map(|a| Some((text(&a.agent_id)?, info(a))))
            .collect();
        *self.agents.lock().expect("agent cache poisoned") = Arc::new(index);
        Ok(agents)
    }

    /// What is known of `agent_id`, reading the agents again on a miss.
    async fn agent_info(&self, agent_id: &str) -> Result<AgentInfo, CxoneError> {
        let cached = || {
            self.agents
                .lock()
                .expect("agent cache poisoned")
                .get(agent_id)
                .cloned()
        };
        if let Some(info) = cached() {
            return Ok(info);
        }
        let _one = self.agents_refresh.lock().await;
        if let Some(info) = cached() {
            return Ok(info);
        }
        self.all_agents().await?;
        cached().ok_or_else(|| CxoneError::NotFound {
            message: format!("unknown agent {agent_id}"),
        })
    }

    /// The team's unavailable codes, from the cache unless `fresh`.
    async fn team_codes(
        &self,
        team_id: &str,
        fresh: bool,
    ) -> Result<Arc<Vec<UnavailableCode>>, CxoneError> {
        if !fresh && let Some(codes) = self.codes.lock().expect("codes poisoned").get(team_id) {
            return Ok(codes.clone());
        }
        let path = format!("teams/{}/unavailable-codes", path_segment(team_id)?);
        let mut call = Call::new(Method::GET, "/teams/{teamId}/unavailable-codes", path);
        call.query = vec![("activeOnly", "true".to_owned())];
        let codes: Vec<UnavailableCode> = match self.execute(&call).await? {
            None => Vec::new(),
            Some(body) => {
                let answer: wire::TeamCodesAnswer = wire::parse("unavailable codes", &body)?;
                answer
                    .unavailable_codes
                    .iter()
                    .filter_map(|c| {
                        Some(UnavailableCode {
                            id: text(&c.id)?,
                            name: c.name.clone().unwrap_or_default(),
                            active: flag(&c.is_active).unwrap_or(true),
                            acw: flag(&c.is_acw).unwrap_or(false),
                        })
                    })
                    .collect()
            }
        };
        let codes = Arc::new(codes);
        self.codes
            .lock()
            .expect("codes poisoned")
            .insert(team_id.to_owned(), codes.clone());
        Ok(codes)
    }

    /// Every team's codes, for `wfmd doctor`.
    pub async fn unavailable_codes(
        &self,
        team_id: &str,
    ) -> Result<Vec<UnavailableCode>, CxoneError> {
        Ok(self.team_codes(team_id, true).await?.to_vec())
    }

    /// The teams of the tenant (id, name), for `wfmd doctor`.
    pub async fn teams(&self) -> Result<Vec<(String, String)>, CxoneError> {
        let mut first = Call::new(Method::GET, "/teams", "teams");
        first.query = vec![("top", PAGE.to_owned()), ("skip", "0".to_owned())];
        self.core
            .all_pages(first, |body, out| {
                let page: wire::TeamsAnswer = wire::parse("teams", body)?;
                out.extend(page.teams.iter().filter_map(|t| {
                    Some((text(&t.team_id)?, t.team_name.clone().unwrap_or_default()))
                }));
                Ok(page.links.next)
            })
            .await
    }

    /// The unavailable code for `reason` in `team_id`: the team's code of that name, else
    /// the one `[cxone.reason_codes]` names. The codes are read again once on a miss.
    async fn code_for(&self, team_id: &str, reason: &str) -> Result<UnavailableCode, CxoneError> {
        for fresh in [false, true] {
            let codes = self.team_codes(team_id, fresh).await?;
            if let Some(code) = resolve_code(&codes, reason, &self.settings.reason_codes) {
                return Ok(code.clone());
            }
        }
        let codes = self.team_codes(team_id, false).await?;
        let names: Vec<&str> = codes.iter().map(|c| c.name.as_str()).collect();
        Err(CxoneError::BadRequest {
            message: format!(
                "reason `{reason}` matches no unavailable code of team {team_id} (its codes: {}); \
                 name it in [cxone.reason_codes]",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        })
    }

    /// Every agent's state now (a full read of `/agents/states`).
    async fn all_states(&self) -> Result<Vec<wire::StateJson>, CxoneError> {
        let first = Call::new(Method::GET, "/agents/states", "agents/states");
        self.core
            .all_pages(first, |body, out| {
                let page: wire::StatesAnswer = wire::parse("agent states", body)?;
                out.extend(page.agent_states);
                Ok(page.links.next)
            })
            .await
    }

    /// An observed agent from the platform's state record.
    fn observed(&self, s: &wire::StateJson) -> Option<ObservedAgent> {
        let agent_id = text(&s.agent_id)?;
        let (state, reason) = self.state_of(s);
        Some(ObservedAgent {
            agent_id,
            state,
            queue: (state == AgentState::OnContact)
                .then(|| s.skill_name.clone())
                .flatten(),
            wrap_up_code: reason,
            changed_at: instant(&s.start_date),
        })
    }

    /// wfmd's state and reason for a platform state record (the contract's mapping).
    fn state_of(&self, s: &wire::StateJson) -> (AgentState, Option<String>) {
        if flag(&s.is_acw) == Some(true) {
            return (AgentState::Acw, s.out_state_description.clone());
        }
        let id = number(&s.agent_state_id).map(|n| n as i64).or_else(|| {
            let name = s.agent_state_name.as_deref()?.to_ascii_lowercase();
            Some(match name.as_str() {
                "loggedout" => 0,
                "available" => 1,
                "unavailable" => 2,
                "loggedin" => 8,
                _ => 3,
            })
        });
        match id {
            Some(0) => (AgentState::LoggedOut, None),
            Some(1) => (AgentState::Ready, None),
            Some(2) => {
                let reason = s.out_state_description.as_deref().map(|name| {
                    reason_for_code(
                        name,
                        text(&s.out_state_id).as_deref(),
                        &self.settings.reason_codes,
                    )
                });
                let state = match reason.as_deref() {
                    Some(r) if r == AgentState::Paused.default_reason() => AgentState::Paused,
                    Some(r) if r == AgentState::Idle.default_reason() => AgentState::Idle,
                    _ => AgentState::NotReady,
                };
                (state, reason)
            }
            Some(3..=7) => (AgentState::OnContact, None),
            // 8: logged in, no state yet; anything unknown is not ready as well.
            _ => (AgentState::NotReady, None),
        }
    }

    async fn post_state(
        &self,
        agent_id: &str,
        query: Vec<(&'static str, String)>,
    ) -> Result<(), CxoneError> {
        let path = format!("agents/{}/state", path_segment(agent_id)?);
        let mut call = Call::new(Method::POST, "/agents/{agentId}/state", path);
        call.agent_id = Some(agent_id);
        call.query = query;
        self.execute(&call).await.map(drop)
    }

    /// Logs the agent out (202) and waits until the platform shows it LoggedOut.
    async fn logout(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        let path = format!("agents/{}/logout", path_segment(agent_id)?);
        let mut call = Call::new(Method::POST, "/agents/{agentId}/logout", path);
        call.agent_id = Some(agent_id);
        match self.execute(&call).await {
            Ok(_) => {}
            // No session: the agent is logged out already, which is what was asked.
            Err(e) if e.is_agent_logged_out() => {}
            Err(e) => return Err(e),
        }
        let deadline = tokio::time::Instant::now() + self.settings.logout_confirm;
        loop {
            let snapshot = self.agent_state(agent_id).await?;
            if snapshot.state == AgentState::LoggedOut {
                return Ok(snapshot);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(CxoneError::Decode(format!(
                    "the platform accepted the logout of {agent_id} (202) but still showed it \
                     {} after {:.1}s",
                    snapshot.state,
                    self.settings.logout_confirm.as_secs_f64()
                )));
            }
            tokio::time::sleep(LOGOUT_CHECK_EVERY).await;
        }
    }

    /// The agent's shifts around now, from the WFM export.
    async fn export(
        &self,
        agent_id: &str,
    ) -> Result<(Vec<wire::ShiftJson>, AgentInfo), CxoneError> {
        let info = self.agent_info(agent_id).await?;
        let user = info
            .wfm_user_id
            .clone()
            .ok_or_else(|| CxoneError::NotFound {
                message: format!("agent {agent_id} has no WFM user id (userID)"),
            })?;
        let today = self.now().date_naive();
        let body = serde_json::to_vec(&json!({
            "startDate": (today - TimeDelta::days(1)).format("%Y-%m-%d").to_string(),
            "endDate": (today + TimeDelta::days(1)).format("%Y-%m-%d").to_string(),
            "userID": user,
        }))
        .map_err(|e| CxoneError::Decode(format!("cannot encode the export request: {e}")))?;
        let mut call = Call::new(Method::POST, "/schedules/export", "schedules/export");
        call.agent_id = Some(agent_id);
        call.body = Some(body);
        let shifts = match self.execute(&call).await? {
            None => Vec::new(),
            Some(body) => {
                let answer: wire::ExportAnswer = wire::parse("schedule export", &body)?;
                answer
                    .agent_schedules
                    .into_iter()
                    .flat_map(|s| s.shifts)
                    .collect()
            }
        };
        Ok((shifts, info))
    }
}

fn info(a: &wire::AgentJson) -> AgentInfo {
    AgentInfo {
        team_id: text(&a.team_id),
        wfm_user_id: text(&a.user_id),
        time_zone: a.time_zone.clone(),
    }
}

#[async_trait]
impl ContactCenter for IncontactClient {
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, CxoneError> {
        if filter.skill_id.is_some() {
            return Err(self.not_offered("listing agents by skill"));
        }
        let agents = match &filter.team_id {
            None => self.all_agents().await?,
            Some(team) => {
                let path = format!("teams/{}/agents", path_segment(team)?);
                let call = Call::new(Method::GET, "/teams/{teamId}/agents", path);
                match self.execute(&call).await? {
                    None => Vec::new(),
                    Some(body) => {
                        let answer: wire::TeamAgentsAnswer = wire::parse("team agents", &body)?;
                        answer
                            .teams
                            .into_iter()
                            .flat_map(|t| {
                                let (id, name) = (text(&t.team_id), t.team_name);
                                t.agents.into_iter().map(move |mut a| {
                                    if a.team_id.is_null() {
                                        a.team_id = id.clone().map(Value::from).unwrap_or_default();
                                    }
                                    if a.team_name.is_none() {
                                        a.team_name = name.clone();
                                    }
                                    a
                                })
                            })
                            .collect()
                    }
                }
            }
        };
        Ok(agents
            .iter()
            .filter_map(|a| {
                Some(Agent {
                    id: text(&a.agent_id)?,
                    name: a.name(),
                    team_id: text(&a.team_id),
                    team_name: a.team_name.clone(),
                    skills: Vec::new(),
                })
            })
            .collect())
    }

    async fn agent_state(&self, agent_id: &str) -> Result<AgentSnapshot, CxoneError> {
        let states = self.all_states().await?;
        let found = states
            .iter()
            .find(|s| text(&s.agent_id).as_deref() == Some(agent_id))
            .ok_or_else(|| CxoneError::NotFound {
                message: format!("no state for agent {agent_id}"),
            })?;
        let (state, reason) = self.state_of(found);
        Ok(AgentSnapshot {
            agent_id: agent_id.to_owned(),
            state,
            reason,
            changed_at: instant(&found.start_date),
        })
    }

    async fn set_agent_state(&self, change: StateChange<'_>) -> Result<AgentSnapshot, CxoneError> {
        let (agent_id, state) = (change.agent_id, change.state);
        let reason = change.reason_to_send()?;
        if state == AgentState::LoggedOut {
            return self.logout(agent_id).await;
        }
        if state == AgentState::Ready {
            self.post_state(agent_id, vec![("state", "Available".to_owned())])
                .await?;
        } else {
            let info = self.agent_info(agent_id).await?;
            let team = info
                .team_id
                .as_deref()
                .ok_or_else(|| CxoneError::BadRequest {
                    message: format!("agent {agent_id} has no team, so no unavailable codes"),
                })?;
            let code = self.code_for(team, reason).await?;
            self.post_state(
                agent_id,
                vec![
                    ("state", "Unavailable".to_owned()),
                    ("outStateId", code.id.clone()),
                ],
            )
            .await?;
        }
        // 200 has no body; the change took effect when it was answered.
        Ok(AgentSnapshot {
            agent_id: agent_id.to_owned(),
            state,
            reason: Some(reason.to_owned()),
            changed_at: Some(self.now()),
        })
    }

    async fn schedule(&self, agent_id: &str) -> Result<Schedule, CxoneError> {
        let (shifts, info) = self.export(agent_id).await?;
        Ok(schedule_from(
            &shifts,
            info.time_zone,
            &self.settings.mandatory_breaks,
            self.now(),
        ))
    }

    async fn break_status(&self, agent_id: &str) -> Result<BreakStatus, CxoneError> {
        let schedule = self.schedule(agent_id).await?;
        Ok(break_status_from(&schedule, self.now()))
    }

    fn paused(&self) -> Result<(), CxoneError> {
        self.core.paused()
    }

    #[tracing::instrument(name = "cxone.check_access", skip_all)]
    async fn check_access(&self) -> Result<(), CxoneError> {
        self.core.check_access().await
    }

    async fn open_feed(&self, request: &SubscriptionRequest) -> Result<ChangeFeed, CxoneError> {
        Ok(ChangeFeed::delta("agent-states", request.agent_ids.clone()))
    }

    async fn poll_feed(&self, feed: &mut ChangeFeed) -> Result<FeedPoll, CxoneError> {
        let snapshot = feed.cursor.is_none();
        let mut call = Call::new(Method::GET, "/agents/states", "agents/states");
        call.paced_by_caller = true;
        if let Some(since) = &feed.cursor {
            call.query = vec![("updatedSince", since.clone())];
        }
        let mut agents = Vec::new();
        let mut cursor = feed.cursor.clone();
        let mut pages = 0;
        loop {
            let answer = match self.execute(&call).await {
                Ok(answer) => answer,
                Err(e) => {
                    // Whatever went wrong, the next poll starts from a full snapshot.
                    feed.cursor = None;
                    return Err(e);
                }
            };
            let Some(body) = answer else {
                // 204 or 304: nothing changed since the cursor, which stays.
                break;
            };
            let page: wire::StatesAnswer = match wire::parse("agent states", &body) {
                Ok(page) => page,
                Err(e) => {
                    feed.cursor = None;
                    return Err(e);
                }
            };
            cursor = text(&page.last_poll_time);
            agents.extend(
                page.agent_states
                    .iter()
                    .filter_map(|s| self.observed(s))
                    .filter(|a| feed.watches(&a.agent_id)),
            );
            pages += 1;
            match page.links.next.as_str().filter(|n| !n.is_empty()) {
                Some(next) if pages < MAX_PAGES => {
                    call = Call::get("/agents/states", next.to_owned());
                    call.paced_by_caller = true;
                }
                _ => break,
            }
        }
        if cursor.is_none() {
            tracing::info!(
                "the agent states answer had no lastPollTime; the next poll reads everyone"
            );
        }
        feed.cursor = cursor;
        Ok(FeedPoll { agents, snapshot })
    }

    async fn close_feed(&self, _feed: &ChangeFeed) -> Result<(), CxoneError> {
        // A cursor holds nothing on the platform.
        Ok(())
    }

    async fn list_skills(&self) -> Result<Vec<Skill>, CxoneError> {
        let call = Call::new(Method::GET, "/skills", "skills");
        let Some(body) = self.execute(&call).await? else {
            return Ok(Vec::new());
        };
        let answer: wire::SkillsAnswer = wire::parse("skills", &body)?;
        Ok(answer
            .skills
            .iter()
            .filter_map(|s| {
                Some(Skill {
                    id: text(&s.skill_id)?,
                    name: s.skill_name.clone().unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The platform has no queue objects: its queues are the skills.
    async fn list_queues(&self) -> Result<Vec<Queue>, CxoneError> {
        Ok(self
            .list_skills()
            .await?
            .into_iter()
            .map(|s| Queue {
                id: s.id,
                name: s.name,
            })
            .collect())
    }

    async fn skill_activity(&self, skill_ids: &[String]) -> Result<Vec<SkillTile>, CxoneError> {
        let call = Call::new(Method::GET, "/skills/activity", "skills/activity");
        let Some(body) = self.execute(&call).await? else {
            return Ok(Vec::new());
        };
        let answer: wire::SkillActivityAnswer = wire::parse("skill activity", &body)?;
        let now = Utc::now();
        let sampled_at = instant(&answer.last_poll_time).unwrap_or(now);
        Ok(answer
            .skill_activity
            .iter()
            .filter_map(|s| s.tile(sampled_at))
            .filter(|tile| skill_ids.is_empty() || skill_ids.contains(&tile.skill_id))
            .collect())
    }

    /// The platform's queues are its skills (see [`ContactCenter::list_queues`]), so a
    /// queue tile is its skill's activity: contacts waiting, agents logged in, available
    /// and working, the service level. It reports no average wait (`None`); the skill
    /// tile has the longest.
    async fn queue_stats(&self, queue_ids: &[String]) -> Result<Vec<QueueTile>, CxoneError> {
        if queue_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .skill_activity(queue_ids)
            .await?
            .into_iter()
            .map(|skill| QueueTile {
                queue_id: skill.skill_id,
                name: skill.skill_name,
                agents_logged_on: skill.agents_staffed,
                agents_available: skill.agents_available,
                agents_busy: skill.agents_on_contact + skill.agents_acw,
                contacts_waiting: skill.contacts_queued,
                average_wait_ms: None,
                service_level: skill.service_level,
                sampled_at: skill.sampled_at,
            })
            .collect())
    }

    fn dialect(&self) -> &'static str {
        "incontact"
    }
}

#[cfg(test)]
mod tests;
