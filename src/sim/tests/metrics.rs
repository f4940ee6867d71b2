//! The wallboard endpoints over HTTP: listings, skill data and queue stats whose figures
//! follow the agents, the 100-id limit, idle skills left out, the platform's time in
//! `Date`, denied scopes, faults, and determinism.

use super::*;

const SKILL_DATA: &str = "/inContactAPI/services/v18.0/real-time-data/skill-data";
const QUEUE_STATS: &str = "/api/v2/reporting/queues/realtime";

fn start() -> DateTime<Utc> {
    "2026-11-20T14:30:00Z".parse().unwrap()
}

/// A tenant on a clock that moves only when advanced; agents act on their own only
/// with `activity`.
fn frozen(agents: usize, activity: bool) -> SimConfig {
    SimConfig {
        agents,
        activity,
        time_scale: 0.0,
        start_at: Some(start()),
        // Tokens outlive the hours these tests move the clock by.
        token_lifetime: Duration::from_secs(7 * 24 * 3600),
        ..unlimited()
    }
}

impl Harness {
    async fn skill_data(&self, token: &str, ids: &[&str]) -> Vec<Value> {
        let path = format!("{SKILL_DATA}?skillId={}", ids.join(","));
        let body = self.get_json(token, &path).await;
        body["skillData"].as_array().unwrap().clone()
    }

    async fn queue_stats_response(&self, token: &str, ids: &[String]) -> reqwest::Response {
        self.http
            .post(self.api(QUEUE_STATS))
            .bearer_auth(token)
            .json(&json!({ "queueIds": ids }))
            .send()
            .await
            .unwrap()
    }

    async fn queue_stats(&self, token: &str, ids: &[String]) -> Vec<Value> {
        let res = self.queue_stats_response(token, ids).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["queues"].as_array().unwrap().clone()
    }
}

/// (READY, logged in, ON_CONTACT, ACW) agents with `skill`, from the ground truth.
fn expected_staffing(sim: &Simulator, skill: &str) -> (u64, u64, u64, u64) {
    let with_skill: Vec<SimAgent> = sim
        .agents()
        .into_iter()
        .filter(|a| a.skills.iter().any(|s| s == skill))
        .collect();
    let count = |state: &str| with_skill.iter().filter(|a| a.state == state).count() as u64;
    let staffed = with_skill
        .iter()
        .filter(|a| a.state != "LOGGED_OUT")
        .count() as u64;
    (count("READY"), staffed, count("ON_CONTACT"), count("ACW"))
}

