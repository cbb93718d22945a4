//! The Postgres server the tests run against, and throwaway databases on it.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

/// The variable naming the Postgres server: `postgres://postgres@127.0.0.1:5432/postgres`.
pub const SERVER_URL_VAR: &str = "TICKETMAX_TEST_DATABASE_URL";

/// The server URL from [`SERVER_URL_VAR`]; panics with instructions when it is not set.
pub fn server_url() -> String {
    match std::env::var(SERVER_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
        _ => panic!(
            "{SERVER_URL_VAR} is not set. These end-to-end tests run the real binaries against a \
             real Postgres server: run ./scripts/test.sh (it uses the server named by \
             {SERVER_URL_VAR} when set, e.g. postgres://postgres@127.0.0.1:5432/postgres, and \
             otherwise starts a throwaway cluster itself)."
        ),
    }
}

/// The URL of database `db` on the server of `server_url` (path replaced, query kept).
pub fn database_url(server_url: &str, db: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| i + authority_start);
    let mut url = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Connects with a small pool and no statement logging.
pub async fn connect(url: &str, max_connections: u32) -> DatabaseConnection {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(20))
        .sqlx_logging(false);
    let mut last_err = None;
    // The server may be momentarily out of connection slots when many tests start at once.
    for _ in 0..20 {
        match Database::connect(opts.clone()).await {
            Ok(db) => return db,
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    panic!("cannot connect to {url}: {last_err:?}")
}

/// `CREATE DATABASE name` on the server.
pub async fn create_database(server_url: &str, name: &str) {
    let admin = connect(server_url, 1).await;
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name} on {server_url} failed: {e}"));
    let _ = admin.close().await;
}

/// `DROP DATABASE IF EXISTS ... WITH (FORCE)` for each name, best effort, from a thread of its
/// own (so that it can run from `Drop`, inside or outside a runtime).
pub fn drop_databases_blocking(server_url: String, names: Vec<String>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(_) => return,
        };
        rt.block_on(async move {
            let mut opts = ConnectOptions::new(server_url);
            opts.max_connections(1)
                .connect_timeout(Duration::from_secs(5))
                .sqlx_logging(false);
            if let Ok(admin) = Database::connect(opts).await {
                for name in names {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                }
                let _ = admin.close().await;
            }
        });
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(20));
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_the_path_and_keeps_the_query() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "tm_x"),
            "postgres://postgres@127.0.0.1:5432/tm_x"
        );
        assert_eq!(
            database_url("postgres://u:p@h:1/db?sslmode=disable", "tm_x"),
            "postgres://u:p@h:1/tm_x?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432", "tm_x"),
            "postgres://postgres@127.0.0.1:5432/tm_x"
        );
    }
}
