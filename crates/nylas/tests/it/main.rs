//! The Nylas client against the simulator.

use std::time::Duration;

use crmsync_nylas::{Grant, Next, NylasClient, NylasError};
use crmsync_sim::{FaultConfig, RunningSim, SimConfig, TenantConfig};

async fn sim(contacts: usize, faults: FaultConfig, region: &str) -> (RunningSim, TenantConfig) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut t = TenantConfig::named("acme");
    t.contacts = contacts;
    t.nylas_region = region.into();
    let s = RunningSim::start(
        SimConfig {
            seed: 3,
            faults,
            tenants: vec![t.clone()],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("sim");
    (s, t)
}

/// Reading every page (200 at a time, `page_token` from `next_cursor`, until a page comes
/// without a cursor) returns the whole address book once, in the tenant's region.
#[tokio::test]
async fn list_pages_returns_the_whole_book_once() {
    let (s, t) = sim(1_234, FaultConfig::default(), "eu").await;
    let uri = s.nylas_api_uri("eu");
    let grant = Grant {
        api_uri: &uri,
        grant_id: &t.grant_id,
        api_key: &t.nylas_api_key,
    };
    let client = NylasClient::new(Duration::from_secs(10)).expect("client");
    let mut cursor: Option<String> = None;
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_contacts(&grant, cursor.as_deref(), 200)
            .await
            .expect("page");
        pages += 1;
        assert!(page.contacts.len() <= 200);
        ids.extend(page.contacts.iter().map(|c| c.id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(pages, 7);
    let book: Vec<String> = crmsync_sim::address_book(&t, 3)
        .iter()
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, book);

    let one = client
        .get_contact(&grant, &ids[10])
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(one.id, ids[10]);
    assert_eq!(
        client
            .get_contact(&grant, "no-such-contact")
            .await
            .expect("404 is None"),
        None
    );
}

/// Wrong keys and unknown grants are job failures with a clear message; a foreign cursor is a
/// rejected request.
#[tokio::test]
async fn auth_and_request_errors_fail_the_job() {
    let (s, t) = sim(10, FaultConfig::default(), "us").await;
    let uri = s.nylas_api_uri("us");
    let client = NylasClient::new(Duration::from_secs(10)).expect("client");
    let bad_key = Grant {
        api_uri: &uri,
        grant_id: &t.grant_id,
        api_key: "nyk-wrong",
    };
    let err = client.list_contacts(&bad_key, None, 50).await.expect_err("401");
    assert!(
        matches!(err, NylasError::Unauthorized(_)) && err.next() == Next::FailJob,
        "{err}"
    );
    let good = Grant {
        api_uri: &uri,
        grant_id: &t.grant_id,
        api_key: &t.nylas_api_key,
    };
    let err = client
        .list_contacts(&good, Some("not-a-cursor"), 50)
        .await
        .expect_err("400");
    assert!(
        matches!(err, NylasError::Rejected { ref kind, .. } if kind == "invalid_request_error"),
        "{err}"
    );
}

/// Rate limits of both kinds: a short Retry-After is waited out in place; Nylas's own 429
/// without Retry-After goes back to the caller as "retry later". Reading on after each gets
/// the whole book.
#[tokio::test]
async fn rate_limits_are_retried_later_or_waited_out() {
    let faults = FaultConfig {
        nylas_429_rate: 0.3,
        ..FaultConfig::default()
    };
    let (s, t) = sim(600, faults, "us").await;
    let uri = s.nylas_api_uri("us");
    let grant = Grant {
        api_uri: &uri,
        grant_id: &t.grant_id,
        api_key: &t.nylas_api_key,
    };
    let client = NylasClient::new(Duration::from_secs(10)).expect("client");
    let (mut cursor, mut read, mut retry_later) = (None::<String>, 0, 0);
    loop {
        match client.list_contacts(&grant, cursor.as_deref(), 50).await {
            Ok(page) => {
                read += page.contacts.len();
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            Err(e) => {
                assert_eq!(
                    e.next(),
                    Next::RetryLater(None),
                    "only Nylas's own 429 reaches the caller: {e}"
                );
                retry_later += 1;
            }
        }
    }
    assert_eq!(read, 600);
    assert!(retry_later > 0, "the seeded faults include 429s without Retry-After");
}

/// Hardening: an answer larger than the cap (declared, or sent without a length) is refused
/// while it streams, an error that retries, never held whole in memory.
#[tokio::test]
async fn an_endless_answer_is_refused_at_the_cap_without_being_held() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = rustls::crypto::ring::default_provider().install_default();
    for declared in [true, false] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut req = [0u8; 4096];
            let _ = s.read(&mut req).await;
            let head = if declared {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n".to_owned()
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n".to_owned()
            };
            if s.write_all(head.as_bytes()).await.is_err() {
                return 0usize;
            }
            let chunk = vec![b' '; 64 * 1024];
            let mut sent = 0usize;
            // Up to 64 MiB: far past the cap, bounded for the test.
            while sent < 64 * 1024 * 1024 {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += chunk.len();
            }
            sent
        });
        let client = NylasClient::new(Duration::from_secs(30)).expect("client");
        let grant = Grant {
            api_uri: &format!("http://{addr}"),
            grant_id: "g",
            api_key: "k",
        };
        let err = client.list_contacts(&grant, None, 50).await.expect_err("over the cap");
        assert!(matches!(err, NylasError::Decode(_)), "{err:?}");
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(matches!(err.next(), Next::RetryLater(_)));
        let sent = server.await.expect("server");
        assert!(sent < 64 * 1024 * 1024, "the client read everything ({sent} bytes)");
    }
}
