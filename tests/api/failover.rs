//! Failover between real `wfmd serve` processes on one PostgreSQL database (`[ha]`,
//! a 2 s lease): one leader at any time while instances come and go; a bulk job, the
//! webhooks, the live feed and the rules carrying on across a `kill -9` of the leader;
//! a leader cut off from the database stepping down, its term refused by the database.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wfmd::cluster::lease;
use wfmd::sim::{Faults, SimConfig};

use crate::cluster::{carried_out, change, cluster_env, cluster_env_and, instance, leader, leads};
use crate::helpers::*;
use crate::live::Sse;
use crate::receiver::Receiver;

/// What `/readyz` of `address` says of leading the tenant; `None` when it does not
/// answer (the process is gone).
async fn says_it_leads(address: &str) -> Option<bool> {
    let response = http_client()
        .get(format!("{address}/readyz"))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body["leads"].as_bool()
}

/// The instances a [`LeaderWatch`] asks, by id and address.
type Serving = Arc<Mutex<Vec<(String, String)>>>;

/// Asks every serving instance, over and over, whether it leads, and notes every time
/// two of them said so at once. The instances are asked one after another, so a
/// hand-over between two questions could look like two leaders; two that say so in two
/// rounds running overlapped for certain (the first said so before and after the
/// second did).
struct LeaderWatch {
    serving: Serving,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl LeaderWatch {
    fn start() -> LeaderWatch {
        let serving: Serving = Arc::default();
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let (serving, stop) = (serving.clone(), stop.clone());
            async move {
                let (mut rounds, mut overlaps) = (0, Vec::new());
                let mut before: HashSet<String> = HashSet::new();
                while !stop.is_cancelled() {
                    let asked = serving.lock().unwrap().clone();
                    let mut now = HashSet::new();
                    for (id, address) in asked {
                        if says_it_leads(&address).await == Some(true) {
                            now.insert(id);
                        }
                    }
                    let both: Vec<&String> = now.intersection(&before).collect();
                    if both.len() > 1 {
                        overlaps.push(format!("round {rounds}: {both:?}"));
                    }
                    before = now;
                    rounds += 1;
                    // With no instance to ask, the round awaited nothing.
                    tokio::task::yield_now().await;
                }
                (rounds, overlaps)
            }
        });
        LeaderWatch {
            serving,
            stop,
            task,
        }
    }

    fn add(&self, id: &str, daemon: &Daemon) {
        let mut serving = self.serving.lock().unwrap();
        serving.push((id.to_owned(), daemon.address.clone()));
    }

    fn remove(&self, id: &str) {
        self.serving
            .lock()
            .unwrap()
            .retain(|(serving, _)| serving != id);
    }

    /// Stops asking: how many rounds were asked, and the overlaps seen.
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        self.task.await.unwrap()
    }
}

/// Waits until an instance other than `gone` holds a term after `after`: its id and term.
async fn taken_over(db: &TestDb, gone: &str, after: i64) -> (String, i64) {
    eventually(
        &format!("nobody took over from {gone}"),
        async || match leader(db).await {
            (holder, term) if holder != gone && term > after => Ok((holder, term)),
            (holder, term) => Err(format!("{holder} in term {term}")),
        },
    )
    .await
}

#[tokio::test]
async fn exactly_one_instance_leads_at_any_time_while_instances_start_and_stop() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let watch = LeaderWatch::start();
    let mut daemons = std::collections::HashMap::new();
    for id in ["wfmd-a", "wfmd-b", "wfmd-c"] {
        let daemon = instance(&sim, &db, id).await;
        watch.add(id, &daemon);
        daemons.insert(id.to_owned(), daemon);
    }
    let (mut holder, mut term) = leader(&db).await;
    let mut terms = vec![term];
    // The leader stops, a fourth instance starts, the leader is killed, and once more.
    for (how, starts) in [
        ("TERM", Some("wfmd-d")),
        ("KILL", Some("wfmd-e")),
        ("KILL", None),
    ] {
        let daemon = daemons.remove(&holder).unwrap();
        daemon.signal(how);
        daemon.wait().await;
        watch.remove(&holder);
        if let Some(id) = starts {
            let daemon = instance(&sim, &db, id).await;
            watch.add(id, &daemon);
            daemons.insert(id.to_owned(), daemon);
        }
        (holder, term) = taken_over(&db, &holder, term).await;
        terms.push(term);
        let new_leader = &daemons[&holder];
        wait_until(&format!("{holder} never said it leads"), async || {
            says_it_leads(&new_leader.address).await == Some(true)
        })
        .await;
    }
    let (rounds, overlaps) = watch.finish().await;
    assert_eq!(overlaps, Vec::<String>::new(), "two leaders at once");
    assert!(rounds > 10, "the instances were asked {rounds} times only");
    assert!(terms.windows(2).all(|t| t[0] < t[1]), "{terms:?}");
    // Of the two left, the last to take over leads and the other does not.
    assert_eq!(daemons.len(), 2);
    for (id, daemon) in &daemons {
        assert_eq!(
            says_it_leads(&daemon.address).await,
            Some(*id == holder),
            "{id}"
        );
    }
}

