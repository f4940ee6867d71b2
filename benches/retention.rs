//! Retention benchmark: a pruning pass over a database of 1,000,000 recorded changes
//! while 32 writers commit changes the way the engine records them.
//!
//! - p99 commit latency of the writers (`BEGIN IMMEDIATE` → interval switch, attempt,
//!   audit entry, outbox event → `COMMIT`, fsync-durable), counted from when each commit
//!   was due, with pruning against without in the same run: the pass runs in windows of
//!   `PRUNE_WINDOW` with a `PAUSE` after each (stopped after the step in progress, the
//!   next window goes on where it stopped). Commits due in a window or in the first
//!   `SETTLE` after it count as with pruning (that much of what a window leaves behind
//!   is its cost), the rest of each pause as without. Target: ≤ 1.5 × without, over the
//!   whole pass and in each half of it; when the halves disagree, the host moved under
//!   the run and the verdict is NOT SHOWN. The minutes before and after the pass are
//!   printed beside it, not judged;
//! - the file's size after the pass and its incremental vacuum, against the retention
//!   bound: at most 1.25 × a compact copy (`VACUUM INTO`) of what is kept.
//!
//! The changes are written directly (a chained audit entry, closed interval, attempt,
//! delivered outbox event with its delivery and attempt each), spread evenly over the
//! last 500 days, so the default `[retention]` ages apply: webhook records older than
//! 30 days and intervals, attempts and audit entries older than 400 days go (audit
//! entries up to the published checkpoint made when the older part was written).
//!
//! The writers commit 100 times a second together, each commit one recorded change:
//! the most the platform's request budget lets the daemon make (`requests_per_minute` at
//! its highest, 6,000, less the polls). Webhook bookkeeping rides beside it in batches
//! and is not modelled. A heavier load measures the host, not pruning: at 320 a second
//! (this benchmark's earlier load) the write path of a shared 2-core host is busy 50 to
//! 80 % of the time with no pruning at all, a few slow fsyncs queue commits for seconds,
//! and runs without pruning gave a p99 from 9 ms to 13 s. Each writer's commits are due
//! at random times (exponential gaps averaging `WRITER_PAUSE`), not a fixed pause after
//! the last one: after a fixed pause, writers that once waited together come back
//! together, and the benchmark measured its own lock-step. A writer behind its times
//! commits at once and the delay counts. The first `WARM_UP` of commits after the fill
//! is not counted. The breakdown by part of the pass and the host's CPU steal are
//! printed with the figure.
//!
//! Why windows: the run without pruning used to be the two minutes before the pass, and
//! a pass beside these writers lasts most of an hour. Minutes of the same writers on
//! this host differ by more than the target allows, and an hour meets stalls of the
//! host that two minutes mostly do not. The quietest full run so (the host stealing 1 %
//! before the pass and 3 % during it) gave 8.5 ms in the two minutes before, 39.8 ms
//! over the 38-minute pass (4.7x), and 60.9 ms in the minute after it, with no pass
//! running; its longest commit waited 2.2 s, in a part whose longest step held the lock
//! 60 ms. Windows spread both sides over the same hour.
//!
//! Run: `cargo bench --bench retention` (40 minutes on a quiet host, an hour or more on
//! a busy one: it builds the database first, beside these writers the pass rests
//! nineteen times as long as each step, and it pauses after each window).
//!
//! Earlier figures, with writers pausing a fixed 100 ms after each commit and one 30 s
//! baseline before the pass: with fixed batches of 500 rows, p99 commit 11.9 ms without
//! pruning and 104.9 ms with (8.8x, the pass 160 s); with steps sized to hold the lock
//! about 4 ms, 11.5 and 27.5 ms (2.4x, the pass 351 s); size after the pass about 605 MB
//! against a bound of about 720 MB. On another host of the same kind the same code gave
//! 9.0 and 38.2 ms, then 12.6 and 49.0 ms; baselines of later runs ranged from 9 to
//! 63 ms with the host stealing up to half of the CPU.
//!
//! At 100 commits a second, with the warm-up: with SQLite checkpointing in whichever
//! commit takes the log past 1,000 pages, 26.1 ms without pruning and 76.2 ms with
//! (2.9x; the vacuum's part 132 ms). With housekeeping's pages written back after it
//! gives the turn back (`Housekeeping::finish`): 6.1 and 28.6 ms (4.7x), 28.7 and
//! 52.2 ms (1.8x), 112.8 and 42.6 ms (0.4x); the window after the pass alone gave 5.8,
//! 7.9 and 6.4 ms, while the window before it, right after the fill, varied from 6.5 to
//! 210 ms with the host stealing up to 13 %. Resting nine times as long as each step
//! (a tenth of the time) instead of as long: 8.4 and 31.3 ms, the pass 987 s instead of
//! 131 s: the writers' tail does not come from how often a step holds the lock.
//! By part, against a quiet minute before the pass of 9.2 ms: the deletes 12.7 to
//! 13.6 ms (their steps holding p90 4.4 to 4.8 ms), the vacuum 50.4 ms (p90 10.6 ms,
//! longest 87 ms). Vacuum steps allowed down to one page held p90 6.5 ms but the
//! writers' own commits slowed (p99 18.7 ms): the vacuum's writeback is what remains.
//! Timing the vacuum alone (the pruned file copied, not refilled, with these writers;
//! a throwaway harness): steps sized by their hold gave the writers a p99 of 35.6 and
//! 39.6 ms, fixed 16-page steps 13.8 and 17.3 ms (holds p90 2.0 ms), 8-page steps
//! 27.0 ms, against 5.6 to 10.4 ms before and after. The one full run with 16-page
//! steps so far had the host stealing 30 % before the pass and 20 % during it (3.5 s
//! without pruning, 15.6 s with, 5.8 ms in the minute after) and says nothing.
//!
//! Later runs with 16-page steps, then comparing against the minutes before and after
//! the pass together: the three passes with the host stealing 1 % or less gave 12.1,
//! 13.6 and 12.5 ms (the last two resting three times as long as each step, with a 2 ms
//! hold target, the last also checkpointing every eighth step: neither moved the
//! figure, and the pass took 609 and 527 s instead of 188 s). The minute before them
//! gave 5.8, 5.8 and 25.2 ms; the minute after 248.7, 103.5 and 42.2 ms, and printed
//! MET at 0.08 to 0.39x. Every minute after a pass, in six runs, gave 36 to 249 ms,
//! while in two runs with no pass at all (20 s idle in its place) the minute before, the
//! idle seconds and the minute after gave 13.5, 6.9, 14.7 and 8.1, 6.9, 5.2 ms: the
//! minute after a pass is mostly slowed by it (a later run's gave 5.3 ms, so not
//! always), which made the baseline look worse and so the ratio better. Hence a
//! baseline of the minutes before the pass only. Against their 5.8 ms the quiet passes
//! were 2.1 to 2.3x (a later one 10.5 ms, 2.0x its calm minute of 5.35 ms): the target
//! is not met.
//!
//! Sorting each commit by whether a step held the lock while it waited (a throwaway
//! harness: a minute of one part of the pass against the minute before) showed the tail
//! is the writers queueing behind steps, their own commits no slower, and that it
//! follows how often a commit meets a step: resting as long as each step, 1.8 to 2.2x
//! in quiet minutes; four times as long, 1.4x for the deletes and 2.0x for the vacuum;
//! nineteen times as long, 1.2x for the vacuum. Hence the pass's rest while the engine
//! writes (`BUSY_REST` in `engine::retention`). The first full run with it took 3,626 s
//! for the pass and says nothing: the host stole 5 % before the pass (its two minutes
//! 10.6 and 60.6 ms: NOT SHOWN) and 14 % during it, with writers stalled up to 31.7 s.
//! The second is the quiet run above: 4.7x against the minutes before, the deletes'
//! parts 19 to 83 ms (steps holding p90 5 to 6 ms), the vacuum's 15.5 ms (p90 8 ms).
//!
//! With windows, two runs, both NOT SHOWN. The first: 18.7 ms in the pauses, 19.7 ms
//! with pruning (1.05x), but 0.65x in the first half, whose pauses the host slowed, and
//! 2.02x in the quiet second half, mostly the vacuum (12.2 ms). The second: a host stall
//! of several seconds in the middle (the pauses' p99 710 ms; 1.34x overall, 71.8x and
//! 0.17x by half); the vacuum, after it, 46.5 ms against 8.3 ms in the pauses between
//! its windows (5.6x), its steps holding p90 9.4 ms and up to 96 ms. The settle seconds
//! after each window were no slower than the pauses (16.3 against 18.7 ms). So the
//! vacuum beside the writers is what is left: with the pass resting 19 times each step,
//! about one commit in twenty meets a step, more than the one in a hundred the p99
//! looks at.
//!
//! The quietest windowed run so far (the host stealing 1 to 2 %): 18.7 ms in the
//! pauses, 35.5 ms with pruning, 1.90x, its halves 2.19 and 1.66x: MISSED. The vacuum
//! again furthest off, 28.2 ms against 6.0 ms in its pauses (4.7x), its commits waiting
//! 21.4 ms for the write connection, their own time 7.4 ms, its steps holding p90
//! 7.1 ms. Hence vacuum steps that give way to a waiting engine write
//! (`MOST_GIVEN_WAY` in `engine::retention`). A harness alternating 45 s vacuum windows
//! with and without giving way, beside these writers (the host stealing 1.5 %), gave
//! 15.1 against 19.7 ms, lower in each of its four pairs of windows; the one full run
//! with it so far was noisy (the vacuum's pauses 35.4 ms) and says little.
//!
//! Three full runs with it on a quieter, faster host (no CPU stolen, commits p50 2 ms,
//! the pass 36 to 44 minutes): 1.26x (halves 1.24 and 1.72x), 0.37x and 1.61x (halves
//! 1.89 and 1.38x). The middle one printed MET only because stalls of the disk slowed
//! its pauses (their p99 27.8 ms against 4.6 and 5.1 ms in the others): not a result.
//! The vacuum came within its pauses in two of the three (0.61x and 0.85x; 2.20x in the
//! first). The deletes of attempts and intervals did not: 1.58 to 1.72x where the host
//! was calm, the engine's own commits taking twice as long as during the other parts
//! (4.4 to 4.7 against 2.2 ms), and in two runs stalls of hundreds of milliseconds during those
//! parts that slowed the pauses after their windows too.
//!
//! Why, once each step's checkpoint was measured (the frames it wrote back and how
//! long, printed under each part): those two tables are indexed by agent, and a step
//! deleting the oldest rows touches about one scattered index page a row. Steps sized
//! by their hold alone (about 410 rows, p90 3.7 ms) wrote back about 830 log frames each
//! in p90 10 ms, and the writers' own commits, their syncs queued behind it, took p99
//! 7.0 ms (3.9 ms in the minute before; one window of the attempts part). Steps are now
//! also sized so their writeback takes no longer than the hold target (`StepSize` in
//! `engine::retention`): about 110 rows, 280 frames in p90 3.9 ms. Two full runs with it
//! on the same quiet host (no CPU stolen, the pass 2,054 and 2,057 s): 4.67 ms in the
//! pauses, 4.52 ms with pruning, 0.97x (halves 1.02 and 0.91x), and 4.68 against
//! 4.46 ms, 0.95x (halves 1.03 and 0.87x): MET, the two agreeing, with the minutes
//! before the pass at 4.17 and 4.27 ms. Every part came within 1.1x of its own pauses
//! in both: outbox_delivered 1.09 and 1.04x, attempts 0.96 and 0.98x, intervals 0.97
//! and 0.99x, audit 1.07 and 0.99x, the vacuum 0.81 and 0.75x; size 692 and 693 MB
//! against bounds of 825 and 826 MB.

