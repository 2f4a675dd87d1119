//! The container template — `examples/reference-backend/Dockerfile`,
//! `examples/reference-backend/docker-compose.yml` and the repository's
//! `.dockerignore` — checked rule by rule without a container engine, and
//! the `--health-check` command its `HEALTHCHECK` runs.
//!
//! The Dockerfile is read instruction by instruction, the compose file as
//! YAML. Each rule has a name; the checker is shown to catch each kind of
//! mistake on a copy of the real file with that mistake made in it (so a
//! rule that stopped checking anything fails here).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)] // test code: a failed step is a failed test

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use palisade_security_tests::{Backend, run_to_exit_with_args};
use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn dockerfile() -> String {
    read("examples/reference-backend/Dockerfile")
}

fn compose() -> String {
    read("examples/reference-backend/docker-compose.yml")
}

fn dockerignore() -> String {
    read(".dockerignore")
}

/// A broken rule: its name and what was found.
struct Violation {
    rule: &'static str,
    detail: String,
}

#[derive(Default)]
struct Findings(Vec<Violation>);

impl Findings {
    fn add(&mut self, rule: &'static str, detail: impl Into<String>) {
        self.0.push(Violation {
            rule,
            detail: detail.into(),
        });
    }

    fn rules(&self) -> Vec<&'static str> {
        self.0.iter().map(|v| v.rule).collect()
    }
}

impl std::fmt::Display for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for v in &self.0 {
            writeln!(f, "  {}: {}", v.rule, v.detail)?;
        }
        Ok(())
    }
}

// --- the Dockerfile ---------------------------------------------------------

/// One instruction: its keyword (upper case) and its arguments, continuation
/// lines joined.
#[derive(Debug, Clone)]
struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    name: Option<String>,
    base: String,
    instructions: Vec<Instruction>,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comments (and parser directives) end nowhere; a comment line
        // inside a continued instruction is skipped, as Docker does.
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        let (part, continued) = match trimmed.strip_suffix('\\') {
            Some(part) => (part.trim(), true),
            None => (trimmed, false),
        };
        if !pending.is_empty() {
            pending.push(' ');
        }
        pending.push_str(part);
        if !continued {
            let (keyword, args) = pending
                .split_once(char::is_whitespace)
                .unwrap_or((&pending, ""));
            out.push(Instruction {
                keyword: keyword.to_ascii_uppercase(),
                args: args.trim().to_owned(),
            });
            pending.clear();
        }
    }
    out
}

fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for ins in instructions(text) {
        if ins.keyword == "FROM" {
            let words: Vec<&str> = ins
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage {
                name,
                base: words.first().copied().unwrap_or_default().to_owned(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(ins);
        }
    }
    stages
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'static str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    fn last(&self, keyword: &'static str) -> Option<&Instruction> {
        self.all(keyword).last()
    }

    /// The `ENV` variables this stage sets.
    fn env(&self) -> BTreeMap<String, String> {
        self.all("ENV").flat_map(|i| env_pairs(&i.args)).collect()
    }
}

/// `ENV K=V K2="V 2"` or the legacy `ENV K V`.
fn env_pairs(args: &str) -> Vec<(String, String)> {
    let first = args.split_whitespace().next().unwrap_or_default();
    if !first.contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(k.to_owned(), v.trim().to_owned())];
    }
    args.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// A name that says its value is a secret.
fn secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    [
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PRIVATE",
        "CREDENTIAL",
        "API_KEY",
    ]
    .iter()
    .any(|w| upper.contains(w))
        || upper.ends_with("_KEY")
}

/// A URL carrying a password (`scheme://user:password@host`).
fn credentials_in_url(value: &str) -> bool {
    value.split("://").nth(1).is_some_and(|rest| {
        rest.split(['/', '?', '#'])
            .next()
            .is_some_and(|authority| authority.contains('@'))
    })
}

/// A variable that must not be set in an image or a compose file: a secret
/// by name (its `_FILE` form, a path under /run/secrets, is fine) or a URL
/// with credentials.
fn secret_variable(name: &str, value: &str) -> Option<String> {
    if credentials_in_url(value) {
        return Some(format!("{name} holds a URL with credentials"));
    }
    if !secret_name(name) {
        return None;
    }
    if name.ends_with("_FILE") && value.starts_with("/run/secrets/") {
        return None;
    }
    Some(format!("{name} is a secret set in plain text"))
}

