//! The `cohortdb` binary, run as a user would run it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use libtest_mimic::{Failed, Trial};

use crate::trial;

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "cli::sql_command_prints_aligned_tables",
            sql_command_prints_aligned_tables,
        ),
        trial("cli::sql_reads_standard_input", sql_reads_standard_input),
        trial(
            "cli::errors_exit_non_zero_with_one_line",
            errors_exit_non_zero_with_one_line,
        ),
        trial(
            "cli::import_reports_rows_and_is_atomic",
            import_reports_rows_and_is_atomic,
        ),
        trial(
            "cli::demo_loads_once_and_answers",
            demo_loads_once_and_answers,
        ),
        trial("cli::help_everywhere", help_everywhere),
        trial("cli::check_reports_problems", check_reports_problems),
        trial(
            "cli::serve_needs_a_password_login",
            serve_needs_a_password_login,
        ),
    ]
}

fn cohortdb(args: &[&str], stdin: Option<&str>) -> Result<Output, Failed> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cohortdb"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command.spawn()?;
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())?;
    }
    Ok(child.wait_with_output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sql_command_prints_aligned_tables() -> Result<(), Failed> {
    let out = cohortdb(
        &[
            "sql",
            "-c",
            "CREATE TABLE t (id INT, city TEXT); INSERT INTO t VALUES (1, 'beijing'), (20, NULL); SELECT * FROM t ORDER BY id",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = "\
CREATE TABLE
INSERT 0 2
 id |  city
----+---------
  1 | beijing
 20 |
(2 rows)
";
    assert_eq!(text(&out.stdout), expected);
    Ok(())
}

fn sql_reads_standard_input() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let data = data.to_str().expect("utf-8 path");
    let out = cohortdb(
        &["sql", "--data", data],
        Some("CREATE TABLE t (x BIGINT);\nINSERT INTO t\n  VALUES (7);\n"),
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cohortdb(
        &["sql", "--data", data, "-c", "SELECT x * 6 AS answer FROM t"],
        None,
    )?;
    assert_eq!(text(&out.stdout), " answer\n--------\n     42\n(1 row)\n");
    Ok(())
}

fn errors_exit_non_zero_with_one_line() -> Result<(), Failed> {
    let out = cohortdb(&["sql", "-c", "SELECT 1; SELEC 2; SELECT 3"], None)?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "error: syntax error: Expected: an SQL statement, found: SELEC (at line 1, column 11)\n"
    );
    // The script stops at the error: nothing ran, since the whole text is parsed first.
    assert_eq!(text(&out.stdout), "");
    let out = cohortdb(&["sql", "-c", "SELECT 1 / 0"], None)?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).lines().count(), 1);
    let out = cohortdb(&["sql", "--bogus"], None)?;
    assert_eq!(out.status.code(), Some(2));
    // Bad server options are refused before anything starts.
    let out = cohortdb(
        &["serve", "--data", "unused", "--query-memory", "4 parsecs"],
        None,
    )?;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown size unit \"parsecs\" (use B, KiB, MiB or GiB)"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

/// `serve` with SCRAM (its default) refuses to start until a role can log in
/// with a password; `passwd` makes the first one from standard input.
fn serve_needs_a_password_login() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let data = data.to_str().expect("utf-8 path");
    let out = cohortdb(&["serve", "--data", data, "--listen", "127.0.0.1:0"], None)?;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: no role can log in with a password; set one with `cohortdb passwd --data {data} --user NAME` (or serve with --auth trust on a trusted machine)\n"
        )
    );
    let out = cohortdb(
        &["passwd", "--data", data, "--user", "admin"],
        Some("s3cret\n"),
    )?;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "password set for admin\n");
    let out = cohortdb(&["passwd", "--data", data], Some("\n"))?;
    assert_eq!(
        (out.status.code(), text(&out.stderr)),
        (Some(1), "error: the password is empty\n".to_string())
    );
    // The role is in the manifest (the command's clean close checkpointed),
    // and the password itself in no file.
    let manifest = std::fs::read(dir.path().join("db").join("MANIFEST"))?;
    assert!(String::from_utf8_lossy(&manifest).contains("\"name\": \"admin\""));
    for folder in ["", "wal", "segments", "deletes"] {
        for entry in std::fs::read_dir(dir.path().join("db").join(folder))? {
            let path = entry?.path();
            if path.is_file() {
                let bytes = std::fs::read(&path)?;
                assert!(
                    !bytes.windows(6).any(|w| w == b"s3cret"),
                    "{} holds the password",
                    path.display()
                );
            }
        }
    }
    Ok(())
}