// A bench drives the daemon from outside, in no tenant's scope: it spawns plainly
// (see `clippy.toml`).
#![allow(clippy::disallowed_methods)]

mod common;

use common::CpuTimes;
use wfmd::on;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use wfmd::domain::events::{Event, StateChanged};
use wfmd::domain::{AgentState, Origin};
use wfmd::engine::retention::{PassPart, Retention};
use wfmd::store::Store;
use wfmd::store::attempts::{self, AttemptRow};
use wfmd::store::audit::checkpoints;
use wfmd::store::audit::{self, NewEntry};
use wfmd::store::history::{self, NewInterval};
use wfmd::store::outbox;
use wfmd::store::retention::Kind;

const CHANGES: usize = 1_000_000;
const CHUNK: usize = 10_000;
const SPAN_DAYS: i64 = 500;
const AGENTS: usize = 2_000;
const WRITERS: usize = 32;
const WRITER_PAUSE: Duration = Duration::from_millis(320);
const WARM_UP: Duration = Duration::from_secs(15);
/// The writers alone before the pass and after it: reported, not judged.
const ALONE: Duration = Duration::from_secs(60);
/// How long the pass runs before it is stopped for a pause.
const PRUNE_WINDOW: Duration = Duration::from_secs(60);
/// The pause after each window of pruning: the writers' commits in it, from `SETTLE` on,
/// are the run without pruning.
const PAUSE: Duration = Duration::from_secs(40);
/// The start of each pause, counted with pruning: the writeback of what the window wrote.
const SETTLE: Duration = Duration::from_secs(20);
const LATENCY_TARGET: f64 = 1.5;
const SIZE_SLACK: f64 = 1.25;

