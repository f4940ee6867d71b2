//! What each number means: the definitions that travel with every export (#39, item 5).
//!
//! One source of truth for how the figures of the compliance report, of analytics
//! results and of the wallboard are computed, in which unit, in which time zone, and
//! (for adherence) judged by which rules. It is data ([`Definitions`]), rendered per
//! format:
//! - JSON: the `definitions` object of the report and of analytics results;
//! - HTML: a "Definitions" section of footnotes at the end of each page;
//! - CSV: a companion document (`term,label,definition,unit,time_zone`), never comment
//!   lines in the export itself, since strict CSV readers and spreadsheets must read
//!   the export as it is. The HTTP CSV answers point to the companion with a
//!   `Link: <…>; rel="describedby"` header (`GET /v1/reports/definitions`), and
//!   `wfmd report --out F.csv` writes `F.definitions.csv` beside it.
//!
//! The texts say what the code computes today; when a computation changes, its text here
//! changes with it. In particular the compliance report's adherence and analytics'
//! `adherence_pct` are different figures (the report leaves unobserved, neutral and
//! authorised time out of the denominator, analytics divides by all scheduled time), and
//! each is described as it is.

use std::fmt::Write as _;
use std::str::FromStr;

use chrono_tz::Tz;
use html_escape::encode_quoted_attribute as escape;
use serde::Serialize;

use crate::domain::AgentState;
use crate::domain::adherence_rules::Judging;
use crate::domain::metrics::SkillTile;

/// Which export the definitions are of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// `GET /v1/reports/compliance` and `wfmd report compliance`.
    #[default]
    Compliance,
    /// Analytics results (`GET /v1/analytics/queries/{id}/results`).
    Analytics,
    /// The wallboard's tiles, cards and badges.
    Wallboard,
}

impl Subject {
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Compliance => "compliance",
            Subject::Analytics => "analytics",
            Subject::Wallboard => "wallboard",
        }
    }
}

impl FromStr for Subject {
    type Err = String;

    fn from_str(text: &str) -> Result<Subject, String> {
        match text {
            "compliance" => Ok(Subject::Compliance),
            "analytics" => Ok(Subject::Analytics),
            "wallboard" => Ok(Subject::Wallboard),
            other => Err(format!(
                "unknown report `{other}`; expected one of: compliance, analytics, wallboard"
            )),
        }
    }
}

/// The adherence rules that judged the adherence figures.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RulesInForce {
    /// `[[compliance.rules]]` in force; 0: the built-in kinds alone.
    pub rules: usize,
    /// The rule set's version (each exception records it); null without rules.
    pub version: Option<String>,
    /// `compliance.exception_threshold`: the grace of the built-in kinds and of rules
    /// without their own, in seconds.
    pub grace_seconds: f64,
    /// The same in words.
    pub summary: String,
}

impl RulesInForce {
    pub fn of(judging: &Judging) -> RulesInForce {
        let grace_seconds = judging.threshold.num_milliseconds() as f64 / 1000.0;
        let summary = match (judging.rules.len(), &judging.version) {
            (0, _) => format!(
                "no adherence rules: the built-in kinds judge; an exception opens after a \
                 deviation lasts {grace_seconds} s (compliance.exception_threshold)"
            ),
            (n, version) => format!(
                "{n} adherence rule{s}, version {version}: the first rule whose activity and \
                 state match decides, the built-in kinds where none does; an exception opens \
                 after the rule's grace, or {grace_seconds} s (compliance.exception_threshold) \
                 for a rule without one and for the built-in kinds",
                s = if n == 1 { "" } else { "s" },
                version = version.as_deref().unwrap_or("unnamed"),
            ),
        };
        RulesInForce {
            rules: judging.rules.len(),
            version: judging.version.clone(),
            grace_seconds,
            summary,
        }
    }
}

