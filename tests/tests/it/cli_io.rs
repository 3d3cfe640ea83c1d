//! `stowage put` and `get` as I/O: where `get -o` writes (SPEC §7: regular
//! files replaced atomically, symlink targets replaced with the link kept,
//! character devices and FIFOs written through, directories refused,
//! multi-blob `--raw` directories renamed into place), how `put` reads
//! (regular files mapped, stdin and streams spooled, `--json` capped and
//! dispatched like `Host::save`), and that memory stays flat: the peak
//! `RssAnon` of the running `stowage` process, sampled from
//! `/proc/PID/status`, stays under 64 MiB while it puts (from a file and
//! from stdin) and gets (to a file and to a FIFO) a 512 MiB safetensors
//! file.
//!
//! Device nodes are made with `mknod` inside the test directory (CI runs as
//! root); the real `/dev` is never written.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use stowage::store::{BlobLayout, RecordMeta, Store};
use stowage_tests::{artifacts, StowageCmd, TestDir};

/// The bound on anonymous memory of a put or get, whatever the file size.
const RSS_ANON_LIMIT: u64 = 64 * 1024 * 1024;

/// A test directory with the echo fixture and an artifact `e` whose
/// exported file is `ECHO\n` + `payload`.
fn echo_dir(name: &str, payload: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("in.echo"), format!("ECHO\n{payload}")).expect("write input");
    StowageCmd::new(&dir, &["put", "e", "in.echo"]).ok();
    dir
}

/// `stowage ARGS…` in `dir`, scrubbed like [`StowageCmd`], stdin piped.
fn spawn(dir: &TestDir, args: &[&str]) -> Child {
    spawn_with(dir, args, Stdio::piped())
}

/// [`spawn`] with the given stdin.
fn spawn_with(dir: &TestDir, args: &[&str], stdin: Stdio) -> Child {
    let mut command = Command::new(&artifacts().stowage);
    command
        .current_dir(&dir.root)
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("STOWAGE_") || key == "RUST_LOG" {
            command.env_remove(&key);
        }
    }
    command.spawn().expect("spawn stowage")
}

/// Runs `stowage ARGS…` with `input` on stdin.
fn with_stdin(dir: &TestDir, args: &[&str], input: &[u8]) -> Output {
    let mut child = spawn(dir, args);
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may stop reading early (a size limit): ignore EPIPE.
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().expect("stowage runs");
    writer.join().expect("stdin writer");
    output
}

#[track_caller]
fn assert_output(output: &Output, code: i32, stdout: &str, stderr: &str) {
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).as_ref(),
            String::from_utf8_lossy(&output.stderr).as_ref()
        ),
        (Some(code), stdout, stderr)
    );
}

fn mknod(path: &Path, kind: &str, major: u32, minor: u32) {
    let status = Command::new("mknod")
        .arg(path)
        .args([kind, &major.to_string(), &minor.to_string()])
        .status()
        .expect("mknod runs");
    assert!(
        status.success(),
        "mknod {} (tests run as root)",
        path.display()
    );
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// `(is a char device, major, minor)` of `path`.
fn char_device(path: &Path) -> (bool, u64, u64) {
    let meta = fs::symlink_metadata(path).expect("node exists");
    let rdev = meta.rdev();
    (
        meta.file_type().is_char_device(),
        (rdev >> 8) & 0xfff,
        (rdev & 0xff) | ((rdev >> 12) & 0xfff00),
    )
}

/// Names in `dir` starting with `.` (temp files or directories left over).
fn dotfiles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    names
}

#[test]
fn get_to_a_null_device_writes_through_and_keeps_the_node() {
    let dir = echo_dir("get-null", "payload");
    let node = dir.root.join("null");
    mknod(&node, "c", 1, 3);
    assert_eq!(StowageCmd::new(&dir, &["get", "e", "-o", "null"]).ok(), "");
    assert_eq!(char_device(&node), (true, 1, 3));
    assert_eq!(dotfiles(&dir.root), Vec::<String>::new());
}