fn main() {
    let runtime = common::runtime();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let store = Store::open(&url).await.unwrap();
        let now = Utc::now();

        let started = Instant::now();
        fill(&store, now).await;
        let (size_before, _) = wfmd::store::retention::size(&store).await.unwrap();
        println!(
            "built {CHANGES} changes over {SPAN_DAYS} days in {:.0?}: {:.0} MB",
            started.elapsed(),
            mb(size_before)
        );
        settle(&store).await;

        let config = wfmd::config::Config::default();
        let retention = Retention::new(store.clone(), &config.retention, &config.audit);
        let writers = Writers::start(&store);
        // The first seconds of commits after the fill grow the log file and warm caches:
        // not counted, in any window.
        tokio::time::sleep(WARM_UP).await;
        writers.set(Phase::Before);
        let cpu_before = CpuTimes::now();
        let before_started = Instant::now();
        tokio::time::sleep(ALONE).await;

        // The pass, in windows of `PRUNE_WINDOW` with a `PAUSE` after each: it stops
        // after the step in progress and the next window goes on where it stopped.
        let cpu_pass = CpuTimes::now();
        let started = Instant::now();
        let mut removed: Vec<(Kind, u64)> = Vec::new();
        let mut parts: Vec<PassPart> = Vec::new();
        let mut windows = 0;
        loop {
            writers.set(Phase::Pruning);
            windows += 1;
            let stop = CancellationToken::new();
            let timer = tokio::spawn({
                let stop = stop.clone();
                async move {
                    tokio::time::sleep(PRUNE_WINDOW).await;
                    stop.cancel();
                }
            });
            let report = retention.prune(now, &stop).await.unwrap();
            timer.abort();
            for (kind, n) in report.removed {
                match removed.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, total)) => *total += n,
                    None => removed.push((kind, n)),
                }
            }
            parts.extend(report.parts);
            if !stop.is_cancelled() {
                break;
            }
            writers.set(Phase::Settling);
            tokio::time::sleep(SETTLE).await;
            writers.set(Phase::Paused);
            tokio::time::sleep(PAUSE - SETTLE).await;
        }
        // The writeback of what the last window wrote is its cost too.
        settle(&store).await;
        let pass_took = started.elapsed();
        writers.set(Phase::After);
        let cpu_after = CpuTimes::now();
        tokio::time::sleep(ALONE).await;
        let cpu_end = CpuTimes::now();
        let mut commits_all = writers.stop().await;
        commits_all.retain(|c| c.phase != Phase::WarmUp);
        let in_phases = |phases: &[Phase]| select(&commits_all, |c| phases.contains(&c.phase));
        let without = in_phases(&[Phase::Paused]);
        let with = in_phases(&[Phase::Pruning, Phase::Settling]);
        let (pruning, settling) = (in_phases(&[Phase::Pruning]), in_phases(&[Phase::Settling]));
        let (before, after) = (in_phases(&[Phase::Before]), in_phases(&[Phase::After]));

        let (size_after, free_after) = wfmd::store::retention::size(&store).await.unwrap();
        let compact = dir.path().join("compact.db");
        on!(store.reader(), |c| sqlx::query("VACUUM INTO $1")
            .bind(compact.to_string_lossy().into_owned())
            .execute(c)
            .await
            .map(wfmd::store::Done::from))
        .unwrap();
        let compact_size = std::fs::metadata(&compact).unwrap().len();

        for (kind, n) in &removed {
            println!("  removed {n:>9} {kind}");
        }
        let took = |c: &Commit| c.took;
        let waited = |c: &Commit| c.waited;
        let ratio = |with: &[Commit], without: &[Commit]| p99(with, took) / p99(without, took);
        // The same comparison in each half of the pass: a host that moved under the run
        // moves one half, and then neither the ratio nor its verdict holds.
        let middle = started + pass_took / 2;
        let halves: Vec<f64> = [true, false]
            .into_iter()
            .map(|first| {
                let half = |commits: &[Commit]| select(commits, |c| (c.at < middle) == first);
                ratio(&half(&with), &half(&without))
            })
            .collect();
        let whole = ratio(&with, &without);
        let met = |r: f64| r <= LATENCY_TARGET;
        let verdict = if halves.iter().all(|&r| met(r) == met(whole)) {
            common::verdict(met(whole))
        } else {
            "NOT SHOWN: the halves of the pass disagree, so the host, not the pass, set the \
             figures"
        };
        println!(
            "pass over {CHANGES} changes took {pass_took:.1?} in {windows} windows of \
             {PRUNE_WINDOW:?}, {PAUSE:?} apart, with {WRITERS} writers committing (each at \
             random, {WRITER_PAUSE:?} apart on average)"
        );
        println!(
            "p99 commit latency: without pruning {:.2} ms ({} commits in the pauses, from \
             {SETTLE:?} after each window on), with pruning {:.2} ms ({} commits in the windows \
             and the {SETTLE:?} after each): {whole:.2}x (target <= {LATENCY_TARGET}x; in each \
             half of the pass {:.2}x and {:.2}x) {verdict}",
            p99(&without, took),
            without.len(),
            p99(&with, took),
            with.len(),
            halves[0],
            halves[1],
        );
        if let (Some(a), Some(b), Some(c), Some(d)) = (cpu_before, cpu_pass, cpu_after, cpu_end) {
            println!(
                "  CPU stolen by the host: {:.0} % before the pass, {:.0} % during, {:.0} % after",
                a.steal_since(b) * 100.0,
                b.steal_since(c) * 100.0,
                c.steal_since(d) * 100.0
            );
        }
        // Each window on its own, with its longest commit and when it was due: a stall
        // of the disk or the host shows as one long commit in one window, not in all.
        for (name, window) in [
            ("in the pauses", &without),
            ("pruning", &pruning),
            ("settling after", &settling),
            ("minute before", &before),
            ("minute after", &after),
        ] {
            if let Some(longest) = window.iter().max_by(|a, b| a.took.total_cmp(&b.took)) {
                println!(
                    "  {name:<15} p50 {:>7.2} ms, p99 {:>7.2} ms, longest {:>8.2} ms \
                     (due {:.1?} after the minute before began)",
                    percentile(window, took, 50),
                    percentile(window, took, 99),
                    longest.took,
                    longest.at.saturating_duration_since(before_started)
                );
            }
        }
        println!(
            "  of which waiting for the write connection: p99 {:.2} ms without, {:.2} ms with",
            p99(&without, waited),
            p99(&with, waited)
        );
        // By part of the pass, over all the windows it ran in. What the writers waited
        // for: the pass's holds, or each other's commits (their own part of a commit,
        // from having the connection to the end).
        let mut names: Vec<&str> = Vec::new();
        for part in &parts {
            if !names.contains(&part.name) {
                names.push(part.name);
            }
        }
        for name in names {
            // Each window starts the pass over, so a kind already done shows again in
            // every later window with one step that found nothing: not its windows.
            let of_part: Vec<&PassPart> = parts
                .iter()
                .filter(|p| p.name == name && p.steps > 1)
                .collect();
            let during = select(&pruning, |c| {
                of_part
                    .iter()
                    .any(|p| c.at >= p.started && c.at < p.started + p.took)
            });
            if during.is_empty() {
                continue;
            }
            // Its pauses: those between and right after its windows.
            let from = of_part.iter().map(|p| p.started).min().unwrap_or(started);
            let to = of_part
                .iter()
                .map(|p| p.started + p.took + PAUSE)
                .max()
                .unwrap_or(started);
            let paused = select(&without, |c| c.at >= from && c.at < to);
            // A window's figures say little when the part had only a few steps in it.
            let in_median_window = |figure: fn(&PassPart) -> f64| {
                let figures: Vec<f64> = of_part
                    .iter()
                    .filter(|p| p.steps >= 10)
                    .map(|p| figure(p))
                    .collect();
                if figures.is_empty() {
                    0.0
                } else {
                    common::median(figures)
                }
            };
            let p90 = in_median_window(|p| p.hold_p90.as_secs_f64() * 1e3);
            let longest = of_part.iter().map(|p| p.longest_hold).max();
            println!(
                "  during {name:<16} {:>7.1?}: {:>6} commits, p99 {:>6.2} ms (waiting {:>6.2} ms, \
                 own {:>6.2} ms), {:.2}x its pauses' {:.2} ms; {} steps ({} gave way) holding \
                 p90 {:.1} ms in its median window, longest {:.1?}",
                of_part.iter().map(|p| p.took).sum::<Duration>(),
                during.len(),
                p99(&during, took),
                p99(&during, waited),
                p99(&during, |c| c.took - c.waited),
                ratio(&during, &paused),
                p99(&paused, took),
                of_part.iter().map(|p| p.steps).sum::<usize>(),
                of_part.iter().map(|p| p.gave_way).sum::<usize>(),
                p90,
                longest.unwrap_or_default()
            );
            println!(
                "    writing back after each step: {:.0} log frames (median), p90 {:.1} ms, \
                 in its median window",
                in_median_window(|p| p.frames_p50 as f64),
                in_median_window(|p| p.writeback_p90.as_secs_f64() * 1e3),
            );
        }
        let bound = compact_size as f64 * SIZE_SLACK;
        println!(
            "size: before {:.0} MB, after pass and incremental vacuum {:.0} MB ({:.1} MB \
             free), compact copy of what is kept {:.0} MB; bound {SIZE_SLACK} x compact = \
             {:.0} MB {}",
            mb(size_before),
            mb(size_after),
            mb(free_after),
            mb(compact_size),
            bound / 1e6,
            common::verdict((size_after as f64) <= bound)
        );
        let verification = audit::verify(store.reader()).await.unwrap();
        println!("audit after the pass: {}", verification.describe());
        store.close().await;
    });
}