/// One figure: its name in the export, how it is computed, and its unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Term {
    /// The column (CSV), field (JSON) or figure it defines.
    pub term: String,
    /// Its heading in the HTML page or on the wallboard.
    pub label: String,
    pub definition: String,
    /// `percent`, `seconds`, `milliseconds`, `count`, `share (0–1)`, `instant`, …
    pub unit: String,
}

fn term(term: &str, label: &str, unit: &str, definition: impl Into<String>) -> Term {
    Term {
        term: term.to_owned(),
        label: label.to_owned(),
        definition: definition.into(),
        unit: unit.to_owned(),
    }
}

/// A skill's service level as the wallboard colours it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SkillServiceLevel {
    pub skill_id: String,
    pub skill_name: String,
    /// The answer-time threshold of the skill's service level as the platform's skill
    /// data gives it (`serviceLevelThreshold` on the incontact dialect), in seconds;
    /// null: that data does not carry it (the v2 dialect's; the threshold is then the
    /// skill's own setting on the platform, which wfmd cannot read).
    pub threshold_seconds: Option<u32>,
    /// The service level the skill aims at, as a share (0–1), where the platform's
    /// skill data gives it (`serviceLevelGoal`); null otherwise. wfmd colours the tile by
    /// `good` and `warning`, not by it.
    pub goal: Option<f64>,
    /// Green at or above this share (`live.service_level_good`).
    pub good: f64,
    /// Amber at or above this share, red below (`live.service_level_warning`).
    pub warning: f64,
}

/// The definitions of the numbers an export carries.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Definitions {
    /// The export they are of.
    pub of: Subject,
    /// The IANA zone every time of the export is written in (`UTC` unless a `tz` was
    /// asked for).
    pub time_zone: String,
    /// The rules that judged adherence.
    pub adherence_rules: RulesInForce,
    /// Every figure of the export.
    pub terms: Vec<Term>,
    /// The wallboard's skill tiles, each with its service-level threshold (empty for the
    /// other exports, which carry no service level).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub service_levels: Vec<SkillServiceLevel>,
}

/// How the built-in kinds judge, shared by every adherence text.
const BUILTIN_KINDS: &str = "built-in kinds: READY, ON_CONTACT or ACW in a mandatory \
break, any state but LOGGED_OUT outside every shift, and NOT_READY, PAUSED, IDLE or \
LOGGED_OUT in a shift (outside its breaks) are out of adherence; every other state is in";

const IDLE: &str = "Time the agent's recorded state was IDLE, PAUSED or NOT_READY, \
clipped to the window; a state still open counts up to now (or the window's end). \
Recorded states come from wfmd's own changes and from the state sync's reading of the \
platform";

const LATENCY: &str = "per transition attempt requested in the window: milliseconds from \
wfmd taking the request up to knowing its outcome, including the compliance check (which \
may read the schedule and the agent's state), the platform's answer and, for a deferred \
change carried out, reading the state back; a rejected attempt's latency is the check's \
alone. An attempt settled later (after a restart) counts from its request to its settling";

fn zone_name(zone: Option<Tz>) -> String {
    zone.map_or_else(|| "UTC".to_owned(), |z| z.name().to_owned())
}

impl Definitions {
    /// The definitions of `of`'s figures, judged by `judging`'s rules; `terms` is given
    /// the rules in force, which several texts quote. No skill service levels.
    fn new(
        of: Subject,
        time_zone: String,
        judging: &Judging,
        terms: impl FnOnce(&RulesInForce) -> Vec<Term>,
    ) -> Definitions {
        let adherence_rules = RulesInForce::of(judging);
        Definitions {
            of,
            time_zone,
            terms: terms(&adherence_rules),
            adherence_rules,
            service_levels: Vec::new(),
        }
    }

