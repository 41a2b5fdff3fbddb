//! `/metrics` is valid Prometheus text (checked by a strict parser below) and counts the calls a
//! test makes with the grpc-ecosystem names and labels, the status code included.

use std::collections::HashMap;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Request;
use veza_proto::{
    analytics::{TrackEventRequest, analytics_service_client::AnalyticsServiceClient},
    notification::{
        SendNotificationRequest, StreamNotificationsRequest,
        notification_service_client::NotificationServiceClient,
    },
};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        v => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// The family a sample belongs to under its declared type.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return Some(base);
        }
    }
    None
}

/// A strict parser of the Prometheus text format 0.0.4: every line is `# HELP`, `# TYPE` or a
/// sample of a declared family; names, label syntax, escapes and values are checked; a family is
/// declared once, before its samples, and its samples are contiguous; histograms have `le`
/// buckets ending at `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut finished: std::collections::HashSet<String> = Default::default();
    let mut current: Option<String> = None;
    let mut samples = vec![];
    if !text.ends_with('\n') {
        return Err("text must end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", i + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if valid_metric_name(name) => {}
                (Some("TYPE"), Some(name), Some(t)) if valid_metric_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        return Err(err(format!("unknown type {t}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(err("type declared twice".into()));
                    }
                }
                _ => return Err(err("malformed comment".into())),
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            return Err(err("unexpected line".into()));
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(err("no value".into())),
        };
        if !valid_metric_name(name) {
            return Err(err("bad metric name".into()));
        }
        let mut labels = HashMap::new();
        let mut rest = rest;
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut end = None;
            loop {
                match chars.peek() {
                    Some((p, '}')) => {
                        end = Some(*p);
                        break;
                    }
                    Some(_) => {}
                    None => break,
                }
                let start = chars.peek().map(|(p, _)| *p).unwrap_or(0);
                let mut eq = None;
                for (p, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(p);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| err("label without =".into()))?;
                let lname = &after[start..eq];
                if !valid_label_name(lname) {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value must be quoted".into()));
                }
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            _ => return Err(err("bad escape".into())),
                        },
                        Some('"') => break,
                        Some('\n') | None => return Err(err("unterminated label value".into())),
                        Some(c) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("duplicate label".into()));
                }
                match chars.peek().map(|(_, c)| *c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => return Err(err("expected , or }".into())),
                }
            }
            let end = end.ok_or_else(|| err("unterminated labels".into()))?;
            rest = &after[end + 1..];
        }
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("expected a space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or_default()).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family = family_of(name, &types)
            .ok_or_else(|| err("sample of an undeclared family".into()))?
            .to_string();
        if current.as_deref() != Some(&family) {
            if let Some(prev) = current.take() {
                finished.insert(prev);
            }
            if finished.contains(&family) {
                return Err(err("samples of a family are not contiguous".into()));
            }
            current = Some(family.clone());
        }
        if types[&family] == "counter" && !name.ends_with("_total") {
            return Err(err("a counter sample should end in _total".into()));
        }
        if types[&family] == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le")
        {
            return Err(err("bucket without le".into()));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histogram series: cumulative buckets ending at +Inf == _count.
    for s in samples.iter().filter(|s| s.name.ends_with("_count")) {
        let base = s.name.trim_end_matches("_count");
        if types.get(base).map(String::as_str) != Some("histogram") {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|b| {
                b.name == format!("{base}_bucket")
                    && b.labels
                        .iter()
                        .filter(|(k, _)| *k != "le")
                        .all(|(k, v)| s.labels.get(k) == Some(v))
                    && b.labels.len() == s.labels.len() + 1
            })
            .map(|b| (parse_value(&b.labels["le"]).unwrap_or(f64::NAN), b.value))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let last = buckets.last().ok_or(format!("{base}: no buckets"))?;
        if last.0 != f64::INFINITY || last.1 != s.value {
            return Err(format!("{base}: +Inf bucket {last:?} != count {}", s.value));
        }
        if buckets.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(format!("{base}: buckets not cumulative"));
        }
    }
    Ok(samples)
}

async fn scrape(s: &TestServer) -> (String, String) {
    let addr = s.http_url.trim_start_matches("http://");
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = vec![];
    conn.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a plain body"
    );
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(String::from)
        })
        .unwrap();
    (content_type, body.to_string())
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