/// `image:tag@sha256:<64 hex>` with a tag naming an exact version.
fn pinned(image: &str) -> bool {
    let Some((name, digest)) = image.split_once("@sha256:") else {
        return false;
    };
    let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
    digest.len() == 64
        && digest.bytes().all(|b| b.is_ascii_hexdigit())
        && tag != "latest"
        && tag.bytes().any(|b| b.is_ascii_digit())
}

/// A numeric, non-root `uid[:gid]`.
fn numeric_non_root(user: &str) -> bool {
    let mut ids = user.split(':');
    let uid = ids.next().unwrap_or_default();
    let gid = ids.next();
    let id = |s: &str| s.parse::<u32>().ok().filter(|&n| n != 0);
    id(uid).is_some() && gid.is_none_or(|g| id(g).is_some()) && ids.next().is_none()
}

/// The elements of an exec-form (JSON array) command, `None` for the shell form.
fn exec_form(args: &str) -> Option<Vec<String>> {
    serde_json::from_str(args).ok()
}

const RUNTIME_IMAGES: [&str; 3] = [
    "gcr.io/distroless/cc-debian12",
    "gcr.io/distroless/cc-debian13",
    "debian",
];

fn check_dockerfile(text: &str) -> Findings {
    let mut f = Findings::default();
    let stages = stages(text);
    let Some(runtime) = stages.last() else {
        f.add("multi-stage", "no FROM at all");
        return f;
    };
    check_build(&stages, &mut f);
    check_runtime(runtime, &mut f);
    check_no_secret(&stages, &mut f);
    check_container_settings(runtime, &mut f);
    check_health(runtime, &mut f);
    f
}

/// Several stages, pinned bases, the dependencies in their own layer, a
/// release build.
fn check_build(stages: &[Stage], f: &mut Findings) {
    if stages.len() < 2 {
        f.add(
            "multi-stage",
            "one stage: the toolchain and the sources ship",
        );
    }
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in stages {
        if !names.contains(&stage.base.as_str()) && !pinned(&stage.base) {
            f.add(
                "pinned-base-images",
                format!("{} is not pinned by an exact tag and a digest", stage.base),
            );
        }
    }

    let builder = stages.iter().find(|s| {
        s.all("RUN")
            .any(|r| r.args.contains("cargo build") && r.args.contains("reference-backend"))
    });
    match builder {
        None => f.add(
            "release-build",
            "no stage runs `cargo build` of reference-backend",
        ),
        Some(stage) => {
            let build = stage
                .all("RUN")
                .find(|r| r.args.contains("cargo build"))
                .unwrap();
            if !(build.args.contains("--release") && build.args.contains("--locked")) {
                f.add(
                    "release-build",
                    format!("`{}` lacks --release or --locked", build.args),
                );
            }
            let at = |pred: &dyn Fn(&Instruction) -> bool| stage.instructions.iter().position(pred);
            let cook = at(&|i| i.keyword == "RUN" && i.args.contains("cargo chef cook"));
            let sources = at(&|i| i.keyword == "COPY" && !i.args.contains("recipe.json"));
            match (cook, sources) {
                (Some(cook), Some(sources)) if cook < sources => {
                    if !stage.instructions[cook].args.contains("--release") {
                        f.add(
                            "dependency-layer",
                            "the dependencies are cooked in another profile than the build",
                        );
                    }
                }
                _ => f.add(
                    "dependency-layer",
                    "no `cargo chef cook` layer before the sources are copied",
                ),
            }
        }
    }
}

/// The runtime image: minimal, the binary copied from the builder, a
/// non-root numeric user.
fn check_runtime(runtime: &Stage, f: &mut Findings) {
    let image = runtime.base.split(['@', ':']).next().unwrap_or_default();
    let slim = image != "debian" || runtime.base.contains("-slim");
    if !RUNTIME_IMAGES.contains(&image) || !slim {
        f.add(
            "minimal-runtime",
            format!("{} is not distroless/cc or debian-slim", runtime.base),
        );
    }
    for copy in runtime.all("COPY").chain(runtime.all("ADD")) {
        if !copy.args.contains("--from=") {
            f.add(
                "minimal-runtime",
                format!("`{}` copies the build context", copy.args),
            );
        }
    }
    if runtime.all("RUN").next().is_some() {
        f.add("minimal-runtime", "the runtime stage runs commands");
    }
    let user = runtime.last("USER").map(|u| u.args.as_str());
    if !user.is_some_and(numeric_non_root) {
        f.add("non-root-user", format!("USER is {user:?}"));
    }
}