fn import_reports_rows_and_is_atomic() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let data = data.to_str().expect("utf-8 path");
    let good = dir.path().join("good.csv");
    let mut csv = String::from("id,name\n");
    for i in 0..1000 {
        csv.push_str(&format!("{i},n{i}\n"));
    }
    std::fs::write(&good, &csv)?;
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, format!("{csv}oops,x\n"))?;
    let out = cohortdb(
        &[
            "sql",
            "--data",
            data,
            "-c",
            "CREATE TABLE t (id BIGINT NOT NULL, name TEXT)",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cohortdb(&["import", "--data", data, "t", path(&good)], None)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("imported 1000 rows into t in "),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with(" rows/s)"), "{stdout}");
    let out = cohortdb(&["import", "--data", data, "t", path(&bad)], None)?;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "Error while parsing value 'oops' as type 'Int64' for column \"id\" at line 1002"
        ),
        "{stderr}"
    );
    let out = cohortdb(
        &["sql", "--data", data, "-c", "SELECT count(*) AS n FROM t"],
        None,
    )?;
    assert_eq!(text(&out.stdout), "  n\n------\n 1000\n(1 row)\n");
    Ok(())
}

fn demo_loads_once_and_answers() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("demo");
    let data = data.to_str().expect("utf-8 path");
    let query = "SELECT count(*) AS users FROM users";
    let out = cohortdb(
        &["demo", "--data", data, "--users", "2000", "-c", query],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), " users\n-------\n  2000\n(1 row)\n");
    assert!(text(&out.stderr).contains("created the demo data (2000 users, seed 42)"));
    let out = cohortdb(
        &["demo", "--data", data, "--users", "2000", "-c", query],
        None,
    )?;
    assert!(
        text(&out.stderr).contains("using the demo data in"),
        "{}",
        text(&out.stderr)
    );
    Ok(())
}

fn help_everywhere() -> Result<(), Failed> {
    for args in [
        &["--help"][..],
        &["sql", "--help"],
        &["import", "--help"],
        &["demo", "--help"],
    ] {
        let out = cohortdb(args, None)?;
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Usage: cohortdb"), "{args:?}");
    }
    Ok(())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `cohortdb check` on a sound directory (exit 0 and a summary), then on one
/// with a segment cut short and a stray file (exit 1, the segment named).
fn check_reports_problems() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("db");
    let data = data.to_str().expect("utf-8 path");
    let out = cohortdb(
        &[
            "sql",
            "--data",
            data,
            "-c",
            "CREATE TABLE t (x BIGINT NOT NULL)",
            "-c",
            "INSERT INTO t VALUES (1), (2)",
        ],
        None,
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = cohortdb(&["check", "--data", data], None)?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "ok: 1 tables, 1 segments, 2 rows, 0 users, 0 tag files, 0 recommenders, 0 log records to replay\n"
    );
    let segments = std::path::Path::new(data).join("segments");
    let segment = std::fs::read_dir(&segments)?
        .next()
        .ok_or("a segment file")??
        .path();
    let bytes = std::fs::read(&segment)?;
    std::fs::write(&segment, &bytes[..bytes.len() - 10])?;
    std::fs::write(segments.join("stray"), b"x")?;
    let out = cohortdb(&["check", "--data", data], None)?;
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("corrupted data in {}", segment.display())),
        "{stdout}"
    );
    assert!(
        lines[1].ends_with("stray: leftover of an interrupted write (removed at the next open)"),
        "{stdout}"
    );
    assert_eq!(
        text(&out.stderr),
        format!("error: 1 problem(s) in {data}\n")
    );
    Ok(())
}