#[test]
fn get_to_a_full_device_fails_with_enospc_and_keeps_the_node() {
    let dir = echo_dir("get-full", "payload");
    let node = dir.root.join("full");
    mknod(&node, "c", 1, 7);
    StowageCmd::new(&dir, &["get", "e", "-o", "full"]).fails(
        1,
        "error: cannot write full: No space left on device (os error 28)",
    );
    assert_eq!(char_device(&node), (true, 1, 7));
    StowageCmd::new(&dir, &["get", "e", "--raw", "-o", "full"]).fails(
        1,
        "error: cannot write full: No space left on device (os error 28)",
    );
    assert_eq!(char_device(&node), (true, 1, 7));
}

#[test]
fn get_to_a_fifo_streams_every_byte_to_its_reader() {
    let payload: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let dir = echo_dir("get-fifo", &payload);
    let fifo = dir.root.join("pipe");
    mkfifo(&fifo);
    let reader_path = fifo.clone();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        File::open(&reader_path)
            .expect("open the FIFO for reading")
            .read_to_end(&mut bytes)
            .expect("read the FIFO");
        bytes
    });
    StowageCmd::new(&dir, &["get", "e", "-o", "pipe"]).ok();
    let received = reader.join().expect("reader thread");
    assert!(
        received == format!("ECHO\n{payload}").into_bytes(),
        "the FIFO's reader got {} bytes, not the export",
        received.len()
    );
    assert!(fs::symlink_metadata(&fifo)
        .expect("fifo")
        .file_type()
        .is_fifo());
}

#[test]
fn get_through_a_symlink_replaces_its_target_and_keeps_the_link() {
    let dir = echo_dir("get-symlink", "new");
    fs::create_dir(dir.root.join("real")).expect("mkdir");
    fs::write(dir.root.join("real/target.echo"), "old").expect("write");
    std::os::unix::fs::symlink("real/target.echo", dir.root.join("link")).expect("symlink");
    StowageCmd::new(&dir, &["get", "e", "-o", "link"]).ok();
    let link = dir.root.join("link");
    assert!(fs::symlink_metadata(&link)
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read_link(&link).expect("read link"),
        PathBuf::from("real/target.echo")
    );
    assert_eq!(
        fs::read(dir.root.join("real/target.echo")).expect("read"),
        b"ECHO\nnew"
    );
    // A link to a link, and a dangling link: the final target is written.
    std::os::unix::fs::symlink("link", dir.root.join("link2")).expect("symlink");
    std::os::unix::fs::symlink("real/absent.echo", dir.root.join("dangling")).expect("symlink");
    fs::write(dir.root.join("real/target.echo"), "old").expect("write");
    StowageCmd::new(&dir, &["get", "e", "-o", "link2"]).ok();
    StowageCmd::new(&dir, &["get", "e", "-o", "dangling"]).ok();
    assert_eq!(
        (
            fs::read(dir.root.join("real/target.echo")).expect("read"),
            fs::read(dir.root.join("real/absent.echo")).expect("read"),
        ),
        (b"ECHO\nnew".to_vec(), b"ECHO\nnew".to_vec())
    );
    assert!(fs::symlink_metadata(dir.root.join("dangling"))
        .expect("link")
        .file_type()
        .is_symlink());
    assert_eq!(dotfiles(&dir.root.join("real")), Vec::<String>::new());
}

#[test]
fn get_to_a_directory_is_an_error_naming_it() {
    let dir = echo_dir("get-dir", "payload");
    fs::create_dir(dir.root.join("out")).expect("mkdir");
    StowageCmd::new(&dir, &["get", "e", "-o", "out"])
        .fails(1, "error: cannot write out: it is a directory");
    StowageCmd::new(&dir, &["get", "e", "--raw", "-o", "out"])
        .fails(1, "error: cannot write out: it is a directory");
    assert_eq!(fs::read_dir(dir.root.join("out")).expect("ls").count(), 0);
}