/// No secret anywhere in the image's history: no secret `ENV` or `ARG`, no
/// secret file copied in.
fn check_no_secret(stages: &[Stage], f: &mut Findings) {
    for stage in stages {
        for ins in stage.all("ENV").chain(stage.all("ARG")) {
            let pairs = if ins.keyword == "ARG" {
                let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                vec![(k.to_owned(), v.to_owned())]
            } else {
                env_pairs(&ins.args)
            };
            for (k, v) in pairs {
                if let Some(why) = secret_variable(&k, &v) {
                    f.add("no-secret-in-image", format!("{} {why}", ins.keyword));
                }
            }
        }
        for copy in stage.all("COPY").chain(stage.all("ADD")) {
            let lower = copy.args.to_ascii_lowercase();
            if ["secret", ".pem", ".key", ".env"]
                .iter()
                .any(|s| lower.contains(s))
            {
                f.add(
                    "no-secret-in-image",
                    format!("`{}` copies a secret", copy.args),
                );
            }
        }
    }
}

/// `APP_LISTEN` for a container, and `APP_DATA_DIR` the one writable place: a
/// volume, created owned by the user.
fn check_container_settings(runtime: &Stage, f: &mut Findings) {
    let env = runtime.env();
    let listen = env.get("APP_LISTEN").map(String::as_str);
    if !matches!(listen, Some("0.0.0.0:8080" | "[::]:8080")) {
        f.add("container-listen", format!("APP_LISTEN is {listen:?}"));
    }
    if !runtime.all("EXPOSE").any(|e| {
        e.args
            .split_whitespace()
            .any(|p| p.trim_end_matches("/tcp") == "8080")
    }) {
        f.add("container-listen", "port 8080 is not exposed");
    }
    match env.get("APP_DATA_DIR") {
        None => f.add("writable-data-dir", "APP_DATA_DIR is not set"),
        Some(dir) => {
            let volume = runtime.all("VOLUME").any(|v| {
                exec_form(&v.args).map_or_else(
                    || v.args.split_whitespace().any(|p| p == dir),
                    |paths| paths.iter().any(|p| p == dir),
                )
            });
            if !volume {
                f.add("writable-data-dir", format!("{dir} is not a VOLUME"));
            }
            // With a read-only root, temporary files (SQLite's) need a home.
            if env.get("TMPDIR") != Some(dir) {
                f.add(
                    "writable-data-dir",
                    format!("TMPDIR is not the data directory {dir}"),
                );
            }
            let chown = runtime.last("USER").map(|u| format!("--chown={}", u.args));
            let owned = runtime.all("COPY").any(|c| {
                chown.as_ref().is_some_and(|o| c.args.contains(o.as_str()))
                    && c.args.split_whitespace().last() == Some(dir.as_str())
            });
            if !owned {
                f.add(
                    "writable-data-dir",
                    format!("{dir} is not created owned by the USER"),
                );
            }
        }
    }
}

/// The health check: exec form, the binary itself, no shell or curl; and
/// an exec-form entry point, so that SIGTERM reaches the service.
fn check_health(runtime: &Stage, f: &mut Findings) {
    match runtime.last("HEALTHCHECK") {
        None => f.add("health-check", "no HEALTHCHECK"),
        Some(h) if h.args.trim().eq_ignore_ascii_case("none") => {
            f.add("health-check", "HEALTHCHECK NONE");
        }
        Some(h) => {
            let command = h
                .args
                .split_once("CMD")
                .map(|(_, c)| c.trim())
                .unwrap_or_default();
            let entry = runtime.last("ENTRYPOINT").and_then(|e| exec_form(&e.args));
            match exec_form(command) {
                Some(argv)
                    if argv.first() == entry.as_ref().and_then(|e| e.first())
                        && argv.iter().any(|a| a == "--health-check") => {}
                _ => f.add(
                    "health-check",
                    format!("`{command}` is not the binary's own --health-check in exec form"),
                ),
            }
            if !h.args.contains("--timeout=") {
                f.add("health-check", "the HEALTHCHECK has no --timeout");
            }
        }
    }
    if runtime
        .last("ENTRYPOINT")
        .and_then(|e| exec_form(&e.args))
        .is_none()
    {
        f.add(
            "exec-form",
            "ENTRYPOINT is not in exec form: SIGTERM would not reach the service",
        );
    }
}