    /// The compliance report's figures.
    pub fn compliance(judging: &Judging, zone: Option<Tz>) -> Definitions {
        let zone_text = zone_name(zone);
        let terms = |rules: &RulesInForce| Self::compliance_terms(rules, &zone_text);
        Definitions::new(Subject::Compliance, zone_text.clone(), judging, terms)
    }

    fn compliance_terms(rules: &RulesInForce, zone_text: &str) -> Vec<Term> {
        let judged = format!(
            "Each second of a shift is judged by the adherence rules in force ({}); a \
             supervisor's authorisation, or excuse of the exception it belongs to, comes \
             before any rule. With no matching rule the {}",
            rules.summary, BUILTIN_KINDS
        );
        let mut terms = vec![
            term(
                "transitions",
                "Transitions",
                "count",
                "Transition attempts (API, CLI, bulk jobs, rules, deferred changes carried out) \
                 requested in the window [from, to)",
            ),
            term(
                "succeeded",
                "Succeeded",
                "count",
                "Attempts the platform made",
            ),
            term(
                "rejections",
                "Rejections",
                "count",
                "Attempts wfmd refused for a compliance violation (AGENT_NOT_SCHEDULED, \
                 MANDATORY_BREAK_VIOLATION, STATE_CONFLICT); each also has its own column",
            ),
            term(
                "rejections_agent_not_scheduled",
                "Rejected: not scheduled",
                "count",
                "Rejections with violation AGENT_NOT_SCHEDULED: the agent was not scheduled to \
                 work then, and only LOGGED_OUT may be set",
            ),
            term(
                "rejections_mandatory_break_violation",
                "Rejected: mandatory break",
                "count",
                "Rejections with violation MANDATORY_BREAK_VIOLATION: the change would have \
                 put READY an agent who owes a mandatory break",
            ),
            term(
                "rejections_state_conflict",
                "Rejected: state conflict",
                "count",
                "Rejections with violation STATE_CONFLICT: the platform refused the change while \
                 the agent was busy (on a contact or in ACW) and it was not deferred",
            ),
            term(
                "failed",
                "Failed",
                "count",
                "Attempts that failed for another reason (the platform refused or did not \
                 answer)",
            ),
            term(
                "violation_frequency",
                "Violation frequency",
                "share (0–1; the HTML page shows percent)",
                "Rejections ÷ transitions; empty without attempts",
            ),
            term(
                "latency_mean_ms",
                "Latency mean (ms)",
                "milliseconds",
                format!("Arithmetic mean of the latency {LATENCY}; empty without attempts"),
            ),
            term(
                "latency_p95_ms",
                "Latency p95 (ms)",
                "milliseconds",
                format!(
                    "Nearest-rank 95th percentile (the ⌈0.95·n⌉-th smallest of n) of the \
                     latency {LATENCY}; empty without attempts"
                ),
            ),
            term(
                "idle_seconds",
                "Idle",
                "seconds (the HTML page shows h:mm:ss)",
                IDLE,
            ),
        ];
        for state in AgentState::ALL {
            let column = format!("seconds_{}", state.as_str().to_ascii_lowercase());
            terms.push(Term {
                label: format!("Time in {}", state.as_str()),
                definition: format!(
                    "Time the agent's recorded state was {}, clipped to the window; a state \
                     still open counts up to now (or the window's end)",
                    state.as_str()
                ),
                unit: "seconds (the HTML page shows h:mm:ss)".to_owned(),
                term: column,
            });
        }
        terms.extend([
            term(
                "adherence_pct",
                "Adherence %",
                "percent (0–100)",
                format!(
                    "In-adherence time ÷ (observed scheduled time − neutral time − authorised \
                     time) × 100. Scheduled time is the time inside the agent's stored shifts, \
                     breaks included; observed, the part of it with a recorded state. A \
                     deviation is out of adherence from its first second: grace only delays \
                     the exception. Empty when nothing is left to judge (no stored shift, or \
                     none of it observed). {judged}"
                ),
            ),
            term(
                "scheduled_seconds",
                "Scheduled",
                "seconds",
                "Time inside the agent's stored shifts in the window, breaks included; empty \
                 when no shift of the agent is stored",
            ),
            term(
                "in_adherence_seconds",
                "In adherence",
                "seconds",
                "Observed scheduled time whose recorded state met the schedule",
            ),
            term(
                "unobserved_seconds",
                "Unobserved",
                "seconds",
                "Scheduled time with no recorded state (before wfmd first saw the agent, or \
                 still to come); left out of adherence_pct",
            ),
            term(
                "neutral_seconds",
                "Neutral",
                "seconds",
                "Observed scheduled time an adherence rule with verdict neutral matched; \
                 counted neither in nor out, left out of adherence_pct",
            ),
            term(
                "authorised_seconds",
                "Authorised",
                "seconds",
                "Observed scheduled time a supervisor authorised (POST \
                 /v1/adherence/authorisations), or that an adherence exception a supervisor \
                 excused covers (POST /v1/adherence/exceptions/{id}/review: from when its \
                 deviation began to when it closed), counted so from the excuse on; neither \
                 in nor out, left out of adherence_pct",
            ),
            term(
                "adherence_exceptions",
                "Adherence exceptions",
                "count",
                format!(
                    "Exceptions that opened in the window: a deviation of one kind that went \
                     on past its grace. {}",
                    rules.summary
                ),
            ),
            term(
                "from",
                "Window",
                "instant (RFC 3339)",
                format!(
                    "The window is [from, to): from included, to excluded; every time of the \
                     report is written in {zone_text}"
                ),
            ),
        ]);
        terms
    }

