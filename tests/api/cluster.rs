//! Several `wfmd serve` on one PostgreSQL database (`[ha]`): one instance leads the
//! tenant at a time and alone changes its agents, the others handing it the changes
//! asked of them; when it dies (`kill -9`) or stops (SIGTERM), another takes the tenant
//! over in a new term. A body is held to its route's limit before it is handed on.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// `wfmd serve` as instance `id` of a cluster on `db`, with a short lease.
pub async fn instance(sim: &TestSim, db: &TestDb, id: &str) -> Daemon {
    Daemon::spawn(&cluster_env(sim, db, id)).await
}

pub fn cluster_env(sim: &TestSim, db: &TestDb, id: &str) -> Vec<(String, String)> {
    cluster_env_and(sim, db, id, &[])
}

/// [`cluster_env`] with the settings `more` besides.
pub fn cluster_env_and(
    sim: &TestSim,
    db: &TestDb,
    id: &str,
    more: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = sim.env(&db.url());
    let ha = [
        ("WFMD_HA__INSTANCE_ID", id),
        ("WFMD_HA__LEASE_TTL", "2s"),
        ("WFMD_HA__CLUSTER_KEY", CLUSTER_KEY),
    ];
    for (key, value) in ha.iter().chain(more) {
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
    env
}

/// The instance whose lease is current, and its term, once one holds it.
pub async fn leader(db: &TestDb) -> (String, i64) {
    eventually("no instance holds a current lease", async || {
        let row = db.psql(
            "SELECT holder || ' ' || term FROM cluster_lease
             WHERE id = 1 AND expires_at > CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        );
        let (holder, term) = row.split_once(' ').ok_or_else(|| "none".to_owned())?;
        Ok((holder.to_owned(), term.parse().unwrap()))
    })
    .await
}

/// Waits until `id` holds the lease.
pub async fn leads(db: &TestDb, id: &str) -> i64 {
    eventually(&format!("{id} never led"), async || {
        match leader(db).await {
            (holder, term) if holder == id => Ok(term),
            (holder, _) => Err(format!("{holder} leads")),
        }
    })
    .await
}

/// Asks `daemon` to change `agent` to `state`; the answer's status.
pub async fn change(daemon: &Daemon, agent: &str, state: &str) -> u16 {
    set_state_at(&daemon.address, agent, state).await.0
}

/// Asks `daemon` for a change until it is carried out (200), as a client retries
/// through a failover.
pub async fn carried_out(daemon: &Daemon, agent: &str, state: &str) {
    let what = format!("{agent} was never changed to {state}");
    let answer = async || match change(daemon, agent, state).await {
        200 => Ok(()),
        status => Err(status.to_string()),
    };
    eventually(&what, answer).await;
}

#[tokio::test]
async fn the_leader_carries_out_changes_asked_of_any_instance_and_another_takes_over_after_kill_9()
{
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let a = instance(&sim, &db, "wfmd-a").await;
    assert_eq!(leads(&db, "wfmd-a").await, 1);
    let b = instance(&sim, &db, "wfmd-b").await;
    let agents = sim.free_agents();
    // Both are ready to serve: the follower's readiness is its database's.
    for (daemon, leads) in [(&a, true), (&b, false)] {
        let response = http_client()
            .get(format!("{}/readyz", daemon.address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!((status, &body["leads"]), (200, &json!(leads)), "{body}");
    }

    // The leader carries out a change asked of it, and one asked of the follower, which
    // hands it on (the follower itself can write none of the tenant's records).
    assert_eq!(change(&a, &agents[0].id, "NOT_READY").await, 200);
    let changes = sim.changes();
    assert_eq!(change(&b, &agents[1].id, "NOT_READY").await, 200);
    assert_eq!(sim.changes(), changes + 1, "one platform call for it");
    // A refusal comes back as the leader gave it.
    let off_shift = sim.off_shift_agent();
    let (via_follower, via_leader) = (
        set_state_at(&b.address, &off_shift.id, "READY").await,
        set_state_at(&a.address, &off_shift.id, "READY").await,
    );
    assert_eq!(via_follower.0, 409, "{via_follower:?}");
    assert_eq!(via_follower.1["type"], via_leader.1["type"]);
    assert_eq!(via_follower.1["violation"], via_leader.1["violation"]);
    assert_eq!(leader(&db).await, ("wfmd-a".to_owned(), 1));

    a.signal("KILL");
    a.wait().await;
    assert_eq!(leads(&db, "wfmd-b").await, 2);
    carried_out(&b, &agents[2].id, "NOT_READY").await;
    let recorded = db.psql(&format!(
        "SELECT COUNT(*) FROM transition_attempts WHERE outcome = 'succeeded'
         AND agent_id IN ('{}', '{}', '{}')",
        agents[0].id, agents[1].id, agents[2].id
    ));
    assert_eq!(recorded, "3", "each change recorded once");
}

/// A follower remembers the leader it hands changes to; once that one dies, the
/// follower hands them to the leader after it, not to the one it knew.
#[tokio::test]
async fn a_follower_hands_changes_to_the_next_leader_once_the_one_it_knew_died() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let a = instance(&sim, &db, "wfmd-a").await;
    assert_eq!(leads(&db, "wfmd-a").await, 1);
    let (b, c) = (
        instance(&sim, &db, "wfmd-b").await,
        instance(&sim, &db, "wfmd-c").await,
    );
    let agents = sim.free_agents();
    for (follower, agent) in [(&b, &agents[0]), (&c, &agents[1])] {
        assert_eq!(change(follower, &agent.id, "NOT_READY").await, 200);
    }
    assert_eq!(leader(&db).await, ("wfmd-a".to_owned(), 1));

    a.signal("KILL");
    a.wait().await;
    let follower = eventually("neither b nor c took over", async || {
        match leader(&db).await.0.as_str() {
            "wfmd-b" => Ok(&c),
            "wfmd-c" => Ok(&b),
            other => Err(format!("{other} leads")),
        }
    })
    .await;
    let changes = sim.changes();
    carried_out(follower, &agents[2].id, "NOT_READY").await;
    assert_eq!(
        sim.changes(),
        changes + 1,
        "the new leader carried it out, once"
    );
}

#[tokio::test]
async fn a_stopping_leader_releases_the_tenant_to_another_instance() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    let mut env = cluster_env(&sim, &db, "wfmd-a");
    env.push(("WFMD_LOG__LEVEL".into(), "info".into()));
    let a = Daemon::spawn_logging_to(&env, &log).await;
    assert_eq!(leads(&db, "wfmd-a").await, 1);
    let b = instance(&sim, &db, "wfmd-b").await;

    a.signal("TERM");
    assert!(a.wait().await.success());
    let said = std::fs::read_to_string(&log).unwrap();
    let stopped = said.find("the leader's work of this term has stopped");
    let released = said.find("the tenant's lease is released for another instance");
    assert!(
        matches!((stopped, released), (Some(s), Some(r)) if s < r),
        "the work stops, then the lease goes:\n{said}"
    );
    assert_eq!(leads(&db, "wfmd-b").await, 2);
    let agent = &sim.free_agents()[0].id;
    assert_eq!(change(&b, agent, "NOT_READY").await, 200);
}

/// `wfmd serve` with `env` that must refuse to start: its stderr.
async fn refused(env: &[(String, String)]) -> String {
    let (code, _, stderr) = output_of({
        let mut command = wfmd();
        command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        command
            .args(["serve"])
            .env("WFMD_SERVER__LISTEN", "127.0.0.1:0");
        command
    })
    .await;
    assert_eq!(code, 1, "{stderr}");
    stderr
}

#[tokio::test]
async fn an_instance_without_ha_is_the_only_one_on_its_postgresql_database() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let sole = Daemon::spawn(&sim.env(&db.url())).await;
    let second = refused(&sim.env(&db.url())).await;
    assert!(second.contains("another wfmd serves"), "{second}");
    let among_several = refused(&cluster_env(&sim, &db, "wfmd-b")).await;
    assert!(
        among_several.contains("a wfmd without [ha] serves"),
        "{among_several}"
    );

    // Once it is gone, instances with [ha] start, as many as wanted.
    sole.signal("TERM");
    assert!(sole.wait().await.success());
    let _a = instance(&sim, &db, "wfmd-a").await;
    let _b = instance(&sim, &db, "wfmd-b").await;
    let sole_again = refused(&sim.env(&db.url())).await;
    assert!(sole_again.contains("another wfmd serves"), "{sole_again}");
}