// --- docker-compose.yml -----------------------------------------------------

fn yaml(text: &str) -> Value {
    let mut value: Value = serde_norway::from_str(text).unwrap();
    value.apply_merge().unwrap();
    value
}

fn str_of(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

/// A compose `environment` as a map (mapping or `K=V` list).
fn compose_env(service: &Value) -> BTreeMap<String, String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    };
    match service.get("environment") {
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn names(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(|i| str_of(Some(i)).or_else(|| str_of(i.get("source"))))
            .map(str::to_owned)
            .collect(),
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Seconds of a compose duration (`35s`, `1m`, `1m30s`).
fn seconds(duration: &str) -> Option<u64> {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number.parse().ok()?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => return None,
        }
    }
    number.is_empty().then_some(total)
}

fn check_compose(text: &str, dockerfile: &str) -> Findings {
    let mut f = Findings::default();
    let doc = yaml(text);
    let image_env = stages(dockerfile)
        .last()
        .map(Stage::env)
        .unwrap_or_default();
    let Some(Value::Mapping(services)) = doc.get("services") else {
        f.add("two-instances", "no services");
        return f;
    };
    let services: Vec<(String, &Value)> = services
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v)))
        .collect();
    let built_from_template = |s: &Value| {
        str_of(s.get("build").and_then(|b| b.get("dockerfile")))
            .is_some_and(|d| d.ends_with("reference-backend/Dockerfile"))
            && str_of(s.get("build").and_then(|b| b.get("target"))) != Some("audit")
    };
    let backends: Vec<&(String, &Value)> = services
        .iter()
        .filter(|(_, s)| built_from_template(s))
        .collect();
    if backends.len() < 2 {
        f.add(
            "two-instances",
            format!("{} backend service(s)", backends.len()),
        );
    }
    let top_volumes = names(doc.get("volumes"));
    let top_secrets = doc.get("secrets");
    let mut data_volumes: Vec<String> = backends
        .iter()
        .filter_map(|(name, s)| check_backend(name, s, &image_env, &top_volumes, &mut f))
        .collect();
    data_volumes.dedup();
    if data_volumes.len() > 1 {
        f.add(
            "writable-data-dir",
            "the instances do not share one data volume",
        );
    }
    for secret in names(top_secrets) {
        let file = top_secrets
            .and_then(|s| s.get(secret.as_str()))
            .and_then(|s| s.get("file"));
        if file.is_none() {
            f.add(
                "secret-files",
                format!("secret {secret} is not read from a file"),
            );
        }
    }
    let redis = services.iter().any(|(_, s)| {
        str_of(s.get("image")).is_some_and(|i| i.starts_with("redis:") || i.starts_with("valkey/"))
    });
    if !redis {
        f.add("shared-redis", "no Redis service");
    }
    for (name, s) in &services {
        if s.get("build").is_none() {
            match str_of(s.get("image")) {
                Some(image) if pinned(image) => {}
                image => f.add(
                    "pinned-base-images",
                    format!("{name}: {image:?} is not pinned"),
                ),
            }
        }
    }
    check_audit(&services, &backends, &mut f);
    f
}

