//! `config.rs`: the file, the environment, the flags, both shapes.

use super::*;

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
}

#[test]
fn expands_variables_and_defaults() {
    let env = env_of(&[("BUCKET", "b1"), ("EMPTY", "")]);
    assert_eq!(expand("s3://${BUCKET}/x", &env).unwrap(), "s3://b1/x");
    assert_eq!(expand("${NOPE:-30s}", &env).unwrap(), "30s");
    assert_eq!(expand("${EMPTY:-d}", &env).unwrap(), "d");
    assert!(expand("${NOPE}", &env).unwrap_err().contains("NOPE is not set"));
    assert!(expand("${OPEN", &env).is_err());
}

#[test]
fn embedded_default_is_the_local_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = load(dir.path(), None, None, &env_of(&[])).unwrap();
    assert_eq!(s.url, format!("file://{}", dir.path().join(".oxiflow/state").display()));
    assert!(s.config_file.is_none());
}

#[test]
fn file_then_environment_then_flag() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".oxiflow")).unwrap();
    std::fs::write(
        dir.path().join(".oxiflow/config.yaml"),
        "state:\n  url: s3://${BUCKET:-dflt}/p\n  lease_ttl: 45s\n  errors: { keep_last: 5 }\n",
    )
    .unwrap();
    let sub = dir.path().join("a/b");
    std::fs::create_dir_all(&sub).unwrap();
    let s = load(&sub, None, None, &env_of(&[])).unwrap();
    assert_eq!((s.url.as_str(), s.core.lease.ttl, s.core.limits.errors_keep_last), ("s3://dflt/p", Duration::from_secs(45), 5));
    let s = load(&sub, None, None, &env_of(&[("OXIFLOW_BACKEND", "memory://"), ("OXIFLOW_LEASE_TTL", "1m")])).unwrap();
    assert_eq!((s.url.as_str(), s.core.lease.ttl), ("memory://", Duration::from_secs(60)));
    let s = load(&sub, None, Some("memory://flag"), &env_of(&[("OXIFLOW_BACKEND", "memory://")])).unwrap();
    assert_eq!(s.url, "memory://flag");
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, "state:\n  url: [unclosed\n  lease_ttl: 3s\n").unwrap();
    let err = load(dir.path(), Some(&path), None, &env_of(&[])).unwrap_err();
    let ConfigError::Syntax { line, .. } = &err else { panic!("{err}") };
    assert!(*line >= 2, "{err}");
    assert!(err.to_string().starts_with(&format!("{}:", path.display())), "{err}");
}

#[test]
fn bad_values_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    for (text, needle) in [
        ("state:\n  lease_ttl: soon\n", "lease_ttl"),
        ("state:\n  lease_tl: 3s\n", "unknown field `lease_tl`"),
        ("state:\n  backend: s3\n  url: memory://\n", "state.backend is s3"),
        ("state:\n  lease_ttl: 3s\n  safety_margin: 5s\n", "safety margin"),
        ("state:\n  url: ${UNSET_VAR_X}\n", "UNSET_VAR_X is not set"),
    ] {
        std::fs::write(&path, text).unwrap();
        let err = load(dir.path(), Some(&path), None, &env_of(&[])).unwrap_err();
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
}

/// The configuration of the original design, as people will bring it.
const ORIGINAL: &str = r#"
state_manager:
  backend: auto  # auto, file, nfs, redis, http
  file: { base_path: ".oxiflow/state", lock_timeout: "30s" }
  redis: { connection_url: "${REDIS_URL:-redis://localhost:6379}", key_prefix: "oxiflow:state", lock_timeout: "45s" }
  http: { base_url: "${STATE_SERVICE_URL:-http://oxiflow-state:8080}", auth_token: "${STATE_SERVICE_TOKEN}" }
  heartbeat_interval: "10s"
  stale_worker_timeout: "5m"
  checkpoint_interval: "30s"
"#;

fn load_text(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (tempfile::TempDir, Result<Settings, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".oxiflow")).unwrap();
    std::fs::write(dir.path().join(".oxiflow/config.yaml"), text).unwrap();
    let result = load(dir.path(), None, None, env);
    (dir, result)
}

