//! Schedules imports into a running daemon (#53): a refused file is answered small, each
//! problem naming its line.

use serde_json::Value;

use crate::helpers::{TestApp, http_client};

const HEADER: &str =
    "agent,shift_start,shift_end,break_start,break_end,break_type,mandatory,timezone\n";

/// A schedules file of `shifts` shifts of one row each (with a mandatory lunch), 28 per
/// agent (`imp_00000`, `imp_00001`, …) on the first days of 2030, each ending at
/// `end_hour`.
fn schedules_file(shifts: usize, end_hour: u32) -> String {
    let mut csv = String::from(HEADER);
    for n in 0..shifts {
        let (agent, day) = (n / 28, n % 28 + 1);
        csv.push_str(&format!(
            "imp_{agent:05},2030-01-{day:02}T09:00:00Z,2030-01-{day:02}T{end_hour}:00:00Z,\
             2030-01-{day:02}T12:00:00Z,2030-01-{day:02}T12:30:00Z,LUNCH,true,Europe/London\n"
        ));
    }
    csv
}

/// Posts `csv` as a schedules import: the status and the body as it came.
async fn post_raw(address: &str, csv: String) -> (u16, Vec<u8>) {
    let response = http_client()
        .post(format!("{address}/v1/schedules/imports"))
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn an_agent_id_of_8_mib_is_refused_naming_its_line_in_a_small_answer() {
    let app = TestApp::spawn().await;
    let huge = "a".repeat(8 * 1024 * 1024);
    let csv = format!(
        "{}{huge},2030-01-02T09:00:00Z,2030-01-02T17:00:00Z,,,,,\n",
        schedules_file(10, 17)
    );
    let (status, body) = post_raw(&app.address, csv).await;
    assert_eq!(status, 422);
    assert!(body.len() < 4 * 1024, "{} bytes", body.len());
    let problem: Value = serde_json::from_slice(&body).unwrap();
    let first = problem["problems"][0].as_str().unwrap();
    assert!(
        first.starts_with(&format!(
            "line 12: agent `{}…` (8388608 characters) is not an agent id: 1 to 128 \
             printable ASCII characters",
            "a".repeat(40)
        )),
        "{first}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM imported_shifts").await, 0);
}

#[tokio::test]
async fn the_422_of_a_15_mb_file_of_bad_lines_is_small_and_counts_them_all() {
    let app = TestApp::spawn().await;
    let long = "x".repeat(7 * 1024 * 1024);
    let mut csv = format!(
        "{HEADER}u_1,2030-01-02 09:00,2030-01-02 17:00,,,,,{long}\n\
         u_2,{long},2030-01-02T17:00:00Z,,,,,\n"
    );
    for n in 0..10_000 {
        csv.push_str(&format!("u_{n},not a time,2030-01-02T17:00:00Z,,,,,\n"));
    }
    assert!(csv.len() > 14_000_000);
    let (status, body) = post_raw(&app.address, csv).await;
    assert_eq!(status, 422);
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    let problem: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["problem_count"], 10_002);
    let listed = problem["problems"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    assert!(
        listed[0]
            .as_str()
            .unwrap()
            .starts_with("line 2: timezone `xxxx"),
        "{}",
        listed[0]
    );
    assert!(
        listed[1]
            .as_str()
            .unwrap()
            .starts_with("line 3: shift_start `xxxx"),
        "{}",
        listed[1]
    );
    assert!(
        listed[99]
            .as_str()
            .unwrap()
            .starts_with("line 101: shift_start `not a time`"),
        "{}",
        listed[99]
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .ends_with("(and 10001 more: see `problems`)"),
        "{}",
        problem["detail"]
    );
}
