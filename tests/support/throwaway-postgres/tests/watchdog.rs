//! The watchdog's promise: a server does not outlive the process that started it, even
//! when that process is killed with SIGKILL, which runs no destructor and no exit code.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child process this test runs: there, the test is the owner of the servers.
const OWNER: &str = "THROWAWAY_POSTGRES_TEST_OWNER";

/// Run as the test, it runs itself again as the owner, a child process that starts the
/// shared server and one of its own and says where they are; kills that child with
/// SIGKILL; and waits, with a deadline, until both servers refuse connections and their
/// folders are gone.
#[test]
fn a_killed_owner_leaves_no_server_behind() {
    if std::env::var_os(OWNER).is_some() {
        be_the_owner();
    }
    let mut owner = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_killed_owner_leaves_no_server_behind",
            "--nocapture",
        ])
        .env(OWNER, "1")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let servers: Vec<(u16, PathBuf)> = BufReader::new(owner.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| {
            let (port, folder) = line.strip_prefix("server ")?.split_once(' ')?;
            Some((port.parse().ok()?, PathBuf::from(folder)))
        })
        .take(2)
        .collect();
    assert_eq!(servers.len(), 2, "the owner did not start its servers");
    for (port, folder) in &servers {
        assert!(TcpStream::connect(("127.0.0.1", *port)).is_ok());
        assert!(folder.join("data").is_dir());
    }

    owner.kill().unwrap(); // SIGKILL
    owner.wait().unwrap();

    let deadline = Instant::now() + Duration::from_secs(10);
    for (port, folder) in &servers {
        while TcpStream::connect(("127.0.0.1", *port)).is_ok() || folder.exists() {
            assert!(
                Instant::now() < deadline,
                "10 s after its owner was killed, the server on port {port} still \
                 accepts connections or {} is still there",
                folder.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts the servers, says where they are, and waits to be killed.
fn be_the_owner() -> ! {
    let shared = throwaway_postgres::shared();
    let own = throwaway_postgres::start(throwaway_postgres::Options::default());
    for server in [shared, &own] {
        println!("server {} {}", server.port(), server.folder().display());
    }
    loop {
        std::thread::park();
    }
}
