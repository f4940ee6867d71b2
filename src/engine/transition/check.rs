//! The compliance check before a change: the schedule from the book while it is fresh,
//! else from the platform (with break status where needed), and the policy's verdict.

use super::*;

impl TransitionEngine {
    /// The compliance check [`TransitionEngine::change`] runs before it changes
    /// anything, on its own: nothing is sent, changed or recorded (`wfmd rules dry-run`
    /// asks it which agents a firing would have rejected). `Ok(Ok(()))` when the change
    /// is allowed now, `Ok(Err(_))` with the violation when it is not, `Err(_)` when the
    /// platform could not say. Uses (and fills) the same schedule cache.
    pub async fn preflight(
        &self,
        agent_id: &str,
        target: AgentState,
    ) -> Result<Result<(), Violation>, CheckError> {
        self.check(agent_id, target)
            .await
            .map(|(verdict, _)| verdict)
    }

    /// [`TransitionEngine::preflight`], saying what the schedule was checked against.
    ///
    /// A schedule or break-status lookup the platform refuses (403: no WFM permission)
    /// is [`CheckError::ScheduleRefused`], or with `without_schedule = "allow"` lets the
    /// change go ahead unchecked; any other failure is the platform's.
    pub(super) async fn check(
        &self,
        agent_id: &str,
        target: AgentState,
    ) -> Result<Checked, CheckError> {
        if !policy::needs_schedule(target) {
            return Ok((Ok(()), None));
        }
        let now = self.now();
        let needs_break_status = policy::needs_break_status(target);
        let (schedule, source, break_asked) = match self.book_schedule(agent_id, now).await {
            Some((schedule, age)) => (
                Arc::new(schedule),
                ScheduleSource {
                    from_book: true,
                    age,
                },
                None,
            ),
            None => {
                let (schedule, break_asked) = self.ask_platform(agent_id, needs_break_status).await;
                match schedule {
                    Ok(schedule) => (schedule, ScheduleSource::ASKED, break_asked),
                    Err(error) if refuses_schedules(&error) => {
                        return self.unchecked(error, ScheduleCheck::Unchecked);
                    }
                    Err(error) => return Err(error.into()),
                }
            }
        };
        let in_mandatory_break = if needs_break_status && schedule.is_active() {
            match schedule.mandatory_break_at(now) {
                Some(in_break) => in_break,
                None => {
                    let status = match break_asked {
                        Some(asked) => asked,
                        None => self.break_status(agent_id).await,
                    };
                    match status {
                        Ok(status) => status.required_at(now),
                        Err(error) if refuses_schedules(&error) => {
                            // The shift was checked (the agent is on it); only the break
                            // is not.
                            return self.unchecked(error, ScheduleCheck::BreakUnchecked(source));
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
            }
        } else {
            false
        };
        let verdict = policy::check(target, schedule.is_active(), in_mandatory_break);
        Ok((verdict, Some(ScheduleCheck::Checked(source))))
    }

    /// The answer to a lookup the platform refused: `without_schedule` decides.
    fn unchecked(&self, refusal: CxoneError, what: ScheduleCheck) -> Result<Checked, CheckError> {
        match self.without_schedule {
            WithoutSchedule::Refuse => Err(CheckError::ScheduleRefused(refusal)),
            WithoutSchedule::Allow => {
                tracing::info!(
                    error = %refusal,
                    "the platform refuses schedule lookups; going ahead unchecked \
                     (compliance.without_schedule = allow)"
                );
                Ok((Ok(()), Some(what)))
            }
        }
    }

    /// How many of `agents` the schedule book can decide compliance for now (their
    /// entry is younger than `schedules.max_age`), for duration estimates.
    pub async fn decided_by_book(&self, agents: &[String]) -> usize {
        if self.book_max_age.is_zero() || agents.is_empty() {
            return 0;
        }
        let max_age =
            chrono::TimeDelta::from_std(self.book_max_age).unwrap_or(chrono::TimeDelta::MAX);
        stored_schedules::fetched_since(self.store.reader(), agents, self.now() - max_age)
            .await
            .unwrap_or(0)
    }

    /// The agent's schedule at `now` as the book has it, and its age, when the book's
    /// newest fetch of the agent is younger than `schedules.max_age`. Inside a stored
    /// shift the agent is `ACTIVE`; outside every stored shift `INACTIVE`. Break windows
    /// count only when the schedule itself listed them: the ones learnt from the
    /// break-status endpoint are incomplete, so break status is asked for as before.
    ///
    /// A day off or sick leave entered on the platform after the fetch is learnt when
    /// the entry ages past `max_age`: from then on the platform is asked again.
    async fn book_schedule(
        &self,
        agent_id: &str,
        now: DateTime<Utc>,
    ) -> Option<(Schedule, Duration)> {
        // Imported schedules answer for the agents they cover, at once after an import;
        // the book may hold what it fetched before.
        if self.book_max_age.is_zero() || self.imports.as_ref().is_some_and(|i| i.covers(agent_id))
        {
            return None;
        }
        let shifts: Arc<[StoredShift]> = match self.newest.of(agent_id) {
            Some(shifts) => shifts,
            None => stored_schedules::freshest(self.store.reader(), agent_id)
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "cannot read the schedule book"))
                .unwrap_or_default()
                .into(),
        };
        // From here on the book cannot decide only because it lacks the agent, or holds
        // it too old: the book is asked to fetch it first.
        let Some(first) = shifts.first() else {
            self.wanted(agent_id);
            return None;
        };
        let age = (now - first.fetched_at).to_std().unwrap_or(Duration::ZERO);
        if age >= self.book_max_age {
            self.wanted(agent_id);
            return None;
        }
        let covering = shifts
            .iter()
            .find(|s| s.shift.start <= now && now < s.shift.end);
        let schedule = match covering {
            Some(s) => Schedule {
                status: ScheduleStatus::Active,
                timezone: s.timezone.clone(),
                shift_start: Some(s.shift.start),
                shift_end: Some(s.shift.end),
                breaks: (s.breaks_from == BreakSource::Schedule).then(|| s.shift.breaks.clone()),
                activities: s.shift.activities.clone(),
            },
            None => Schedule {
                status: ScheduleStatus::Inactive,
                timezone: first.timezone.clone(),
                shift_start: None,
                shift_end: None,
                breaks: Some(Vec::new()),
                activities: Vec::new(),
            },
        };
        Some((schedule, age))
    }

    /// The schedule lookup for an agent the book cannot decide for, and the
    /// break-status lookup beside it rather than after it when a person waits (the
    /// interactive lane), the target may need it and this tenant's schedules have been
    /// seen to omit breaks: one round trip less, for a request wasted when the schedule
    /// lists the breaks after all or has no shift. Where schedules list breaks (the
    /// real platform's always do) nothing is asked twice; other lanes ask for break
    /// status only when the schedule leaves it open.
    async fn ask_platform(
        &self,
        agent_id: &str,
        needs_break_status: bool,
    ) -> (
        Result<Arc<Schedule>, CxoneError>,
        Option<Result<Arc<BreakStatus>, CxoneError>>,
    ) {
        if needs_break_status
            && self.schedules_omit_breaks.load(Ordering::Relaxed)
            && current_context().lane == Lane::Interactive
        {
            let (schedule, breaks) =
                tokio::join!(self.schedule(agent_id), self.break_status(agent_id));
            (schedule, Some(breaks))
        } else {
            (self.schedule(agent_id).await, None)
        }
    }

    async fn schedule(&self, agent_id: &str) -> Result<Arc<Schedule>, CxoneError> {
        let schedule = self.lookups.schedule(agent_id).await?;
        if schedule.is_active() && schedule.breaks.is_none() {
            self.schedules_omit_breaks.store(true, Ordering::Relaxed);
        }
        Ok(schedule)
    }

    async fn break_status(&self, agent_id: &str) -> Result<Arc<BreakStatus>, CxoneError> {
        self.lookups.break_status(agent_id).await
    }
}