/// One backend instance: non-root, read-only but for the data volume,
/// secrets as files, the shared Redis, the image's health check, a stop
/// grace above the drain. Returns the named volume of its data directory.
fn check_backend(
    name: &str,
    s: &Value,
    image_env: &BTreeMap<String, String>,
    top_volumes: &[String],
    f: &mut Findings,
) -> Option<String> {
    if let Some(user) = str_of(s.get("user"))
        && !numeric_non_root(user)
    {
        f.add("non-root-user", format!("{name} runs as {user}"));
    }
    if s.get("read_only").and_then(Value::as_bool) != Some(true) {
        f.add(
            "writable-data-dir",
            format!("{name}: the root file system is writable"),
        );
    }
    if s.get("tmpfs").is_some() {
        f.add("writable-data-dir", format!("{name} mounts a tmpfs"));
    }
    let mut env = image_env.clone();
    env.extend(compose_env(s));
    let secrets = names(s.get("secrets"));
    for (k, v) in &env {
        if let Some(why) = secret_variable(k, v) {
            f.add("no-secret-in-env", format!("{name}: {why}"));
        }
        if let Some(secret) = v.strip_prefix("/run/secrets/")
            && !secrets.iter().any(|s| s == secret)
        {
            f.add(
                "secret-files",
                format!("{name}: {k} names a secret it is not given"),
            );
        }
    }
    if !env.contains_key("APP_JWT_SECRET_FILE") {
        f.add("secret-files", format!("{name}: no APP_JWT_SECRET_FILE"));
    }
    if !env.keys().any(|k| k.starts_with("APP_REDIS_URL")) {
        f.add("shared-redis", format!("{name}: no APP_REDIS_URL(_FILE)"));
    }
    let dir = env.get("APP_DATA_DIR").cloned().unwrap_or_default();
    let mounts: Vec<String> = match s.get("volumes") {
        Some(Value::Sequence(v)) => v
            .iter()
            .filter_map(|m| str_of(Some(m)).map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let volume = match mounts.iter().find_map(|m| {
        let (source, target) = m.split_once(':')?;
        (target.trim_end_matches(":rw") == dir).then_some(source.to_owned())
    }) {
        Some(source) if top_volumes.contains(&source) => Some(source),
        _ => {
            f.add(
                "writable-data-dir",
                format!("{name}: APP_DATA_DIR ({dir}) is not a named volume"),
            );
            None
        }
    };
    if let Some(h) = s.get("healthcheck") {
        let disabled = h.get("disable").and_then(Value::as_bool) == Some(true);
        let probe = format!("{:?}", h.get("test"));
        if disabled
            || ["NONE", "curl", "wget", "CMD-SHELL"]
                .iter()
                .any(|w| probe.contains(w))
        {
            f.add(
                "health-check",
                format!("{name}: the image's health check is replaced by {probe}"),
            );
        }
    }
    let grace = str_of(s.get("stop_grace_period")).and_then(seconds);
    if grace.is_none_or(|g| g <= 30) {
        f.add(
            "graceful-stop",
            format!("{name}: stop_grace_period must exceed the 30 s drain"),
        );
    }
    volume
}

/// The audit: a one-shot service that waits for every backend to be healthy
/// and audits one of them.
fn check_audit(services: &[(String, &Value)], backends: &[&(String, &Value)], f: &mut Findings) {
    let audit = services
        .iter()
        .find(|(_, s)| str_of(s.get("build").and_then(|b| b.get("target"))) == Some("audit"));
    match audit {
        None => f.add("one-shot-audit", "no audit service"),
        Some((name, s)) => {
            if !matches!(str_of(s.get("restart")), None | Some("no")) {
                f.add("one-shot-audit", format!("{name} restarts"));
            }
            let command = names(s.get("command"));
            if !backends.iter().any(|(b, _)| {
                command
                    .iter()
                    .any(|c| c.starts_with(&format!("http://{b}:")))
            }) {
                f.add(
                    "one-shot-audit",
                    format!("{name} audits no backend: {command:?}"),
                );
            }
            for (b, _) in backends {
                let condition = s
                    .get("depends_on")
                    .and_then(|d| d.get(b.as_str()))
                    .and_then(|d| str_of(d.get("condition")));
                if condition != Some("service_healthy") {
                    f.add(
                        "one-shot-audit",
                        format!("{name} does not wait for {b} to be healthy"),
                    );
                }
            }
        }
    }
}

// --- .dockerignore ----------------------------------------------------------

fn workspace_members() -> Vec<String> {
    let manifest: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    manifest["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

fn check_dockerignore(text: &str, members: &[String]) -> Findings {
    let mut f = Findings::default();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if patterns.first() != Some(&"*") {
        f.add(
            "build-context",
            "the context is not an allow-list (first pattern `*`)",
        );
    }
    let allowed = |path: &str| {
        patterns
            .iter()
            .filter_map(|p| p.strip_prefix('!'))
            .any(|p| p.trim_end_matches('/') == path)
    };
    let top = |path: &str| path.split('/').next().unwrap_or_default().to_owned();
    for needed in ["Cargo.toml", "Cargo.lock"]
        .into_iter()
        .map(str::to_owned)
        .chain(members.iter().map(|m| top(m)))
    {
        if !allowed(&needed) {
            f.add(
                "build-context",
                format!("{needed} is left out: the workspace cannot build"),
            );
        }
    }
    for excluded in [
        "**/target",
        "examples/reference-backend/secrets",
        "**/.env",
        "**/*.pem",
        "**/*.key",
    ] {
        if !patterns.contains(&excluded) {
            f.add("build-context", format!("{excluded} is not excluded"));
        }
    }
    f
}

// --- the real files ---------------------------------------------------------

#[test]
fn the_template_follows_every_rule() {
    let docker = dockerfile();
    for (what, findings) in [
        ("Dockerfile", check_dockerfile(&docker)),
        ("docker-compose.yml", check_compose(&compose(), &docker)),
        (
            ".dockerignore",
            check_dockerignore(&dockerignore(), &workspace_members()),
        ),
    ] {
        assert!(findings.0.is_empty(), "{what} breaks:\n{findings}");
    }
}

/// `text` with `from` replaced by `to`; `from` must be there (a mutation
/// that changes nothing proves nothing).
fn mutate(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the file any more");
    text.replacen(from, to, 1)
}

fn assert_caught(rule: &str, findings: &Findings, what: &str) {
    assert!(
        findings.rules().contains(&rule),
        "{what}: rule {rule} not broken, found:\n{findings}"
    );
}

#[test]
fn the_dockerfile_checker_catches_each_mistake() {
    let good = dockerfile();
    let user = "USER 10001:10001\n# Containers";
    let cases: [(&str, &str, &str); 18] = [
        ("non-root-user", user, "USER root\n# Containers"),
        ("non-root-user", user, "USER 0:0\n# Containers"),
        ("non-root-user", user, "USER app\n# Containers"),
        ("non-root-user", user, "USER 10001:0\n# Containers"),
        ("non-root-user", user, "# Containers"),
        (
            "no-secret-in-image",
            "ENV APP_PROFILE=prod",
            "ENV APP_JWT_SECRET=Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8 APP_PROFILE=prod",
        ),
        (
            "no-secret-in-image",
            "ENV APP_PROFILE=prod",
            "ENV APP_REDIS_URL=redis://:hunter2@redis:6379 APP_PROFILE=prod",
        ),
        (
            "no-secret-in-image",
            "WORKDIR /build",
            "WORKDIR /build\nARG DB_PASSWORD=hunter2",
        ),
        (
            "no-secret-in-image",
            "COPY --from=builder /out/reference-backend",
            "COPY secrets/jwt_secret /run/jwt\nCOPY --from=builder /out/reference-backend",
        ),
        (
            "health-check",
            "HEALTHCHECK --interval",
            "# HEALTHCHECK --interval",
        ),
        (
            "health-check",
            r#"CMD ["/usr/local/bin/reference-backend", "--health-check"]"#,
            "CMD curl -f http://127.0.0.1:8080/health || exit 1",
        ),
        (
            "health-check",
            r#"CMD ["/usr/local/bin/reference-backend", "--health-check"]"#,
            r#"CMD ["/bin/sh", "-c", "/usr/local/bin/reference-backend --health-check"]"#,
        ),
        (
            "pinned-base-images",
            "debian:bookworm-20260824-slim@sha256:88200866dfff7ea7f5cbcb6ec7c8a701889efe6fe859fe64d6990e4b07ea4171 AS runtime",
            "debian:bookworm-slim AS runtime",
        ),
        (
            "dependency-layer",
            "RUN cargo chef cook --release",
            "RUN cargo chef cook",
        ),
        (
            "release-build",
            "cargo build --release --locked -p reference-backend",
            "cargo build --locked -p reference-backend",
        ),
        (
            "container-listen",
            "APP_LISTEN=0.0.0.0:8080",
            "APP_LISTEN=127.0.0.1:8080",
        ),
        ("writable-data-dir", r#"VOLUME ["/data"]"#, ""),
        ("writable-data-dir", "TMPDIR=/data", "TMPDIR=/tmp"),
    ];
    for (rule, from, to) in cases {
        let bad = mutate(&good, from, to);
        assert_caught(
            rule,
            &check_dockerfile(&bad),
            &format!("{from:?} -> {to:?}"),
        );
    }
    // A single stage that builds and runs.
    let single = "FROM rust:1.98.0-slim-bookworm@sha256:f5b930229aa3a991d2ad65e358fc460719ddc404e5af6cb044d57215abce933e\nCOPY . .\nRUN cargo build --release -p reference-backend\nUSER 10001\nCMD [\"target/release/reference-backend\"]\n";
    let findings = check_dockerfile(single);
    for rule in [
        "multi-stage",
        "minimal-runtime",
        "dependency-layer",
        "health-check",
    ] {
        assert_caught(rule, &findings, "single stage");
    }
}

#[test]
fn the_compose_checker_catches_each_mistake() {
    let good = compose();
    let docker = dockerfile();
    let cases: [(&str, &str, &str); 10] = [
        (
            "non-root-user",
            r#"user: "10001:10001"
  # Only"#,
            r#"user: "0:0"
  # Only"#,
        ),
        (
            "non-root-user",
            r#"user: "10001:10001"
  # Only"#,
            r"user: root
  # Only",
        ),
        (
            "no-secret-in-env",
            "APP_JWT_SECRET_FILE: /run/secrets/jwt_secret",
            "APP_JWT_SECRET_FILE: /run/secrets/jwt_secret\n    APP_METRICS_TOKEN: Zr5v0Lp2Xn4Bm6Yt8Hs1Jd3Fg7Kq9wCe2Vb4Nm6Qa8",
        ),
        (
            "no-secret-in-env",
            "APP_REDIS_URL_FILE: /run/secrets/redis_url",
            "APP_REDIS_URL: redis://:hunter2@redis:6379",
        ),
        (
            "secret-files",
            "    file: ./secrets/jwt_secret",
            "    environment: JWT_SECRET",
        ),
        (
            "writable-data-dir",
            "  read_only: true\n  cap_drop",
            "  cap_drop",
        ),
        (
            "health-check",
            "  restart: unless-stopped\n\nservices",
            "  restart: unless-stopped\n  healthcheck:\n    disable: true\n\nservices",
        ),
        (
            "two-instances",
            "  backend-2:\n    <<: *backend",
            "  backend-2:\n    image: nginx:1.27.0@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
        (
            "pinned-base-images",
            "image: redis:7.4.11-alpine@sha256:ff02b58f971e7d7d156a1267e283fcbbeee91773b6aa36c49dac28ecfe28eadf",
            "image: redis:latest",
        ),
        (
            "one-shot-audit",
            r#"    restart: "no""#,
            "    restart: always",
        ),
    ];
    for (rule, from, to) in cases {
        let bad = mutate(&good, from, to);
        assert_caught(
            rule,
            &check_compose(&bad, &docker),
            &format!("{from:?} -> {to:?}"),
        );
    }
}

#[test]
fn the_dockerignore_checker_catches_a_leaky_or_broken_context() {
    let good = dockerignore();
    let members = workspace_members();
    for (from, to) in [
        ("**/target\n", ""),
        ("examples/reference-backend/secrets\n", ""),
        ("!tests/\n", ""),
        ("*\n!Cargo.toml", "!Cargo.toml"),
    ] {
        let bad = mutate(&good, from, to);
        assert_caught("build-context", &check_dockerignore(&bad, &members), from);
    }
}

// --- the HEALTHCHECK command ------------------------------------------------

#[test]
fn health_check_exits_0_against_a_running_backend_and_1_otherwise() {
    let backend = Backend::start();
    let addr = backend.addr.to_string();
    let (status, _, stderr) = run_to_exit_with_args(&["--health-check"], &[("APP_LISTEN", &addr)]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    // As in a container: listening on every interface, probed on loopback.
    let any = format!("0.0.0.0:{}", backend.addr.port());
    let (status, _, stderr) = run_to_exit_with_args(&["--health-check"], &[("APP_LISTEN", &any)]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    drop(backend);

    // Nothing listens there any more.
    let (status, _, stderr) = run_to_exit_with_args(&["--health-check"], &[("APP_LISTEN", &addr)]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("unhealthy: cannot connect"), "{stderr}");
    // A refused configuration is unhealthy too (1, not 78: Docker reserves
    // every status but 0 and 1), and says why without a value.
    let (status, _, stderr) = run_to_exit_with_args(
        &["--health-check"],
        &[
            ("APP_PROFILE", "prod"),
            ("APP_JWT_SECRET", "changeme-changeme-changeme-changeme"),
        ],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("APP_JWT_SECRET") && !stderr.contains("changeme"),
        "{stderr}"
    );
}