#[tokio::test]
async fn a_change_a_killed_leader_left_unrecorded_is_recorded_by_the_next_leader_within_seconds() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    // The held call must not time out, and be sent again, before the kill.
    let env = |id: &str| {
        cluster_env_and(
            &sim,
            &db,
            id,
            &[("WFMD_CXONE__REQUEST_TIMEOUT_MS", "30000")],
        )
    };
    let a = Daemon::spawn(&env("wfmd-a")).await;
    let term = leads(&db, "wfmd-a").await;
    let b = Daemon::spawn(&env("wfmd-b")).await;
    let agent = sim.free_agents().remove(0);
    let target = if agent.state == "NOT_READY" {
        "READY"
    } else {
        "NOT_READY"
    };

    // The leader dies with the change at the platform, which makes it.
    let held = sim.sim.hold_next_on(SET_STATE);
    let asked = tokio::spawn({
        let url = format!("{}/v1/agents/{}/transitions", a.address, agent.id);
        // The answer never comes: the leader dies first.
        async move {
            http_client()
                .post(url)
                .json(&json!({ "state": target }))
                .send()
                .await
        }
    });
    tokio::time::timeout(DEADLINE, held.arrived())
        .await
        .expect("the change reaches the platform");
    let reason = db.psql("SELECT reason FROM transition_intents");
    assert!(!reason.is_empty(), "the intent is written before the call");
    a.signal("KILL");
    a.wait().await;
    // The caller is gone, so the held call is dropped unserved: the platform's side of
    // it is played by hand.
    assert!(sim.sim.force_state(&agent.id, target, &reason));
    drop(held);
    assert!(
        asked.await.unwrap().is_err(),
        "the dead leader never answered"
    );

    // The next leader knows the dead one's term is over: it records the change as the
    // platform shows it, long before the ten minutes another process's intent waits.
    assert_eq!(leads(&db, "wfmd-b").await, term + 1);
    eventually(
        "the survivor records the change the dead leader left",
        async || {
            let recorded = db.psql(&format!(
                "SELECT outcome || ' ' || (detail LIKE '%\"recordedLate\":true%')
                 FROM transition_attempts JOIN audit_log ON subject_id = id
                 WHERE transition_attempts.agent_id = '{}'",
                agent.id
            ));
            match recorded.as_str() {
                "succeeded true" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    )
    .await;
    assert_eq!(db.psql("SELECT COUNT(*) FROM transition_intents"), "0");
    drop(b);
}

/// A bulk job's items, as `GET /v1/bulk-transitions/{id}` on `address` shows them.
async fn bulk_job(address: &str, id: &str) -> Value {
    get_json(&format!("{address}/v1/bulk-transitions/{id}")).await
}

#[tokio::test]
async fn a_bulk_job_of_500_agents_finishes_on_the_survivor_after_kill_9_of_the_leader() {
    let sim = TestSim::start(SimConfig {
        agents: 500,
        ..SimConfig::default()
    })
    .await;
    sim.sim.set_faults(Faults {
        latency: std::time::Duration::from_millis(15),
        ..Faults::default()
    });
    let db = TestDb::postgres();
    let env = |id: &str| cluster_env_and(&sim, &db, id, &[("WFMD_BULK__CONCURRENCY", "8")]);
    let a = Daemon::spawn(&env("wfmd-a")).await;
    let term = leads(&db, "wfmd-a").await;
    let b = Daemon::spawn(&env("wfmd-b")).await;
    let agents: Vec<String> = sim.sim.agents().into_iter().map(|a| a.id).collect();
    assert_eq!(agents.len(), 500);

    // Asked of the follower, run by the leader.
    let accepted = http_client()
        .post(format!("{}/v1/bulk-transitions", b.address))
        .json(&json!({"agents": agents, "state": "NOT_READY", "reason": "MEETING"}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    let id = accepted["job_id"].as_str().unwrap().to_owned();
    eventually("the job made no progress", async || {
        let view = bulk_job(&b.address, &id).await;
        match view["succeeded"].as_i64() {
            Some(done) if done >= 50 => Ok(()),
            _ => Err(view.to_string()),
        }
    })
    .await;
    a.signal("KILL");
    a.wait().await;
    let pending = db.psql("SELECT COUNT(*) FROM bulk_items WHERE outcome = 'pending'");
    assert_ne!(pending, "0", "the kill came after the job's end");

    assert_eq!(leads(&db, "wfmd-b").await, term + 1);
    let view = eventually("the job never finished on the survivor", async || {
        let view = bulk_job(&b.address, &id).await;
        match view["status"].as_str() {
            Some("completed") => Ok(view),
            _ => Err(view.to_string()),
        }
    })
    .await;
    // Every agent has one item, and every item one outcome.
    let items = view["items"].as_array().unwrap();
    let mut seen = HashSet::new();
    for item in items {
        assert!(seen.insert(item["agent"].as_str().unwrap()), "{item}");
        assert_ne!(item["outcome"], "pending", "{item}");
    }
    assert_eq!(seen.len(), 500);
    // No agent was changed twice; those the job changed were changed once, to MEETING.
    let mut changed = 0;
    for agent in &agents {
        let log = sim.sim.agent(agent).unwrap().state_log;
        let asked: Vec<(&str, &str)> = log
            .iter()
            .skip(1)
            .map(|c| (c.state.as_str(), c.reason.as_str()))
            .collect();
        assert!(asked.len() <= 1, "{agent} changed {asked:?}");
        changed += asked.len();
        let item = items.iter().find(|i| i["agent"] == agent.as_str()).unwrap();
        let succeeded = item["outcome"] == "succeeded";
        assert_eq!(
            asked == [("NOT_READY", "MEETING")],
            succeeded,
            "{agent}: {item}"
        );
    }
    assert_eq!(view["succeeded"], changed, "{view}");
    assert!(changed > 50, "{changed} agents changed");
}

#[tokio::test]
async fn webhooks_and_the_feed_carry_on_across_a_kill_9_complete_and_in_order() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let receiver = Receiver::start().await;
    let config = crate::webhooks::config_file(db.dir.path(), &receiver);
    let args = ["--config", config.to_str().unwrap(), "serve"];
    let a = Daemon::spawn_with(&args, &cluster_env(&sim, &db, "wfmd-a"), None).await;
    let term = leads(&db, "wfmd-a").await;
    let b = Daemon::spawn_with(&args, &cluster_env(&sim, &db, "wfmd-b"), None).await;
    let agents: Vec<String> = sim
        .free_agents()
        .into_iter()
        .take(6)
        .map(|a| a.id)
        .collect();

    // A wallboard follows the leader's feed while changes go to both instances.
    let mut feed = Sse::open(&a.address, "/v1/events", &[]).await;
    assert_eq!(feed.next().await.event, "snapshot");
    let states = ["NOT_READY", "PAUSED"];
    for (round, state) in states.iter().enumerate() {
        for (i, agent) in agents.iter().enumerate() {
            let to = if (round + i) % 2 == 0 { &a } else { &b };
            assert_eq!(change(to, agent, state).await, 200);
        }
    }
    let mut last_seen = None;
    for _ in 0..agents.len() {
        last_seen = feed.next_of("agent.state_changed").await.id;
    }
    let last_seen = last_seen.unwrap();

    a.signal("KILL");
    a.wait().await;
    drop(feed);
    taken_over(&db, "wfmd-a", term).await;
    for state in states {
        for agent in &agents {
            carried_out(&b, agent, state).await;
        }
    }

    // The feed resumes on the survivor from the last event seen on the dead one.
    let all: Vec<String> = db
        .psql("SELECT id FROM outbox_events ORDER BY seq")
        .lines()
        .map(str::to_owned)
        .collect();
    let missed: Vec<String> = all
        .iter()
        .skip_while(|id| **id != last_seen)
        .skip(1)
        .cloned()
        .collect();
    assert!(missed.len() >= agents.len() * states.len(), "{missed:?}");
    let mut resumed = Sse::open(&b.address, "/v1/events", &[("Last-Event-ID", &last_seen)]).await;
    let mut replayed = Vec::new();
    while replayed.len() < missed.len() {
        let event = resumed.next().await;
        assert_ne!(event.event, "snapshot", "the id is known: no snapshot");
        replayed.extend(event.id);
    }
    assert_eq!(replayed, missed, "exactly what was missed, in order");

    // Every event reached the receiver, each agent's first copies in commit order.
    receiver.wait_for(all.len(), DEADLINE).await;
    let distinct = receiver.distinct();
    assert_eq!(distinct, all.iter().cloned().collect::<HashSet<_>>());
    let mut firsts = HashSet::new();
    let first_copies: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| firsts.insert(r.id.clone()))
        .collect();
    let store = wfmd::store::Store::open(&db.url()).await.unwrap();
    crate::webhooks::assert_in_commit_order_per_agent(&first_copies, &store, &agents).await;
    store.close().await;
}

#[tokio::test]
async fn a_rule_fires_once_for_every_slot_across_a_kill_9_of_the_leader() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let rules = db.dir.path().join("rules.toml");
    // Every second, for an agent with no recorded state: each firing is recorded, and
    // skips the agent without a platform call.
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"tick\"\ncron = \"*/1 * * * * *\"\ntimezone = \"UTC\"\n\
         agents = [\"u_010\"]\nset = \"PAUSED\"\nonly_if_state = [\"READY\"]\n",
    )
    .unwrap();
    let rules = rules.display().to_string();
    let env = |id: &str| cluster_env_and(&sim, &db, id, &[("WFMD_SCHEDULER__RULES_FILE", &rules)]);
    let firings = || -> i64 {
        db.psql("SELECT COUNT(*) FROM rule_firings WHERE rule = 'tick'")
            .parse()
            .unwrap()
    };
    let a = Daemon::spawn(&env("wfmd-a")).await;
    let term = leads(&db, "wfmd-a").await;
    let _b = Daemon::spawn(&env("wfmd-b")).await;
    wait_until("the rule did not fire", async || firings() >= 3).await;
    let killed_at = chrono::Utc::now().timestamp_millis();
    a.signal("KILL");
    a.wait().await;
    let before = firings();
    taken_over(&db, "wfmd-a", term).await;
    let taken_at: i64 = db
        .psql("SELECT acquired_at FROM cluster_lease")
        .parse()
        .unwrap();
    wait_until("the survivor did not fire the rule", async || {
        firings() >= before + 4
    })
    .await;

    // One firing per slot, and every slot while an instance led has one. The slots
    // that passed while none did are skipped, the last of them recorded as such when
    // the survivor starts the rules (a missed slot is, on any start).
    let slots: Vec<i64> = db
        .psql("SELECT slot_at FROM rule_firings WHERE rule = 'tick' ORDER BY slot_at")
        .lines()
        .map(|slot| slot.parse().unwrap())
        .collect();
    let led = |slot: i64| slot < killed_at - 1_000 || slot > taken_at;
    let (first, last) = (slots[0], *slots.last().unwrap());
    let missing: Vec<i64> = (first..=last)
        .step_by(1_000)
        .filter(|slot| !slots.contains(slot))
        .collect();
    assert!(
        missing.iter().all(|slot| !led(*slot)),
        "slots missing while an instance led (killed at {killed_at}, taken over at \
         {taken_at}): {missing:?} of {slots:?}"
    );
    assert!(slots.iter().all(|slot| slot % 1_000 == 0), "{slots:?}");
    eventually(
        "a firing the kill interrupted was never finished",
        async || {
            let running = db.psql(&format!(
                "SELECT COUNT(*) FROM rule_firings WHERE outcome = 'running' AND slot_at <= {}",
                slots.last().unwrap()
            ));
            match running.as_str() {
                "0" => Ok(()),
                _ => Err(running),
            }
        },
    )
    .await;
    assert_eq!(sim.calls(SET_STATE), 0);
}