    /// The figures of analytics results: wfmd's history metrics, the platform's, and the
    /// trend columns. `zone` is the HTML page's; CSV and JSON times are UTC.
    pub fn analytics(judging: &Judging, zone: Option<Tz>) -> Definitions {
        Definitions::new(
            Subject::Analytics,
            zone_name(zone),
            judging,
            Self::analytics_terms,
        )
    }

    fn analytics_terms(rules: &RulesInForce) -> Vec<Term> {
        vec![
            term(
                "bucket",
                "Bucket",
                "instant (RFC 3339, UTC)",
                "Start of the hour, day or week the value is of. Buckets are cut in UTC: days \
                 start at 00:00 UTC and weeks on Monday 00:00 UTC, whatever zone labels the \
                 HTML chart",
            ),
            term(
                "value",
                "Value",
                "the metric's unit",
                "The metric's figure per agent over the bucket (the compliance report's \
                 figures of the agent for that bucket), combined over the series' agents \
                 with the metric's aggregation (sum, avg, min, max, count over the agents \
                 that have a value). Platform metrics are the platform's own, as its \
                 aggregation query returns them",
            ),
            term("idle_seconds", "Idle", "seconds", IDLE),
            term(
                "state_seconds",
                "Time in states",
                "seconds",
                "Time the agent's recorded state was one of the states the query filters on \
                 (filter state=…), clipped to the bucket",
            ),
            term(
                "adherence_pct",
                "Adherence %",
                "percent (0–100)",
                format!(
                    "In-adherence time ÷ scheduled time × 100, per agent and bucket. Unlike \
                     the compliance report's adherence_pct, the denominator is all scheduled \
                     time: unobserved, neutral and authorised time count as not in adherence \
                     here. Empty without scheduled time. In-adherence time is judged as in the \
                     compliance report, by the rules in force when the job ran (a past day's \
                     figure, by those in force when its daily rollup was computed); now: {}",
                    rules.summary
                ),
            ),
            term(
                "exceptions",
                "Adherence exceptions",
                "count",
                format!(
                    "Adherence exceptions that opened in the bucket ({})",
                    rules.summary
                ),
            ),
            term(
                "violations",
                "Violations",
                "count",
                "Transition attempts rejected for a compliance violation, requested in the \
                 bucket",
            ),
            term(
                "transitions",
                "Transitions",
                "count",
                "Transition attempts requested in the bucket",
            ),
            term(
                "latency_p95_ms",
                "Latency p95 (ms)",
                "milliseconds",
                format!(
                    "Nearest-rank 95th percentile of the latency {LATENCY}; a week's is taken \
                     over the week's attempts, not from its days"
                ),
            ),
            term(
                "moving_average",
                "Moving average",
                "the metric's unit",
                "Mean of the window values ending at the point (from the window-th point on)",
            ),
            term(
                "z_score",
                "z-score",
                "spreads",
                "Distance of the value from its baseline, in spreads; past the query's z the \
                 point is an anomaly",
            ),
            term(
                "baseline",
                "Baseline",
                "the metric's unit",
                "The value expected at the point: the median of the window earlier values at \
                 the same place in the season (robust detector), or the mean of the window \
                 points before it (z-score detector, jobs before #34)",
            ),
            term(
                "spread",
                "Spread",
                "the metric's unit",
                "The spread the z-score counts in: the median absolute deviation around the \
                 baseline (robust detector) or the standard deviation (z-score detector)",
            ),
        ]
    }

