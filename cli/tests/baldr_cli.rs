//! The `baldr` binary's contract: output lines, exit codes and messages on damaged input.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn baldr(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baldr"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baldr");
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Packs `lines` into `dir/name` with the given compression flag.
fn packed(dir: &Path, name: &str, flag: Option<&str>, lines: &[u8]) -> PathBuf {
    let out = dir.join(name);
    let mut args = vec!["pack", "-o", path_str(&out)];
    args.extend(flag);
    let o = baldr(&args, lines);
    assert!(o.status.success(), "pack failed: {}", text(&o.stderr));
    out
}

#[test]
fn pack_writes_the_original_byte_layout() {
    let o = baldr(&["pack"], b"abc\n\nxy");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let mut expected = Vec::new();
    for line in [&b"abc"[..], b"", b"xy"] {
        expected.extend_from_slice(&(line.len() as i64).to_be_bytes());
        expected.extend_from_slice(line);
    }
    assert_eq!(o.stdout, expected);
    // A trailing newline ends the last line; it does not add an empty record.
    assert_eq!(baldr(&["pack"], b"abc\n\nxy\n").stdout, expected);
    // Empty input is an empty file.
    assert!(baldr(&["pack"], b"").stdout.is_empty());
}

#[test]
fn pack_cat_count_round_trip_for_each_compression() {
    let dir = tempfile::tempdir().unwrap();
    let lines = b"first line\n\n\twith tab\r\nlast\n";
    for (flag, magic) in [
        (None, &[0u8, 0][..]),
        (Some("--gzip"), &[0x1f, 0x8b][..]),
        (Some("--zstd"), &[0x28, 0xb5, 0x2f, 0xfd][..]),
    ] {
        let file = packed(dir.path(), &format!("f{flag:?}"), flag, lines);
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.starts_with(magic), "{flag:?}");

        let cat = baldr(&["cat", path_str(&file)], b"");
        assert!(cat.status.success(), "{}", text(&cat.stderr));
        assert_eq!(cat.stdout, lines, "{flag:?}");

        // stdin, both implicit and as `-`.
        assert_eq!(baldr(&["cat"], &bytes).stdout, lines);
        assert_eq!(baldr(&["cat", "-"], &bytes).stdout, lines);

        let count = baldr(&["count", path_str(&file)], b"");
        assert!(count.status.success());
        assert_eq!(text(&count.stdout), "4\n");

        let verify = baldr(&["verify", path_str(&file)], b"");
        assert!(verify.status.success());
        assert!(verify.stderr.is_empty());
    }
}

#[test]
fn pack_reads_several_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.txt");
    std::fs::write(&a, b"1\n2\n").unwrap();
    std::fs::write(&b, b"3").unwrap();
    let out = dir.path().join("out.baldr.gz");
    let o = baldr(
        &[
            "pack",
            "--gzip",
            "-o",
            path_str(&out),
            path_str(&a),
            path_str(&b),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(baldr(&["cat", path_str(&out)], b"").stdout, b"1\n2\n3\n");
}

#[test]
fn count_several_files_prints_each_then_total() {
    let dir = tempfile::tempdir().unwrap();
    let a = packed(dir.path(), "a.baldr", None, b"1\n2\n3\n");
    let b = packed(dir.path(), "b.baldr.gz", Some("--gzip"), b"x\n");
    let o = baldr(&["count", path_str(&a), path_str(&b)], b"");
    assert!(o.status.success());
    assert_eq!(
        text(&o.stdout),
        format!("3\t{}\n1\t{}\n4\ttotal\n", path_str(&a), path_str(&b))
    );
}

/// A plain file of records "aaa", "bbbb", "cc" cut `cut` bytes short.
fn damaged(dir: &Path, name: &str, cut: usize) -> PathBuf {
    let good = packed(dir, &format!("{name}.src"), None, b"aaa\nbbbb\ncc\n");
    let mut bytes = std::fs::read(good).unwrap();
    bytes.truncate(bytes.len() - cut);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn verify_reports_first_bad_record_of_each_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = packed(dir.path(), "good.baldr", None, b"a\nb\n");
    // Records at offsets 0 (11 bytes), 11 (12 bytes), 23 (10 bytes): cut 1 -> payload.
    let bad1 = damaged(dir.path(), "bad1.baldr", 1);
    // Cut 7 -> 3 header bytes left of the third record.
    let bad2 = damaged(dir.path(), "bad2.baldr", 7);
    let o = baldr(
        &["verify", path_str(&good), path_str(&bad1), path_str(&bad2)],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "{}: byte offset 23: truncated payload: record of 2 bytes, input ends after 1\n\
             {}: byte offset 23: truncated length header: input ends after 3 of 8 bytes\n",
            path_str(&bad1),
            path_str(&bad2)
        )
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn cat_and_count_fail_on_damage_after_printing_what_was_intact() {
    let dir = tempfile::tempdir().unwrap();
    let bad = damaged(dir.path(), "bad.baldr", 1);
    let cat = baldr(&["cat", path_str(&bad)], b"");
    assert_eq!(cat.status.code(), Some(1));
    assert_eq!(cat.stdout, b"aaa\nbbbb\n");
    assert_eq!(
        text(&cat.stderr),
        format!(
            "{}: byte offset 23: truncated payload: record of 2 bytes, input ends after 1\n",
            path_str(&bad)
        )
    );
    let count = baldr(&["count", path_str(&bad)], b"");
    assert_eq!(count.status.code(), Some(1));
    assert!(count.stdout.is_empty());
    assert!(text(&count.stderr).contains("byte offset 23: truncated payload"));
}

#[test]
fn damaged_gzip_is_reported_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let file = packed(dir.path(), "x.baldr.gz", Some("--gzip"), &lines);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&file, &bytes).unwrap();
    let o = baldr(&["verify", path_str(&file)], b"");
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with(&format!("{}: byte offset ", path_str(&file))),
        "{err}"
    );
}