/// The wallboard snapshot `address` serves.
async fn wallboard(address: &str) -> serde_json::Value {
    get_json(&format!("{address}/v1/live")).await
}

/// What two instances' wallboards must agree on: the skill tiles and each agent's name.
fn figures(snapshot: &serde_json::Value) -> (serde_json::Value, Vec<(String, String)>) {
    let names = snapshot["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].to_string(), a["name"].to_string()))
        .collect();
    (snapshot["skills"].clone(), names)
}

#[tokio::test]
async fn a_followers_wallboard_shows_the_leaders_figures_without_calling_the_platform() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let env = |id: &str| cluster_env_and(&sim, &db, id, &[("WFMD_LIVE__ENABLED", "true")]);
    let a = Daemon::spawn(&env("wfmd-a")).await;
    leads(&db, "wfmd-a").await;
    eventually("the leader's wallboard has no figures", async || {
        let snapshot = wallboard(&a.address).await;
        let (skills, names) = figures(&snapshot);
        let named = names.iter().any(|(_, name)| name != "null");
        match (skills.as_array().is_some_and(|s| !s.is_empty()), named) {
            (true, true) => Ok(()),
            _ => Err(snapshot.to_string()),
        }
    })
    .await;
    let tokens = sim.sim.stats().token_requests;
    assert!(tokens > 0);

    let b = Daemon::spawn(&env("wfmd-b")).await;
    eventually("the follower's wallboard differs", async || {
        let (on_a, on_b) = (wallboard(&a.address).await, wallboard(&b.address).await);
        match figures(&on_a) == figures(&on_b) {
            true => Ok(()),
            false => Err(format!("{on_a}\n{on_b}")),
        }
    })
    .await;
    // Each says which instance serves it; the follower never asked for a token.
    assert_eq!(wallboard(&a.address).await["served_by"], "wfmd-a");
    assert_eq!(wallboard(&b.address).await["served_by"], "wfmd-b");
    assert_eq!(sim.sim.stats().token_requests, tokens);
}