/// Lets the disk settle after the fill: the log copied back and emptied, and the
/// kernel's dirty pages written, so the baseline does not measure the fill's writeback.
async fn settle(store: &Store) {
    on!(store.reader(), |c| sqlx::query(
        "PRAGMA wal_checkpoint(TRUNCATE)"
    )
    .execute(c)
    .await
    .map(wfmd::store::Done::from))
    .unwrap();
    let synced = std::process::Command::new("sync").status().unwrap();
    assert!(synced.success(), "sync failed: {synced}");
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// The commits of `commits` that `keep` keeps.
fn select(commits: &[Commit], keep: impl Fn(&Commit) -> bool) -> Vec<Commit> {
    commits.iter().filter(|c| keep(c)).copied().collect()
}

/// The 99th percentile of `of` over `commits` (0 when there are none).
fn p99(commits: &[Commit], of: impl Fn(&Commit) -> f64) -> f64 {
    percentile(commits, of, 99)
}

/// The `pct`th percentile of `of` over `commits` (0 when there are none).
fn percentile(commits: &[Commit], of: impl Fn(&Commit) -> f64, pct: usize) -> f64 {
    let mut sorted: Vec<f64> = commits.iter().map(of).collect();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get((sorted.len() * pct / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// Writes `CHANGES` recorded changes spread over the `SPAN_DAYS` before `now`, and a
/// published audit checkpoint once the part older than 400 days is written (what the
/// hourly checkpoint would have left).
async fn fill(store: &Store, now: DateTime<Utc>) {
    let start = now - TimeDelta::days(SPAN_DAYS);
    let step_ms = SPAN_DAYS * 86_400_000 / CHANGES as i64;
    let old_part = CHANGES * (SPAN_DAYS as usize - 400) / SPAN_DAYS as usize;
    let mut first = 0;
    while first < CHANGES {
        // Chunks end at the old part's end, where the checkpoint goes.
        let end = (first + CHUNK).min(if first < old_part { old_part } else { CHANGES });
        let chunk = end - first;
        let at = |i: usize| start + TimeDelta::milliseconds(step_ms * i as i64);
        let ids: Vec<String> = (first..end).map(|i| format!("att-{i:08}")).collect();
        let agents: Vec<String> = (first..end)
            .map(|i| format!("u_{:04}", i % AGENTS))
            .collect();
        let mut tx = store.begin_write().await.unwrap();
        let entries: Vec<NewEntry<'_>> = (0..chunk)
            .map(|k| NewEntry {
                at: at(first + k),
                actor: "api",
                action: "transition.succeeded",
                agent_id: Some(&agents[k]),
                subject_id: Some(&ids[k]),
                detail: json!({"from": "READY", "to": "NOT_READY", "reason": "BREAK",
                               "origin": "api", "latencyMs": 120}),
            })
            .collect();
        audit::append_all(&mut tx, &entries).await.unwrap();
        let rows: Vec<_> = (0..chunk)
            .map(|k| {
                let t = at(first + k).timestamp_millis();
                json!([ids[k], agents[k], t, t + step_ms])
            })
            .collect();
        let rows = json!(rows).to_string();
        for sql in [
            "INSERT INTO state_intervals (agent_id, state, reason, origin, started_at, ended_at,
                 attempt_id)
             SELECT value->>1, 'NOT_READY', 'BREAK', 'api', value->>2, value->>3, value->>0
             FROM json_each(?1)",
            "INSERT INTO transition_attempts (id, agent_id, from_state, target_state, reason,
                 origin, actor, outcome, latency_ms, requested_at, completed_at)
             SELECT value->>0, value->>1, 'READY', 'NOT_READY', 'BREAK', 'api', 'api',
                 'succeeded', 120, value->>2, (value->>2) + 120 FROM json_each(?1)",
            "INSERT INTO outbox_events (id, event_type, agent_id, payload, created_at)
             SELECT 'evt_' || (value->>0), 'agent.state_changed', value->>1,
                 json_object('type', 'agent.state_changed', 'id', 'evt_' || (value->>0),
                     'data', json_object('agentId', value->>1, 'from', 'READY',
                         'to', 'NOT_READY', 'reasonCode', 'BREAK', 'origin', 'api',
                         'idleMs', 0, 'latencyMs', 120, 'attemptId', value->>0)),
                 value->>2
             FROM json_each(?1)",
            "INSERT INTO webhook_deliveries (event_seq, endpoint, event_type, agent_id, status,
                 attempts, next_attempt_at, created_at, delivered_at, last_status)
             SELECT e.seq, 'https://hooks.example.com/wfmd', e.event_type, e.agent_id,
                 'delivered', 1, e.created_at, e.created_at, e.created_at + 40, 200
             FROM json_each(?1) j JOIN outbox_events e ON e.id = 'evt_' || (j.value->>0)",
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, duration_ms)
             SELECT d.id, d.created_at, 200, 40
             FROM json_each(?1) j JOIN outbox_events e ON e.id = 'evt_' || (j.value->>0)
             JOIN webhook_deliveries d ON d.event_seq = e.seq",
        ] {
            on!(tx, |c| sqlx::query(sql)
                .bind(&rows)
                .execute(c)
                .await
                .map(wfmd::store::Done::from))
            .unwrap();
        }
        on!(tx, |c| sqlx::query(
            "UPDATE webhook_cursor SET last_event_seq = (SELECT MAX(seq) FROM outbox_events)",
        )
        .execute(c)
        .await
        .map(wfmd::store::Done::from))
        .unwrap();
        tx.commit().await.unwrap();
        if end == old_part {
            checkpoints::publish(store, at(end - 1)).await.unwrap();
        }
        first = end;
    }
}

