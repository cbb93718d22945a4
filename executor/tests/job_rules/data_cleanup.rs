//! data-cleanup: the cache, and the file jobs aging files by modification time.
use std::time::SystemTime;

use crate::common::{count, databases_at};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{reference_times, run_twice, run_tz};

#[tokio::test]
async fn expired_cache_entries_only() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            t.exec_with(
                "INSERT INTO cache_entries (key, value, size_bytes, expires_at) VALUES \
             ('a', 'x', 100, $1), ('b', 'x', 20, $2), ('c', 'x', 7, NULL), ('d', 'x', 3, $1)",
                vec![
                    (now - Duration::seconds(1)).into(),
                    (now + Duration::seconds(1)).into(),
                ],
            )
            .await;
            let out = run_tz(
                &t,
                "data-cleanup/clean-cache",
                now,
                chrono_tz::UTC,
                json!({"batch_size": 1}),
            )
            .await
            .expect("run");
            assert_eq!(count(&out, "deleted"), 2, "{}: {:?}", t.name, out.summary);
            assert_eq!(count(&out, "bytes_freed"), 103, "{}", t.name);
            assert_eq!(count(&out, "remaining"), 2, "{}", t.name);
            let again = run_tz(
                &t,
                "data-cleanup/clean-cache",
                now,
                chrono_tz::UTC,
                json!({}),
            )
            .await
            .expect("second run");
            assert_eq!(count(&again, "deleted"), 0, "{}", t.name);
        }
    }
}

/// A file whose modification time is `age` before the reference time `now`.
fn write_aged(path: &std::path::Path, bytes: usize, now: DateTime<Utc>, age: Duration) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, vec![b'x'; bytes]).expect("write");
    let mtime: SystemTime = (now - age).into();
    std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open")
        .set_modified(mtime)
        .expect("set mtime");
}

#[tokio::test]
async fn file_jobs_age_files_by_modification_time() {
    for (label, now) in reference_times() {
        for t in databases_at(label).await {
            let d = &t.dirs;
            let h = Duration::hours;
            write_aged(&d.uploads_tmp.join("fresh.bin"), 10, now, h(23));
            write_aged(&d.uploads_tmp.join("old.bin"), 100, now, h(25));
            write_aged(&d.uploads_tmp.join("nested/old.bin"), 1000, now, h(25));
            write_aged(&d.logs.join("recent.log"), 10, now, Duration::days(29));
            write_aged(&d.logs.join("old.log"), 200, now, Duration::days(31));
            write_aged(&d.logs.join("old.txt"), 10, now, Duration::days(31));
            write_aged(&d.documents.join("recent.pdf"), 10, now, Duration::days(29));
            write_aged(
                &d.documents.join("orphan.pdf"),
                300,
                now,
                Duration::days(31),
            );
            write_aged(
                &d.documents.join("kept/used.pdf"),
                10,
                now,
                Duration::days(31),
            );
            t.exec("INSERT INTO documents (path) VALUES ('kept/used.pdf')")
                .await;

            let tmp = run_twice(&t, "data-cleanup/clean-temporary-files", now, json!({})).await;
            assert_eq!(
                count(&tmp, "files_deleted"),
                2,
                "{}: {:?}",
                t.name,
                tmp.summary
            );
            assert_eq!(count(&tmp, "bytes_freed"), 1100, "{}", t.name);
            assert!(d.uploads_tmp.join("fresh.bin").exists());
            assert!(!d.uploads_tmp.join("old.bin").exists());
            assert!(!d.uploads_tmp.join("nested/old.bin").exists());

            let logs = run_twice(&t, "data-cleanup/clean-old-logs", now, json!({})).await;
            assert_eq!(
                count(&logs, "files_deleted"),
                1,
                "{}: {:?}",
                t.name,
                logs.summary
            );
            assert_eq!(count(&logs, "bytes_freed"), 200, "{}", t.name);
            assert!(d.logs.join("recent.log").exists());
            assert!(d.logs.join("old.txt").exists());
            assert!(!d.logs.join("old.log").exists());

            let docs = run_twice(&t, "data-cleanup/clean-orphaned-documents", now, json!({})).await;
            assert_eq!(
                count(&docs, "files_deleted"),
                1,
                "{}: {:?}",
                t.name,
                docs.summary
            );
            assert_eq!(count(&docs, "bytes_freed"), 300, "{}", t.name);
            assert!(d.documents.join("recent.pdf").exists());
            assert!(d.documents.join("kept/used.pdf").exists());
            assert!(!d.documents.join("orphan.pdf").exists());

            // A second run from the second database shares nothing with the first: clean up.
            let _ = std::fs::remove_dir_all(&d.data);
        }
    }
}