    /// The wallboard's figures: each skill tile's service level with its threshold, the
    /// adherence badges, the cards' time in state, and the latency shown on rejections.
    pub fn wallboard(
        judging: &Judging,
        skills: &[SkillTile],
        good: f64,
        warning: f64,
    ) -> Definitions {
        let terms = |rules: &RulesInForce| Self::wallboard_terms(rules, good, warning);
        // The page shows times in the browser's zone; the feed sends UTC.
        let mut definitions =
            Definitions::new(Subject::Wallboard, "UTC".to_owned(), judging, terms);
        definitions.service_levels = Self::service_levels(skills, good, warning);
        definitions
    }

    fn wallboard_terms(rules: &RulesInForce, good: f64, warning: f64) -> Vec<Term> {
        vec![
            term(
                "service_level",
                "Service level (SL)",
                "share (0–1; shown in percent)",
                format!(
                    "The platform's own figure for the skill (or queue): the share of contacts \
                     answered within the skill's service-level threshold, as its real-time \
                     skill data reports it; a percentage the platform gives is read as one. \
                     wfmd does not compute it. Tiles are green at or above {good}, amber at or \
                     above {warning}, red below (live.service_level_good and \
                     live.service_level_warning); a tile greys out when its family's newest \
                     sample is older than twice its polling interval"
                ),
            ),
            term(
                "longest_wait",
                "Longest wait",
                "seconds (shown m:ss)",
                "How long the oldest contact queued for the skill has waited, as the platform \
                 reports it",
            ),
            term(
                "average_wait",
                "Avg wait",
                "seconds (shown m:ss)",
                "The average wait of the queue's waiting contacts, as the platform reports it \
                 (none on the incontact dialect, whose queues are its skills)",
            ),
            term(
                "adherence_badge",
                "Adherence badge",
                "",
                format!(
                    "An open adherence exception on the agent's card, named by its kind \
                     (working_in_mandatory_break, logged_in_outside_shift, \
                     not_working_in_shift, out_of_rule) since the deviation began; red once \
                     open longer than its rule's severe_after. {}. With no matching rule the {}",
                    rules.summary, BUILTIN_KINDS
                ),
            ),
            term(
                "since",
                "Time in state",
                "m:ss (h:mm:ss from an hour on)",
                "How long the card's recorded state has lasted; counts IDLE, PAUSED and \
                 NOT_READY the same as the compliance report's idle time does",
            ),
            term(
                "latency",
                "Latency",
                "milliseconds",
                format!("The wallboard shows none; the compliance report's latency is {LATENCY}"),
            ),
        ]
    }

