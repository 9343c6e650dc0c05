//! A Ballista scheduler and two executors started from the hub's binary, for the tests
//! that run queries on a cluster (`query.engine = "ballista"`).

use std::path::Path;

use cityhub_catalog::Principal;
use cityhub_query::QueryEngine;
use futures::StreamExt;

/// A Ballista scheduler and two executors, each a `cityhub` process, reading the hub's
/// objects in `data_dir`; stopped when dropped.
pub struct BallistaCluster {
    /// `df://127.0.0.1:port`.
    pub scheduler: String,
    processes: Vec<std::process::Child>,
}

impl BallistaCluster {
    pub fn start(data_dir: &Path) -> Self {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port()
        };
        let hub = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_cityhub"))
                .args(args)
                .arg("--data-dir")
                .arg(data_dir)
                .env("CITYHUB__LOG__LEVEL", "warn")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("start cityhub")
        };
        let port = free_port();
        let scheduler = format!("df://127.0.0.1:{port}");
        let mut processes = vec![hub(&["scheduler", "--bind", &format!("127.0.0.1:{port}")])];
        // The scheduler plans scans too, and looks at the store to do so: it is given the
        // data folder like the executors.
        for _ in 0..2 {
            let (flight, grpc) = (free_port(), free_port());
            processes.push(hub(&[
                "executor",
                "--scheduler",
                &scheduler,
                "--bind",
                &format!("127.0.0.1:{flight}"),
                "--grpc-port",
                &grpc.to_string(),
                "--concurrent-tasks",
                "2",
            ]));
        }
        Self {
            scheduler,
            processes,
        }
    }

    /// Waits until the cluster answers `sql`, a query over a dataset (the executors have
    /// registered), for up to a minute.
    pub async fn wait_until_ready(&self, engine: &QueryEngine, admin: &Principal, sql: &str) {
        let mut last = String::new();
        for _ in 0..120 {
            match engine.execute(admin, sql, &[]).await {
                Ok(result) => {
                    let batches: Vec<_> = result.batches.collect().await;
                    match batches.into_iter().collect::<Result<Vec<_>, _>>() {
                        Ok(_) => return,
                        Err(err) => last = err.to_string(),
                    }
                }
                Err(err) => last = err.to_string(),
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        panic!(
            "the Ballista cluster at {} did not answer within a minute: {last}",
            self.scheduler
        );
    }
}

impl Drop for BallistaCluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}
