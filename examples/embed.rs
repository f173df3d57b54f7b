//! Using cohortdb from another Rust program: open a database, run SQL, read Arrow
//! batches, stream a large result.
//!
//! Run with `cargo run --example embed`.

use cohortdb::Database;
use cohortdb::arrow::util::pretty::pretty_format_batches;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path())?;
    let session = db.session();

    session
        .execute(
            "CREATE TABLE users (user_id BIGINT NOT NULL, city TEXT, age INT);
             INSERT INTO users VALUES (1, 'beijing', 25), (2, 'shanghai', 34), (3, 'beijing', 41)",
        )
        .await?;

    let batches = session
        .execute("SELECT city, count(*) AS users, avg(age) AS avg_age FROM users GROUP BY city ORDER BY city")
        .await?;
    println!("{}", pretty_format_batches(&batches)?);

    // Errors are typed: a SQLSTATE, a message, and where in the SQL it points.
    let err = session
        .execute("SELECT nope FROM users")
        .await
        .expect_err("no such column");
    println!("{} ({}) at {:?}", err, err.sqlstate(), err.position());

    // Large results can be streamed batch by batch.
    let mut stream = session
        .execute_stream("SELECT value FROM generate_series(1, 1000000)")
        .await?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        rows += batch?.num_rows();
    }
    println!("streamed {rows} rows");
    Ok(())
}