#[test]
fn get_refuses_block_devices_and_sockets() {
    let dir = echo_dir("get-refused", "payload");
    mknod(&dir.root.join("block"), "b", 7, 200);
    StowageCmd::new(&dir, &["get", "e", "-o", "block"]).fails(
        1,
        "error: cannot write block: it is a block device; get writes only regular files, character devices and FIFOs",
    );
    let _socket =
        std::os::unix::net::UnixListener::bind(dir.root.join("sock")).expect("bind a socket");
    StowageCmd::new(&dir, &["get", "e", "-o", "sock"]).fails(
        1,
        "error: cannot write sock: it is a socket; get writes only regular files, character devices and FIFOs",
    );
    assert!(fs::symlink_metadata(dir.root.join("block"))
        .expect("node")
        .file_type()
        .is_block_device());
}

#[test]
fn get_replaces_a_regular_file_atomically_keeping_its_mode() {
    let dir = echo_dir("get-file", "payload");
    let out = dir.root.join("out.echo");
    fs::write(&out, "a much longer old content").expect("write");
    fs::set_permissions(&out, fs::Permissions::from_mode(0o600)).expect("chmod");
    let inode = fs::metadata(&out).expect("stat").ino();
    StowageCmd::new(&dir, &["get", "e", "-o", "out.echo"]).ok();
    let meta = fs::metadata(&out).expect("stat");
    assert_eq!(
        (
            fs::read(&out).expect("read"),
            meta.permissions().mode() & 0o777,
            meta.ino() != inode
        ),
        (b"ECHO\npayload".to_vec(), 0o600, true)
    );
    assert_eq!(dotfiles(&dir.root), Vec::<String>::new());
    // `-o -` is stdout.
    assert_eq!(
        StowageCmd::new(&dir, &["get", "e", "-o", "-"]).ok(),
        "ECHO\npayload"
    );
    // So is `/dev/stdout`, a magic link to the pipe the test reads.
    assert_eq!(
        StowageCmd::new(&dir, &["get", "e", "-o", "/dev/stdout"]).ok(),
        "ECHO\npayload"
    );
    // An unknown name creates nothing.
    StowageCmd::new(&dir, &["get", "nope", "-o", "new.echo"])
        .fails(1, "error: no artifact named nope");
    assert!(!dir.root.join("new.echo").exists());
}

/// Commits an artifact of the given blobs straight through the store API
/// (no plugin writes several blobs).
fn commit_blobs(dir: &TestDir, name: &str, blobs: &[(&str, &[u8])]) {
    let store = Store::open(&dir.root.join("store")).expect("open store");
    let mut writer = store.writer(name).expect("writer");
    for (blob, bytes) in blobs {
        writer
            .begin_blob(blob, BlobLayout::Compressible)
            .expect("begin blob");
        writer.write(bytes).expect("write blob");
    }
    let meta = RecordMeta {
        obj_type: "parts".into(),
        encoding: "parts-v1".into(),
        encoding_version: 1,
        serializer: "test".into(),
        serializer_version: "1.0.0".into(),
        serializer_info: Vec::new(),
        ..RecordMeta::default()
    };
    let pending = writer.finish(meta).expect("finish");
    store.commit(vec![pending]).expect("commit");
}

#[test]
fn raw_get_of_many_blobs_renames_a_whole_directory_into_place() {
    let dir = TestDir::new("raw-dir");
    commit_blobs(&dir, "parts", &[("a.bin", b"first"), ("b.bin", b"second")]);
    assert_eq!(
        StowageCmd::new(&dir, &["get", "parts", "--raw", "-o", "out"]).ok(),
        "wrote 2 blobs of parts to out\n"
    );
    let read = |name: &str| fs::read(dir.root.join("out").join(name)).expect("read blob file");
    assert_eq!(
        (read("a.bin"), read("b.bin")),
        (b"first".to_vec(), b"second".to_vec())
    );
    assert_eq!(dotfiles(&dir.root), Vec::<String>::new());
    // A non-empty directory is refused and left as it was.
    StowageCmd::new(&dir, &["get", "parts", "--raw", "-o", "out"]).fails(
        1,
        "error: cannot write out: it is a directory that is not empty; get --raw replaces only an empty or absent directory",
    );
    // An empty one is replaced.
    fs::create_dir(dir.root.join("empty")).expect("mkdir");
    StowageCmd::new(&dir, &["get", "parts", "--raw", "-o", "empty"]).ok();
    assert_eq!(
        fs::read(dir.root.join("empty/b.bin")).expect("read"),
        b"second"
    );
    // A file is not a directory; stdout cannot hold two files.
    fs::write(dir.root.join("file"), "x").expect("write");
    StowageCmd::new(&dir, &["get", "parts", "--raw", "-o", "file"]).fails(
        1,
        "error: cannot write file: it is a regular file, not a directory",
    );
    StowageCmd::new(&dir, &["get", "parts", "--raw", "-o", "-"]).fails(
        1,
        "error: parts has 2 blobs; give -o DIR to write one file per blob",
    );
}