/// What the writers are committing beside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    WarmUp,
    Before,
    /// A window of the pass.
    Pruning,
    /// The start of a pause after a window.
    Settling,
    /// The rest of the pause: without pruning.
    Paused,
    After,
}

/// One writer's commit: when it was due, what ran beside it then, and how long from
/// then it waited for the write connection and took in all, in ms.
#[derive(Debug, Clone, Copy)]
struct Commit {
    at: Instant,
    phase: Phase,
    waited: f64,
    took: f64,
}

/// One change recorded as the engine records it, in one write transaction; returns
/// how long after `due` it had the write connection (pool and `BEGIN IMMEDIATE`).
async fn commit_change(store: &Store, agent: &str, n: usize, due: Instant) -> Duration {
    let at = Utc::now();
    let id = format!("{agent}-{n}");
    let target = if n.is_multiple_of(2) {
        AgentState::NotReady
    } else {
        AgentState::Ready
    };
    let mut tx = store.begin_write().await.unwrap();
    let waited = due.elapsed();
    history::switch_state(
        &mut tx,
        &NewInterval {
            agent_id: agent,
            state: target,
            reason: Some("BREAK"),
            origin: Origin::Api,
            at,
            attempt_id: Some(&id),
        },
    )
    .await
    .unwrap();
    attempts::insert(
        &mut tx,
        &AttemptRow {
            id: id.clone(),
            idempotency_key: None,
            agent_id: agent.to_owned(),
            from_state: None,
            target_state: target.as_str().to_owned(),
            reason: "BREAK".into(),
            origin: "api".into(),
            actor: "bench".into(),
            outcome: "succeeded".into(),
            violation: None,
            error: None,
            latency_ms: 1,
            requested_at: at.timestamp_millis(),
            completed_at: at.timestamp_millis(),
        },
    )
    .await
    .unwrap();
    audit::append(
        &mut tx,
        &NewEntry {
            at,
            actor: "bench",
            action: "transition.succeeded",
            agent_id: Some(agent),
            subject_id: Some(&id),
            detail: json!({"to": target.as_str()}),
        },
    )
    .await
    .unwrap();
    outbox::enqueue(
        &mut tx,
        Some(agent),
        at,
        Event::AgentStateChanged(StateChanged {
            agent_id: agent.to_owned(),
            from: None,
            to: target,
            reason_code: None,
            origin: Origin::Api,
            idle_ms: 0,
            latency_ms: None,
            attempt_id: Some(id.clone()),
            queue: None,
            changed_at: None,
            deferred_id: None,
        }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    waited
}

/// The writers, committing until stopped. Each commits at random times, on average
/// `WRITER_PAUSE` apart (exponential gaps), whenever its last commit ended: writers that
/// waited for the lock together do not come back together, as they would after a fixed
/// pause, and a writer behind its times commits at once, the delay counted in latency.
struct Writers {
    phase: Arc<std::sync::Mutex<Phase>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Commit>>>,
}

impl Writers {
    fn start(store: &Store) -> Writers {
        let phase = Arc::new(std::sync::Mutex::new(Phase::WarmUp));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WRITERS)
            .map(|w| {
                let (store, stop, phase) = (store.clone(), stop.clone(), phase.clone());
                tokio::spawn(async move {
                    let agent = format!("w_{w:02}");
                    let mut random = StdRng::seed_from_u64(w as u64);
                    let mut due = Instant::now();
                    let mut commits = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let gap = -(1.0 - random.random::<f64>()).ln();
                        due += WRITER_PAUSE.mul_f64(gap);
                        tokio::time::sleep_until(due.into()).await;
                        let during = *phase.lock().unwrap();
                        let waited = commit_change(&store, &agent, commits.len(), due).await;
                        commits.push(Commit {
                            at: due,
                            phase: during,
                            waited: waited.as_secs_f64() * 1e3,
                            took: due.elapsed().as_secs_f64() * 1e3,
                        });
                    }
                    commits
                })
            })
            .collect();
        Writers { phase, stop, tasks }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    async fn stop(self) -> Vec<Commit> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            all.extend(task.await.unwrap());
        }
        all
    }
}