fn staffing_of(entry: &Value) -> (u64, u64, u64, u64) {
    (
        entry["agentsAvailable"].as_u64().unwrap(),
        entry["agentsStaffed"].as_u64().unwrap(),
        entry["agentsOnContact"].as_u64().unwrap(),
        entry["agentsInACW"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn listings_serve_the_tenants_skills_and_queues() {
    let h = harness(SimConfig {
        queues: 7,
        ..frozen(30, false)
    })
    .await;
    let token = h.token().await;
    let skills = h.get_json(&token, "/api/v2/skills").await;
    let ids: Vec<&str> = skills["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["skillId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["s_100", "s_101", "s_102", "s_103", "s_104"]);
    assert_eq!(skills["skills"][0]["skillName"], "Tier 1 Voice");
    assert_eq!(skills["skills"][0]["mediaType"], "voice");
    // Every skill an agent has is listed.
    for agent in h.sim().agents() {
        for skill in &agent.skills {
            assert!(ids.contains(&skill.as_str()), "{skill} of {}", agent.id);
        }
    }

    let queues = h.get_json(&token, "/api/v2/queues").await;
    let queues = queues["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 7);
    assert_eq!(queues[0], json!({"queueId": "q_1", "name": "Support-T1"}));
    assert_eq!(queues[5], json!({"queueId": "q_6", "name": "Support-T1 2"}));
    assert_eq!(h.sim().queues().len(), 7);
}

#[tokio::test]
async fn skill_and_queue_figures_follow_the_agents() {
    let h = harness(frozen(40, false)).await;
    let token = h.token().await;
    let skill = "s_100";

    let entry = h.skill_data(&token, &[skill]).await.remove(0);
    assert_eq!(entry["skillId"], skill);
    assert_eq!(staffing_of(&entry), expected_staffing(h.sim(), skill));
    assert_eq!(entry["contactsActive"], entry["agentsOnContact"]);

    // A logged-out agent with the skill logs in READY: one more available and staffed.
    let agent = h
        .sim()
        .agents()
        .into_iter()
        .find(|a| a.state == "LOGGED_OUT" && a.skills.iter().any(|s| s == skill))
        .expect("an off-shift agent with the skill");
    let (ready, staffed, _, _) = staffing_of(&entry);
    assert!(h.sim().force_state(&agent.id, "READY", ""));
    let entry = h.skill_data(&token, &[skill]).await.remove(0);
    assert_eq!(staffing_of(&entry).0, ready + 1);
    assert_eq!(staffing_of(&entry).1, staffed + 1);
    assert_eq!(staffing_of(&entry), expected_staffing(h.sim(), skill));

    // ... and goes on a contact: one fewer available, one on contact.
    assert!(h.sim().force_state(&agent.id, "ON_CONTACT", ""));
    let entry = h.skill_data(&token, &[skill]).await.remove(0);
    assert_eq!(staffing_of(&entry).0, ready);
    assert_eq!(staffing_of(&entry), expected_staffing(h.sim(), skill));

    // A queue counts the agents of the skill that serves it.
    let queue = h.sim().queues().remove(0);
    let (ready, staffed, on_contact, acw) = expected_staffing(h.sim(), &queue.skill);
    let stats = h
        .queue_stats(&token, std::slice::from_ref(&queue.id))
        .await
        .remove(0);
    assert_eq!(stats["queueId"], queue.id);
    assert_eq!(stats["name"], queue.name);
    assert_eq!(stats["agentsLoggedOn"], staffed);
    assert_eq!(stats["agentsAvailable"], ready);
    assert_eq!(stats["agentsBusy"], on_contact + acw);
}

#[tokio::test]
async fn queues_fill_while_nobody_is_ready_and_drain_once_agents_are() {
    let h = harness(frozen(40, false)).await;
    let token = h.token().await;
    let sim = h.sim();
    let ids: Vec<String> = sim.queues().into_iter().map(|q| q.id).collect();
    for agent in sim.agents() {
        sim.force_state(&agent.id, "NOT_READY", "");
    }
    let empty = h.queue_stats(&token, &ids).await;
    assert!(empty.iter().all(|q| q["callsWaiting"] == 0), "{empty:?}");

    sim.clock().advance(Duration::from_secs(30 * 60));
    let filled = h.queue_stats(&token, &ids).await;
    let waiting = |stats: &[Value]| -> u64 {
        stats
            .iter()
            .map(|q| q["callsWaiting"].as_u64().unwrap())
            .sum()
    };
    assert!(waiting(&filled) > 20, "half an hour unanswered: {filled:?}");
    for q in &filled {
        assert_eq!(q["agentsAvailable"], 0);
        if q["callsWaiting"].as_u64().unwrap() > 0 {
            assert!(q["averageWaitTime"].as_u64().unwrap() > 30_000, "{q}");
            assert_eq!(q["serviceLevel"], 0.0, "nobody answered: {q}");
        }
    }
    let skills = h.skill_data(&token, &["s_100", "s_101", "s_102"]).await;
    assert!(
        skills
            .iter()
            .any(|s| s["contactsQueued"].as_u64().unwrap() > 0
                && s["longestQueueDuration"].as_u64().unwrap() > 60),
        "{skills:?}"
    );

    for agent in sim.agents() {
        sim.force_state(&agent.id, "READY", "");
    }
    sim.clock().advance(Duration::from_secs(30 * 60));
    let drained = h.queue_stats(&token, &ids).await;
    assert!(
        waiting(&drained) < waiting(&filled) / 4,
        "{drained:?} after {filled:?}"
    );
    assert!(
        drained
            .iter()
            .any(|q| q["serviceLevel"].as_f64().unwrap() > 0.0),
        "answered contacts raise the service level: {drained:?}"
    );
}

#[tokio::test]
async fn idle_and_unknown_skills_are_left_out_of_skill_data() {
    let h = harness(frozen(30, false)).await;
    let token = h.token().await;
    let sim = h.sim();
    // Nothing has been queued yet (the clock has not moved), so a skill whose agents are
    // all logged out has no activity at all.
    for agent in sim.agents() {
        if agent.skills.iter().any(|s| s == "s_101") {
            sim.force_state(&agent.id, "LOGGED_OUT", "");
        }
    }
    let answer = h.skill_data(&token, &["s_100", "s_101", "s_999"]).await;
    let ids: Vec<&str> = answer
        .iter()
        .map(|s| s["skillId"].as_str().unwrap())
        .collect();
    assert!(
        !ids.contains(&"s_101") && !ids.contains(&"s_999"),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"s_100") || expected_staffing(sim, "s_100").1 == 0,
        "{ids:?}"
    );
}

#[tokio::test]
async fn more_than_100_queue_ids_are_refused_and_unknown_ones_named() {
    let h = harness(SimConfig {
        queues: 150,
        ..frozen(10, false)
    })
    .await;
    let token = h.token().await;
    let ids: Vec<String> = h.sim().queues().into_iter().map(|q| q.id).collect();

    let (status, body) = error_body(h.queue_stats_response(&token, &ids[..101]).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 100 queueIds per request, got 101"),
        "{body}"
    );
    assert_eq!(h.queue_stats(&token, &ids[..100]).await.len(), 100);

    let bad = vec!["q_1".to_owned(), "q_999".to_owned()];
    let (status, body) = error_body(h.queue_stats_response(&token, &bad).await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["message"].as_str().unwrap().contains("q_999"),
        "{body}"
    );
}

#[tokio::test]
async fn answers_carry_the_platforms_time_in_their_date_header() {
    let h = harness(frozen(10, false)).await;
    let token = h.token().await;
    h.sim().clock().advance(Duration::from_secs(90));
    let res = h
        .get_with(&token, &format!("{SKILL_DATA}?skillId=s_100"))
        .await;
    assert_eq!(res.headers()["date"], "Fri, 20 Nov 2026 14:31:30 GMT");
    let res = h.queue_stats_response(&token, &["q_1".to_owned()]).await;
    assert_eq!(res.headers()["date"], "Fri, 20 Nov 2026 14:31:30 GMT");
}

#[tokio::test]
async fn a_denied_scope_answers_403_for_its_family_only() {
    let h = harness(frozen(10, false)).await;
    let token = h.token().await;
    h.sim().deny_scope(QUEUES_SCOPE);
    let (status, body) =
        error_body(h.queue_stats_response(&token, &["q_1".to_owned()]).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["message"], "missing scope reporting:queue:view");
    let res = h.get_with(&token, "/api/v2/queues").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    h.get_json(&token, "/api/v2/skills").await;
    h.get_json(&token, &format!("{SKILL_DATA}?skillId=s_100"))
        .await;

    // Over the control API too.
    let res = h
        .http
        .post(h.root("/_sim/faults"))
        .json(&json!({"deny_scopes": [SKILLS_SCOPE]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        h.get_with(&token, "/api/v2/skills").await.status(),
        StatusCode::FORBIDDEN
    );
    h.queue_stats(&token, &["q_1".to_owned()]).await;
}

#[tokio::test]
async fn faults_apply_to_the_wallboard_routes() {
    let h = harness(frozen(10, false)).await;
    let token = h.token().await;
    h.sim()
        .fail_next_on(&format!("GET {SKILL_DATA}"), 1, 429, Some(3));
    h.sim()
        .fail_next_on(&format!("POST {QUEUE_STATS}"), 1, 503, None);
    let res = h
        .get_with(&token, &format!("{SKILL_DATA}?skillId=s_100"))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "3");
    let res = h.queue_stats_response(&token, &["q_1".to_owned()]).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let stats = h.sim().stats();
    assert_eq!(stats.by_route[&format!("GET {SKILL_DATA}")], 1);
    assert_eq!(stats.by_route[&format!("POST {QUEUE_STATS}")], 1);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_figures_whoever_looks_when() {
    let config = || SimConfig {
        queues: 3,
        ..frozen(60, true)
    };
    let (a, b) = (harness(config()).await, harness(config()).await);
    let (ta, tb) = (a.token().await, b.token().await);
    let skills = ["s_100", "s_101", "s_102", "s_103"];
    let queues: Vec<String> = a.sim().queues().into_iter().map(|q| q.id).collect();
    // One looks every simulated minute, the other only at the end.
    for _ in 0..90 {
        a.sim().clock().advance(Duration::from_secs(60));
        a.skill_data(&ta, &skills).await;
    }
    b.sim().clock().advance(Duration::from_secs(90 * 60));
    assert_eq!(
        a.skill_data(&ta, &skills).await,
        b.skill_data(&tb, &skills).await
    );
    assert_eq!(
        a.queue_stats(&ta, &queues).await,
        b.queue_stats(&tb, &queues).await
    );
}