#[test]
fn put_reads_stdin_through_a_spool_file_it_removes() {
    let dir = TestDir::new("put-stdin");
    dir.install("fixture-echo", "stowage_echo");
    let output = with_stdin(&dir, &["put", "s", "-"], b"ECHO\nfrom stdin");
    assert_output(
        &output,
        0,
        "stored s (string, echo-v1 v1, 10 bytes) with echo 1.2.0\n",
        "",
    );
    assert_eq!(
        StowageCmd::new(&dir, &["get", "s"]).ok(),
        "ECHO\nfrom stdin"
    );
    assert_eq!(
        fs::read_dir(dir.root.join("store/tmp"))
            .expect("ls tmp")
            .count(),
        0
    );
    // A FIFO named as the file is spooled the same way.
    let fifo = dir.root.join("in.fifo");
    mkfifo(&fifo);
    let writer = std::thread::spawn(move || {
        File::options()
            .write(true)
            .open(&fifo)
            .expect("open the FIFO for writing")
            .write_all(b"ECHO\nfrom a fifo")
            .expect("write the FIFO");
    });
    StowageCmd::new(&dir, &["put", "f", "in.fifo"]).ok();
    writer.join().expect("writer thread");
    assert_eq!(
        StowageCmd::new(&dir, &["get", "f"]).ok(),
        "ECHO\nfrom a fifo"
    );
}

