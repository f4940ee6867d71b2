//! The feed end to end over a real store: snapshot, events, resume, heartbeat, lag.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::domain::Origin;
use crate::domain::events::{Event, StateChanged};
use crate::domain::tenant::TenantId;
use crate::store::outbox;
use crate::store::testing::{advance, reads_failing_in_paused_time, temp_store};

#[tokio::test]
async fn a_caller_over_its_stream_share_is_refused_until_one_closes() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(
        tenant(),
        store,
        LiveSettings {
            max_streams_per_caller: 2,
            ..LiveSettings::default()
        },
    );
    let first = live.open_stream("desk").unwrap();
    let _second = live.open_stream("desk").unwrap();
    let refused = live.open_stream("desk").err().unwrap();
    assert_eq!(refused, Crowded::CallerStreams { max: 2 });
    assert_eq!(refused.limit(), Some("live.max_streams_per_caller"));
    let _other = live.open_stream("ops").unwrap();
    drop(first);
    let _third = live.open_stream("desk").unwrap();
}

fn tenant() -> TenantId {
    TenantId::default_tenant()
}

async fn change(store: &Store, agent: &str, to: &str) -> String {
    let mut tx = store.begin_write().await.unwrap();
    let change = StateChanged {
        agent_id: agent.to_owned(),
        from: None,
        to: to.parse().unwrap(),
        reason_code: None,
        origin: Origin::Api,
        idle_ms: 0,
        latency_ms: None,
        attempt_id: None,
        queue: None,
        changed_at: None,
        deferred_id: None,
    };
    let id = outbox::enqueue(
        &mut tx,
        Some(agent),
        Utc::now(),
        Event::AgentStateChanged(change),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

fn roster(ids: &[&str]) -> Vec<crate::cxone::Agent> {
    ids.iter()
        .map(|id| crate::cxone::Agent {
            id: (*id).to_owned(),
            name: format!("Agent {id}"),
            team_id: Some("t_1".into()),
            team_name: Some("Care".into()),
            skills: vec!["s_1".into()],
        })
        .collect()
}

#[tokio::test]
async fn a_client_gets_the_snapshot_then_each_event_once_in_commit_order() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    live.set_roster(&roster(&["u_1", "u_2"])).await.unwrap();
    live.load().await.unwrap();
    let mut feed = live.subscribe(Start::Fresh).await.unwrap();
    let first = feed.next().await.unwrap();
    assert_eq!(&*first.kind, "snapshot");
    let a = change(&store, "u_2", "READY").await;
    let b = change(&store, "u_1", "NOT_READY").await;
    assert_eq!(live.poll_outbox().await.unwrap(), 2);
    assert_eq!(live.poll_outbox().await.unwrap(), 0, "published once");
    let got: Vec<_> = [feed.next().await.unwrap(), feed.next().await.unwrap()]
        .into_iter()
        .map(|m| m.id.unwrap().to_string())
        .collect();
    assert_eq!(got, [a, b.clone()]);
    let snapshot = live.snapshot();
    assert_eq!(snapshot.last_event_id.as_deref(), Some(b.as_str()));
    assert_eq!(snapshot.counts["READY"], 1);
    assert_eq!(snapshot.agents[0].state.as_deref(), Some("NOT_READY"));
    assert_eq!(snapshot.agents[0].name.as_deref(), Some("Agent u_1"));
}

#[tokio::test]
async fn every_message_of_the_feed_names_its_tenant_at_the_top_level() {
    let (store, _dir) = temp_store().await;
    let alpha: TenantId = "bpo-alpha".parse().unwrap();
    let live = Live::new(alpha, store.clone(), LiveSettings::default());
    let seen = change(&store, "u_1", "READY").await;
    live.load().await.unwrap();
    let mut fresh = live.subscribe(Start::Fresh).await.unwrap();
    let mut resumed = live.subscribe(Start::After(seen)).await.unwrap();
    change(&store, "u_1", "NOT_READY").await;
    live.poll_outbox().await.unwrap();
    live.publish_board(Arc::new(MetricBoard::default()));
    live.publish_heartbeat();
    let mut kinds = Vec::new();
    for feed in [&mut fresh, &mut resumed] {
        while let Some(message) = feed.ready() {
            let frame: Value = serde_json::from_str(&message.json).unwrap();
            assert_eq!(frame["tenant"], "bpo-alpha", "{}", message.json);
            assert_eq!(frame["type"], &*message.kind, "{}", message.json);
            kinds.push(message.kind.to_string());
        }
    }
    for kind in ["snapshot", "agent.state_changed", "metrics", "heartbeat"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in {kinds:?}");
    }
    // The event is the stored body with the tenant added, nothing else changed.
    let stored = outbox::after(store.reader(), 0, 10).await.unwrap();
    let body: Value = serde_json::from_str(&stored[1].payload).unwrap();
    let mut sent: Value =
        serde_json::from_str(&Message::durable(0, live.tenant(), &stored[1]).json).unwrap();
    sent.as_object_mut().unwrap().remove("tenant");
    assert_eq!(sent, body);
}

#[tokio::test]
async fn a_client_connected_before_the_roster_is_sent_the_named_board_when_it_arrives() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    let mut early = live.subscribe(Start::Fresh).await.unwrap();
    let empty = early.next().await.unwrap();
    assert!(empty.json.contains(r#""agents":[]"#), "{}", empty.json);
    live.set_roster(&roster(&["u_1"])).await.unwrap();
    let named = early.next().await.unwrap();
    assert_eq!(&*named.kind, "snapshot");
    assert!(
        named.json.contains(r#""name":"Agent u_1""#),
        "{}",
        named.json
    );
}

#[tokio::test]
async fn a_resume_replays_what_was_missed_or_sends_a_snapshot_for_an_unknown_id() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    let seen = change(&store, "u_1", "READY").await;
    let missed = change(&store, "u_1", "NOT_READY").await;
    live.load().await.unwrap();
    let mut feed = live.subscribe(Start::After(seen)).await.unwrap();
    assert_eq!(&*feed.next().await.unwrap().kind, "metrics");
    let replayed = feed.next().await.unwrap();
    assert_eq!(replayed.id.as_deref(), Some(missed.as_str()));
    let mut feed = live
        .subscribe(Start::After("evt_pruned-long-ago".into()))
        .await
        .unwrap();
    assert_eq!(&*feed.next().await.unwrap().kind, "snapshot");
}

#[tokio::test]
async fn one_timer_sends_every_client_the_heartbeat_each_period() {
    let (store, _dir) = temp_store().await;
    // After the store is open: its pool's timeouts would fire at once in paused time.
    tokio::time::pause();
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    let stop = CancellationToken::new();
    let beating = tokio::spawn(live.clone().beat(stop.clone()));
    let mut feeds = [
        live.subscribe(Start::Fresh).await.unwrap(),
        live.subscribe(Start::Fresh).await.unwrap(),
    ];
    for feed in &mut feeds {
        assert_eq!(&*feed.next().await.unwrap().kind, "snapshot");
    }
    tokio::time::advance(Duration::from_secs(14)).await;
    tokio::task::yield_now().await;
    for feed in &mut feeds {
        assert!(feed.ready().is_none(), "no heartbeat before 15 s");
    }
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(1)).await;
        for feed in &mut feeds {
            let beat = tokio::time::timeout(Duration::from_millis(100), feed.next())
                .await
                .expect("the heartbeat at 15 s")
                .unwrap();
            assert!(beat.is_heartbeat());
            assert_eq!(&beat.sse[..], b": heartbeat\n\n", "an SSE comment");
            assert_eq!(
                serde_json::from_str::<Value>(&beat.json).unwrap()["type"],
                "heartbeat"
            );
        }
        tokio::time::advance(Duration::from_secs(14)).await;
    }
    stop.cancel();
    beating.await.unwrap();
}