#[tokio::test]
async fn a_ticket_from_one_instance_opens_the_feed_on_another_and_only_once() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let config = db.dir.path().join("wfmd.toml");
    let token = crate::auth::sha256_hex("wfmd_desk");
    let text =
        format!("[[api_tokens]]\nname = \"desk\"\ntoken_sha256 = \"{token}\"\nrole = \"viewer\"\n");
    std::fs::write(&config, text).unwrap();
    let args = ["--config", config.to_str().unwrap(), "serve"];
    let a = Daemon::spawn_with(&args, &cluster_env(&sim, &db, "wfmd-a"), None).await;
    leads(&db, "wfmd-a").await;
    let b = Daemon::spawn_with(&args, &cluster_env(&sim, &db, "wfmd-b"), None).await;

    // A load balancer may send the ticket's request to one and the feed's to the other.
    for (issuer, opener) in [(&a, &b), (&b, &a)] {
        let issued = http_client()
            .post(format!("{}/v1/live/tickets", issuer.address))
            .bearer_auth("wfmd_desk")
            .send()
            .await
            .unwrap();
        assert_eq!(issued.status(), 201);
        let ticket: serde_json::Value = issued.json().await.unwrap();
        let path = format!("/v1/events?ticket={}", ticket["ticket"].as_str().unwrap());
        let mut feed = crate::live::Sse::open(&opener.address, &path, &[]).await;
        assert_eq!(feed.next().await.event, "snapshot");
        // Used once, on either.
        for again in [issuer, opener] {
            let second = http_client()
                .get(format!("{}{path}", again.address))
                .send()
                .await
                .unwrap();
            assert_eq!(second.status(), 401, "{}", again.address);
        }
    }
}

