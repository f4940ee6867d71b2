//! The `incontact` dialect's pure mappings: names, unavailable codes and reasons, error
//! answers, and schedules and break status from WFM shifts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use super::UnavailableCode;
use super::wire::{self, flag, instant};
use crate::cxone::core::classify::ErrorDetails;
use crate::domain::{BreakStatus, BreakWindow, Schedule, ScheduleStatus, TitledSpan};

/// Names compared as the platform's users write them: case and `_`/space do not matter.
pub(crate) fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().replace('_', " ").to_lowercase();
    norm(a) == norm(b)
}

/// The code for `reason`: the team's active code of that name, else the configured one
/// (a name or an id) among the team's codes.
pub(crate) fn resolve_code<'a>(
    codes: &'a [UnavailableCode],
    reason: &str,
    configured: &BTreeMap<String, String>,
) -> Option<&'a UnavailableCode> {
    let active = || codes.iter().filter(|c| c.active);
    // A code another reason is mapped to is that reason's alone, even when its name is
    // this reason's: otherwise it would read back as the other reason.
    let claimed = |c: &UnavailableCode| {
        configured.iter().any(|(r, wanted)| {
            !same_name(r, reason) && (c.id == *wanted || same_name(&c.name, wanted))
        })
    };
    if let Some(code) = active().find(|c| same_name(&c.name, reason) && !claimed(c)) {
        return Some(code);
    }
    let wanted = configured
        .iter()
        .find(|(r, _)| r.eq_ignore_ascii_case(reason))
        .map(|(_, code)| code)?;
    active().find(|c| c.id == *wanted || same_name(&c.name, wanted))
}

/// The wfmd reason a code stands for: the configured reason mapped to it, else its name
/// upper-cased with `_` for spaces (`System Idle` -> `SYSTEM_IDLE`).
pub(crate) fn reason_for_code(
    name: &str,
    id: Option<&str>,
    configured: &BTreeMap<String, String>,
) -> String {
    configured
        .iter()
        .find(|(_, code)| Some(code.as_str()) == id || same_name(code, name))
        .map(|(reason, _)| reason.to_uppercase())
        .unwrap_or_else(|| name.trim().to_uppercase().replace(' ', "_"))
}

/// A body that is neither JSON nor markup, as its first line (at most 200 characters):
/// some gateways answer errors in plain text, which still says more than nothing.
fn plain_text(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let line = text.trim().lines().next()?.trim();
    if line.is_empty() || line.starts_with(['{', '[', '<']) {
        return None;
    }
    Some(line.chars().take(200).collect())
}

/// What an `incontact` error answer says: either body shape, else the
/// `icStatusDescription` header, else a plain-text body. It names no scope.
pub(crate) fn error_details(headers: &HeaderMap, body: &[u8]) -> ErrorDetails {
    let message = wire::ErrorBody::from_body(body)
        .message()
        .or_else(|| {
            headers
                .get("icStatusDescription")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .or_else(|| plain_text(body))
        .unwrap_or_default();
    ErrorDetails {
        message,
        scope: None,
    }
}

/// The schedule at `now` from WFM shifts: ACTIVE inside a shift (that shift), else
/// INACTIVE with the nearer of the last ended and the next shift (as v2 answers an
/// ended shift); breaks are the intervals with `work = false`,
/// mandatory when their title is one of `mandatory`; the intervals with `work = true`
/// and a title are the shifts' titled work activities (`Open`, `Team meeting`, …).
pub(crate) fn schedule_from(
    shifts: &[wire::ShiftJson],
    timezone: Option<String>,
    mandatory: &[String],
    now: DateTime<Utc>,
) -> Schedule {
    let mut windows: Vec<(DateTime<Utc>, DateTime<Utc>, &wire::ShiftJson)> = shifts
        .iter()
        .filter_map(|s| Some((instant(&s.start)?, instant(&s.end)?, s)))
        .filter(|(start, end, _)| start < end)
        .collect();
    windows.sort_by_key(|(start, _, _)| *start);
    let current = windows.iter().find(|(s, e, _)| *s <= now && now < *e);
    let next = windows.iter().find(|(s, _, _)| *s > now);
    let last = windows.iter().rev().find(|(_, e, _)| *e <= now);
    let breaks: Vec<BreakWindow> = shifts
        .iter()
        .flat_map(|s| &s.activity_intervals)
        .filter(|i| flag(&i.work) == Some(false))
        .filter_map(|i| {
            let title = i.activity_code.title.clone().unwrap_or_default();
            Some(BreakWindow {
                start: instant(&i.start)?,
                end: instant(&i.end)?,
                mandatory: mandatory.iter().any(|m| same_name(m, &title)),
                kind: title,
            })
        })
        .collect();
    let activities: Vec<TitledSpan> = shifts
        .iter()
        .flat_map(|s| &s.activity_intervals)
        .filter(|i| flag(&i.work) == Some(true))
        .filter_map(|i| {
            let title = i.activity_code.title.as_deref()?.trim();
            let (start, end) = (instant(&i.start)?, instant(&i.end)?);
            (!title.is_empty() && start < end).then(|| TitledSpan {
                start,
                end,
                title: title.to_owned(),
            })
        })
        .collect();
    let (status, shift) = match (current, next, last) {
        (Some(c), _, _) => (ScheduleStatus::Active, Some(c)),
        // Between shifts, the nearer one: just after a shift its end still matters
        // (logout after shift end), long after it the next one does.
        (None, Some(n), Some(l)) if now - l.1 <= n.0 - now => (ScheduleStatus::Inactive, Some(l)),
        (None, n, l) => (ScheduleStatus::Inactive, n.or(l)),
    };
    Schedule {
        status,
        timezone,
        shift_start: shift.map(|(s, _, _)| *s),
        shift_end: shift.map(|(_, e, _)| *e),
        breaks: Some(breaks),
        activities,
    }
}

/// Break status from a schedule's windows: required inside a mandatory break, else the
/// next mandatory break ahead.
pub(crate) fn break_status_from(schedule: &Schedule, now: DateTime<Utc>) -> BreakStatus {
    let mandatory: Vec<&BreakWindow> = schedule
        .breaks
        .iter()
        .flatten()
        .filter(|b| b.mandatory)
        .collect();
    let current = mandatory.iter().find(|b| b.contains(now));
    let next = mandatory
        .iter()
        .filter(|b| b.start > now)
        .min_by_key(|b| b.start);
    let window = current.or(next);
    BreakStatus {
        mandatory_break_required: current.is_some(),
        break_start: window.map(|b| b.start),
        break_end: window.map(|b| b.end),
    }
}