#[test]
fn put_json_input_over_the_limit_fails_at_once_naming_it() {
    let dir = TestDir::new("put-json-limit");
    let started = Instant::now();
    StowageCmd::new(&dir, &["put", "x", "/dev/zero", "--json"]).fails(
        1,
        "error: cannot store x: /dev/zero is larger than 64 MiB, the limit of put --json",
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // A regular file is refused by its size, unread.
    let big = File::create(dir.root.join("big.json")).expect("create");
    big.set_len(64 * 1024 * 1024 + 1).expect("set_len");
    StowageCmd::new(&dir, &["put", "x", "big.json", "--json"]).fails(
        1,
        "error: cannot store x: big.json is larger than 64 MiB, the limit of put --json",
    );
    fs::write(dir.root.join("bad.json"), "{").expect("write");
    StowageCmd::new(&dir, &["put", "x", "bad.json", "--json"]).fails(
        1,
        "error: cannot store x: bad.json is not a JSON document: EOF while parsing an object at line 1 column 1",
    );
    assert_eq!(StowageCmd::new(&dir, &["ls", "--json"]).ok(), "[]\n");
}

/// `serializer_info.source` of artifact `name`.
fn source_of(dir: &TestDir, name: &str) -> serde_json::Value {
    let record: serde_json::Value =
        serde_json::from_str(&StowageCmd::new(dir, &["inspect", name, "--json"]).ok())
            .expect("inspect prints JSON");
    record["serializer_info"]["source"].clone()
}

#[test]
fn put_json_dispatches_like_save_and_explain_agrees() {
    let dir = TestDir::new("put-json-dispatch");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("hello.json"), "\"hello\"").expect("write");
    assert_eq!(
        StowageCmd::new(&dir, &["put", "s", "hello.json", "--json"]).ok(),
        "stored s (string, echo-v1 v1, 5 bytes) with echo 1.2.0\n"
    );
    assert_eq!(source_of(&dir, "s"), "hello.json");
    let explained = StowageCmd::new(&dir, &["explain", "--json", "\"hello\""]).ok();
    assert_eq!(
        explained.lines().last(),
        Some("winner: echo — the first active serializer claiming the kind, in priority order (ties by name), whose can_serialize accepts it")
    );
    // A map is claimed by nothing but the fallback; get prints it as JSON.
    fs::write(dir.root.join("map.json"), r#"{"a": [1, 2]}"#).expect("write");
    assert_eq!(
        StowageCmd::new(&dir, &["put", "m", "map.json", "--json"]).ok(),
        "stored m (map, msgpack v1, 6 bytes) with msgpack 0.1.0\n"
    );
    assert_eq!(
        StowageCmd::new(&dir, &["get", "m"]).ok(),
        "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
    );
    // From stdin the source is `-`.
    let output = with_stdin(&dir, &["put", "n", "-", "--json"], b"42");
    assert_output(
        &output,
        0,
        "stored n (int, echo-v1 v1, 2 bytes) with echo 1.2.0\n",
        "",
    );
    assert_eq!(source_of(&dir, "n"), "-");
}

/// Writes a safetensors file of one `U8` tensor of `size` bytes, in chunks.
fn write_big_safetensors(path: &Path, size: u64) {
    let header =
        format!(r#"{{"big":{{"dtype":"U8","shape":[{size}],"data_offsets":[0,{size}]}}}}"#);
    let mut file = std::io::BufWriter::new(File::create(path).expect("create"));
    file.write_all(&(header.len() as u64).to_le_bytes())
        .expect("write");
    file.write_all(header.as_bytes()).expect("write");
    let chunk: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).expect("write");
        left -= n as u64;
    }
    file.flush().expect("flush");
}