/// Sends `head` (a request's head, without its blank line) and then `body` to
/// `address` on a connection of its own, leaving the connection open (the body may be
/// incomplete); the answer's status and problem, read as they come.
async fn raw_answer(address: &str, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(format!("{head}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    stream.write_all(body).await.unwrap();
    let mut read = Vec::new();
    let answer = async {
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&read).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    let status = head[9..12].parse().unwrap();
                    return (status, serde_json::from_str(body).unwrap_or(Value::Null));
                }
            }
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed without an answer: {text}");
            read.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), answer)
        .await
        .expect("an answer before the body is complete")
}

#[tokio::test]
async fn a_follower_refuses_a_body_over_its_routes_limit_before_handing_it_on() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let _a = instance(&sim, &db, "wfmd-a").await;
    leads(&db, "wfmd-a").await;
    let b = instance(&sim, &db, "wfmd-b").await;
    let agent = &sim.free_agents()[0].id;
    let post = |path: &str, framing: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             {framing}"
        )
    };
    let too_large = |(status, problem): (u16, Value)| {
        assert_eq!(status, 413, "{problem}");
        assert_eq!(
            problem["type"], "urn:wfmd:problem:body-too-large",
            "{problem}"
        );
        assert_eq!(problem["limit_bytes"], 64 * 1024, "{problem}");
    };
    let transitions = format!("/v1/agents/{agent}/transitions");
    // Announced larger than the route takes: answered before a byte of it is read.
    let announced = post(&transitions, "content-length: 17825792");
    too_large(raw_answer(&b.address, &announced, b"").await);
    // Announced by no length: cut off where it passes the route's limit.
    let mut chunks = Vec::new();
    for size in [60 * 1024, 10 * 1024] {
        chunks.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        chunks.extend(std::iter::repeat_n(b' ', size));
        chunks.extend_from_slice(b"\r\n");
    }
    let chunked = post(&transitions, "transfer-encoding: chunked");
    too_large(raw_answer(&b.address, &chunked, &chunks).await);
    assert_eq!(sim.changes(), 0);

    // A route that takes more (a bulk job) has the body handed on whole: the leader
    // reads past 64 KiB, to the field it does not know.
    let padded = json!({"state": "NOT_READY", "team": "t", "padding": " ".repeat(100 * 1024)});
    let response = http_client()
        .post(format!("{}/v1/bulk-transitions", b.address))
        .json(&padded)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "padding", "{problem}");
}