async fn metrics_endpoint_counts_calls_with_codes(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (alice, alice_t) = s.user("alice").await;
    let channel = s.channel().await;
    let mut notify = NotificationServiceClient::new(channel.clone());
    let mut analytics = AnalyticsServiceClient::new(channel);
    let send = |title: &str| SendNotificationRequest {
        user_ids: vec![alice],
        r#type: "system".into(),
        title: title.into(),
        ..Default::default()
    };
    // One PERMISSION_DENIED, one UNAUTHENTICATED, two OK, a server stream of three messages.
    assert!(
        notify
            .send_notification(bearer(&alice_t, send("no")))
            .await
            .is_err()
    );
    assert!(
        notify
            .send_notification(Request::new(send("no")))
            .await
            .is_err()
    );
    for t in ["a", "b"] {
        notify
            .send_notification(bearer(&admin, send(t)))
            .await
            .unwrap();
    }
    let mut stream = notify
        .stream_notifications(bearer(&alice_t, StreamNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    notify
        .send_notification(bearer(&admin, send("c")))
        .await
        .unwrap();
    for _ in 0..3 {
        stream.next().await.unwrap().unwrap();
    }
    analytics
        .track_event(bearer(
            &alice_t,
            TrackEventRequest {
                event_type: "click".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let (content_type, text) = scrape(&s).await;
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let svc = "veza.notification.NotificationService";
    let send_labels = [
        ("grpc_type", "unary"),
        ("grpc_service", svc),
        ("grpc_method", "SendNotification"),
    ];
    let with = |code: &str| -> Vec<(&str, String)> {
        send_labels
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .chain([("grpc_code", code.to_string())])
            .collect()
    };
    let value = |name: &str, labels: &[(&str, String)]| {
        let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        find(&samples, name, &l).map(|s| s.value)
    };
    assert_eq!(
        value("grpc_server_handled_total", &with("PermissionDenied")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("grpc_server_handled_total", &with("Unauthenticated")),
        Some(1.0)
    );
    assert_eq!(value("grpc_server_handled_total", &with("OK")), Some(3.0));
    assert_eq!(
        find(&samples, "grpc_server_started_total", &send_labels).map(|s| s.value),
        Some(5.0)
    );
    // The refused call never had its request read.
    assert_eq!(
        find(&samples, "grpc_server_msg_received_total", &send_labels).map(|s| s.value),
        Some(4.0)
    );
    assert_eq!(
        find(&samples, "grpc_server_msg_sent_total", &send_labels).map(|s| s.value),
        Some(3.0),
        "only successful calls send"
    );
    assert_eq!(
        find(&samples, "grpc_server_handling_seconds_count", &send_labels).map(|s| s.value),
        Some(5.0)
    );
    let stream_labels = [
        ("grpc_type", "server_stream"),
        ("grpc_method", "StreamNotifications"),
    ];
    assert_eq!(
        find(&samples, "grpc_server_msg_sent_total", &stream_labels).map(|s| s.value),
        Some(3.0)
    );
    assert_eq!(
        find(&samples, "grpc_server_started_total", &stream_labels).map(|s| s.value),
        Some(1.0)
    );
    assert!(
        find(&samples, "grpc_server_handled_total", &stream_labels).is_none(),
        "still open"
    );
    assert!(find(&samples, "veza_open_streams", &[]).is_some_and(|s| s.value >= 1.0));
    let track = [
        ("grpc_method", "TrackEvent"),
        ("grpc_code", "OK"),
        ("grpc_service", "veza.analytics.AnalyticsService"),
    ];
    assert_eq!(
        find(&samples, "grpc_server_handled_total", &track).map(|s| s.value),
        Some(1.0)
    );
    assert!(find(&samples, "process_resident_memory_bytes", &[]).is_some_and(|s| s.value > 1e6));
    assert!(
        find(&samples, "veza_analytics_events_queued_total", &[]).is_some_and(|s| s.value >= 1.0)
    );
    assert!(find(&samples, "veza_analytics_events_rejected_total", &[]).is_some());
    assert!(!text.contains("veza_grpc_") && !text.contains("# EOF"));

    // The stream ends (client gone): its call is counted as finished.
    drop(stream);
    let mut handled = None;
    for _ in 0..50 {
        let (_, text) = scrape(&s).await;
        let samples = parse_prometheus(&text).unwrap();
        handled = find(&samples, "grpc_server_handled_total", &stream_labels)
            .map(|s| s.labels["grpc_code"].clone());
        if handled.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(handled.as_deref(), Some("Canceled"));
    s.stop().await;
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 2\n";
    assert_eq!(parse_prometheus(ok).unwrap()[0].labels["x"], "1\"");
    for bad in [
        "a_total 1\n",
        "# TYPE a gauge\na{x=1} 1\n",
        "# TYPE a gauge\na 1 2 3\n",
        "# TYPE a gauge\na{x=\"1\"\n",
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",
        "# TYPE a gauge\na one\n",
        "# TYPE a counter\na 1\n",
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na 2\n",
        "# EOF\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 2\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}

on_both_backends!(metrics_endpoint_counts_calls_with_codes);
