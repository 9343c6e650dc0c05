//! The server facing a network beyond loopback: header deadlines, idle keep-alive
//! connections, connection caps and who may read `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::support::TestServer;

/// Waits for the server to close `stream`: true if it did within `limit` (EOF or reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A response (hyper may answer 408 first); keep reading until the close.
            Ok(Ok(_)) => continue,
        }
    }
}

/// One whole request on a fresh connection; the status line of its answer.
async fn status_line(address: SocketAddr) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    answer.lines().next().unwrap_or_default().to_string()
}

/// A keep-alive request on `stream`; what the first read of the answer holds.
async fn ask(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .expect("write");
    let mut buffer = [0_u8; 1024];
    let read = stream.read(&mut buffer).await.expect("answer");
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test]
async fn a_client_that_stops_halfway_through_its_headers_is_disconnected() {
    let server = TestServer::spawn_with(|config| config.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n")
        .await
        .expect("write");
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "a half-sent request kept its connection"
    );
    // Nobody else is affected.
    assert_eq!(status_line(server.address).await, "HTTP/1.1 200 OK");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_deadline() {
    let server = TestServer::spawn_with(|config| config.server.header_read_timeout_secs = 1).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    let answer = ask(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
    // The connection stays open for a next request...
    assert!(ask(&mut stream).await.starts_with("HTTP/1.1 200 OK"));
    // ...but not for ever.
    assert!(
        closed_within(&mut stream, Duration::from_secs(10)).await,
        "an idle keep-alive connection stayed open"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_past_a_cap_are_closed_on_arrival_and_the_place_comes_back() {
    for per_client in [true, false] {
        let server = TestServer::spawn_with(|config| {
            if per_client {
                config.server.max_connections_per_client = 2;
            } else {
                config.server.max_connections = 2;
                config.server.max_connections_per_client = 0;
            }
        })
        .await;
        // Only raw connections from here: the test client's pooled ones would count too.
        let held: Vec<TcpStream> = {
            let mut held = Vec::new();
            for _ in 0..2 {
                let mut stream = TcpStream::connect(server.address).await.expect("connect");
                assert!(
                    ask(&mut stream).await.starts_with("HTTP/1.1 200 OK"),
                    "per client {per_client}: an admitted connection must be served"
                );
                held.push(stream);
            }
            held
        };
        let mut refused = TcpStream::connect(server.address).await.expect("connect");
        let _ = refused
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
            .await;
        assert!(
            closed_within(&mut refused, Duration::from_secs(10)).await,
            "per client {per_client}: a third connection was kept"
        );
        drop(held);
        // The places come back once the held connections close.
        let mut served = false;
        for _ in 0..100 {
            if status_line(server.address).await == "HTTP/1.1 200 OK" {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(served, "per client {per_client}: no place came back");
        server.stop().await;
    }
}

#[tokio::test]
async fn metrics_answer_loopback_callers_or_the_bearer_of_the_metrics_token() {
    // Without a token: loopback only.
    let server = TestServer::spawn().await;
    let scrape = |peer: &str| {
        let request = axum::http::Request::get("/metrics")
            .extension(ConnectInfo(peer.parse::<SocketAddr>().expect("address")))
            .body(axum::body::Body::empty())
            .expect("request");
        cityhub_server::http::router(server.state.clone()).oneshot(request)
    };
    let far = scrape("192.0.2.7:40000").await.expect("answer");
    assert_eq!(far.status(), 403);
    let near = scrape("127.0.0.1:40000").await.expect("answer");
    assert_eq!(near.status(), 200);
    assert!(server.metrics().await.contains("cityhub_"));
    server.stop().await;

    // With a token: that token, from anywhere, and nothing else.
    let server =
        TestServer::spawn_with(|config| config.server.metrics_token = "scrape-me-7Q".into()).await;
    let url = server.url("/metrics");
    for wrong in [None, Some("scrape-me-7R")] {
        let mut request = server.client.get(&url);
        if let Some(wrong) = wrong {
            request = request.bearer_auth(wrong);
        }
        let answer = request.send().await.expect("request");
        assert_eq!(answer.status(), 401, "{wrong:?}");
        let body = answer.text().await.expect("body");
        assert!(body.contains("server.metrics_token"), "{body}");
    }
    let right = server
        .client
        .get(&url)
        .bearer_auth("scrape-me-7Q")
        .send()
        .await
        .expect("request");
    assert_eq!(right.status(), 200);
    assert!(right.text().await.expect("body").contains("cityhub_"));
    server.stop().await;
}
