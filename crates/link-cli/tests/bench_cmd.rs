//! Smoke runs of `link-cli bench`: every scenario with a tiny N against the
//! embedded hub, one against a child hub and one against a cluster of two
//! child hubs over a real nats-server, checking the `--json` document's
//! shape and that every call, message and connection was counted. Never a
//! timing assertion: the figures themselves are not checked, only that
//! they are there (and, for a cluster, that traffic crossed NATS as it
//! must: twice per call, once per message, once per published fan-out
//! message whatever the number of subscribers on the other hub).

// Tests may unwrap; clippy's `allow-unwrap-in-tests` does not reach the
// helper functions of an integration test file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use link_test_support::LinkCli;
use serde_json::Value;

fn cli() -> LinkCli {
    LinkCli::new(env!("CARGO_BIN_EXE_link-cli"))
}

/// Runs `link-cli bench --json -q <args>` and parses stdout (`connections`
/// reads its settled memory 1 s after convergence, not the default 35).
fn bench(args: &[&str]) -> Value {
    let out = cli()
        .command()
        .arg("bench")
        .args(["--json", "--quiet", "--idle-timeout", "20", "--settle", "1"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn result<'a>(report: &'a Value, scenario: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["scenario"] == scenario && r["system"] == "link")
        .unwrap_or_else(|| panic!("no {scenario} result in {report:#}"))
}

fn metric(result: &Value, name: &str) -> f64 {
    result["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["value"].as_f64())
        .unwrap_or_else(|| panic!("no metric {name:?} in {result:#}"))
}

#[test]
fn every_scenario_counts_every_message_on_the_embedded_hub() {
    let report = bench(&[
        "--embedded",
        "--scenario",
        "all",
        "-n",
        "40",
        "--concurrency",
        "8",
        "--subscribers",
        "3",
        "--slow",
        "1",
        "--connections",
        "50",
    ]);
    assert_eq!(report["hub"]["mode"], "embedded");
    assert!(
        report["hub"]["url"]
            .as_str()
            .unwrap()
            .starts_with("ws://127.0.0.1:")
    );
    assert!(report["machine"]["nproc"].as_u64().unwrap() >= 1);
    assert_eq!(report["payload_bytes"], 80);
    assert_eq!(report["receiver"], "handler");
    assert_eq!(report["runs"], 1);
    assert!(report["nats"].is_null());

    for (scenario, expected) in [
        ("rpc-seq", 40),
        ("rpc-conc", 40),
        ("send", 40),
        ("publish", 40),
        ("fanout", 40 * 3),
        ("fanout-slow", 40 * 3),
        ("connections", 50),
    ] {
        let r = result(&report, scenario);
        assert_eq!(r["expected"], expected, "{scenario}: {r:#}");
        assert_eq!(r["completed"], expected, "{scenario}: {r:#}");
        assert!(r["elapsed_s"].as_f64().unwrap() >= 0.0);
        for m in r["metrics"].as_array().unwrap() {
            assert!(m["name"].is_string(), "{m}");
            assert!(m["value"].as_f64().is_some_and(f64::is_finite), "{m}");
            assert!(m["higher_is_better"].is_boolean(), "{m}");
            // An embedded hub shares this process with the load: its CPU
            // time is never reported as the hub's.
            assert!(
                !m["name"].as_str().unwrap().starts_with("hub CPU"),
                "{scenario}: {m}"
            );
        }
    }
    let seq = result(&report, "rpc-seq");
    for name in ["calls/s", "mean µs", "p50 µs", "p90 µs", "p99 µs", "max µs"] {
        metric(seq, name);
    }
    let conc = result(&report, "rpc-conc");
    for name in ["calls/s", "p50 µs", "p99 µs"] {
        metric(conc, name);
    }
    metric(result(&report, "send"), "msgs/s");
    metric(result(&report, "publish"), "msgs/s");
    metric(result(&report, "fanout"), "delivered/s");
    assert!(metric(result(&report, "fanout-slow"), "impact %") >= 0.0);
    let conns = result(&report, "connections");
    metric(conns, "hellos/s");
    metric(conns, "settled KiB/conn");
    metric(conns, "peak KiB/conn");
    metric(conns, "presence KiB/peer");
    assert!(metric(conns, "converged s") > 0.0);
}

#[test]
fn connections_with_delta_clients_converge_and_say_so() {
    let report = bench(&[
        "--child",
        "--scenario",
        "connections",
        "--connections",
        "60",
        "--clients",
        "delta",
    ]);
    assert_eq!(report["clients"], "delta");
    let conns = result(&report, "connections");
    assert_eq!(conns["completed"], 60);
    assert!(metric(conns, "converged s") > 0.0, "{conns:#}");
    assert!(metric(conns, "presence KiB/peer") > 0.0);
    let notes = conns["notes"].to_string();
    assert!(notes.contains("delta clients"), "{notes}");
    assert!(!notes.contains("not converged"), "{notes}");
}

#[test]
fn a_child_hub_is_started_and_measured() {
    let report = bench(&[
        "--child",
        "--scenario",
        "rpc-seq,publish,fanout,connections",
        "-n",
        "20",
        "--subscribers",
        "3",
        "--receiver",
        "stream",
        "--connections",
        "20",
    ]);
    assert_eq!(report["hub"]["mode"], "child");
    assert_eq!(report["receiver"], "stream");
    for (scenario, expected) in [("rpc-seq", 20), ("publish", 20), ("fanout", 20 * 3)] {
        assert_eq!(
            result(&report, scenario)["completed"],
            expected,
            "{scenario}"
        );
    }
    let conns = result(&report, "connections");
    assert_eq!(conns["completed"], 20);
    assert!(metric(conns, "hub RSS MiB") > 0.0);
    let notes = conns["notes"].to_string();
    assert!(
        notes.contains("settled read 1s after convergence"),
        "{notes}"
    );
    // The child hub's CPU time, per call, message and delivery.
    for (scenario, name) in [
        ("rpc-seq", "hub CPU µs/call"),
        ("publish", "hub CPU µs/msg"),
        ("fanout", "hub CPU µs/delivery"),
    ] {
        assert!(metric(result(&report, scenario), name) > 0.0, "{scenario}");
    }
}

#[test]
fn a_cluster_of_two_child_hubs_carries_every_scenario_across_nats() {
    const N: f64 = 30.0;
    let nats = link_test_support::NatsServer::binary();
    assert!(
        nats.exists(),
        "this test runs a real nats-server, and there is none at {}: install Debian's \
         (`apt-get install -y nats-server`) or set LINK_NATS_SERVER",
        nats.display()
    );
    let report = bench(&[
        "--cluster",
        "2",
        "--nats-server",
        nats.to_str().unwrap(),
        "--scenario",
        "rpc-seq,rpc-conc,send,publish,fanout",
        "-n",
        "30",
        "--concurrency",
        "4",
        "--subscribers",
        "6",
    ]);
    assert_eq!(report["hub"]["mode"], "cluster");
    let cluster = &report["hub"]["cluster"];
    assert_eq!(cluster["hubs"], 2, "{report:#}");
    let urls = cluster["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 2);
    assert_ne!(urls[0], urls[1]);
    assert_eq!(report["hub"]["url"], urls[0]);
    assert!(
        cluster["nats"]
            .as_str()
            .unwrap()
            .starts_with("nats://127.0.0.1:")
    );
    // (scenario, completed, crossings per call or message at least, the
    // per-unit metric, the CPU metric)
    for (scenario, completed, at_least, per, cpu) in [
        ("rpc-seq", 30, 2.0, "crossings/call", "hub CPU µs/call"),
        ("rpc-conc", 30, 2.0, "crossings/call", "hub CPU µs/call"),
        ("send", 30, 1.0, "crossings/msg", "hub CPU µs/msg"),
        ("publish", 30, 1.0, "crossings/msg", "hub CPU µs/msg"),
        (
            "fanout",
            30 * 6,
            1.0,
            "crossings/msg",
            "hub CPU µs/delivery",
        ),
    ] {
        let r = result(&report, scenario);
        assert_eq!(r["completed"], completed, "{scenario}: {r:#}");
        // Every call goes over NATS and back, every message over once;
        // heartbeats (1/s per hub) only add.
        let crossings = metric(r, "NATS crossings");
        assert!(crossings >= at_least * N, "{scenario}: {r:#}");
        assert!(metric(r, per) >= at_least, "{scenario}: {r:#}");
        // Summed over both hub processes.
        assert!(metric(r, cpu) > 0.0, "{scenario}");
        assert!(
            r["notes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n.as_str().unwrap().starts_with("cluster of 2 hubs:")),
            "{scenario}: {r:#}"
        );
    }
    // Fan-out: 3 of the 6 subscribers are on the other hub, yet each
    // message crosses once (NATS delivers it to the hub, which delivers to
    // its subscribers); only heartbeats add to that, at most one per hub
    // per second of the phase (2 s of slack for its edges).
    let fanout = result(&report, "fanout");
    let secs = fanout["elapsed_s"].as_f64().unwrap();
    let crossings = metric(fanout, "NATS crossings");
    assert!(crossings <= N + 2.0 * (secs + 2.0), "{fanout:#}");
}

#[test]
fn flood_runs_only_when_named_and_reports_the_others_both_ways() {
    let report = bench(&[
        "--child",
        "--scenario",
        "flood",
        "-n",
        "100",
        "--flood-limit",
        "50",
        "--flood-pairs",
        "2",
    ]);
    let r = result(&report, "flood");
    assert_eq!(r["expected"], 200);
    assert_eq!(r["completed"], 200, "{r:#}");
    for name in [
        "msgs/s",
        "alone msgs/s",
        "impact %",
        "flooder offered/s",
        "flooder delivered/s",
    ] {
        assert!(metric(r, name).is_finite(), "{name}");
    }
    assert!(
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["scenario"] == "flood")
    );
}

#[test]
fn tls_child_and_embedded_hubs_serve_wss() {
    for mode in ["--child", "--embedded"] {
        let report = bench(&[
            mode,
            "--tls",
            "--scenario",
            "rpc-conc,send,publish,connections",
            "-n",
            "20",
            "--connections",
            "5",
        ]);
        let url = report["hub"]["url"].as_str().unwrap();
        assert!(url.starts_with("wss://127.0.0.1:"), "{mode}: {url}");
        for (scenario, expected) in [
            ("rpc-conc", 20),
            ("send", 20),
            ("publish", 20),
            ("connections", 5),
        ] {
            assert_eq!(
                result(&report, scenario)["completed"],
                expected,
                "{mode} {scenario}"
            );
        }
    }
}

#[test]
fn unusable_options_exit_2() {
    for args in [
        &["bench", "--scenario", "bogus"][..],
        &["bench", "--receiver", "callback"],
        // --url without a secret.
        &["bench", "--url", "ws://127.0.0.1:9"],
        // A cluster has two hubs or more, and its hubs serve plain ws://.
        &["bench", "--cluster", "1"],
        &["bench", "--cluster", "2", "--tls"],
        // --tls is for a hub bench starts.
        &[
            "bench",
            "--url",
            "wss://127.0.0.1:9",
            "--secret",
            "s",
            "--tls",
        ],
    ] {
        let out = cli().output(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