    /// Each skill tile's service level with its threshold and the wallboard's colours.
    fn service_levels(skills: &[SkillTile], good: f64, warning: f64) -> Vec<SkillServiceLevel> {
        let mut service_levels: Vec<SkillServiceLevel> = skills
            .iter()
            .map(|tile| SkillServiceLevel {
                skill_id: tile.skill_id.clone(),
                skill_name: tile.skill_name.clone(),
                threshold_seconds: tile.service_level_threshold_secs,
                goal: tile.service_level_goal,
                good,
                warning,
            })
            .collect();
        // By name, as a reader looks a skill up (the board keys its tiles by id).
        service_levels.sort_by(|a, b| {
            (a.skill_name.to_lowercase(), &a.skill_id)
                .cmp(&(b.skill_name.to_lowercase(), &b.skill_id))
        });
        service_levels
    }

    /// The rows of the CSV companion and the HTML footnotes: every term, then the rules
    /// and the time zone, then each skill's service level.
    pub fn rows(&self) -> Vec<Term> {
        let mut rows = self.terms.clone();
        rows.push(term(
            "adherence_rules",
            "Adherence rules",
            "",
            self.adherence_rules.summary.clone(),
        ));
        rows.push(term(
            "time_zone",
            "Time zone",
            "IANA zone",
            format!("Times are written in {}", self.time_zone),
        ));
        for skill in &self.service_levels {
            let threshold = match skill.threshold_seconds {
                Some(seconds) => format!("answered within {seconds} s"),
                None => "answered within the skill's threshold, which the platform's skill \
                         data does not report"
                    .to_owned(),
            };
            // In percent, as the platform's own pages write a goal (0.8: "goal 80 %").
            let goal = skill.goal.map_or_else(String::new, |share| {
                format!(" (goal {} %)", (share * 10_000.0).round() / 100.0)
            });
            rows.push(Term {
                term: format!("service_level[{}]", skill.skill_id),
                label: format!("Service level of {}", skill.skill_name),
                definition: format!(
                    "Share of the skill's contacts {threshold}{goal}; green at or above {}, \
                     amber at or above {}, red below",
                    skill.good, skill.warning
                ),
                unit: "share (0–1)".to_owned(),
            });
        }
        rows
    }

    /// The `definitions` object of a JSON export.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("definitions serialize")
    }

    /// The CSV companion: `term,label,definition,unit,time_zone`, one row per
    /// [`Definitions::rows`]. Text cells go through [`super::text_cell`].
    pub fn to_csv(&self) -> Vec<u8> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let write = |writer: &mut csv::Writer<Vec<u8>>, fields: [&str; 5]| {
            writer
                .write_record(fields.map(|f| super::text_cell(f).into_owned()))
                .expect("writing CSV to memory cannot fail");
        };
        write(
            &mut writer,
            ["term", "label", "definition", "unit", "time_zone"],
        );
        for row in self.rows() {
            write(
                &mut writer,
                [
                    &row.term,
                    &row.label,
                    &row.definition,
                    &row.unit,
                    &self.time_zone,
                ],
            );
        }
        writer
            .into_inner()
            .expect("writing CSV to memory cannot fail")
    }

    /// The HTML footnotes: a "Definitions" section, every row a term and its definition.
    pub fn to_html(&self) -> String {
        let mut html = String::from(
            "<section class=\"definitions\" id=\"definitions\"><h2>Definitions</h2><dl>",
        );
        for row in self.rows() {
            let unit = if row.unit.is_empty() {
                String::new()
            } else {
                format!(" <span class=\"unit\">({})</span>", escape(&row.unit))
            };
            let _ = write!(
                html,
                "<dt id=\"def-{id}\"><code>{term}</code> {label}{unit}</dt><dd>{definition}</dd>",
                id = escape(&row.term),
                term = escape(&row.term),
                label = escape(&row.label),
                definition = escape(&row.definition),
            );
        }
        html.push_str("</dl></section>");
        html
    }
}