/// The page a follower served sends a change: the follower judges its `Origin` and
/// hands it on proven, and the leader makes it. A page elsewhere claiming the same
/// straight to the leader gets nothing past its checks without a valid proof.
#[tokio::test]
async fn a_browser_change_through_a_follower_is_made_by_the_leader_and_a_forged_handing_on_is_refused()
 {
    use wfmd::api::forward::{ClusterKey, HandedOn};

    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("a.log");
    let a = Daemon::spawn_logging_to(&cluster_env(&sim, &db, "wfmd-a"), &log).await;
    leads(&db, "wfmd-a").await;
    let b = instance(&sim, &db, "wfmd-b").await;
    let agents = sim.free_agents();
    let post = |address: &str, path: &str, origin: &str, headers: reqwest::header::HeaderMap| {
        http_client()
            .post(format!("{address}{path}"))
            .header("origin", origin)
            .headers(headers)
            .json(&json!({"state": "NOT_READY"}))
            .send()
    };
    let transitions = |agent: &str| format!("/v1/agents/{agent}/transitions");

    // At both addresses of the route, from the follower's own page.
    let before = sim.changes();
    for path in [
        transitions(&agents[0].id),
        format!("/v1/tenants/default/agents/{}/transitions", agents[1].id),
    ] {
        let response = post(&b.address, &path, &b.address, Default::default())
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(sim.changes(), before + 2, "the leader made both");

    // Straight to the leader from a page elsewhere, claiming to be handed on.
    let now = chrono::Utc::now().timestamp();
    let target = transitions(&agents[2].id);
    let handed = |at: i64| HandedOn {
        by: "wfmd-b".into(),
        client: "127.0.0.1".parse().unwrap(),
        at,
        caller: None,
    };
    let ours = ClusterKey::new(CLUSTER_KEY.to_owned().into());
    let theirs = ClusterKey::new("not-the-cluster-key-0123456789abcdef".to_owned().into());
    let post_method = reqwest::Method::POST;
    let mut unproven = reqwest::header::HeaderMap::new();
    unproven.insert("x-wfmd-forwarded-by", "wfmd-b".parse().unwrap());
    let forged = [
        ("an unproven claim", unproven),
        (
            "a proof with another key",
            theirs.headers(&handed(now), &post_method, &target).unwrap(),
        ),
        (
            "an hour-old proof",
            ours.headers(&handed(now - 3600), &post_method, &target)
                .unwrap(),
        ),
        (
            "another change's proof",
            ours.headers(&handed(now), &post_method, &transitions(&agents[3].id))
                .unwrap(),
        ),
    ];
    for (what, headers) in forged {
        let response = post(&a.address, &target, "http://evil.example", headers)
            .await
            .unwrap();
        let status = response.status();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 403, "{what}: {problem}");
        assert_eq!(problem["type"], "urn:wfmd:problem:cross-origin", "{what}");
    }
    assert_eq!(sim.changes(), before + 2, "none of them was made");
    // The leader says why a claim proved nothing, so instances whose keys or clocks
    // differ are found out.
    for why in [
        "it carries no proof",
        "its proof is not valid (is ha.cluster_key the same on every instance?)",
        "its proof is too old or from the future",
    ] {
        eventually(&format!("the log never said {why:?}"), async || {
            let said = std::fs::read_to_string(&log).unwrap();
            said.contains(why).then_some(()).ok_or(said)
        })
        .await;
    }

    // What only an instance can send: taken as judged where it was first asked.
    let proven = ours.headers(&handed(now), &post_method, &target).unwrap();
    let response = post(&a.address, &target, "http://evil.example", proven)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(sim.changes(), before + 3);
}

/// A browser signs in at the instance it reaches (the session is that instance's own,
/// not handed to the leader), reads there with its cookie, and its change through that
/// follower is made by the leader for the token the session stands for: the follower
/// names the caller in what it proves.
#[tokio::test]
async fn a_browser_signed_in_at_a_follower_reads_there_and_its_change_is_made_for_its_token() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let tokens = format!(
        "[{{name = \"desk\", token_sha256 = \"{}\", role = \"supervisor\"}}]",
        crate::auth::sha256_hex("wfmd_desk")
    );
    let with_tokens = [("WFMD_API_TOKENS", tokens.as_str())];
    let _leader = Daemon::spawn(&cluster_env_and(&sim, &db, "wfmd-a", &with_tokens)).await;
    leads(&db, "wfmd-a").await;
    let b = Daemon::spawn(&cluster_env_and(&sim, &db, "wfmd-b", &with_tokens)).await;

    let signed_in = http_client()
        .post(format!("{}/v1/session", b.address))
        .header("origin", &b.address)
        .json(&json!({"token": "wfmd_desk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 204);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let read = http_client()
        .get(format!("{}/v1/live", b.address))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200, "the follower knows its own session");

    let agent = &sim.free_agents()[0].id;
    let before = sim.changes();
    let response = http_client()
        .post(format!("{}/v1/agents/{agent}/transitions", b.address))
        .header("origin", &b.address)
        .header("cookie", &cookie)
        .json(&json!({"state": "NOT_READY"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.changes(), before + 1, "the leader made it");
    assert_eq!(
        db.psql(&format!(
            "SELECT actor FROM transition_attempts WHERE agent_id = '{agent}'"
        )),
        "desk",
        "recorded for the session's token"
    );
}