/// `RssAnon` of process `pid` in bytes, if it is still running.
fn rss_anon(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Runs `stowage ARGS…` to completion (stdin read from `stdin`, if given),
/// sampling its `RssAnon` every 2 ms; returns the peak seen and the number
/// of samples.
fn peak_rss_anon(dir: &TestDir, args: &[&str], stdin: Option<&Path>) -> (u64, usize) {
    let stdin = match stdin {
        Some(path) => Stdio::from(File::open(path).expect("open the stdin file")),
        None => Stdio::null(),
    };
    let mut child = spawn_with(dir, args, stdin);
    let (mut peak, mut samples) = (0, 0);
    let status = loop {
        if let Some(rss) = rss_anon(child.id()) {
            peak = peak.max(rss);
            samples += 1;
        }
        if let Some(status) = child.try_wait().expect("poll stowage") {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(status.success(), "stowage {args:?} failed: {stderr}");
    (peak, samples)
}

/// `(length, rolling sum)` of everything `reader` yields, 1 MiB at a time.
fn checksum(mut reader: impl Read) -> (u64, u64) {
    let (mut total, mut sum, mut buffer) = (0u64, 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = reader.read(&mut buffer).expect("read");
        if n == 0 {
            return (total, sum);
        }
        total += n as u64;
        sum = buffer[..n]
            .iter()
            .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
    }
}

fn file_checksum(path: &Path) -> (u64, u64) {
    checksum(File::open(path).expect("open"))
}

#[test]
fn put_and_get_of_512_mib_keep_anonymous_memory_under_64_mib() {
    let dir = TestDir::new("rss-flat");
    dir.install("stowage-tensor", "stowage_tensor");
    let input = dir.root.join("big.safetensors");
    write_big_safetensors(&input, 512 * 1024 * 1024);
    // The last run writes through a FIFO to a reader that sums what it gets.
    let fifo = dir.root.join("fifo");
    mkfifo(&fifo);
    let reader =
        std::thread::spawn(move || checksum(File::open(&fifo).expect("open the FIFO for reading")));
    let runs = [
        (
            "put FILE",
            peak_rss_anon(&dir, &["put", "big", "big.safetensors"], None),
        ),
        (
            "put - (stdin)",
            peak_rss_anon(&dir, &["put", "piped", "-"], Some(&input)),
        ),
        (
            "get -o FILE",
            peak_rss_anon(&dir, &["get", "big", "-o", "back.safetensors"], None),
        ),
        (
            "get -o FIFO",
            peak_rss_anon(&dir, &["get", "piped", "-o", "fifo"], None),
        ),
    ];
    for (what, (peak, samples)) in &runs {
        eprintln!(
            "peak RssAnon of {what}, 512 MiB: {:.1} MiB ({samples} samples)",
            *peak as f64 / 1048576.0
        );
    }
    for (what, (peak, samples)) in &runs {
        assert!(*samples > 0, "no sample of a running stowage {what}");
        assert!(
            *peak <= RSS_ANON_LIMIT,
            "peak RssAnon of {what}: {peak} bytes (limit {RSS_ANON_LIMIT})"
        );
    }
    let expected = file_checksum(&input);
    assert_eq!(
        (
            file_checksum(&dir.root.join("back.safetensors")),
            reader.join().expect("FIFO reader")
        ),
        (expected, expected),
        "get returned other bytes"
    );
    assert_eq!(
        fs::read_dir(dir.root.join("store/tmp"))
            .expect("ls tmp")
            .count(),
        0
    );
}

/// Whether process `pid` has `path` mapped.
fn maps_file(pid: u32, path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .is_ok_and(|maps| maps.lines().any(|line| line.ends_with(wanted.as_ref())))
}

#[test]
fn input_truncated_while_put_maps_it_is_one_error_line_and_no_record() {
    let dir = TestDir::new("put-sigbus");
    dir.install("stowage-tensor", "stowage_tensor");
    let input = dir.root.join("shrinking.safetensors");
    write_big_safetensors(&input, 256 * 1024 * 1024);
    let input = input.canonicalize().expect("absolute input path");
    let mut child = spawn_with(
        &dir,
        &["put", "s", input.to_str().expect("utf-8 path")],
        Stdio::null(),
    );
    // Truncate the file as soon as put has mapped it: reading 256 MiB
    // (validate, hash, write) takes far longer than one poll.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !maps_file(child.id(), &input) {
        assert!(
            child.try_wait().expect("poll stowage").is_none(),
            "put ended before it mapped its input"
        );
        assert!(Instant::now() < deadline, "put never mapped its input");
        std::thread::sleep(Duration::from_millis(1));
    }
    File::options()
        .write(true)
        .open(&input)
        .expect("open the input")
        .set_len(0)
        .expect("truncate the input");
    let output = child.wait_with_output().expect("stowage runs");
    assert_output(
        &output,
        1,
        "",
        "error: an input or stored file shrank while it was being read\n",
    );
    assert_eq!(StowageCmd::new(&dir, &["ls", "--json"]).ok(), "[]\n");
}

#[test]
fn streaming_get_still_skips_a_reader_that_fails_before_writing() {
    let dir = TestDir::new("get-skip");
    dir.install("fixture-panicky", "stowage_panicky");
    dir.install("fixture-echo", "stowage_echo");
    fs::write(dir.root.join("v.json"), "\"panic:export\"").expect("write");
    StowageCmd::new(&dir, &["put", "p", "v.json", "--json"]).ok();
    let output = StowageCmd::new(&dir, &["get", "p", "-o", "out.echo"]).output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The panic message ends with the fixture's source location.
    let (warning, _location) = stderr
        .rsplit_once(" at ")
        .expect("the warning names where the fixture panicked");
    assert_eq!(
        (output.status.code(), stderr.lines().count(), warning),
        (
            Some(0),
            1,
            "warning: skipped plugin panicky: dispatch: export: panic: panicked in export: fixture panic in export"
        )
    );
    assert_eq!(
        fs::read(dir.root.join("out.echo")).expect("read"),
        b"ECHO\npanic:export"
    );
}