#[test]
fn the_original_shape_with_a_chosen_backend_maps_onto_the_settings() {
    // STATE_SERVICE_TOKEN is unset: the http section is not in use, so it is not expanded.
    let (_dir, s) = load_text(&ORIGINAL.replace("backend: auto", "backend: redis"), &env_of(&[]));
    let s = s.unwrap();
    assert_eq!(s.url, "redis://localhost:6379?prefix=oxiflow%3Astate");
    assert_eq!((s.core.lease.ttl, s.core.lease.heartbeat_interval), (Duration::from_secs(45), Duration::from_secs(10)));
    assert_eq!((s.stale_worker_timeout, s.checkpoint_interval), (Some(Duration::from_secs(300)), Some(Duration::from_secs(30))));
    let (_dir, s) = load_text(&ORIGINAL.replace("backend: auto", "backend: redis"), &env_of(&[("REDIS_URL", "rediss://r:6380/2")]));
    assert_eq!(s.unwrap().url, "rediss://r:6380/2?prefix=oxiflow%3Astate");
    let (_dir, s) = load_text(&ORIGINAL.replace("backend: auto", "backend: http"), &env_of(&[("STATE_SERVICE_TOKEN", "tok")]));
    let s = s.unwrap();
    assert_eq!((s.url.as_str(), s.http_token.as_deref()), ("http://oxiflow-state:8080", Some("tok")));
    let (dir, s) = load_text(&ORIGINAL.replace("backend: auto", "backend: file"), &env_of(&[]));
    let s = s.unwrap();
    assert_eq!((s.url, s.core.lease.ttl), (format!("file://{}", dir.path().join(".oxiflow/state").display()), Duration::from_secs(30)));
}

#[test]
fn auto_with_the_original_sketch_uses_file_unless_the_environment_chooses() {
    // Nothing set: redis and http wait for their variables; file is used.
    let (dir, s) = load_text(ORIGINAL, &env_of(&[]));
    let s = s.unwrap();
    assert_eq!((s.url, s.core.lease.ttl), (format!("file://{}", dir.path().join(".oxiflow/state").display()), Duration::from_secs(30)));
    assert_eq!(s.core.lease.heartbeat_interval, Duration::from_secs(10));
    // REDIS_URL chooses redis; STATE_SERVICE_TOKEN is unset and not expanded.
    let (_dir, s) = load_text(ORIGINAL, &env_of(&[("REDIS_URL", "redis://cache:6380/2")]));
    let s = s.unwrap();
    let url = url::Url::parse(&s.url).unwrap();
    assert_eq!((url.host_str(), url.port(), url.path()), (Some("cache"), Some(6380), "/2"));
    assert_eq!(url.query_pairs().collect::<Vec<_>>(), [("prefix".into(), "oxiflow:state".into())]);
    assert_eq!(s.core.lease.ttl, Duration::from_secs(45));
    // STATE_SERVICE_URL (and its token) choose http.
    let env = env_of(&[("STATE_SERVICE_URL", "https://state.example:8443"), ("STATE_SERVICE_TOKEN", "tok")]);
    let (_dir, s) = load_text(ORIGINAL, &env);
    let s = s.unwrap();
    assert_eq!((s.url.as_str(), s.http_token.as_deref()), ("https://state.example:8443", Some("tok")));
    // An empty variable is unset, as in expansion.
    let (_dir, s) = load_text(ORIGINAL, &env_of(&[("REDIS_URL", "")]));
    assert!(s.unwrap().url.starts_with("file://"));
}