#[tokio::test]
async fn a_leader_cut_off_from_the_database_stops_leading_and_its_term_is_refused() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    // wfmd-a connects as a role of its own, so it alone can be shut out.
    let role = format!("{}_a", db.database());
    db.psql(&format!("CREATE ROLE {role} LOGIN SUPERUSER"));
    let mut env = cluster_env(&sim, &db, "wfmd-a");
    let own_url = db.url().replacen("postgres@", &format!("{role}@"), 1);
    env.retain(|(key, _)| key != "WFMD_DATABASE__URL");
    env.push(("WFMD_DATABASE__URL".into(), own_url));
    let a = Daemon::spawn(&env).await;
    let term = leads(&db, "wfmd-a").await;
    let b = instance(&sim, &db, "wfmd-b").await;

    // Its connections are killed, and it cannot open new ones.
    db.psql(&format!(
        "ALTER ROLE {role} NOLOGIN;
         SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"
    ));
    assert_eq!(leads(&db, "wfmd-b").await, term + 1);
    wait_until("wfmd-a still says it leads", async || {
        says_it_leads(&a.address).await == Some(false)
    })
    .await;
    // What wfmd-a would write in its old term is refused; wfmd-b's term is proven.
    let refused = db
        .try_psql(&format!("SELECT wfmd_prove_term('wfmd-a', {term})"))
        .unwrap_err();
    assert!(refused.contains("no longer leads"), "{refused}");
    db.psql(&format!("SELECT wfmd_prove_term('wfmd-b', {})", term + 1));

    // Back on the database, it serves as a follower: the leader carries out its changes.
    db.psql(&format!("ALTER ROLE {role} LOGIN"));
    let agent = &sim.free_agents()[0].id;
    let calls = sim.changes();
    carried_out(&a, agent, "NOT_READY").await;
    assert_eq!(sim.changes(), calls + 1);
    assert_eq!(leader(&db).await, ("wfmd-b".to_owned(), term + 1));
    assert_eq!(says_it_leads(&b.address).await, Some(true));
}

