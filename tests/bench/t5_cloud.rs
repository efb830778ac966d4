//! Table 5: the cloud path. snapcsi against the real Cinder (tests/peers/cinder, fake volume
//! driver taking FAKE_DELAY seconds per create) through a counting proxy
//! (tests/sims/faultproxy.py with no fault): time until the snapshot is ready when
//! CreateSnapshot is repeated every 100 ms as the snapshotter does, and how many Cinder calls
//! the first call, each repeat and a call after ready cost. host-path has no cloud path.

use crate::driver::{self, Kind, Running, Variant};
use crate::util::{self, Spread, fmt_spread, fmt_spread_ms, print_table};
use crate::{Config, rotate};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Peer {
    script: std::path::PathBuf,
    dir: std::path::PathBuf,
    env: BTreeMap<String, String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = Command::new(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

struct Proxy {
    child: Child,
    url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(repo: &Path, upstream: &str) -> Result<Proxy, String> {
        let mut child = Command::new("python3")
            .arg(repo.join("tests/sims/faultproxy.py"))
            .args(["--port", "0", "--upstream", upstream])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("faultproxy: {e}"))?;
        let stdout = child.stdout.take().ok_or("faultproxy: no stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("faultproxy said {line:?}"))?
            .to_owned();
        Ok(Proxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn reset(&self) -> Result<(), String> {
        reqwest::Client::new()
            .post(format!("{}/_faults/reset", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Requests the proxy forwarded since the last reset.
    async fn seen(&self) -> Result<Vec<String>, String> {
        let body: Value = reqwest::Client::new()
            .get(format!("{}/_faults", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        Ok(body["seen"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[derive(Default)]
struct Sample {
    first_ms: Vec<f64>,
    ready_ms: Vec<f64>,
    first_calls: Vec<f64>,
    repeat_calls: Vec<f64>,
    repeats: Vec<f64>,
    after_ready_calls: Vec<f64>,
    first_seen: Vec<String>,
}

pub async fn run(cfg: &Config) -> Result<Value, String> {
    let load_start = util::loadavg();
    let script = cfg.repo.join("tests/peers/cinder/cinder-peer.sh");
    let dir = cfg.work.join("t5-cinder");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let status = Command::new(&script)
        .arg("start")
        .arg(&dir)
        .env("FAKE_DELAY", "2")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let peer = Peer {
        script: script.clone(),
        dir: dir.clone(),
        env: std::fs::read_to_string(dir.join("peer.env"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    };
    if !status.success() {
        return Err(format!("the Cinder peer did not start ({status})"));
    }
    eprintln!(
        "  t5 Cinder started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let cinder = peer
        .env
        .get("CINDER_URL")
        .cloned()
        .ok_or("peer.env: no CINDER_URL")?;
    let project = peer
        .env
        .get("CINDER_PROJECT")
        .cloned()
        .ok_or("peer.env: no CINDER_PROJECT")?;
    let proxy = Proxy::start(&cfg.repo, &cinder)?;
    let config = dir.join("snapcsi.toml");
    std::fs::write(
        &config,
        format!(
            "[backends.cinder]\ntype = \"cinder\"\nauth_type = \"noauth\"\n\
             endpoint = \"{}/v3/{{project_id}}\"\nproject_id = \"{project}\"\n",
            proxy.url
        ),
    )
    .map_err(|e| e.to_string())?;

    // Every snapcsi build, each with the Cinder config.
    let builds: Vec<Variant> = cfg
        .variants
        .iter()
        .filter(|v| v.kind == Kind::SnapcsiLocal)
        .cloned()
        .collect();
    let mut drivers = Vec::new();
    for v in &builds {
        drivers.push(start_with_config(v, &dir.join(v.label.replace('@', "-")), &config).await?);
    }
    let mut samples: BTreeMap<String, Sample> = BTreeMap::new();
    let mut volumes = Vec::new();
    for (i, d) in drivers.iter().enumerate() {
        let vol = driver::create_volume(d, &format!("t5-vol-{i}"), 1 << 30, None).await?;
        wait_available(&cinder, &project, &vol.volume_id).await?;
        volumes.push(vol.volume_id);
    }
    for rep in 0..cfg.reps {
        for i in rotate(drivers.len(), rep) {
            let d = &drivers[i];
            let s = samples.entry(d.variant.label.clone()).or_default();
            measure(d, &proxy, &volumes[i], &format!("t5-snap-{i}-{rep}"), s).await?;
        }
    }
    for (d, vol) in drivers.iter().zip(&volumes) {
        let _ = driver::delete_volume(d, vol).await;
    }
    for d in drivers {
        d.stop();
    }
    drop(proxy);
    drop(peer);
    let load_end = util::loadavg();

    let mut rows = Vec::new();
    let mut out = Vec::new();
    for (label, s) in &samples {
        let f = |v: &Vec<f64>| Spread::of(v);
        rows.push(vec![
            label.clone(),
            fmt_spread_ms(f(&s.first_ms)),
            fmt_spread_ms(f(&s.ready_ms)),
            fmt_spread(f(&s.first_calls), 0),
            fmt_spread(f(&s.repeats), 0),
            fmt_spread(f(&s.repeat_calls), 2),
            fmt_spread(f(&s.after_ready_calls), 0),
            s.first_seen.first().cloned().unwrap_or_default(),
        ]);
        out.push(json!({
            "driver": label,
            "first_answer_ms": f(&s.first_ms).map(|x| x.json()),
            "time_to_ready_ms": f(&s.ready_ms).map(|x| x.json()),
            "cinder_calls_first": f(&s.first_calls).map(|x| x.json()),
            "repeats_until_ready": f(&s.repeats).map(|x| x.json()),
            "cinder_calls_per_repeat": f(&s.repeat_calls).map(|x| x.json()),
            "cinder_calls_after_ready": f(&s.after_ready_calls).map(|x| x.json()),
            "first_call_requests": s.first_seen.first(),
        }));
    }
    print_table(
        &format!(
            "Table 5: CreateSnapshot on the real Cinder (FAKE_DELAY=2), repeated every 100 ms \
             until ready, median [min–max] of {} reps (load {load_start} -> {load_end})",
            cfg.reps
        ),
        &[
            "driver",
            "first answer",
            "time to ready",
            "Cinder calls, first",
            "repeats",
            "Cinder calls/repeat",
            "Cinder calls after ready",
            "first call sent",
        ],
        &rows,
    );
    Ok(json!({"load_start": load_start, "load_end": load_end, "rows": out}))
}

async fn start_with_config(v: &Variant, dir: &Path, config: &Path) -> Result<Running, String> {
    // A variant whose binary reads the config file instead of --backend.
    let wrapper = Variant {
        label: v.label.clone(),
        kind: Kind::SnapcsiLocal,
        bin: v.bin.clone(),
    };
    Running::start_with(
        &wrapper,
        dir,
        &[
            "--config",
            &config.display().to_string(),
            "--mode",
            "controller",
        ],
    )
    .await
}

async fn wait_available(cinder: &str, project: &str, volume_id: &str) -> Result<(), String> {
    // The CSI volume id of the Cinder backend is the Cinder id, possibly behind an instance
    // prefix ("cinder:<id>").
    let id = volume_id.rsplit(':').next().unwrap_or(volume_id);
    let url = format!("{cinder}/v3/{project}/volumes/{id}");
    for _ in 0..300 {
        let body: Value = reqwest::Client::new()
            .get(&url)
            .header("X-Auth-Token", format!("admin:{project}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["volume"]["status"] == "available" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("volume {id} never became available"))
}

async fn measure(
    d: &Running,
    proxy: &Proxy,
    volume: &str,
    name: &str,
    s: &mut Sample,
) -> Result<(), String> {
    let call = || async {
        d.controller()
            .create_snapshot(snapcsi::proto::CreateSnapshotRequest {
                name: name.to_owned(),
                source_volume_id: volume.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("CreateSnapshot: {}", s.message()))
            .map(|r| r.into_inner().snapshot.unwrap_or_default())
    };
    proxy.reset().await?;
    let started = Instant::now();
    let first = call().await?;
    s.first_ms.push(util::ms(started.elapsed()));
    let seen = proxy.seen().await?;
    s.first_calls.push(seen.len() as f64);
    s.first_seen.push(
        seen.iter()
            .map(|r| short_request(r))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let mut snapshot = first;
    let mut repeats = 0;
    proxy.reset().await?;
    while !snapshot.ready_to_use {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{name} not ready after 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        snapshot = call().await?;
        repeats += 1;
    }
    s.ready_ms.push(util::ms(started.elapsed()));
    let repeat_calls = proxy.seen().await?.len();
    s.repeats.push(f64::from(repeats));
    if repeats > 0 {
        s.repeat_calls
            .push(repeat_calls as f64 / f64::from(repeats));
    }
    proxy.reset().await?;
    call().await?;
    s.after_ready_calls.push(proxy.seen().await?.len() as f64);
    driver::delete_snapshot(d, &snapshot.snapshot_id).await?;
    Ok(())
}

/// "GET /v3/<project>/volumes/<uuid>" -> "GET volumes/{id}".
fn short_request(request: &str) -> String {
    let (method, path) = request.split_once(' ').unwrap_or((request, ""));
    let path = path.split('?').next().unwrap_or_default();
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .skip(2)
        .map(|p| {
            if p.len() == 36 && p.chars().filter(|c| *c == '-').count() == 4 {
                "{id}"
            } else {
                p
            }
        })
        .collect();
    format!("{method} {}", parts.join("/"))
}
