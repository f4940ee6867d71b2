//! `[[boards]]`: wall displays' boards. Each names a scope (teams, skills, queues, by id
//! or name) and the pages a kiosk rotates through at `/?kiosk=1&board=NAME`; the
//! wallboard page is served with every board's definition and draws the one asked for.
//! Boards are top-level and shared by every tenant: a board's teams, skills and queues
//! are matched in the tenant whose wallboard shows it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The pages a board may have, in the order a board without `pages` shows them.
pub const BOARD_PAGES: [&str; 4] = ["skills", "queues", "agents", "adherence"];

/// The shortest and longest time a board shows one screen.
const MIN_ROTATE: Duration = Duration::from_secs(1);
const MAX_ROTATE: Duration = Duration::from_secs(3_600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BoardConfig {
    /// 1-32 of a-z, 0-9 and `-`: what `?board=` names.
    pub name: String,
    /// Team ids or names; empty: every team.
    pub teams: Vec<String>,
    /// Skill ids or names; empty: the skills of the teams' agents (every skill without
    /// teams).
    pub skills: Vec<String>,
    /// Queue ids or names; empty: every queue.
    pub queues: Vec<String>,
    /// Which pages, in this order, from `skills`, `queues`, `agents`, `adherence`.
    pub pages: Vec<String>,
    /// How long each screen shows when a board needs more than one.
    #[serde(with = "humantime_serde")]
    pub rotate: Duration,
}

impl Default for BoardConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            teams: Vec::new(),
            skills: Vec::new(),
            queues: Vec::new(),
            pages: BOARD_PAGES.iter().map(|p| (*p).to_owned()).collect(),
            rotate: Duration::from_secs(20),
        }
    }
}

/// Adds a line naming the key (`boards[1].rotate`) for every problem of `boards`.
pub fn validate(boards: &[BoardConfig], problems: &mut Vec<String>) {
    for (i, board) in boards.iter().enumerate() {
        let key = |field: &str| format!("boards[{i}].{field}");
        let name = &board.name;
        let well_formed = (1..=32).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed {
            problems.push(format!(
                "{} must be 1 to 32 of a-z, 0-9 and -, got {name:?}",
                key("name")
            ));
        } else if boards[..i].iter().any(|b| &b.name == name) {
            problems.push(format!(
                "{}: another board is named {name:?} already",
                key("name")
            ));
        }
        for (field, values) in [
            ("teams", &board.teams),
            ("skills", &board.skills),
            ("queues", &board.queues),
        ] {
            for (j, value) in values.iter().enumerate() {
                if value.trim().is_empty() {
                    problems.push(format!(
                        "{} must not be empty",
                        key(&format!("{field}[{j}]"))
                    ));
                }
            }
        }
        if board.pages.is_empty() {
            problems.push(format!(
                "{} must name at least one of {}",
                key("pages"),
                BOARD_PAGES.join(", ")
            ));
        }
        for (j, page) in board.pages.iter().enumerate() {
            if !BOARD_PAGES.contains(&page.as_str()) {
                problems.push(format!(
                    "{} must be one of {}, got {page:?}",
                    key(&format!("pages[{j}]")),
                    BOARD_PAGES.join(", ")
                ));
            } else if board.pages[..j].contains(page) {
                problems.push(format!(
                    "{}: {page:?} is listed twice",
                    key(&format!("pages[{j}]"))
                ));
            }
        }
        if !(MIN_ROTATE..=MAX_ROTATE).contains(&board.rotate) {
            problems.push(format!(
                "{} must be between 1s and 1h, got {}",
                key("rotate"),
                humantime::format_duration(board.rotate)
            ));
        }
    }
}

/// The boards as the wallboard page takes them: a JSON array, `rotate` in milliseconds.
pub fn page_definitions(boards: &[BoardConfig]) -> String {
    let boards: Vec<_> = boards
        .iter()
        .map(|b| {
            serde_json::json!({
                "name": b.name,
                "teams": b.teams,
                "skills": b.skills,
                "queues": b.queues,
                "pages": b.pages,
                "rotate_ms": b.rotate.as_millis() as u64,
            })
        })
        .collect();
    serde_json::Value::from(boards).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(toml: &str) -> Vec<String> {
        #[derive(Deserialize)]
        struct File {
            boards: Vec<BoardConfig>,
        }
        let file: File = toml::from_str(toml).unwrap();
        let mut problems = Vec::new();
        validate(&file.boards, &mut problems);
        problems
    }

    #[test]
    fn the_interface_example_is_valid_and_a_board_without_pages_has_all_four() {
        let problems = problems_of(
            r#"
            [[boards]]
            name = "care-floor"
            teams = ["Care"]
            skills = []
            queues = []
            pages = ["skills", "queues", "agents", "adherence"]
            rotate = "20s"

            [[boards]]
            name = "all-2"
            "#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let board = BoardConfig::default();
        assert_eq!(board.pages, BOARD_PAGES);
        assert_eq!(board.rotate, Duration::from_secs(20));
    }

    #[test]
    fn each_problem_names_its_key_path() {
        let problems = problems_of(
            r#"
            [[boards]]
            name = "Care Floor"
            [[boards]]
            name = "care"
            rotate = "0s"
            pages = ["skills", "tiles", "skills"]
            teams = [" "]
            [[boards]]
            name = "care"
            pages = []
            "#,
        );
        assert_eq!(
            problems,
            [
                "boards[0].name must be 1 to 32 of a-z, 0-9 and -, got \"Care Floor\"",
                "boards[1].teams[0] must not be empty",
                "boards[1].pages[1] must be one of skills, queues, agents, adherence, got \"tiles\"",
                "boards[1].pages[2]: \"skills\" is listed twice",
                "boards[1].rotate must be between 1s and 1h, got 0s",
                "boards[2].name: another board is named \"care\" already",
                "boards[2].pages must name at least one of skills, queues, agents, adherence",
            ]
        );
        assert_eq!(
            problems_of("[[boards]]\nname = \"\"\n"),
            ["boards[0].name must be 1 to 32 of a-z, 0-9 and -, got \"\""]
        );
        assert!(
            problems_of(&format!("[[boards]]\nname = \"{}\"\n", "a".repeat(33)))[0]
                .starts_with("boards[0].name must be 1 to 32")
        );
    }

    #[test]
    fn the_page_gets_rotate_in_milliseconds() {
        let board = BoardConfig {
            name: "care".into(),
            rotate: Duration::from_secs(5),
            ..BoardConfig::default()
        };
        let json: serde_json::Value = serde_json::from_str(&page_definitions(&[board])).unwrap();
        assert_eq!(json[0]["rotate_ms"], 5000);
        assert_eq!(json[0]["name"], "care");
        assert_eq!(json[0]["pages"][3], "adherence");
    }
}