/// Each tenant's current lease (`None` while none is current), in `stores`' order.
async fn current_leases(stores: &[wfmd::store::Store]) -> Vec<Option<lease::Lease>> {
    let mut leases = Vec::new();
    for store in stores {
        let lease = lease::leadership(store).await.unwrap();
        leases.push(lease.filter(lease::Lease::current));
    }
    leases
}

#[tokio::test]
async fn tenants_spread_over_the_instances_and_gather_on_the_survivor() {
    let sim = TestSim::default_tenant().await;
    let db = TestDb::postgres();
    let tenants = ["north", "east", "south", "west"];
    let listed: Vec<(&str, &TestSim)> = tenants.iter().map(|id| (*id, &sim)).collect();
    let (file, env) = crate::tenants::tenants_file(&db, &listed, "");
    let args = ["--config", file.to_str().unwrap(), "serve"];
    let spawn = async |id: &str| {
        let mut env = env.clone();
        env.push(("WFMD_HA__INSTANCE_ID".into(), id.into()));
        env.push(("WFMD_HA__LEASE_TTL".into(), "2s".into()));
        Daemon::spawn_with(&args, &env, None).await
    };
    let mut stores = Vec::new();
    for id in tenants {
        let url = wfmd::config::tenants::tenant_database_url(&db.url(), &id.parse().unwrap());
        stores.push(wfmd::store::Store::open(&url).await.unwrap());
    }
    // Each tenant's lease once wfmd-a and wfmd-b lead as many as `wanted` says.
    let led_by = async |wanted: &[usize]| {
        let what = format!("the tenants were never led {wanted:?}");
        eventually(&what, async || {
            let now = current_leases(&stores).await;
            let count = |id: &str| now.iter().flatten().filter(|l| l.holder == id).count();
            match [count("wfmd-a"), count("wfmd-b")] == wanted {
                true => Ok(now.into_iter().flatten().collect::<Vec<_>>()),
                false => Err(format!("{now:?}")),
            }
        })
        .await
    };

    // Alone, wfmd-a leads all four; beside wfmd-b, two each.
    let _a = spawn("wfmd-a").await;
    led_by(&[4, 0]).await;
    let b = spawn("wfmd-b").await;
    let before = led_by(&[2, 2]).await;
    // The two wfmd-a handed over began a second term; it kept the others' first.
    for lease in &before {
        let term = if lease.holder == "wfmd-b" { 2 } else { 1 };
        assert_eq!(lease.term, term, "{lease:?}");
    }
    // And they stay so: a lease's length later, each renewed by the same holder in the
    // same term.
    let later = eventually("the leases were not renewed", async || {
        let now: Vec<_> = current_leases(&stores)
            .await
            .into_iter()
            .flatten()
            .collect();
        let renewed = now.len() == before.len()
            && now
                .iter()
                .zip(&before)
                .all(|(now, then)| now.expires_at > then.expires_at + 2_000);
        match renewed {
            true => Ok(now),
            false => Err(format!("{now:?}")),
        }
    })
    .await;
    let kept = |leases: &[lease::Lease]| -> Vec<(String, i64)> {
        leases.iter().map(|l| (l.holder.clone(), l.term)).collect()
    };
    assert_eq!(kept(&later), kept(&before));

    b.signal("KILL");
    b.wait().await;
    led_by(&[4, 0]).await;
    for store in stores {
        store.close().await;
    }
}