#[test]
fn auto_refuses_two_sections_chosen_by_the_environment_naming_them() {
    let (_dir, err) = load_text(ORIGINAL, &env_of(&[("REDIS_URL", "redis://r"), ("STATE_SERVICE_URL", "http://s")]));
    let err = err.unwrap_err().to_string();
    for needle in [
        "state_manager.backend is auto",
        "state_manager.redis (REDIS_URL set)",
        "state_manager.http (STATE_SERVICE_URL set)",
        "set state_manager.backend",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn auto_picks_the_one_section_or_the_embedded_default_and_refuses_literal_ones() {
    // Two sections in literals only (or file and nfs): nothing to choose by.
    for (text, keys) in [
        (
            "state_manager:\n  file: { base_path: s }\n  redis: { connection_url: redis://h }\n",
            ["state_manager.file", "state_manager.redis"],
        ),
        (
            "state_manager:\n  redis: { connection_url: redis://h }\n  http: { base_url: http://s }\n",
            ["state_manager.redis", "state_manager.http"],
        ),
        ("state_manager:\n  file: { base_path: s }\n  nfs: { mount_path: /mnt/x }\n", ["state_manager.file", "state_manager.nfs"]),
    ] {
        let (_dir, err) = load_text(text, &env_of(&[]));
        let err = err.unwrap_err().to_string();
        for needle in ["state_manager.backend is auto", keys[0], keys[1], "set state_manager.backend"] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }
    // A literal section beside one waiting for its variable: the literal one.
    let text = "state_manager:\n  redis: { connection_url: redis://h:1/3 }\n  http: { base_url: \"${SVC:-http://s}\" }\n";
    let (_dir, s) = load_text(text, &env_of(&[]));
    assert_eq!(s.unwrap().url, "redis://h:1/3");
    let (_dir, s) = load_text(text, &env_of(&[("SVC", "http://svc:9")]));
    assert_eq!(s.unwrap().url, "http://svc:9");
    // All waiting, none set: the embedded default. A lone section: that one.
    let text = "state_manager:\n  redis: { connection_url: \"${R:-redis://h}\" }\n  http: { base_url: \"${H}\" }\n";
    let (dir, s) = load_text(text, &env_of(&[]));
    assert_eq!(s.unwrap().url, format!("file://{}", dir.path().join(".oxiflow/state").display()));
    let (_dir, s) = load_text("state_manager:\n  redis: { connection_url: \"${R:-redis://h:1/3}\" }\n", &env_of(&[]));
    assert_eq!(s.unwrap().url, "redis://h:1/3");
    let (dir, s) = load_text("state_manager:\n  backend: auto\n  heartbeat_interval: 5s\n", &env_of(&[]));
    let s = s.unwrap();
    assert_eq!(
        (s.url, s.core.lease.heartbeat_interval),
        (format!("file://{}", dir.path().join(".oxiflow/state").display()), Duration::from_secs(5))
    );
}

#[test]
fn nfs_is_the_local_directory_at_the_mount_path() {
    let (_dir, s) =
        load_text("state_manager:\n  backend: nfs\n  nfs: { mount_path: /mnt/shared/oxiflow, lock_timeout: 1m }\n", &env_of(&[]));
    let s = s.unwrap();
    assert_eq!((s.url.as_str(), s.core.lease.ttl), ("file:///mnt/shared/oxiflow", Duration::from_secs(60)));
}

#[test]
fn the_environment_and_flags_still_override_the_original_shape() {
    let text = "state_manager:\n  redis: { connection_url: redis://h:1/0, lock_timeout: 45s }\n";
    let (_dir, s) = load_text(text, &env_of(&[("OXIFLOW_BACKEND", "memory://"), ("OXIFLOW_LEASE_TTL", "1m")]));
    let s = s.unwrap();
    assert_eq!((s.url.as_str(), s.core.lease.ttl), ("memory://", Duration::from_secs(60)));
}

#[test]
fn ambiguous_or_wrong_original_shapes_are_refused_naming_the_keys() {
    for (text, needle) in [
        ("state: { url: memory:// }\nstate_manager: { backend: auto }\n", "both state: and state_manager: are set"),
        ("state_manager:\n  backend: redis\n", "state_manager.redis is missing; add it with connection_url"),
        ("state_manager:\n  backend: nfs\n", "state_manager.nfs is missing"),
        ("state_manager:\n  backend: etcd\n", "unknown backend \"etcd\""),
        (
            "state_manager:\n  backend: redis\n  redis: { connection_url: redis://h, lock_timeout: soon }\n",
            "state_manager.redis.lock_timeout",
        ),
        ("state_manager:\n  backend: redis\n  redis: { connection_url: http://h }\n", "must start with redis://"),
        ("state_manager:\n  redis: { connection_url: \"redis://h/0?prefix=a\", key_prefix: b }\n", "keep one"),
        ("state_manager:\n  backend: redis\n  redis: { connection_url: redis://h }\n  file: { base_pth: x }\n", "unknown field `base_pth`"),
        ("state_manager:\n  heartbeat_interval: often\n", "state_manager.heartbeat_interval"),
        ("state_manager:\n  stale_worker_timeout: later\n", "state_manager.stale_worker_timeout"),
    ] {
        let (_dir, err) = load_text(text, &env_of(&[]));
        let err = err.unwrap_err().to_string();
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn state_backend_knows_redis_and_http() {
    let (_dir, s) = load_text("state:\n  backend: redis\n  url: redis://h:1/0\n", &env_of(&[]));
    assert_eq!(s.unwrap().url, "redis://h:1/0");
    let (_dir, err) = load_text("state:\n  backend: redis\n  url: s3://b/p\n", &env_of(&[]));
    assert!(err.unwrap_err().to_string().contains("state.backend is redis but the URL s3://b/p is s3://"));
}