#[tokio::test]
async fn a_client_that_falls_behind_the_buffer_gets_a_fresh_snapshot_not_a_gap() {
    let (store, _dir) = temp_store().await;
    let settings = LiveSettings {
        client_buffer: 16,
        ..LiveSettings::default()
    };
    let live = Live::new(tenant(), store.clone(), settings);
    let mut slow = live.subscribe(Start::Fresh).await.unwrap();
    assert_eq!(&*slow.next().await.unwrap().kind, "snapshot");
    let mut last = String::new();
    for i in 0..40 {
        last = change(&store, "u_1", if i % 2 == 0 { "READY" } else { "IDLE" }).await;
    }
    live.poll_outbox().await.unwrap();
    let resynced = slow.next().await.unwrap();
    assert_eq!(&*resynced.kind, "snapshot");
    assert_eq!(resynced.id.as_deref(), Some(last.as_str()));
    change(&store, "u_1", "READY").await;
    live.poll_outbox().await.unwrap();
    assert_eq!(&*slow.next().await.unwrap().kind, "agent.state_changed");
}

#[tokio::test]
async fn a_card_carries_a_badge_while_a_deferred_change_waits_and_loses_it_when_it_settles() {
    use crate::domain::AgentState;
    use crate::domain::events::{TransitionDeferred, TransitionExpired};
    use crate::store::deferred::{self, DeferredRow};

    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    live.set_roster(&roster(&["u_1", "u_2", "u_3"]))
        .await
        .unwrap();
    // One waits from before the feed started: the load shows it.
    let mut tx = store.begin_write().await.unwrap();
    deferred::replace(
        &mut tx,
        &DeferredRow {
            id: "dfr_1".into(),
            agent_id: "u_1".into(),
            target_state: "NOT_READY".into(),
            reason: Some("LUNCH".into()),
            origin: "api".into(),
            actor: "desk".into(),
            idempotency_key: None,
            bulk_job_id: None,
            bulk_seq: None,
            busy_since: None,
            requested_at: 1_000,
            expires_at: 901_000,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    live.load().await.unwrap();
    let badges = |live: &Live| -> Vec<Option<(String, String)>> {
        live.snapshot()
            .agents
            .iter()
            .map(|a| {
                a.deferred
                    .as_ref()
                    .map(|d| (d.deferred_id.clone(), d.to.clone()))
            })
            .collect()
    };
    assert_eq!(
        badges(&live),
        [Some(("dfr_1".into(), "NOT_READY".into())), None, None]
    );

    // Announced on the feed: u_2's card gets its badge.
    let enqueue = async |event: Event, agent: &str| {
        let mut tx = store.begin_write().await.unwrap();
        outbox::enqueue(&mut tx, Some(agent), Utc::now(), event)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    };
    enqueue(
        Event::TransitionDeferred(TransitionDeferred {
            deferred_id: "dfr_2".into(),
            agent_id: "u_2".into(),
            from: Some(AgentState::OnContact),
            to: AgentState::Paused,
            reason_code: "ADHOC".into(),
            origin: Origin::Bulk,
            actor: "desk".into(),
            expires_at: "2026-11-26T10:15:00.000Z".into(),
            replaces: None,
            bulk_job_id: Some("job_1".into()),
        }),
        "u_2",
    )
    .await;
    live.poll_outbox().await.unwrap();
    assert_eq!(
        badges(&live),
        [
            Some(("dfr_1".into(), "NOT_READY".into())),
            Some(("dfr_2".into(), "PAUSED".into())),
            None
        ]
    );

    // Settled: made (the change names it), expired; a change that names no deferred
    // change (u_3's own) leaves badges alone.
    enqueue(
        Event::AgentStateChanged(StateChanged {
            agent_id: "u_1".into(),
            from: Some(AgentState::Ready),
            to: AgentState::NotReady,
            reason_code: Some("LUNCH".into()),
            origin: Origin::Api,
            idle_ms: 0,
            latency_ms: Some(5),
            attempt_id: Some("att_1".into()),
            queue: None,
            changed_at: None,
            deferred_id: Some("dfr_1".into()),
        }),
        "u_1",
    )
    .await;
    change(&store, "u_2", "ACW").await;
    live.poll_outbox().await.unwrap();
    assert_eq!(
        badges(&live),
        [None, Some(("dfr_2".into(), "PAUSED".into())), None],
        "only the change naming it settles a badge"
    );
    enqueue(
        Event::TransitionExpired(TransitionExpired {
            deferred_id: "dfr_2".into(),
            agent_id: "u_2".into(),
            to: AgentState::Paused,
            reason_code: "ADHOC".into(),
            origin: Origin::Bulk,
            deferred_at: "2026-11-26T10:00:00.000Z".into(),
            expires_at: "2026-11-26T10:15:00.000Z".into(),
        }),
        "u_2",
    )
    .await;
    live.poll_outbox().await.unwrap();
    assert_eq!(badges(&live), [None, None, None]);
}

#[tokio::test]
async fn a_leader_shares_the_board_its_pollers_filled_before_the_feed_started() {
    use crate::domain::metrics::MetricBoard;
    use crate::store::live_shared::{self, View};

    let (store, _dir) = temp_store().await;
    store.set_role(crate::store::InstanceRole::Leader {
        instance: "wfmd-a".into(),
        term: 1,
    });
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    // The first poll answered while the feed was still loading the store: no change
    // will come until the next poll, a whole interval later.
    let (board, receiver) = crate::engine::metrics::board_channel();
    let polled = Arc::new(MetricBoard {
        skills_polled_at: Some(Utc::now()),
        ..MetricBoard::default()
    });
    board.send_replace(polled.clone());
    let stop = CancellationToken::new();
    let following = tokio::spawn(live.follow_board(stop.clone(), receiver));
    let mut shared: Option<MetricBoard> = None;
    crate::store::testing::eventually("the board was not shared", async || {
        shared = live_shared::changed(store.reader(), View::Board, 0)
            .await
            .unwrap()
            .map(|(shared, _)| shared);
        shared.is_some()
    })
    .await;
    assert_eq!(shared.unwrap(), *polled);
    stop.cancel();
    following.await.unwrap();
}

/// A feed among several instances, on a follower, running its loops; returns once its
/// first reads (the outbox, the leader's shared figures) are done.
async fn following_feed(store: &Store) -> (Live, CancellationToken, tokio::task::JoinHandle<()>) {
    store.set_role(crate::store::InstanceRole::Follower);
    let settings = LiveSettings {
        served_by: Some("wfmd-b".into()),
        ..LiveSettings::default()
    };
    let live = Live::new(tenant(), store.clone(), settings);
    let (board, _) = crate::engine::metrics::board_channel();
    let stop = CancellationToken::new();
    let running = tokio::spawn(live.clone().run(stop.clone(), board, None, None));
    crate::store::testing::eventually("the feed never read", async || {
        live.last_read(rest::ReadOf::Outbox).is_some()
            && live.last_read(rest::ReadOf::Leader).is_some()
    })
    .await;
    (live, stop, running)
}

#[tokio::test]
async fn a_feed_nobody_watches_keeps_none_of_the_messages_it_publishes() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    let (board, _) = crate::engine::metrics::board_channel();
    let judge = AdherenceJudge {
        judging: crate::engine::compliance::JudgingHandle::new(
            crate::domain::adherence_rules::Judging::builtin(chrono::TimeDelta::minutes(2)),
        ),
        clock: crate::engine::Clock::Wall,
    };
    let stop = CancellationToken::new();
    let running = tokio::spawn(live.clone().run(stop.clone(), board, None, Some(judge)));
    let ring = &live.inner.sender;
    // A client watches: it and the adherence loop read the feed.
    let client = live.subscribe(Start::Fresh).await.unwrap();
    crate::store::testing::eventually("the adherence loop never read the feed", async || {
        ring.receiver_count() == 2
    })
    .await;
    // It leaves; the loop notices at the next message.
    drop(client);
    crate::store::testing::eventually("the adherence loop still reads the feed", async || {
        live.publish_heartbeat();
        ring.receiver_count() == 0
    })
    .await;
    for _ in 0..100 {
        live.publish_heartbeat();
        live.publish_board(Arc::new(crate::engine::metrics::MetricBoard::default()));
    }
    assert_eq!(ring.len(), 0, "messages kept with nobody watching");
    // The next client is watched over again.
    let _client = live.subscribe(Start::Fresh).await.unwrap();
    crate::store::testing::eventually("the adherence loop does not come back", async || {
        ring.receiver_count() == 2
    })
    .await;
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_feed_nobody_watches_reads_nothing_periodically_until_its_safety_tick() {
    let (store, _dir) = temp_store().await;
    let (_live, stop, running) = following_feed(&store).await;
    let (warnings, _logging) = reads_failing_in_paused_time(&store, "wfmd::live").await;
    for _ in 0..58 {
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        warnings.count(),
        0,
        "no read of the outbox or of the leader's figures within a minute"
    );
    advance(Duration::from_secs(3)).await;
    assert!(
        warnings.count() >= 2,
        "the safety tick reads both: {}",
        warnings.count()
    );
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn a_commit_announced_while_nobody_watches_is_read_when_someone_reads_the_snapshot() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    let (board, _) = crate::engine::metrics::board_channel();
    let stop = CancellationToken::new();
    let running = tokio::spawn(live.clone().run(stop.clone(), board, None, None));
    crate::store::testing::eventually("the feed never read", async || {
        live.last_read(rest::ReadOf::Outbox).is_some()
    })
    .await;
    let (warnings, _logging) = reads_failing_in_paused_time(&store, "wfmd::live").await;
    store.notify_outbox();
    advance(Duration::from_secs(1)).await;
    assert_eq!(
        warnings.count(),
        0,
        "the commit was read with nobody watching"
    );
    // A second after the last read, a watched feed's would count as fresh; the commit
    // announced since makes it stale.
    live.catch_up().await;
    assert_eq!(warnings.count(), 1, "the reader was not sent the commit");
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn the_first_client_after_nobody_watched_is_sent_what_another_process_committed() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    live.set_roster(&roster(&["u_1"])).await.unwrap();
    live.load().await.unwrap();
    // `wfmd transition` in another process: nothing announces it here.
    let made = change(&store, "u_1", "READY").await;
    let mut feed = live.subscribe(Start::Fresh).await.unwrap();
    let first = feed.next().await.unwrap();
    assert_eq!(&*first.kind, "snapshot");
    assert_eq!(first.id.as_deref(), Some(made.as_str()), "{}", first.json);
    let frame: Value = serde_json::from_str(&first.json).unwrap();
    assert_eq!(
        frame["data"]["agents"][0]["state"], "READY",
        "{}",
        first.json
    );
}

#[tokio::test]
async fn a_reader_without_a_stream_is_served_what_another_process_committed() {
    let (store, _dir) = temp_store().await;
    let live = Live::new(tenant(), store.clone(), LiveSettings::default());
    live.set_roster(&roster(&["u_1"])).await.unwrap();
    live.load().await.unwrap();
    let made = change(&store, "u_1", "NOT_READY").await;
    let snapshot: Value = serde_json::from_slice(&live.snapshot_json().await).unwrap();
    assert_eq!(snapshot["last_event_id"], made.as_str(), "{snapshot}");
    assert_eq!(snapshot["agents"][0]["state"], "NOT_READY", "{snapshot}");
}

#[tokio::test]
async fn a_followers_first_client_is_sent_the_board_the_leader_shares_now() {
    use crate::store::live_shared::{self, View};

    let (store, _dir) = temp_store().await;
    let (live, stop, running) = following_feed(&store).await;
    // The leader shares a board after the follower's last read; its next periodic
    // read would be a minute away.
    let shared = MetricBoard {
        skills_polled_at: Some(Utc::now()),
        ..MetricBoard::default()
    };
    let now = Utc::now().timestamp_millis();
    live_shared::publish(&store, View::Board, &shared, now + 1)
        .await
        .unwrap();
    let mut feed = live.subscribe(Start::Fresh).await.unwrap();
    let first = feed.next().await.unwrap();
    assert_eq!(&*first.kind, "snapshot");
    let frame: Value = serde_json::from_str(&first.json).unwrap();
    let polled_at = serde_json::to_value(shared.skills_polled_at).unwrap();
    assert_eq!(
        frame["data"]["skills_polled_at"], polled_at,
        "{}",
        first.json
    );
    stop.cancel();
    running.await.unwrap();
}

/// Not a check but the measure of what a feed nobody watches costs the database: one
/// tenant's feed on a follower among several instances, on PostgreSQL, for a minute;
/// prints the table scans (each of the feed's reads scans one table) it made.
/// `cargo test --lib live::tests::measure_a_feed_at_rest -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: a minute of real time"]
async fn measure_a_feed_at_rest() {
    use crate::store::Backend;

    let dir = tempfile::tempdir().unwrap();
    let url = crate::store::testing::temp_url_on(Backend::Postgres, &dir);
    // Its own connection, not a store: opening one reads (migrations).
    let scans = async || -> i64 {
        use sqlx::Connection;
        let mut probe = sqlx_postgres::PgConnection::connect(&url).await.unwrap();
        let count = sqlx::query_scalar(
            "SELECT COALESCE(SUM(COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0)), 0)::BIGINT
             FROM pg_stat_user_tables",
        )
        .fetch_one(&mut probe)
        .await
        .unwrap();
        probe.close().await.unwrap();
        count
    };
    let store = Store::open(&url).await.unwrap();
    store.set_role(crate::store::InstanceRole::Follower);
    let live = Live::new(
        tenant(),
        store.clone(),
        LiveSettings {
            served_by: Some("wfmd-b".into()),
            ..LiveSettings::default()
        },
    );
    let (board, _) = crate::engine::metrics::board_channel();
    let stop = CancellationToken::new();
    let running = tokio::spawn(live.clone().run(stop.clone(), board, None, None));
    // Past its start, whose reads (migrations) the server counts within 10 s of them;
    // then a minute at rest.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = scans().await;
    let window: u64 = std::env::var("WINDOW").map_or(60, |w| w.parse().unwrap());
    tokio::time::sleep(Duration::from_secs(window)).await;
    stop.cancel();
    running.await.unwrap();
    store.close().await;
    // Closed connections have reported their counts.
    let after = scans().await;
    println!("a feed at rest: {} table scans in 60 s", after - before);
}