#[test]
fn max_record_bytes_overrides_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let file = packed(dir.path(), "big.baldr", None, &[b'x'; 100]);
    let o = baldr(
        &["verify", "--max-record-bytes", "50", path_str(&file)],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "{}: byte offset 0: record length 100 exceeds the maximum of 50 bytes (see --max-record-bytes)\n",
            path_str(&file)
        )
    );
    let o = baldr(
        &["count", "--max-record-bytes", "100", path_str(&file)],
        b"",
    );
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "1\n");
}

#[test]
fn negative_length_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("neg.baldr");
    std::fs::write(&path, (-5i64).to_be_bytes()).unwrap();
    let o = baldr(&["cat", path_str(&path)], b"");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        format!(
            "{}: byte offset 0: negative record length -5\n",
            path_str(&path)
        )
    );
}

#[test]
fn missing_file_and_usage_errors() {
    let o = baldr(&["verify", "/nonexistent/file.baldr"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).starts_with("/nonexistent/file.baldr: cannot open: "));
    // Usage errors exit 2.
    assert_eq!(baldr(&["verify"], b"").status.code(), Some(2));
    assert_eq!(
        baldr(&["pack", "--gzip", "--zstd"], b"").status.code(),
        Some(2)
    );
}

#[test]
fn pack_to_a_missing_directory_fails_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("no/such/dir/out.baldr");
    let o = baldr(&["pack", "-o", path_str(&out)], b"a\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).starts_with("baldr: cannot create a file in"));
    assert!(!out.exists());
}

#[test]
fn cat_into_a_closed_pipe_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<u8> = (0..200_000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let file = packed(dir.path(), "many.baldr.gz", Some("--gzip"), &lines);
    let mut child = Command::new(env!("CARGO_BIN_EXE_baldr"))
        .args(["cat", path_str(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    assert_eq!(&first, b"line 0\nline 1\nli");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn cat_count_and_verify_read_object_store_urls_and_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("g/t/partition=0");
    std::fs::create_dir_all(&part).unwrap();
    packed(&part, "0000000000.baldr.gz", Some("--gzip"), b"a\nb\n");
    packed(&part, "0000000002.baldr.zst", Some("--zstd"), b"c\n");
    std::fs::write(part.join("_bifrost_token"), b"t 0 3\n").unwrap();
    let prefix = format!("file://{}/g/t/partition=0/", dir.path().display());
    let o = baldr(&["count", &prefix], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        format!(
            "2\t{0}0000000000.baldr.gz\n1\t{0}0000000002.baldr.zst\n3\ttotal\n",
            prefix
        )
    );
    let o = baldr(&["cat", &prefix], b"");
    assert_eq!(text(&o.stdout), "a\nb\nc\n");
    let one = format!(
        "file://{}/g/t/partition=0/0000000002.baldr.zst",
        dir.path().display()
    );
    let o = baldr(&["count", &one], b"");
    assert_eq!(text(&o.stdout), "1\n");
    let o = baldr(&["verify", &prefix], b"");
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "{}",
        text(&o.stderr)
    );
    // A damaged object is named by its URL.
    let full = std::fs::read(part.join("0000000000.baldr.gz")).unwrap();
    std::fs::write(part.join("0000000000.baldr.gz"), &full[..full.len() - 12]).unwrap();
    let o = baldr(&["verify", &prefix], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with(&format!("{prefix}0000000000.baldr.gz: ")),
        "{}",
        text(&o.stderr)
    );
    let o = baldr(
        &[
            "count",
            &format!("file://{}/nothing/", dir.path().display()),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no object"), "{}", text(&o.stderr));
}

#[test]
fn count_reads_an_s3_prefix() {
    let Some(endpoint) =
        test_services::service_url(test_services::S3_ENDPOINT, "baldr count s3://")
    else {
        return;
    };
    let bucket = test_services::create_s3_bucket(&endpoint, "baldr-");
    let dir = tempfile::tempdir().unwrap();
    let file = packed(dir.path(), "x.baldr.gz", Some("--gzip"), b"1\n2\n3\n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opened = lifecycle::store::open(
        &format!("s3://{bucket}"),
        &[("aws_endpoint".into(), endpoint.clone())],
    )
    .unwrap();
    for key in [
        "g/t/partition=0/0000000000.baldr.gz",
        "g/t/partition=0/0000000003.baldr.gz",
    ] {
        let data = std::fs::read(&file).unwrap();
        rt.block_on(object_store::ObjectStoreExt::put(
            &*opened.store,
            &object_store::path::Path::from(key),
            data.into(),
        ))
        .unwrap();
    }
    let url = format!("s3://{bucket}/g/t/partition=0/");
    let o = baldr(
        &[
            "count",
            &url,
            "--store-option",
            &format!("aws_endpoint={endpoint}"),
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).ends_with("6\ttotal\n"),
        "{}",
        text(&o.stdout)
    );
}
